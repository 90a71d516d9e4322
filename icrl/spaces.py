"""The space contract: what an env family looks like, declared once (docs/architecture.md).

Every :class:`~icrl.envs.TaskDistribution` declares ``observation_space``, ``action_space`` and
``horizon``; :class:`EnvSpec` reads them, checks that icrl supports them, and travels with the data:
it is written into every dataset manifest and every checkpoint and read back from there, so a model
knows the world it was trained on. Collectors, samplers, models and the evaluator ask the spec;
nothing probes attributes of a task distribution.

Supported: observations ``Discrete``, ``MultiDiscrete`` (any shape) and ``Box`` (any shape, float,
flattened); actions ``Discrete`` and ``Box`` with finite bounds. Anything else is a one-line
:class:`SpaceError` naming the space and what is supported. Images (a ``Box`` of uint8 pixels)
are representable but no encoder for them exists yet.

The models' side of the contract (encoders and action heads chosen from the spec) is
:mod:`icrl.models.encoders`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from icrl.typed import MAX_INT, brief, integer

__all__ = ["EnvSpec", "SpaceError", "space_to_dict", "space_from_dict", "check_observation_space",
           "check_action_space"]

OBS_SUPPORTED = "Discrete, MultiDiscrete or Box observations"
ACTION_SUPPORTED = "Discrete or bounded Box actions"


class SpaceError(ValueError):
    """A space icrl does not support, or data that does not fit its space; the message is one line."""


def _describe(space: Any) -> str:
    text = " ".join(str(space).split())
    return text if len(text) <= 80 else text[:77] + "..."


def check_observation_space(space: Any, owner: str = "") -> spaces.Space:
    """``space`` if icrl can encode it, else a :class:`SpaceError` naming it and what is supported."""
    who = f"{owner}: " if owner else ""
    if isinstance(space, spaces.Discrete):
        return space
    if isinstance(space, spaces.MultiDiscrete):
        if np.any(np.asarray(space.nvec) < 1):
            raise SpaceError(f"{who}observation space {_describe(space)} has an empty component")
        return space
    if isinstance(space, spaces.Box):
        if not np.issubdtype(space.dtype, np.floating) and not np.issubdtype(space.dtype, np.integer):
            raise SpaceError(f"{who}observation space {_describe(space)} has dtype {space.dtype}; "
                             f"a Box must hold numbers")
        return space
    raise SpaceError(f"{who}observation space {_describe(space)} is not supported; icrl takes {OBS_SUPPORTED}")


def check_action_space(space: Any, owner: str = "") -> spaces.Space:
    """``space`` if icrl can act in it, else a :class:`SpaceError` naming it and what is supported."""
    who = f"{owner}: " if owner else ""
    if isinstance(space, spaces.Discrete):
        if int(space.start) != 0:
            raise SpaceError(f"{who}action space {_describe(space)} starts at {space.start}; "
                             f"icrl needs Discrete actions numbered from 0")
        return space
    if isinstance(space, spaces.Box):
        if not np.issubdtype(space.dtype, np.floating):
            raise SpaceError(f"{who}action space {_describe(space)} has dtype {space.dtype}; a Box of "
                             f"actions must be float")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise SpaceError(f"{who}action space {_describe(space)} is unbounded; icrl takes {ACTION_SUPPORTED} "
                             f"(give the Box finite low and high)")
        if np.any(space.high <= space.low):
            raise SpaceError(f"{who}action space {_describe(space)} has high <= low in some dimension")
        return space
    raise SpaceError(f"{who}action space {_describe(space)} is not supported; icrl takes {ACTION_SUPPORTED}")


def space_to_dict(space: spaces.Space) -> dict[str, Any]:
    """Plain-JSON form of a supported space (for manifests and checkpoints)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec).tolist(),
                "start": np.asarray(space.start).tolist()}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": np.dtype(space.dtype).name,
                "low": space.low.tolist(), "high": space.high.tolist()}
    raise SpaceError(f"space {_describe(space)} is not supported; icrl takes {OBS_SUPPORTED}")


def space_from_dict(d: Any) -> spaces.Space:
    """Inverse of :func:`space_to_dict`; a :class:`SpaceError` for anything else (stored spaces are
    user input: sizes must be true integers, bounds numbers)."""
    problem = _space_dict_problem(d)
    if problem:
        raise SpaceError(problem)
    kind = d["type"]
    try:
        if kind == "Discrete":
            return spaces.Discrete(int(d["n"]), start=int(d.get("start", 0)))
        if kind == "MultiDiscrete":
            nvec = np.asarray(d["nvec"], dtype=np.int64)
            return spaces.MultiDiscrete(nvec, start=np.asarray(d.get("start", np.zeros_like(nvec)), dtype=np.int64))
        if kind == "Box":
            shape = tuple(int(n) for n in d["shape"])
            dtype = np.dtype(d.get("dtype", "float32"))
            low = np.asarray(d["low"], dtype=np.float64).reshape(shape) if shape else np.asarray(d["low"])
            high = np.asarray(d["high"], dtype=np.float64).reshape(shape) if shape else np.asarray(d["high"])
            return spaces.Box(low.astype(dtype), high.astype(dtype), shape=shape, dtype=dtype)
    except (KeyError, TypeError, ValueError, AssertionError) as e:  # gymnasium checks with assert
        raise SpaceError(f"malformed {kind} space {brief(d)}: {brief(str(e).splitlines()[0], quote=False)}") from None


