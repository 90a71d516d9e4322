"""Algorithm Distillation (Laskin et al. 2022, "In-context Reinforcement Learning with Algorithm
Distillation"): a causal transformer over a learning history that predicts the source algorithm's
next action at every step.

Token t embeds (o_t, a_{t-1}, r_{t-1}) with one Linear over the concatenated features
``[one-hot(o_t) | one-hot(a_{t-1}) or "first step" flag | r_{t-1}]``. The "first step" flag is an
extra class of the previous-action one-hot, set when ``prev_action < 0``; the action part is then
all zeros and the reward is ignored. Attention is causal and, with ``config.window = K``, limited
to the last K steps (a banded mask; AD trains on across-episode contexts of a few episodes), so an
online rollout of any length runs on a ring KV cache of K slots and reproduces the full pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .transformer import (
    KVCache,
    MaskCache,
    ModelConfig,
    Transformer,
    init_weights,
    obs_index,
    onehot_features,
)


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
        self.obs_dim = config.obs_dim
        # Feature columns: obs one-hot | n_actions + 1 prev-action classes (last = first step) | reward
        # | reward * one-hot(prev action) (the reward in its action's column, so attention can average
        # rewards per action without an MLP in between; see DPTModel).
        A = config.n_actions
        self.rew_col, self.ar_off = self.obs_dim + A + 1, self.obs_dim + A + 2
        self.feat_dim = self.obs_dim + 2 * A + 2
        self.embed = nn.Linear(self.feat_dim, config.n_embd, bias=config.bias)
        self.backbone = Transformer(config)
        self.head = nn.Linear(config.n_embd, config.n_actions, bias=config.bias)
        self._masks = MaskCache()
        init_weights(self, config.n_layer, generator)

    def features(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor) -> torch.Tensor:
        """Concatenated token features: obs (..., k), prev_action (...), prev_reward (...) -> (..., F)."""
        first = prev_action < 0  # (...,) start of a history: no previous action
        act_col = torch.where(first, self.config.n_actions, prev_action.long()) + self.obs_dim  # (...,)
        idx = torch.cat((obs_index(obs, self.config.obs_sizes), act_col.unsqueeze(-1)), dim=-1)  # (..., k+1)
        feats = onehot_features(idx, self.feat_dim, self.embed.weight.dtype)  # (..., F)
        r = torch.where(first, 0.0, prev_reward.to(feats.dtype))  # (...,) no reward before the first step
        feats[..., self.rew_col] = r  # (...,)
        ar_col = torch.where(first, 0, prev_action.long()) + self.ar_off  # (...,)
        feats.scatter_(-1, ar_col.unsqueeze(-1), r.unsqueeze(-1))  # (..., F) r in its action's column (0 at start)
        return feats  # (..., F)

    def embed_tokens(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor) -> torch.Tensor:
        """Token embeddings: obs (B, T, k), prev_action (B, T), prev_reward (B, T) -> (B, T, C)."""
        return self.embed(self.features(obs, prev_action, prev_reward))  # (B, T, C)

    def forward(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor) -> torch.Tensor:
        """Predict a_t at every position of a batch of history windows in one pass.

        Args:
            obs: (B, T, k) integer observations o_t, one column per obs component.
            prev_action: (B, T) int64 a_{t-1}; -1 at the first step of a history.
            prev_reward: (B, T) float r_{t-1} (ignored where ``prev_action < 0``).

        Returns:
            (B, T, n_actions) logits of a_t.

        Raises:
            ValueError: if T exceeds ``config.block_size`` or the shapes disagree.
        """
        if obs.dim() != 3 or obs.shape[-1] != len(self.config.obs_sizes):
            raise ValueError(
                f"obs must be (B, T, {len(self.config.obs_sizes)}) integers, got shape {tuple(obs.shape)}"
            )
        B, T, _ = obs.shape
        if prev_action.shape != (B, T) or prev_reward.shape != (B, T):
            raise ValueError(
                f"prev_action and prev_reward must be (B, T) = {(B, T)}, got {tuple(prev_action.shape)} "
                f"and {tuple(prev_reward.shape)}"
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
        return self.head(h)  # (B, T, A)

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
            obs: (B, k) integer observation o_t.
            prev_action: (B,) int64 a_{t-1}; -1 at the first step.
            prev_reward: (B,) float r_{t-1}.

        Returns:
            (B, n_actions) logits of a_t; equal to ``forward`` over the whole history at row t.
        """
        if obs.dim() != 2 or obs.shape[-1] != len(self.config.obs_sizes):
            raise ValueError(f"obs must be (B, {len(self.config.obs_sizes)}) integers, got {tuple(obs.shape)}")
        x = self.embed_tokens(obs[:, None], prev_action[:, None], prev_reward[:, None])  # (B, 1, C)
        h = self.backbone.decode(x, cache)  # (B, 1, C)
        return self.head(h[:, 0])  # (B, A)
