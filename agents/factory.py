"""Build a policy and its learner from a :class:`metarl.config.TrainConfig`."""

from __future__ import annotations

import math

from agents.maml_trpo import MAMLTRPO
from agents.policies import GaussianMLPPolicy, Policy
from metarl.config import POLICIES, TrainConfig


def make_policy(config: TrainConfig, obs_dim: int, act_dim: int) -> Policy:
    """The policy ``config.policy`` (``attention`` or ``mlp``) for the given sizes, with learned inner step
    sizes where ``config.maml.learn_inner_lr`` asks for them."""
    init_log_std = math.log(config.init_std)
    policy: Policy
    if config.policy == "mlp":
        policy = GaussianMLPPolicy(
            obs_dim, act_dim, hidden_sizes=config.hidden_sizes, activation=config.activation, init_log_std=init_log_std
        )
    elif config.policy == "attention":
        from agents.attention import AttentionPolicy

        policy = AttentionPolicy(
            obs_dim,
            act_dim,
            hidden_sizes=config.hidden_sizes,
            window=config.window,
            activation=config.activation,
            init_log_std=init_log_std,
        )
    else:
        raise ValueError(f"unknown policy {config.policy!r}; valid policies: {', '.join(POLICIES)}")
    maml = config.maml
    if maml.learn_inner_lr != "fixed":
        policy.learn_step_sizes(maml.adapt, maml.inner_lr, maml.learn_inner_lr)
    return policy


def make_learner(config: TrainConfig, policy: Policy) -> MAMLTRPO:
    """MAML-TRPO with the config's knobs."""
    return MAMLTRPO(policy, config.maml)