def _leaves(nested: Any) -> list[Any]:
    """The leaves of nested lists, in order."""
    out, stack = [], [nested]
    while stack:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(reversed(x))
        else:
            out.append(x)
    return out


def _space_dict_problem(d: Any) -> str:
    """What is wrong with the types of a space dict (``space_to_dict`` form), or "" if nothing."""
    if not isinstance(d, dict):
        return f"expected a space mapping, got {brief(d)}"
    kind = d.get("type")
    try:
        if kind == "Discrete":
            integer("n", d.get("n"))
            integer("start", d.get("start", 0), -MAX_INT)
        elif kind == "MultiDiscrete":
            nvec = _leaves(d.get("nvec"))
            if not isinstance(d.get("nvec"), list) or not nvec:
                return f"MultiDiscrete nvec must be a non-empty list of integers, got {brief(d.get('nvec'))}"
            for n in nvec:
                integer("nvec", n)
            for n in _leaves(d.get("start", [])):
                integer("start", n, -MAX_INT)
        elif kind == "Box":
            shape = d.get("shape")
            if not isinstance(shape, list):
                return f"Box shape must be a list of integers, got {brief(shape)}"
            for n in shape:
                integer("shape", n)
            if math.prod(shape) > MAX_INT:
                return f"Box shape {brief(shape)} is too large"
            for bound in ("low", "high"):
                values = _leaves(d.get(bound))
                if not values or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in values):
                    return f"Box {bound} must be numbers, got {brief(d.get(bound))}"
            if not isinstance(d.get("dtype", "float32"), str):
                return f"Box dtype must be a name such as float32, got {brief(d.get('dtype'))}"
        else:
            return f"unknown space type {brief(kind)}; expected Discrete, MultiDiscrete or Box"
    except ValueError as e:
        return f"{kind} {e}"
    return ""


