"""Families around an external simulator (MuJoCo): one simulator per env, stepped in a loop.

The numpy families (``point_robot.py``, ``grid.py``) step a batch of worlds with one array
function. A MuJoCo world is an object with its own state, so here a :class:`SimTaskDistribution`
says how to build one simulator and how to set its task, reset it and step it, and the two generic
envs call those four functions: :class:`SimEnv` on one simulator, :class:`SimVectorEnv` on
``num_envs`` simulators in a Python loop, as gymnasium's ``SyncVectorEnv`` does. Both envs run
the same functions, so they are the same world (docs/architecture.md#environments-and-tasks).

Seeding follows ``SyncVectorEnv``: ``reset(seed=s)`` seeds simulator ``i`` of the vector env with
``s + i``, so env ``i`` follows exactly the trajectory of a single env reset with ``seed=s + i``
(then reset without a seed after each episode). An unseeded first reset seeds the simulators from
the env's own ``np_random``. Episodes never terminate; the envs truncate them at ``horizon``.

Families: Meta-World ML1 (``metaworld.py``) and Half-Cheetah-Vel (``half_cheetah_vel.py``). Both
need the ``mujoco`` extra; :func:`require_extra` turns its absence into a one-line error.
"""

from __future__ import annotations

import abc
import importlib
from types import ModuleType
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .tasks import (SingleTaskMixin, TaskDistribution, VectorTaskMixin, require_float_actions, require_int,
                    same_step_final)

__all__ = ["EXTRA_HINT", "SimEnv", "SimTaskDistribution", "SimVectorEnv", "require_extra"]

#: How to install what the simulator families need (setup.py's ``mujoco`` extra).
EXTRA_HINT = 'pip install -e ".[mujoco]"'


class MissingExtra(ModuleNotFoundError):
    """A family's optional dependency is not installed; the message names the extra (one line, as
    the command line prints it)."""


def require_extra(module: str, env_id: str) -> ModuleType:
    """Import ``module`` or raise a one-line :class:`MissingExtra` naming the ``mujoco`` extra.

    Called by every simulator family's task distribution (first on ``mujoco`` itself), so ``gymnasium.make``,
    ``gymnasium.make_vec`` and ``icrl.envs.task_distribution`` all fail the same way without it
    (registration itself imports nothing, so ``import icrl.envs`` always works).
    """
    try:
        return importlib.import_module(module)
    except (ImportError, gymnasium.error.DependencyNotInstalled) as e:  # gymnasium's for a missing mujoco
        missing = getattr(e, "name", None) or "mujoco"
        raise MissingExtra(f"{env_id} needs the mujoco extra ({missing} is not installed): {EXTRA_HINT}",
                                  name=missing) from e


class SimTaskDistribution(TaskDistribution):
    """The tasks of a simulator family and the four functions both of its envs run.

    Subclasses declare the space contract (``observation_space``, ``action_space``, ``horizon``,
    ``task_shape``) and ``info_keys``, the bool entries of every step's info (``("success",)``
    for Meta-World, none for Half-Cheetah-Vel).
    """

    info_keys: tuple[str, ...] = ()

    @abc.abstractmethod
    def make_sim(self) -> Any:
        """A new simulator (one MuJoCo model and data)."""

    @abc.abstractmethod
    def set_sim_task(self, sim: Any, task: np.ndarray) -> None:
        """Give ``sim`` the task ``task`` (``task_shape``, validated); the next reset uses it."""

    @abc.abstractmethod
    def reset_sim(self, sim: Any, seed: int | None) -> np.ndarray:
        """Start an episode of ``sim`` (seeding it first when ``seed`` is given); the first obs."""

    @abc.abstractmethod
    def step_sim(self, sim: Any, task: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, float, dict[str, bool]]:
        """One step: ``(obs, reward, info)``, ``info`` holding exactly ``info_keys``."""


