"""Source algorithms for any env family with discrete actions: uniform random and noise distillation.

Both are batched over N envs with numpy and follow :class:`icrl.collectors.base.Policy`.

- ``random``: uniformly random actions, for bandits (one arm per pull) and MDPs alike.
- ``noise_distill`` (AD^eps; Zisman et al. 2023, "Emergence of In-Context Reinforcement Learning
  from Noise Distillation", §3): the oracle's action with probability 1 - eps, a uniformly random
  one with probability eps, with eps falling linearly from 1 at the start of the history to 0 at
  90% of it; the last 10% of every history is the oracle's. The paper builds its learning
  histories this way, with no RL algorithm, and shows AD still learns to improve in context.

Noise distillation needs two things a policy constructor does not get: the tasks (for
``task_dist.oracle_action``) and the history length. :func:`icrl.collectors.base.run_policy` hands
both over through the optional hook ``policy.set_tasks(tasks, episodes)`` before the first step.
The schedule counts progress in episodes (``completed + steps_into_episode / horizon``, over
``episodes``), so it equals the step schedule ``t / (horizon * episodes)`` on fixed-length
episodes and still reaches eps = 0 for the last 10% of the episodes in families whose episodes end
early (Dark Room Hard, Key-to-Door).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from icrl import envs

#: Fraction of a noise-distillation history at eps = 0 (the paper's schedule ends with the oracle).
NOISE_FREE_FRACTION = 0.1


def num_actions(task_dist: Any) -> int:
    """The number of discrete actions of an env family, read from its task distribution.

    Looks, in order, for ``n_actions``, a bandit's ``n_arms``, a Discrete ``single_action_space`` /
    ``action_space`` (so a gymnasium env or vector env can stand in for the task distribution),
    and finally recognises the grid families (Dark Room, Key-to-Door), whose five moves are fixed.

    Raises:
        ValueError: none of these is there; the message names the attribute to add.
    """
    for attr in ("n_actions", "n_arms"):
        value = getattr(task_dist, attr, None)
        if value is not None:
            return int(value)
    for attr in ("single_action_space", "action_space"):
        space = getattr(task_dist, attr, None)
        if isinstance(space, spaces.Discrete):
            return int(space.n)
    if isinstance(task_dist, envs.GridTaskDistribution):
        return 5  # the grid families' moves: x+1, x-1, y+1, y-1, stay (DESIGN §3)
    raise ValueError(
        f"cannot tell the number of actions of {type(task_dist).__name__} "
        f"(env {getattr(task_dist, 'env_id', '?')!r}); give the task distribution an `n_actions` attribute"
    )


def noise_eps(progress: np.ndarray, free_fraction: float = NOISE_FREE_FRACTION) -> np.ndarray:
    """AD^eps noise level at ``progress`` in [0, 1] through the history: linear 1 -> 0, then 0.

    ``eps = clip(1 - progress / (1 - free_fraction), 0, 1)``: 1 at the first step, 0 from
    ``1 - free_fraction`` of the history on.
    """
    return np.clip(1.0 - np.asarray(progress, dtype=np.float64) / (1.0 - free_fraction), 0.0, 1.0)


class UniformRandomPolicy:
    """Uniformly random actions of any family with discrete actions (bandit arms or MDP moves).

    Draws ``rng.integers(0, n_actions, N)`` each step, the same stream as the bandit-only
    ``RandomPolicy``, so bandit data collected with ``random`` are unchanged.
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator) -> None:
        self.num_envs = num_envs
        self.n_actions = num_actions(task_dist)
        self.rng = rng

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.integers(0, self.n_actions, size=self.num_envs, dtype=np.int64)

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Nothing to learn."""


class NoiseDistillPolicy:
    """AD^eps: the oracle with probability 1 - eps, uniformly random with eps, eps 1 -> 0 per history.

    Every env follows its own schedule (progress counted in its own episodes, see the module
    docstring). Each step draws N uniforms and N random actions whatever eps is, so the random
    stream does not depend on the data.

    Args:
        num_envs: N.
        task_dist: the family's task distribution; needs ``oracle_action``, ``horizon`` and a
            number of actions (:func:`num_actions`).
        rng: the policy's generator.
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator) -> None:
        horizon = getattr(task_dist, "horizon", None)
        if horizon is None:
            raise ValueError(f"noise_distill needs the episode length (task_dist.horizon) of "
                             f"{type(task_dist).__name__} to place eps along the history")
        self.num_envs = num_envs
        self.task_dist = task_dist
        self.rng = rng
        self.n_actions = num_actions(task_dist)
        self.horizon = int(horizon)
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
        if self.tasks is None:
            raise RuntimeError("noise_distill needs its tasks: run it with run_policy / collect_block, "
                               "or call set_tasks(tasks, episodes) first")
        oracle = np.asarray(self.task_dist.oracle_action(self.tasks, obs), dtype=np.int64)  # (N,)
        u = self.rng.random(self.num_envs)  # (N,)
        noise = self.rng.integers(0, self.n_actions, size=self.num_envs, dtype=np.int64)  # (N,)
        return np.where(u < self.eps(), noise, oracle)

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Advance every env's place in its history (the schedule is all there is to learn)."""
        done = np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)
        self.step_in_episode += 1.0
        self.episode[done] += 1.0
        self.step_in_episode[done] = 0.0
