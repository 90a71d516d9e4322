"""Spaces to network inputs and outputs, in one place (the models' side of the space contract,
docs/architecture.md#the-space-contract).

Inputs:

- :class:`ObsEncoder`: ``Discrete`` / ``MultiDiscrete`` components one-hot, concatenated (Dark
  Room's (x, y) on a 9x9 grid: 9 + 9 columns); a ``Box`` of any shape flattened and normalised,
  ``(x - mean) / std``, with the mean and std of the training data (``set_stats``), kept as buffers
  so that they are saved in the checkpoint with the weights.
- :class:`ActionEncoder`: a ``Discrete`` action one-hot; a ``Box`` action scaled to [-1, 1] by the
  box bounds (the bounds are part of the space, so no statistics are needed). The "no previous
  action" sentinel of a history's first step is -1 for ``Discrete`` and a NaN row for ``Box``
  (:func:`first_action`, :func:`is_first`); the models add a flag column for it.

Outputs, :class:`ActionHead` (a ``Linear`` layer that also owns its loss and its sampling):

- ``categorical``: logits over the ``Discrete`` actions; cross-entropy; sample from
  softmax(logits / T) or take the argmax.
- ``gaussian`` (as DICP): mean and log-std of a diagonal Gaussian over the scaled action;
  negative log-likelihood ``sum_d 0.5 ((y - mu) / sigma)^2 + log sigma + 0.5 log 2 pi``;
  online a draw ``mu + T sigma z`` (or the mean), clipped into the box.
- ``tanh`` (as T2MIR): ``tanh(W h)`` is the scaled action; mean squared error; deterministic.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from gymnasium import spaces

from icrl.spaces import SpaceError, space_from_dict

HEADS = ("categorical", "gaussian", "tanh")
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # the Gaussian head's log-std range (sigma in [0.007, 7.4])


def onehot_features(index: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """Scatter ones at integer feature indices: (..., m) int64 -> (..., width) in ``dtype``."""
    out = torch.zeros(*index.shape[:-1], width, dtype=dtype, device=index.device)  # (..., width)
    return out.scatter_(-1, index, 1.0)  # (..., width)


def obs_index(obs: torch.Tensor, obs_sizes: Sequence[int]) -> torch.Tensor:
    """Column of each obs component inside the concatenated one-hot: (..., k) -> (..., k) int64."""
    offsets = torch.tensor(np.cumsum([0, *obs_sizes[:-1]]), dtype=torch.long, device=obs.device)  # (k,)
    return obs.long() + offsets  # (..., k)


def encode_obs(obs: torch.Tensor, obs_sizes: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot encode integer observations per component and concatenate: (..., k) -> (..., sum(obs_sizes))."""
    return onehot_features(obs_index(obs, obs_sizes), sum(obs_sizes), dtype)  # (..., D_obs)


def discrete_sizes(space: spaces.Space) -> list[int]:
    """One-hot size of every component of a ``Discrete`` / ``MultiDiscrete`` space (flattened)."""
    if isinstance(space, spaces.Discrete):
        return [int(space.n)]
    return [int(n) for n in np.asarray(space.nvec).reshape(-1)]


def softmax_sample(logits: torch.Tensor, rng: np.random.Generator, greedy: bool, temperature: float = 1.0) -> np.ndarray:
    """Actions from (N, A) logits: argmax, or a draw from softmax(logits / temperature) by inverse CDF with ``rng``."""
    if greedy:
        return logits.argmax(-1).cpu().numpy()
    probs = torch.softmax(logits.float() / temperature, dim=-1).cpu().numpy()  # (N, A)
    cdf = np.cumsum(probs, axis=-1)  # (N, A)
    u = rng.random((len(cdf), 1)) * cdf[:, -1:]  # (N, 1)
    return np.minimum((u > cdf).sum(-1), probs.shape[-1] - 1).astype(np.int64)  # (N,)


