"""Task distributions and the registry of environment families.

A *family* is one gymnasium id together with its single env, its native vector env and its
:class:`TaskDistribution` (docs/architecture.md#environments-and-tasks). :func:`register_family`
records the three and registers the
id with gymnasium, so ``gymnasium.make(id)`` and
``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` both work, and
:func:`task_distribution` builds the task distribution from the same kwargs as the env.

The small ``require_*`` helpers validate constructor kwargs; their messages start with the kwarg
name and a colon (``"sigma: must be > 0, got -1.0"``) because the config layer prefixes them with
``"env.kwargs."``.
"""

from __future__ import annotations

import abc
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium
import numpy as np

__all__ = [
    "same_step_final",
    "BanditTaskDistribution",
    "TaskDistribution",
    "family_ids",
    "register_family",
    "require_choice",
    "require_int",
    "require_positive",
    "reset_tasks",
    "task_distribution",
]


# --------------------------------------------------------------------------- kwarg validation


def require_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as an ``int`` or raise a ``ValueError`` naming ``name``.

    Args:
        name: The kwarg name, used as the message prefix.
        value: The value to check; Python and numpy integers are accepted, ``bool`` is not.
        minimum: The smallest allowed value.

    Raises:
        ValueError: ``value`` is not an integer or is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value!r}")
    return int(value)