@dataclass(frozen=True, eq=False)
class EnvSpec:
    """What the rest of icrl knows of an env family.

    Attributes:
        env_id: The gymnasium id.
        observation_space: The single env's observation space (checked supported).
        action_space: The single env's action space (checked supported).
        horizon: Steps per episode.
        has_oracle: The family gives ``oracle_action`` (DPT labels, noise distillation, the oracle).
        has_max_return: The family gives ``max_return`` (LHF's R_max, normalised scores).
        has_reward_model: The family gives ``expected_reward`` (model-based sources: psrl).
        reports_regret: Bandits: evaluation reports cumulative expected regret per step.
        baselines: The baselines evaluation runs by default.
    """

    env_id: str
    observation_space: spaces.Space
    action_space: spaces.Space
    horizon: int
    has_oracle: bool = True
    has_max_return: bool = True
    has_reward_model: bool = False
    reports_regret: bool = False
    baselines: tuple[str, ...] = ("random", "oracle")

    def __post_init__(self) -> None:
        check_observation_space(self.observation_space, self.env_id)
        check_action_space(self.action_space, self.env_id)
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, (int, np.integer)) or self.horizon < 1:
            raise SpaceError(f"{self.env_id}: horizon must be an integer >= 1, got {str(self.horizon)[:40]}")

    # ----------------------------------------------------------------- building and storing
    @classmethod
    def of(cls, dist: Any) -> EnvSpec:
        """The spec a task distribution declares (see :class:`~icrl.envs.TaskDistribution`)."""
        env_id = getattr(dist, "env_id", "") or type(dist).__name__
        missing = [a for a in ("observation_space", "action_space", "horizon") if getattr(dist, a, None) is None]
        if missing:
            raise SpaceError(f"{env_id}: its TaskDistribution must declare {', '.join(missing)} "
                             f"(see docs/extending.md)")
        return cls(env_id, dist.observation_space, dist.action_space, int(dist.horizon),
                   has_oracle=bool(dist.has_oracle), has_max_return=bool(dist.has_max_return),
                   has_reward_model=bool(dist.has_reward_model),
                   reports_regret=bool(dist.reports_regret), baselines=tuple(dist.baselines))

    @classmethod
    def for_env(cls, env_id: str, env_kwargs: dict[str, Any]) -> EnvSpec:
        """The spec of a registered family built with ``env_kwargs``."""
        from icrl import envs

        return cls.of(envs.task_distribution(env_id, **env_kwargs))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (manifest key ``spec``, checkpoint ``model.json``)."""
        return {"env_id": self.env_id, "observation_space": space_to_dict(self.observation_space),
                "action_space": space_to_dict(self.action_space), "horizon": int(self.horizon),
                "has_oracle": self.has_oracle, "has_max_return": self.has_max_return,
                "has_reward_model": self.has_reward_model,
                "reports_regret": self.reports_regret, "baselines": list(self.baselines)}

    @classmethod
    def from_dict(cls, d: Any) -> EnvSpec:
        """Inverse of :meth:`to_dict`; a :class:`SpaceError` naming what is wrong."""
        if not isinstance(d, dict):
            raise SpaceError(f"an env spec must be a mapping, got {type(d).__name__}")
        missing = [k for k in ("env_id", "observation_space", "action_space", "horizon") if k not in d]
        if missing:
            raise SpaceError(f"env spec lacks {missing}")
        return cls(str(d["env_id"]), space_from_dict(d["observation_space"]), space_from_dict(d["action_space"]),
                   d["horizon"], has_oracle=bool(d.get("has_oracle", True)),
                   has_max_return=bool(d.get("has_max_return", True)),
                   has_reward_model=bool(d.get("has_reward_model", False)),
                   reports_regret=bool(d.get("reports_regret", False)),
                   baselines=tuple(d.get("baselines", ("random", "oracle"))))

    def same_world(self, other: EnvSpec) -> bool:
        """Same observation and action spaces (what a model's weights depend on)."""
        return (space_to_dict(self.observation_space) == space_to_dict(other.observation_space)
                and space_to_dict(self.action_space) == space_to_dict(other.action_space))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnvSpec) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(str(self.to_dict()))

    # ----------------------------------------------------------------- what the spaces mean
    @property
    def discrete_actions(self) -> bool:
        """Actions are integers of a ``Discrete`` space (else floats in a ``Box``)."""
        return isinstance(self.action_space, spaces.Discrete)

    @property
    def n_actions(self) -> int:
        """Number of discrete actions; a :class:`SpaceError` for a ``Box``."""
        if not self.discrete_actions:
            raise SpaceError(f"{self.env_id} has continuous actions {_describe(self.action_space)}, not a number "
                             f"of discrete ones")
        return int(self.action_space.n)

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Shape of one action: ``()`` for ``Discrete``, the ``Box``'s shape otherwise."""
        return () if self.discrete_actions else tuple(self.action_space.shape)

    @property
    def action_dim(self) -> int:
        """Flat width of one continuous action (1 for a ``Discrete`` action)."""
        return 1 if self.discrete_actions else int(np.prod(self.action_space.shape))

    @property
    def action_dtype(self) -> np.dtype:
        """dtype of stored actions: int64 (``Discrete``) or the ``Box``'s float dtype."""
        return np.dtype(np.int64) if self.discrete_actions else np.dtype(self.action_space.dtype)

    @property
    def discrete_obs(self) -> bool:
        """Observations are integers (``Discrete`` / ``MultiDiscrete``), one-hot encoded."""
        return not isinstance(self.observation_space, spaces.Box)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one observation as the env returns it."""
        return tuple(self.observation_space.shape)

    @property
    def obs_sizes(self) -> list[int]:
        """One-hot size of every integer obs component, flattened (``Discrete(n)`` -> ``[n]``)."""
        if not self.discrete_obs:
            raise SpaceError(f"{self.env_id} has Box observations; they have no one-hot sizes")
        if isinstance(self.observation_space, spaces.Discrete):
            return [int(self.observation_space.n)]
        return [int(n) for n in np.asarray(self.observation_space.nvec).reshape(-1)]

    @property
    def obs_dim(self) -> int:
        """Number of stored obs components (flattened): 1 for ``Discrete``."""
        if isinstance(self.observation_space, spaces.Discrete):
            return 1
        return int(np.prod(self.observation_space.shape))

    def check_actions(self, actions: np.ndarray, n: int, what: str = "actions") -> np.ndarray:
        """``(n, *action_shape)`` actions inside the space, as stored (int64 or float), else a one-line error."""
        a = np.asarray(actions)
        if self.discrete_actions:
            if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
                raise SpaceError(f"{what}: expected ({n},) integers for {_describe(self.action_space)}, "
                                 f"got {a.dtype} {a.shape}")
            if a.size and (a.min() < 0 or a.max() >= self.n_actions):
                raise SpaceError(f"{what}: every action must be in [0, {self.n_actions})")
            return a.astype(np.int64, copy=False)
        shape = (n, *self.action_shape)
        if a.shape != shape or not np.issubdtype(a.dtype, np.number):
            raise SpaceError(f"{what}: expected {shape} floats for {_describe(self.action_space)}, "
                             f"got {a.dtype} {a.shape}")
        if not np.all(np.isfinite(a)):
            raise SpaceError(f"{what}: NaN or inf in continuous actions")
        return a.astype(self.action_dtype, copy=False)
