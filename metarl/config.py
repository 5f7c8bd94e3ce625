"""Configuration: frozen dataclasses, per-family presets, and their command line.

Every field has a docstring; :func:`add_arguments` turns the fields into
``--kebab-case`` flags whose help is that docstring, and :func:`resolve` builds
a config from defaults, then the family's preset, then the flags a user gave.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import math
import typing
from pathlib import Path
from typing import Any

FVP_CURVATURES = ("adapted", "exact")
INNER_OBJECTIVES = ("reinforce", "lvc")
ADAPT_SCOPES = ("all", "head", "context")
LEARNED_STEP_SIZES = ("tensor", "element")
STEP_SIZE_SHAPES = ("fixed", *LEARNED_STEP_SIZES)
POLICIES = ("attention", "mlp")
ACTIVATIONS = ("tanh", "relu")
DEVICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """Knobs of MAML-TRPO; defaults are pytorch-maml-rl's (Deleu 2018) for MuJoCo."""

    inner_lr: float = 0.1
    """Step size of the inner policy-gradient steps (with learned step sizes: their initial value)."""
    learn_inner_lr: str = "fixed"
    """Inner step sizes: fixed (inner_lr, as MAML) or meta-learned with the policy (Meta-SGD, Li et al.
    2017): one per adapted parameter tensor (tensor) or per parameter (element), starting at inner_lr.
    TRPO steps them with the policy, in the same trust region; evaluation adapts with them."""
    num_inner_steps: int = 1
    """Inner gradient steps per task."""
    first_order: bool = False
    """Drop the second-order terms of the meta-gradient (first-order MAML)."""
    inner_objective: str = "reinforce"
    """Inner loss, whose Hessian the second-order meta-gradient takes: reinforce (log-probability
    times advantage, Finn et al.'s; its Hessian misses the credit of the pre-adaptation policy for the
    episodes it samples) or lvc (ProMP's low-variance curvature: probability over the sampling policy's
    times advantage; the same inner step, and each step's score outer product in the Hessian; the line
    search adapts new parameters with that importance weight on the episodes the old ones sampled)."""
    adapt: str = "all"
    """Parameters the inner loop adapts: all, head or context."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE lambda (1.0: Monte-Carlo returns minus the baseline)."""
    max_kl: float = 1e-2
    """Trust region: largest mean KL between old and new adapted policies per outer step."""
    max_kl_final: float = 0.0
    """Trust region after the anneal: max_kl falls linearly to this over max_kl_anneal iterations
    and stays there (0: max_kl throughout)."""
    max_kl_anneal: int = 0
    """Iterations over which max_kl falls to max_kl_final."""
    pre_kl_weight: float = 0.0
    """Weight of the meta-policy's own mean KL on the pre-adaptation episodes in the trust region, which
    then bounds the adapted policies' KL plus this times it (0: theirs alone, as MAML-TRPO; ProMP
    penalises the pre-adaptation policy's KL)."""
    cg_iterations: int = 10
    """Conjugate-gradient iterations of the TRPO step."""
    cg_damping: float = 1e-5
    """Damping added to the Fisher-vector products."""
    line_search_steps: int = 15
    """Most backtracking steps of the line search."""
    line_search_ratio: float = 0.8
    """Backtracking factor of the line search."""
    line_search_kl_tolerance: float = 1.0
    """The line search accepts a step whose KL is at most this times max_kl (1: the bound itself, as
    MAML-TRPO; OpenAI baselines' TRPO accepts 1.5). The step is still scaled to max_kl: above 1 an
    exact quadratic model's full step, whose KL overshoots it by a few percent, is not halved."""
    fvp_tasks: int = 10
    """Tasks whose KL defines the Fisher-vector products (0: all). The subsample cuts the conjugate
    gradient's cost 4-5x; its curvature mispredicts the step's KL (up to 12x late in a run, which the
    line search absorbs), yet all 40 tasks learned no better in the same minutes (docs/experiments.md).
    half_cheetah_dir's preset takes 5 of its 20 tasks for the attention policy."""
    fvp_episodes: int = 0
    """Episodes per task, the first ones, whose KL defines the Fisher-vector products (0: all).
    5 of 20 on all tasks predicted the step's KL within 1.7x, at the cost of 10 whole tasks, but 3
    seeds on half_cheetah_dir learned worse with it than with the default; 10 of 20 (on the default 10
    tasks) halves the conjugate gradient's time, and 3 attention seeds on half_cheetah_vel ended 3.7
    worse after one step (docs/experiments.md)."""
    fvp_curvature: str = "exact"
    """Trust-region curvature: exact (the KL Hessian through the inner loop) or adapted (the
    adapted policies' Fisher, inner-step Jacobian taken as identity: cheaper, learned worse)."""
    task_chunk: int = 0
    """Tasks per batched computation of the inner loop and the Fisher-vector products
    (0: all at once on a GPU, 10 at a time on a CPU, where that measured fastest)."""

    def __post_init__(self) -> None:
        _check(
            self,
            {
                "inner_lr": (self.inner_lr >= 0, "must be >= 0"),
                "learn_inner_lr": (
                    self.learn_inner_lr in STEP_SIZE_SHAPES,
                    f"must be one of {', '.join(STEP_SIZE_SHAPES)}",
                ),
                "num_inner_steps": (self.num_inner_steps >= 1, "must be >= 1"),
                "inner_objective": (
                    self.inner_objective in INNER_OBJECTIVES,
                    f"must be one of {', '.join(INNER_OBJECTIVES)}",
                ),
                "adapt": (self.adapt in ADAPT_SCOPES, f"must be one of {', '.join(ADAPT_SCOPES)}"),
                "gamma": (0 < self.gamma <= 1, "must be in (0, 1]"),
                "gae_lambda": (0 <= self.gae_lambda <= 1, "must be in [0, 1]"),
                "max_kl": (self.max_kl > 0, "must be > 0"),
                "max_kl_final": (self.max_kl_final >= 0, "must be >= 0 (0: no anneal)"),
                "max_kl_anneal": (
                    self.max_kl_anneal >= 0 and (self.max_kl_anneal > 0) == (self.max_kl_final > 0),
                    "must be >= 1 with max-kl-final and 0 without it",
                ),
                "pre_kl_weight": (math.isfinite(self.pre_kl_weight) and self.pre_kl_weight >= 0, "must be >= 0"),
                "cg_iterations": (self.cg_iterations >= 1, "must be >= 1"),
                "cg_damping": (self.cg_damping >= 0, "must be >= 0"),
                "line_search_steps": (self.line_search_steps >= 1, "must be >= 1"),
                "line_search_ratio": (0 < self.line_search_ratio < 1, "must be in (0, 1)"),
                "line_search_kl_tolerance": (
                    math.isfinite(self.line_search_kl_tolerance) and self.line_search_kl_tolerance >= 1,
                    "must be >= 1 (a multiple of max_kl)",
                ),
                "fvp_tasks": (self.fvp_tasks >= 0, "must be >= 0"),
                "fvp_episodes": (self.fvp_episodes >= 0, "must be >= 0"),
                "fvp_curvature": (self.fvp_curvature in FVP_CURVATURES, f"must be one of {', '.join(FVP_CURVATURES)}"),
                "task_chunk": (self.task_chunk >= 0, "must be >= 0"),
            },
        )

    def max_kl_at(self, iteration: int) -> float:
        """The trust region of meta-iteration ``iteration`` (0-based) under the anneal."""
        if not self.max_kl_anneal:
            return self.max_kl
        fraction = min(iteration / self.max_kl_anneal, 1.0)
        return self.max_kl + fraction * (self.max_kl_final - self.max_kl)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A meta-training run: the task family, the policy, the sizes and the learner."""

    env: str = "half_cheetah_vel"
    """Task family (see envs.names())."""
    variant: str = "default"
    """Variant of the family (e.g. pearl for half_cheetah_vel, 2d for ant_dir)."""
    split: str = "train"
    """Training split: train, or ood for the reduced range of the params families."""
    clip_actions: bool = False
    """Clip the actions to the action space before they act, so that the control cost sees the
    clipped action (rllab's normalised envs in the MAML paper, learn2learn, stable-baselines3); the
    losses keep the policy's draw. Off: the unclipped action is charged, as in Gymnasium and
    pytorch-maml-rl. Evaluation and videos of a run do as its training did."""
    policy: str = "attention"
    """Policy: attention (in-context adaptation) or mlp (the MAML paper's)."""
    iterations: int = 500
    """Meta-iterations."""
    seed: int = 0
    """Seed of every random stream of the run."""
    device: str = "auto"
    """Learner device: auto (cuda when available), cpu or cuda; physics stays on the CPU."""
    meta_batch_size: int = 40
    """Tasks per meta-iteration."""
    stratified_tasks: bool = False
    """Stratify each meta-batch's draw across its tasks: the same distribution per task, the range
    covered evenly (half_cheetah_dir: as many forward as backward tasks). Off: i.i.d. draws, as
    pytorch-maml-rl and learn2learn do."""
    episodes_per_task: int = 20
    """Episodes per task, before and after adaptation."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the policy's action head."""
    activation: str = "tanh"
    """Nonlinearity of those hidden layers: tanh (pytorch-maml-rl) or relu (the MAML paper, learn2learn)."""
    init_std: float = 1.0
    """Initial standard deviation of the policy's actions, every dimension (pytorch-maml-rl, learn2learn: 1)."""
    window: int = 8
    """Attention policy: transitions of the current episode in the causal window."""
    memory_size: int = 64
    """Attention policy: transitions of the task's earlier episodes in the memory."""
    context_fraction: float = 0.0
    """Context policies: fraction of meta-iterations whose post-adaptation episodes adapt through
    the memory alone (no inner gradient step), so that in-context adaptation is trained too."""
    time_limit: float = 0.0
    """Stop (with a checkpoint) once the run has trained this many minutes, counted over every
    session that resumed it; 0: no limit."""
    checkpoint_every: int = 50
    """Keep a numbered checkpoint every this many iterations (the latest is written every iteration)."""
    maml: MAMLConfig = dataclasses.field(default_factory=MAMLConfig)
    """Learner knobs."""

    def __post_init__(self) -> None:
        _check(
            self,
            {
                "policy": (self.policy in POLICIES, f"must be one of {', '.join(POLICIES)}"),
                "device": (self.device in DEVICES, f"must be one of {', '.join(DEVICES)}"),
                "iterations": (self.iterations >= 1, "must be >= 1"),
                "meta_batch_size": (self.meta_batch_size >= 1, "must be >= 1"),
                "episodes_per_task": (self.episodes_per_task >= 1, "must be >= 1"),
                "hidden_sizes": (
                    len(self.hidden_sizes) >= 1 and min(self.hidden_sizes) >= 1,
                    "must be positive widths",
                ),
                "activation": (self.activation in ACTIVATIONS, f"must be one of {', '.join(ACTIVATIONS)}"),
                "init_std": (math.isfinite(self.init_std) and self.init_std > 0, "must be a finite number > 0"),
                "window": (self.window >= 1, "must be >= 1"),
                "memory_size": (self.memory_size >= 1, "must be >= 1"),
                "checkpoint_every": (self.checkpoint_every >= 1, "must be >= 1"),
                "time_limit": (self.time_limit >= 0, "must be >= 0 (minutes; 0: no limit)"),
                "context_fraction": (0 <= self.context_fraction <= 1, "must be in [0, 1]"),
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        maml = MAMLConfig(**values.pop("maml", {}))
        values["hidden_sizes"] = tuple(values.get("hidden_sizes", (64, 64)))
        return cls(**values, maml=maml)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _check(config: Any, checks: dict[str, tuple[bool, str]]) -> None:
    for name, (ok, why) in checks.items():
        if not ok:
            raise ValueError(f"invalid {name.replace('_', '-')}={getattr(config, name)!r}: {why}")


LEARN2LEARN_STEP_SIZES = {"inner_lr": 0.0167, "max_kl": 0.06, "line_search_ratio": 0.5}
"""learn2learn's maml_trpo.py step sizes (inner lr 0.1, max_kl 0.01, backtracking 0.5) in metarl's convention on
HalfCheetah's 6 action dimensions: it averages log-probabilities and KLs over them, metarl sums."""

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "point_nav": ("pytorch-maml-rl configs/maml/2d-navigation.yaml", {"meta_batch_size": 20, "iterations": 100}),
    "half_cheetah_vel": (
        "pytorch-maml-rl configs/maml/halfcheetah-vel.yaml with learn2learn's step sizes converted as for "
        "half_cheetah_dir (inner lr 0.0167, max_kl 0.06, backtracking 0.5; gamma 0.99 stays): better than "
        "pytorch-maml-rl's own for the MLP (3 seeds) and the attention policy (docs/experiments.md)",
        {"maml": LEARN2LEARN_STEP_SIZES},
    ),
    "half_cheetah_dir": (
        "learn2learn examples/rl/maml_trpo.py: gamma 0.95, backtracking 0.5, 20 tasks x 20 episodes, and its inner "
        "lr 0.1 and max_kl 0.01, which it applies to log-probabilities and KLs averaged over the 6 action "
        "dimensions, as 0.0167 and 0.06 on the sums metarl uses; 64x64 tanh as pytorch-maml-rl; ProMP's "
        "low-variance curvature, better than REINFORCE for both policies (3 seeds each; docs/experiments.md)",
        {"meta_batch_size": 20, "maml": {"gamma": 0.95, "inner_objective": "lvc", **LEARN2LEARN_STEP_SIZES}},
    ),
    "half_cheetah_mass": (
        "no published MAML setting: half_cheetah_dir's (20 tasks, learn2learn's step sizes converted, ProMP's "
        "low-variance curvature) with gamma 0.99 as half_cheetah_vel; in 20 minutes, against 40 tasks with the "
        "same step sizes and REINFORCE, the MLP +404.6 against +309.1 after one step (the Fisher on 10 tasks; "
        "+346.4 on 5), the attention policy +337.2 against +235.6 (3 seeds each, ahead on each; "
        "docs/experiments.md)",
        {"meta_batch_size": 20, "maml": {"inner_objective": "lvc", **LEARN2LEARN_STEP_SIZES}},
    ),
    "ant_dir": ("pytorch-maml-rl configs/maml/ant-dir.yaml", {}),
    "ant_goal": ("pytorch-maml-rl configs/maml/ant-goal.yaml", {}),
}
"""Per-family overrides of the defaults (``maml``: of :class:`MAMLConfig`) and their
source; families without a published MAML setting use the defaults (pytorch-maml-rl's MuJoCo setting)."""


POLICY_PRESETS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("half_cheetah_vel", "attention"): (
        "ProMP's low-variance curvature (since 2026-12-07): -66.8 after one step at 350 iterations against "
        "REINFORCE's -74.1 (3 seeds, none stalling, against 4 runs, 2 of which stalled), -60.4 after three steps "
        "(the later ones halved, the first memory kept) against -70.2 (docs/experiments.md)",
        {"maml": {"inner_objective": "lvc"}},
    ),
    ("half_cheetah_dir", "attention"): (
        "the Fisher-vector products on 5 of the 20 tasks, a quarter as 10 of 40 elsewhere: 1.25x the "
        "iterations in 45 minutes, +258.3 after one step against +224.7 (ahead on 4 of 5 seeds); the MLP "
        "learned worse with it, +190.0 against +232.9 (behind on each of 3 seeds; docs/experiments.md)",
        {"maml": {"fvp_tasks": 5}},
    ),
    ("half_cheetah_mass", "attention"): (
        "the Fisher-vector products on 5 of the 20 tasks, as on half_cheetah_dir: +334.5 after one step in 20 "
        "minutes against +226.0 on 10, +313.7 on 3 and +278.9 on the 5 tasks' first 10 episodes (seed 0; "
        "docs/experiments.md)",
        {"maml": {"fvp_tasks": 5}},
    ),
}
"""Overrides of one family's preset for one policy, and their source."""


def preset(env: str, policy: str | None = None) -> tuple[str, dict[str, Any]]:
    """``(source, overrides)`` of ``env``, with those of ``policy`` on that family where it has its own."""
    source, overrides = PRESETS.get(
        env, ("the defaults, pytorch-maml-rl's MuJoCo setting (no published MAML setting for this family)", {})
    )
    if policy is None or (env, policy) not in POLICY_PRESETS:
        return source, overrides
    own_source, own = POLICY_PRESETS[env, policy]
    merged = {**overrides, **own, "maml": {**overrides.get("maml", {}), **own.get("maml", {})}}
    return f"{source}; for the {policy} policy, {own_source}", merged


def _field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under dataclass fields."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body[:-1], body[1:], strict=True):
        named = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        if named and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add a ``--field-name`` flag per field of ``cls`` (default None: "not given")."""
    docs = _field_docs(cls)
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for field in dataclasses.fields(cls):
        if field.name in skip or dataclasses.is_dataclass(hints[field.name]):
            continue
        flag = flag_name(field.name)
        default = getattr(defaults, field.name)
        text = f"{docs.get(field.name, '')} (default: {default})"
        hint = hints[field.name]
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(hint) is tuple:
            parser.add_argument(flag, type=int, nargs="+", default=None, help=text, metavar="N")
        else:
            parser.add_argument(flag, type=hint, default=None, help=text, metavar=hint.__name__.upper())


def flag_name(field: str) -> str:
    """``max_kl`` -> ``--max-kl``: the command-line flag of a config field."""
    return "--" + field.replace("_", "-")


def given_settings(args: argparse.Namespace) -> list[str]:
    """The config fields (of ``TrainConfig`` and ``MAMLConfig``) whose flags ``args`` gives."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"maml"}
    fields |= {f.name for f in dataclasses.fields(MAMLConfig)}
    return [name for name, value in vars(args).items() if name in fields and value is not None]


def resolve(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the family's preset (with its policy's own), then the flags given; ValueError on a bad value."""
    values: dict[str, Any] = {}
    maml: dict[str, Any] = {}
    env = getattr(args, "env", None) or TrainConfig.env
    values.update(preset(env, getattr(args, "policy", None) or TrainConfig.policy)[1])
    maml.update(values.pop("maml", {}))
    maml_fields = {f.name for f in dataclasses.fields(MAMLConfig)}
    for name in given_settings(args):
        value = getattr(args, name)
        if name in maml_fields:
            maml[name] = value
        else:
            values[name] = tuple(value) if name == "hidden_sizes" else value
    return TrainConfig(**values, maml=MAMLConfig(**maml))