def require_positive(name: str, value: Any) -> float:
    """Return ``value`` as a finite ``float`` > 0 or raise a ``ValueError`` naming ``name``.

    Raises:
        ValueError: ``value`` is not a real number, not finite, or not > 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: must be a number > 0, got {value!r}")
    if not math.isfinite(float(value)) or value <= 0:
        raise ValueError(f"{name}: must be > 0, got {float(value)!r}")
    return float(value)


def require_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError`` naming ``name``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: must be one of {options}, got {value!r}")
    return str(value)


def require_float_actions(actions: Any, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
    """Finite float actions of exactly ``shape`` as ``dtype``, else a ``ValueError``; values outside
    the action box are passed on (each family's dynamics clip or clamp them).

    Args:
        actions: ``(d,)`` for a single env, ``(num_envs, d)`` for a vector env.
        shape: The expected shape.
        dtype: The float type the dynamics compute in.
    """
    name = "action" if len(shape) == 1 else "actions"
    acts = np.asarray(actions)
    if acts.shape != shape or not np.issubdtype(acts.dtype, np.floating):
        raise ValueError(f"{name}: expected {shape} floats, got {acts.dtype} {acts.shape}")
    if not np.all(np.isfinite(acts)):
        raise ValueError(f"{name}: every action must be finite (no nan or inf)")
    return acts.astype(dtype)


# --------------------------------------------------------------------------- task distributions


class TaskDistribution(abc.ABC):
    """The tasks of one environment family, sampled or enumerated, with their oracle.

    Subclasses take the same constructor kwargs as the family's env and declare what the world
    looks like: ``task_shape``, ``observation_space``, ``action_space`` and ``horizon`` (the space
    contract, docs/architecture.md). icrl reads these and nothing else to choose encoders, action
    heads, collectors and metrics. A family without an oracle leaves ``oracle_action`` and
    ``max_return`` out; what needs them (DPT labels, noise distillation, LHF) then says so.

    Attributes:
        env_id: The gymnasium id of the family (set again by :func:`task_distribution`, so a class
            registered under several ids reports the id it was built for).
        task_shape: Shape of one task's parameters; a batch of tasks is ``(n, *task_shape)``.
        observation_space: The single env's observation space: ``Discrete``, ``MultiDiscrete`` or
            a ``Box`` of any shape.
        action_space: The single env's action space: ``Discrete`` or a bounded ``Box``.
        horizon: Steps per episode (the env truncates itself there; it may terminate earlier).
        baselines: The baselines evaluation runs by default (names of icrl's source algorithms,
            plus ``oracle``), those that fit the family.
        reports_regret: The env reports the expected regret of every step in ``info["regret"]``
            (bandits): evaluation then reports cumulative regret per step, not return per episode.
        symmetries: Linear symmetries of a ``Box`` family, ``(obs_matrix (k, k), action_matrix
            (d, d))`` pairs: mapping every observation, next observation, action and oracle action
            of a history by them (rewards unchanged) gives a history of the family's dynamics on
            the task mapped alike, and the prior over tasks is invariant. Training can augment its
            data with them (``data.symmetries``); empty for none.
    """

    env_id: str = ""
    task_shape: tuple[int, ...] = ()
    observation_space: gymnasium.spaces.Space
    action_space: gymnasium.spaces.Space
    horizon: int
    baselines: tuple[str, ...] = ("random", "oracle")
    reports_regret: bool = False
    symmetries: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    @abc.abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` tasks i.i.d. from the family's prior.

        Args:
            n: Number of tasks (>= 0).
            rng: The only source of randomness.

        Returns:
            ``(n, *task_shape)`` float64 task parameters.
        """

    def split(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Fixed ``(train, test)`` task arrays of a finite family; ``None`` for infinite ones."""
        return None

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` tasks i.i.d. from the family's generating prior over *all* its tasks.

        For an infinite family this is :meth:`sample`, the default. A finite family with a
        train/test split overrides it: :meth:`sample` draws train tasks only, while the prior is
        the distribution the enumerated tasks were generated from (what a Bayesian source such as
        posterior sampling must assume, since it does not know which tasks are held out).

        Args:
            n: Number of tasks (>= 0).
            rng: The only source of randomness.

        Returns:
            ``(n, *task_shape)`` float64 task parameters.
        """
        return self.sample(n, rng)

    def expected_reward(
        self, tasks: np.ndarray, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray
    ) -> np.ndarray:
        """Expected reward of one transition under each task (the family's reward model).

        Model-based sources (posterior sampling) score every candidate task by how well it
        predicts the observed rewards. Row ``i`` is the transition ``(obs[i], actions[i],
        next_obs[i])`` under ``tasks[i]``.

        Args:
            tasks: ``(n, *task_shape)`` task parameters.
            obs: ``(n, *obs_shape)`` observations the actions were taken in.
            actions: ``(n,)`` int actions (``Discrete``) or ``(n, *action_shape)`` floats, as
                the env executed them.
            next_obs: ``(n, *obs_shape)`` observations after the step (the episode's final
                observation where it ended, not the reset one).

        Returns:
            ``(n,)`` float64 expected rewards.
        """
        raise NotImplementedError(f"{self.env_id or type(self).__name__} has no reward model: give its "
                                  f"TaskDistribution an expected_reward (docs/extending.md)")

    def oracle_action(self, tasks: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """Optimal action of each task in the given observation (DPT labels, oracle baseline).

        Args:
            tasks: ``(n, *task_shape)`` task parameters.
            obs: ``(n, *obs_shape)`` current observations, one per task.

        Returns:
            ``(n,)`` int64 actions (``Discrete``), or ``(n, *action_shape)`` float actions inside
            the ``Box``.
        """
        raise NotImplementedError(f"{self.env_id or type(self).__name__} has no oracle: give its "
                                  f"TaskDistribution an oracle_action (docs/extending.md)")

    def max_return(self, tasks: np.ndarray) -> np.ndarray:
        """Expected return of the oracle over one episode of each task (LHF's R_max).

        Args:
            tasks: ``(n, *task_shape)`` task parameters.

        Returns:
            ``(n,)`` float64 returns.
        """
        raise NotImplementedError(f"{self.env_id or type(self).__name__} does not know its oracle "
                                  f"return: give its TaskDistribution a max_return (docs/extending.md)")

    @property
    def has_oracle(self) -> bool:
        """Whether the family overrides :meth:`oracle_action`."""
        return type(self).oracle_action is not TaskDistribution.oracle_action

    @property
    def has_max_return(self) -> bool:
        """Whether the family overrides :meth:`max_return`."""
        return type(self).max_return is not TaskDistribution.max_return

    @property
    def has_reward_model(self) -> bool:
        """Whether the family overrides :meth:`expected_reward`."""
        return type(self).expected_reward is not TaskDistribution.expected_reward

    def check_tasks(self, tasks: Any) -> np.ndarray:
        """Validate a batch of tasks and return it as a float64 array.

        Subclasses extend this with family-specific range checks.

        Args:
            tasks: Array-like of shape ``(n, *task_shape)``.

        Raises:
            ValueError: Wrong shape or non-finite values.
        """
        arr = np.asarray(tasks, dtype=np.float64)
        if arr.ndim != 1 + len(self.task_shape) or arr.shape[1:] != self.task_shape:
            raise ValueError(
                f"tasks: expected shape (n, {', '.join(map(str, self.task_shape))}) for "
                f"{self.env_id or type(self).__name__}, got {arr.shape}; pass one row per task"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError("tasks: all task parameters must be finite")
        return arr


class BanditTaskDistribution(TaskDistribution):
    """A distribution over K-armed bandit tasks; a task fixes the expected reward of every arm.

    The observation of a bandit is constant, so the oracle pulls ``argmax_a mu_a`` and its return
    over one episode (the whole horizon) is ``horizon * max_a mu_a``.

    Attributes:
        n_arms: Number of arms K.
        horizon: Pulls per episode.
    """

    n_arms: int
    horizon: int
    baselines = ("random", "emp", "ucb", "ucb1", "thompson", "oracle")
    reports_regret = True

    @property
    def observation_space(self) -> gymnasium.spaces.Space:  # type: ignore[override]
        """A bandit's observation is the constant 0."""
        return gymnasium.spaces.Discrete(1)

    @property
    def action_space(self) -> gymnasium.spaces.Space:  # type: ignore[override]
        """One arm per pull."""
        return gymnasium.spaces.Discrete(self.n_arms)

    @abc.abstractmethod
    def means(self, tasks: np.ndarray) -> np.ndarray:
        """Expected reward of every arm of every task.

        Args:
            tasks: ``(n, *task_shape)`` task parameters.

        Returns:
            ``(n, n_arms)`` float64 arm means.
        """

    def oracle_action(self, tasks: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """``argmax_a mu_a`` per task; ``obs`` (constant for bandits) only fixes the batch size."""
        mu = self.means(tasks)  # (n, K)
        obs_arr = np.asarray(obs)
        if obs_arr.ndim >= 1 and obs_arr.shape[0] != mu.shape[0]:
            raise ValueError(
                f"obs: expected one observation per task ({mu.shape[0]}), got {obs_arr.shape[0]}"
            )
        return np.argmax(mu, axis=1).astype(np.int64)  # (n,)

    def max_return(self, tasks: np.ndarray) -> np.ndarray:
        """``horizon * max_a mu_a`` per task."""
        return self.horizon * self.means(tasks).max(axis=1)  # (n,)

    def expected_reward(
        self, tasks: np.ndarray, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray
    ) -> np.ndarray:
        """``mu_a`` of the pulled arm ``a = actions[i]`` under each task; the observations are
        constant and unused.

        Args:
            tasks: ``(n, *task_shape)`` task parameters.
            obs: ``(n,)`` observations (unused).
            actions: ``(n,)`` integer arms in ``[0, n_arms)``.
            next_obs: ``(n,)`` observations (unused).

        Returns:
            ``(n,)`` float64 arm means.
        """
        mu = self.means(tasks)  # (n, K)
        arms = np.asarray(actions)
        if arms.shape != (len(mu),) or not np.issubdtype(arms.dtype, np.integer):
            raise ValueError(f"actions: expected ({len(mu)},) integer arms, one per task, got "
                             f"{arms.dtype} {arms.shape}")
        if arms.size and (arms.min() < 0 or arms.max() >= self.n_arms):
            raise ValueError(f"actions: every arm must be in [0, {self.n_arms})")
        return np.take_along_axis(mu, arms[:, None].astype(np.int64), axis=1)[:, 0]  # (n,)


# --------------------------------------------------------------------------- env resets


def reset_tasks(
    env: Any,
    seed: int | None,
    options: dict[str, Any] | None,
    current: np.ndarray | None,
    given: bool,
    num_envs: int | None,
    set_tasks: Callable[[np.ndarray], None],
) -> bool:
    """The task handling shared by every env's ``reset``: sets new tasks through ``set_tasks``.

    ``options["task"]`` is validated (one task of shape ``task_shape`` for a single env,
    ``num_envs is None``; one task per env for a vector env) and becomes the tasks, kept across
    later resets. Until tasks are given, tasks are drawn from the prior with ``env.np_random`` on
    the first reset and again on every seeded one.

    Args:
        env: The env being reset (after ``super().reset(seed=seed)``); its ``task_distribution``
            and ``np_random`` are used.
        seed: The reset's seed.
        options: The reset's options.
        current: The env's current task(s), ``None`` before the first reset.
        given: Whether the current tasks were given through ``options``.
        num_envs: The vector env's ``num_envs``; ``None`` for a single env.
        set_tasks: Called with the validated ``(n, *task_shape)`` new tasks (``n`` is 1 for a
            single env); not called when the current tasks are kept.

    Returns:
        The new ``given`` flag.
    """
    dist = env.task_distribution
    task = None if options is None else options.get("task")
    if task is not None:
        if num_envs is None:
            shape = np.shape(task)
            if shape != dist.task_shape:
                raise ValueError(
                    f"task: expected shape {dist.task_shape}, got {shape}; "
                    "the single env takes one task (the vector env takes a batch)"
                )
            set_tasks(dist.check_tasks(np.asarray(task)[None]))
            return True
        arr = dist.check_tasks(task)
        if arr.shape[0] != num_envs:
            raise ValueError(f"tasks: expected one task per env ({num_envs}), got {arr.shape[0]}")
        set_tasks(arr)
        return True
    if current is None or (seed is not None and not given):
        set_tasks(dist.sample(1 if num_envs is None else num_envs, env.np_random))
    return given


class SingleTaskMixin:
    """The current task of a single env: the ``task`` property and the reset step that switches it
    (:func:`reset_tasks`). An env overrides ``_set_task`` to derive what it needs from the task."""

    _task: np.ndarray | None = None  # (*task_shape,), None before the first reset
    _task_given = False  # set through reset(options={"task": ...}), kept across resets

    @property
    def task(self) -> np.ndarray | None:
        """A copy of the current task's parameters, ``None`` before the first reset."""
        return None if self._task is None else self._task.copy()

    def _set_task(self, tasks: np.ndarray) -> None:
        self._task = tasks[0]  # tasks: (1, *task_shape), validated

    def _reset_task(self, seed: int | None, options: dict[str, Any] | None) -> None:
        """The task part of ``reset`` (after ``super().reset(seed=seed)``)."""
        self._task_given = reset_tasks(self, seed, options, self._task, self._task_given, None, self._set_task)


class VectorTaskMixin:
    """The current tasks of a vector env, one per sub-env: as :class:`SingleTaskMixin`."""

    num_envs: int
    _tasks: np.ndarray | None = None  # (num_envs, *task_shape), None before the first reset
    _tasks_given = False

    @property
    def tasks(self) -> np.ndarray | None:
        """A copy of the current ``(num_envs, *task_shape)`` tasks, ``None`` before reset."""
        return None if self._tasks is None else self._tasks.copy()

    def _set_tasks(self, tasks: np.ndarray) -> None:
        self._tasks = tasks  # (N, *task_shape), validated

    def _reset_tasks(self, seed: int | None, options: dict[str, Any] | None) -> None:
        """The task part of ``reset`` (after ``super().reset(seed=seed)``)."""
        self._tasks_given = reset_tasks(self, seed, options, self._tasks, self._tasks_given, self.num_envs,
                                        self._set_tasks)


# --------------------------------------------------------------------------- family registry


@dataclass(frozen=True)
class _Family:
    env_cls: type
    vector_cls: type
    task_cls: type


_FAMILIES: dict[str, _Family] = {}


def _entry_point(cls: type) -> str | type:
    """A ``"module:Class"`` string when the class is importable by name, else the class itself.

    Strings keep the gymnasium spec serialisable and let ``AsyncVectorEnv`` workers import the
    class; classes defined in ``__main__`` or inside a function cannot be found that way.
    """
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        return cls
    return f"{cls.__module__}:{cls.__qualname__}"


def _same_class(a: type, b: type) -> bool:
    # Compare by qualified name, not identity: re-importing or reloading a module makes new
    # class objects for the same definitions, and that must stay a harmless re-registration.
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register_family(env_id: str, env_cls: type, vector_cls: type, task_cls: type) -> None:
    """Register an environment family with icrl and with gymnasium.

    The id gets ``entry_point=env_cls`` and ``vector_entry_point=vector_cls``. No
    ``max_episode_steps`` is registered: the envs truncate their own episodes at ``horizon``, so
    ``env.unwrapped`` behaves like the wrapped env. Registering the same classes again (a
    re-import) does nothing.

    Args:
        env_id: A gymnasium id such as ``"icrl/GaussianBandit-v0"``.
        env_cls: The single ``gymnasium.Env`` class.
        vector_cls: The native ``gymnasium.vector.VectorEnv`` class (takes ``num_envs`` plus the
            env kwargs).
        task_cls: The :class:`TaskDistribution` subclass (takes the env kwargs).

    Raises:
        ValueError: ``env_id`` is already registered to different classes, or ``task_cls`` is not
            a :class:`TaskDistribution`.
    """
    if not (isinstance(task_cls, type) and issubclass(task_cls, TaskDistribution)):
        raise ValueError(f"task_cls: must be a TaskDistribution subclass, got {task_cls!r}")
    family = _Family(env_cls, vector_cls, task_cls)
    old = _FAMILIES.get(env_id)
    if old is not None and not all(
        _same_class(a, b)
        for a, b in zip(
            (old.env_cls, old.vector_cls, old.task_cls), (env_cls, vector_cls, task_cls)
        )
    ):
        raise ValueError(
            f"env_id: {env_id!r} is already registered to {old.env_cls.__qualname__}; "
            "register the new family under a new id (e.g. bump the -vN version)"
        )
    _FAMILIES[env_id] = family

    entry, vector_entry = _entry_point(env_cls), _entry_point(vector_cls)
    spec = gymnasium.registry.get(env_id)
    if spec is not None and spec.entry_point == entry and spec.vector_entry_point == vector_entry:
        return  # already registered identically; gymnasium would warn about overriding
    gymnasium.register(id=env_id, entry_point=entry, vector_entry_point=vector_entry)


def family_ids() -> tuple[str, ...]:
    """The ids of all registered families, in registration order."""
    return tuple(_FAMILIES)


def task_distribution(env_id: str, **env_kwargs: Any) -> TaskDistribution:
    """Build the task distribution of a registered family from the env's kwargs.

    Args:
        env_id: A registered id, e.g. ``"icrl/BernoulliBandit-v0"``.
        **env_kwargs: The same kwargs the env takes (``n_arms=5, prior="beta"``, ...).

    Raises:
        ValueError: Unknown ``env_id``, or invalid kwargs (message starts with the kwarg name).
    """
    family = _FAMILIES.get(env_id)
    if family is None:
        known = ", ".join(repr(i) for i in _FAMILIES) or "none"
        raise ValueError(
            f"env_id: unknown family {env_id!r}; registered: {known} "
            "(import the module that registers it, e.g. icrl.envs)"
        )
    params = inspect.signature(family.task_cls).parameters
    for name in env_kwargs:
        if name not in params:
            valid = ", ".join(params) or "none"
            raise ValueError(f"{name}: not a kwarg of {env_id}; valid kwargs: {valid}")
    dist = family.task_cls(**env_kwargs)
    dist.env_id = env_id
    return dist


def same_step_final(obs: np.ndarray, done: np.ndarray, infos: dict[str, Any]) -> dict[str, Any]:
    """The SAME_STEP autoreset entries (gymnasium 1.x) of the envs whose episode ended this step.

    Under SAME_STEP the obs a vector env returns for a finished env is already the next episode's
    first; the finished episode's last obs goes to ``final_obs`` (an object array of per-env obs,
    as ``SyncVectorEnv`` has it) and its info to ``final_info``: every per-env entry of ``infos``
    (keys without a leading ``_``), kept where ``done`` and zero elsewhere, with its mask. Call it
    with the obs *before* the finished envs are reset.

    Args:
        obs: (N, ...) the step's observations.
        done: (N,) bool, terminated or truncated.
        infos: the step's per-env info arrays (``{"success": ..., "_success": ...}``).
    """
    final_obs = np.full(len(done), None, dtype=object)
    for i in np.flatnonzero(done):
        final_obs[i] = obs[i].copy()
    final_info: dict[str, Any] = {}
    for key, value in infos.items():
        if not key.startswith("_"):
            final_info[key] = np.where(done, value, np.zeros_like(value))
            final_info[f"_{key}"] = done.copy()
    return {"final_obs": final_obs, "_final_obs": done.copy(), "final_info": final_info, "_final_info": done.copy()}


def check_vector_actions(actions: Any, num_envs: int, n_actions: int) -> np.ndarray:
    """A vector env's ``(num_envs,)`` integer actions in ``[0, n_actions)``, or a ValueError."""
    acts = np.asarray(actions)
    if acts.shape != (num_envs,) or not np.issubdtype(acts.dtype, np.integer):
        raise ValueError(f"actions: expected ({num_envs},) integers, got {acts.dtype} {acts.shape}")
    if acts.min() < 0 or acts.max() >= n_actions:
        raise ValueError(f"actions: every action must be in [0, {n_actions})")
    return acts
