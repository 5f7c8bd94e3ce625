"""Videos: metarl.video's parts, scripts/render.py end to end, and its errors.

Tests that draw MuJoCo frames are marked ``render`` and skip themselves where no
offscreen OpenGL context can be made; point_nav draws with numpy and the error
paths render nothing, so those run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch

import envs
from agents.factory import make_learner, make_policy
from metarl import video
from metarl.config import TrainConfig
from metarl.sampling import sample
from scripts import meta_train, render

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--width", "96", "--height", "64", "--fps", "10"]


def read_video(path: Path) -> tuple[np.ndarray, dict]:
    """All frames ``[N, H, W, 3]`` of an MP4 and its metadata."""
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        frames = np.stack([frame for frame in reader])
        return frames, reader.get_meta_data()
    finally:
        reader.close()


def tiny_run(root: Path, env: str, *extra: str) -> Path:
    run = root / env
    args = ["--env", env, "--policy", "mlp", "--iterations", "1", "--meta-batch-size", "2", *extra]
    assert meta_train.main([*args, "--episodes-per-task", "1", "--out", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def gl() -> str:
    """The offscreen OpenGL backend, or skip."""
    try:
        return video.ensure_gl()
    except video.RenderUnavailable as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def cheetah_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # an inner step large enough to change the motion visibly within the videos' 8 steps (the preset's
    # 0.0167 left the two panels' last frames 5.5 to 12.9 apart, by rounding, against 10.8 required)
    return tiny_run(tmp_path_factory.mktemp("runs"), "half_cheetah_vel", "--inner-lr", "0.5")


@pytest.fixture(scope="module")
def point_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("runs"), "point_nav")


@pytest.fixture(scope="module")
def cheetah_videos(gl: str, cheetah_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Task 1 over 8 steps, side by side: captioned (MP4 + GIF) and without captions."""
    out = tmp_path_factory.mktemp("videos")
    common = [str(cheetah_run), "--task", "1", "--max-steps", "8", *SMALL]
    assert render.main([*common, "--out", str(out / "captioned.mp4"), "--gif"]) == 0
    assert render.main([*common, "--out", str(out / "plain.mp4"), "--no-caption"]) == 0
    return {"captioned": out / "captioned.mp4", "gif": out / "captioned.gif", "plain": out / "plain.mp4"}


# ------------------------------------------------------------------ parts
def test_caption_writes_into_a_band_at_the_top_only() -> None:
    image = np.full((60, 100, 3), 128, dtype=np.uint8)
    out = video.caption(image, ["target 1.40 m/s", "before adaptation"], font_size=10)
    assert out.shape == image.shape and out.dtype == np.uint8
    changed = np.flatnonzero(np.any(out != image, axis=(1, 2)))
    assert changed.min() == 0 and changed.max() == video.caption_height(2, 10) - 1 < 30
    band = out[: changed.max() + 1]
    assert (band > 200).any(), "no text drawn"  # white text on the darkened band
    np.testing.assert_array_equal(out[30:], image[30:])
    np.testing.assert_array_equal(video.caption(image, []), image)


def test_tile_and_lockstep_pad_and_freeze() -> None:
    def stream(value: int, length: int) -> Iterator[np.ndarray]:
        return iter([np.full((5, 7, 3), value + i, dtype=np.uint8) for i in range(length)])

    frames = list(video.lockstep([[stream(0, 3), stream(100, 1)], [stream(50, 2)]]))
    assert len(frames) == 3
    assert frames[0].shape == (10, 14, 3)  # 2 rows x 2 columns of 5x7, padded to even sizes
    last = frames[-1]
    assert last[0, 0, 0] == 2 and last[0, 7, 0] == 100 and last[5, 0, 0] == 51  # ended streams hold their last frame
    assert last[5, 7, 0] == 0  # the empty grid cell is black
    assert video.even(np.zeros((3, 5, 3), dtype=np.uint8)).shape == (4, 6, 3)


