"""Meta-World ML1 (Yu et al. 2019; the ``metaworld==3.1.1`` package) as icrl families
(docs/architecture.md#environments-and-tasks).

Ids (registered in ``icrl.envs``): ``icrl/MetaWorld-Reach-v3``, ``icrl/MetaWorld-Push-v3`` and
``icrl/MetaWorld-PickPlace-v3``, the ML1 benchmarks ``reach-v3``, ``push-v3`` and
``pick-place-v3``. A Sawyer arm in MuJoCo must move its hand to (Reach), push a puck to (Push),
or pick up a puck and place it at (PickPlace) a goal position the agent does not see.

- **Tasks.** A task is Meta-World's ``rand_vec``, shape ``(6,)``: the object's initial position
  and the goal position it samples at reset; a task fixes the whole episode start (with a task
  set, Meta-World's reset is deterministic). The split is the benchmark's own:
  ``metaworld.ML1(name, seed=split_seed)`` gives 50 train tasks (``split()[0]``) and 50 test tasks
  drawn with ``split_seed + 1`` (``split()[1]``). ``sample`` draws train tasks only.
- **Observations.** Meta-World's 39-d observation as float32: hand position (3), gripper opening
  (1), object position and quaternion padded to 14, the same 18 of the previous step, then the
  goal (3). The goal is hidden as in ML1 (``partially_observable``: Meta-World writes zeros there);
  the object's position is visible. The space is Meta-World's with its infinite object bounds
  replaced by ``+-OBJECT_BOUND`` (a finite space stays plain JSON in manifests; the workspace is
  about a metre wide, so the clip that keeps observations inside never acts in a stable
  simulation).
- **Actions.** ``Box(-1, 1, (4,), float32)``: a hand displacement (scaled by 1/100) and the
  gripper effort; Meta-World clamps out-of-box actions itself.
- **Episodes** last ``horizon`` steps (100 by default, T2MIR's ``max_episode_steps`` on Reach and
  Push; Meta-World's own ``max_path_length`` is 500). Rewards are Meta-World's v2 shaped
  rewards, in ``[0, 10]``.
- **Success.** Every step's info has ``"success"``, Meta-World's ``info["success"]`` (the hand for
  Reach, the puck for Push, within 5 cm of the goal; the puck within 7 cm for PickPlace); evaluation reports the success rate per
  episode (success at some step), which is Meta-World's own metric (its evaluation ends an episode
  at the first success).
- **Oracle.** The benchmark's scripted expert (``metaworld.policies``, e.g.
  ``SawyerReachV3Policy``). It reads the goal from the observation, so :meth:`oracle_action`
  writes the task's goal into the agent's observation before calling it: the oracle sees the
  task, the agent does not. ``max_return`` is the expert's return over one episode (the env is
  deterministic given the task), LHF's ``R_max``; it is not a proven maximum.

The goal of a task, and the expert's return on it, are read from a probe simulator reset on that
task (:func:`_goal` and :meth:`MetaWorldTaskDistribution.max_return`, cached), rather than
re-derived from ``rand_vec``: Push, for one, puts its goal at the puck's resting height, not at
``rand_vec[5]``.

Throughput is Meta-World's own: the vector env holds one simulator (about 20 MB, 0.11 s to
build) per env and steps them in a loop. Measured at one core of a 2-core machine busy with other
jobs, random actions, autoresets included: 2,000-2,400 steps/s on Reach, 1,300-1,400 on Push and
PickPlace (Meta-World alone there: 2,700 and 1,400).
"""

from __future__ import annotations

import functools
import pickle
import warnings
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from .sims import SimEnv, SimTaskDistribution, SimVectorEnv, require_extra
from .tasks import require_int

__all__ = [
    "OBJECT_BOUND",
    "MetaWorldEnv",
    "MetaWorldTaskDistribution",
    "MetaWorldVectorEnv",
    "PickPlaceEnv",
    "PickPlaceTasks",
    "PickPlaceVectorEnv",
    "PushEnv",
    "PushTasks",
    "PushVectorEnv",
    "ReachEnv",
    "ReachTasks",
    "ReachVectorEnv",
]

