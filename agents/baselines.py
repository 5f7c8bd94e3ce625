"""Stable-Baselines3 baselines for the meta-learned policies, on the same held-out tasks.

Three kinds, each trained with SB3 (PPO, or SAC) on a family's single-env
Gymnasium classes and evaluated on the held-out tasks ``scripts/evaluate.py`` uses:

* ``scratch``: one agent per held-out task, trained from scratch with ``k``
  times the adaptation budget (``multipliers``, default 1, 10, 100).
* ``multitask``: one agent trained on the training-task distribution (a task
  drawn anew at every episode; the task is not observed) with as many env-steps
  as meta-training used, then fine-tuned on each held-out task with the
  adaptation budget.
* ``oracle``: as ``multitask`` with the task's parameters appended to the
  observation (:func:`task_vector`); not fine-tuned: the upper reference.

The *adaptation budget* is the env-steps one inner step of the meta-trained
policy uses on one task, ``episodes_per_task x horizon``
(:func:`metarl.evaluation.adaptation_budget`).

Each kind's report (``<kind>.json``) follows the evaluation report's schema
where it applies: ``config`` (the resolved :class:`BaselineConfig`), ``command``,
``split``, ``tasks``, and one curve ``by_budget`` (``x``, ``per_task``,
``mean``, ``ci95_low``, ``ci95_high``) whose ``x`` counts task-specific
experience in multiples of the adaptation budget (scratch: the multipliers;
multitask: 0 before and 1 after fine-tuning; oracle: 0), with ``env_steps``
``= x * budget``. Returns are means over ``eval_episodes`` deterministic
episodes per task on the batched simulator (seeded as ``evaluate.py --seed``).
``agents`` lists every trained agent (its model directory, budget, env-steps
used, wall-clock and the hyperparameters after :func:`fit_to_budget`);
``training`` sums them. Models are saved (``model.zip``, plus
``vecnormalize.pkl`` where the observations are normalised), so reports and
plots can be redrawn without training again (:meth:`Agent.load`), each with
its entry of the report (``record.json``, written last): an interrupted run
continues with the agents it saved (:class:`BaselineRun`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import pickle
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium.spaces import Box
from gymnasium.wrappers import TimeLimit

from metarl.checkpoint import write_json
from metarl.config import TrainConfig, preset
from metarl.evaluation import curve, training_cost
from metarl.training import torch_threads

ALGORITHMS = ("ppo", "sac")
KINDS = ("scratch", "multitask", "oracle")

SPEED_ESTIMATE = {
    ("ppo", "point_nav"): (1450.0, 1450.0),
    ("ppo", "mujoco"): (300.0, 650.0),
    ("sac", "point_nav"): (100.0, 100.0),
    ("sac", "mujoco"): (40.0, 110.0),
}
"""Env-steps per second of SB3 training with the settings below (MuJoCo: HalfCheetah), one
torch thread per job on the 2-core CPU machines, as (slow, fast) machine: PPO on HalfCheetah
ran at 570-650/s on the faster machines and 230-390/s on the slower ones (two jobs at once or
beside a meta-training run); SAC on HalfCheetah (one gradient step per env-step) at 110/s once
on a faster machine and 40-51/s on a slower one with two jobs at once (2026-12-04); the
point_nav entries were measured once. For :func:`plan`'s range."""

FLAGS = {"adaptation_env_steps": "--adaptation-steps", "multitask_env_steps": "--multitask-steps"}
"""Command-line names of the config fields whose flag is not the field's name."""


class Hyperparameters(NamedTuple):
    """An SB3 setting: where it comes from, VecNormalize or not, and the algorithm's
    keyword arguments as JSON values (``policy_kwargs.activation_fn`` by name)."""

    source: str
    normalize: bool
    values: dict[str, Any]


_ZOO_PPO = "rl-baselines3-zoo hyperparams/ppo.yml (commit 208b6fd)"
_ZOO_SAC = "rl-baselines3-zoo hyperparams/sac.yml (commit c94924e)"
_ZOO_POLICY = {
    "log_std_init": -2,
    "ortho_init": False,
    "activation_fn": "relu",
    "net_arch": {"pi": [256, 256], "vf": [256, 256]},
}
_SAC_MUJOCO = {"learning_starts": 10000}

