"""Shared grid-world machinery of the Dark Room family (``darkroom.py``) and KeyToDoor.

The agent sees only a Markov state of a ``size x size`` grid (its integer cell (x, y), plus what
the family adds; docs/architecture.md#environments-and-tasks). Actions are 0: x+1, 1: x-1,
2: y+1, 3: y-1, 4: stay, clipped at the
walls; the reward is computed on the cell *after* the move. Episodes last ``horizon`` steps (the env
truncates itself there) unless the family ends them earlier (``terminated=True``).

Every grid family is finite: :class:`GridTaskDistribution` enumerates its tasks, splits them into
fixed train/test sets (see :func:`split_order`), and ``sample`` draws uniformly from the *train*
split only, so an env without an explicit task never sees a held-out task. The observation is a
Markov state of the world, so the dynamics are the pure batched function
``transition(tasks, obs, actions)``; :class:`GridEnv` calls it on a batch of one and
:class:`GridVectorEnv` on all its envs, which makes them the same world step for step.
"""

from __future__ import annotations

import abc
import inspect
import numbers
import random
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .tasks import (SingleTaskMixin, TaskDistribution, VectorTaskMixin, check_vector_actions, require_int,
                    same_step_final)

__all__ = [
    "MOVES",
    "SPLITS",
    "GridEnv",
    "GridTaskDistribution",
    "GridVectorEnv",
    "split_order",
]

_KW = inspect.Parameter.POSITIONAL_OR_KEYWORD

#: ``MOVES[a]`` is the (dx, dy) of action a: 0: x+1, 1: x-1, 2: y+1, 3: y-1, 4: stay.
MOVES = np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [0, 0]], dtype=np.int64)  # (5, 2)
N_ACTIONS = 5

#: Split protocols: DICP (Python ``random``, ``round(n * f)`` train) and the DPT paper's (numpy).
SPLITS = ("dicp", "dpt")


def move(pos: np.ndarray, moves: np.ndarray, size: int) -> np.ndarray:
    """Cells after the moves, clipped at the walls: ``(n, 2)`` int64 from ``(n, 2)``, ``(n,)``."""
    return np.clip(pos + MOVES[moves], 0, size - 1)  # (n, 2)


