"""Videos of a policy before and after adaptation: rollouts that record frames,
captions, side-by-side composition and MP4/GIF writing.

Everything here works on objects passed in (duck typing): a Gymnasium
environment made with ``render_mode="rgb_array"`` and a policy with
``start/act/observe`` (``agents.policies.Policy``); ``metarl`` imports neither
``envs`` nor ``agents``. A typical use (``scripts/render.py`` does this)::

    env = family.make_env(task, render_mode="rgb_array", width=320, height=240)
    panel = Panel(rollout_frames(env, policy, params, seed=0), lambda f: [task.describe(), "before adaptation"])
    write_video([Path("video.mp4")], lockstep([[panel]]), fps=20)

Several panels advance in *lockstep* (one step of each per video frame), so a
video streams to the encoder and memory does not grow with its length.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from metarl.episodes import Memory
from metarl.evaluation import adaptation_steps
from metarl.sampling import choose_action

INSTALL_HINT = "apt-get install libegl1 (EGL) or libosmesa6 (OSMesa)"
"""What to install when no offscreen OpenGL context can be made."""


class RenderUnavailable(RuntimeError):
    """No offscreen OpenGL context could be created (message: one line, what to install)."""


# --------------------------------------------------------------------- OpenGL
def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _try_context(backend: str, width: int, height: int) -> None:
    """Create, use and free one offscreen context of ``backend`` (raises on failure)."""
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        if os.environ.get("PYOPENGL_PLATFORM", "osmesa") != "osmesa":
            # PyOpenGL fixes its platform on first import; an EGL attempt set it to egl.
            os.environ["PYOPENGL_PLATFORM"] = "osmesa"
            for name in [m for m in sys.modules if m == "OpenGL" or m.startswith("OpenGL.")]:
                del sys.modules[name]
            sys.modules.pop("mujoco.osmesa", None)
        from mujoco.osmesa import GLContext
    elif backend == "glfw":
        from mujoco.glfw import GLContext
    else:
        raise ValueError(f"MUJOCO_GL={backend!r} is not one of egl, osmesa, glfw")
    context = GLContext(width, height)
    try:
        context.make_current()
    finally:
        context.free()


def ensure_gl(width: int = 16, height: int = 16) -> str:
    """Make sure MuJoCo can render offscreen; returns the backend (``MUJOCO_GL``).

    ``MUJOCO_GL`` defaults to ``egl`` (headless). When EGL fails, OSMesa is
    tried and ``MUJOCO_GL`` set to it (Gymnasium's renderer reads it when it
    creates its context). Call before the first frame is rendered.

    Raises:
        RenderUnavailable: neither works; the message says what to install.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    requested = os.environ["MUJOCO_GL"].lower()
    candidates = [requested, "osmesa"] if requested == "egl" else [requested]
    errors = []
    for backend in candidates:
        try:
            _try_context(backend, width, height)
        except Exception as error:  # any failure means: try the next backend
            errors.append(f"{backend}: {_first_line(error)}")
            continue
        os.environ["MUJOCO_GL"] = backend
        return backend
    raise RenderUnavailable(f"cannot render offscreen ({'; '.join(errors)}); install {INSTALL_HINT}")


# --------------------------------------------------------------------- rollouts
class Frame(NamedTuple):
    """One rendered frame of a rollout and what happened up to it.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        step: environment steps taken (0: the frame after reset).
        reward: reward of the last step (0 at step 0).
        episode_return: sum of the rewards so far.
        measure: the live quantity shown in the caption (e.g. ``v +1.23 m/s``).
        info: the ``info`` of the last step (empty at step 0).
        done: the episode ended with this frame (terminated, truncated or ``max_steps``).
    """

    image: np.ndarray
    step: int
    reward: float
    episode_return: float
    measure: str
    info: dict[str, Any]
    done: bool


Measure = Callable[[Any, np.ndarray, dict[str, Any]], str]
"""``(env, observation, info) -> caption text``, called right after each step."""


def velocity_measure(env: Any, observation: np.ndarray, info: dict[str, Any]) -> str:
    """The forward velocity ``info["x_velocity"]`` (0 before the first step)."""
    return f"v {info.get('x_velocity', 0.0):+.2f} m/s"


def _renderer(env: Any) -> Any:
    """Gymnasium's ``MujocoRenderer`` of ``env``, or None (non-MuJoCo environments)."""
    return getattr(getattr(env, "unwrapped", env), "mujoco_renderer", None)


def render_frame(env: Any) -> np.ndarray:
    """``env.render()`` as ``[H, W, 3]`` uint8, with the env's own GL context current
    (several MuJoCo envs rendering in turn each have one)."""
    renderer = _renderer(env)
    viewer = getattr(renderer, "viewer", None)
    if viewer is not None and hasattr(viewer, "make_context_current"):
        viewer.make_context_current()
    image = env.render()
    if image is None:
        raise ValueError("env.render() returned None: make the env with render_mode='rgb_array'")
    return np.asarray(image, dtype=np.uint8)