class SimEnv(SingleTaskMixin, gymnasium.Env[np.ndarray, np.ndarray]):
    """One simulator playing one task of its family.

    ``reset(options={"task": task})`` sets the task, kept across later resets; until one is given
    the env draws one from the train split with ``self.np_random`` (again on every seeded reset).
    The reset info is empty; every step's info holds the family's ``info_keys``.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, tasks: SimTaskDistribution) -> None:
        self.task_distribution = tasks
        self.horizon = tasks.horizon  # icrl reads the episode length from env.unwrapped.horizon
        self.observation_space = tasks.observation_space
        self.action_space = tasks.action_space
        self._sim = tasks.make_sim()
        self._sim_seeded = False
        self._t = 0
        self._ended = True

    def _set_task(self, tasks: np.ndarray) -> None:
        super()._set_task(tasks)
        self.task_distribution.set_sim_task(self._sim, self._task)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode; ``options={"task": task}`` switches the task."""
        super().reset(seed=seed)
        self._reset_task(seed, options)
        if seed is None and not self._sim_seeded:  # the simulator's stream comes from ours
            seed = int(self.np_random.integers(2**32))
        self._sim_seeded = True
        obs = self.task_distribution.reset_sim(self._sim, seed)
        self._t, self._ended = 0, False
        return obs, {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, bool]]:
        """One simulator step; the env truncates the episode at ``horizon``."""
        if self._ended:
            raise RuntimeError(f"step() called before reset() or after the episode was truncated at "
                               f"horizon={self.horizon}; call reset() first")
        act = require_float_actions(action, self.action_space.shape, np.float32)  # the simulator clamps
        assert self._task is not None
        obs, reward, info = self.task_distribution.step_sim(self._sim, self._task, act)
        self._t += 1
        self._ended = self._t >= self.horizon
        return obs, reward, False, self._ended, info

    def close(self) -> None:
        self._sim.close()


class SimVectorEnv(VectorTaskMixin, VectorEnv):
    """``num_envs`` simulators stepped in a loop, with SAME_STEP autoreset.

    ``reset(options={"task": tasks})`` takes one task per env, kept across resets and
    autoresets. Every step's info holds the family's ``info_keys`` as ``(num_envs,)`` bool arrays
    (masks all True); envs whose episode ends also get ``final_obs`` and ``final_info`` as
    ``SyncVectorEnv`` builds them, and the obs returned for them is already the next episode's
    first (see the module docstring for seeding).
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int, tasks: SimTaskDistribution) -> None:
        self.num_envs = require_int("num_envs", num_envs, 1)
        self.task_distribution = tasks
        self.horizon = tasks.horizon
        self.single_observation_space = tasks.observation_space
        self.single_action_space = tasks.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._sims = [tasks.make_sim() for _ in range(self.num_envs)]
        self._sims_seeded = False
        self._t = np.zeros(self.num_envs, dtype=np.int64)  # (N,) steps into the episode

    def _set_tasks(self, tasks: np.ndarray) -> None:
        super()._set_tasks(tasks)
        for sim, task in zip(self._sims, tasks):
            self.task_distribution.set_sim_task(sim, task)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Reset every env; ``options={"task": tasks}`` sets one task per env."""
        super().reset(seed=seed)
        self._reset_tasks(seed, options)
        if seed is not None:
            seeds: list[int | None] = [seed + i for i in range(self.num_envs)]
        elif not self._sims_seeded:
            seeds = [int(s) for s in self.np_random.integers(2**32, size=self.num_envs)]
        else:
            seeds = [None] * self.num_envs  # each simulator continues its own stream
        self._sims_seeded = True
        dist = self.task_distribution
        obs = np.stack([dist.reset_sim(sim, s) for sim, s in zip(self._sims, seeds)])  # (N, *obs_shape)
        self._t[:] = 0
        return obs, {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every simulator once; ``actions`` is ``(num_envs, *action_shape)`` finite floats."""
        if self._tasks is None:
            raise RuntimeError("step() called before reset(); call reset() first")
        acts = require_float_actions(actions, (self.num_envs, *self.single_action_space.shape), np.float32)
        dist = self.task_distribution
        rows = [dist.step_sim(sim, task, a) for sim, task, a in zip(self._sims, self._tasks, acts)]
        obs = np.stack([r[0] for r in rows])  # (N, *obs_shape)
        rewards = np.array([r[1] for r in rows], dtype=np.float64)  # (N,)
        infos: dict[str, Any] = {}
        for key in dist.info_keys:
            infos[key] = np.array([r[2][key] for r in rows], dtype=bool)  # (N,)
            infos[f"_{key}"] = np.ones(self.num_envs, dtype=bool)
        self._t += 1
        truncated = self._t >= self.horizon  # (N,)
        if truncated.any():  # SAME_STEP autoreset; the task is kept across it
            infos.update(same_step_final(obs, truncated, infos))
            for i in np.flatnonzero(truncated):
                obs[i] = dist.reset_sim(self._sims[i], None)
            self._t[truncated] = 0
        return obs, rewards, np.zeros(self.num_envs, dtype=bool), truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        for sim in self._sims:
            sim.close()
