"""Decision-Pretrained Transformer (Lee et al. 2023, "Supervised Pretraining Can Learn In-Context
Reinforcement Learning"): predicts the optimal action for a query state from an in-context
dataset of transitions.

Context tokens embed transitions (s, a, r, s') and attend causally among themselves, so they can
be cached. A *readout* token embeds the query state; readout j attends to the first j context
tokens and to itself, and nothing attends to it. Training places a readout after every prefix
j = 0..n (DPT's pretraining loss sums over every prefix; j = 0 is the prior) in one pass: the sequence is the
n context tokens followed by the n + 1 readouts under a block mask. Readout j has RoPE position j,
i.e. right after the last transition it sees, exactly where an online readout sits.

With ``config.window = K`` attention is a sliding window (as for AD; docs/architecture.md#models): a context token
sees itself and the K - 1 transitions before it, readout j sees transitions j - K .. j - 1. Online,
the context then lives in a ring of K cached transitions, so a rollout of any number of MDP
episodes keeps its last K transitions in context at one token per step.

All tokens share one Linear over the features
``[s | a | r | s' | readout flag | r * one-hot(a)]``, each part encoded as its space asks
(``encoders.py``; the last block for Discrete actions only); a readout fills only ``s`` (with the
query) and the flag.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .backbones import BackboneModel, Structure, make_backbone
from .encoders import ActionEncoder, ActionHead, ObsEncoder
from .transformer import ModelConfig, init_weights


class DPTModel(BackboneModel):
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
        self.obs_enc = ObsEncoder(config.observation)
        self.act_enc = ActionEncoder(config.action)
        self.discrete = config.discrete_actions
        # Feature columns: s [0, D) | a [D, D+A) | r D+A | s' [D+A+1, 2D+A+1) | readout flag 2D+A+1
        # | r * one-hot(a) [2D+A+2, 2D+2A+2) for Discrete actions. The last block puts the reward in
        # its action's column, so a single uniform attention head already averages rewards per
        # action: the sufficient statistics of a bandit posterior are then one layer away, not two.
        D, A = self.obs_enc.width, self.act_enc.width
        self.flag_col = 2 * D + A + 1
        self.feat_dim = 2 * D + A + 2 + (A if self.discrete else 0)
        self.embed = nn.Linear(self.feat_dim, config.n_embd, bias=config.bias)
        self.backbone = make_backbone(config, generator)
        self.head = ActionHead(config.n_embd, config.action, config.head, bias=config.bias)
        init_weights(self, config.n_layer, generator)
        self.backbone.after_init(generator)

    def context_features(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                         next_obs: torch.Tensor) -> torch.Tensor:
        """Transition features: obs (..., k), action (...) or (..., d), reward (...), next_obs (..., k) -> (..., F)."""
        dtype = self.embed.weight.dtype
        act = self.act_enc(action, dtype)  # (..., A)
        r = reward.to(dtype).unsqueeze(-1)  # (..., 1)
        parts = [self.obs_enc(obs, dtype), act, r, self.obs_enc(next_obs, dtype), torch.zeros_like(r)]
        if self.discrete:
            parts.append(act * r)  # (..., A) r in column a
        return torch.cat(parts, dim=-1)  # (..., F)

    def readout_features(self, query_obs: torch.Tensor) -> torch.Tensor:
        """Readout features: query_obs (..., k) -> (..., F) with the readout flag set."""
        dtype = self.embed.weight.dtype
        s = self.obs_enc(query_obs, dtype)  # (..., D)
        rest = torch.zeros(*s.shape[:-1], self.feat_dim - s.shape[-1], dtype=dtype, device=s.device)  # (..., F-D)
        rest[..., self.flag_col - s.shape[-1]] = 1.0
        return torch.cat((s, rest), dim=-1)  # (..., F)

    def forward(self, ctx_obs: torch.Tensor, ctx_action: torch.Tensor, ctx_reward: torch.Tensor,
                ctx_next_obs: torch.Tensor, query_obs: torch.Tensor, prefixes: torch.Tensor | None = None,
                task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the optimal action after every context prefix (or the given ones), in one pass.

        Args:
            ctx_obs: (B, n, k) states s_i (one column per flattened obs component).
            ctx_action: (B, n) int64 actions a_i, or (B, n, d) floats for Box actions.
            ctx_reward: (B, n) float rewards r_i.
            ctx_next_obs: (B, n, k) next states s'_i.
            query_obs: (B, k) one query for every prefix, or (B, J, k) a query per readout.
            prefixes: (J,) increasing prefix lengths in [0, n] to read out after (default 0..n, J = n+1).
                Training on a random subset is an unbiased, cheaper estimate of the all-prefix loss.
            task_ids: (B,) task of each sample, rows i and i + B/2 from one task (T2MIR); or None.

        Returns:
            (B, J, out) head outputs; row i is the prediction from the first prefixes[i] transitions.

        Raises:
            ValueError: if n exceeds ``config.block_size`` or the shapes disagree.
        """
        k = self.obs_enc.k
        if ctx_obs.dim() != 3 or ctx_obs.shape[-1] != k or ctx_next_obs.shape != ctx_obs.shape:
            raise ValueError(
                f"ctx_obs and ctx_next_obs must be (B, n, {k}), got {tuple(ctx_obs.shape)} and "
                f"{tuple(ctx_next_obs.shape)}"
            )
        B, n, _ = ctx_obs.shape
        action_shape = (B, n) if self.discrete else (B, n, self.act_enc.width)
        if ctx_action.shape != action_shape or ctx_reward.shape != (B, n):
            raise ValueError(
                f"ctx_action and ctx_reward must be {action_shape} and (B, n) = {(B, n)}, got "
                f"{tuple(ctx_action.shape)} and {tuple(ctx_reward.shape)}"
            )
        if n > self.config.block_size:
            raise ValueError(
                f"context of {n} transitions exceeds block_size={self.config.block_size}; shorten the context "
                f"or build the model with block_size >= {n}"
            )
        J = n + 1 if prefixes is None else len(prefixes)
        if prefixes is not None and (prefixes.dim() != 1 or J == 0 or int(prefixes.min()) < 0 or int(prefixes.max()) > n):
            raise ValueError(f"prefixes must be a non-empty 1-D tensor of prefix lengths in [0, {n}]")
        if query_obs.shape == (B, k):
            query_obs = query_obs[:, None].expand(B, J, k)  # (B, J, k)
        elif query_obs.shape != (B, J, k):
            raise ValueError(f"query_obs must be (B, k) = {(B, k)} or (B, J, k) = {(B, J, k)}, "
                             f"got {tuple(query_obs.shape)}")
        feats = torch.cat(
            (self.context_features(ctx_obs, ctx_action, ctx_reward, ctx_next_obs), self.readout_features(query_obs)),
            dim=1,
        )  # (B, n+J, F)
        x = self.embed(feats)  # (B, n+J, C)
        # Readout i sits at position prefixes[i], right after the context it sees.
        readouts = torch.arange(n + 1) if prefixes is None else prefixes
        h = self.backbone(x, Structure(n, self.config.window, readouts=readouts, task_ids=task_ids))  # (B, n+J, C)
        return self.head(h[:, n:])  # (B, J, out)

    @torch.no_grad()
    def append(self, cache: Any, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
               next_obs: torch.Tensor) -> None:
        """Add one transition per rollout to the context (inference only).

        Args:
            cache: from ``new_cache``.
            obs: (B, k) states; action: (B,) int64 or (B, d) float; reward: (B,) float; next_obs: (B, k).

        Raises:
            ValueError: when a linear cache already holds ``block_size`` transitions.
        """
        feats = self.context_features(obs[:, None], action[:, None], reward[:, None], next_obs[:, None])  # (B, 1, F)
        x = self.embed(feats)  # (B, 1, C)
        self.backbone.step(x, cache, commit=True)  # (B, 1, C), output unused: only the state matters

    @torch.no_grad()
    def readout(self, cache: Any, query_obs: torch.Tensor) -> torch.Tensor:
        """Logits for the query states given the cached context; the cache is left unchanged.

        Args:
            cache: from ``new_cache``, holding j transitions.
            query_obs: (B, k) query states.

        Returns:
            (B, out) head outputs; equal to row j of ``forward`` on the same context.
        """
        x = self.embed(self.readout_features(query_obs[:, None]))  # (B, 1, C)
        h = self.backbone.step(x, cache, commit=False)  # (B, 1, C)
        return self.head(h[:, 0])  # (B, out)