def first_action(space: spaces.Space, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The "no previous action" sentinel for ``batch`` rollouts: -1, or a NaN row for a ``Box``."""
    if isinstance(space, spaces.Discrete):
        return torch.full((batch,), -1, dtype=torch.long, device=device)  # (B,)
    return torch.full((batch, int(np.prod(space.shape))), float("nan"), device=device)  # (B, d)


def is_first(prev_action: torch.Tensor, discrete: bool) -> torch.Tensor:
    """Where ``prev_action`` is the sentinel: (...) for Discrete, (..., d) -> (...) for Box."""
    return prev_action < 0 if discrete else torch.isnan(prev_action).any(-1)


class ObsEncoder(nn.Module):
    """Observations as stored, (..., k), to (..., width) float features.

    Args:
        space: the observation space (``Discrete``, ``MultiDiscrete`` or ``Box``).
    """

    def __init__(self, space: spaces.Space) -> None:
        super().__init__()
        self.discrete = not isinstance(space, spaces.Box)
        if self.discrete:
            self.sizes = discrete_sizes(space)
            self.start = [int(s) for s in np.asarray(space.start).reshape(-1)]
            if any(self.start):
                raise SpaceError(f"observation space {space} does not start at 0; shift the env's observations")
            self.k, self.width = len(self.sizes), sum(self.sizes)
        else:
            self.sizes, self.k = [], int(np.prod(space.shape))
            self.width = self.k
            self.register_buffer("mean", torch.zeros(self.k))  # (k,) of the training data
            self.register_buffer("std", torch.ones(self.k))  # (k,)

    def index(self, obs: torch.Tensor) -> torch.Tensor:
        """Discrete: one-hot column of every component, (..., k) -> (..., k) int64."""
        return obs_index(obs, self.sizes)

    def forward(self, obs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(..., k) -> (..., width) in ``dtype``."""
        if self.discrete:
            return onehot_features(self.index(obs), self.width, dtype)  # (..., D)
        return ((obs.to(self.mean.dtype) - self.mean) / self.std).to(dtype)  # (..., k)

    @torch.no_grad()
    def set_stats(self, obs: np.ndarray) -> None:
        """Box: normalise by the mean and std of ``obs`` (N, k), the training data. A component that
        is constant there (std < 1e-6) is only centred: dividing by ~0 would blow up any other value."""
        if self.discrete:
            return
        x = np.asarray(obs, dtype=np.float64).reshape(-1, self.k)
        std = x.std(0)
        self.mean.copy_(torch.as_tensor(x.mean(0), dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(np.where(std < 1e-6, 1.0, std), dtype=self.std.dtype))


class ActionEncoder(nn.Module):
    """Actions as stored to features: one-hot (``Discrete``) or scaled to [-1, 1] (``Box``).

    Args:
        space: the action space.
    """

    def __init__(self, space: spaces.Space) -> None:
        super().__init__()
        self.discrete = isinstance(space, spaces.Discrete)
        if self.discrete:
            self.width = int(space.n)
        else:
            self.width = int(np.prod(space.shape))
            low, high = (torch.as_tensor(np.asarray(b, np.float64).reshape(-1), dtype=torch.float32)
                         for b in (space.low, space.high))
            self.register_buffer("low", low)  # (d,) the box bounds, saved with the weights
            self.register_buffer("high", high)  # (d,)

    def scale(self, action: torch.Tensor) -> torch.Tensor:
        """Box: (..., d) env units -> (..., d) in [-1, 1]."""
        return 2.0 * (action.float() - self.low) / (self.high - self.low) - 1.0

    def unscale(self, y: torch.Tensor) -> torch.Tensor:
        """Box: (..., d) in [-1, 1] -> (..., d) env units."""
        return self.low + (y.float() + 1.0) * 0.5 * (self.high - self.low)

    def forward(self, action: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(...) int64 or (..., d) float -> (..., width); a sentinel (first step) encodes as zeros."""
        if self.discrete:
            a = action.long().clamp_min(0)  # (...,) the sentinel -1 gets its zeros from the caller's mask
            out = F.one_hot(a, self.width).to(dtype)  # (..., A)
            return out * (action >= 0).unsqueeze(-1).to(dtype)  # (..., A)
        return torch.nan_to_num(self.scale(action), nan=0.0).to(dtype)  # (..., d)


class ActionHead(nn.Linear):
    """The last layer, which also owns the loss and the online action of its space.

    Args:
        n_embd: width of the hidden state.
        space: the action space.
        kind: ``categorical`` (Discrete), ``gaussian`` or ``tanh`` (Box).
        bias: a bias in the Linear layer.
    """

    def __init__(self, n_embd: int, space: spaces.Space, kind: str, bias: bool = True) -> None:
        discrete = isinstance(space, spaces.Discrete)
        if kind not in HEADS:
            raise SpaceError(f"unknown action head {kind!r}; choose one of {', '.join(HEADS)}")
        if discrete != (kind == "categorical"):
            fit = "categorical" if discrete else "gaussian or tanh"
            raise SpaceError(f"model.head: a {kind} head does not fit the action space {space}; use {fit}")
        d = int(space.n) if discrete else int(np.prod(space.shape))
        super().__init__(n_embd, 2 * d if kind == "gaussian" else d, bias=bias)
        self.kind, self.d = kind, d
        self.actions = ActionEncoder(space)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-prediction loss: out (..., out_features), target (...) int64 or (..., d) env units -> (...).

        Computed in float32 (float64 for float64 outputs), whatever the autocast dtype.
        """
        dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
        out = out.to(dtype)
        if self.kind == "categorical":
            lead = out.shape[:-1]
            ce = F.cross_entropy(out.reshape(-1, self.d), target.reshape(-1).long(), reduction="none")  # (N,)
            return ce.view(lead)  # (...)
        y = self.actions.scale(target).to(dtype)  # (..., d) in [-1, 1]
        if self.kind == "tanh":
            return (torch.tanh(out) - y).pow(2).mean(-1)  # (...)
        mean, log_std = self.gaussian(out)  # (..., d) each
        z = (y - mean) * torch.exp(-log_std)  # (..., d)
        return (0.5 * z.pow(2) + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)  # (...)

    def gaussian(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clamped log-std of the Gaussian head: (..., 2d) -> (..., d), (..., d)."""
        mean, log_std = out.split(self.d, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    @torch.no_grad()
    def act(self, out: torch.Tensor, rng: np.random.Generator, greedy: bool = False,
            temperature: float = 1.0) -> np.ndarray:
        """Actions from (N, out_features) head outputs: (N,) int64 or (N, d) float32 in env units.

        Categorical: argmax, or a draw from softmax(out / temperature) by inverse CDF with ``rng``.
        Gaussian: the mean, or ``mean + temperature * sigma * z`` with z ~ N(0, I) from ``rng``,
        clipped to [-1, 1]. Tanh: ``tanh(out)``. Box actions are then unscaled to the box.
        """
        if self.kind == "categorical":
            return softmax_sample(out, rng, greedy, temperature)
        out = out.float()
        if self.kind == "tanh":
            y = torch.tanh(out)  # (N, d)
        else:
            mean, log_std = self.gaussian(out)  # (N, d) each
            y = mean
            if not greedy:
                z = torch.as_tensor(rng.standard_normal(mean.shape), dtype=mean.dtype, device=mean.device)  # (N, d)
                y = mean + temperature * log_std.exp() * z  # (N, d)
            y = y.clamp(-1.0, 1.0)
        return self.actions.unscale(y).cpu().numpy().astype(np.float32)  # (N, d)


def resolve_head(head: str, action_space: dict[str, Any] | spaces.Space) -> str:
    """``auto`` -> categorical for ``Discrete`` actions, gaussian for ``Box``; others as given."""
    space = space_from_dict(action_space) if isinstance(action_space, dict) else action_space
    if head == "auto":
        return "categorical" if isinstance(space, spaces.Discrete) else "gaussian"
    return head


def check_batch(config: Any, obs: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor) -> None:
    """Fail early when a dataset's observations or actions do not fit the model.

    Args:
        config: the model's ``ModelConfig``.
        obs: observations of shape (..., k), one column per (flattened) obs component.
        actions: integer actions of any shape (Discrete), or (..., d) floats (Box).

    Raises:
        ValueError: naming the mismatch (component count, one-hot range, action range) and the fix.
    """
    obs = obs.detach().cpu().numpy() if isinstance(obs, torch.Tensor) else np.asarray(obs)
    actions = actions.detach().cpu().numpy() if isinstance(actions, torch.Tensor) else np.asarray(actions)
    obs_space = config.observation
    discrete_obs = not isinstance(obs_space, spaces.Box)
    k = len(discrete_sizes(obs_space)) if discrete_obs else int(np.prod(obs_space.shape))
    if obs.ndim == 0 or obs.shape[-1] != k:
        got = obs.shape[-1] if obs.ndim else 0
        raise ValueError(
            f"dataset obs has {got} components but the model was built for {k} ({config.obs_space['type']} "
            f"observations); train a model on this dataset's env, or pass obs as (..., {k})"
        )
    if discrete_obs and obs.size:
        if not np.issubdtype(obs.dtype, np.integer) and not np.array_equal(obs, np.round(obs)):
            raise ValueError(f"dataset obs must be integers to be one-hot encoded, got dtype {obs.dtype}")
        flat = obs.reshape(-1, k)
        lo, hi = flat.min(axis=0), flat.max(axis=0)
        for i, size in enumerate(discrete_sizes(obs_space)):
            if lo[i] < 0 or hi[i] >= size:
                raise ValueError(
                    f"dataset obs component {i} spans [{lo[i]}, {hi[i]}] but the model one-hot encodes it "
                    f"with size {size}; set obs_sizes[{i}] >= {int(hi[i]) + 1} (values must be >= 0)"
                )
    elif obs.size and not np.all(np.isfinite(obs)):
        raise ValueError("dataset obs hold NaN or inf; repair or recollect the dataset")
    if not actions.size:
        return
    if config.discrete_actions:
        lo_a, hi_a = actions.min(), actions.max()
        if lo_a < 0 or hi_a >= config.n_actions:
            raise ValueError(
                f"dataset actions span [{lo_a}, {hi_a}] but the model was built for n_actions="
                f"{config.n_actions}; set n_actions >= {int(hi_a) + 1} (actions must be >= 0)"
            )
        return
    d = int(np.prod(config.action.shape))
    if actions.shape[-1] != d or not np.issubdtype(actions.dtype, np.floating):
        raise ValueError(f"dataset actions are {actions.dtype} {actions.shape[1:]} but the model acts in "
                         f"{config.action_space['type']} of width {d}; train a model on this dataset's env")
    if not np.all(np.isfinite(actions)):
        raise ValueError("dataset actions hold NaN or inf; repair or recollect the dataset")
