"""Source algorithms and the batched collection runner (docs/architecture.md#collection-and-source-algorithms).

``collect_block`` is the entry point of the collection pipeline; ``POLICIES`` lists the source
algorithms by name; ``run_policy`` drives any :class:`Policy` through a native vector env.
"""
from icrl.collectors.bandit import (
    DPTRandomPolicy,
    EmpPolicy,
    LinUCBPolicy,
    RandomPolicy,
    ThompsonPolicy,
    UCB1Policy,
    UCBPolicy,
)
from icrl.collectors.base import POLICIES, Policy, child_seed_sequence, collect_block, make_policy, run_policy
from icrl.collectors.mdp import NoiseDistillPolicy, UniformRandomPolicy, uniform_actions
from icrl.collectors.ppo import PPOPolicy
from icrl.collectors.psrl import PosteriorSamplingPolicy

__all__ = [
    "POLICIES",
    "Policy",
    "child_seed_sequence",
    "collect_block",
    "make_policy",
    "run_policy",
    "RandomPolicy",
    "EmpPolicy",
    "UCBPolicy",
    "UCB1Policy",
    "ThompsonPolicy",
    "LinUCBPolicy",
    "DPTRandomPolicy",
    "UniformRandomPolicy",
    "NoiseDistillPolicy",
    "PPOPolicy",
    "PosteriorSamplingPolicy",
    "uniform_actions",
]
