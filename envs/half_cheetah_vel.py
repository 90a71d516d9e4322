"""Half-Cheetah-Vel (Finn et al. 2017, MAML; PEARL; T2MIR) on gymnasium's MuJoCo HalfCheetah-v5.

``icrl/HalfCheetahVel-v0``: a planar cheetah must run at a hidden target velocity.

- **Reward**, the form of MAML's ``half_cheetah_env_rand`` as PEARL (``rlkit/envs/
  half_cheetah_vel.py`` of katerakelly/oyster) and T2MIR (``T2MIR-AD/environments/tp_envs/
  half_cheetah_vel.py`` of NJU-RL/T2MIR) have it::

      forward_vel = (qpos[0] after - qpos[0] before) / dt      # dt = 5 * 0.01 s
      reward      = -|forward_vel - v_goal| - 0.5 * 1e-1 * sum(action ** 2)

  HalfCheetah-v5 computes ``forward_vel`` exactly so (``info["x_velocity"]``); the control cost
  is computed here in float64 on the action as given (MuJoCo clamps the control to [-1, 1], the
  cost does not, as in PEARL). v5's own reward (``forward_vel - 0.1 * sum(action ** 2)``) is
  not used.
- **Tasks.** A task is the target velocity ``(v_goal,)``. ``n_tasks`` targets are drawn once from
  ``U[0, 3]`` (PEARL's and T2MIR's range) with ``np.random.default_rng(split_seed)``: the first
  ``round(n_tasks * train_fraction)`` train, the rest held out (40 / 10 by default).
- **Observations** are HalfCheetah-v5's 17: ``qpos[1:]`` (8) and ``qvel`` (9), as float32.
  (PEARL's cheetah also appends the torso's centre of mass, 20 dims.) Gymnasium declares them
  unbounded; here they lie in ``+-OBS_BOUND`` (a finite space stays plain JSON in manifests) and
  are clipped there, which a stable simulation never reaches.
- **Actions**: ``Box(-1, 1, (6,), float32)`` joint torques. **Episodes**: ``horizon`` steps (200,
  as T2MIR), never terminated. Starts: v5's reset noise (``qpos + U(-0.1, 0.1)``, ``qvel + 0.1 *
  N(0, 1)``), from the simulator's seeded generator (seeding: :mod:`icrl.envs.sims`).
- **No oracle** (``has_oracle`` is False: no closed-form optimal torque exists), so no DPT labels,
  noise distillation or oracle baseline; the source is a learner (e.g. PPO).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from .grid import require_fraction
from .sims import SimEnv, SimTaskDistribution, SimVectorEnv, require_extra
from .tasks import require_int

__all__ = ["OBS_BOUND", "VEL_RANGE", "HalfCheetahVelEnv", "HalfCheetahVelTaskDistribution",
           "HalfCheetahVelVectorEnv"]

#: Target velocities are drawn from ``U(*VEL_RANGE)``.
VEL_RANGE = (0.0, 3.0)
#: Bound of every observation dimension (angles in rad, velocities in m/s or rad/s).
OBS_BOUND = 1000.0
#: PEARL's control cost weight, 0.5 * 1e-1.
CTRL_COST_WEIGHT = 0.05


class HalfCheetahVelTaskDistribution(SimTaskDistribution):
    """Target velocities of ``icrl/HalfCheetahVel-v0``; takes the env's kwargs.

    Args:
        horizon: Steps per episode (>= 1).
        n_tasks: Number of enumerated targets (>= 2).
        split_seed: Seed of ``np.random.default_rng`` that draws them.
        train_fraction: Fraction of them in the train split (the first drawn).
    """

    env_id = "icrl/HalfCheetahVel-v0"
    task_shape = (1,)
    baselines = ("random",)  # no oracle

    def __init__(self, horizon: int = 200, n_tasks: int = 50, split_seed: int = 0,
                 train_fraction: float = 0.8) -> None:
        require_extra("mujoco", self.env_id)
        self._mujoco = require_extra("gymnasium.envs.mujoco.half_cheetah_v5", self.env_id)
        self.horizon = require_int("horizon", horizon, 1)
        self.n_tasks = require_int("n_tasks", n_tasks, 2)
        self.split_seed = require_int("split_seed", split_seed, 0)
        self.train_fraction = require_fraction("train_fraction", train_fraction)
        self.n_train = int(round(self.n_tasks * self.train_fraction))
        if not 0 < self.n_train < self.n_tasks:
            raise ValueError(f"train_fraction: {self.train_fraction} of {self.n_tasks} tasks leaves an empty "
                             "train or test split; choose a fraction that keeps at least one task on each side")
        self._tasks = self.sample_prior(self.n_tasks, np.random.default_rng(self.split_seed))  # (n_tasks, 1)
        self._tasks.setflags(write=False)
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (17,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (6,), np.float32)

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """``(train, test)`` targets, ``(n_train, 1)`` and ``(n_tasks - n_train, 1)`` float64."""
        return self._tasks[: self.n_train].copy(), self._tasks[self.n_train :].copy()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` train targets drawn uniformly with replacement, ``(n, 1)``."""
        return self._tasks[rng.integers(self.n_train, size=require_int("n", n, 0))].copy()

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` fresh targets from ``U[0, 3]``, ``(n, 1)`` float64."""
        return rng.uniform(*VEL_RANGE, size=(require_int("n", n, 0), 1))

    def make_sim(self) -> Any:
        return self._mujoco.HalfCheetahEnv()

    def set_sim_task(self, sim: Any, task: np.ndarray) -> None:
        pass  # the target enters only the reward, which step_sim computes from the task

    def reset_sim(self, sim: Any, seed: int | None) -> np.ndarray:
        return self._obs(sim.reset(seed=seed)[0])

    def step_sim(self, sim: Any, task: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, float, dict[str, bool]]:
        obs, _, _, _, info = sim.step(action)
        ctrl_cost = CTRL_COST_WEIGHT * float(np.sum(np.square(action, dtype=np.float64)))
        reward = -abs(float(info["x_velocity"]) - float(task[0])) - ctrl_cost
        return self._obs(obs), reward, {}

    @staticmethod
    def _obs(obs: np.ndarray) -> np.ndarray:
        return np.clip(obs, -OBS_BOUND, OBS_BOUND).astype(np.float32)


class HalfCheetahVelEnv(SimEnv):
    """One cheetah on one target velocity (see :class:`~icrl.envs.sims.SimEnv`); kwargs as
    :class:`HalfCheetahVelTaskDistribution`."""

    def __init__(self, horizon: int = 200, n_tasks: int = 50, split_seed: int = 0,
                 train_fraction: float = 0.8) -> None:
        super().__init__(HalfCheetahVelTaskDistribution(horizon, n_tasks, split_seed, train_fraction))


class HalfCheetahVelVectorEnv(SimVectorEnv):
    """``num_envs`` cheetahs stepped in a loop (see :class:`~icrl.envs.sims.SimVectorEnv`)."""

    def __init__(self, num_envs: int = 1, horizon: int = 200, n_tasks: int = 50, split_seed: int = 0,
                 train_fraction: float = 0.8) -> None:
        super().__init__(num_envs, HalfCheetahVelTaskDistribution(horizon, n_tasks, split_seed, train_fraction))
