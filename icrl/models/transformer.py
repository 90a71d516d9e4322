"""The transformer backbone (``model.backbone: transformer``): causal pre-norm blocks with RoPE and a
KV cache (its ``ModelConfig`` is :mod:`icrl.models.config`).

The backbone follows nanoGPT (pre-norm blocks, GELU MLP, final LayerNorm) and attends with
``torch.nn.functional.scaled_dot_product_attention`` so that fused kernels are picked where the
mask allows it. Positions enter only through rotary embeddings (RoPE; Su et al. 2021,
"RoFormer"), so attention scores depend on relative offsets and a rolling KV cache can
run past the training length. Rotation angles are computed in float64 from integer positions and
then cast, so a full pass and a cached decode rotate position ``p`` identically, whatever ``p``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from icrl.models.backbones import Structure, banded_causal_mask, readout_mask, segment_mask
from icrl.models.config import ModelConfig
from icrl.models.forks import ForkedCache

ROPE_BASE = 10_000.0


def rope_cos_sin(positions: torch.Tensor, head_size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE rotation tables for integer positions (RoFormer: theta_i = base^(-2i/d)).

    Angles are formed in float64 and cast afterwards, so position p gets bit-identical
    rotations in a full pass and in a cached decode (float32 angles lose precision at large p).

    Args:
        positions: (T,) int64 absolute positions.
        head_size: per-head width (even).
        dtype: dtype of the returned tables.

    Returns:
        cos, sin of shape (T, head_size // 2).
    """
    half = head_size // 2
    inv_freq = ROPE_BASE ** (-torch.arange(half, dtype=torch.float64, device=positions.device) / half)  # (hs/2,)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # (T, hs/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)  # (T, hs/2) each


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs (x_i, x_{i+hs/2}) by the position's angles: (B, nh, T, hs) -> same."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, nh, T, hs)