@torch.no_grad()
def rollout_frames(
    env: Any,
    policy: Any,
    params: dict[str, Tensor],
    memory: Memory | None = None,
    *,
    seed: int | None = None,
    max_steps: int | None = None,
    deterministic: bool = True,
    generator: torch.Generator | None = None,
    measure: Measure = velocity_measure,
    device: torch.device | str = "cpu",
) -> Iterator[Frame]:
    """One episode of ``policy`` in the single Gymnasium ``env``, a frame per step.

    The policy runs with ``num_tasks=1, num_slots=1``: ``params`` are shared, or
    per task with a leading task axis of 1; ``memory`` (context policies) holds
    that one task's earlier transitions. Yields the frame after ``reset`` and one
    after every step, until the episode ends or ``max_steps`` steps were taken.

    Args:
        env: made with ``render_mode="rgb_array"``.
        deterministic: take the mean action (default); else sample it with noise
            from ``generator`` (a CPU ``torch.Generator``, seeded by ``seed`` if None).
        measure: the live caption quantity, called right after reset and each step.
    """
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    if not deterministic and generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    observation, _ = env.reset(seed=seed)
    obs = torch.as_tensor(np.asarray(observation), dtype=torch.float32, device=device).unsqueeze(0)
    state = policy.start(params, 1, 1, memory)
    total = 0.0
    done = max_steps == 0
    yield Frame(render_frame(env), 0, 0.0, 0.0, measure(env, observation, {}), {}, done)
    step = 0
    while not done:
        action = choose_action(policy.act(params, obs, state), deterministic, generator)
        observation, reward, terminated, truncated, info = env.step(action[0].double().cpu().numpy())
        step += 1
        total += float(reward)
        done = bool(terminated or truncated) or (max_steps is not None and step >= max_steps)
        yield Frame(render_frame(env), step, float(reward), total, measure(env, observation, info), info, done)
        if done:
            return
        next_obs = torch.as_tensor(np.asarray(observation), dtype=torch.float32, device=device).unsqueeze(0)
        reward_t = torch.tensor([float(reward)], dtype=torch.float32, device=device)
        state = policy.observe(params, state, obs, action, reward_t, next_obs)
        obs = next_obs


def adapted_params(
    family: Any,
    policy: Any,
    learner: Any,
    tasks: list[Any],
    num_steps: int,
    episodes_per_task: int,
    memory_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    later_lr_scale: float = 1.0,
    later_memory: str = "latest",
) -> tuple[dict[str, Tensor], Memory | None]:
    """Parameters (and context memory) after ``num_steps`` inner steps on each task.

    The protocol of :func:`metarl.evaluation.adaptation_steps` (evaluate.py's curve).

    Returns:
        ``(params, memory)``: the meta-parameters and None when ``num_steps`` is 0;
        else per-task parameters (leading axis ``len(tasks)``) and, for context
        policies, the memory of the last step's episodes or, with ``later_memory="first"``,
        of the pre-adaptation ones (else None).
    """
    steps = adaptation_steps(
        family,
        policy,
        learner,
        tasks,
        num_steps=num_steps,
        episodes_per_task=episodes_per_task,
        memory_size=memory_size,
        seed=seed,
        device=device,
        later_lr_scale=later_lr_scale,
        later_memory=later_memory,
    )
    *_, (params, memory, _) = steps
    return params, memory


def task_slice(
    params: dict[str, Tensor], shared: dict[str, Tensor], memory: Memory | None, index: int
) -> tuple[dict[str, Tensor], Memory | None]:
    """Task ``index``'s parameters with a leading task axis of 1 (shared ones unchanged)
    and its memory; ``shared`` are the module's parameters (to tell the two apart)."""
    sliced = {k: v[index : index + 1] if v.dim() == shared[k].dim() + 1 else v for k, v in params.items()}
    if memory is not None:
        memory = memory.select(slice(index, index + 1))
    return sliced, memory


# --------------------------------------------------------------------- frames
@functools.cache
def _font(size: int) -> Any:
    """PIL's default font at ``size`` pixels (bitmap where FreeType is missing), or None without PIL."""
    try:
        from PIL import ImageFont
    except ImportError:
        return None
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def caption_font_size(height: int) -> int:
    """Caption text height for a panel ``height`` pixels high."""
    return max(8, round(height / 22))


