"""The T2MIR mixture-of-experts feed-forward (docs/architecture.md#models).

T2MIR (Huang et al. 2025, "Mixture-of-Experts Meets In-Context Reinforcement Learning", NeurIPS;
reference code NJU-RL/T2MIR) replaces the feed-forward block of the *last* transformer layer by two
MoEs that read the same normalised input and whose outputs, half the model width each, are
concatenated (reference: ``TransformerLayerMoEandContrastiveMoE`` in
``T2MIR-AD/algorithms/transformers_moe.py``):

- a **token-wise MoE** (:class:`TokenMoE`): 6 experts, top-2, noisy top-k gating and the
  load-balancing loss of Shazeer et al. 2017 (CV^2 of importance plus CV^2 of load, weight 0.1);
- a **task-wise MoE** (:class:`TaskMoE`): 8 (to 12) experts, top-2, no noise and no balance loss,
  routed from a pooled representation of the sequence; a momentum copy of its router (EMA,
  tau = 0.005) encodes keys for a contrastive InfoNCE loss (weight 0.01) in which two segments of
  the same task are positives and the segments of the other tasks in the batch are negatives.

:class:`T2MIRFeedForward` puts the two side by side and returns ``(y, aux_loss)``;
``aux_loss = 0.1 * balance + 0.01 * InfoNCE``. A ``decode`` path runs one token at a time and
computes what the full pass computes.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

ROUTINGS = ("sequence", "token")
ROUTER_KINDS = ("mlp", "linear")
REPRESENTATIONS = ("logits", "probs")


def cv_squared(v: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation Var(v) / (Mean(v)^2 + eps) over experts (Shazeer et al. 2017, Eq. 6).

    The variance is the unbiased one (``Tensor.var``), as in the reference's ``cv_squared``; a
    single expert has no spread and gives 0.
    """
    if v.shape[0] == 1:
        return v.new_zeros(())
    v = v.float()
    return v.var() / (v.mean() ** 2 + eps)  # ()


def make_router(dim: int, n_experts: int, kind: str) -> nn.Module:
    """Router network x -> clean logits H(x) of shape (..., n_experts).

    ``mlp`` (the reference's default ``gate_network``): W_2 tanh(W_1 x), both without bias.
    ``linear``: x W_g, as in Shazeer et al. 2017.
    """
    if kind == "mlp":
        return nn.Sequential(nn.Linear(dim, n_experts, bias=False), nn.Tanh(),
                             nn.Linear(n_experts, n_experts, bias=False))
    if kind == "linear":
        return nn.Linear(dim, n_experts, bias=False)
    raise ValueError(f"router must be one of {', '.join(ROUTER_KINDS)}, got {kind!r}")


class Routing(NamedTuple):
    """What a gate decides for N inputs.

    Attributes:
        weights: (N, E) combine weights: softmax over the k kept logits, 0 elsewhere; rows sum to 1.
        indices: (N, k) kept experts, largest logit first.
        balance: () CV^2(importance) + CV^2(load), unweighted.
        logits: (N, E) clean logits H(x), without noise.
    """

    weights: torch.Tensor
    indices: torch.Tensor
    balance: torch.Tensor
    logits: torch.Tensor


