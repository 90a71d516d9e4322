"""Source algorithms for any env family: uniform random and noise distillation.

Both are batched over N envs with numpy, follow :class:`icrl.collectors.base.Policy`, and read
what they need of the family from its :class:`~icrl.spaces.EnvSpec` (``EnvSpec.of(task_dist)``),
never from attributes of the task distribution.

- ``random``: uniformly random actions, for bandits (one arm per pull), grid MDPs (Discrete) and
  continuous-control families (``Box``: ``rng.uniform(low, high)`` per dimension).
- ``noise_distill`` (AD^eps; Zisman et al. 2023, "Emergence of In-Context Reinforcement Learning
  from Noise Distillation", §3): the oracle's action with probability 1 - eps, a uniformly random
  one with probability eps, with eps falling linearly from 1 at the start of the history to 0 at
  90% of it; the last 10% of every history is the oracle's. The paper builds its learning
  histories this way, with no RL algorithm, and shows AD still learns to improve in context. On a
  ``Box`` the random action is uniform in the box, the same rule with the continuous uniform.

Noise distillation needs two things a policy constructor does not get: the tasks (for
``task_dist.oracle_action``) and the history length. :func:`icrl.collectors.base.run_policy` hands
both over through the optional hook ``policy.set_tasks(tasks, episodes)`` before the first step.
The schedule counts progress in episodes (``completed + steps_into_episode / horizon``, over
``episodes``), so it equals the step schedule ``t / (horizon * episodes)`` on fixed-length
episodes and still reaches eps = 0 for the last 10% of the episodes in families whose episodes end
early (Dark Room Hard, Key-to-Door).

Random streams: on ``Discrete`` actions both policies draw exactly what they drew before ``Box``
actions existed (``rng.integers(0, n_actions, N)``; noise distillation ``rng.random(N)`` then the
integers), so collected Discrete datasets are unchanged.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from icrl.spaces import EnvSpec

#: Fraction of a noise-distillation history at eps = 0 (the paper's schedule ends with the oracle).
NOISE_FREE_FRACTION = 0.1


def uniform_actions(spec: EnvSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` actions drawn uniformly from the family's action space.

    Discrete(k): ``rng.integers(0, k, n)`` (the bandit ``RandomPolicy``'s stream). Box: every
    dimension uniform on [low, high), ``rng.uniform(low, high, (n, *shape))``.

    Returns:
        (n,) int64 or (n, *action_shape) floats of the Box's dtype.
    """
    if spec.discrete_actions:
        return rng.integers(0, spec.n_actions, size=n, dtype=np.int64)  # (n,)
    box = spec.action_space
    draws = rng.uniform(box.low, box.high, size=(n, *spec.action_shape))  # (n, *action_shape) float64
    return draws.astype(spec.action_dtype, copy=False)


def noise_eps(progress: np.ndarray, free_fraction: float = NOISE_FREE_FRACTION) -> np.ndarray:
    """AD^eps noise level at ``progress`` in [0, 1] through the history: linear 1 -> 0, then 0.

    ``eps = clip(1 - progress / (1 - free_fraction), 0, 1)``: 1 at the first step, 0 from
    ``1 - free_fraction`` of the history on.
    """
    return np.clip(1.0 - np.asarray(progress, dtype=np.float64) / (1.0 - free_fraction), 0.0, 1.0)


class UniformRandomPolicy:
    """Uniformly random actions of any family (see :func:`uniform_actions`).

    On Discrete actions it draws ``rng.integers(0, n_actions, N)`` each step, the same stream as
    the bandit-only ``RandomPolicy``, so bandit data collected with ``random`` are unchanged.

    Args:
        num_envs: N.
        task_dist: the family's task distribution (its :class:`~icrl.spaces.EnvSpec` gives the
            action space).
        rng: the policy's generator.
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator) -> None:
        self.num_envs = num_envs
        self.spec = EnvSpec.of(task_dist)
        self.rng = rng

    def act(self, obs: np.ndarray) -> np.ndarray:
        """(N,) int64 or (N, *action_shape) float actions, uniform in the action space."""
        return uniform_actions(self.spec, self.num_envs, self.rng)

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Nothing to learn."""


class NoiseDistillPolicy:
    """AD^eps: the oracle with probability 1 - eps, uniformly random with eps, eps 1 -> 0 per history.

    Every env follows its own schedule (progress counted in its own episodes, see the module
    docstring). Each step draws N uniforms and N random actions whatever eps is, so the random
    stream does not depend on the data. Discrete: a random action is uniform over the actions;
    Box: uniform in the box, and the oracle's action is taken as the family returns it (inside
    the box, by the :class:`~icrl.envs.TaskDistribution` contract).

    Args:
        num_envs: N.
        task_dist: the family's task distribution; its spec must declare an oracle
            (``has_oracle``) and gives the horizon and the action space.
        rng: the policy's generator.

    Raises:
        ValueError: the family has no oracle.
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator) -> None:
        spec = EnvSpec.of(task_dist)
        if not spec.has_oracle:
            raise ValueError(f"noise_distill needs an oracle but {spec.env_id} has none; give its "
                             f"TaskDistribution an oracle_action or choose another source algorithm")
        self.num_envs = num_envs
        self.task_dist = task_dist
        self.spec = spec
        self.rng = rng
        self.horizon = spec.horizon
        self.tasks: np.ndarray | None = None
        self.episodes = 1
        self.episode = np.zeros(num_envs)  # (N,) episodes completed
        self.step_in_episode = np.zeros(num_envs)  # (N,) steps into the running episode

    def set_tasks(self, tasks: np.ndarray, episodes: int) -> None:
        """The runner's hook: the N tasks (for the oracle) and the episodes per history."""
        tasks = np.asarray(tasks, dtype=np.float64)
        if len(tasks) != self.num_envs:
            raise ValueError(f"noise_distill was built for {self.num_envs} envs but got {len(tasks)} tasks")
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1; got {episodes}")
        self.tasks, self.episodes = tasks, int(episodes)
        self.episode[:] = 0.0
        self.step_in_episode[:] = 0.0

    def eps(self) -> np.ndarray:
        """(N,) current noise level of every env."""
        progress = (self.episode + np.minimum(self.step_in_episode / self.horizon, 1.0)) / self.episodes
        return noise_eps(progress)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """(N,) int64 or (N, *action_shape) float actions: the oracle's, or uniform with probability eps."""
        if self.tasks is None:
            raise RuntimeError("noise_distill needs its tasks: run it with run_policy / collect_block, "
                               "or call set_tasks(tasks, episodes) first")
        shape = (self.num_envs, *self.spec.action_shape)
        oracle = self.task_dist.oracle_action(self.tasks, obs)
        oracle = np.asarray(oracle, dtype=self.spec.action_dtype)  # (N, *action_shape)
        if oracle.shape != shape:
            raise ValueError(f"{self.spec.env_id}: oracle_action returned shape {oracle.shape}, expected "
                             f"{shape}; return one action per task")
        u = self.rng.random(self.num_envs)  # (N,)
        noise = uniform_actions(self.spec, self.num_envs, self.rng)  # (N, *action_shape)
        pick_noise = (u < self.eps()).reshape(-1, *([1] * len(self.spec.action_shape)))  # (N, 1, ...) for Box
        return np.where(pick_noise, noise, oracle)  # (N, *action_shape)

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Advance every env's place in its history (the schedule is all there is to learn)."""
        done = np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)
        self.step_in_episode += 1.0
        self.episode[done] += 1.0
        self.step_in_episode[done] = 0.0