class KVCache:
    """Preallocated keys and values of every layer for incremental decoding.

    ``ring=True`` (a model with a window K): K context slots, the token at position p in slot
    ``p % K``. Keys are rotated with their absolute position *before* they are cached, and
    softmax attention does not depend on key order, so attending over the ring equals the
    banded-mask attention of the full pass. ``ring=False`` (no window): a linear buffer of
    ``capacity`` tokens. One scratch slot after the context slots holds a readout token
    (``commit=False``, e.g. DPT's query) while it attends to the context; it is never counted as
    context. ``copy`` and ``index`` copy rows of the cache; ``fork`` makes search nodes that share
    it (:class:`ForkedCache`, for planning).

    Attributes:
        k, v: (n_layer, B, nh, n_slots, hs) buffers, written in place.
        pos: number of tokens appended so far (the next token's absolute position).
        capacity: most tokens the cache can hold (``None`` for a ring, which never fills).
        window: context slots of a ring (``None`` for a linear cache).
    """

    def __init__(self, config: ModelConfig, batch_size: int, *, ring: bool, device: torch.device | str,
                 dtype: torch.dtype) -> None:
        hs = config.n_embd // config.n_head
        self.ring = ring
        if ring:
            assert config.window is not None
            self.window, self.capacity = config.window, None
        else:
            self.window, self.capacity = None, config.block_size
        n_slots = (self.window or self.capacity) + 1  # context slots + readout scratch
        shape = (config.n_layer, batch_size, config.n_head, n_slots, hs)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nh, S, hs)
        self.v = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nh, S, hs)
        self.n_slots = n_slots
        self.batch_size = batch_size
        self.pos = 0

    def reset(self) -> None:
        """Forget every cached token (buffers are reused, not reallocated)."""
        self.pos = 0

    def copy(self) -> KVCache:
        """An independent copy (a forked rollout)."""
        out = copy.copy(self)
        out.k, out.v = self.k.clone(), self.v.clone()
        return out

    def index(self, idx: torch.Tensor) -> KVCache:
        """The caches of batch rows ``idx`` (repeats allowed), as a new cache."""
        out = copy.copy(self)
        out.k, out.v = self.k[:, idx], self.v[:, idx]  # (L, len(idx), nh, S, hs)
        out.batch_size = len(idx)
        return out

    def fork(self, rows: torch.Tensor) -> ForkedCache:
        """Search nodes continuing batch rows ``rows`` (repeats allowed) that share this cache's
        context instead of copying it (:class:`ForkedCache`); valid until this cache commits again.

        Args:
            rows: (B',) int64 row of this cache every node continues.

        Returns:
            A :class:`ForkedCache` of B' nodes at this cache's ``pos``.
        """
        return ForkedCache(self, rows)

    @property
    def n_valid(self) -> int:
        """Cached context tokens the next query may attend to (a prefix of the slots)."""
        return min(self.pos, self.window) if self.ring else self.pos


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with RoPE; masked by the caller, decoded against a KVCache."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cos is None:  # no positional encoding
            return q, k, v
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v  # (B, nh, T, hs) each

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        B, nh, T, hs = y.shape
        y = y.transpose(1, 2).contiguous().view(B, T, nh * hs)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, n_causal: int = 0) -> torch.Tensor:
        """Full pass: (B, T, C) -> (B, T, C).

        ``mask`` is (T, T) bool (True = may attend) or None. With ``n_causal = n > 0`` the first n
        tokens are plain causal among themselves and ``mask`` holds only the other rows,
        (T - n, T): the two parts run as two SDPA calls, the first on the fused causal kernel,
        instead of one call over the whole (T, T) mask (DPT: context tokens, then readouts).
        """
        q, k, v = self._qkv(x, cos, sin)  # (B, nh, T, hs) each
        p = self.dropout if self.training else 0.0
        if n_causal:
            y_ctx = F.scaled_dot_product_attention(q[:, :, :n_causal], k[:, :, :n_causal], v[:, :, :n_causal],
                                                   is_causal=True, dropout_p=p)  # (B, nh, n, hs)
            y_rest = F.scaled_dot_product_attention(q[:, :, n_causal:], k, v, attn_mask=mask,
                                                    dropout_p=p)  # (B, nh, T-n, hs)
            return self._out(torch.cat((y_ctx, y_rest), dim=2))  # (B, T, C)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=p)  # (B, nh, T, hs)
        return self._out(y)  # (B, T, C)

    def decode(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache_k: torch.Tensor,
               cache_v: torch.Tensor, slot: int, n_keys: int) -> torch.Tensor:
        """One token against the cache: (B, 1, C) -> (B, 1, C).

        Its key and value are written into ``slot``, then it attends to slots ``[0, n_keys)``.
        The valid slots are always a prefix, so slicing them replaces a boolean mask of valid
        slots; ``is_causal`` stays False (SDPA would align it top-left, i.e. to key 0 only).
        """
        q, k, v = self._qkv(x, cos, sin)  # (B, nh, 1, hs) each
        cache_k[:, :, slot : slot + 1].copy_(k)  # (B, nh, 1, hs) into (B, nh, S, hs)
        cache_v[:, :, slot : slot + 1].copy_(v)  # (B, nh, 1, hs) into (B, nh, S, hs)
        keys, values = cache_k[:, :, :n_keys], cache_v[:, :, :n_keys]  # (B, nh, n_keys, hs) each
        y = F.scaled_dot_product_attention(q.to(keys.dtype), keys, values, is_causal=False)  # (B, nh, 1, hs)
        return self._out(y.to(x.dtype))  # (B, 1, C)

    def decode_fork(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: ForkedCache, layer: int,
                    commit: bool) -> torch.Tensor:
        """One token per node of a fork: (B, 1, C) -> (B, 1, C); see ``ForkedCache.attend``."""
        q, k, v = self._qkv(x, cos, sin)  # (B, nh, 1, hs) each
        y = cache.attend(layer, q, k, v, commit)  # (B, nh, 1, hs)
        return self._out(y.to(x.dtype))  # (B, 1, C)