class NoisyTopKGate(nn.Module):
    """Noisy top-k gating with a load-balancing loss (Shazeer et al. 2017, "Outrageously Large
    Neural Networks", Sec. 2.1 and Appendix A).

    In training with ``noise=True`` the logits are
    ``H(x)_i = R(x)_i + N(0, 1) * (softplus((x W_noise)_i) + noise_eps)``, where R is the router
    network (see :func:`make_router`) and ``noise_eps = 0.01`` as in the reference; in eval mode,
    or with ``noise=False``, ``H(x) = R(x)``. The gate keeps the k largest entries of H(x) and
    takes a softmax over them: ``G(x) = softmax(KeepTopK(H(x), k))``. ``W_noise`` starts at zero
    (reference ``reset_parameters``), so the initial noise scale is softplus(0) + 0.01 = 0.70.

    Balance loss (reference ``TopKBalancedNoisyGate.forward``; Shazeer Eqs. 6-10), over the N inputs:
    ``CV^2(Importance) + CV^2(Load)`` with ``Importance_i = sum_x G(x)_i`` and, when the logits are
    noisy and k < E, the smooth estimate ``Load_i = sum_x Phi((R(x)_i - kth_excl(H(x), k, i)) /
    sigma_i(x))``, where ``kth_excl`` is the k-th largest noisy logit among the *other* experts:
    the (k+1)-th largest overall if expert i is in the top k, the k-th otherwise. Without noise the
    load is the number of inputs routed to each expert (no gradient).

    Args:
        dim: input width C.
        n_experts: number of experts E.
        k: experts kept per input (1 <= k <= E).
        noise: add the trainable noise in training mode.
        noise_eps: floor of the noise scale.
        router: ``mlp`` or ``linear`` (see :func:`make_router`).
    """

    def __init__(self, dim: int, n_experts: int, k: int, *, noise: bool = True, noise_eps: float = 0.01,
                 router: str = "mlp") -> None:
        super().__init__()
        if not 1 <= k <= n_experts:
            raise ValueError(f"top-k gate needs 1 <= k <= n_experts, got k={k}, n_experts={n_experts}")
        self.n_experts, self.k = n_experts, k
        self.noise, self.noise_eps = noise, noise_eps
        self.router = make_router(dim, n_experts, router)
        # A bare Parameter, not a Linear, so that a model-wide GPT-2 init leaves it at zero.
        self.w_noise = nn.Parameter(torch.zeros(dim, n_experts)) if noise else None

    def forward(self, x: torch.Tensor) -> Routing:
        """Route N inputs: (N, C) -> :class:`Routing`."""
        clean = self.router(x)  # (N, E)
        noisy = self.training and self.noise
        if noisy:
            sigma = F.softplus(x @ self.w_noise) + self.noise_eps  # (N, E)
            logits = clean + torch.randn_like(clean) * sigma  # (N, E)
        else:
            logits = clean  # (N, E)
        top_vals, top_idx = logits.topk(min(self.k + 1, self.n_experts), dim=-1)  # (N, k+1) each
        indices = top_idx[:, : self.k]  # (N, k)
        kept = F.softmax(top_vals[:, : self.k].float(), dim=-1).to(logits.dtype)  # (N, k)
        weights = torch.zeros_like(logits).scatter(-1, indices, kept)  # (N, E)
        importance = weights.sum(0)  # (E,)
        if noisy and self.k < self.n_experts:
            # Shazeer Eq. 9: the threshold an expert must beat is the k-th largest of the others.
            threshold_in = top_vals[:, self.k : self.k + 1]  # (N, 1): (k+1)-th largest, for experts in the top k
            threshold_out = top_vals[:, self.k - 1 : self.k]  # (N, 1): k-th largest, for the others
            is_in = logits > threshold_in  # (N, E)
            prob = torch.where(is_in, torch.special.ndtr((clean - threshold_in) / sigma),
                               torch.special.ndtr((clean - threshold_out) / sigma))  # (N, E): Phi(.)
            load = prob.sum(0)  # (E,)
        else:
            load = F.one_hot(indices, self.n_experts).sum((0, 1)).to(logits.dtype)  # (E,)
        return Routing(weights, indices, cv_squared(importance) + cv_squared(load), clean)