ZOO: dict[str, dict[str, Hyperparameters]] = {
    "ppo": {
        "half_cheetah": Hyperparameters(
            f"{_ZOO_PPO}, HalfCheetah-v4 (tuned)",
            True,
            {
                "n_steps": 512,
                "batch_size": 64,
                "gamma": 0.98,
                "learning_rate": 2.0633e-05,
                "ent_coef": 0.000401762,
                "clip_range": 0.1,
                "n_epochs": 20,
                "gae_lambda": 0.92,
                "max_grad_norm": 0.8,
                "vf_coef": 0.58096,
                "policy_kwargs": _ZOO_POLICY,
            },
        ),
        "ant": Hyperparameters(f"{_ZOO_PPO}, Ant-v4 (mujoco-defaults: SB3 defaults, normalize)", True, {}),
        "hopper": Hyperparameters(
            f"{_ZOO_PPO}, Hopper-v4 (tuned)",
            True,
            {
                "n_steps": 512,
                "batch_size": 32,
                "gamma": 0.999,
                "learning_rate": 9.80828e-05,
                "ent_coef": 0.00229519,
                "clip_range": 0.2,
                "n_epochs": 5,
                "gae_lambda": 0.99,
                "max_grad_norm": 0.7,
                "vf_coef": 0.835671,
                "policy_kwargs": _ZOO_POLICY,
            },
        ),
        "walker": Hyperparameters(
            f"{_ZOO_PPO}, Walker2d-v4 (tuned)",
            True,
            {
                "n_steps": 512,
                "batch_size": 32,
                "gamma": 0.99,
                "learning_rate": 5.05041e-05,
                "ent_coef": 0.000585045,
                "clip_range": 0.1,
                "n_epochs": 20,
                "gae_lambda": 0.95,
                "max_grad_norm": 1,
                "vf_coef": 0.871923,
            },
        ),
    },
    "sac": {
        "half_cheetah": Hyperparameters(f"{_ZOO_SAC}, HalfCheetah-v3 (mujoco-defaults)", False, _SAC_MUJOCO),
        "ant": Hyperparameters(f"{_ZOO_SAC}, Ant-v3 (mujoco-defaults)", False, _SAC_MUJOCO),
        "hopper": Hyperparameters(f"{_ZOO_SAC}, Hopper-v3 (mujoco-defaults)", False, _SAC_MUJOCO),
        "walker": Hyperparameters(f"{_ZOO_SAC}, Walker2d-v3 (mujoco-defaults)", False, _SAC_MUJOCO),
    },
}
"""SB3 settings per algorithm and robot (the family name's prefix); the zoo has no
MuJoCo v5 entries, so the v4 (PPO) and v3 (SAC) ones of the same robot are used."""

SB3_DEFAULTS = {"ppo": {"n_steps": 2048, "batch_size": 64}, "sac": {"learning_starts": 100, "buffer_size": 1_000_000}}
"""The SB3 defaults :func:`fit_to_budget` adjusts when a setting leaves them unset."""


def hyperparameters(algo: str, env: str) -> Hyperparameters:
    """The zoo setting of ``env``'s robot for ``algo``, or SB3's defaults (point_nav)."""
    for robot, setting in ZOO[algo].items():
        if env.startswith(robot + "_"):
            return setting
    return Hyperparameters(f"SB3 defaults (no zoo entry for {env})", False, {})


