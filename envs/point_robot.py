"""Point robot navigation (PEARL, Rakelly et al. 2019; T2MIR): single envs and numpy vector envs.

A point moves in the plane toward an unseen goal. The observation is its 2-D position (float32);
an action is a 2-D velocity in ``[-1, 1]^2``, clipped to that box by the env and scaled by 0.1:
``state += 0.1 * clip(action, -1, 1)``. The reward is computed on the position *after* the move.
Episodes last ``horizon`` steps (the env truncates itself there; it never terminates). Every
episode starts at a position drawn from ``U(-0.1, 0.1)^2``.

Families (ids registered in ``icrl.envs``):

- ``icrl/PointRobot-v0``: goals ~ ``U(-1, 1)^2``; dense reward ``-||state - goal||_2``.
- ``icrl/SparsePointRobot-v0`` (PEARL's sparse variant): goals on the upper unit half circle,
  ``(cos a, sin a)`` with ``a ~ U[0, pi]``; reward ``1 - ||state - goal||`` within ``goal_radius``
  of the goal (so in ``[1 - goal_radius, 1]``), else 0.

A task is the goal ``(x, y)``. Both families are finite: ``n_tasks`` goals are drawn once from
``np.random.default_rng(split_seed)``; the first ``round(n_tasks * train_fraction)`` are the train
split, the rest are held out (45 / 5 with the defaults), and ``sample`` draws from the train split
only. Any finite goal may still be set with ``reset(options={"task": goal})``.

Every step's info has ``"success"``: the position after the move is within ``goal_radius`` of the
goal. The position is a Markov state, so the dynamics are the pure batched function
``transition(tasks, obs, actions)`` of the task distribution; :class:`PointRobotEnv` calls it on a
batch of one and :class:`PointRobotVectorEnv` on all its envs, which makes them the same world.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .grid import require_fraction
from .tasks import (SingleTaskMixin, TaskDistribution, VectorTaskMixin, require_float_actions, require_int,
                    require_positive, same_step_final)

__all__ = [
    "START_HALF_WIDTH",
    "STEP_SIZE",
    "PointRobotEnv",
    "PointRobotTaskDistribution",
    "PointRobotVectorEnv",
    "SparsePointRobotEnv",
    "SparsePointRobotTaskDistribution",
    "SparsePointRobotVectorEnv",
]

#: An action in ``[-1, 1]^2`` moves the point by ``STEP_SIZE * action``.
STEP_SIZE = 0.1
#: Episodes start at a position drawn from ``U(-START_HALF_WIDTH, START_HALF_WIDTH)^2``.
START_HALF_WIDTH = 0.1
_QUADRATURE_ROWS = 2**20  # rollouts per batch in max_return (bounds the memory)


# --------------------------------------------------------------------------- task distributions


class PointRobotTaskDistribution(TaskDistribution):
    """Tasks of ``icrl/PointRobot-v0``: goals ``(x, y) ~ U(-1, 1)^2``; takes the env's kwargs.

    The family's dynamics live here (:meth:`transition`, :meth:`start_obs`); the envs validate
    their inputs once and call them. :class:`SparsePointRobotTaskDistribution` changes only the
    goals (:meth:`draw_goals`) and the reward (:meth:`reward`).

    The observation space is ``Box(-b, b, (2,), float32)`` with ``b = 0.1 * horizon + 1``: a
    position starts within 0.1 of the origin and moves at most 0.1 per axis per step, so
    ``|x|, |y| <= 0.1 * (horizon + 1)`` throughout an episode; the extra 0.9 is slack for float32
    rounding. (A finite bound keeps the space JSON-serialisable for manifests.)

    Args:
        horizon: Steps per episode (>= 1); the env truncates itself there.
        n_tasks: Number of enumerated goals (>= 2).
        split_seed: Seed of ``np.random.default_rng`` that draws the goals.
        train_fraction: Fraction of the goals in the train split (the first ones drawn).
        goal_radius: Distance to the goal within which a step counts as a success (and, in the
            sparse family, is rewarded).

    Attributes:
        quadrature_points: ``max_return`` averages the oracle over a ``q x q`` grid of starts.
        horizon: Steps per episode.
        n_tasks: Number of enumerated goals.
        split_seed: Seed of the goal draws.
        train_fraction: Fraction of the goals in the train split.
        goal_radius: Success radius.
        n_train: Number of train goals, ``round(n_tasks * train_fraction)``.
    """

    env_id = "icrl/PointRobot-v0"
    task_shape = (2,)
    # The square's 8 symmetries (signed permutations of the axes): the clipped step, the distance
    # reward, the start box and the goal prior U(-1, 1)^2 are all invariant under them.
    symmetries = tuple((m, m) for m in (np.array(p, dtype=np.float64) * np.array(sgn, dtype=np.float64)[:, None]
                                       for p in ([[1, 0], [0, 1]], [[0, 1], [1, 0]])
                                       for sgn in ((1, 1), (-1, 1), (1, -1), (-1, -1))))
    quadrature_points: int = 16
    baselines = ("random", "psrl", "oracle")  # psrl: posterior sampling over goals, a Bayesian in-context reference

    def __init__(
        self,
        horizon: int = 20,
        n_tasks: int = 50,
        split_seed: int = 0,
        train_fraction: float = 0.9,
        goal_radius: float = 0.2,
    ) -> None:
        self.horizon = require_int("horizon", horizon, 1)
        self.n_tasks = require_int("n_tasks", n_tasks, 2)
        self.split_seed = require_int("split_seed", split_seed, 0)
        self.train_fraction = require_fraction("train_fraction", train_fraction)
        self.goal_radius = self._check_radius(goal_radius)
        self.n_train = int(round(self.n_tasks * self.train_fraction))
        if not 0 < self.n_train < self.n_tasks:
            raise ValueError(
                f"train_fraction: {self.train_fraction} of {self.n_tasks} tasks leaves an empty "
                "train or test split; choose a fraction that keeps at least one task on each side"
            )
        self._tasks = self.draw_goals(np.random.default_rng(self.split_seed), self.n_tasks)
        self._tasks.setflags(write=False)

    @staticmethod
    def _check_radius(goal_radius: Any) -> float:
        return require_positive("goal_radius", goal_radius)

    @property
    def action_space(self) -> spaces.Box:  # type: ignore[override]
        """``Box(-1, 1, (2,), float32)``; the dynamics clip actions outside it."""
        return spaces.Box(-1.0, 1.0, (2,), np.float32)

    @property
    def observation_space(self) -> spaces.Box:  # type: ignore[override]
        """``Box(-b, b, (2,), float32)``, ``b = 0.1 * horizon + 1`` (see the class docstring)."""
        bound = STEP_SIZE * self.horizon + 1.0
        return spaces.Box(-bound, bound, (2,), np.float32)

    # ----------------------------------------------------------------------- the family's parts

    def draw_goals(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` goals ~ ``U(-1, 1)^2``, ``(n, 2)`` float64."""
        return rng.uniform(-1.0, 1.0, size=(n, 2))

    def reward(self, dist: np.ndarray) -> np.ndarray:
        """The dense reward ``-d`` of the distances ``d`` to the goal, ``(n,)`` float64."""
        return -dist

    # ----------------------------------------------------------------------- tasks and splits

    def all_tasks(self) -> np.ndarray:
        """Every goal, ``(n_tasks, 2)`` float64, in draw order (train first)."""
        return self._tasks.copy()

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """``(train, test)`` goals: the first ``n_train`` drawn, and the rest."""
        return self._tasks[: self.n_train].copy(), self._tasks[self.n_train :].copy()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` goals drawn uniformly, with replacement, from the train split."""
        n = require_int("n", n, 0)
        return self._tasks[rng.integers(self.n_train, size=n)].copy()  # (n, 2)

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` fresh goals from the generating prior (:meth:`draw_goals`), ``(n, 2)`` float64.

        Not :meth:`sample`: that draws the enumerated train goals only, while this is the
        distribution every enumerated goal (train and test) was drawn from.
        """
        return self.draw_goals(rng, require_int("n", n, 0))

    def check_obs(self, obs: Any, n: int) -> np.ndarray:
        """``obs`` as an ``(n, 2)`` float64 array of finite positions, else a ``ValueError``."""
        arr = np.asarray(obs)
        if arr.shape != (n, 2) or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(
                f"obs: expected shape ({n}, 2) numbers (one position per task), got {arr.dtype} "
                f"{arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError("obs: every position must be finite")
        return arr.astype(np.float64)

    # ----------------------------------------------------------------------- dynamics

    def start_obs(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` start positions ~ ``U(-0.1, 0.1)^2`` drawn from ``rng``, ``(n, 2)`` float32."""
        return rng.uniform(-START_HALF_WIDTH, START_HALF_WIDTH, size=(n, 2)).astype(np.float32)

    def transition(
        self, tasks: np.ndarray, obs: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step of ``n`` worlds; no validation (the envs validate once, then call this).

        The move is computed in float64 and the new position rounded to float32 (the
        observation); the reward and the success flag are computed on that rounded position, so
        they are functions of the observation.

        Args:
            tasks: ``(n, 2)`` float64 goals.
            obs: ``(n, 2)`` current positions (float32 in the envs).
            actions: ``(n, 2)`` finite float actions; clipped to ``[-1, 1]`` here.

        Returns:
            ``(next_obs (n, 2) float32, reward (n,) float64, success (n,) bool)``.
        """
        move = STEP_SIZE * np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)  # (n, 2)
        pos = (np.asarray(obs, dtype=np.float64) + move).astype(np.float32)  # (n, 2)
        dist = np.linalg.norm(pos.astype(np.float64) - tasks, axis=1)  # (n,)
        return pos, self.reward(dist), dist <= self.goal_radius

    def expected_reward(
        self, tasks: np.ndarray, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray
    ) -> np.ndarray:
        """The reward of each transition under each goal: :meth:`reward` of ``||next_obs - goal||``.

        The reward is deterministic and a function of the position after the move, so ``obs``
        and ``actions`` are not used. ``next_obs`` is the env's float32 observation; it is
        widened to float64 before the goal is subtracted, exactly as :meth:`transition` computes
        the reward on the float32-rounded position, so the true goal reproduces the env's reward
        bit for bit.

        Args:
            tasks: ``(n, 2)`` goals.
            obs: ``(n, 2)`` positions before the move (unused).
            actions: ``(n, 2)`` actions (unused).
            next_obs: ``(n, 2)`` positions after the move (float32 in the envs).

        Returns:
            ``(n,)`` float64 rewards.
        """
        goals = self.check_tasks(tasks)  # (n, 2)
        pos = self.check_obs(next_obs, len(goals))  # (n, 2) float64, exact widening of float32
        diff = pos - goals  # (n, 2)
        # sqrt(dx^2 + dy^2): the same float operations as np.linalg.norm(axis=1) in transition
        # (bit-identical), several times faster on the N * M rows of a particle posterior.
        dist = np.sqrt(diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1])  # (n,)
        return self.reward(dist)

    # ----------------------------------------------------------------------- oracle

    def oracle_action(self, tasks: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """The greedy step ``clip((goal - obs) / 0.1, -1, 1)``, ``(n, 2)`` float32.

        Why it is optimal. Write ``e_t = |goal - s_t|`` (per axis) for the distance after ``t``
        steps. Since ``|s_{t+1,i} - s_{t,i}| <= 0.1`` on each axis, the triangle inequality gives
        ``e_{t+1,i} >= max(e_{t,i} - 0.1, 0)`` for *every* action; the box ``[-1, 1]^2`` is a
        product of intervals (separable), so one action can attain that bound on both axes at
        once, and the greedy action does: it moves each axis by ``min(e_{t,i}, 0.1)`` toward the
        goal. By induction every policy has ``e_{t,i} >= max(e_{0,i} - 0.1 t, 0)`` for all t and
        the greedy policy attains it with equality on both axes at every step. The Euclidean
        distance ``||goal - s_t|| = sqrt(e_{t,0}^2 + e_{t,1}^2)`` is monotone in the per-axis
        distances, so the greedy policy minimises *every* later distance simultaneously; both
        rewards are non-increasing functions of that distance (dense ``-d``; sparse ``1 - d``
        inside the radius and 0 outside, with ``1 - d >= 0`` there because ``goal_radius <= 1``),
        so it maximises every reward of the episode at once, hence the return, from any start.
        (Up to float32 rounding of the positions.)

        Args:
            tasks: ``(n, 2)`` goals.
            obs: ``(n, 2)`` current positions.
        """
        goals = self.check_tasks(tasks)  # (n, 2)
        pos = self.check_obs(obs, len(goals))  # (n, 2)
        return np.clip((goals - pos) / STEP_SIZE, -1.0, 1.0).astype(np.float32)  # (n, 2)

    def max_return(self, tasks: np.ndarray) -> np.ndarray:
        """The oracle's expected return over one episode, the expectation over the random start.

        Computed deterministically by the midpoint rule on the start square: the oracle is rolled
        out with :meth:`transition` (vectorised over tasks x starts) from the centres of a
        ``q x q`` regular grid of cells partitioning ``[-0.1, 0.1]^2`` (``q`` is
        ``quadrature_points``), and the returns are averaged. The dense family's return is
        continuous in the start and ``q = 16`` is accurate to well under 1e-2 (below the noise
        of 10^5 Monte Carlo rollouts); the sparse family's return jumps where the step of arrival
        in the radius changes, so its error falls only as ``1 / q``, and ``q = 64`` keeps it
        around 1e-2 (on returns of about 13). Dense returns are negative.

        Args:
            tasks: ``(n, 2)`` goals.

        Returns:
            ``(n,)`` float64 expected returns.
        """
        goals = self.check_tasks(tasks)  # (n, 2)
        q = self.quadrature_points
        mid = -START_HALF_WIDTH + (np.arange(q) + 0.5) * (2 * START_HALF_WIDTH / q)  # (q,)
        starts = np.stack(np.meshgrid(mid, mid, indexing="ij"), -1).reshape(-1, 2)  # (q*q, 2)
        starts = starts.astype(np.float32)
        out = np.empty(len(goals))  # (n,)
        chunk_size = max(1, _QUADRATURE_ROWS // len(starts))
        for lo in range(0, len(goals), chunk_size):
            chunk = goals[lo : lo + chunk_size]  # (c, 2)
            rows = np.repeat(chunk, len(starts), axis=0)  # (c*q*q, 2)
            pos = np.tile(starts, (len(chunk), 1))  # (c*q*q, 2)
            total = np.zeros(len(rows))  # (c*q*q,)
            for _ in range(self.horizon):
                act = np.clip((rows - pos) / STEP_SIZE, -1.0, 1.0).astype(np.float32)
                pos, reward, _ = self.transition(rows, pos, act)
                total += reward
            out[lo : lo + len(chunk)] = total.reshape(len(chunk), -1).mean(axis=1)
        return out


class SparsePointRobotTaskDistribution(PointRobotTaskDistribution):
    """Tasks of ``icrl/SparsePointRobot-v0``: goals ``(cos a, sin a)``, ``a ~ U[0, pi]``.

    PEARL's sparse reward: ``1 - d`` when the distance ``d`` to the goal is within
    ``goal_radius``, else 0 (the dense reward ``-d`` zeroed outside the radius, plus 1 inside).
    ``goal_radius`` must be in ``(0, 1]`` so that the reward inside the radius is never below the
    0 outside it (the oracle's optimality argument needs a reward non-increasing in ``d``).
    Kwargs, splits and dynamics as :class:`PointRobotTaskDistribution`.
    """

    env_id = "icrl/SparsePointRobot-v0"
    quadrature_points = 64
    symmetries = tuple((m, m) for m in (np.eye(2), np.diag([-1.0, 1.0])))  # the prior's: x -> -x keeps y >= 0

    @staticmethod
    def _check_radius(goal_radius: Any) -> float:
        radius = require_positive("goal_radius", goal_radius)
        if radius > 1.0:
            raise ValueError(
                f"goal_radius: must be <= 1 for the sparse reward 1 - d to stay >= 0 inside the "
                f"radius, got {radius!r}"
            )
        return radius

    def draw_goals(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` goals ``(cos a, sin a)`` with ``a ~ U[0, pi]``, ``(n, 2)`` float64."""
        angle = rng.uniform(0.0, np.pi, size=n)  # (n,)
        return np.stack([np.cos(angle), np.sin(angle)], axis=1)

    def reward(self, dist: np.ndarray) -> np.ndarray:
        """``1 - d`` within ``goal_radius`` of the goal, else 0; ``(n,)`` float64."""
        return np.where(dist <= self.goal_radius, 1.0 - dist, 0.0)


# --------------------------------------------------------------------------- envs


class PointRobotEnv(SingleTaskMixin, gymnasium.Env[np.ndarray, np.ndarray]):
    """``icrl/PointRobot-v0``: move a point toward an unseen goal; reward ``-||state - goal||``.

    The task (goal) is set by ``reset(options={"task": goal})`` and kept across later resets.
    Until a goal is given the env draws one from the train split with ``self.np_random``; a
    *seeded* reset redraws it. Every reset then draws the start position from ``self.np_random``,
    so ``reset(seed=s)`` fixes the goal and the starts of this and the following episodes. The
    reset info is empty; every step's info is ``{"success": bool}``.

    Args:
        horizon: Steps per episode (>= 1); the env truncates itself there.
        n_tasks: Number of enumerated goals (>= 2).
        split_seed: Seed of ``np.random.default_rng`` that draws the goals.
        train_fraction: Fraction of the goals in the train split (0.9: 45/5).
        goal_radius: Distance to the goal within which a step counts as a success.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    task_cls: type[PointRobotTaskDistribution] = PointRobotTaskDistribution

    def __init__(
        self,
        horizon: int = 20,
        n_tasks: int = 50,
        split_seed: int = 0,
        train_fraction: float = 0.9,
        goal_radius: float = 0.2,
    ) -> None:
        tasks = self.task_cls(horizon, n_tasks, split_seed, train_fraction, goal_radius)
        self.task_distribution = tasks
        self.horizon = tasks.horizon
        self.observation_space = tasks.observation_space
        self.action_space = tasks.action_space
        self._obs = np.zeros((1, 2), dtype=np.float32)  # (1, 2)
        self._t = 0
        self._ended = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``options={"task": goal}`` (shape ``(2,)``) switches the goal."""
        super().reset(seed=seed)
        self._reset_task(seed, options)
        self._obs = self.task_distribution.start_obs(self.np_random, 1)  # (1, 2)
        self._t = 0
        self._ended = False
        return self._obs[0].copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move by ``0.1 * clip(action, -1, 1)``; ``action`` is 2 finite floats."""
        if self._ended:
            raise RuntimeError(
                "step() called before reset() or after the episode was truncated at "
                f"horizon={self.horizon}; call reset() first"
            )
        act = require_float_actions(action, (2,))  # the dynamics clip into [-1, 1]
        obs, reward, success = self.task_distribution.transition(self._task[None], self._obs, act[None])
        self._obs = obs
        self._t += 1
        truncated = self._t >= self.horizon
        self._ended = truncated
        return obs[0].copy(), float(reward[0]), False, truncated, {"success": bool(success[0])}


class PointRobotVectorEnv(VectorTaskMixin, VectorEnv):
    """``num_envs`` point robots stepped together in numpy, with SAME_STEP autoreset.

    ``reset(options={"task": goals})`` takes ``(num_envs, 2)`` goals, kept across resets and
    autoresets; without them the goals are drawn from the train split with ``self.np_random``
    (redrawn on every seeded reset until goals are given).

    Start positions come from one generator per env, seeded as ``SyncVectorEnv`` seeds its envs:
    ``reset(seed=s)`` seeds env ``i``'s with ``s + i`` (an unseeded first reset seeds them from
    ``self.np_random``). So, for the same goals, env ``i`` follows exactly the trajectory of a
    single env reset with ``seed=s + i`` and then reset without a seed after each episode.

    ``infos["success"]`` is the ``(num_envs,)`` bool success of every env's step, at every step
    (mask ``"_success"`` all True; the reset info is empty, so on a truncation step it is the
    finished episode's last step). Truncated envs also get ``infos["final_obs"]`` and
    ``infos["final_info"]`` (``{"success", "_success"}``, with masks) as gymnasium's
    ``SyncVectorEnv`` builds them in SAME_STEP mode, and the returned obs is already the next
    episode's start.

    Args:
        num_envs: Number of parallel worlds (>= 1).
        horizon: Steps per episode (>= 1).
        n_tasks: Number of enumerated goals (>= 2).
        split_seed: Seed of ``np.random.default_rng`` that draws the goals.
        train_fraction: Fraction of the goals in the train split.
        goal_radius: Distance to the goal within which a step counts as a success.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    task_cls: type[PointRobotTaskDistribution] = PointRobotTaskDistribution

    def __init__(
        self,
        num_envs: int = 1,
        horizon: int = 20,
        n_tasks: int = 50,
        split_seed: int = 0,
        train_fraction: float = 0.9,
        goal_radius: float = 0.2,
    ) -> None:
        self.num_envs = require_int("num_envs", num_envs, 1)
        tasks = self.task_cls(horizon, n_tasks, split_seed, train_fraction, goal_radius)
        self.task_distribution = tasks
        self.horizon = tasks.horizon
        self.single_observation_space = tasks.observation_space
        self.single_action_space = tasks.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._start_rngs: list[np.random.Generator] | None = None  # one per env
        self._obs = np.zeros((self.num_envs, 2), dtype=np.float32)  # (N, 2)
        self._t = np.zeros(self.num_envs, dtype=np.int64)  # (N,) steps into the episode

    def _starts(self, envs: np.ndarray) -> np.ndarray:
        """Start positions of the given envs, each from its own generator, ``(k, 2)`` float32."""
        assert self._start_rngs is not None
        dist = self.task_distribution
        return np.concatenate([dist.start_obs(self._start_rngs[i], 1) for i in envs])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env; ``options={"task": goals}`` sets ``(num_envs, 2)`` goals."""
        super().reset(seed=seed)
        self._reset_tasks(seed, options)
        if seed is not None:
            self._start_rngs = [seeding.np_random(seed + i)[0] for i in range(self.num_envs)]
        elif self._start_rngs is None:
            seeds = self.np_random.integers(2**32, size=self.num_envs)
            self._start_rngs = [seeding.np_random(int(s))[0] for s in seeds]
        self._obs = self._starts(np.arange(self.num_envs))  # (N, 2)
        self._t[:] = 0
        return self._obs.copy(), {}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env; ``actions`` is ``(num_envs, 2)`` finite floats, clipped to [-1, 1]."""
        if self._tasks is None:
            raise RuntimeError("step() called before reset(); call reset() first")
        acts = require_float_actions(actions, (self.num_envs, 2))
        obs, rewards, success = self.task_distribution.transition(self._tasks, self._obs, acts)
        self._t += 1
        truncated = self._t >= self.horizon  # (N,)
        terminated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {
            "success": success,
            "_success": np.ones(self.num_envs, dtype=bool),
        }
        if truncated.any():  # SAME_STEP autoreset; the goal is kept across it
            infos.update(same_step_final(obs, truncated, infos))
            done = np.flatnonzero(truncated)
            obs[done] = self._starts(done)
            self._t[done] = 0
        self._obs = obs
        return obs.copy(), rewards, terminated, truncated, infos


class SparsePointRobotEnv(PointRobotEnv):
    """``icrl/SparsePointRobot-v0``: goals on the upper unit half circle; reward ``1 - d`` within
    ``goal_radius`` (in ``(0, 1]``) of the goal, else 0. Kwargs as :class:`PointRobotEnv`."""

    task_cls = SparsePointRobotTaskDistribution


class SparsePointRobotVectorEnv(PointRobotVectorEnv):
    """Native vector version of :class:`SparsePointRobotEnv`; same kwargs plus ``num_envs``."""

    task_cls = SparsePointRobotTaskDistribution
