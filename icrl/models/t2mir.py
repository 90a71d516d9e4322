"""The T2MIR backbone (``model.backbone: t2mir``; "Mixture-of-Experts Meets In-Context Reinforcement
Learning", NeurIPS 2025): the transformer with the feed-forward of its last block replaced by a
token-wise and a task-wise mixture of experts side by side (:class:`icrl.models.moe.T2MIRFeedForward`).

- Token-wise MoE, width C/2: every token routed on its own to ``experts_per_token`` of
  ``n_token_experts`` experts by a noisy top-k gate, ``G(x) = softmax(TopK(x W_g + eps * softplus(x W_n), k))``;
  load balance ``CV^2(Importance) + CV^2(Load)`` weighted by ``balance_weight`` (0.1).
- Task-wise MoE, width C - C/2: every token routed from the mean of the stream it sees (itself
  included; over the attention window when there is one; a readout from its prefix and itself), so
  routing is per sequence and a rollout routes online as the full pass does. Its router has a
  momentum copy, ``theta' <- (1 - tau) theta' + tau theta`` after every optimiser step (tau =
  ``router_tau``, 0.005), and an InfoNCE loss weighted by ``contrast_weight`` (0.01) pulls the
  routing of two segments of one task together against the other tasks of the batch:
  ``-log exp(q_i^T W k_i) / sum_j exp(q_i^T W k_j)``, queries from the online router, keys from the
  momentum router, W learned. Training batches pair segments by task (``task_ids``).

The online state is the KV cache plus the task router's pool (:class:`RoutedCache`); both copy, index
and fork (sharing the context: :class:`ForkedRoutedCache`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from icrl.models.backbones import Structure
from icrl.models.moe import ForkedPool, PoolState, T2MIRFeedForward
from icrl.models.forks import ForkedCache
from icrl.models.config import ModelConfig
from icrl.models.transformer import Block, KVCache, Transformer


def pooled_inputs(u: torch.Tensor, structure: Structure) -> torch.Tensor:
    """What the task router routes each token from: the mean of the stream inputs it sees and itself.

    Stream token t: the mean of u over stream tokens max(t - K + 1, start of its history) .. t.
    Readout with prefix j: the mean of the stream tokens j - K .. j - 1 and the readout itself (the
    tokens its attention row sees). Summed in float64; (B, T, C) -> (B, T, C) float64.
    """
    n, K = structure.n_stream, structure.band
    B, _, C = u.shape
    stream = u[:, :n].to(torch.float64)  # (B, n, C)
    csum = torch.cat((stream.new_zeros(B, 1, C), stream.cumsum(1)), dim=1)  # (B, n+1, C): csum[:, j] = sum of the first j
    t = torch.arange(n, device=u.device)  # (n,)
    start = (t - K + 1).clamp(min=0) if K is not None else torch.zeros_like(t)  # (n,)
    start = start.expand(B, n)  # (B, n)
    if structure.resets is not None:  # a history's tokens pool only from its own start
        seg_start = torch.where(structure.resets.to(u.device), t, 0).cummax(dim=1).values  # (B, n)
        start = torch.maximum(start, seg_start)
    idx = lambda i: i[:, :, None].expand(B, i.shape[1], C)  # noqa: E731 (B, m) -> (B, m, C) gather index
    total = csum[:, 1:] - csum.gather(1, idx(start))  # (B, n, C)
    out = total / (t + 1 - start)[:, :, None].to(torch.float64)  # (B, n, C)
    if structure.readouts is None:
        return out
    j = structure.readouts.to(u.device)  # (J,)
    lo = (j - K).clamp(min=0) if K is not None else torch.zeros_like(j)  # (J,)
    J = len(j)
    seen = csum[:, j] - csum[:, lo]  # (B, J, C)
    reads = (seen + u[:, n:].to(torch.float64)) / (j - lo + 1)[None, :, None].to(torch.float64)  # (B, J, C)
    return torch.cat((out, reads.view(B, J, C)), dim=1)  # (B, n+J, C)


class RoutedCache(KVCache):
    """The T2MIR online state: the KV cache and the task router's pool (``pool``, or None)."""

    pool: PoolState | None

    def copy(self) -> RoutedCache:
        out = super().copy()
        out.pool = None if self.pool is None else self.pool.copy()
        return out

    def index(self, idx: torch.Tensor) -> RoutedCache:
        out = super().index(idx)
        out.pool = None if self.pool is None else self.pool.index(idx)
        return out

    def fork(self, rows: torch.Tensor) -> ForkedRoutedCache:
        """Search nodes on rows ``rows`` sharing the keys, values and pool ring (``KVCache.fork``).

        Args:
            rows: (B',) int64 row of this cache every node continues.

        Returns:
            A :class:`ForkedRoutedCache` of B' nodes.
        """
        out = ForkedRoutedCache(self, rows)
        out.pool = None if self.pool is None else self.pool.fork(out.parent)
        return out


