"""Online planning with DICP's learned world model (Son et al., ICLR 2025; the reference code's
``beam_search`` and ``greedy_search``), on a forked incremental state (docs/architecture.md#methods).

A planner works on an :class:`Imaginer`: a batch of N search nodes, each an imagined continuation
of one rollout's context. It asks a node for its policy output (``policy``), for the most likely
reward and next observation of a query action (``imagine``: a readout, nothing committed), and
moves it along an imagined transition (``advance``: that transition appended to its context);
``fork(rows)`` selects (and repeats) nodes. :class:`CachedImaginer` runs on the backbone's
incremental state, forked with ``state.fork`` so that all beams x actions of a depth are one
batch and every node costs one token. On an attention backbone a fork shares the rollout's cached
context (``icrl.models.forks.ForkedCache``): a node holds its root row and the few tokens it
imagined, a fork of a fork copies nothing until a node commits, so the N K A children of a depth
are read out without building a state for any of them. ``CachedImaginer(share=False)`` forks
with ``state.index`` instead, a full copy of each node's context (the check and baseline of the
shared forks); :class:`ReencodeImaginer` re-encodes each node's whole context with the full pass,
the reference's way. ``scripts/bench_planning.py`` times the three.

Discrete actions, :func:`beam_search`:

1. the root's actions are put in the policy's order: a draw without replacement from
   ``softmax(logits / T)`` (the Gumbel-top-k trick with the policy's generator; the reference's
   ``torch.multinomial(p, A)``), or the descending order of the logits with ``greedy``;
2. every node expands every action in that order; each child's reward and next observation are
   the world model's most likely values (argmax per component, or the regressed mean), and the
   child's path score is its parent's plus that reward;
3. the children of all beams are sorted by score with a *stable* sort and the best ``beam_width``
   kept, so among equal scores the policy's order (and the parent's rank) decides: with no reward
   predicted anywhere the first action is the policy's own first action;
4. the kept children's imagined transitions are appended to their forked contexts, and the
   search goes one level deeper, ``depth`` levels in all; the first action of the best path is
   executed.

The children of step 2 are forks that only name their beam (on shared forks nothing is copied for
them): they read their query action out and are dropped, and only the ``beam_width`` kept ones
commit a token, copying their beam's imagined suffix.

``order="policy"`` orders the actions of every node by its own policy output; ``order="root"``
does so at the root only and expands deeper nodes in action-index order, as the reference code
does. The depth of a rollout is ``min(plan_depth, steps left in its episode)`` (the reference
stops at the episode's end); beyond a row's depth its rewards count as 0, which leaves its best
path's first action unchanged. Planning starts once the context is full (the reference:
``step >= n_transit``, its context length; here ``model.window``, or ``block_size`` without one).

Box actions, :func:`candidate_search` (the reference's one-step ``greedy_search``): the policy's
mean plus ``plan_candidates - 1`` actions drawn from its Gaussian at temperature T, clipped into
the box; the candidate of highest predicted reward is taken (the mean on ties).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from icrl.models.backbones import Structure

ORDERS = ("policy", "root")


class Imaginer(Protocol):
    """N search nodes over a model's context (see the module doc)."""

    n: int

    def fork(self, rows: torch.Tensor) -> "Imaginer":
        """The nodes ``rows`` (repeats allowed) as a new, independent batch."""

    def policy(self) -> torch.Tensor:
        """(n, out) policy head outputs at every node."""

    def imagine(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Most likely reward (n,) and next observation (n, k) of one action per node; no commit."""

    def advance(self, actions: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor) -> None:
        """Append the imagined transition (obs, action, reward, next_obs) of every node; obs <- next_obs."""


class CachedImaginer:
    """Nodes on the backbone's incremental state: a fork is ``state.fork(rows)`` (or
    ``state.index(rows)``), a query one readout token (``commit=False``), an imagined transition
    one committed token.

    Args:
        model: a DICP model (``DICPADModel`` / ``DICPDPTModel``) in eval mode.
        state: the online state after the rollout's context (not changed: the root forks it, and it
            must not commit while the nodes are used).
        obs: (n, k) the current observation of every node.
        policy_out: (n, out) the policy output at the nodes if known (AD: the last stream token's),
            else None (computed on demand).
        share: fork with ``state.fork`` (nodes share the context); False: ``state.index``, a full
            copy of every node's state.
    """

    def __init__(self, model: Any, state: Any, obs: torch.Tensor, policy_out: torch.Tensor | None = None,
                 share: bool = True) -> None:
        self.model, self.state, self.obs, self._policy, self.share = model, state, obs, policy_out, share
        self.n = len(obs)

    def fork(self, rows: torch.Tensor) -> "CachedImaginer":
        pol = None if self._policy is None else self._policy[rows]  # (m, out)
        state = self.state.fork(rows) if self.share else self.state.index(rows)
        return CachedImaginer(self.model, state, self.obs[rows], pol, self.share)

    @torch.no_grad()
    def policy(self) -> torch.Tensor:
        if self._policy is None:  # DPT: a query-state readout against the node's context
            h = self.model.backbone.step(self.model.policy_token(self.obs), self.state, commit=False)  # (n, 1, C)
            self._policy = self.model.head(h[:, 0])  # (n, out)
        return self._policy

    @torch.no_grad()
    def imagine(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.model.backbone.step(self.model.query_token(self.obs, actions), self.state, commit=False)  # (n, 1, C)
        return self.model.predict_world(h[:, 0])  # (n,), (n, k)

    @torch.no_grad()
    def advance(self, actions: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor) -> None:
        x = self.model.transition_token(self.obs, actions, reward, next_obs)  # (n, 1, C)
        h = self.model.backbone.step(x, self.state, commit=True)  # (n, 1, C)
        self.obs = next_obs
        self._policy = self.model.head(h[:, 0]) if self.model.policy_from_stream else None  # (n, out)


class ReencodeImaginer:
    """Nodes that keep their context as embedded tokens and re-encode all of it, with the full pass,
    for every policy output and every query (the reference code's way; no incremental state).

    Args:
        model: a DICP model in eval mode.
        tokens: (n, T, C) the embedded stream of the rollout so far (AD: its T steps; DPT: its T
            transitions), from the first token on, so the full pass equals the online state.
        obs: (n, k) the current observation of every node.
    """

    def __init__(self, model: Any, tokens: torch.Tensor, obs: torch.Tensor) -> None:
        self.model, self.tokens, self.obs = model, tokens, obs
        self.n = len(obs)

    def fork(self, rows: torch.Tensor) -> "ReencodeImaginer":
        return ReencodeImaginer(self.model, self.tokens[rows], self.obs[rows])

    def _last(self, extra: torch.Tensor | None) -> torch.Tensor:
        """Final hidden state of the last stream token (extra None) or of a readout ``extra`` (n, 1, C) after the whole stream."""
        T = self.tokens.shape[1]
        if extra is None:
            return self.model.backbone(self.tokens, Structure(T, self.model.config.window))[:, -1]  # (n, C)
        x = torch.cat((self.tokens, extra), dim=1)  # (n, T+1, C)
        structure = Structure(T, self.model.config.window, readouts=torch.tensor([T]))
        return self.model.backbone(x, structure)[:, -1]  # (n, C)

    @torch.no_grad()
    def policy(self) -> torch.Tensor:
        return self.model.head(self._last(self.model.policy_token(self.obs)))  # (n, out)

    @torch.no_grad()
    def imagine(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.predict_world(self._last(self.model.query_token(self.obs, actions)))  # (n,), (n, k)

    @torch.no_grad()
    def advance(self, actions: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor) -> None:
        x = self.model.transition_token(self.obs, actions, reward, next_obs)  # (n, 1, C)
        self.tokens = torch.cat((self.tokens, x), dim=1)  # (n, T+1, C)
        self.obs = next_obs


def action_order(logits: torch.Tensor, rng: np.random.Generator, greedy: bool, temperature: float) -> torch.Tensor:
    """Every action of every row, in the policy's order: (N, A) logits -> (N, A) int64.

    Sampled: a draw without replacement from softmax(logits / T), by sorting log p + Gumbel noise
    (Gumbel-top-k) with ``rng``; greedy: the logits in descending order, ties by index.
    """
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)  # (N, A)
    if greedy:
        return logp.argsort(dim=-1, descending=True, stable=True)  # (N, A)
    u = torch.as_tensor(rng.random(logp.shape), dtype=torch.float64, device=logp.device).clamp_min(1e-300)  # (N, A)
    return (logp - torch.log(-torch.log(u))).argsort(dim=-1, descending=True, stable=True)  # (N, A)


@dataclass
class Plan:
    """The result of a search: ``action`` (N,) the first action of the best path, ``path`` (N, D)
    the best path's actions, ``score`` (N,) its summed predicted reward, ``beams`` the most beams
    kept at any depth."""

    action: torch.Tensor
    path: torch.Tensor
    score: torch.Tensor
    beams: int


@torch.no_grad()
def beam_search(root: Imaginer, n_actions: int, depth: torch.Tensor, beam_width: int, rng: np.random.Generator,
                greedy: bool = False, temperature: float = 1.0, order: str = "policy") -> Plan:
    """DICP's beam search over imagined transitions (module doc), for N rollouts at once.

    Args:
        root: N root nodes (the rollouts' current contexts and observations).
        n_actions: A, the number of Discrete actions.
        depth: (N,) int64 >= 1, levels of the search per rollout; the search runs ``depth.max()`` levels.
        beam_width: K, beams kept per rollout and level.
        rng: the policy's generator (the sampled action order).
        greedy: order actions by their logits instead of sampling the order.
        temperature: T of the sampled order.
        order: ``policy`` (every node in its policy's order) or ``root`` (index order below the root).

    Returns:
        A :class:`Plan`.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    N, A = root.n, n_actions
    logits = root.policy()  # (N, A)
    device = logits.device
    depth = depth.to(device)
    rows = torch.arange(N, device=device)  # (N,)
    node, acts = root, action_order(logits, rng, greedy, temperature)  # parent nodes, their actions in order (m, A)
    score = torch.zeros(N, 1, dtype=torch.float64, device=device)  # (N, K) path scores of the kept beams
    paths = torch.zeros(N, 1, 0, dtype=torch.long, device=device)  # (N, K, d) actions of the kept beams
    beams, levels = 1, int(depth.max())
    for level in range(levels):
        K = score.shape[1]
        children = node.fork(torch.arange(N * K, device=device).repeat_interleave(A))  # (N*K*A) nodes
        flat = acts.reshape(-1)  # (N*K*A,)
        reward, next_obs = children.imagine(flat)  # (N*K*A,), (N*K*A, k)
        live = (level < depth).to(torch.float64)  # (N,) past its depth a row adds nothing
        total = score.repeat_interleave(A, dim=1) + reward.double().view(N, K * A) * live[:, None]  # (N, K*A)
        score, idx = total.sort(dim=1, descending=True, stable=True)  # (N, K*A) each
        keep = min(beam_width, K * A)
        score, idx = score[:, :keep], idx[:, :keep]  # (N, K')
        parent = idx // A  # (N, K') beam each kept child comes from
        paths = torch.cat((paths.gather(1, parent[..., None].expand(N, keep, paths.shape[2])),
                           flat.view(N, K * A).gather(1, idx)[..., None]), dim=2)  # (N, K', d+1)
        beams = max(beams, keep)
        if level == levels - 1:
            break
        sel = (rows[:, None] * (K * A) + idx).reshape(-1)  # (N*K',) kept children in the flat batch
        node = children.fork(sel)
        node.advance(flat[sel], reward[sel], next_obs[sel])
        if order == "policy":
            acts = action_order(node.policy(), rng, greedy, temperature)  # (N*K', A)
        else:
            acts = torch.arange(A, device=device).expand(N * keep, A)  # (N*K', A)
    return Plan(action=paths[:, 0, 0], path=paths[:, 0], score=score[:, 0], beams=beams)


@torch.no_grad()
def candidate_search(root: Imaginer, head: Any, n_candidates: int, rng: np.random.Generator,
                     temperature: float = 1.0) -> torch.Tensor:
    """DICP's one-step search for Box actions (module doc).

    Args:
        root: N root nodes.
        head: the model's Gaussian ``ActionHead`` (``gaussian`` gives mean and log-std; ``actions`` scales).
        n_candidates: M, the mean plus M - 1 draws.
        rng: the policy's generator.
        temperature: scales the Gaussian's std for the draws.

    Returns:
        (N, d) float32 actions in env units.
    """
    if head.kind != "gaussian":
        raise ValueError(f"planning with Box actions draws candidates from a gaussian head, not {head.kind}")
    N, M = root.n, n_candidates
    mean, log_std = head.gaussian(root.policy().float())  # (N, d) each, in [-1, 1] units
    z = torch.as_tensor(rng.standard_normal((N, M - 1, mean.shape[-1])), dtype=mean.dtype, device=mean.device)  # (N, M-1, d)
    draws = mean[:, None] + temperature * log_std.exp()[:, None] * z  # (N, M-1, d)
    cand = head.actions.unscale(torch.cat((mean[:, None], draws), dim=1).clamp(-1.0, 1.0))  # (N, M, d) env units
    children = root.fork(torch.arange(N, device=mean.device).repeat_interleave(M))  # (N*M) nodes
    reward, _ = children.imagine(cand.reshape(N * M, -1))  # (N*M,)
    best = reward.view(N, M).argmax(dim=1)  # (N,) the first maximum: the mean on ties
    return cand[torch.arange(N, device=mean.device), best]  # (N, d)


@dataclass
class PlanSettings:
    """How :class:`icrl.policies.ModelPolicy` plans (``eval.*`` fields).

    Attributes:
        beam_width, plan_depth, plan_candidates, plan_order: ``eval.beam_width`` etc.
        horizon: the env's episode length; a search stops at the episode's end.
        start: the step of the rollout from which it plans (the context is full).
    """

    beam_width: int
    plan_depth: int
    plan_candidates: int
    plan_order: str
    horizon: int
    start: int


def context_steps(config: Any) -> int:
    """Steps after which a model's context is full: ``window``, or ``block_size`` without one."""
    return config.window or config.block_size
