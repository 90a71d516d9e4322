"""Algorithm Distillation (Laskin et al. 2022, "In-context Reinforcement Learning with Algorithm
Distillation"): a causal transformer over a learning history that predicts the source algorithm's
next action at every step.

Token t embeds (o_t, a_{t-1}, r_{t-1}) with one Linear over the concatenated features
``[obs(o_t) | action(a_{t-1}) | first-step flag | r_{t-1} | r_{t-1} * one-hot(a_{t-1})]``, each part
encoded as its space asks (``encoders.py``: one-hot or normalised values); the last block exists for
Discrete actions only. At the first step of a history (``prev_action`` is the sentinel: -1, or a NaN
row for Box actions) the flag is set and the action and reward parts are zero. Attention is causal
and, with ``config.window = K``, limited to the last K steps (a banded mask; AD trains on
across-episode contexts of a few episodes), so an online rollout of any length runs on a ring KV
cache of K slots and reproduces the full pass. The first step of a history is a reset of the
backbone's structure: a sequence that packs several histories keeps them apart (an S5 state is
zeroed there, attention does not cross it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .backbones import BackboneModel, Structure, make_backbone
from .encoders import ActionEncoder, ActionHead, ObsEncoder, is_first
from .transformer import ModelConfig, init_weights


class ADModel(BackboneModel):
    """AD policy: logits of a_t given the history up to o_t.

    Args:
        config: a ``ModelConfig`` with ``kind="ad"``.
        generator: draws the initial weights (GPT-2 init); None uses torch's global RNG.
    """

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if config.kind != "ad":
            raise ValueError(f"ADModel needs ModelConfig(kind='ad'), got kind={config.kind!r}; use DPTModel")
        self.config = config
        self.obs_enc = ObsEncoder(config.observation)
        self.act_enc = ActionEncoder(config.action)
        self.discrete = config.discrete_actions
        # Feature columns: obs | prev action | first-step flag | reward | reward * one-hot(prev action)
        # (Discrete only: the reward in its action's column, so attention can average rewards per
        # action without an MLP in between; see DPTModel).
        A = self.act_enc.width
        self.feat_dim = self.obs_enc.width + A + 2 + (A if self.discrete else 0)
        self.embed = nn.Linear(self.feat_dim, config.n_embd, bias=config.bias)
        self.backbone = make_backbone(config, generator)
        self.head = ActionHead(config.n_embd, config.action, config.head, bias=config.bias)
        init_weights(self, config.n_layer, generator)
        self.backbone.after_init(generator)

    def features(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor) -> torch.Tensor:
        """Concatenated token features: obs (..., k), prev_action (...) or (..., d), prev_reward (...) -> (..., F)."""
        dtype = self.embed.weight.dtype
        first = is_first(prev_action, self.discrete)  # (...,) start of a history: no previous action
        r = torch.where(first, 0.0, prev_reward.to(dtype)).unsqueeze(-1)  # (..., 1) no reward before the first step
        act = self.act_enc(prev_action, dtype)  # (..., A) zeros at the first step
        parts = [self.obs_enc(obs, dtype), act, first.unsqueeze(-1).to(dtype), r]
        if self.discrete:
            parts.append(act * r)  # (..., A) r in its action's column
        return torch.cat(parts, dim=-1)  # (..., F)

    def embed_tokens(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor) -> torch.Tensor:
        """Token embeddings: obs (B, T, k), prev_action (B, T), prev_reward (B, T) -> (B, T, C)."""
        return self.embed(self.features(obs, prev_action, prev_reward))  # (B, T, C)

    def forward(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor,
                task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Predict a_t at every position of a batch of history windows in one pass.

        Args:
            obs: (B, T, k) observations o_t, one column per (flattened) obs component.
            prev_action: (B, T) int64 a_{t-1}, -1 at the first step of a history; or (B, T, d)
                floats for Box actions, a NaN row at the first step.
            prev_reward: (B, T) float r_{t-1} (ignored at the first step).
            task_ids: (B,) task of each window, rows i and i + B/2 from one task (T2MIR's
                contrastive loss); None otherwise.

        Returns:
            (B, T, out) head outputs for a_t: logits (categorical), mean and log-std (gaussian),
            pre-tanh values (tanh).

        Raises:
            ValueError: if T exceeds ``config.block_size`` or the shapes disagree.
        """
        k = self.obs_enc.k
        if obs.dim() != 3 or obs.shape[-1] != k:
            raise ValueError(f"obs must be (B, T, {k}), got shape {tuple(obs.shape)}")
        B, T, _ = obs.shape
        action_shape = (B, T) if self.discrete else (B, T, self.act_enc.width)
        if prev_action.shape != action_shape or prev_reward.shape != (B, T):
            raise ValueError(
                f"prev_action and prev_reward must be {action_shape} and (B, T) = {(B, T)}, got "
                f"{tuple(prev_action.shape)} and {tuple(prev_reward.shape)}"
            )
        if T > self.config.block_size:
            raise ValueError(
                f"sequence of {T} steps exceeds block_size={self.config.block_size}; train on windows of at "
                f"most block_size steps or build the model with block_size >= {T}"
            )
        x = self.embed_tokens(obs, prev_action, prev_reward)  # (B, T, C)
        structure = Structure(T, self.config.window, resets=is_first(prev_action, self.discrete), task_ids=task_ids)
        return self.head(self.backbone(x, structure))  # (B, T, out)

    @torch.no_grad()
    def step(self, cache: Any, obs: torch.Tensor, prev_action: torch.Tensor,
             prev_reward: torch.Tensor) -> torch.Tensor:
        """Append one step of every rollout to the online state and predict its action (inference only).

        Args:
            cache: from ``new_cache``; its ``pos`` is the step's position in the history.
            obs: (B, k) observation o_t.
            prev_action: (B,) int64 or (B, d) float a_{t-1}; the sentinel at the first step.
            prev_reward: (B,) float r_{t-1}.

        Returns:
            (B, out) head outputs for a_t; equal to ``forward`` over the whole history at row t.
        """
        if obs.dim() != 2 or obs.shape[-1] != self.obs_enc.k:
            raise ValueError(f"obs must be (B, {self.obs_enc.k}), got {tuple(obs.shape)}")
        x = self.embed_tokens(obs[:, None], prev_action[:, None], prev_reward[:, None])  # (B, 1, C)
        h = self.backbone.step(x, cache)  # (B, 1, C)
        return self.head(h[:, 0])  # (B, out)