def toward(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The move that brings each cell closer to its target: x first, then y, 4 (stay) on it.

    This is the oracle of DICP's and DPT's Dark Room (``get_optimal_action``). ``(n,)`` int64.
    """
    dx = target[:, 0] - pos[:, 0]  # (n,)
    dy = target[:, 1] - pos[:, 1]  # (n,)
    return np.select([dx > 0, dx < 0, dy > 0, dy < 0], [0, 1, 2, 3], 4).astype(np.int64)  # (n,)


def manhattan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L1 distances between cells, ``(n,)`` int64 from ``(n, 2)`` (or broadcastable) arrays."""
    return np.abs(np.asarray(a) - np.asarray(b)).sum(axis=-1)


def split_order(n: int, protocol: str, seed: int, train_fraction: float) -> tuple[np.ndarray, int]:
    """The shuffled order of ``n`` enumerated tasks and how many of its first entries are train.

    ``"dicp"``: ``random.seed(seed); random.shuffle(tasks)``, the first ``round(n * f)`` train
    (DICP's ``sample_darkroom``; a private ``random.Random`` gives the same order without touching
    the global generator). ``"dpt"``: ``np.random.RandomState(seed).shuffle(goals)``, the first
    ``int(f * n)`` train (the DPT paper's ``collect_data.py``). Shuffling indices gives the same
    permutation as shuffling the tasks themselves.

    Returns:
        ``(order, n_train)``: ``(n,)`` int64 indices into the enumeration, and the train count.
    """
    if protocol == "dpt":
        order = np.arange(n)
        np.random.RandomState(seed).shuffle(order)
        return order.astype(np.int64), int(train_fraction * n)
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return np.array(idx, dtype=np.int64), round(n * train_fraction)


def require_cell(name: str, value: Any, size: int) -> tuple[int, int]:
    """Return ``value`` as a cell ``(x, y)`` of a ``size x size`` grid, else raise naming ``name``.

    Any length-2 sequence of integers is accepted (a YAML list ``[0, 0]``, a tuple, an array).
    """
    try:
        cell = tuple(value)
    except TypeError:
        cell = ()
    if len(cell) != 2 or not all(
        isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c < size for c in cell
    ):
        raise ValueError(
            f"{name}: must be a cell [x, y] with integers in [0, {size}), got {value!r}"
        )
    return int(cell[0]), int(cell[1])


def require_fraction(name: str, value: Any) -> float:
    """Return ``value`` as a float strictly between 0 and 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise ValueError(f"{name}: must be a number in (0, 1), got {value!r}")
    return float(value)


def _init_from(signature: inspect.Signature, body: Any, qualname: str) -> Any:
    """``body`` (called with the bound arguments, defaults applied) as an ``__init__`` whose
    ``inspect.signature`` is ``signature`` (the config layer reads kwarg names and defaults
    there)."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        body(*bound.args, **bound.kwargs)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{qualname}.__init__"
    return __init__


# --------------------------------------------------------------------------- task distributions


class GridTaskDistribution(TaskDistribution):
    """A finite grid family: enumerated tasks, a fixed train/test split and batched dynamics.

    ``sample`` draws uniformly from the train split (with replacement); ``split()`` gives both
    splits in their shuffled order. Tasks are float64 arrays of integer values (the
    :class:`TaskDistribution` convention); any valid task may be set on an env, in a split or not.

    Subclasses set ``size``, ``horizon``, ``start``, ``task_shape``, ``obs_nvec`` and the split
    settings (then call :meth:`_check_split`), and implement the abstract methods. A subclass that
    only changes the defaults of its parent's kwargs (another id of the same family) says so in
    its class line, ``class Large(DarkRoomTaskDistribution, defaults={"size": 15})``, and gets an
    ``__init__`` with the parent's signature and those defaults.

    Attributes:
        size: Side of the square grid.
        horizon: Steps per episode (the env truncates itself there).
        start: The start cell (x, y).
        obs_nvec: ``MultiDiscrete`` sizes of one observation.
        split_protocol: ``"dicp"`` or ``"dpt"`` (see :func:`split_order`).
        split_seed: Seed of the split's shuffle.
        train_fraction: Fraction of the tasks in the train split.
    """

    size: int
    horizon: int
    start: tuple[int, int]
    obs_nvec: tuple[int, ...]
    split_protocol: str = "dicp"
    split_seed: int = 0
    train_fraction: float = 0.9
    _splits: tuple[np.ndarray, np.ndarray] | None = None
    action_space = spaces.Discrete(N_ACTIONS)

    @property
    def observation_space(self) -> spaces.Space:  # type: ignore[override]
        """The integer state, one ``MultiDiscrete`` component per entry of ``obs_nvec``."""
        return spaces.MultiDiscrete(np.asarray(self.obs_nvec, dtype=np.int64))

    def __init_subclass__(cls, defaults: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if defaults is None:
            return
        if "__init__" in cls.__dict__:
            raise TypeError(f"{cls.__qualname__}: give either defaults= or an __init__, not both")
        parent_init = cls.__init__  # the parent's, through the MRO
        signature = inspect.signature(parent_init)
        unknown = set(defaults) - set(signature.parameters)
        if unknown:
            raise TypeError(f"{cls.__qualname__}: defaults for unknown kwargs {sorted(unknown)}")
        signature = signature.replace(
            parameters=[
                p.replace(default=defaults[p.name]) if p.name in defaults else p
                for p in signature.parameters.values()
            ]
        )
        init = _init_from(signature, parent_init, cls.__qualname__)
        cls.__init__ = init  # type: ignore[method-assign]

    @abc.abstractmethod
    def all_tasks(self) -> np.ndarray:
        """Every task, ``(n_tasks, *task_shape)`` float64, in the order the split enumerates."""

    @abc.abstractmethod
    def start_obs(self, n: int) -> np.ndarray:
        """The first observation of an episode, ``(n, len(obs_nvec))`` int64."""

    @abc.abstractmethod
    def transition(
        self, tasks: np.ndarray, obs: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step of ``n`` worlds; no validation (the envs validate once, then call this).

        Args:
            tasks: ``(n, *task_shape)`` int64 task parameters.
            obs: ``(n, obs_dim)`` int64 current observations.
            actions: ``(n,)`` int64 actions in ``[0, 5)``.

        Returns:
            ``(next_obs (n, obs_dim) int64, reward (n,) float64, terminated (n,) bool)``.
        """

    def _check_split(self) -> None:
        n = len(self.all_tasks())
        n_train = split_order(n, self.split_protocol, self.split_seed, self.train_fraction)[1]
        if not 0 < n_train < n:
            raise ValueError(
                f"train_fraction: {self.train_fraction} of {n} tasks leaves an empty train or test "
                "split; choose a fraction that keeps at least one task on each side"
            )

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """``(train, test)`` task arrays, each ``(n, *task_shape)`` float64, in shuffled order."""
        if self._splits is None:
            tasks = self.all_tasks()
            order, n_train = split_order(
                len(tasks), self.split_protocol, self.split_seed, self.train_fraction
            )
            self._splits = (tasks[order[:n_train]], tasks[order[n_train:]])
        return self._splits[0].copy(), self._splits[1].copy()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` tasks drawn uniformly, with replacement, from the train split."""
        n = require_int("n", n, 0)
        train = self.split()[0]
        return train[rng.integers(len(train), size=n)]  # (n, *task_shape)

    def check_tasks(self, tasks: Any) -> np.ndarray:
        """As the base check, and every parameter must be an integer cell coordinate."""
        arr = super().check_tasks(tasks)
        if np.any(arr != np.round(arr)) or np.any((arr < 0) | (arr >= self.size)):
            raise ValueError(
                f"tasks: every task parameter must be an integer cell coordinate in "
                f"[0, {self.size})"
            )
        return arr

    def check_obs(self, obs: Any, n: int) -> np.ndarray:
        """``obs`` as an ``(n, obs_dim)`` int64 array, else a ``ValueError``."""
        arr = np.asarray(obs)
        if arr.shape != (n, len(self.obs_nvec)):
            raise ValueError(
                f"obs: expected shape ({n}, {len(self.obs_nvec)}) (one observation per task), "
                f"got {arr.shape}"
            )
        return arr.astype(np.int64)


# --------------------------------------------------------------------------- generic envs


class GridEnv(SingleTaskMixin, gymnasium.Env[np.ndarray, np.int64]):
    """One grid world: ``MultiDiscrete`` observations, 5 actions, truncation at ``horizon``.

    The task is set by ``reset(options={"task": task})`` and kept across later resets. Until a task
    is given the env draws one from the train split with ``self.np_random``; a *seeded* reset
    redraws it, so ``reset(seed=s)`` alone fixes the task. Step infos are empty.

    A family's env is ``class MyEnv(GridEnv, tasks=MyTaskDistribution)``: its ``__init__`` takes
    the task distribution's kwargs (and has its signature).

    Args:
        tasks: The family's task distribution (holds the validated kwargs and the dynamics).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init_subclass__(
        cls, tasks: type[GridTaskDistribution] | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if tasks is not None:

            def body(self: GridEnv, *args: Any, **kw: Any) -> None:
                GridEnv.__init__(self, tasks(*args, **kw))

            cls.__init__ = _init_from(  # type: ignore[method-assign]
                inspect.signature(tasks.__init__), body, cls.__qualname__
            )

    def __init__(self, tasks: GridTaskDistribution) -> None:
        self.task_distribution = tasks
        self.size = tasks.size
        self.horizon = tasks.horizon
        self.observation_space = spaces.MultiDiscrete(np.array(tasks.obs_nvec, dtype=np.int64))
        self.action_space = spaces.Discrete(N_ACTIONS)
        self._task_int = np.zeros((1, *tasks.task_shape), dtype=np.int64)  # (1, *task_shape)
        self._obs = tasks.start_obs(1)  # (1, obs_dim)
        self._t = 0
        self._ended = True

    def _set_task(self, tasks: np.ndarray) -> None:
        super()._set_task(tasks)
        self._task_int = tasks.astype(np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``options={"task": task}`` (shape ``task_shape``) switches the task."""
        super().reset(seed=seed)
        self._reset_task(seed, options)
        self._obs = self.task_distribution.start_obs(1)
        self._t = 0
        self._ended = False
        return self._obs[0].copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Take ``action`` (0: x+1, 1: x-1, 2: y+1, 3: y-1, 4: stay)."""
        if self._ended:
            raise RuntimeError(
                "step() called before reset() or after the episode ended (terminated, or "
                f"truncated at horizon={self.horizon}); call reset() first"
            )
        if not self.action_space.contains(action):
            raise ValueError(f"action: must be an integer in [0, {N_ACTIONS}), got {action!r}")
        obs, reward, terminated = self.task_distribution.transition(
            self._task_int, self._obs, np.array([int(action)])
        )
        self._obs = obs
        self._t += 1
        truncated = self._t >= self.horizon
        self._ended = bool(terminated[0]) or truncated
        return obs[0].copy(), float(reward[0]), bool(terminated[0]), truncated, {}


class GridVectorEnv(VectorTaskMixin, VectorEnv):
    """``num_envs`` grid worlds stepped together in numpy, with SAME_STEP autoreset.

    ``reset(options={"task": tasks})`` takes ``(num_envs, *task_shape)`` tasks, kept across resets
    and autoresets; without them the tasks are drawn from the train split with ``self.np_random``
    (redrawn on every seeded reset until tasks are given). An env whose episode ends (terminated, or
    truncated at ``horizon``) gets ``infos["final_obs"]``/``infos["final_info"]`` (with masks) as
    gymnasium's ``SyncVectorEnv`` builds them in SAME_STEP mode, and its returned obs is already
    the next episode's first obs. Step infos are otherwise empty.

    A family's vector env is ``class MyVectorEnv(GridVectorEnv, tasks=MyTaskDistribution)``: its
    ``__init__`` takes ``num_envs=1`` then the task distribution's kwargs.

    Args:
        num_envs: Number of parallel worlds (>= 1).
        tasks: The family's task distribution.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init_subclass__(
        cls, tasks: type[GridTaskDistribution] | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if tasks is not None:

            def body(self: GridVectorEnv, num_envs: int, *args: Any, **kw: Any) -> None:
                GridVectorEnv.__init__(self, num_envs, tasks(*args, **kw))

            signature = inspect.signature(tasks.__init__)
            self_param, *params = signature.parameters.values()
            num_envs = inspect.Parameter("num_envs", _KW, default=1, annotation="int")
            signature = signature.replace(parameters=[self_param, num_envs, *params])
            init = _init_from(signature, body, cls.__qualname__)
            cls.__init__ = init  # type: ignore[method-assign]

    def __init__(self, num_envs: int, tasks: GridTaskDistribution) -> None:
        self.num_envs = require_int("num_envs", num_envs, 1)
        self.task_distribution = tasks
        self.size = tasks.size
        self.horizon = tasks.horizon
        self.single_observation_space = spaces.MultiDiscrete(
            np.array(tasks.obs_nvec, dtype=np.int64)
        )
        self.single_action_space = spaces.Discrete(N_ACTIONS)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._tasks_int = np.zeros((self.num_envs, *tasks.task_shape), dtype=np.int64)
        self._obs = tasks.start_obs(self.num_envs)  # (N, obs_dim)
        self._t = np.zeros(self.num_envs, dtype=np.int64)  # (N,) steps into the episode

    def _set_tasks(self, tasks: np.ndarray) -> None:
        super()._set_tasks(tasks)
        self._tasks_int = tasks.astype(np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env; ``options={"task": tasks}`` sets ``(num_envs, *task_shape)`` tasks."""
        super().reset(seed=seed)
        self._reset_tasks(seed, options)
        self._obs = self.task_distribution.start_obs(self.num_envs)
        self._t[:] = 0
        return self._obs.copy(), {}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env; ``actions`` is ``(num_envs,)`` integers in ``[0, 5)``."""
        if self._tasks is None:
            raise RuntimeError("step() called before reset(); call reset() first")
        acts = check_vector_actions(actions, self.num_envs, N_ACTIONS)
        obs, rewards, terminated = self.task_distribution.transition(
            self._tasks_int, self._obs, acts.astype(np.int64)
        )
        self._t += 1
        truncated = self._t >= self.horizon  # (N,)
        done = terminated | truncated  # (N,)
        infos: dict[str, Any] = {}
        if done.any():  # SAME_STEP autoreset; the task is kept across it
            infos = same_step_final(obs, done, infos)
            obs[done] = self.task_distribution.start_obs(int(done.sum()))
            self._t[done] = 0
        self._obs = obs
        return obs.copy(), rewards, terminated, truncated, infos