def fitting_divisor(total: int, preferred: int) -> int:
    """The largest divisor of ``total`` not above ``preferred`` when it is at least half of
    ``min(preferred, total)``; else ``min(preferred, total)``."""
    target = min(preferred, total)
    for size in range(target, (target + 1) // 2 - 1, -1):
        if total % size == 0:
            return size
    return target


def fit_to_budget(algo: str, values: dict[str, Any], env_steps: int, fine_tune: bool = False) -> dict[str, Any]:
    """``values`` made to fit a training budget of ``env_steps``; everything else is left as is.

    PPO: ``n_steps`` (one env) becomes :func:`fitting_divisor` of the budget, so
    the budget is a whole number of rollouts (learning stops after the rollout
    that reaches it: env-steps used = budget when ``n_steps`` divides it, and
    less than one rollout more otherwise); ``batch_size`` becomes the fitting
    divisor of ``n_steps``. SAC: ``learning_starts`` (random actions before the
    first update) is at most a tenth of the budget, and 0 when fine-tuning (the
    pretrained policy collects from the first step); ``buffer_size`` is at most
    the budget (nothing is evicted either way).
    """
    fitted = {**SB3_DEFAULTS[algo], **values}
    if algo == "ppo":
        fitted["n_steps"] = fitting_divisor(env_steps, fitted["n_steps"])
        fitted["batch_size"] = fitting_divisor(fitted["n_steps"], fitted["batch_size"])
    else:
        fitted["learning_starts"] = 0 if fine_tune else min(fitted["learning_starts"], env_steps // 10)
        fitted["buffer_size"] = min(fitted["buffer_size"], env_steps)
    return fitted


def _sb3_arguments(values: dict[str, Any]) -> dict[str, Any]:
    """JSON hyperparameters as SB3 arguments (``activation_fn`` names become torch modules)."""
    arguments = dict(values)
    if "policy_kwargs" in arguments:
        policy = dict(arguments["policy_kwargs"])
        if "activation_fn" in policy:
            policy["activation_fn"] = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[policy["activation_fn"]]
        arguments["policy_kwargs"] = policy
    return arguments


# ------------------------------------------------------------------ environments
def task_vector(task: Any) -> np.ndarray:
    """A task's parameters as one flat float64 vector: its fields in order, each flattened.

    ``PointGoalTask(goal=(0.1, -0.2))`` -> ``[0.1, -0.2]``; a ``ParamsTask`` gives
    its body_mass, body_inertia, dof_damping and geom_friction multipliers.
    """
    return np.concatenate([np.ravel(np.asarray(v, dtype=np.float64)) for v in task.to_dict().values()])


def task_env(family: Any, task: Any) -> gym.Env:
    """The family's single Gymnasium env for ``task``, truncated at the family's horizon."""
    return TimeLimit(family.make_env(task), max_episode_steps=family.horizon)


class TaskResamplingEnv(gym.Env):
    """A family's training distribution as one Gymnasium env: every ``reset`` draws a task.

    Tasks come from ``family.sample_tasks`` with the env's own generator (seeded
    by ``reset(seed=...)``), so a seeded run sees the same task sequence. With
    ``observe_task`` the observation ends with :func:`task_vector` of the task
    (the oracle); without it the task is hidden. Episodes never truncate here:
    wrap in ``TimeLimit`` (:func:`training_env`).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, family: Any, observe_task: bool = False) -> None:
        self.family = family
        self.observe_task = observe_task
        self.task = family.sample_tasks(np.random.default_rng(0), 1)[0]
        self.env = family.make_env(self.task)
        extra = len(task_vector(self.task)) if observe_task else 0
        self.observation_space = Box(-np.inf, np.inf, (family.observation_dim + extra,), np.float64)
        self.action_space = self.env.action_space

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, task_vector(self.task)]) if self.observe_task else obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.env.close()
        self.task = self.family.sample_tasks(self.np_random, 1)[0]
        self.env = self.family.make_env(self.task)
        obs, info = self.env.reset(seed=int(self.np_random.integers(2**31)))
        return self._observe(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(obs), float(reward), terminated, truncated, info

    def close(self) -> None:
        self.env.close()


def training_env(family: Any, observe_task: bool = False) -> gym.Env:
    """:class:`TaskResamplingEnv` truncated at the family's horizon."""
    return TimeLimit(TaskResamplingEnv(family, observe_task), max_episode_steps=family.horizon)


# ------------------------------------------------------------------ agents
@dataclasses.dataclass
class Agent:
    """A trained SB3 model and, where observations are normalised, its ``VecNormalize``."""

    algo: str
    model: Any
    normalizer: Any = None

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions ``[B, act_dim]`` for raw observations ``[B, obs_dim]``."""
        if self.normalizer is not None:
            obs = self.normalizer.normalize_obs(obs)
        action, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(action, dtype=np.float64)

    def save(self, directory: Path) -> None:
        """``directory/model.zip`` and, if any, ``directory/vecnormalize.pkl``."""
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / "model.zip")
        if self.normalizer is not None:
            self.normalizer.save(str(directory / "vecnormalize.pkl"))

    @classmethod
    def load(cls, directory: Path, algo: str, env: Callable[[], gym.Env] | None = None, **changes: Any) -> Agent:
        """The agent saved in ``directory``; ``env`` builds the env to go on training in,
        ``changes`` replace model attributes (e.g. ``n_steps``) before its buffers are built."""
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        venv: Any = DummyVecEnv([env]) if env is not None else None
        normalizer = None
        path = directory / "vecnormalize.pkl"
        if path.is_file() and venv is not None:
            normalizer = venv = VecNormalize.load(str(path), venv)
        elif path.is_file():  # statistics only: nothing to step
            with path.open("rb") as f:
                normalizer = pickle.load(f)
        model = _algorithm(algo).load(directory / "model.zip", env=venv, device="cpu", **changes)
        return cls(algo, model, normalizer)


def _algorithm(algo: str) -> Any:
    from stable_baselines3 import PPO, SAC

    return {"ppo": PPO, "sac": SAC}[algo]


def train(
    algo: str,
    setting: Hyperparameters,
    env: Callable[[], gym.Env],
    env_steps: int,
    seed: int,
    start: Path | None = None,
) -> tuple[Agent, dict[str, Any]]:
    """Train an agent on ``env`` for ``env_steps`` (one env, SB3's ``DummyVecEnv``).

    Args:
        algo: ``ppo`` or ``sac``.
        setting: its hyperparameters (fitted to the budget by :func:`fit_to_budget`).
        env: builds the training env.
        env_steps: the budget.
        seed: SB3's seed (network initialisation, action noise, env resets).
        start: a saved agent's directory to fine-tune (its ``VecNormalize``
            statistics go on updating), or None to start from scratch.
    Returns:
        The agent and its record: ``budget``, ``env_steps`` (used),
        ``wall_clock_s`` and ``hyperparameters`` (as fitted).
    """
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    fitted = fit_to_budget(algo, setting.values, env_steps, fine_tune=start is not None)
    if start is not None:
        changed = {k: v for k, v in fitted.items() if k in ("n_steps", "batch_size", "learning_starts", "buffer_size")}
        agent = Agent.load(start, algo, env, **changed)
        agent.model.set_random_seed(seed)
    else:
        venv: Any = DummyVecEnv([env])
        normalizer = VecNormalize(venv, gamma=fitted.get("gamma", 0.99)) if setting.normalize else None
        model = _algorithm(algo)(
            "MlpPolicy", normalizer or venv, seed=seed, device="cpu", verbose=0, **_sb3_arguments(fitted)
        )
        agent = Agent(algo, model, normalizer)
    # SB3's default logger at verbose=0 creates an empty temporary directory per learn(); log nowhere instead
    agent.model.set_logger(Logger(folder=None, output_formats=[]))
    tic = time.perf_counter()
    agent.model.learn(total_timesteps=env_steps, reset_num_timesteps=True)
    record = {
        "budget": env_steps,
        "env_steps": int(agent.model.num_timesteps),
        "wall_clock_s": time.perf_counter() - tic,
        "hyperparameters": fitted,
    }
    return agent, record


def evaluate(
    family: Any, tasks: list[Any], agents: Sequence[Agent], episodes: int, seed: int, observe_task: bool = False
) -> np.ndarray:
    """Mean return per task ``[num_tasks]`` of deterministic episodes on the batched simulator.

    Args:
        agents: one agent for every task, or one per task (``agents[i]`` acts in task ``i``).
        episodes: episodes per task.
        seed: the simulator's seed (initial states; as ``evaluate.py --seed``).
        observe_task: append each slot's :func:`task_vector` to its observation (oracle).
    """
    sim = family.batch(tasks, episodes, seed=seed)
    slots = [np.flatnonzero(sim.task_index == i) for i in range(len(tasks))]
    groups = [(agents[0], np.arange(sim.num_slots))] if len(agents) == 1 else list(zip(agents, slots, strict=True))
    extra = np.stack([task_vector(tasks[i]) for i in sim.task_index]) if observe_task else None
    obs = sim.reset()
    total = np.zeros(sim.num_slots)
    for _ in range(sim.horizon):
        full = obs if extra is None else np.concatenate([obs, extra], axis=1)
        actions = np.zeros((sim.num_slots, sim.action_dim))
        for agent, ids in groups:
            actions[ids] = agent.act(full[ids])
        result = sim.step(actions)
        total += result.reward
        obs = result.obs
        if result.done.all():
            break
    return total.reshape(len(tasks), episodes).mean(axis=1)


# ------------------------------------------------------------------ the three kinds
@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """What ``scripts/baselines.py`` runs, with its budgets resolved."""

    env: str
    """Task family."""
    adaptation_env_steps: int
    """Env-steps of one inner step on one task (``episodes_per_task x horizon``)."""
    adaptation_source: str
    """Where the adaptation budget came from (an evaluation report, a run, the preset, a flag)."""
    variant: str = "default"
    """Variant of the family."""
    split: str = "test"
    """Held-out tasks: test or ood."""
    training_split: str = "train"
    """Training distribution of multitask and oracle: train, or ood for the reduced range."""
    algo: str = "ppo"
    """ppo or sac."""
    kinds: tuple[str, ...] = KINDS
    """Which baselines to run."""
    multipliers: tuple[int, ...] = (1, 10, 100)
    """From-scratch budgets in multiples of the adaptation budget."""
    multitask_env_steps: int | None = None
    """Training env-steps of multitask and oracle (required when either runs)."""
    meta_training: dict[str, Any] | None = None
    """Iterations, env-steps and wall-clock of the meta-training run compared with, if known."""
    num_tasks: int = 0
    """The first this many held-out tasks (0: all of them)."""
    eval_episodes: int = 10
    """Deterministic evaluation episodes per task."""
    eval_seed: int = 0
    """Seed of the evaluation episodes (as evaluate.py --seed)."""
    seed: int = 0
    """Seed of the agents' training."""

    def __post_init__(self) -> None:
        checks = {
            "algo": (self.algo in ALGORITHMS, f"must be one of {', '.join(ALGORITHMS)}"),
            "kinds": (len(self.kinds) > 0 and set(self.kinds) <= set(KINDS), f"valid kinds: {', '.join(KINDS)}"),
            "adaptation_env_steps": (self.adaptation_env_steps > 0, "must be > 0 (a budget of env-steps)"),
            "multipliers": (len(self.multipliers) > 0 and min(self.multipliers) > 0, "must be positive integers"),
            "multitask_env_steps": (
                self.multitask_env_steps is None or self.multitask_env_steps > 0,
                "must be > 0 (a budget of env-steps)",
            ),
            "num_tasks": (self.num_tasks >= 0, "must be >= 0 (0: all)"),
            "eval_episodes": (self.eval_episodes >= 1, "must be >= 1"),
        }
        for name, (ok, why) in checks.items():
            if not ok:
                flag = FLAGS.get(name, "--" + name.replace("_", "-"))
                raise ValueError(f"invalid {flag} {_shown(getattr(self, name))}: {why}")
        if self.multitask_env_steps is None and {"multitask", "oracle"} & set(self.kinds):
            raise ValueError(
                "multitask and oracle train with meta-training's env-steps: give --run RUN_DIR, --from-eval FILE "
                "(of a run with metrics.csv) or --multitask-steps N"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def planned_env_steps(self, kind: str, num_tasks: int) -> int:
        """Env-steps ``kind`` will train for on ``num_tasks`` held-out tasks."""
        if kind == "scratch":
            return num_tasks * sum(self.multipliers) * self.adaptation_env_steps
        assert self.multitask_env_steps is not None
        fine_tuning = num_tasks * self.adaptation_env_steps if kind == "multitask" else 0
        return self.multitask_env_steps + fine_tuning


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def resolve(
    env: str,
    horizon: int,
    eval_report: dict[str, Any] | None = None,
    run_dir: Path | None = None,
    adaptation_env_steps: int | None = None,
    multitask_env_steps: int | None = None,
    split: str | None = None,
    **settings: Any,
) -> BaselineConfig:
    """The configuration of a baseline run, with its budgets taken from where they are recorded.

    Args:
        env: the family; ``horizon``: its episode length.
        eval_report: an evaluation report of a run of ``env`` (``evaluate.py --json``):
            its adaptation budget, meta-training cost and split.
        run_dir: a meta-training run of ``env``: its ``episodes_per_task`` and cost.
        adaptation_env_steps: an explicit adaptation budget (over the above).
        multitask_env_steps: an explicit multitask/oracle budget (over meta-training's).
        split: the held-out tasks (default: the evaluation report's, else test).
        settings: the other :class:`BaselineConfig` fields.
    The adaptation budget comes from the first of: the explicit one, the
    evaluation report, the run's config, the family's preset (``episodes_per_task x horizon``).
    """
    run_config = None
    if eval_report is not None:
        run_config = eval_report["config"]
        run_dir = run_dir or (Path(eval_report["run_dir"]) if "run_dir" in eval_report else None)
    elif run_dir is not None:
        if not (Path(run_dir) / "config.json").is_file():
            raise ValueError(f"{run_dir} is not a metarl run directory (no config.json)")
        run_config = json.loads((Path(run_dir) / "config.json").read_text())
    if run_config is not None and run_config["env"] != env:
        raise ValueError(f"the meta-trained run is on {run_config['env']}, not on --env {env}")
    meta_training = None
    if eval_report is not None and eval_report.get("meta_training"):
        meta_training = eval_report["meta_training"]
    elif run_dir is not None:
        meta_training = training_cost(Path(run_dir), horizon)
    if adaptation_env_steps is not None:
        source = "--adaptation-steps"
    elif eval_report is not None and "adaptation_env_steps_per_step" in eval_report:
        adaptation_env_steps, source = eval_report["adaptation_env_steps_per_step"], "the evaluation report"
    else:
        episodes = (run_config or {}).get("episodes_per_task") or TrainConfig.from_dict(
            preset(env)[1]
        ).episodes_per_task
        adaptation_env_steps = episodes * horizon
        origin = "the run's config" if run_config is not None else f"{env}'s preset"
        source = f"{origin}: {episodes} episodes x horizon {horizon}"
    split = split or (eval_report["split"] if eval_report is not None else "test")
    if run_config is not None:
        training_split = run_config.get("split", "train")
    else:
        training_split = "ood" if split == "ood" else "train"
    if multitask_env_steps is None and meta_training is not None:
        multitask_env_steps = meta_training["env_steps"]
    return BaselineConfig(
        env=env,
        adaptation_env_steps=adaptation_env_steps,
        adaptation_source=source,
        split=split,
        training_split=training_split,
        multitask_env_steps=multitask_env_steps,
        meta_training=meta_training,
        **settings,
    )


def plan(config: BaselineConfig, num_tasks: int, jobs: int = 1) -> list[str]:
    """Lines that say what each kind will train and about how long it takes (:data:`SPEED_ESTIMATE`
    per job; ``jobs`` agents at once where they are independent, one core each)."""
    slow, fast = SPEED_ESTIMATE[config.algo, "point_nav" if config.env == "point_nav" else "mujoco"]
    lines = [f"adaptation budget: {config.adaptation_env_steps:,} env-steps per task ({config.adaptation_source})"]
    meta = (config.meta_training or {}).get("env_steps")
    steps = config.multitask_env_steps
    if meta and steps is not None and steps != meta:
        lines.append(
            f"multitask/oracle: {steps:,} env-steps, {100 * steps / meta:.3g}% of the {meta:,} "
            "meta-training used (--multitask-steps)"
        )

    def span(low: str, high: str) -> str:  # "650" or "300-650"
        return high if low == high else f"{low}-{high}"

    per_job = f"{span(f'{slow:.0f}', f'{fast:.0f}')} env-steps/s" + (f" per job, {jobs} jobs" if jobs > 1 else "")
    for kind in config.kinds:
        steps = config.planned_env_steps(kind, num_tasks)
        if kind == "scratch":
            work = steps / min(jobs, num_tasks * len(config.multipliers))
        else:  # one agent on the distribution, then (multitask) the fine-tunes side by side
            assert config.multitask_env_steps is not None
            work = config.multitask_env_steps + (steps - config.multitask_env_steps) / min(jobs, num_tasks)
        hours = span(f"{work / fast / 3600:,.1f}", f"{work / slow / 3600:,.1f}")
        lines.append(f"{kind}: {steps:,} env-steps, about {hours} h at {per_job}")
    return lines


def agent_seed(seed: int, kind: str, task: int, multiplier: int) -> int:
    """A distinct SB3 seed per agent, derived from the run's ``seed``."""
    return int(np.random.SeedSequence([seed, KINDS.index(kind), task + 1, multiplier]).generate_state(1)[0] >> 1)


class AgentJob(NamedTuple):
    """One agent of a baseline run: what it trains on, for how long, and where it is kept.

    Attributes:
        kind: the baseline it belongs to.
        name: its directory under ``<out>/<kind>/`` (``x10/task_03``, ``pretrained``, ``agent``).
        env: builds its training env (picklable: workers build it again).
        env_steps: its budget.
        seed: SB3's seed.
        start: the model directory (relative to the run's output directory) it fine-tunes, or None.
        task_index: the held-out task it trains on, or None (the training distribution).
        multiplier: its budget in multiples of the adaptation budget (scratch, fine-tuning), or None.
    """

    kind: str
    name: str
    env: Callable[[], gym.Env]
    env_steps: int
    seed: int
    start: str | None = None
    task_index: int | None = None
    multiplier: int | None = None

    @property
    def model(self) -> str:
        """The model directory, relative to the run's output directory."""
        return f"{self.kind}/{self.name}"


RECORD = "record.json"
"""An agent directory's record, written after its model: a directory with a record holds a complete agent."""


def train_and_save(
    algo: str, setting: Hyperparameters, job: AgentJob, out_dir: Path, identity: dict[str, Any]
) -> dict[str, Any]:
    """Train ``job``'s agent on one torch thread, save it under ``out_dir`` and then its record.

    The record (:data:`RECORD`) is the report's entry for the agent: ``identity``
    (what determines the agent, see :meth:`BaselineRun.identity`) with the
    env-steps used and the wall-clock; written atomically, last, so an
    interrupted run retrains only agents without one. A top-level function, so
    worker processes can run it.
    """
    start = out_dir / job.start if job.start is not None else None
    with torch_threads(1):  # SB3's small MLPs train fastest single-threaded; workers then share the cores
        agent, record = train(algo, setting, job.env, job.env_steps, job.seed, start)
    agent.save(out_dir / job.model)
    record = {**identity, "env_steps": record["env_steps"], "wall_clock_s": record["wall_clock_s"]}
    write_json(out_dir / job.model / RECORD, record)
    return record


IGNORE_INTERRUPTS = (signal.SIGINT, signal.SIG_IGN)
"""``signal.signal`` arguments of the worker processes."""


def _train_indexed(item: tuple[int, tuple[Any, ...]]) -> tuple[int, dict[str, Any]]:
    """``(index, train_and_save(*arguments))`` for ``item = (index, arguments)``: a worker's task."""
    index, arguments = item
    return index, train_and_save(*arguments)


class BaselineRun:
    """Trains and evaluates the baselines of ``config`` on ``tasks`` into ``out_dir``.

    Every agent is saved with its record as soon as it is trained; running the
    same command again after an interruption keeps the agents that have a
    record matching what it would train (:meth:`reusable`) and trains the rest.
    Independent agents (scratch, the fine-tunes) train in ``jobs`` worker
    processes at once, each on one torch thread; the numbers do not depend on ``jobs``.

    Args:
        family: the family with the training split (its ``sample_tasks`` is the training distribution).
        tasks: the held-out tasks.
        config: the resolved configuration.
        out_dir: where the models and reports go.
        command: the command line, recorded in every report.
        progress: called with a line of text after every agent.
        jobs: agents trained at once, in worker processes when > 1.
    """

    def __init__(
        self,
        family: Any,
        tasks: list[Any],
        config: BaselineConfig,
        out_dir: Path,
        command: str,
        progress: Callable[[str], None] = print,
        jobs: int = 1,
    ) -> None:
        if jobs < 1:
            raise ValueError(f"invalid --jobs {jobs}: must be >= 1")
        self.family, self.tasks, self.config, self.out_dir = family, tasks, config, Path(out_dir)
        self.command, self.progress, self.jobs = command, progress, jobs
        self.setting = hyperparameters(config.algo, config.env)

    # ------------------------------------------------------------------ agents
    def agent_jobs(self, kind: str) -> list[AgentJob]:
        """Every agent ``kind`` trains, in the order of its report (multitask: the pretrained agent first)."""
        cfg, family = self.config, self.family
        if kind == "scratch":
            return [
                AgentJob(
                    kind,
                    f"x{multiplier}/task_{i:02d}",
                    functools.partial(task_env, family, task),
                    multiplier * cfg.adaptation_env_steps,
                    agent_seed(cfg.seed, kind, i, multiplier),
                    task_index=i,
                    multiplier=multiplier,
                )
                for multiplier in cfg.multipliers
                for i, task in enumerate(self.tasks)
            ]
        assert cfg.multitask_env_steps is not None
        if kind == "oracle":
            env = functools.partial(training_env, family, True)
            return [AgentJob(kind, "agent", env, cfg.multitask_env_steps, agent_seed(cfg.seed, kind, -1, 0))]
        pretrained = AgentJob(
            kind,
            "pretrained",
            functools.partial(training_env, family),
            cfg.multitask_env_steps,
            agent_seed(cfg.seed, kind, -1, 0),
        )
        fine_tunes = [
            AgentJob(
                kind,
                f"task_{i:02d}",
                functools.partial(task_env, family, task),
                cfg.adaptation_env_steps,
                agent_seed(cfg.seed, kind, i, 1),
                start=pretrained.model,
                task_index=i,
                multiplier=1,
            )
            for i, task in enumerate(self.tasks)
        ]
        return [pretrained, *fine_tunes]

    def identity(self, job: AgentJob) -> dict[str, Any]:
        """What determines ``job``'s agent: a saved agent whose record holds the same is reused."""
        identity = {
            "name": job.name,
            "model": job.model,
            "algo": self.config.algo,
            "env": self.config.env,
            "variant": self.config.variant,
            "training_split": self.config.training_split,
            "task": self.tasks[job.task_index].to_dict() if job.task_index is not None else None,
            "start": job.start,
            "seed": job.seed,
            "budget": job.env_steps,
            "hyperparameters": fit_to_budget(
                self.config.algo, self.setting.values, job.env_steps, fine_tune=job.start is not None
            ),
        }
        if job.task_index is not None:
            identity.update(task_index=job.task_index, multiplier=job.multiplier)
        return json.loads(json.dumps(identity))  # as read back from a record (tuples become lists)

    def saved_record(self, job: AgentJob) -> dict[str, Any] | None:
        """The record of ``job``'s agent if it is saved already, else None.

        Raises:
            ValueError: the saved record is unreadable, or differs from what this
                run would train there (another seed, task, budget or setting).
        """
        path = self.out_dir / job.model / RECORD
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} is unreadable ({error}); remove that agent's directory") from None
        differing = [k for k, v in self.identity(job).items() if record.get(k) != v]
        if differing:
            raise ValueError(
                f"{path.parent} holds an agent trained with another {', '.join(differing)}; "
                "use another --out or remove it"
            )
        return record

    def reusable(self) -> int:
        """How many agents of the configured kinds are saved already (:meth:`saved_record`: raises on a mismatch)."""
        return sum(self.saved_record(job) is not None for kind in self.config.kinds for job in self.agent_jobs(kind))

    def _train_all(self, jobs: list[AgentJob]) -> list[dict[str, Any]]:
        """The records of ``jobs``' agents, training those not saved yet (in worker processes if ``jobs > 1``)."""
        records: dict[int, dict[str, Any]] = {}
        todo = []
        for index, job in enumerate(jobs):
            record = self.saved_record(job)
            if record is None:
                todo.append(index)
            else:
                records[index] = record
                self.progress(f"  {job.kind} {job.name}: saved before, reused")

        def done(index: int, record: dict[str, Any]) -> None:
            records[index] = record
            speed = record["env_steps"] / record["wall_clock_s"]
            self.progress(
                f"  {jobs[index].kind} {jobs[index].name}: {record['env_steps']:,} env-steps "
                f"in {record['wall_clock_s']:.1f} s ({speed:.0f}/s)"
            )

        arguments = [(self.config.algo, self.setting, jobs[i], self.out_dir, self.identity(jobs[i])) for i in todo]
        if self.jobs == 1 or len(todo) <= 1:
            for index, args in zip(todo, arguments, strict=True):
                done(index, train_and_save(*args))
        else:  # spawned workers (no forked torch/OpenMP state) that leave Ctrl-C to this process, which
            # then terminates them on leaving the block: agents in training are lost, saved ones kept
            context = multiprocessing.get_context("spawn")
            with context.Pool(min(self.jobs, len(todo)), initializer=signal.signal, initargs=IGNORE_INTERRUPTS) as pool:
                for index, record in pool.imap_unordered(_train_indexed, list(zip(todo, arguments, strict=True))):
                    done(index, record)
        return [records[i] for i in range(len(jobs))]

    def _evaluate(self, records: Sequence[dict[str, Any]], observe_task: bool = False) -> np.ndarray:
        cfg = self.config
        agents = [Agent.load(self.out_dir / r["model"], cfg.algo) for r in records]
        return evaluate(self.family, self.tasks, agents, cfg.eval_episodes, cfg.eval_seed, observe_task)

    # ------------------------------------------------------------------ the kinds
    def scratch(self) -> tuple[np.ndarray, list[int], list[dict[str, Any]]]:
        """One agent per task and multiplier: returns ``[len(multipliers), num_tasks]``."""
        cfg, returns = self.config, []
        records = self._train_all(self.agent_jobs("scratch"))
        for m, multiplier in enumerate(cfg.multipliers):
            returns.append(self._evaluate(records[m * len(self.tasks) : (m + 1) * len(self.tasks)]))
            self.progress(f"scratch x{multiplier}: mean return {returns[-1].mean():.2f}")
        return np.stack(returns), list(cfg.multipliers), records

    def multitask(self) -> tuple[np.ndarray, list[int], list[dict[str, Any]]]:
        """Pretrain on the distribution, fine-tune per task: returns ``[2, num_tasks]`` (before, after)."""
        pretrained, *fine_tunes = self.agent_jobs("multitask")
        records = self._train_all([pretrained])
        before = self._evaluate(records)
        self.progress(f"multitask before fine-tuning: mean return {before.mean():.2f}")
        tuned = self._train_all(fine_tunes)
        after = self._evaluate(tuned)
        self.progress(f"multitask after fine-tuning: mean return {after.mean():.2f}")
        return np.stack([before, after]), [0, 1], records + tuned

    def oracle(self) -> tuple[np.ndarray, list[int], list[dict[str, Any]]]:
        """One agent that observes the task: returns ``[1, num_tasks]``."""
        records = self._train_all(self.agent_jobs("oracle"))
        returns = self._evaluate(records, observe_task=True)
        self.progress(f"oracle: mean return {returns.mean():.2f}")
        return returns[None], [0], records

    def run(self, kind: str) -> dict[str, Any]:
        """Train and evaluate ``kind``; write and return its report (``out_dir/<kind>.json``)."""
        per_task, x, agents = {"scratch": self.scratch, "multitask": self.multitask, "oracle": self.oracle}[kind]()
        cfg = self.config
        report = {
            "kind": kind,
            "algo": cfg.algo,
            "env": cfg.env,
            "variant": cfg.variant,
            "split": cfg.split,
            "seed": cfg.seed,
            "command": self.command,
            "config": cfg.to_dict(),
            "hyperparameters": self.setting._asdict(),
            "tasks": [t.to_dict() for t in self.tasks],
            "adaptation_env_steps_per_step": cfg.adaptation_env_steps,
            "meta_training": cfg.meta_training,
            "by_budget": {**curve(per_task, x), "env_steps": [k * cfg.adaptation_env_steps for k in x]},
            "agents": agents,
            "training": {
                "env_steps": sum(a["env_steps"] for a in agents),
                "wall_clock_s": sum(a["wall_clock_s"] for a in agents),
            },
        }
        write_json(self.out_dir / f"{kind}.json", report)
        return report
