"""Decision-Pretrained Transformer (Lee et al. 2023, "Supervised Pretraining Can Learn In-Context
Reinforcement Learning"): predicts the optimal action for a query state from an in-context
dataset of transitions.

Context tokens embed transitions (s, a, r, s') and attend causally among themselves, so they can
be cached. A *readout* token embeds the query state; readout j attends to the first j context
tokens and to itself, and nothing attends to it. Training places a readout after every prefix
j = 0..n (DPT's pretraining loss sums over every prefix; j = 0 is the prior) in one pass: the sequence is the
n context tokens followed by the n + 1 readouts under a block mask. Readout j has RoPE position j,
i.e. right after the last transition it sees, exactly where an online readout sits.

All tokens share one Linear over the features
``[one-hot(s) | one-hot(a) | r | one-hot(s') | readout flag]``; a readout fills only ``s`` (with
the query) and the flag.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .transformer import KVCache, MaskCache, ModelConfig, Transformer, init_weights, obs_index, onehot_features


def readout_mask(n: int) -> torch.Tensor:
    """(2n+1, 2n+1) bool mask: n causal context tokens, then readouts j = 0..n seeing context < j and self."""
    L = 2 * n + 1
    row = torch.arange(L)[:, None]  # (L, 1)
    col = torch.arange(L)[None, :]  # (1, L)
    ctx_row, ctx_col = row < n, col < n  # (L, 1), (1, L)
    causal_ctx = ctx_row & ctx_col & (col <= row)  # (L, L) context sees its causal prefix
    prefix = ~ctx_row & ctx_col & (col < row - n)  # (L, L) readout j = row - n sees context < j
    return causal_ctx | prefix | (row == col)  # (L, L) every token sees itself


class DPTModel(nn.Module):
    """DPT policy: logits of the optimal action for a query state given a context prefix.

    Args:
        config: a ``ModelConfig`` with ``kind="dpt"``; ``block_size`` = max context length n.
        generator: draws the initial weights (GPT-2 init); None uses torch's global RNG.
    """

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if config.kind != "dpt":
            raise ValueError(f"DPTModel needs ModelConfig(kind='dpt'), got kind={config.kind!r}; use ADModel")
        self.config = config
        D, A = config.obs_dim, config.n_actions
        # Feature columns: s [0, D) | a [D, D+A) | r D+A | s' [D+A+1, 2D+A+1) | readout flag 2D+A+1.
        self.act_off, self.rew_col, self.next_off, self.flag_col = D, D + A, D + A + 1, 2 * D + A + 1
        self.feat_dim = 2 * D + A + 2
        self.embed = nn.Linear(self.feat_dim, config.n_embd, bias=config.bias)
        self.backbone = Transformer(config)
        self.head = nn.Linear(config.n_embd, config.n_actions, bias=config.bias)
        self._masks = MaskCache()
        init_weights(self, config.n_layer, generator)

    def context_features(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                         next_obs: torch.Tensor) -> torch.Tensor:
        """Transition features: obs (..., k), action (...), reward (...), next_obs (..., k) -> (..., F)."""
        sizes = self.config.obs_sizes
        act_col = (action.long() + self.act_off).unsqueeze(-1)  # (..., 1)
        idx = torch.cat((obs_index(obs, sizes), act_col, obs_index(next_obs, sizes) + self.next_off), dim=-1)  # (..., 2k+1)
        feats = onehot_features(idx, self.feat_dim, self.embed.weight.dtype)  # (..., F)
        feats[..., self.rew_col] = reward.to(feats.dtype)  # (...,)
        return feats  # (..., F)

    def readout_features(self, query_obs: torch.Tensor) -> torch.Tensor:
        """Readout features: query_obs (..., k) -> (..., F) with the readout flag set."""
        flag = torch.full_like(query_obs[..., :1], self.flag_col, dtype=torch.long)  # (..., 1)
        idx = torch.cat((obs_index(query_obs, self.config.obs_sizes), flag), dim=-1)  # (..., k+1)
        return onehot_features(idx, self.feat_dim, self.embed.weight.dtype)  # (..., F)

    def forward(self, ctx_obs: torch.Tensor, ctx_action: torch.Tensor, ctx_reward: torch.Tensor,
                ctx_next_obs: torch.Tensor, query_obs: torch.Tensor) -> torch.Tensor:
        """Predict the optimal action after every context prefix, in one pass.

        Args:
            ctx_obs: (B, n, k) integer states s_i.
            ctx_action: (B, n) int64 actions a_i.
            ctx_reward: (B, n) float rewards r_i.
            ctx_next_obs: (B, n, k) integer next states s'_i.
            query_obs: (B, k) one query for every prefix, or (B, n+1, k) a query per prefix.

        Returns:
            (B, n+1, n_actions) logits; row j is the prediction from the first j transitions.

        Raises:
            ValueError: if n exceeds ``config.block_size`` or the shapes disagree.
        """
        k = len(self.config.obs_sizes)
        if ctx_obs.dim() != 3 or ctx_obs.shape[-1] != k or ctx_next_obs.shape != ctx_obs.shape:
            raise ValueError(
                f"ctx_obs and ctx_next_obs must be (B, n, {k}) integers, got {tuple(ctx_obs.shape)} and "
                f"{tuple(ctx_next_obs.shape)}"
            )
        B, n, _ = ctx_obs.shape
        if ctx_action.shape != (B, n) or ctx_reward.shape != (B, n):
            raise ValueError(
                f"ctx_action and ctx_reward must be (B, n) = {(B, n)}, got {tuple(ctx_action.shape)} and "
                f"{tuple(ctx_reward.shape)}"
            )
        if n > self.config.block_size:
            raise ValueError(
                f"context of {n} transitions exceeds block_size={self.config.block_size}; shorten the context "
                f"or build the model with block_size >= {n}"
            )
        if query_obs.shape == (B, k):
            query_obs = query_obs[:, None].expand(B, n + 1, k)  # (B, n+1, k)
        elif query_obs.shape != (B, n + 1, k):
            raise ValueError(f"query_obs must be (B, k) = {(B, k)} or (B, n+1, k) = {(B, n + 1, k)}, "
                             f"got {tuple(query_obs.shape)}")
        feats = torch.cat(
            (self.context_features(ctx_obs, ctx_action, ctx_reward, ctx_next_obs), self.readout_features(query_obs)),
            dim=1,
        )  # (B, 2n+1, F)
        x = self.embed(feats)  # (B, 2n+1, C)
        positions = torch.cat((torch.arange(n), torch.arange(n + 1))).to(x.device)  # (2n+1,)
        mask = self._masks.get(("readout", n), x.device, lambda: readout_mask(n))  # (2n+1, 2n+1)
        h = self.backbone(x, positions, mask=mask)  # (B, 2n+1, C)
        return self.head(h[:, n:])  # (B, n+1, A)

    def new_cache(self, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        """An empty context cache of ``block_size`` transitions for one batched rollout.

        Args:
            batch_size: number of parallel rollouts B.
            device: defaults to the model's device.
            dtype: defaults to the model's parameter dtype (pass bfloat16 under autocast).
        """
        w = self.embed.weight
        return KVCache(self.config, batch_size, ring=False, device=device or w.device, dtype=dtype or w.dtype)

    @torch.no_grad()
    def append(self, cache: KVCache, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
               next_obs: torch.Tensor) -> None:
        """Add one transition per rollout to the context (inference only).

        Args:
            cache: from ``new_cache``.
            obs: (B, k) integer states; action: (B,) int64; reward: (B,) float; next_obs: (B, k).

        Raises:
            ValueError: when the cache already holds ``block_size`` transitions.
        """
        feats = self.context_features(obs[:, None], action[:, None], reward[:, None], next_obs[:, None])  # (B, 1, F)
        x = self.embed(feats)  # (B, 1, C)
        self.backbone.decode(x, cache, commit=True)  # (B, 1, C), output unused: only the cache matters

    @torch.no_grad()
    def readout(self, cache: KVCache, query_obs: torch.Tensor) -> torch.Tensor:
        """Logits for the query states given the cached context; the cache is left unchanged.

        Args:
            cache: from ``new_cache``, holding j transitions.
            query_obs: (B, k) integer query states.

        Returns:
            (B, n_actions) logits; equal to row j of ``forward`` on the same context.
        """
        x = self.embed(self.readout_features(query_obs[:, None]))  # (B, 1, C)
        h = self.backbone.decode(x, cache, commit=False)  # (B, 1, C)
        return self.head(h[:, 0])  # (B, A)
