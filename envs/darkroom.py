"""Dark Room grid worlds (AD, DICP, LHF and DPT papers): single envs and native numpy vector envs.

The agent sees only its integer cell (x, y) on a ``size x size`` grid
(docs/architecture.md#environments-and-tasks); the moves, the
episode ends, the train/test splits and the shared env classes are in ``grid.py``.

Families (ids registered in ``icrl.envs``):

- ``icrl/DarkRoom-v0``: 9x9, start at the centre (4, 4), H 20, reward 1 whenever the agent is on the
  goal after a step; a task is the goal cell (x, y). The DPT paper's Dark Room (Lee et al. 2023:
  10x10, start (0, 0), H 100, 80/20 goals) is the config
  ``size=10, horizon=100, start=[0, 0], split="dpt"``.
- ``icrl/DarkRoomLarge-v0``: 15x15, centre start, H 50, 225 goals split 202/23.
- ``icrl/DarkRoomHard-v0`` (AD paper): 17x17, centre start, H 20; reward 1 the first time the goal
  is reached, and the episode then ends (``terminated=True``).
- ``icrl/DarkRoomPermuted-v0`` (DICP): 9x9, start (0, 0), goal (8, 8), H 50; a task is one of the
  120 permutations of the five actions, given as 5 numbers ``perm`` where agent action ``a`` makes
  the move ``perm[a]`` (DICP's and DPT's ``DarkroomPermuted`` convention).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .grid import (
    N_ACTIONS,
    SPLITS,
    GridEnv,
    GridTaskDistribution,
    GridVectorEnv,
    manhattan,
    move,
    require_cell,
    require_fraction,
    toward,
)
from .tasks import TaskDistribution, require_choice, require_int

__all__ = [
    "DarkRoomEnv",
    "DarkRoomHardEnv",
    "DarkRoomHardTaskDistribution",
    "DarkRoomHardVectorEnv",
    "DarkRoomLargeEnv",
    "DarkRoomLargeTaskDistribution",
    "DarkRoomLargeVectorEnv",
    "DarkRoomPermutedEnv",
    "DarkRoomPermutedTaskDistribution",
    "DarkRoomPermutedVectorEnv",
    "DarkRoomTaskDistribution",
    "DarkRoomVectorEnv",
]

# --------------------------------------------------------------------------- task distributions


def _darkroom_kwargs(
    size: Any, horizon: Any, start: Any, split: Any, split_seed: Any, train_fraction: Any
) -> dict[str, Any]:
    """Check the Dark Room kwargs; normalised, with ``start`` and ``train_fraction`` resolved."""
    size = require_int("size", size, 2)
    split = require_choice("split", split, SPLITS)
    if train_fraction is None:
        train_fraction = 0.8 if split == "dpt" else 0.9
    return {
        "size": size,
        "horizon": require_int("horizon", horizon, 1),
        "start": (size // 2, size // 2) if start is None else require_cell("start", start, size),
        "split": split,
        "split_seed": require_int("split_seed", split_seed, 0),
        "train_fraction": require_fraction("train_fraction", train_fraction),
    }


class DarkRoomTaskDistribution(GridTaskDistribution):
    """Tasks of ``icrl/DarkRoom-v0``: the goal cell (x, y); takes the env's kwargs.

    The split enumerates the goals as ``[(x, y) for x in range(size) for y in range(size)]`` (x the
    outer loop, as DICP's ``sample_darkroom`` and DPT's ``collect_data.py`` do): with the defaults
    the 8 held-out goals are (4,2), (5,6), (6,8), (7,2), (3,6), (0,5), (5,8), (5,4).
    """

    env_id = "icrl/DarkRoom-v0"
    task_shape = (2,)

    def __init__(
        self,
        size: int = 9,
        horizon: int = 20,
        start: Any = None,
        split: str = "dicp",
        split_seed: int = 0,
        train_fraction: float | None = None,
    ) -> None:
        kw = _darkroom_kwargs(size, horizon, start, split, split_seed, train_fraction)
        self.size, self.horizon, self.start = kw["size"], kw["horizon"], kw["start"]
        self.split_protocol, self.split_seed = kw["split"], kw["split_seed"]
        self.train_fraction = kw["train_fraction"]
        self.obs_nvec = (self.size, self.size)
        self._check_split()

    def all_tasks(self) -> np.ndarray:
        """Every goal, ``(size**2, 2)``, x-major: goal index ``x * size + y``."""
        cells = np.arange(self.size)
        return np.stack(np.meshgrid(cells, cells, indexing="ij"), -1).reshape(-1, 2).astype(float)

    def start_obs(self, n: int) -> np.ndarray:
        """The start cell, ``(n, 2)``."""
        return np.tile(np.array(self.start, dtype=np.int64), (n, 1))  # (n, 2)

    def transition(
        self, tasks: np.ndarray, obs: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Move; reward 1 on the goal after the move; the episode never terminates early."""
        pos = move(obs, actions, self.size)  # (n, 2)
        reward = np.all(pos == tasks, axis=1).astype(np.float64)  # (n,)
        return pos, reward, np.zeros(len(pos), dtype=bool)

    def oracle_action(self, tasks: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """Toward the goal, x first then y; 4 (stay) on the goal."""
        goals = self.check_tasks(tasks).astype(np.int64)  # (n, 2)
        return toward(self.check_obs(obs, len(goals)), goals)

    def max_return(self, tasks: np.ndarray) -> np.ndarray:
        """``clip(H + 1 - |start - goal|_1, 0, H)``: the oracle is rewarded on every step from its
        arrival on (a goal at the start pays every step)."""
        d = manhattan(self.check_tasks(tasks), np.array(self.start))  # (n,)
        return np.clip(self.horizon + 1 - d, 0, self.horizon).astype(np.float64)


class DarkRoomLargeTaskDistribution(DarkRoomTaskDistribution, defaults={"size": 15, "horizon": 50}):
    """Tasks of ``icrl/DarkRoomLarge-v0``: 15x15, H 50, 225 goals split 202/23."""

    env_id = "icrl/DarkRoomLarge-v0"


class DarkRoomHardTaskDistribution(DarkRoomTaskDistribution, defaults={"size": 17, "horizon": 20}):
    """Tasks of ``icrl/DarkRoomHard-v0``: 17x17, H 20; the first arrival on the goal pays 1 and ends
    the episode (AD paper, Laskin et al. 2022). Split like Dark Room (289 goals, 260/29)."""

    env_id = "icrl/DarkRoomHard-v0"

    def transition(
        self, tasks: np.ndarray, obs: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Move; on the goal: reward 1 and ``terminated``."""
        pos, reward, _ = super().transition(tasks, obs, actions)
        return pos, reward, reward > 0

    def max_return(self, tasks: np.ndarray) -> np.ndarray:
        """1 if the goal can be reached within the horizon (a goal at the start takes one step)."""
        d = manhattan(self.check_tasks(tasks), np.array(self.start))  # (n,)
        return (np.maximum(d, 1) <= self.horizon).astype(np.float64)


class DarkRoomPermutedTaskDistribution(GridTaskDistribution):
    """Tasks of ``icrl/DarkRoomPermuted-v0``: a permutation ``perm`` of the 5 actions (5 numbers).

    Agent action ``a`` makes the move ``perm[a]``; start (0, 0), goal (size-1, size-1), reward 1 on
    the goal after every step. Tasks are enumerated in ``itertools.permutations(range(5))`` order
    (DICP's ``perm_idx``) and split DICP's way with seed 4, 90% train (108/12).
    """

    env_id = "icrl/DarkRoomPermuted-v0"
    task_shape = (N_ACTIONS,)

    def __init__(
        self, size: int = 9, horizon: int = 50, split_seed: int = 4, train_fraction: float = 0.9
    ) -> None:
        self.size = require_int("size", size, 2)
        self.horizon = require_int("horizon", horizon, 1)
        self.split_seed = require_int("split_seed", split_seed, 0)
        self.train_fraction = require_fraction("train_fraction", train_fraction)
        self.start = (0, 0)
        self.goal = np.array([self.size - 1, self.size - 1], dtype=np.int64)  # (2,)
        self.obs_nvec = (self.size, self.size)
        self._check_split()

    def all_tasks(self) -> np.ndarray:
        """The 120 permutations, ``(120, 5)``, lexicographic (DICP's ``perm_idx`` order)."""
        return np.array(list(itertools.permutations(range(N_ACTIONS))), dtype=np.float64)

    def check_tasks(self, tasks: Any) -> np.ndarray:
        """As the base check, and every task must be a permutation of 0..4."""
        arr = TaskDistribution.check_tasks(self, tasks)
        if np.any(np.sort(arr, axis=1) != np.arange(N_ACTIONS)):
            raise ValueError("tasks: every task must be a permutation of the actions 0, 1, 2, 3, 4")
        return arr

    def start_obs(self, n: int) -> np.ndarray:
        """The start cell (0, 0), ``(n, 2)``."""
        return np.zeros((n, 2), dtype=np.int64)

    def transition(
        self, tasks: np.ndarray, obs: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Move by ``perm[a]``; reward 1 on the goal after the move."""
        pos = move(obs, tasks[np.arange(len(actions)), actions], self.size)  # (n, 2)
        reward = np.all(pos == self.goal, axis=1).astype(np.float64)  # (n,)
        return pos, reward, np.zeros(len(pos), dtype=bool)

    def oracle_action(self, tasks: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """The agent action whose move heads for the goal: ``perm.index(toward(obs, goal))``."""
        perms = self.check_tasks(tasks).astype(np.int64)  # (n, 5)
        pos = self.check_obs(obs, len(perms))  # (n, 2)
        base = toward(pos, np.broadcast_to(self.goal, pos.shape))  # (n,)
        return np.argmax(perms == base[:, None], axis=1).astype(np.int64)  # (n,)

    def max_return(self, tasks: np.ndarray) -> np.ndarray:
        """``clip(H + 1 - 2 (size - 1), 0, H)`` for every task (35 with the defaults)."""
        n = len(self.check_tasks(tasks))
        d = 2 * (self.size - 1)
        return np.full(n, float(np.clip(self.horizon + 1 - d, 0, self.horizon)))


# --------------------------------------------------------------------------- concrete envs
# Each env takes its task distribution's kwargs; each vector env takes ``num_envs`` plus them.


class DarkRoomEnv(GridEnv, tasks=DarkRoomTaskDistribution):
    """``icrl/DarkRoom-v0``: find an unseen goal cell; reward 1 on it after every step.

    Args:
        size: Side of the grid (>= 2).
        horizon: Steps per episode; the env truncates itself there.
        start: The start cell ``[x, y]``; ``None`` is the centre ``(size // 2, size // 2)``. A list
            such as ``[0, 0]`` survives a YAML config.
        split: ``"dicp"`` (DICP / AD / LHF: seed 0, 90% train, 73/8 goals) or ``"dpt"`` (the DPT
            paper: numpy shuffle, 80% train); see :func:`split_order`.
        split_seed: Seed of the split's shuffle.
        train_fraction: Fraction of the goals in the train split; ``None``: 0.9 (dicp) / 0.8 (dpt).
    """


class DarkRoomVectorEnv(GridVectorEnv, tasks=DarkRoomTaskDistribution):
    """Native vector version of :class:`DarkRoomEnv`; same kwargs plus ``num_envs``."""


class DarkRoomLargeEnv(GridEnv, tasks=DarkRoomLargeTaskDistribution):
    """``icrl/DarkRoomLarge-v0``: :class:`DarkRoomEnv` with the defaults ``size=15, horizon=50``."""


class DarkRoomLargeVectorEnv(GridVectorEnv, tasks=DarkRoomLargeTaskDistribution):
    """Native vector version of :class:`DarkRoomLargeEnv`; same kwargs plus ``num_envs``."""


class DarkRoomHardEnv(GridEnv, tasks=DarkRoomHardTaskDistribution):
    """``icrl/DarkRoomHard-v0``: 17x17, H 20, the first arrival on the goal pays 1 and terminates.

    Kwargs as :class:`DarkRoomEnv` (defaults ``size=17, horizon=20``).
    """


class DarkRoomHardVectorEnv(GridVectorEnv, tasks=DarkRoomHardTaskDistribution):
    """Native vector version of :class:`DarkRoomHardEnv`; same kwargs plus ``num_envs``."""


class DarkRoomPermutedEnv(GridEnv, tasks=DarkRoomPermutedTaskDistribution):
    """``icrl/DarkRoomPermuted-v0``: reach (size-1, size-1) from (0, 0) with permuted actions.

    Args:
        size: Side of the grid (>= 2).
        horizon: Steps per episode; the env truncates itself there.
        split_seed: Seed of the DICP split of the 120 permutations.
        train_fraction: Fraction of the permutations in the train split (0.9: 108/12).
    """


class DarkRoomPermutedVectorEnv(GridVectorEnv, tasks=DarkRoomPermutedTaskDistribution):
    """Native vector version of :class:`DarkRoomPermutedEnv`; same kwargs plus ``num_envs``."""