#: Bound of the object dimensions of the observation (metres; quaternions are within 1).
OBJECT_BOUND = 10.0
#: Meta-World's resets redraw until object and goal are this far apart in the plane; with a task
#: frozen they would redraw forever, so tasks closer than this are refused.
MIN_SEPARATION = 0.15
_OBS_DIM, _GOAL = 39, slice(36, 39)  # the last 3 dims are the goal


# --------------------------------------------------------------------------- the benchmark, cached


def _metaworld(env_id: str) -> Any:
    """The ``metaworld`` package with its experts, or the one-line error naming the ``mujoco`` extra."""
    require_extra("mujoco", env_id)
    package = require_extra("metaworld", env_id)
    require_extra("metaworld.policies", env_id)
    return package


@functools.cache
def _benchmark_tasks(benchmark: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ML1's ``(train, test)`` rand_vecs, ``(50, 6)`` float64 each (read-only; about 2 s once)."""
    import metaworld

    ml1 = metaworld.ML1(benchmark, seed=seed)
    # Task.data is the pickle ML1 itself just made in this process from its own task dicts (its only
    # encoding of a task); no file and nothing a user hands us is unpickled here
    train, test = (np.stack([pickle.loads(t.data)["rand_vec"] for t in ts]).astype(np.float64)
                   for ts in (ml1.train_tasks, ml1.test_tasks))
    train.setflags(write=False)
    test.setflags(write=False)
    return train, test


@functools.cache
def _sim_facts(benchmark: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(obs_low (39,), obs_high (39,), task_low (6,), task_high (6,))`` of one Meta-World env."""
    import metaworld.env_dict

    sim = metaworld.env_dict.ALL_V3_ENVIRONMENTS[benchmark]()  # partially observable by default
    box, reset_space = sim.sawyer_observation_space, sim._random_reset_space
    low = np.clip(box.low, -OBJECT_BOUND, OBJECT_BOUND).astype(np.float32)
    high = np.clip(box.high, -OBJECT_BOUND, OBJECT_BOUND).astype(np.float32)
    sim.close()
    return low, high, reset_space.low.copy(), reset_space.high.copy()


@functools.cache
def _probe(benchmark: str) -> Any:
    """One simulator per benchmark and process for goals and expert returns."""
    import metaworld.env_dict

    return metaworld.env_dict.ALL_V3_ENVIRONMENTS[benchmark]()


def _task_data(benchmark: str, task: np.ndarray) -> Any:
    """The ``metaworld.types.Task`` of a rand_vec, built exactly as ``metaworld.ML1`` builds its own."""
    import metaworld.env_dict
    from metaworld.types import Task

    kwargs = dict(metaworld.env_dict.ML1_ARGS_KWARGS[benchmark]["kwargs"])
    del kwargs["task_id"]
    kwargs.update(rand_vec=np.array(task, dtype=np.float64),
                  env_cls=metaworld.env_dict.ALL_V3_ENVIRONMENTS[benchmark], partially_observable=True)
    return Task(env_name=benchmark, data=pickle.dumps(kwargs))


_GOALS: dict[tuple[str, bytes], np.ndarray] = {}  # (benchmark, rand_vec bytes) -> (3,) goal


def _goal(benchmark: str, task: np.ndarray) -> np.ndarray:
    """The goal position Meta-World's reset derives from ``task``, ``(3,)`` float64 (cached)."""
    key = (benchmark, np.asarray(task, np.float64).tobytes())
    if key not in _GOALS:
        sim = _probe(benchmark)
        sim.set_task(_task_data(benchmark, task))
        sim.reset()
        _GOALS[key] = np.array(sim._target_pos, dtype=np.float64)
    return _GOALS[key]


# --------------------------------------------------------------------------- task distributions


class MetaWorldTaskDistribution(SimTaskDistribution):
    """Tasks of one ML1 benchmark: its 50 train and 50 test rand_vecs; takes the env's kwargs.

    Args:
        horizon: Steps per episode (>= 1).
        split_seed: ``metaworld.ML1``'s seed (the test tasks use ``split_seed + 1``, as ML1 does).
    """

    benchmark: ClassVar[str] = ""  # Meta-World's name, e.g. "reach-v3"
    expert: ClassVar[str] = ""  # the scripted policy's class in metaworld.policies
    task_shape = (6,)
    info_keys = ("success",)
    baselines = ("random", "oracle")

    def __init__(self, horizon: int = 100, split_seed: int = 0) -> None:
        self._mw = _metaworld(self.env_id or type(self).__name__)
        self.horizon = require_int("horizon", horizon, 1)
        self.split_seed = require_int("split_seed", split_seed, 0)
        self._train, self._test = _benchmark_tasks(self.benchmark, self.split_seed)
        low, high, self._task_low, self._task_high = _sim_facts(self.benchmark)
        self.observation_space = spaces.Box(low, high, (_OBS_DIM,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._expert = getattr(self._mw.policies, self.expert)()
        self._returns: dict[bytes, float] = {}  # rand_vec bytes -> the expert's episode return
        self._rollout_sim: Any = None  # built by the first max_return

    # ----------------------------------------------------------------------- tasks and splits

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """``(train, test)``: ML1's 50 train and 50 test tasks, ``(50, 6)`` float64 each."""
        return self._train.copy(), self._test.copy()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` train tasks drawn uniformly with replacement, ``(n, 6)``."""
        return self._train[rng.integers(len(self._train), size=require_int("n", n, 0))].copy()

    def check_tasks(self, tasks: Any) -> np.ndarray:
        """Tasks inside the benchmark's reset space, object and goal >= 0.15 apart in the plane."""
        arr = super().check_tasks(tasks)  # (n, 6)
        if np.any(arr < self._task_low) or np.any(arr > self._task_high):
            raise ValueError(f"tasks: every task must lie in {self.benchmark}'s reset space "
                             f"[{self._task_low.tolist()}, {self._task_high.tolist()}]")
        if np.any(np.linalg.norm(arr[:, :2] - arr[:, 3:5], axis=1) < MIN_SEPARATION):
            raise ValueError(f"tasks: the object (dims 0-1) and goal (dims 3-4) must be >= {MIN_SEPARATION} "
                             "apart, as Meta-World's reset requires")
        return arr

    # ----------------------------------------------------------------------- the simulator

    def make_sim(self) -> Any:
        sim = self._mw.env_dict.ALL_V3_ENVIRONMENTS[self.benchmark]()
        sim.max_path_length = self.horizon  # Meta-World refuses steps past it; we truncate there
        return sim

    def set_sim_task(self, sim: Any, task: np.ndarray) -> None:
        sim.set_task(_task_data(self.benchmark, task))

    def reset_sim(self, sim: Any, seed: int | None) -> np.ndarray:
        if seed is not None:  # nothing in these resets is random yet; seeded for benchmarks that are
            sim.seed(seed)
        return self._agent_obs(sim.reset()[0])

    def step_sim(self, sim: Any, task: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, float, dict[str, bool]]:
        obs, reward, _, _, info = sim.step(action)
        return self._agent_obs(obs), float(reward), {"success": bool(info["success"])}

    def _agent_obs(self, obs: np.ndarray) -> np.ndarray:
        """Meta-World's obs as the agent's: float32 in the space, goal dims 0 (already, as ML1)."""
        obs = np.clip(obs, self.observation_space.low, self.observation_space.high).astype(np.float32)
        obs[_GOAL] = 0.0  # the goal stays hidden whatever Meta-World's observability flag says
        return obs

    # ----------------------------------------------------------------------- oracle

    def oracle_action(self, tasks: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """The scripted expert's action with the task's goal written into the obs, ``(n, 4)`` float32.

        Args:
            tasks: ``(n, 6)`` tasks.
            obs: ``(n, 39)`` the agent's observations (goal dims hidden).
        """
        tasks = self.check_tasks(tasks)
        full = np.array(obs, dtype=np.float64)  # (n, 39)
        if full.shape != (len(tasks), _OBS_DIM) or not np.all(np.isfinite(full)):
            raise ValueError(f"obs: expected ({len(tasks)}, {_OBS_DIM}) finite observations, got {full.shape}")
        full[:, _GOAL] = [_goal(self.benchmark, t) for t in tasks]
        with warnings.catch_warnings():  # the experts warn whenever their gain saturates an action
            warnings.simplefilter("ignore", UserWarning)
            acts = np.stack([self._expert.get_action(o) for o in full])  # (n, 4)
        return np.clip(acts, -1.0, 1.0).astype(np.float32)

    def max_return(self, tasks: np.ndarray) -> np.ndarray:
        """The expert's return over one episode of each task, ``(n,)`` float64 (cached per task).

        Rolled out on a simulator of its own through the envs' own functions, so it is the return
        the ``oracle`` baseline gets (every episode of a task is the same).
        """
        tasks = self.check_tasks(tasks)
        out = np.empty(len(tasks))
        for i, task in enumerate(tasks):
            key = task.tobytes()
            if key not in self._returns:
                if self._rollout_sim is None:  # not the probe: the oracle resets that one on new goals
                    self._rollout_sim = self.make_sim()
                sim = self._rollout_sim
                self.set_sim_task(sim, task)
                obs, total = self.reset_sim(sim, None), 0.0
                for _ in range(self.horizon):
                    obs, reward, _ = self.step_sim(sim, task, self.oracle_action(task[None], obs[None])[0])
                    total += reward
                self._returns[key] = total
            out[i] = self._returns[key]
        return out


class ReachTasks(MetaWorldTaskDistribution):
    """ML1 ``reach-v3``: move the hand to the hidden goal."""

    env_id = "icrl/MetaWorld-Reach-v3"
    benchmark, expert = "reach-v3", "SawyerReachV3Policy"


class PushTasks(MetaWorldTaskDistribution):
    """ML1 ``push-v3``: push the puck to the hidden goal."""

    env_id = "icrl/MetaWorld-Push-v3"
    benchmark, expert = "push-v3", "SawyerPushV3Policy"


class PickPlaceTasks(MetaWorldTaskDistribution):
    """ML1 ``pick-place-v3``: pick the puck up and place it at the hidden goal."""

    env_id = "icrl/MetaWorld-PickPlace-v3"
    benchmark, expert = "pick-place-v3", "SawyerPickPlaceV3Policy"


# --------------------------------------------------------------------------- envs


class MetaWorldEnv(SimEnv):
    """One Meta-World simulator on one ML1 task (see :class:`~icrl.envs.sims.SimEnv`).

    Args:
        horizon: Steps per episode (>= 1).
        split_seed: ``metaworld.ML1``'s seed.
    """

    task_cls: ClassVar[type[MetaWorldTaskDistribution]]

    def __init__(self, horizon: int = 100, split_seed: int = 0) -> None:
        super().__init__(self.task_cls(horizon, split_seed))


class MetaWorldVectorEnv(SimVectorEnv):
    """``num_envs`` Meta-World simulators stepped in a loop (see :class:`~icrl.envs.sims.SimVectorEnv`)."""

    task_cls: ClassVar[type[MetaWorldTaskDistribution]]

    def __init__(self, num_envs: int = 1, horizon: int = 100, split_seed: int = 0) -> None:
        super().__init__(num_envs, self.task_cls(horizon, split_seed))


class ReachEnv(MetaWorldEnv):
    task_cls = ReachTasks


class ReachVectorEnv(MetaWorldVectorEnv):
    task_cls = ReachTasks


class PushEnv(MetaWorldEnv):
    task_cls = PushTasks


class PushVectorEnv(MetaWorldVectorEnv):
    task_cls = PushTasks


class PickPlaceEnv(MetaWorldEnv):
    task_cls = PickPlaceTasks


class PickPlaceVectorEnv(MetaWorldVectorEnv):
    task_cls = PickPlaceTasks