def test_video_writer_pads_to_even_and_checks_sizes(tmp_path: Path) -> None:
    frames = [np.full((33, 47, 3), 40 * i, dtype=np.uint8) for i in range(5)]
    assert video.write_video([tmp_path / "v.mp4", tmp_path / "v.gif"], frames, fps=5) == 5
    written, meta = read_video(tmp_path / "v.mp4")
    assert written.shape == (5, 34, 48, 3)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["fps"] == 5
    assert iio.imread(tmp_path / "v.gif", index=None).shape[:3] == (5, 34, 48)
    with pytest.raises(ValueError, match="frame 1 is 10x10"), video.VideoWriter(tmp_path / "w.mp4", 5) as writer:
        writer.append(frames[0])
        writer.append(np.zeros((10, 10, 3), dtype=np.uint8))


def test_rollout_drives_the_policy_as_sampling_does() -> None:
    """The after-panel of a context policy (adapted params and memory, sliced to one
    task) gets the same return from the single env as from the batched sampler."""
    family = envs.make("point_nav")
    config = TrainConfig(env="point_nav", policy="attention", episodes_per_task=2, memory_size=16)
    torch.manual_seed(0)
    policy = make_policy(config, family.observation_dim, family.action_dim)
    tasks = family.test_tasks()[:2]
    params, memory = video.adapted_params(family, policy, make_learner(config, policy), tasks, 1, 2, 16, seed=3)
    assert memory is not None and memory.num_tasks == 2
    shared = {k: v.detach() for k, v in policy.params().items()}
    one, mem = video.task_slice(params, shared, memory, 1)
    assert all(v.shape[0] == 1 for k, v in one.items() if v.dim() > shared[k].dim())
    env = family.make_env(tasks[1], render_mode="rgb_array", width=40, height=30)
    frames = list(video.rollout_frames(env, policy, one, mem, seed=0, max_steps=20))
    assert [f.step for f in frames] == list(range(21)) and frames[-1].done and frames[0].image.shape == (30, 40, 3)
    reference = sample(family.batch([tasks[1]], 1), policy, one, 1, torch.Generator(), memory=mem, deterministic=True)
    expected = reference.rewards[:20].sum().item()
    assert frames[-1].episode_return == pytest.approx(expected, rel=1e-5)
    measure = render.measure_for(family, tasks[1])
    assert measure(env, np.array([0.0, 0.0]), {}) == f"distance {np.linalg.norm(tasks[1].goal):.2f} m"


def test_after_panel_memory_follows_later_memory() -> None:
    """After 2 steps the after-panel's memory is of step 1's episodes (``latest``), or still of the
    pre-adaptation ones (``first``): the memory after 1 step."""
    family = envs.make("point_nav")
    config = TrainConfig(env="point_nav", policy="attention", episodes_per_task=2, memory_size=16)
    torch.manual_seed(0)
    policy = make_policy(config, family.observation_dim, family.action_dim)
    learner, tasks = make_learner(config, policy), family.test_tasks()[:2]
    _, pre = video.adapted_params(family, policy, learner, tasks, 1, 2, 16, seed=3)
    _, latest = video.adapted_params(family, policy, learner, tasks, 2, 2, 16, seed=3)
    _, first = video.adapted_params(family, policy, learner, tasks, 2, 2, 16, seed=3, later_memory="first")
    assert pre is not None and latest is not None and first is not None
    assert torch.equal(first.transitions, pre.transitions)
    assert not torch.equal(latest.transitions, pre.transitions)


@pytest.mark.render
def test_camera_tracks_the_robot(gl: str) -> None:
    """Gymnasium's HalfCheetah-v5 camera stays put; ours follows the cheetah 5 m down the track."""
    family = envs.make("half_cheetah_dir")
    robot_pixels = []
    for ours in (False, True):
        if ours:
            env = family.make_env(family.test_tasks()[0], render_mode="rgb_array", width=120, height=90)
        else:
            env = gym.make("HalfCheetah-v5", render_mode="rgb_array", width=120, height=90)
        env.reset(seed=0)
        video.render_frame(env)  # a free camera stays where the first frame put it
        for t in range(300):
            env.step(np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0]) * np.sin(t / 2))
        assert env.unwrapped.data.qpos[0] > 3.0  # it did run off
        image = video.render_frame(env).astype(int)
        env.close()
        # the cheetah is tan (red >> blue); the floor is black and pale green
        robot_pixels.append(int(((image[..., 0] - image[..., 2]) > 60).sum()))
    assert robot_pixels[0] == 0 and robot_pixels[1] > 20


