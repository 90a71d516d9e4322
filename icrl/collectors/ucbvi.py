"""UCB-VI: optimistic value iteration on the empirical model of a finite MDP, batched over runs.

UCB-VI (Azar, Osband & Munos 2017, "Minimax Regret Bounds for Reinforcement Learning", Alg. 1-2)
as "Transformers as Decision Makers" (Lin, Bai & Mei, ICLR 2024) uses it as a source of learning
histories: episodic, horizon ``H``, time-inhomogeneous values. Every run (one env of the batch)
keeps its own statistics and plans for itself; nothing is shared between runs.

Statistics of run n, over every transition of its history so far:

- ``N(s, a)`` visits, ``R(s, a)`` reward sum, ``N(s, a, s')`` transition counts, where ``s'`` is
  the next state, or the absorbing *end* state ``S`` when the step terminated the episode
  (``terminated``: Key-to-Door's door, Dark Room Hard's goal). A truncated step (the horizon) keeps
  its real next state: the time limit is not part of the world.
- Empirical model: ``r_hat(s, a) = R(s, a) / N(s, a)`` and ``P_hat(s' | s, a) = N(s, a, s') / N(s, a)``.
  Where ``N(s, a) = 0``: ``r_hat = R_MAX = 1`` (the largest reward, as in R-max) and ``P_hat`` a
  *self-loop* (``P_hat(s | s, a) = 1``): an untried action is modelled as paying the most and
  letting the agent try it again, so a state with an untried action is worth ``min(H, H - h + 1
  + bonuses)`` at step h and the plan heads for the nearest untried ``(s, a)`` (directed
  exploration, whatever the bonus scale).

At the first step of every episode of run n (the model is then frozen for the episode), backward
induction over ``h = H, ..., 1``, with ``V_{H+1} = 0`` and ``V_h(end) = 0``:

    Q_h(s, a) = min(H, r_hat(s, a) + sum_s' P_hat(s' | s, a) V_{h+1}(s') + b(s, a))
    V_h(s) = max_a Q_h(s, a)
    b(s, a) = c * 2 H sqrt(L / max(1, N(s, a))),   L = log(S A T / delta),  T = K H,  delta = 1 / (K H)

so ``L = log(S A (K H)^2)``, with ``S`` the number of states (the end state not counted), ``A`` the
actions, ``K`` the episodes of the history (from ``set_tasks(tasks, episodes)``, the runner's hook)
and ``c = ucbvi_bonus_scale`` (default 1). The cap ``min(H, .)`` is Azar et al.'s and assumes
rewards in [0, 1] per step, as in the grid families (Dark Room and Key-to-Door pay 0 or 1); a
family with other rewards should be rescaled into [0, 1]. Azar et al. also take the minimum with the
previous episode's ``Q``; this implementation plans from scratch every episode, as above.

Note on the constants: ``b >= H`` (so ``Q = H``, every action tied) while
``N(s, a) <= 4 c^2 L``, and ``Q_h`` stays at the cap while the bonuses summed over the remaining
steps exceed ``H``. On Dark Room (S = 81, A = 5, H = 20, K = 100) ``L = 21.2``: every ``(s, a)``
must be tried 85 times before even ``Q_H`` drops below the cap, so with ``c = 1`` UCB-VI acts at
random for thousands of episodes. Measured on the 8 held-out Dark Room goals over 100 episodes
(docs/architecture.md): ``c = 1`` is no better than random, ``c = 0.01`` barely learns,
``c = 0.001`` and ``c = 0`` (exploration from the untried pairs alone) reach the optimum.

Acting: at step ``h`` of the episode (the step counter restarts at every episode end, early or
not), the greedy action ``argmax_a Q_h(s_t, a)``; ties (exact, e.g. actions at the cap) are broken
at random. The random priority of action a for run n at its t-th step is a hash (splitmix64) of
``(tie_key[n], t, a)``, with the per-run ``tie_key`` drawn from the policy's generator at
construction, so a run's actions depend only on its own key and data: N runs at once act exactly as
N one-run policies holding the same keys.

States: ``Discrete(n)``: ``obs - start``; ``MultiDiscrete(nvec)``: ``ravel_multi_index(obs - start,
nvec)`` over the flattened components. ``Box`` observations or actions are refused with a ValueError
naming the family.

Storage (per batch of N runs): ``N(s, a)`` and ``R(s, a)`` dense, (N, S, A) float64; the transition
counts sparse, as a sorted array of keys ``((n S + s) A + a)(S + 1) + s'`` and their counts (16
bytes per distinct transition seen; deterministic dynamics give at most one successor per
``(s, a)``); the plan as the greedy sets, (N, H, S, A) bool. Dark Room at N = 1168 runs: 2 x 3.8 MB
dense statistics, at most 473k transitions = 7.6 MB, 9.5 MB of greedy sets, about 30 MB in all
(a dense (N, S, A, S) float32 table would take 153 MB). Value iteration is a sparse batched
matrix-vector product per step (``np.bincount`` over the transitions), ``O(H (transitions + N S A))``
per plan.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterator

import numpy as np
from gymnasium import spaces

from icrl.spaces import EnvSpec

__all__ = ["R_MAX", "UCBVIPolicy", "optimistic_q", "state_index", "tie_priorities", "ucbvi_bonus"]

#: The model's reward of an untried (s, a): the top of the [0, 1] reward range UCB-VI assumes.
R_MAX = 1.0

#: Largest greedy table (N * H * S * A booleans) one policy may hold; bigger batches are refused.
MAX_TABLE = 2**31

_U64 = np.uint64


def ucbvi_bonus(visits: np.ndarray, n_states: int, n_actions: int, episodes: int, horizon: int,
                scale: float = 1.0) -> np.ndarray:
    """The exploration bonus ``b = scale * 2 H sqrt(L / max(1, N))`` with ``L = log(S A T / delta)``.

    ``T = K H`` and ``delta = 1 / (K H)`` (see the module docstring), so ``L = log(S A (K H)^2)``.

    Args:
        visits: ``N(s, a)`` counts, any shape.
        n_states: S.
        n_actions: A.
        episodes: K, episodes of the history.
        horizon: H.
        scale: c, the bonus multiplier.

    Returns:
        float64 bonuses, the shape of ``visits``.
    """
    t = episodes * horizon
    log_term = math.log(n_states * n_actions * t / (1.0 / t))  # L = log(S A T / delta)
    return scale * 2.0 * horizon * np.sqrt(log_term / np.maximum(1.0, np.asarray(visits, dtype=np.float64)))


def optimistic_q(visits: np.ndarray, reward_sums: np.ndarray,
                 transitions: tuple[np.ndarray, np.ndarray, np.ndarray], bonus: np.ndarray,
                 horizon: int) -> Iterator[tuple[int, np.ndarray]]:
    """Backward induction on the optimistic empirical model of k runs (see the module docstring).

    Args:
        visits: (k, S, A) ``N(s, a)``.
        reward_sums: (k, S, A) ``R(s, a)``.
        transitions: the nonzero transition counts as three (m,) arrays: ``sa`` the flat index
            ``(j S + s) A + a`` of ``(run j, s, a)``, ``next_state`` in ``[0, S]`` (``S`` is the
            end state), and ``count`` ``N(s, a, s') > 0``.
        bonus: (k, S, A) ``b(s, a)``.
        horizon: H.

    Yields:
        ``(h, Q_h)`` for ``h = H, H-1, ..., 1``, ``Q_h`` (k, S, A) float64.
    """
    k, n_states, n_actions = visits.shape
    sa, next_state, count = transitions
    unvisited = visits == 0  # (k, S, A)
    r_hat = np.where(unvisited, R_MAX, reward_sums / np.maximum(visits, 1.0))  # (k, S, A)
    prob = count / visits.reshape(-1)[sa]  # (m,) P_hat(s' | s, a)
    col = (sa // (n_states * n_actions)) * (n_states + 1) + next_state  # (m,) index into (k, S + 1)
    value = np.zeros((k, n_states + 1))  # (k, S + 1) V_{h+1}; the end state stays 0
    for h in range(horizon, 0, -1):
        # sum_s' P_hat(s'|s,a) V_{h+1}(s'): a sparse batched mat-vec, one bincount over transitions
        pv = np.bincount(sa, weights=prob * value.reshape(-1)[col], minlength=k * n_states * n_actions)
        pv = np.where(unvisited, value[:, :n_states, None], pv.reshape(k, n_states, n_actions))  # self-loop
        q = np.minimum(float(horizon), r_hat + pv + bonus)  # (k, S, A)
        yield h, q
        value[:, :n_states] = q.max(axis=2)  # (k, S) V_h


def state_index(obs: np.ndarray, space: spaces.Space) -> np.ndarray:
    """(N,) int64 state numbers of (N, *obs_shape) integer observations.

    ``Discrete``: ``obs - start``; ``MultiDiscrete``: ``ravel_multi_index`` of ``obs - start`` over
    the flattened ``nvec`` (C order).
    """
    obs = np.asarray(obs)
    if isinstance(space, spaces.Discrete):
        return obs.reshape(len(obs)).astype(np.int64) - int(space.start)
    nvec = np.asarray(space.nvec).reshape(-1)
    digits = (obs - np.asarray(space.start)).reshape(len(obs), -1).astype(np.int64)  # (N, d)
    return np.ravel_multi_index(tuple(digits.T), tuple(int(n) for n in nvec)).astype(np.int64)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic): a counter-based hash."""
    z = x + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def tie_priorities(keys: np.ndarray, counters: np.ndarray, n_actions: int) -> np.ndarray:
    """(N, A) uniforms in [0, 1), a hash of ``(keys[n], counters[n], a)``: run n's tie-break priorities."""
    x = _splitmix64(np.asarray(keys, dtype=_U64) ^ _splitmix64(np.asarray(counters, dtype=_U64)))  # (N,)
    z = _splitmix64(x[:, None] + np.arange(n_actions, dtype=_U64)[None, :])  # (N, A)
    return (z >> _U64(11)).astype(np.float64) * 2.0**-53


class UCBVIPolicy:
    """UCB-VI on every run's empirical model (formulas in the module docstring).

    Args:
        num_envs: N.
        task_dist: the family's task distribution; its spec must have ``Discrete`` or
            ``MultiDiscrete`` observations and ``Discrete`` actions.
        rng: the policy's generator (the per-run tie-break keys).
        ucbvi_bonus_scale: c, multiplies the bonus (>= 0; 0 is certainty equivalence).

    Attributes:
        tie_key: (N,) uint64 per-run key of the tie-break hash.
        visits: (N, S, A) ``N(s, a)``.
        reward_sums: (N, S, A) ``R(s, a)``.
        greedy: (N, H, S, A) bool, the maximisers of every run's current ``Q_h``.
        episodes: K, the episodes per history (set by ``set_tasks``).

    Raises:
        ValueError: ``Box`` observations or actions, a bad scale, or a batch too large to plan.
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator,
                 ucbvi_bonus_scale: float = 1.0) -> None:
        spec = EnvSpec.of(task_dist)
        if not spec.discrete_obs:
            # short: validate_env quotes it in an 80-character one-line config error
            raise ValueError(f"{spec.env_id} has Box observations; ucbvi needs Discrete/MultiDiscrete ones")
        if not spec.discrete_actions:
            raise ValueError(f"{spec.env_id} has Box actions; ucbvi needs Discrete ones")
        if (isinstance(ucbvi_bonus_scale, bool) or not isinstance(ucbvi_bonus_scale, numbers.Real)
                or not math.isfinite(float(ucbvi_bonus_scale)) or ucbvi_bonus_scale < 0):
            raise ValueError(f"ucbvi_bonus_scale must be a finite number >= 0; got {ucbvi_bonus_scale!r}")
        self.num_envs = num_envs
        self.spec = spec
        self.rng = rng
        self.scale = float(ucbvi_bonus_scale)
        self.n_states = int(np.prod(spec.obs_sizes))  # S: every combination of the integer components
        self.n_actions = spec.n_actions
        self.horizon = spec.horizon
        table = num_envs * self.horizon * self.n_states * self.n_actions
        if table > MAX_TABLE or num_envs * self.n_states * self.n_actions * (self.n_states + 1) >= 2**62:
            raise ValueError(f"ucbvi on {spec.env_id} ({self.n_states} states, {self.n_actions} actions, horizon "
                             f"{self.horizon}) for {num_envs} runs needs a {table / 2**30:.1f} GiB plan; collect "
                             f"fewer histories per block (collect.histories_per_shard)")
        self.tie_key = rng.integers(0, 2**64, size=num_envs, dtype=np.uint64)  # (N,)
        self.episodes = 1
        self._ready = False
        self._reset()

    def _reset(self) -> None:
        n, s, a = self.num_envs, self.n_states, self.n_actions
        self.visits = np.zeros((n, s, a))
        self.reward_sums = np.zeros((n, s, a))
        self._keys = np.empty(0, dtype=np.int64)  # sorted distinct transition keys
        self._counts = np.empty(0)  # their counts
        self._pending: list[np.ndarray] = []  # keys seen since the last merge
        self.greedy = np.zeros((n, self.horizon, s, a), dtype=bool)
        self.step_in_episode = np.zeros(n, dtype=np.int64)  # (N,) h - 1
        self.steps = np.zeros(n, dtype=np.uint64)  # (N,) steps taken (the tie-break counter)
        self._episode_start = np.ones(n, dtype=bool)  # (N,) the next act starts an episode: plan
        self._rows = np.arange(n)

    def set_tasks(self, tasks: np.ndarray, episodes: int) -> None:
        """The runner's hook: only the episodes per history (K of the bonus) are used; starts afresh."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"ucbvi was built for {self.num_envs} envs but got {len(tasks)} tasks")
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1; got {episodes}")
        self.episodes = int(episodes)
        self._ready = True
        self._reset()

    def transition_counts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The transition counts of runs ``rows`` (sorted, distinct) in :func:`optimistic_q`'s form."""
        self._merge()
        s, a = self.n_states, self.n_actions
        per_run = s * a * (s + 1)
        local = np.full(self.num_envs, -1, dtype=np.int64)
        local[rows] = np.arange(len(rows))
        j = local[self._keys // per_run]  # (M,) position of each key's run in rows, -1 if absent
        sel = j >= 0
        rest = self._keys[sel] % per_run
        return j[sel] * (s * a) + rest // (s + 1), rest % (s + 1), self._counts[sel]

    def _merge(self) -> None:
        """Add the pending transitions to the sorted (key, count) arrays."""
        if not self._pending:
            return
        new, times = np.unique(np.concatenate(self._pending), return_counts=True)  # sorted
        self._pending = []
        pos = np.searchsorted(self._keys, new)
        found = pos < len(self._keys)
        found[found] = self._keys[pos[found]] == new[found]
        self._counts[pos[found]] += times[found]
        self._keys = np.insert(self._keys, pos[~found], new[~found])
        self._counts = np.insert(self._counts, pos[~found], times[~found].astype(np.float64))

    def plan(self, rows: np.ndarray) -> None:
        """Optimistic value iteration for runs ``rows`` (sorted, distinct); fills their greedy sets."""
        visits = self.visits[rows]  # (k, S, A)
        bonus = ucbvi_bonus(visits, self.n_states, self.n_actions, self.episodes, self.horizon, self.scale)
        for h, q in optimistic_q(visits, self.reward_sums[rows], self.transition_counts(rows), bonus, self.horizon):
            self.greedy[rows, h - 1] = q >= q.max(axis=2, keepdims=True)  # (k, S, A) exact ties

    def act(self, obs: np.ndarray) -> np.ndarray:
        """(N,) int64 greedy actions on ``Q_h(s_t, .)``, planning first for runs that start an episode."""
        if not self._ready:
            raise RuntimeError("ucbvi needs the history length: run it with run_policy / collect_block, or call "
                               "set_tasks(tasks, episodes) first")
        states = state_index(obs, self.spec.observation_space)  # (N,)
        starting = np.flatnonzero(self._episode_start)
        if starting.size:
            self.plan(starting)
            self.step_in_episode[starting] = 0
            self._episode_start[:] = False
        h = np.minimum(self.step_in_episode, self.horizon - 1)  # (N,) guards a family that overruns H
        best = self.greedy[self._rows, h, states]  # (N, A)
        priority = np.where(best, tie_priorities(self.tie_key, self.steps, self.n_actions), -1.0)  # (N, A)
        return priority.argmax(axis=1).astype(np.int64)

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Count the transition of every run; a terminated step leads to the end state."""
        s = state_index(obs, self.spec.observation_space)  # (N,)
        a = np.asarray(actions, dtype=np.int64)  # (N,)
        terminated = np.asarray(terminated, dtype=bool)
        s_next = np.where(terminated, self.n_states, state_index(next_obs, self.spec.observation_space))  # (N,)
        self.visits[self._rows, s, a] += 1.0
        self.reward_sums[self._rows, s, a] += np.asarray(rewards, dtype=np.float64)
        self._pending.append(((self._rows * self.n_states + s) * self.n_actions + a) * (self.n_states + 1) + s_next)
        self.step_in_episode += 1
        self.steps += _U64(1)
        self._episode_start |= terminated | np.asarray(truncated, dtype=bool)