def caption_height(num_lines: int, font_size: int) -> int:
    """Rows covered by a caption of ``num_lines`` lines at ``font_size`` pixels."""
    return num_lines * (font_size + max(1, font_size // 4)) + max(2, font_size // 3) if num_lines else 0


def caption(image: np.ndarray, lines: Sequence[str], font_size: int | None = None) -> np.ndarray:
    """``image`` with ``lines`` written in white over a darkened band at its top.

    The image keeps its size (the band covers the top rows). Without PIL the band
    is drawn without text. Returns a new ``[H, W, 3]`` uint8 array.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    if not lines:
        return out
    size = font_size or caption_font_size(out.shape[0])
    line_height = size + max(1, size // 4)
    band = min(out.shape[0], caption_height(len(lines), size))
    out[:band] //= 3
    font = _font(size)
    if font is None:
        return out
    from PIL import Image, ImageDraw

    strip = Image.fromarray(out[:band])
    draw = ImageDraw.Draw(strip)
    for i, text in enumerate(lines):
        draw.text((max(2, size // 3), max(1, size // 6) + i * line_height), text, fill=(255, 255, 255), font=font)
    out[:band] = np.asarray(strip)
    return out


def even(image: np.ndarray) -> np.ndarray:
    """``image`` padded with black to an even width and height (H.264 with yuv420p needs both)."""
    height, width = image.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return image
    return np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)))


def tile(rows: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """Images ``[H, W, 3]`` laid out as a grid (row by row), padded black to equal
    sizes and to an even total size."""
    height = max(image.shape[0] for row in rows for image in row)
    width = max(image.shape[1] for row in rows for image in row)
    columns = max(len(row) for row in rows)
    out = np.zeros((len(rows) * height, columns * width, 3), dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            out[i * height : i * height + image.shape[0], j * width : j * width + image.shape[1]] = image
    return even(out)


class Panel:
    """One rollout shown in a video: its frames, captioned, as an iterator of images.

    Args:
        frames: from :func:`rollout_frames`.
        lines: caption lines of a frame, or None for no caption.
    """

    def __init__(self, frames: Iterator[Frame], lines: Callable[[Frame], list[str]] | None = None) -> None:
        self.frames, self.lines = frames, lines
        self.last: Frame | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        frame = next(self.frames)
        self.last = frame
        return frame.image if self.lines is None else caption(frame.image, self.lines(frame))


def lockstep(grid: Sequence[Sequence[Iterator[np.ndarray]]]) -> Iterator[np.ndarray]:
    """Composed video frames of a grid of image streams advanced together.

    Each composed frame takes the next image of every stream; a stream that has
    ended shows its last image until every stream has ended.
    """
    last: list[list[np.ndarray | None]] = [[None] * len(row) for row in grid]
    live = [[True] * len(row) for row in grid]
    while True:
        advanced = False
        for i, row in enumerate(grid):
            for j, stream in enumerate(row):
                if not live[i][j]:
                    continue
                try:
                    last[i][j] = next(stream)
                    advanced = True
                except StopIteration:
                    live[i][j] = False
        if not advanced:
            return
        shown = [image for row in last for image in row if image is not None]
        blank = np.zeros_like(shown[0])
        yield tile([[blank if image is None else image for image in row] for row in last])


# --------------------------------------------------------------------- writing
class VideoWriter:
    """Writes frames to ``path``: H.264 MP4 (``libx264``, ``yuv420p``) through
    imageio's ffmpeg, or an animated GIF when ``path`` ends in ``.gif``.

    MP4 frames stream to the encoder; GIF frames are kept until :meth:`close`.
    Frames are padded to even sizes; every frame must have the first one's size.
    """

    def __init__(self, path: Path, fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path, self.fps = Path(path), float(fps)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.size: tuple[int, int] | None = None
        self._gif: list[np.ndarray] | None = [] if self.path.suffix.lower() == ".gif" else None
        self._writer: Any = None

    def append(self, image: np.ndarray) -> None:
        image = even(np.asarray(image, dtype=np.uint8))
        height, width = image.shape[:2]
        if self.size is None:
            self.size = (width, height)
            if self._gif is None:
                import imageio.v2 as imageio

                self._writer = imageio.get_writer(
                    str(self.path),
                    format="FFMPEG",
                    mode="I",
                    fps=self.fps,
                    codec="libx264",
                    pixelformat="yuv420p",
                    macro_block_size=1,
                    ffmpeg_log_level="error",
                )
        elif self.size != (width, height):
            raise ValueError(f"frame {self.count} is {width}x{height}, the video {self.size[0]}x{self.size[1]}")
        if self._gif is not None:
            self._gif.append(image)
        else:
            self._writer.append_data(image)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._gif:
            import imageio.v3 as iio

            iio.imwrite(self.path, np.stack(self._gif), plugin="pillow", duration=1000.0 / self.fps, loop=0)
            self._gif = []

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_video(paths: Sequence[Path], frames: Iterable[np.ndarray], fps: float) -> int:
    """Write ``frames`` to every file of ``paths`` (MP4 or GIF by suffix); returns the frame count."""
    writers = [VideoWriter(path, fps) for path in paths]
    try:
        for image in frames:
            for writer in writers:
                writer.append(image)
    finally:
        for writer in writers:
            writer.close()
    return writers[0].count if writers else 0
