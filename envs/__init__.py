"""icrl's gymnasium environments and their task distributions (installed as ``icrl.envs``).

Importing this package registers every family with gymnasium (docs/architecture.md#environments-and-tasks):

>>> import gymnasium, numpy as np, icrl.envs
>>> env = gymnasium.make("icrl/GaussianBandit-v0", n_arms=5, horizon=500)
>>> venv = gymnasium.make_vec("icrl/GaussianBandit-v0", num_envs=64,
...                           vectorization_mode="vector_entry_point")
>>> dist = icrl.envs.task_distribution("icrl/GaussianBandit-v0", n_arms=5, horizon=500)
>>> tasks = dist.sample(64, np.random.default_rng(0))  # (64, 5) arm means
>>> obs, info = venv.reset(seed=0, options={"task": tasks})

Ids: ``icrl/GaussianBandit-v0``, ``icrl/BernoulliBandit-v0``, ``icrl/LinearBandit-v0`` (bandits);
``icrl/DarkRoom-v0``, ``icrl/DarkRoomLarge-v0``, ``icrl/DarkRoomHard-v0``,
``icrl/DarkRoomPermuted-v0`` (the Dark Room family) and ``icrl/KeyToDoor-v0`` (grid worlds, on
the shared machinery of ``grid.py``); ``icrl/PointRobot-v0`` and ``icrl/SparsePointRobot-v0``
(continuous 2-D navigation, ``point_robot.py``); ``icrl/MetaWorld-Reach-v3``,
``icrl/MetaWorld-Push-v3``, ``icrl/MetaWorld-PickPlace-v3`` (Meta-World ML1, ``metaworld.py``) and
``icrl/HalfCheetahVel-v0`` (``half_cheetah_vel.py``), MuJoCo simulators stepped in a loop
(``sims.py``; they need the ``mujoco`` extra, imported only when one is built).
"""

from .bandits import (
    BanditEnv,
    BanditVectorEnv,
    BernoulliBanditEnv,
    BernoulliBanditTaskDistribution,
    BernoulliBanditVectorEnv,
    GaussianBanditEnv,
    GaussianBanditTaskDistribution,
    GaussianBanditVectorEnv,
)
from .linear_bandit import LinearBanditEnv, LinearBanditTaskDistribution, LinearBanditVectorEnv
from .darkroom import (
    DarkRoomEnv,
    DarkRoomHardEnv,
    DarkRoomHardTaskDistribution,
    DarkRoomHardVectorEnv,
    DarkRoomLargeEnv,
    DarkRoomLargeTaskDistribution,
    DarkRoomLargeVectorEnv,
    DarkRoomPermutedEnv,
    DarkRoomPermutedTaskDistribution,
    DarkRoomPermutedVectorEnv,
    DarkRoomTaskDistribution,
    DarkRoomVectorEnv,
)
from .grid import GridTaskDistribution
from .half_cheetah_vel import HalfCheetahVelEnv, HalfCheetahVelTaskDistribution, HalfCheetahVelVectorEnv
from .keytodoor import KeyToDoorEnv, KeyToDoorTaskDistribution, KeyToDoorVectorEnv
from .metaworld import (
    PickPlaceEnv,
    PickPlaceTasks,
    PickPlaceVectorEnv,
    PushEnv,
    PushTasks,
    PushVectorEnv,
    ReachEnv,
    ReachTasks,
    ReachVectorEnv,
)
from .point_robot import (
    PointRobotEnv,
    PointRobotTaskDistribution,
    PointRobotVectorEnv,
    SparsePointRobotEnv,
    SparsePointRobotTaskDistribution,
    SparsePointRobotVectorEnv,
)
from .tasks import (
    BanditTaskDistribution,
    TaskDistribution,
    family_ids,
    register_family,
    task_distribution,
)

__all__ = [
    "BanditEnv",
    "BanditTaskDistribution",
    "BanditVectorEnv",
    "BernoulliBanditEnv",
    "BernoulliBanditTaskDistribution",
    "BernoulliBanditVectorEnv",
    "GaussianBanditEnv",
    "GaussianBanditTaskDistribution",
    "GaussianBanditVectorEnv",
    "LinearBanditEnv",
    "LinearBanditTaskDistribution",
    "LinearBanditVectorEnv",
    "TaskDistribution",
    "family_ids",
    "register_family",
    "task_distribution",
]
__all__ += [  # the grid families (grid.py, darkroom.py, keytodoor.py)
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
    "GridTaskDistribution",
    "KeyToDoorEnv",
    "KeyToDoorTaskDistribution",
    "KeyToDoorVectorEnv",
]
__all__ += [  # the point robot families (point_robot.py)
    "PointRobotEnv",
    "PointRobotTaskDistribution",
    "PointRobotVectorEnv",
    "SparsePointRobotEnv",
    "SparsePointRobotTaskDistribution",
    "SparsePointRobotVectorEnv",
]
__all__ += [  # the MuJoCo families (sims.py, metaworld.py, half_cheetah_vel.py)
    "HalfCheetahVelEnv",
    "HalfCheetahVelTaskDistribution",
    "HalfCheetahVelVectorEnv",
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

# One line per family: the id, its single env, its native vector env, its task distribution.
register_family(
    "icrl/GaussianBandit-v0",
    GaussianBanditEnv,
    GaussianBanditVectorEnv,
    GaussianBanditTaskDistribution,
)
register_family(
    "icrl/BernoulliBandit-v0",
    BernoulliBanditEnv,
    BernoulliBanditVectorEnv,
    BernoulliBanditTaskDistribution,
)
register_family(
    "icrl/LinearBandit-v0",
    LinearBanditEnv,
    LinearBanditVectorEnv,
    LinearBanditTaskDistribution,
)
register_family("icrl/DarkRoom-v0", DarkRoomEnv, DarkRoomVectorEnv, DarkRoomTaskDistribution)
register_family(
    "icrl/DarkRoomLarge-v0",
    DarkRoomLargeEnv,
    DarkRoomLargeVectorEnv,
    DarkRoomLargeTaskDistribution,
)
register_family(
    "icrl/DarkRoomHard-v0",
    DarkRoomHardEnv,
    DarkRoomHardVectorEnv,
    DarkRoomHardTaskDistribution,
)
register_family(
    "icrl/DarkRoomPermuted-v0",
    DarkRoomPermutedEnv,
    DarkRoomPermutedVectorEnv,
    DarkRoomPermutedTaskDistribution,
)
register_family("icrl/KeyToDoor-v0", KeyToDoorEnv, KeyToDoorVectorEnv, KeyToDoorTaskDistribution)
register_family(
    "icrl/PointRobot-v0", PointRobotEnv, PointRobotVectorEnv, PointRobotTaskDistribution
)
register_family(
    "icrl/SparsePointRobot-v0",
    SparsePointRobotEnv,
    SparsePointRobotVectorEnv,
    SparsePointRobotTaskDistribution,
)
register_family("icrl/MetaWorld-Reach-v3", ReachEnv, ReachVectorEnv, ReachTasks)
register_family("icrl/MetaWorld-Push-v3", PushEnv, PushVectorEnv, PushTasks)
register_family("icrl/MetaWorld-PickPlace-v3", PickPlaceEnv, PickPlaceVectorEnv, PickPlaceTasks)
register_family(
    "icrl/HalfCheetahVel-v0",
    HalfCheetahVelEnv,
    HalfCheetahVelVectorEnv,
    HalfCheetahVelTaskDistribution,
)
