"""Dark Key-to-Door (DICP; AD paper), as a single env and a native numpy vector env.

A 9x9 dark room with the Dark Room moves (0: x+1, 1: x-1, 2: y+1, 3: y-1, 4: stay, clipped at the
walls), start at the centre, H 50. A task is ``(key x, key y, door x, door y)``, 81^2 = 6,561 tasks.
The first arrival on the key pays +1 and picks it up; the first arrival on the door *while holding
the key* pays +1 and ends the episode (``terminated=True``). As in Dark Room, "arrival" is the cell
after a step, so a key at the start is picked up by staying (action 4), and a door on the key's cell
is opened one step after the pick-up (DICP's ``DarkKeyToDoor``: one reward per step at most).

The observation is ``(x, y, has_key)``, ``MultiDiscrete([size, size, 2])``, not DICP's bare
``(x, y)``: with the position alone the world is not Markov (the same cell calls for "go to the key"
before the pick-up and "go to the door" after it), so neither the oracle label of a step (DPT's a*,
which DICP computes from a ``have_key`` flag it keeps outside the observation) nor a DPT query
state would be a function of what the agent sees. With the flag the observation is the whole state,
and the dynamics are the pure batched function ``transition(tasks, obs, actions)`` shared by the
single and vector envs.

Tasks are enumerated as ``[(kx, ky, dx, dy) for kx .. for ky .. for dx .. for dy ..]`` (DICP's
``sample_dark_key_to_door``) and split DICP's way: seed 4, 95% train (6,233/328); ``sample`` draws
from the train split.
"""

from __future__ import annotations

import numpy as np

from .grid import (
    GridEnv,
    GridTaskDistribution,
    GridVectorEnv,
    manhattan,
    move,
    require_fraction,
    toward,
)
from .tasks import require_int

__all__ = ["KeyToDoorEnv", "KeyToDoorTaskDistribution", "KeyToDoorVectorEnv"]


class KeyToDoorTaskDistribution(GridTaskDistribution):
    """Tasks of ``icrl/KeyToDoor-v0``: ``(key x, key y, door x, door y)``; the env's kwargs."""

    env_id = "icrl/KeyToDoor-v0"
    task_shape = (4,)

    def __init__(
        self, size: int = 9, horizon: int = 50, split_seed: int = 4, train_fraction: float = 0.95
    ) -> None:
        self.size = require_int("size", size, 2)
        self.horizon = require_int("horizon", horizon, 1)
        self.split_seed = require_int("split_seed", split_seed, 0)
        self.train_fraction = require_fraction("train_fraction", train_fraction)
        self.start = (self.size // 2, self.size // 2)
        self.obs_nvec = (self.size, self.size, 2)
        self._check_split()

    def all_tasks(self) -> np.ndarray:
        """Every (key, door) pair, ``(size**4, 4)``, key x outermost (index = digits base size)."""
        cells = np.arange(self.size)
        grids = np.meshgrid(cells, cells, cells, cells, indexing="ij")
        return np.stack(grids, -1).reshape(-1, 4).astype(np.float64)  # (size**4, 4)

    def start_obs(self, n: int) -> np.ndarray:
        """The centre, without the key: ``(n, 3)``."""
        return np.tile(np.array([*self.start, 0], dtype=np.int64), (n, 1))  # (n, 3)

    def transition(
        self, tasks: np.ndarray, obs: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Move; +1 and pick-up on the key, +1 and ``terminated`` on the door with the key."""
        pos = move(obs[:, :2], actions, self.size)  # (n, 2)
        has_key = obs[:, 2] == 1  # (n,)
        got_key = ~has_key & np.all(pos == tasks[:, :2], axis=1)  # (n,)
        opened = has_key & np.all(pos == tasks[:, 2:], axis=1)  # (n,)
        next_obs = np.concatenate([pos, (has_key | got_key)[:, None]], axis=1)  # (n, 3)
        return next_obs.astype(np.int64), (got_key | opened).astype(np.float64), opened

    def oracle_action(self, tasks: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """Toward the key, or toward the door once it is held (x first, then y; 4 on the target)."""
        kd = self.check_tasks(tasks).astype(np.int64)  # (n, 4)
        o = self.check_obs(obs, len(kd))  # (n, 3)
        target = np.where(o[:, 2:3] == 1, kd[:, 2:], kd[:, :2])  # (n, 2)
        return toward(o[:, :2], target)

    def max_return(self, tasks: np.ndarray) -> np.ndarray:
        """2 when key then door fit in the horizon, 1 when only the key does, else 0.

        Each leg takes its Manhattan length, or one step (a stay) when it has length 0.
        """
        kd = self.check_tasks(tasks)  # (n, 4)
        to_key = np.maximum(manhattan(kd[:, :2], np.array(self.start)), 1)  # (n,)
        to_door = to_key + np.maximum(manhattan(kd[:, :2], kd[:, 2:]), 1)  # (n,)
        return (to_key <= self.horizon).astype(np.float64) + (to_door <= self.horizon)


class KeyToDoorEnv(GridEnv, tasks=KeyToDoorTaskDistribution):
    """``icrl/KeyToDoor-v0``: pick up an unseen key, then open an unseen door.

    Args:
        size: Side of the grid (>= 2).
        horizon: Steps per episode; the env truncates itself there.
        split_seed: Seed of the DICP split of the ``size**4`` tasks.
        train_fraction: Fraction of the tasks in the train split (0.95: 6,233/328).
    """


class KeyToDoorVectorEnv(GridVectorEnv, tasks=KeyToDoorTaskDistribution):
    """Native vector version of :class:`KeyToDoorEnv`; same kwargs plus ``num_envs``."""
