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
cache of K slots and reproduces the full pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .encoders import ActionEncoder, ActionHead, ObsEncoder, is_first
from .transformer import KVCache, MaskCache, ModelConfig, Transformer, init_weights


def banded_causal_mask(T: int, window: int) -> torch.Tensor:
    """(T, T) bool: query t may attend key s iff t - window < s <= t (the AD sliding window)."""
    t = torch.arange(T)[:, None]  # (T, 1)
    s = torch.arange(T)[None, :]  # (1, T)
    return (s <= t) & (s > t - window)  # (T, T)


class ADModel(nn.Module):
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
        self.backbone = Transformer(config)
        self.head = ActionHead(config.n_embd, config.action, config.head, bias=config.bias)
        self._masks = MaskCache()
        init_weights(self, config.n_layer, generator)

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

    def forward(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor) -> torch.Tensor:
        """Predict a_t at every position of a batch of history windows in one pass.

        Args:
            obs: (B, T, k) observations o_t, one column per (flattened) obs component.
            prev_action: (B, T) int64 a_{t-1}, -1 at the first step of a history; or (B, T, d)
                floats for Box actions, a NaN row at the first step.
            prev_reward: (B, T) float r_{t-1} (ignored at the first step).

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
        positions = torch.arange(T, device=x.device)  # (T,)
        K = self.config.window
        if K is None or K >= T:
            # Pure causal: SDPA may use its fused causal kernels.
            h = self.backbone(x, positions, is_causal=True)  # (B, T, C)
        else:
            mask = self._masks.get(("band", T, K), x.device, lambda: banded_causal_mask(T, K))  # (T, T)
            h = self.backbone(x, positions, mask=mask)  # (B, T, C)
        return self.head(h)  # (B, T, out)

    def new_cache(self, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        """An empty cache for one batched rollout: a ring of ``window`` slots, or block_size if no window.

        Args:
            batch_size: number of parallel rollouts B.
            device: defaults to the model's device.
            dtype: defaults to the model's parameter dtype (pass bfloat16 under autocast).
        """
        w = self.embed.weight
        return KVCache(self.config, batch_size, ring=self.config.window is not None,
                       device=device or w.device, dtype=dtype or w.dtype)

    @torch.no_grad()
    def step(self, cache: KVCache, obs: torch.Tensor, prev_action: torch.Tensor,
             prev_reward: torch.Tensor) -> torch.Tensor:
        """Append one step of every rollout to the cache and predict its action (inference only).

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
        h = self.backbone.decode(x, cache)  # (B, 1, C)
        return self.head(h[:, 0])  # (B, out)
