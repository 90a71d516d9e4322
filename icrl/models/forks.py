"""Forks of a KV cache that share its context: a planner's search nodes (docs/architecture.md#backbones).

:class:`ForkedCache` continues rows of a :class:`~icrl.models.transformer.KVCache` without copying
their context; ``Transformer.step`` attends a fork's token to the root's slots its window covers,
to the node's own imagined suffix and to itself, and merges the three blocks by their log-sum-exp.
"""
from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from icrl.models.transformer import KVCache


def grid_layout(parent: torch.Tensor, n_groups: int) -> tuple[int, torch.Tensor | None]:
    """Where each of B rows goes in a padded (n_groups, M) grid of rows grouped by ``parent``.

    Args:
        parent: (B,) int64 group of every row, in [0, n_groups).
        n_groups: the number of groups G.

    Returns:
        M, the most rows of one group, and (B,) int64 the flat cell ``g * M + rank`` of every row in
        the grid; the cells are None when the rows already are the grid (B = G M rows ordered by
        group, M each: a beam search's layout), so grouping is a view.
    """
    B = len(parent)
    dense = torch.arange(n_groups, device=parent.device).repeat_interleave(B // n_groups)  # (G * (B // G),)
    if B % n_groups == 0 and torch.equal(parent, dense):
        return B // n_groups, None
    counts = torch.bincount(parent, minlength=n_groups)  # (G,)
    order = torch.argsort(parent, stable=True)  # (B,) rows sorted by group
    first = counts.cumsum(0) - counts  # (G,) index of each group's first row in ``order``
    rank = torch.empty_like(parent)  # (B,)
    rank[order] = torch.arange(B, device=parent.device) - first[parent[order]]
    M = max(1, int(counts.max()))
    return M, parent * M + rank  # (B,)


def to_grid(t: torch.Tensor, cells: torch.Tensor | None, n_groups: int, M: int) -> torch.Tensor:
    """Rows (B, ...) -> grid (G, M, ...), padding cells no row fills with zeros (see ``grid_layout``)."""
    if cells is None:
        return t.reshape(n_groups, M, *t.shape[1:])  # (G, M, ...)
    out = t.new_zeros(n_groups * M, *t.shape[1:])  # (G*M, ...)
    out[cells] = t
    return out.view(n_groups, M, *t.shape[1:])  # (G, M, ...)


def from_grid(t: torch.Tensor, cells: torch.Tensor | None) -> torch.Tensor:
    """Grid (G, M, ...) -> rows (B, ...), the inverse of ``to_grid``."""
    flat = t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])  # (G*M, ...)
    return flat if cells is None else flat[cells]  # (B, ...)


