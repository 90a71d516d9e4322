"""The method contract (docs/architecture.md#methods): what makes AD and DPT (and DICP on either)
what they are, in one object per method, so that the sampler, the trainer and the evaluator call a
method without knowing its name.

A :class:`Method` builds its model on any backbone and spec, lays out its training samples from
histories, runs its model on a batch for the loss, and steps its model online. DICP (Son et al.
2025) is not a method of its own but a world model any method can carry (``model.world_model``):
the method builds its DICP variant and gives DICP's loss its outputs and labels. A new method is a
subclass here (or in a module of its own) plus one line in :data:`METHODS` and the config's
``model.kind`` choices.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from icrl.models import ADModel, DICPADModel, DICPDPTModel, DPTModel, ModelConfig, head_loss

Batch = dict[str, torch.Tensor]


class Method:
    """One in-context RL method. Subclasses set the class attributes and implement every method."""

    name: str
    model_class: type[nn.Module]
    dicp_class: type[nn.Module]  # the model with DICP's world model
    needs_oracle: bool = False  # its labels are the oracle's actions
    imitates_source: bool = False  # its labels are the source's actions (evaluation adds the source's curve)
    length_key: str  # the data key that sets its training sequence length

    def build(self, config: ModelConfig, generator: torch.Generator | None = None) -> nn.Module:
        """The model of ``config`` (its DICP variant when ``config.world_model``)."""
        return (self.dicp_class if config.world_model else self.model_class)(config, generator)

    def length(self, data: Any, horizon: int, history_steps: int) -> int:
        """Steps per training sample: ``data.<length_key>``, else the method's default."""
        raise NotImplementedError

    def pass_tokens(self, block_size: int) -> int:
        """Tokens of one training pass over ``block_size`` steps (before DICP's queries)."""
        raise NotImplementedError

    def sample_tokens(self, length: int, readouts: int) -> int:
        """Tokens a training sample of ``length`` steps feeds the model (throughput figures)."""
        raise NotImplementedError

    def check_data(self, steps: Any) -> None:
        """ValueError when histories lack a field the method's samples need."""

    def sample(self, steps: Any, h: np.ndarray, start: np.ndarray, idx: np.ndarray, rng: np.random.Generator,
               readouts: int, world_model: bool) -> Batch:
        """The method's fields of a batch from histories ``h`` (B,) at window ``start`` (B,), flat
        step indices ``idx`` (B, L), read through ``steps.take``; its own draws from ``rng``."""
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Batch, world: bool = False) -> Any:
        """The model's outputs on a batch: the policy's (B, positions, out), or with ``world`` the
        triple (policy, reward outputs (B, M, R), next-obs outputs (B, M, D))."""
        raise NotImplementedError

    def world_labels(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """DICP's labels of the batch's query transitions: rewards (B, M) and next obs (B, M, k)."""
        raise NotImplementedError

    def act(self, model: nn.Module, cache: Any, obs: torch.Tensor, prev_action: torch.Tensor,
            prev_reward: torch.Tensor) -> torch.Tensor:
        """Online: the policy's output (N, out) for the current observations (N, k)."""
        raise NotImplementedError

    def observe(self, model: nn.Module, cache: Any, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                next_obs: torch.Tensor) -> bool:
        """Online: take in the step just made; True if the caller must keep (action, reward) as the
        next step's previous action and reward (AD's input), False if the cache took it (DPT)."""
        raise NotImplementedError


class AD(Method):
    """Algorithm Distillation (Laskin et al. 2022): windows of ``seq_len`` consecutive steps of one
    history across its episodes; inputs (o_t, a_{t-1}, r_{t-1}), the label a_t at every position;
    online one token per step."""

    name, model_class, dicp_class, length_key, imitates_source = "ad", ADModel, DICPADModel, "seq_len", True

    def length(self, data: Any, horizon: int, history_steps: int) -> int:
        return data.seq_len or history_steps

    def pass_tokens(self, block_size: int) -> int:
        return block_size

    def sample_tokens(self, length: int, readouts: int) -> int:
        return length

    def sample(self, steps: Any, h: np.ndarray, start: np.ndarray, idx: np.ndarray, rng: np.random.Generator,
               readouts: int, world_model: bool) -> Batch:
        take, length = steps.take, idx.shape[1]
        # (B, T) previous step, kept inside the history; the sentinel (-1, or NaN for Box) marks its first
        prev = np.maximum(idx - 1, steps.offsets[h][:, None])
        first = (start[:, None] + np.arange(length)) == 0  # (B, T)
        action, prev_action, prev_reward = take("action", idx), take("action", prev), take("reward", prev)
        if prev_action.ndim == 2:  # Discrete (B, T)
            prev_action = np.where(first, -1, prev_action)
        else:  # Box (B, T, d)
            prev_action = np.where(first[..., None], np.nan, prev_action).astype(np.float32)
        prev_reward = np.where(first, 0.0, prev_reward)  # (B, T)
        out = {"obs": torch.as_tensor(take("obs", idx)), "prev_action": torch.as_tensor(prev_action),
               "prev_reward": torch.as_tensor(prev_reward, dtype=torch.float32), "target": torch.as_tensor(action)}
        if world_model:  # the query (o_t, a_t) -> (r_t, o_{t+1}), as stored (right across episode ends)
            out.update(wm_reward=torch.as_tensor(take("reward", idx)), wm_next_obs=torch.as_tensor(take("next_obs", idx)))
            if 0 < readouts < length:
                out["wm_steps"] = torch.as_tensor(np.sort(rng.choice(length, readouts, replace=False)))
        return out

    def forward(self, model: nn.Module, batch: Batch, world: bool = False) -> Any:
        if world:
            return model(batch["obs"], batch["prev_action"], batch["prev_reward"], batch.get("task_ids"),
                         query_action=batch["target"], query_steps=batch.get("wm_steps"))
        return model(batch["obs"], batch["prev_action"], batch["prev_reward"], batch.get("task_ids"))  # (B, T, out)

    def world_labels(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        reward, next_obs, steps = batch["wm_reward"], batch["wm_next_obs"], batch.get("wm_steps")  # (B, T), (B, T, k)
        return (reward, next_obs) if steps is None else (reward[:, steps], next_obs[:, steps])  # (B, M), (B, M, k)

    def act(self, model: nn.Module, cache: Any, obs: torch.Tensor, prev_action: torch.Tensor,
            prev_reward: torch.Tensor) -> torch.Tensor:
        return model.step(cache, obs, prev_action, prev_reward)  # (N, out)

    def observe(self, model: nn.Module, cache: Any, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                next_obs: torch.Tensor) -> bool:
        return True  # the next step's token carries them


class DPT(Method):
    """The Decision-Pretrained Transformer (Lee et al. 2023): ``context_len`` consecutive
    transitions (s, a, r, s') of one history, a query state the same history visited and the
    oracle's action there as the label of every prefix 0..n; online a readout per step against
    the cached context, which then takes the transition."""

    name, model_class, dicp_class, length_key, needs_oracle = "dpt", DPTModel, DICPDPTModel, "context_len", True

    def length(self, data: Any, horizon: int, history_steps: int) -> int:
        return data.context_len or horizon

    def pass_tokens(self, block_size: int) -> int:
        return 2 * block_size + 1  # the context and a readout after every prefix

    def sample_tokens(self, length: int, readouts: int) -> int:
        return length + (readouts or length + 1)

    def check_data(self, steps: Any) -> None:
        if not (steps.has("oracle_action") and steps.has("next_obs")):
            raise ValueError("DPT needs histories with oracle_action and next_obs per step; "
                             "collect them from an env family whose task distribution has an oracle")

    def sample(self, steps: Any, h: np.ndarray, start: np.ndarray, idx: np.ndarray, rng: np.random.Generator,
               readouts: int, world_model: bool) -> Batch:
        take, length = steps.take, idx.shape[1]
        q = steps.offsets[h] + rng.integers(0, steps.lengths[h])  # (B,) the query: a state the history visited
        out = {"ctx_obs": torch.as_tensor(take("obs", idx)), "ctx_action": torch.as_tensor(take("action", idx)),
               "ctx_reward": torch.as_tensor(take("reward", idx)), "ctx_next_obs": torch.as_tensor(take("next_obs", idx)),
               "query_obs": torch.as_tensor(take("obs", q)), "target": torch.as_tensor(take("oracle_action", q))}
        if 0 < readouts <= length:
            out["prefixes"] = torch.as_tensor(np.sort(rng.choice(length + 1, readouts, replace=False)))
        if world_model and 0 < readouts < length:  # query transitions j -> (r_j, s'_j)
            out["wm_prefixes"] = torch.as_tensor(np.sort(rng.choice(length, readouts, replace=False)))
        return out

    def forward(self, model: nn.Module, batch: Batch, world: bool = False) -> Any:
        args = (batch["ctx_obs"], batch["ctx_action"], batch["ctx_reward"], batch["ctx_next_obs"], batch["query_obs"],
                batch.get("prefixes"), batch.get("task_ids"))
        return model(*args, world=True, world_prefixes=batch.get("wm_prefixes")) if world else model(*args)  # (B, J, out)

    def world_labels(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        reward, next_obs, wm = batch["ctx_reward"], batch["ctx_next_obs"], batch.get("wm_prefixes")  # (B, n), (B, n, k)
        return (reward, next_obs) if wm is None else (reward[:, wm], next_obs[:, wm])  # (B, M), (B, M, k)

    def act(self, model: nn.Module, cache: Any, obs: torch.Tensor, prev_action: torch.Tensor,
            prev_reward: torch.Tensor) -> torch.Tensor:
        return model.readout(cache, obs)  # (N, out)

    def observe(self, model: nn.Module, cache: Any, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                next_obs: torch.Tensor) -> bool:
        model.append(cache, obs, action, reward, next_obs)
        return False


METHODS: dict[str, Method] = {"ad": AD(), "dpt": DPT()}


def method_of(name: str) -> Method:
    """The registered method ``name`` (``model.kind``)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name]


def make_model(config: ModelConfig, generator: torch.Generator | None = None) -> nn.Module:
    """The model of ``config``: its method's (``config.kind``), with DICP's world model when
    ``config.world_model``."""
    return method_of(config.kind).build(config, generator)


def method_loss(model: nn.Module, kind: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The method's weighted loss on one batch and, for DICP, its detached terms: ``L_policy`` (AD:
    every position; DPT: every prefix), plus ``lambda (L_reward + L_next_obs)`` with DICP's world
    model (``loss_policy``, ``loss_reward``, ``loss_next_obs``; empty otherwise).

    Args:
        model: the model (or its DDP wrapper).
        kind: its method's name.
        batch: the sampler's batch (with DICP's labels for a world model).
    """
    inner, method = getattr(model, "module", model), method_of(kind)
    if not inner.config.world_model:
        return head_loss(inner.head, method.forward(model, batch), batch["target"], batch["weights"]), {}
    policy, r_out, o_out = method.forward(model, batch, world=True)  # (B, P, out), (B, M, R), (B, M, D)
    reward, next_obs = method.world_labels(batch)  # (B, M), (B, M, k)
    l_pi = head_loss(inner.head, policy, batch["target"], batch["weights"])
    l_r, l_o = inner.world_losses(r_out, o_out, reward, next_obs, batch["weights"])
    total = l_pi + inner.config.world_model_coef * (l_r + l_o)
    return total, {"loss_policy": l_pi.detach(), "loss_reward": l_r.detach(), "loss_next_obs": l_o.detach()}