class MLP(nn.Module):
    """Position-wise feed-forward block, 4x expansion with GELU (GPT-2)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, n_causal: int = 0) -> torch.Tensor:
        """Full pass: (B, T, C) -> (B, T, C)."""
        x = x + self.attn(self.ln_1(x), cos, sin, mask, is_causal, n_causal)  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)

    def decode(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache_k: torch.Tensor,
               cache_v: torch.Tensor, slot: int, n_keys: int) -> torch.Tensor:
        """One cached token: (B, 1, C) -> (B, 1, C); see ``CausalSelfAttention.decode``."""
        x = x + self.attn.decode(self.ln_1(x), cos, sin, cache_k, cache_v, slot, n_keys)  # (B, 1, C)
        return x + self.mlp(self.ln_2(x))  # (B, 1, C)

    def decode_fork(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: ForkedCache, layer: int,
                    commit: bool) -> torch.Tensor:
        """One token per node of a fork: (B, 1, C) -> (B, 1, C); see ``ForkedCache``."""
        x = x + self.attn.decode_fork(self.ln_1(x), cos, sin, cache, layer, commit)  # (B, 1, C)
        return x + self.mlp(self.ln_2(x))  # (B, 1, C)


class Transformer(nn.Module):
    """Stack of pre-norm blocks plus final LayerNorm over already-embedded tokens (the backbone
    contract of :mod:`icrl.models.backbones`; its online state is a :class:`KVCache`)."""

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        self.head_size = config.n_embd // config.n_head
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(self.make_block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self._masks = MaskCache()

    def make_block(self, config: ModelConfig, index: int) -> nn.Module:
        """Block ``index`` of the stack (a subclass may replace some, e.g. T2MIR's last)."""
        return Block(config)

    @staticmethod
    def capacity_of(config: ModelConfig) -> int | None:
        """Tokens a rollout may hold: unbounded on a ring (a window), else ``block_size``."""
        return None if config.window is not None else config.block_size

    def attention(self, structure: Structure, device: torch.device) -> tuple[torch.Tensor | None, bool, int]:
        """The mask, ``is_causal`` and ``n_causal`` of ``structure`` (see ``CausalSelfAttention.forward``).

        A plain causal stream runs on SDPA's fused causal kernel; a window is a banded mask; readouts
        add their rows under the readout block mask, the stream rows staying fused-causal when
        there is no window; resets cut the stream into histories, (B, 1, T, T) per sequence.
        """
        n, K = structure.n_stream, structure.band
        resets = structure.split_resets()
        if structure.readouts is None:
            if resets is not None:
                within = banded_causal_mask(n, K) if K is not None else banded_causal_mask(n, n)  # (T, T)
                return (segment_mask(resets) & within.to(device))[:, None], False, 0  # (B, 1, T, T)
            if K is None:
                return None, True, 0
            return self._masks.get(("band", n, K), device, lambda: banded_causal_mask(n, K)), False, 0  # (T, T)
        if resets is not None:
            raise ValueError("a structure with readouts takes no resets")
        rows = slice(n, None) if K is None else slice(None)  # without a window only the readout rows need a mask
        if structure.n_readouts == n + 1 and torch.equal(structure.readouts.cpu(), torch.arange(n + 1)):
            # a readout after every prefix, in order: the same mask every batch
            mask = self._masks.get(("readout", n, K), device, lambda: readout_mask(n, window=K)[rows])
        else:
            mask = readout_mask(n, structure.readouts, K)[rows].to(device)  # (J or n+J, n+J)
        return mask, False, n if K is None else 0

    def forward(self, x: torch.Tensor, structure: Structure) -> torch.Tensor:
        """Full pass over a sequence of embedded tokens: (B, T, C) -> (B, T, C) final hidden states.

        Positions (RoPE) are the stream index for stream tokens and the prefix length for readouts,
        so a readout sits exactly where an online readout after that prefix sits.
        """
        mask, is_causal, n_causal = self.attention(structure, x.device)
        cos, sin = self._rope(structure.positions(x.device), x.dtype)  # (T, hs/2) each, or None
        x = self.drop(x)  # (B, T, C)
        for block in self.h:
            x = self.run_block(block, x, cos, sin, mask, is_causal, n_causal, structure)  # (B, T, C)
        return self.ln_f(x)  # (B, T, C)

    def run_block(self, block: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  mask: torch.Tensor | None, is_causal: bool, n_causal: int, structure: Structure) -> torch.Tensor:
        """One block of the full pass: (B, T, C) -> (B, T, C) (a subclass may route by ``structure``)."""
        return block(x, cos, sin, mask, is_causal, n_causal)

    def step_block(self, block: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   cache: KVCache | ForkedCache, layer: int, slot: int, n_keys: int, commit: bool) -> torch.Tensor:
        """One block of ``step``: (B, 1, C) -> (B, 1, C)."""
        if isinstance(cache, ForkedCache):
            return block.decode_fork(x, cos, sin, cache, layer, commit)
        return block.decode(x, cos, sin, cache.k[layer], cache.v[layer], slot, n_keys)

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.config.rope:
            return None, None
        return rope_cos_sin(positions, self.head_size, dtype)

    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> KVCache:
        """An empty cache for ``batch_size`` rollouts: a ring of ``window`` slots, or ``block_size``."""
        return KVCache(self.config, batch_size, ring=self.config.window is not None, device=device, dtype=dtype)

    def slot(self, cache: KVCache, commit: bool) -> tuple[int, int]:
        """The cache slot the next token is written to and how many slots it attends to."""
        pos = cache.pos
        if cache.ring:
            K = cache.window
            if commit:
                return pos % K, min(pos + 1, K)
            slot = min(pos, K)  # the K context slots are a prefix of the buffer, the scratch slot K comes right after
            return slot, slot + 1
        limit = cache.capacity if commit else cache.capacity + 1  # a readout may use the scratch slot
        if pos + 1 > limit:
            raise ValueError(
                f"cache is full: {cache.pos} tokens reached block_size={cache.capacity}; build the model "
                f"with a larger block_size (or set a window K to decode with a rolling cache)"
            )
        return pos, pos + 1

    def step(self, x: torch.Tensor, cache: KVCache | ForkedCache, commit: bool = True) -> torch.Tensor:
        """Run one token at position ``cache.pos`` against the cache.

        Args:
            x: (B, 1, C) embedding of the new token.
            cache: from ``init_state``, or a fork of one (``cache.fork``); ``cache.pos`` advances by
                one if ``commit``.
            commit: False for a readout: the token attends to the cached context and to itself
                and leaves the context unchanged. It sits in the slot the next context token will
                overwrite, or, once a ring is full, in the scratch slot after the ring (a fork
                writes nothing for a readout).

        Returns:
            (B, 1, C) final hidden state of the token.
        """
        if x.shape[0] != cache.batch_size:
            raise ValueError(f"batch of {x.shape[0]} tokens for a cache built for batch_size={cache.batch_size}")
        if isinstance(cache, ForkedCache):
            cache.prepare(commit)
            slot, n_keys = cache.depth, 0  # unused: a fork places its token itself
        else:
            slot, n_keys = self.slot(cache, commit)
        positions = torch.tensor([cache.pos], dtype=torch.long, device=x.device)  # (1,)
        cos, sin = self._rope(positions, x.dtype)  # (1, hs/2) each, or None
        for i, block in enumerate(self.h):
            x = self.step_block(block, x, cos, sin, cache, i, slot, n_keys, commit)  # (B, 1, C)
        if commit:
            cache.pos += 1
        return self.ln_f(x)  # (B, 1, C)

    def after_init(self, generator: torch.Generator | None) -> None:
        """Nothing to finish after the model's GPT-2 initialisation."""

    def aux_loss(self) -> torch.Tensor | None:
        """No auxiliary loss: None."""
        return None

    def after_step(self) -> None:
        """Nothing to update after an optimiser step."""

    def no_weight_decay(self) -> set[nn.Parameter]:
        """Matrices kept out of weight decay: none."""
        return set()


def init_weights(module: nn.Module, n_layer: int, generator: torch.Generator | None) -> None:
    """GPT-2 initialisation: N(0, 0.02) weights, zero biases, residual projections scaled by
    1/sqrt(2 * n_layer) (GPT-2 paper, Sec. 2.3); drawn from ``generator`` for reproducibility.
    Submodules with ``own_init = True`` (S5 layers: HiPPO) keep the weights they were built with."""
    own = [name + "." for name, m in module.named_modules() if getattr(m, "own_init", False)]
    for name, m in module.named_modules():
        if any(name.startswith(prefix) or name + "." == prefix for prefix in own):
            continue
        if isinstance(m, nn.Linear):
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj") else 0.02
            nn.init.normal_(m.weight, 0.0, std, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MaskCache:
    """Boolean attention masks built once per key and reused (per device)."""

    def __init__(self) -> None:
        self._masks: dict[tuple[Any, ...], torch.Tensor] = {}

    def get(self, key: tuple[Any, ...], device: torch.device, build: Any) -> torch.Tensor:
        """Return the mask for ``key`` on ``device``, calling ``build()`` the first time."""
        full_key = (*key, str(device))
        if full_key not in self._masks:
            self._masks[full_key] = build().to(device)
        return self._masks[full_key]