class ForkedRoutedCache(ForkedCache):
    """A fork of a :class:`RoutedCache`: a :class:`ForkedCache` plus the pool's fork (``pool``, a
    :class:`ForkedPool`, or None), which shares the root's ring as the cache shares its keys."""

    pool: ForkedPool | None

    def fork(self, rows: torch.Tensor) -> ForkedRoutedCache:
        """Nodes ``rows`` of this fork, the cache and the pool sharing what they hold (``ForkedCache.fork``)."""
        out = super().fork(rows)
        out.pool = None if self.pool is None else self.pool.fork(rows)
        return out


class T2MIR(Transformer):
    """Transformer blocks, the last one's feed-forward a :class:`T2MIRFeedForward` (see module doc)."""

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__(config, generator)
        self._aux: torch.Tensor | None = None

    def make_block(self, config: ModelConfig, index: int) -> nn.Module:
        block = Block(config)
        if index == config.n_layer - 1:
            block.mlp = T2MIRFeedForward(
                config.n_embd, n_token_experts=config.n_token_experts, n_task_experts=config.n_task_experts,
                k=config.experts_per_token, tau=config.router_tau, window=config.window,
                balance_weight=config.balance_weight, contrast_weight=config.contrast_weight,
                dropout=config.dropout, bias=config.bias)
        return block

    @property
    def moe(self) -> T2MIRFeedForward:
        return self.h[-1].mlp

    def run_block(self, block: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  mask: torch.Tensor | None, is_causal: bool, n_causal: int, structure: Structure) -> torch.Tensor:
        if block is not self.h[-1]:
            return block(x, cos, sin, mask, is_causal, n_causal)
        x = x + block.attn(block.ln_1(x), cos, sin, mask, is_causal, n_causal)  # (B, T, C)
        u = block.ln_2(x)  # (B, T, C)
        y, self._aux = block.mlp(u, structure.task_ids, pooled_inputs(u, structure), structure.n_stream - 1)
        return x + y  # (B, T, C)

    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> RoutedCache:
        cache = RoutedCache(self.config, batch_size, ring=self.config.window is not None, device=device, dtype=dtype)
        cache.pool = self.moe.init_state(batch_size, device)
        return cache

    def step_block(self, block: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   cache: Any, layer: int, slot: int, n_keys: int, commit: bool) -> torch.Tensor:
        if block is not self.h[-1]:
            return super().step_block(block, x, cos, sin, cache, layer, slot, n_keys, commit)
        u = block.ln_1(x)  # (B, 1, C)
        if isinstance(cache, ForkedCache):
            x = x + block.attn.decode_fork(u, cos, sin, cache, layer, commit)  # (B, 1, C)
        else:
            x = x + block.attn.decode(u, cos, sin, cache.k[layer], cache.v[layer], slot, n_keys)  # (B, 1, C)
        return x + block.mlp.decode(block.ln_2(x), cache.pool, commit)  # (B, 1, C)

    def after_init(self, generator: torch.Generator | None) -> None:
        """The contrastive W from ``generator`` (N(0, 1)), and the momentum router = the router."""
        nn.init.normal_(self.moe.contrast_w, 0.0, 1.0, generator=generator)
        self.moe.sync_target()

    def aux_loss(self) -> torch.Tensor | None:
        """Balance (and, with task_ids, InfoNCE) loss of the last full pass, weighted."""
        return self._aux

    def after_step(self) -> None:
        self.moe.update_target()
