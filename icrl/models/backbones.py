"""The backbone contract: the sequence network AD and DPT run on, chosen by ``model.backbone``
(docs/architecture.md#backbones).

A backbone maps already-embedded tokens (B, T, C) to hidden states (B, T, C). What a token may see
is the method's business and reaches the backbone as a :class:`Structure`: a causal *stream* of
tokens (AD: every step; DPT: the context transitions), an optional sliding window over it, optional
*readouts* after the stream (DPT: readout j sees the first j stream tokens and itself, and nothing
sees it) and optional *resets* (a stream token that starts a new history sees nothing before it).
Every backbone offers:

- ``forward(x, structure)``: the full pass, (B, T, C) -> (B, T, C).
- ``init_state(batch_size, device, dtype)`` and ``step(x, state, commit=True)``: one token at a
  time for online rollouts, (B, 1, C) -> (B, 1, C), equal to the full pass at that token. With
  ``commit=False`` the token is a readout: it sees the state and is not added to it. A state has
  ``pos`` (tokens committed), ``copy()`` and ``index(idx)`` (rows of the batch, repeated or
  reordered, as new states), and ``fork(rows)``: search nodes continuing those rows that a
  planner steps instead of the rollout's state. A fork may share the state's context rather than
  copy it (the transformer's ``ForkedCache``: the root cache, each node's root row and the tokens
  the node committed since; S5 just indexes its small state); it steps like the rows it
  continues, forks again (``fork``, ``copy``, ``index``) without copying shared parts, and is
  valid until the forked state commits another token.
- ``aux_loss()``: the auxiliary loss of the last full pass (None for a backbone without one), which
  the trainer adds to the action loss; ``after_step()`` after every optimiser step (T2MIR's momentum router);
  ``no_weight_decay()``: parameters kept out of weight decay beyond the biases and gains.
- ``capacity_of(config)`` (static): the most tokens a rollout may hold, None when unbounded (a ring
  cache, an SSM); ``ModelConfig.capacity`` asks it.

Registered: ``transformer`` (:mod:`icrl.models.transformer`), ``t2mir`` (:mod:`icrl.models.t2mir`)
and ``s5`` (:mod:`icrl.models.s5`). A new backbone is one module with a class that takes
``(config, generator)`` plus one line in :data:`BACKBONES`; :func:`check_backbone` is the
conformance check the test suite runs over every registered name.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

# name -> "module:Class"; the class is built as Class(config, generator)
BACKBONES = {
    "transformer": "icrl.models.transformer:Transformer",
    "t2mir": "icrl.models.t2mir:T2MIR",
    "s5": "icrl.models.s5:S5Backbone",
}
ATTENTION = ("transformer", "t2mir")  # backbones with n_head, a window and a block_size-bound cache


@dataclass(frozen=True)
class Structure:
    """Which token sees which in one full pass over ``n_stream`` stream tokens and J readouts.

    Attributes:
        n_stream: the first ``n_stream`` tokens form the causal stream.
        window: stream token t sees stream tokens t - K + 1 .. t; readout j sees j - K .. j - 1;
            None (or K >= n_stream) = everything before.
        readouts: (J,) int64 prefix lengths in [0, n_stream], one per token after the stream, in any
            order; None = no readouts. Readout i has position ``readouts[i]``.
        resets: (B, n_stream) bool, True where a stream token starts a new history; None = none.
            Readouts are not combined with resets.
        task_ids: (B,) task of every sequence, rows i and i + B/2 two segments of one task (T2MIR's
            contrastive pairs); None outside training.
    """

    n_stream: int
    window: int | None = None
    readouts: torch.Tensor | None = None
    resets: torch.Tensor | None = None
    task_ids: torch.Tensor | None = None

    @property
    def n_readouts(self) -> int:
        return 0 if self.readouts is None else len(self.readouts)

    @property
    def band(self) -> int | None:
        """The window where it cuts anything off (K < n_stream), else None."""
        return self.window if self.window is not None and self.window < self.n_stream else None

    def positions(self, device: torch.device) -> torch.Tensor:
        """(T,) int64 position of every token: 0..n-1 for the stream, the prefix length for a readout."""
        pos = torch.arange(self.n_stream)
        if self.readouts is not None:
            pos = torch.cat((pos, self.readouts.cpu()))
        return pos.to(device)

    def split_resets(self) -> torch.Tensor | None:
        """The resets that cut a sequence (any after its first token), or None when there are none.
        A reset at token 0 changes nothing: every sequence starts from an empty state."""
        if self.resets is None or not bool(self.resets[:, 1:].any()):
            return None
        return self.resets


def banded_causal_mask(T: int, window: int) -> torch.Tensor:
    """(T, T) bool: query t may attend key s iff t - window < s <= t (AD's sliding window)."""
    t = torch.arange(T)[:, None]  # (T, 1)
    s = torch.arange(T)[None, :]  # (1, T)
    return (s <= t) & (s > t - window)  # (T, T)


def readout_mask(n: int, prefixes: torch.Tensor | None = None, window: int | None = None) -> torch.Tensor:
    """(n+J, n+J) bool mask: n causal context tokens, then J readouts, readout i seeing context < prefixes[i] and self.

    ``prefixes`` defaults to 0..n (J = n+1, a readout after every prefix). With ``window = K`` a
    context token sees only the K - 1 tokens before it, and readout i only context >= prefixes[i] - K.
    """
    prefixes = torch.arange(n + 1) if prefixes is None else prefixes.cpu()
    L = n + len(prefixes)
    row = torch.arange(L)[:, None]  # (L, 1)
    col = torch.arange(L)[None, :]  # (1, L)
    ctx_row, ctx_col = row < n, col < n  # (L, 1), (1, L)
    causal_ctx = ctx_row & ctx_col & (col <= row)  # (L, L) context sees its causal prefix
    row_prefix = torch.cat((torch.zeros(n, dtype=torch.long), prefixes))[:, None]  # (L, 1) prefix length per readout row
    prefix = ~ctx_row & ctx_col & (col < row_prefix)  # (L, L) readout i sees context < prefixes[i]
    if window is not None:
        causal_ctx &= col > row - window  # (L, L) the last K context tokens, self included
        prefix &= col >= row_prefix - window  # (L, L) the K transitions before the readout
    return causal_ctx | prefix | (row == col)  # (L, L) every token sees itself


def segment_mask(resets: torch.Tensor) -> torch.Tensor:
    """(B, T, T) bool: token t may see token s iff no reset lies in (s, t] (same history)."""
    seg = resets.long().cumsum(1)  # (B, T) history index of every token
    return seg[:, :, None] == seg[:, None, :]  # (B, T, T)


def backbone_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; ValueError naming the registered ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    module, cls = BACKBONES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_backbone(config: Any, generator: torch.Generator | None = None) -> nn.Module:
    """Build ``config.backbone`` for a ``ModelConfig``; backbones that draw their own initial
    weights (S5's HiPPO) draw them from ``generator`` here."""
    return backbone_class(config.backbone)(config, generator)


@torch.no_grad()
def check_backbone(name: str, seed: int = 0, atol: float = 1e-4) -> None:
    """Conformance of a registered backbone; AssertionError naming the first broken promise.

    On a small random float64 config: the full pass is causal; ``step`` token by token equals the
    full pass for a plain stream, a windowed stream (attention backbones) and a stream with
    readouts (a readout from the state equals the readout row of the full pass, and leaves the
    state as it was); a reset makes a packed sequence equal two separate ones; ``copy`` and
    ``index`` of a state continue exactly as the original rows; ``fork`` as :func:`check_fork` says.
    """
    from icrl.models.config import ModelConfig

    windows = [None, 5] if name in ATTENTION else [None]
    for window in windows:
        cfg = ModelConfig(kind="ad", obs_space={"type": "Discrete", "n": 3}, action_space={"type": "Discrete", "n": 2},
                          backbone=name, n_layer=2, n_head=2, n_embd=16, block_size=24, window=window,
                          state_size=8, n_task_experts=4, n_token_experts=4)
        torch.manual_seed(seed)
        net = make_backbone(cfg, torch.Generator().manual_seed(seed)).double().eval()
        B, T = 3, 12
        x = torch.randn(B, T, cfg.n_embd, dtype=torch.float64)  # (B, T, C)
        full = net(x, Structure(T, window))  # (B, T, C)
        assert torch.allclose(net(x[:, :7], Structure(7, window)), full[:, :7], atol=atol), f"{name}: not causal"
        state = net.init_state(B, x.device, x.dtype)
        steps = []
        for t in range(T):
            steps.append(net.step(x[:, t : t + 1], state))  # (B, 1, C)
        assert state.pos == T, f"{name}: state.pos is {state.pos} after {T} committed tokens"
        assert torch.allclose(torch.cat(steps, 1), full, atol=atol), f"{name}: step differs from the full pass"
        # readouts after prefixes 0, 4 and T: one full pass vs reading out of a state, which stays unchanged
        prefixes = torch.tensor([0, 4, T])
        queries = torch.randn(B, len(prefixes), cfg.n_embd, dtype=torch.float64)  # (B, J, C)
        read_full = net(torch.cat((x, queries), 1), Structure(T, window, readouts=prefixes))[:, T:]  # (B, J, C)
        state = net.init_state(B, x.device, x.dtype)
        for t in range(T + 1):
            for i in (prefixes == t).nonzero().flatten().tolist():
                got = net.step(queries[:, i : i + 1], state, commit=False)[:, 0]  # (B, C)
                assert torch.allclose(got, read_full[:, i], atol=atol), f"{name}: readout after {t} differs"
            if t < T:
                assert torch.allclose(net.step(x[:, t : t + 1], state)[:, 0], full[:, t], atol=atol), \
                    f"{name}: a readout changed the state"
        # forks: copy continues like the original, index picks (and repeats) rows
        state = net.init_state(B, x.device, x.dtype)
        for t in range(6):
            net.step(x[:, t : t + 1], state)
        fork, rows = state.copy(), torch.tensor([2, 0, 2])
        picked = state.index(rows)
        nxt = x[:, 6:7]
        a = net.step(nxt, state)
        assert torch.allclose(net.step(nxt, fork), a, atol=atol), f"{name}: a copied state diverged"
        assert torch.allclose(net.step(nxt[rows], picked), a[rows], atol=atol), f"{name}: an indexed state diverged"
        check_fork(name, net, x, window, atol)
        # resets: two histories packed into one sequence equal the two run apart
        resets = torch.zeros(B, T, dtype=torch.bool)
        resets[:, 0] = resets[:, 5] = True
        packed = net(x, Structure(T, window, resets=resets))  # (B, T, C)
        assert torch.allclose(packed[:, :5], net(x[:, :5], Structure(5, window)), atol=atol), f"{name}: reset leaked"
        assert torch.allclose(packed[:, 5:], net(x[:, 5:], Structure(T - 5, window)), atol=atol), \
            f"{name}: a reset did not start a new history"
        aux = net.aux_loss()
        assert aux is None or (torch.is_tensor(aux) and aux.dim() == 0), f"{name}: aux_loss() must be None or a scalar"


@torch.no_grad()
def check_fork(name: str, net: nn.Module, x: torch.Tensor, window: int | None, atol: float) -> None:
    """``state.fork``: nodes forked from rows of a state, stepped d tokens with a readout before
    each (and forked again half way, rows repeated and reordered), equal the full pass over their
    rows' context plus those d tokens; the root state is left as it was.

    Args:
        name: the backbone's name (for the messages).
        net: the backbone, float64, in eval mode.
        x: (B, T, C) stream tokens; the first T - 3 are the context.
        window: the attention window (None: none); the context and d are longer than a window of 5,
            so root tokens and the node's own first tokens leave it.
        atol: tolerance of the comparisons.
    """
    B, T, C = x.shape
    c, d = T - 3, 6
    rows = torch.tensor([2, 0, 2, 1])  # (n,) root row of every node
    g = torch.Generator().manual_seed(1)
    extra = torch.randn(len(rows), d, C, generator=g, dtype=x.dtype)  # (n, d, C) the imagined tokens
    queries = torch.randn(len(rows), d + 1, C, generator=g, dtype=x.dtype)  # (n, d+1, C) a readout after each
    seq = torch.cat((x[rows, :c], extra, queries), dim=1)  # (n, c+2d+1, C)
    full = net(seq, Structure(c + d, window, readouts=torch.arange(c, c + d + 1)))  # (n, c+2d+1, C)
    state = net.init_state(B, x.device, x.dtype)
    for t in range(c):
        net.step(x[:, t : t + 1], state)
    node = state.fork(rows)
    ref = torch.arange(len(rows))  # (n,) row of ``full`` every node follows
    for i in range(d + 1):
        got = net.step(queries[ref, i : i + 1], node, commit=False)  # (n, 1, C)
        assert torch.allclose(got[:, 0], full[ref, c + d + i], atol=atol), f"{name}: a fork's readout after {i} differs"
        if i == d // 2:  # a fork of the fork: repeated and reordered nodes
            sub = torch.tensor([3, 0, 0, 2])
            node, ref = node.fork(sub), ref[sub]
        if i < d:
            got = net.step(extra[ref, i : i + 1], node)  # (n, 1, C)
            assert torch.allclose(got[:, 0], full[ref, c + i], atol=atol), \
                f"{name}: a fork's token {i} differs from the full pass (window {window})"
    assert node.pos == c + d, f"{name}: a fork's pos is {node.pos} after {d} tokens on {c}"
    assert state.pos == c, f"{name}: forking moved the state on"
    again = net(x[:, : c + 1], Structure(c + 1, window))[:, c]  # (B, C)
    assert torch.allclose(net.step(x[:, c : c + 1], state)[:, 0], again, atol=atol), f"{name}: a fork changed its root"


class BackboneModel(nn.Module):
    """What AD and DPT share above their backbone: the online state, the auxiliary loss and the
    hooks the trainer calls. A subclass sets ``embed`` (its input Linear) and ``backbone``."""

    embed: nn.Linear
    backbone: nn.Module

    def new_cache(self, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> Any:
        """An empty online state for ``batch_size`` rollouts (a KV cache, or an SSM state).

        Args:
            batch_size: number of parallel rollouts B.
            device: defaults to the model's device.
            dtype: defaults to the model's parameter dtype (pass bfloat16 under autocast).
        """
        w = self.embed.weight
        return self.backbone.init_state(batch_size, device or w.device, dtype or w.dtype)

    def aux_loss(self) -> torch.Tensor | None:
        """The backbone's auxiliary loss of the last full pass (weighted; None for none)."""
        return self.backbone.aux_loss()

    def after_step(self) -> None:
        """Call after every optimiser step (T2MIR's momentum router)."""
        self.backbone.after_step()

    def no_weight_decay(self) -> set[nn.Parameter]:
        """Parameters the backbone keeps out of weight decay beyond biases and gains."""
        return self.backbone.no_weight_decay()