class Expert(nn.Module):
    """One expert: Linear -> GELU -> Linear, ``dim -> hidden -> out_dim``.

    The layer names follow the backbone's ``MLP`` (``c_fc``, ``c_proj``), so ``init_weights``
    scales the output projection as it does for every residual branch.
    """

    def __init__(self, dim: int, hidden: int, out_dim: int, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(dim, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, out_dim)."""
        return self.c_proj(F.gelu(self.c_fc(x)))  # (N, out_dim)


class Experts(nn.Module):
    """E experts combined sparsely: ``y(x) = sum_{i in top-k(x)} G(x)_i * E_i(x)`` (Shazeer Eq. 1).

    Each expert runs only on the inputs routed to it, as the reference's ``UniversalCalculator``
    does. The reference sizes each expert's hidden layer to ``expert_dim / E``, which is
    ``2 * d_model`` in every released config; that is the default here.
    """

    def __init__(self, dim: int, out_dim: int, n_experts: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.experts = nn.ModuleList(Expert(dim, hidden, out_dim, bias) for _ in range(n_experts))

    def forward(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """(N, C), (N, E) combine weights, (N, k) kept experts -> (N, out_dim)."""
        y = x.new_zeros(x.shape[0], self.out_dim)  # (N, out)
        for e, expert in enumerate(self.experts):
            rows = (indices == e).any(-1).nonzero().squeeze(-1)  # (n_e,) inputs routed to expert e
            if rows.numel():
                y = y.index_add(0, rows, weights[rows, e : e + 1] * expert(x[rows]))  # (N, out)
        return y  # (N, out)


class TokenMoE(nn.Module):
    """Token-wise MoE: every token routed on its own by a :class:`NoisyTopKGate`.

    Reference ``LinearGLUMoELayer`` (6 experts, top-2, noise on, balance on, ``noise_eps = 0.01``).

    Args:
        dim: input width C.
        out_dim: output width.
        n_experts: number of experts E.
        k: experts per token.
        hidden: hidden width of each expert; None = 2 * dim.
        noise: noisy gating in training mode.
        router: ``mlp`` or ``linear``.
        bias: biases in the experts' Linear layers.
    """

    def __init__(self, dim: int, out_dim: int, n_experts: int = 6, k: int = 2, hidden: int | None = None, *,
                 noise: bool = True, router: str = "mlp", bias: bool = True) -> None:
        super().__init__()
        self.gate = NoisyTopKGate(dim, n_experts, k, noise=noise, router=router)
        self.experts = Experts(dim, out_dim, n_experts, hidden or 2 * dim, bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) -> (B, T, out_dim) and the unweighted balance loss, over all B * T tokens."""
        B, T, C = x.shape
        flat = x.reshape(B * T, C)  # (B*T, C)
        route = self.gate(flat)
        y = self.experts(flat, route.weights, route.indices)  # (B*T, out)
        return y.view(B, T, -1), route.balance  # (B, T, out), ()


class PoolState:
    """What the task-wise router needs to route the next token online: the pooled context so far.

    Holds the running sum of the MoE inputs in float64 and, with a window K, a ring of the last K
    inputs (the input of step p in slot ``p % K``), so the mean covers the same tokens as the
    full pass's windowed mean.

    Attributes:
        total: (B, C) float64 sum of the inputs in the pool.
        ring: (B, K, C) float64 last K inputs, or None without a window.
        pos: tokens appended so far.
    """

    def __init__(self, batch_size: int, dim: int, window: int | None, device: torch.device | str) -> None:
        self.total = torch.zeros(batch_size, dim, dtype=torch.float64, device=device)  # (B, C)
        self.ring = None if window is None else torch.zeros(batch_size, window, dim, dtype=torch.float64,
                                                            device=device)  # (B, K, C)
        self.window = window
        self.pos = 0

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Add one token's input (B, C) and return the mean of the pool, (B, C) float64."""
        x = x.to(torch.float64)  # (B, C)
        if self.ring is None:
            self.total += x
            n = self.pos + 1
        else:
            slot = self.pos % self.window
            self.total += x - self.ring[:, slot]  # the token K steps back leaves the window
            self.ring[:, slot] = x
            n = min(self.pos + 1, self.window)
        self.pos += 1
        return self.total / n  # (B, C)

    def peek(self, x: torch.Tensor) -> torch.Tensor:
        """The mean a readout token (B, C) is routed from: the pool's tokens and itself, the pool
        left unchanged; (B, C) float64."""
        n = self.pos if self.ring is None else min(self.pos, self.window)
        return (self.total + x.to(torch.float64)) / (n + 1)  # (B, C)

    def copy(self) -> "PoolState":
        """An independent copy (to fork a rollout)."""
        out = copy.copy(self)
        out.total = self.total.clone()
        out.ring = None if self.ring is None else self.ring.clone()
        return out

    def index(self, idx: torch.Tensor) -> "PoolState":
        """The states of the batch rows ``idx`` (a new state)."""
        out = copy.copy(self)
        out.total = self.total[idx]
        out.ring = None if self.ring is None else self.ring[idx]
        return out

    def fork(self, rows: torch.Tensor) -> "ForkedPool":
        """Search nodes continuing batch rows ``rows`` that share this pool (:class:`ForkedPool`)."""
        return ForkedPool(self, rows)


class ForkedPool:
    """The pools of search nodes forked from a :class:`PoolState`, sharing its ring.

    A node's pool after the fork is the root row's sum plus the inputs the node pushed, minus those
    that left the window; the input leaving a window K at push p is the one of position p - K, read
    from the root's ring while it is a root token and from the node's own inputs after that. So a
    node holds its sum (C) and its d inputs instead of a copy of the K-slot ring. As in
    ``ForkedCache``, ``fork`` only indexes (``rows`` names each node's row of ``total`` and
    ``inputs``) and ``push`` makes the node's own tensors (copy on write): nothing shared is written.

    Attributes:
        root: the forked :class:`PoolState`; it must not push while its forks are used.
        base: ``root.pos`` at the fork.
        parent: (B,) int64 root row of every node.
        total: (S, C) float64 pool sums per row (the root's own sums until a node pushes).
        inputs: (S, d, C) float64 inputs pushed since the fork, per row (with a window).
        rows: (B,) int64 row of ``total`` and ``inputs`` of every node, or None when node i owns row i.
        pos: tokens in the node's history, ``base + d``.
    """

    def __init__(self, root: PoolState, rows: torch.Tensor) -> None:
        rows = rows.to(root.total.device)
        self.root, self.base, self.pos, self.window = root, root.pos, root.pos, root.window
        self.parent, self.rows = rows, rows
        self.total = root.total  # (N, C): node i's sum is the root's total[rows[i]] until it pushes
        self.inputs = root.total.new_zeros(root.total.shape[0], 0, root.total.shape[1])  # (N, 0, C)

    def fork(self, rows: torch.Tensor) -> "ForkedPool":
        """Nodes ``rows`` of this fork (repeats allowed), sharing the root and every node's tensors."""
        out = copy.copy(self)
        out.parent = self.parent[rows]  # (B',)
        out.rows = rows if self.rows is None else self.rows[rows]  # (B',)
        return out

    def _own(self, t: torch.Tensor) -> torch.Tensor:
        """Every node's row of ``total`` or ``inputs``, (S, ...) -> (B, ...); checks that the root
        has not moved on."""
        if self.root.pos != self.base:
            raise ValueError(f"the forked pool took {self.root.pos - self.base} tokens since the fork; fork it again")
        return t if self.rows is None else t[self.rows]  # (B, ...)

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Add one token's input (B, C) to every node's pool and return its mean, (B, C) float64."""
        x = x.to(torch.float64)  # (B, C)
        total, inputs = self._own(self.total), self._own(self.inputs)  # (B, C), (B, d, C)
        if self.window is None:
            total = total + x  # (B, C)
            n = self.pos + 1
        else:
            gone = self.pos - self.window  # the position leaving the window (PoolState's ring slot)
            if gone < 0:
                leaving = torch.zeros_like(x)  # (B, C) an empty ring slot
            elif gone < self.base:
                leaving = self.root.ring[self.parent, gone % self.window]  # (B, C) a root token
            else:
                leaving = inputs[:, gone - self.base]  # (B, C) one of the node's own
            total = total + (x - leaving)  # (B, C), as PoolState.push adds it
            inputs = torch.cat((inputs, x[:, None]), dim=1)  # (B, d+1, C)
            n = min(self.pos + 1, self.window)
        self.total, self.inputs, self.rows = total, inputs, None
        self.pos += 1
        return total / n  # (B, C)

    def peek(self, x: torch.Tensor) -> torch.Tensor:
        """The mean a readout token (B, C) is routed from, the pools left unchanged; (B, C) float64."""
        total = self._own(self.total)  # (B, C)
        n = self.pos if self.window is None else min(self.pos, self.window)
        return (total + x.to(torch.float64)) / (n + 1)  # (B, C)


def causal_mean(x: torch.Tensor, window: int | None) -> torch.Tensor:
    """Mean of each token's input with those before it, over the last ``window`` tokens if given.

    ``out[:, t] = mean(x[:, max(0, t - K + 1) : t + 1])``: the tokens a banded causal mask of
    width K lets token t see. Summed in float64 so that the full pass and :class:`PoolState`
    agree to rounding of the result. (B, T, C) -> (B, T, C) float64.
    """
    T = x.shape[1]
    csum = x.to(torch.float64).cumsum(1)  # (B, T, C)
    count = torch.arange(1, T + 1, device=x.device, dtype=torch.float64)  # (T,)
    if window is not None and window < T:
        csum = torch.cat((csum[:, :window], csum[:, window:] - csum[:, :-window]), dim=1)  # (B, T, C)
        count = count.clamp(max=window)  # (T,)
    return csum / count[None, :, None]  # (B, T, C)


class TaskMoE(nn.Module):
    """Task-wise MoE: routing from a pooled representation of the sequence, with a momentum router.

    Reference ``LinearGLUMoELayerContrastive`` (8 or 12 experts, top-2, gate without noise and
    without balance loss). Two routings:

    - ``sequence`` (the reference's ``task_hard_router: True``): the gate routes from the mean of
      the inputs. The reference takes the mean over the whole training segment, which lets early
      tokens see later ones, and at evaluation, where it re-encodes the context every step, the
      mean over the context so far. Here token t is routed from the causal mean of the inputs up
      to and including t (over the last ``window`` tokens with a window), which is what the
      reference uses at evaluation, in training as well; so the full pass and :meth:`decode` agree,
      and the last token of a segment is routed from the mean of the whole segment, the
      reference's per-sequence decision. The contrastive representation is the router output on
      that whole-segment mean.
    - ``token`` (``task_hard_router: False``): every token is routed from its own input and the
      contrastive representation is the router output averaged over the tokens.

    The momentum router (``router_target``) is a frozen copy of the online router, updated by
    :meth:`update_target` after every optimiser step as
    ``theta_target <- (1 - tau) * theta_target + tau * theta`` (reference ``soft_update``,
    tau = 0.005). It encodes the contrastive *key* from the detached input; the online router
    encodes the *query*. The representation is the router's clean logits (``logits``; reference
    ``add_softmax: False``, used with every ``sequence`` config) or their softmax over all E
    experts (``probs``; ``add_softmax: True``, used with the AD ``token`` configs).

    Args:
        dim: input width C.
        out_dim: output width.
        n_experts: number of experts E.
        k: experts per token.
        hidden: hidden width of each expert; None = 2 * dim.
        tau: momentum of the target router.
        routing: ``sequence`` or ``token``.
        window: pool over the last ``window`` tokens (the attention window K); None = all so far.
        representation: ``logits`` or ``probs``, what the InfoNCE compares.
        router: ``mlp`` or ``linear``.
        bias: biases in the experts' Linear layers.
    """

    def __init__(self, dim: int, out_dim: int, n_experts: int = 8, k: int = 2, hidden: int | None = None, *,
                 tau: float = 0.005, routing: str = "sequence", window: int | None = None,
                 representation: str = "logits", router: str = "mlp", bias: bool = True) -> None:
        super().__init__()
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, got {routing!r}")
        if representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {', '.join(REPRESENTATIONS)}, got {representation!r}")
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        self.dim, self.tau, self.routing, self.window = dim, tau, routing, window
        self.representation = representation
        self.gate = NoisyTopKGate(dim, n_experts, k, noise=False, router=router)
        self.router_target = copy.deepcopy(self.gate.router).requires_grad_(False)
        self.experts = Experts(dim, out_dim, n_experts, hidden or 2 * dim, bias)

    @torch.no_grad()
    def sync_target(self) -> None:
        """Copy the online router into the target router (at construction, and after a re-initialisation)."""
        for target, online in zip(self.router_target.parameters(), self.gate.router.parameters()):
            target.copy_(online)

    @torch.no_grad()
    def update_target(self) -> None:
        """One momentum step: theta_target <- (1 - tau) * theta_target + tau * theta."""
        for target, online in zip(self.router_target.parameters(), self.gate.router.parameters()):
            target.mul_(1.0 - self.tau).add_(online, alpha=self.tau)

    def _rep(self, logits: torch.Tensor) -> torch.Tensor:
        return F.softmax(logits, dim=-1) if self.representation == "probs" else logits

    def forward(self, x: torch.Tensor, route_in: torch.Tensor | None = None,
                rep_at: int = -1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Full pass.

        Args:
            x: (B, T, C) MoE input (the block's normalised residual stream).
            route_in: (B, T, C) what ``sequence`` routing routes each token from; None = the
                causal mean of ``x`` (:func:`causal_mean`). A backbone passes the pool its
                structure defines (readouts, resets; ``icrl.models.t2mir.pooled_inputs``).
            rep_at: the token whose pool represents the whole segment (the last stream token).

        Returns:
            y: (B, T, out_dim).
            query: (B, E) online router's representation of each sequence.
            key: (B, E) target router's representation of each sequence (no gradient).
        """
        B, T, C = x.shape
        if self.routing == "sequence":
            route_in = (causal_mean(x, self.window) if route_in is None else route_in).to(x.dtype)  # (B, T, C)
        else:
            route_in = x  # (B, T, C)
        route = self.gate(route_in.reshape(B * T, C))
        y = self.experts(x.reshape(B * T, C), route.weights, route.indices).view(B, T, -1)  # (B, T, out)
        query_logits = route.logits.view(B, T, -1)  # (B, T, E)
        if self.routing == "sequence":  # the routers on the pool of the whole segment (its last token)
            with torch.no_grad():
                key_logits = self.router_target(route_in[:, rep_at])  # (B, E)
            return y, self._rep(query_logits[:, rep_at]), self._rep(key_logits)
        with torch.no_grad():
            key_logits = self.router_target(route_in)  # (B, T, E)
        return y, self._rep(query_logits).mean(1), self._rep(key_logits).mean(1)

    def init_state(self, batch_size: int, device: torch.device | str) -> PoolState | None:
        """Online state for :meth:`decode`: the pooled context (``sequence``), or None (``token``)."""
        return PoolState(batch_size, self.dim, self.window, device) if self.routing == "sequence" else None

    def decode(self, x: torch.Tensor, state: PoolState | None, commit: bool = True) -> torch.Tensor:
        """One token per sequence: (B, 1, C) -> (B, 1, out_dim); adds the token to ``state``'s pool.

        Token p is routed from the mean of the pool after it is added, the p-th row of the full
        pass's :func:`causal_mean`, so a rollout reproduces the full pass. A readout
        (``commit=False``) is routed from the pool and itself and leaves the pool as it was.
        """
        if state is None:
            route_in = x[:, 0]  # (B, C)
        else:
            route_in = (state.push(x[:, 0]) if commit else state.peek(x[:, 0])).to(x.dtype)  # (B, C)
        route = self.gate(route_in)
        return self.experts(x[:, 0], route.weights, route.indices).unsqueeze(1)  # (B, 1, out)


def infonce(q: torch.Tensor, k: torch.Tensor, task_ids: torch.Tensor, temperature: float = 1.0,
            weight: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE (van den Oord et al. 2018) between queries and keys of paired segments.

    ``q[i]`` and ``k[i]`` come from two segments of the task ``task_ids[i]`` (the positive pair);
    every ``k[j]`` of another task is a negative. Scores are bilinear as in CURL and the reference's
    ``contrastive_loss`` (``T2MIR-AD/algorithms/transformers_moe.py``):
    ``s_ij = q_i^T W k_j / temperature`` and ``loss = mean_i -log(exp(s_ii) / sum_j exp(s_ij))``.
    The reference has a learnable W, initialised N(0, 1), and no temperature (1). Keys of the same
    task as the anchor, other than its pair (a task drawn twice into one batch), are left out of
    the denominator: they are not negatives. The reference keeps them; with distinct tasks in the
    batch the two agree.

    Args:
        q: (N, D) queries.
        k: (N, D) keys; detach them to keep gradients on the query side only.
        task_ids: (N,) task of each pair.
        temperature: divides the scores.
        weight: (D, D) bilinear W; None = the dot product.

    Returns:
        () mean loss over the N anchors.
    """
    N = q.shape[0]
    if k.shape != q.shape or task_ids.shape != (N,):
        raise ValueError(f"infonce needs q and k of one shape (N, D) and task_ids (N,), "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(task_ids.shape)}")
    kw = k if weight is None else k @ weight.T  # (N, D): row j = W k_j
    scores = q @ kw.T / temperature  # (N, N)
    same = task_ids[:, None] == task_ids[None, :]  # (N, N)
    same.fill_diagonal_(False)
    scores = scores.masked_fill(same, float("-inf"))  # (N, N)
    return F.cross_entropy(scores, torch.arange(N, device=q.device))


def check_pairs(task_ids: torch.Tensor, batch_size: int) -> None:
    """The batch must be two halves of paired segments: row i and row i + B/2 of one task."""
    if task_ids.shape != (batch_size,) or batch_size % 2:
        raise ValueError(f"task_ids must be (B,) with B even (two halves of paired segments), got "
                         f"{tuple(task_ids.shape)} for a batch of {batch_size}; sample two segments per task")
    half = batch_size // 2
    if not torch.equal(task_ids[:half], task_ids[half:]):
        raise ValueError("task_ids: row i and row i + B/2 must be segments of the same task; "
                         "lay the batch out as [segments A; segments B] with A[i], B[i] from one task")


class T2MIRFeedForward(nn.Module):
    """The feed-forward of T2MIR's last layer: token-wise and task-wise MoE side by side.

    ``y = concat(TokenMoE(x), TaskMoE(x))``, widths ``n_embd // 2`` and the rest, followed by
    dropout as the backbone's ``MLP``. The auxiliary loss (reference ``train.py``:
    ``loss = pred_loss + balance_loss + contrastive_loss``) is
    ``aux = balance_weight * (CV^2(Importance) + CV^2(Load)) + contrast_weight * InfoNCE`` with
    0.1 and 0.01 (AD configs; the DPT configs use 0.01 and 0.01 or 0.001). The InfoNCE is the
    reference's symmetric one over a batch laid out as two halves A, B of paired segments:
    ``0.5 * infonce(q_A, k_B) + 0.5 * infonce(q_B, k_A)``, queries from the online router, keys
    from the momentum router, scores through a learnable bilinear W (E x E, N(0, 1) init).

    Args:
        n_embd: width of the residual stream.
        n_token_experts: experts of the token-wise MoE.
        n_task_experts: experts of the task-wise MoE (reference: 8, or 12 on Darkroom).
        k: experts per token in both.
        hidden: hidden width of each expert; None = 2 * n_embd.
        tau: momentum of the task router's target.
        routing: task-wise routing, ``sequence`` or ``token`` (see :class:`TaskMoE`).
        window: pool over the last ``window`` tokens (the attention window K); None = all so far.
        representation: ``logits`` or ``probs``, what the InfoNCE compares.
        balance_weight: weight of the balance loss.
        contrast_weight: weight of the InfoNCE loss.
        temperature: InfoNCE temperature.
        dropout: dropout on the output.
        bias: biases in the experts' Linear layers.
    """

    def __init__(self, n_embd: int, *, n_token_experts: int = 6, n_task_experts: int = 8, k: int = 2,
                 hidden: int | None = None, tau: float = 0.005, routing: str = "sequence",
                 window: int | None = None, representation: str = "logits", balance_weight: float = 0.1,
                 contrast_weight: float = 0.01, temperature: float = 1.0, dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        if n_embd < 2:
            raise ValueError(f"n_embd must be >= 2 to split between two MoEs, got {n_embd}")
        hidden = hidden or 2 * n_embd
        self.token = TokenMoE(n_embd, n_embd // 2, n_token_experts, k, hidden, bias=bias)
        self.task = TaskMoE(n_embd, n_embd - n_embd // 2, n_task_experts, k, hidden, tau=tau, routing=routing,
                            window=window, representation=representation, bias=bias)
        self.contrast_w = nn.Parameter(torch.randn(n_task_experts, n_task_experts))  # (E, E) bilinear W
        self.balance_weight, self.contrast_weight, self.temperature = balance_weight, contrast_weight, temperature
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None, route_in: torch.Tensor | None = None,
                rep_at: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        """Full pass.

        Args:
            x: (B, T, C) normalised residual stream.
            task_ids: (B,) task of each sequence, rows i and i + B/2 from one task; None = no InfoNCE.
            route_in, rep_at: the task router's pooled inputs and representative token (``TaskMoE.forward``).

        Returns:
            y: (B, T, C).
            aux: () weighted balance loss plus, with ``task_ids``, weighted InfoNCE.
        """
        y_token, balance = self.token(x)  # (B, T, C/2), ()
        y_task, query, key = self.task(x, route_in, rep_at)  # (B, T, C - C/2), (B, E), (B, E)
        y = self.dropout(torch.cat((y_token, y_task), dim=-1))  # (B, T, C)
        aux = self.balance_weight * balance
        if task_ids is not None:
            aux = aux + self.contrast_weight * self.contrastive_loss(query, key, task_ids)
        return y, aux

    def contrastive_loss(self, query: torch.Tensor, key: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE between the halves A, B of the batch: (B, E), (B, E), (B,) -> ()."""
        check_pairs(task_ids, query.shape[0])
        half = query.shape[0] // 2
        ids = task_ids[:half]  # (B/2,)
        key = key.detach()
        return 0.5 * (infonce(query[:half], key[half:], ids, self.temperature, self.contrast_w)
                      + infonce(query[half:], key[:half], ids, self.temperature, self.contrast_w))

    def init_state(self, batch_size: int, device: torch.device | str) -> PoolState | None:
        """Online state for :meth:`decode` (the task router's pooled context)."""
        return self.task.init_state(batch_size, device)

    def decode(self, x: torch.Tensor, state: PoolState | None, commit: bool = True) -> torch.Tensor:
        """One token: (B, 1, C) -> (B, 1, C), equal to the full pass at that position; a readout
        (``commit=False``) leaves ``state`` unchanged."""
        route = self.token.gate(x[:, 0])  # token-wise routing needs nothing but the token
        y_token = self.token.experts(x[:, 0], route.weights, route.indices).unsqueeze(1)  # (B, 1, C/2)
        y_task = self.task.decode(x, state, commit)  # (B, 1, C - C/2)
        return self.dropout(torch.cat((y_token, y_task), dim=-1))  # (B, 1, C)

    def update_target(self) -> None:
        """Momentum step of the task router's target; call after every optimiser step."""
        self.task.update_target()

    def sync_target(self) -> None:
        """Copy the task router into its target (after re-initialising the weights)."""
        self.task.sync_target()