def partial_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Attention of grouped queries over one block of keys, before normalisation.

    Args:
        q: (G, nh, M, hs) queries, already scaled by 1/sqrt(hs): M per group.
        keys, values: (G, nh, n, hs) the block of keys and values each group's queries see.

    Returns:
        (G, nh, M, hs + 2): ``sum_j e_j v_j``, the largest score m and ``sum_j e_j``, with
        ``e_j = exp(s_j - m)``; :func:`merge_attention` combines such parts into the softmax over all.
    """
    s = q @ keys.transpose(-2, -1)  # (G, nh, M, n)
    m = s.amax(-1, keepdim=True)  # (G, nh, M, 1)
    e = s.sub_(m).exp_()  # (G, nh, M, n)
    return torch.cat((e @ values, m, e.sum(-1, keepdim=True)), dim=-1)  # (G, nh, M, hs+2)


def merge_attention(parts: list[torch.Tensor]) -> torch.Tensor:
    """Softmax attention over the union of key blocks from their ``partial_attention`` outputs
    (the log-sum-exp merge of FlashAttention's split softmax): list of (..., hs + 2) -> (..., hs)."""
    m = torch.stack([p[..., -2] for p in parts]).amax(0)  # (...,) largest score over all blocks
    num, den = 0.0, 0.0
    for p in parts:
        a = torch.exp(p[..., -2] - m)[..., None]  # (..., 1) rescales the block to the common maximum
        num = num + p[..., :-2] * a  # (..., hs)
        den = den + p[..., -1:] * a  # (..., 1)
    return num / den  # (..., hs)


class ForkedCache:
    """Search nodes that continue rows of a :class:`KVCache` and share its context (a planner's forks).

    ``KVCache.index`` copies a row's whole context for every node: with N rollouts, K beams, A
    actions and a window W that is N K A x W keys and values per layer at every depth of a beam
    search, to read one token out of each. A fork instead keeps

    - the root cache itself (N rows; shared and never written),
    - ``parent``, every node's root row,
    - the node's *suffix*: the keys and values of the tokens it committed since the fork (at most
      the search depth), per suffix row, with ``rows`` naming each node's suffix row.

    A token of a node at position p attends to the root row's context slots that its window still
    covers, chosen by absolute position (a committed token sees p - W + 1 .. p, a readout p - W ..
    p - 1 and itself, as the ring does: after d imagined tokens the oldest root tokens have left the
    window), to the node's suffix tokens the window covers and to itself; RoPE continues from the
    root's ``pos``. The three blocks are attended apart and merged (``merge_attention``): all nodes
    of one root row query the root's keys as one block of queries, and all nodes of one suffix row
    its suffix (``grid_layout``), so no node's keys are gathered or copied for a readout.

    ``fork`` (of a fork) indexes ``parent`` and ``rows`` and copies nothing: the suffix is copied
    on write, when a node commits a token. Reading A query actions out of K beams is thus A K
    tokens of compute, with no state built per readout. ``copy`` and ``index`` are ``fork`` (a
    fork's tensors are never written once shared), so a fork keeps the state contract.

    Attributes:
        root: the forked :class:`KVCache`; it must not commit while its forks are used.
        base: ``root.pos`` at the fork (checked at every step).
        parent: (B,) int64 root row of every node.
        k, v: (L, S, nh, d, hs) keys and values of the d suffix tokens, per suffix row.
        rows: (B,) int64 suffix row of every node, or None when node i owns row i.
        pos: the next token's absolute position, ``base + d``.
        batch_size: B.
    """

    def __init__(self, root: KVCache, rows: torch.Tensor) -> None:
        rows = rows.to(root.k.device)
        L, _, nh, _, hs = root.k.shape
        self.root, self.base, self.pos = root, root.pos, root.pos
        self.parent, self.rows = rows, None
        self.k = root.k.new_zeros(L, len(rows), nh, 0, hs)  # (L, B, nh, 0, hs): no suffix yet
        self.v = root.v.new_zeros(L, len(rows), nh, 0, hs)  # (L, B, nh, 0, hs)
        self.batch_size = len(rows)
        self._layouts: tuple[tuple[int, torch.Tensor | None], tuple[int, torch.Tensor | None]] | None = None
        self._seen: tuple[list[tuple[int, int]], int] = ([], 0)  # visible root slot spans, first visible suffix token

    def fork(self, rows: torch.Tensor) -> ForkedCache:
        """Nodes ``rows`` of this fork (repeats allowed), sharing the root and the suffixes.

        Args:
            rows: (B',) int64 node of this fork every new node continues.

        Returns:
            A fork of B' nodes; nothing is copied but the two (B',) indices.
        """
        out = copy.copy(self)
        out.parent = self.parent[rows]  # (B',)
        out.rows = rows if self.rows is None else self.rows[rows]  # (B',)
        out.batch_size = len(rows)
        out._layouts = None
        return out

    def copy(self) -> ForkedCache:
        """An independent continuation of every node (a fork of all rows)."""
        return self.fork(torch.arange(self.batch_size, device=self.parent.device))

    def index(self, idx: torch.Tensor) -> ForkedCache:
        """The nodes ``idx`` (repeats allowed): ``fork(idx)``."""
        return self.fork(idx)

    @property
    def depth(self) -> int:
        """Tokens committed since the fork (the suffix length d)."""
        return self.pos - self.base

    def prepare(self, commit: bool) -> None:
        """Get ready for one token (``Transformer.step`` calls it before the blocks).

        Checks that the root has not moved on and that a linear cache has room, works out which
        root slots and suffix tokens the token sees (the same for every node), groups the nodes by
        root row and by suffix row, and, for a committed token, gives the nodes suffix buffers of
        their own with a slot for it (copy on write).
        """
        root = self.root
        if root.pos != self.base:
            raise ValueError(f"the forked cache committed {root.pos - self.base} tokens since the fork; "
                             f"fork it again after it moves on")
        if not root.ring and self.pos + 1 > (root.capacity if commit else root.capacity + 1):
            raise ValueError(
                f"cache is full: {self.pos} tokens reached block_size={root.capacity}; build the model "
                f"with a larger block_size (or set a window K to decode with a rolling cache)"
            )
        d = self.depth
        # the oldest position the window still covers: root tokens and suffix tokens from it on
        lowest = self.pos - root.window + (1 if commit else 0) if root.ring else 0
        start = max(lowest, self.base - root.n_valid)  # the first visible root position
        if root.ring:  # positions start .. base - 1 lie in the ring's slots from start % K on, cyclically
            first, end = start % root.window, start % root.window + self.base - start
            spans = [(first, min(end, root.window)), (0, end - root.window)] if end > root.window else [(first, end)]
        else:
            spans = [(start, self.base)]
        self._seen = ([span for span in spans if span[1] > span[0]], min(d, max(0, lowest - self.base)))
        if commit:
            L, _, nh, _, hs = self.k.shape
            k = self.k.new_empty(L, self.batch_size, nh, d + 1, hs)  # (L, B, nh, d+1, hs)
            v = self.v.new_empty(L, self.batch_size, nh, d + 1, hs)  # (L, B, nh, d+1, hs)
            k[:, :, :, :d] = self.k if self.rows is None else self.k[:, self.rows]  # (L, B, nh, d, hs)
            v[:, :, :, :d] = self.v if self.rows is None else self.v[:, self.rows]  # (L, B, nh, d, hs)
            self.k, self.v, self.rows, self._layouts = k, v, None, None
        if self._layouts is None:
            own = (1, None) if self.rows is None else grid_layout(self.rows, self.k.shape[1])
            self._layouts = (grid_layout(self.parent, root.batch_size), own)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, commit: bool) -> torch.Tensor:
        """Attention of one token per node over root context, suffix and itself (after ``prepare``).

        Args:
            layer: the block's index.
            q, k, v: (B, nh, 1, hs) the token's query, key and value, rotated to position ``pos``.
            commit: True to store k and v in the node's suffix slot ``depth``.

        Returns:
            (B, nh, 1, hs) in the cache's dtype: softmax(q K^T / sqrt(hs)) V over the keys it sees.
        """
        root, d = self.root, self.depth
        dtype = root.k.dtype
        q = q.to(dtype) * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, 1, hs)
        k, v = k.to(dtype), v.to(dtype)  # (B, nh, 1, hs) each
        spans, first = self._seen
        s_self = (q * k).sum(-1, keepdim=True)  # (B, nh, 1, 1) the token's score on itself
        parts = [torch.cat((v, s_self, torch.ones_like(s_self)), dim=-1)]  # (B, nh, 1, hs+2): e = 1 at m = s_self
        blocks = [(self._layouts[0], root.k[layer, :, :, a:b], root.v[layer, :, :, a:b])  # (N, nh, b-a, hs) root slots
                  for a, b in spans]
        blocks.append((self._layouts[1], self.k[layer, :, :, first:d], self.v[layer, :, :, first:d]))  # (S, nh, d', hs)
        for (M, cells), keys, values in blocks:
            if keys.shape[2] == 0:
                continue
            G = keys.shape[0]
            q_grid = to_grid(q[:, :, 0], cells, G, M).transpose(1, 2)  # (G, nh, M, hs) the queries of each group
            out = partial_attention(q_grid, keys, values)  # (G, nh, M, hs+2)
            parts.append(from_grid(out.transpose(1, 2), cells)[:, :, None])  # (B, nh, 1, hs+2)
        if commit:
            self.k[layer, :, :, d] = k[:, :, 0]  # (B, nh, hs)
            self.v[layer, :, :, d] = v[:, :, 0]  # (B, nh, hs)
        return merge_attention(parts)  # (B, nh, 1, hs)