# ------------------------------------------------------------------ scripts/render.py
@pytest.mark.render
def test_render_writes_side_by_side_mp4_and_gif(cheetah_videos: dict[str, Path]) -> None:
    frames, meta = read_video(cheetah_videos["captioned"])
    assert frames.shape == (9, 64, 192, 3)  # reset + 8 steps; two 96x64 panels side by side
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["fps"] == 10
    assert frames.reshape(9, -1).std(axis=1).min() > 20  # not blank
    gif = iio.imread(cheetah_videos["gif"], index=None)
    assert gif.shape[:3] == (9, 64, 192)


@pytest.mark.render
def test_render_before_and_after_panels_differ(cheetah_videos: dict[str, Path]) -> None:
    frames, _ = read_video(cheetah_videos["plain"])
    left, right = frames[..., :96, :].astype(float), frames[..., 96:, :].astype(float)
    first, last = np.abs(left[0] - right[0]).mean(), np.abs(left[-1] - right[-1]).mean()
    assert first < 5  # same task, same initial state (up to H.264 noise)
    assert last > 3 * first + 5  # different parameters, different motion


@pytest.mark.render
def test_render_draws_the_caption(cheetah_videos: dict[str, Path]) -> None:
    captioned, _ = read_video(cheetah_videos["captioned"])
    plain, _ = read_video(cheetah_videos["plain"])
    difference = np.abs(captioned.astype(float) - plain.astype(float)).mean(axis=(0, 2, 3))  # per row
    band = video.caption_height(3, video.caption_font_size(64))
    assert 0 < band < 64
    assert difference[:band].mean() > 40  # darkened band and text
    assert difference[band:].mean() < 8  # the same rollout below it (up to H.264 noise)


def test_render_point_nav_grid_sequential(point_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.mp4"
    assert render.main([str(point_run), "--all", "--sequential", "--max-steps", "5", *SMALL, "--out", str(out)]) == 0
    frames, _ = read_video(out)
    assert frames.shape == (12, 4 * 64, 96, 3)  # before (6 frames) then after; one row per task
    assert frames.reshape(12, -1).std(axis=1).min() > 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}"], "not a metarl run directory"),
        (["{run}", "--checkpoint", "checkpoint_09999.pt"], "no checkpoint checkpoint_09999.pt"),
        (["{run}", "--split", "valid"], "unknown split 'valid' for point_nav; valid splits: test, train"),
        (["{run}", "--split", "ood"], "point_nav has no ood tasks"),
        (["{run}", "--task", "40"], "task index 40 is out of range: test has tasks 0..39"),
        (["{run}", "--task", "-1"], "task index -1 is out of range"),
        (["{run}", "--out", "{tmp}/video.avi"], "--out must end in .mp4 or .gif"),
        (["{run}", "--width", "8"], "--width and --height must be >= 16"),
        (["{run}", "--later-lr-scale", "-0.5"], "invalid --later-lr-scale -0.5: must be a finite number > 0"),
        (["{run}", "--later-memory", "first"], "--later-memory first: GaussianMLPPolicy has no memory"),
    ],
)
def test_render_bad_input(
    point_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert render.main([a.format(tmp=tmp_path, run=point_run) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("render: error: ") and message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("*.avi"))


def test_no_opengl_gives_one_line_telling_what_to_install(tmp_path: Path) -> None:
    """With EGL broken, ensure_gl falls back to OSMesa or says what to install."""
    code = (
        "from metarl.video import ensure_gl, RenderUnavailable\n"
        "try:\n    print(ensure_gl())\nexcept RenderUnavailable as e:\n    print('ERROR', e)"
    )
    env = {**os.environ, "MUJOCO_GL": "egl", "__EGL_VENDOR_LIBRARY_FILENAMES": str(tmp_path / "none.json")}
    env.pop("PYOPENGL_PLATFORM", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == "osmesa" or (lines[0].startswith("ERROR") and video.INSTALL_HINT in lines[0]), lines[0]


@pytest.mark.render
def test_render_benchmark_runs(gl: str, tmp_path: Path) -> None:
    from scripts import benchmark

    out = tmp_path / "render.json"
    argv = ["render", "--width", "48", "--height", "32", "--seconds", "0.3", "--json", str(out)]
    assert benchmark.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["bare_renderer_fps"] > 0 and result["metarl_fps"] > 0
    assert result["ratio"] == pytest.approx(result["metarl_fps"] / result["bare_renderer_fps"])
