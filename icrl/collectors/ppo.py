"""PPO as a batched source algorithm: N independent actor-critic learners trained at once
(docs/architecture.md#collection-and-source-algorithms).

Clipped PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", Eq. 7 and 9) with
generalised advantage estimation (Schulman et al. 2016, "High-Dimensional Continuous Control Using
Generalized Advantage Estimation", Eq. 16), on integer observations (Discrete / MultiDiscrete,
each component one-hot encoded) or Box observations (flattened, normalised by running statistics),
for Discrete actions (a categorical policy) or Box actions (a diagonal Gaussian policy). What the
family looks like comes from its :class:`~icrl.spaces.EnvSpec`.

Independent mode (default): env i has a learner of its own, starting from scratch, so every
learning history is a different run of the algorithm. The L = N learners are not a Python loop:
each weight is one stacked tensor of shape (L, in, out) and a layer is one ``torch.baddbmm`` over
all learners. Summing the learners' losses gives every learner exactly the gradient of its own
loss (their parameters are disjoint slices); Adam is elementwise, so one Adam over the stacked
tensors is L Adams; gradient clipping and advantage normalisation are done per learner. What one
learner sees never reaches another (tested). Shared mode (``ppo_shared=True``, DICP's collector):
one learner (L = 1) trained on all N streams together.

Continuous actions (Box): the actor's head gives the mean (L, B, d) of a diagonal Gaussian whose
log standard deviation is a state-independent parameter per learner, (L, 1, d), initialised at 0
(CleanRL's ``ppo_continuous_action.py``; SB3's ``DiagGaussianDistribution``). Two ways to map the
Gaussian sample u to the box, chosen by ``ppo_squash``:

- clipped (default, CleanRL's and SB3's PPO): the action is u clipped into the box; PPO's ratio
  uses log N(u), the density of the unclipped sample, with no correction for the clipping.
- squashed (SAC's, Haarnoja et al. 2018, "Soft Actor-Critic", App. C): a = tanh(u) mapped affinely
  onto the box, log pi(a) = log N(u) - sum_j log(1 - tanh(u_j)^2 + 1e-6) (Eq. 21).

Either way the env executes (and the runner stores) the action in the box, and PPO trains on the
u it actually drew, kept in its own buffer (the runner hands ``update`` the executed action).

Box observations are normalised per learner by a running mean and variance (SB3's
``RunningMeanStd``, the parallel update of Chan et al. 1979), ``clip((x - mean) / sqrt(var +
1e-8), -10, 10)``. Like the weights, the statistics change only between updates: a rollout is
drawn and trained on with the same statistics, which then absorb the rollout's observations, so
PPO's ``logp_old`` is exactly the behaviour policy's.

Loop phases, as in Stable-Baselines3: :meth:`PPOPolicy.act` / :meth:`PPOPolicy.update` collect a
rollout of ``ppo_rollout`` steps per env, then :meth:`PPOPolicy.train` runs ``ppo_epochs`` epochs
of ``ppo_minibatches`` minibatches over each learner's rollout (for an independent learner: its
steps, shuffled along the time axis). Truncated episodes are bootstrapped with V(final obs),
terminated ones with 0; the runner hands over the final observation as ``next_obs``.

All randomness (initial weights, actions, minibatch shuffles) comes from one ``torch.Generator``
seeded from the policy's numpy generator. With Discrete actions on integer observations the draws
and every operation are those of the Discrete-only version, so its histories are unchanged.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Iterable

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from icrl.collectors.gaussian import (
    RunningMeanStd,
    gaussian_entropy,
    gaussian_log_prob,
    squash_to_box,
    tanh_log_det,
)
from icrl.models.encoders import discrete_sizes, encode_obs
from icrl.spaces import EnvSpec

# ----------------------------------------------------------------------------------------------
# the pure math: GAE, clipped surrogate, per-learner gradient clipping


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        truncated: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates (Schulman et al. 2016, Eq. 16) and value targets.

    delta_t = r_t + gamma * (1 - terminated_t) * V(s'_t) - V(s_t), and
    A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}, with A_T = 0 after the rollout's last step.
    s'_t is the observation after step t (the episode's final one where it ended), so a truncated
    step is bootstrapped with V(final obs) and a terminated one with 0, and the recursion never
    crosses an episode boundary.

    Args:
        rewards: (T, B) rewards.
        values: (T, B) V(s_t).
        next_values: (T, B) V(s'_t).
        terminated: (T, B) bool.
        truncated: (T, B) bool.
        gamma: discount.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, each (T, B); returns = advantages + values (the value targets).
    """
    not_terminated = 1.0 - terminated.to(values.dtype)  # (T, B)
    not_done = 1.0 - (terminated | truncated).to(values.dtype)  # (T, B)
    deltas = rewards + gamma * not_terminated * next_values - values  # (T, B)
    advantages = torch.zeros_like(values)  # (T, B)
    running = torch.zeros_like(values[0])  # (B,) A_{t+1}
    for t in range(len(values) - 1, -1, -1):
        running = deltas[t] + gamma * lam * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values


def clipped_surrogate(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                      clip: float) -> torch.Tensor:
    """PPO's clipped objective per sample, min(r A, clip(r, 1 - eps, 1 + eps) A) (Schulman et al. 2017, Eq. 7).

    r = exp(logp_new - logp_old). The objective is maximised; the loss is its negated mean.
    All inputs have one shape; so does the output.
    """
    ratio = torch.exp(logp_new - logp_old)
    return torch.minimum(ratio * advantages, ratio.clamp(1.0 - clip, 1.0 + clip) * advantages)


def clip_grad_norm_per_learner_(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip every learner's gradient to norm ``max_norm``, in place, as ``clip_grad_norm_`` would alone.

    Every parameter is stacked with the learner on dim 0; learner i's norm is taken over its slice
    ``p.grad[i]`` of every parameter together (actor and critic), and the scale
    ``min(1, max_norm / (norm + 1e-6))`` (torch's formula) applies to that slice only.

    Returns:
        (L,) every learner's gradient norm before clipping.
    """
    grads = [p.grad for p in params if p.grad is not None]
    sq = torch.stack([g.pow(2).reshape(len(g), -1).sum(1) for g in grads]).sum(0)  # (L,)
    norms = sq.sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # (L,)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return norms


# ----------------------------------------------------------------------------------------------
# observations and the stacked networks


class ObsEncoder:
    """Observations to float32 network inputs.

    Discrete: one-hot. MultiDiscrete: each component one-hot, concatenated (Dark Room (x, y) on a
    9x9 grid: 9 + 9 = 18 inputs), as the models encode them (:mod:`icrl.models.encoders`). Box:
    flattened floats.

    Args:
        space: the single-env observation space.
    """

    def __init__(self, space: spaces.Space) -> None:
        if not isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.Box)):
            raise ValueError(f"ppo needs Discrete, MultiDiscrete or Box observations; got {space}")
        self.one_hot = not isinstance(space, spaces.Box)
        self.shape = space.shape
        self.sizes = discrete_sizes(space) if self.one_hot else []
        self.start = np.asarray(space.start, dtype=np.int64).reshape(-1) if self.one_hot else None  # (k,)
        self.size = sum(self.sizes) if self.one_hot else int(np.prod(space.shape))

    def __call__(self, obs: np.ndarray) -> torch.Tensor:
        """(B, *obs_shape) observations -> (B, size) float32."""
        b = len(obs)
        if not self.one_hot:
            return torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(b, -1))  # (B, size)
        return encode_obs(torch.as_tensor(np.asarray(obs, dtype=np.int64).reshape(b, -1) - self.start), self.sizes)


def stacked_orthogonal(n: int, fan_in: int, fan_out: int, gain: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` independent orthogonal matrices times ``gain``, (n, fan_in, fan_out) (batched QR).

    The orthogonal initialisation of CleanRL's and SB3's PPO (Saxe et al. 2014), drawn for every
    learner at once; the sign fix makes each draw uniform (Haar) over the orthogonal matrices.
    """
    rows, cols = max(fan_in, fan_out), min(fan_in, fan_out)
    q, r = torch.linalg.qr(torch.randn(n, rows, cols, generator=generator))  # (n, rows, cols)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # (n, rows, cols)
    return gain * (q if fan_in >= fan_out else q.transpose(1, 2))  # (n, fan_in, fan_out)


class StackedMLP(nn.Module):
    """L independent tanh MLPs: weights (L, in, out), biases (L, 1, out); one baddbmm per layer.

    Args:
        n_learners: L.
        sizes: layer widths, input first.
        gains: orthogonal-init gain of each layer (len(sizes) - 1 of them).
        generator: the source of the initial weights.
    """

    def __init__(self, n_learners: int, sizes: list[int], gains: list[float], generator: torch.Generator) -> None:
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(stacked_orthogonal(n_learners, i, o, g, generator))
                                         for i, o, g in zip(sizes, sizes[1:], gains)])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(n_learners, 1, o)) for o in sizes[1:]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(L, B, in) -> (L, B, out)."""
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)  # (L, B, out_k)
            if k < last:
                x = torch.tanh(x)
        return x


class StackedActorCritic(nn.Module):
    """L separate actor and critic MLPs (two tanh hidden layers each, as in CleanRL's PPO).

    Orthogonal init with gain sqrt(2) on hidden layers, 0.01 on the policy head (near-uniform
    first policy; for a Gaussian, means near 0) and 1 on the value head. With ``log_std`` the actor
    is the mean of a diagonal Gaussian and the model holds a state-independent log standard
    deviation per learner, (L, 1, n_out), initialised at 0 (CleanRL's ``ppo_continuous_action.py``).

    Args:
        n_learners: L.
        obs_size: D, the encoded observation size.
        n_out: number of discrete actions (logits) or the action dimension d (Gaussian means).
        hidden: width of the hidden layers.
        generator: the source of the initial weights (actor first, then critic).
        log_std: add the Gaussian's log-std parameter (continuous actions).
    """

    def __init__(self, n_learners: int, obs_size: int, n_out: int, hidden: int, generator: torch.Generator,
                 log_std: bool = False) -> None:
        super().__init__()
        g = math.sqrt(2.0)
        self.actor = StackedMLP(n_learners, [obs_size, hidden, hidden, n_out], [g, g, 0.01], generator)
        self.critic = StackedMLP(n_learners, [obs_size, hidden, hidden, 1], [g, g, 1.0], generator)
        self.log_std = nn.Parameter(torch.zeros(n_learners, 1, n_out)) if log_std else None  # (L, 1, d)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(L, B, obs_size) -> (L, B, n_out): action logits, or the Gaussian's means."""
        return self.actor(x)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """(L, B, obs_size) -> (L, B)."""
        return self.critic(x).squeeze(-1)


def _positive(value: Any, name: str, integer: bool = False, low: float = 0.0, high: float = math.inf,
              strict: bool = True) -> Any:
    """``value`` checked to lie in (low, high] (or [low, high] if not ``strict``), else a ValueError naming it."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > low if strict else value >= low) and value <= high and (not integer or float(value).is_integer())
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} {'>' if strict else '>='} {low}"
                         f"{'' if high == math.inf else f' and <= {high}'}; got {value!r}")
    return int(value) if integer else float(value)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block, then restore the caller's setting.

    PPO's tensors are tiny ((L, B, 32)-sized matmuls); splitting them over threads buys nothing and
    the thread barriers cost a lot, ruinously on a busy machine (2 threads on 2 loaded cores: an
    update took 170x as long as on 1 thread, measured). The policy should not change the process's
    setting for the rest of the program, hence the restore.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# the policy


class PPOPolicy:
    """Clipped PPO with GAE as a batched :class:`~icrl.collectors.base.Policy` (see the module docstring).

    Args:
        num_envs: N.
        task_dist: the family's task distribution; its :class:`~icrl.spaces.EnvSpec` gives the
            observation space (encoder) and the action space (categorical or Gaussian policy).
        rng: the policy's generator; seeds the torch generator of all PPO randomness.
        ppo_rollout: steps per env between updates (T).
        ppo_epochs: passes over each rollout.
        ppo_minibatches: minibatches per epoch; an independent learner's T steps are shuffled
            along the time axis and split into this many.
        ppo_lr: Adam learning rate.
        ppo_gamma: discount.
        ppo_gae_lambda: GAE lambda.
        ppo_clip: clip range eps of the probability ratio.
        ppo_ent_coef: entropy-bonus coefficient (Box actions: on the Gaussian's entropy).
        ppo_vf_coef: value-loss coefficient.
        ppo_max_grad_norm: clip each learner's gradient norm to this (0: no clipping).
        ppo_hidden: width of the two hidden layers of the actor and of the critic.
        ppo_shared: one learner on all N streams (DICP) instead of N independent learners.
        ppo_squash: Box actions only: tanh-squash the Gaussian sample into the box (SAC's rule)
            instead of clipping it. Default False, clipping, as CleanRL's and SB3's PPO do: it is
            the setting their continuous-control results are tuned and reported with, its
            log-probability needs no correction, and a saturated action (the point robot's full
            step toward the goal) is reached with a finite mean instead of |u| -> inf. With the
            squash, the entropy bonus is the Gaussian's entropy of u (the squashed density has no
            closed-form entropy), and the tanh log-Jacobian, a function of the stored u alone,
            cancels in PPO's ratio.

    The defaults are tuned for Dark Room (9x9, H 20): 63 of 64 independent runs end (mean of the
    last 10 episodes) at >= 80% of the oracle return within 300 episodes; see
    ``python scripts/bench_collect.py --only ppo``. A discount of 0.9 learned markedly more reliably there than 0.99.
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator, ppo_rollout: int = 100,
                 ppo_epochs: int = 4, ppo_minibatches: int = 2, ppo_lr: float = 3e-3, ppo_gamma: float = 0.9,
                 ppo_gae_lambda: float = 0.95, ppo_clip: float = 0.2, ppo_ent_coef: float = 0.03,
                 ppo_vf_coef: float = 0.5, ppo_max_grad_norm: float = 0.5, ppo_hidden: int = 32,
                 ppo_shared: bool = False, ppo_squash: bool = False) -> None:
        self.rollout = _positive(ppo_rollout, "ppo_rollout", integer=True)
        self.epochs = _positive(ppo_epochs, "ppo_epochs", integer=True)
        self.minibatches = _positive(ppo_minibatches, "ppo_minibatches", integer=True)
        if self.minibatches > self.rollout:
            raise ValueError(f"ppo_minibatches ({self.minibatches}) must be <= ppo_rollout ({self.rollout}): "
                             "a minibatch holds at least one step")
        self.lr = _positive(ppo_lr, "ppo_lr")
        self.gamma = _positive(ppo_gamma, "ppo_gamma", low=0.0, high=1.0, strict=False)
        self.gae_lambda = _positive(ppo_gae_lambda, "ppo_gae_lambda", low=0.0, high=1.0, strict=False)
        self.clip = _positive(ppo_clip, "ppo_clip")
        self.ent_coef = _positive(ppo_ent_coef, "ppo_ent_coef", strict=False)
        self.vf_coef = _positive(ppo_vf_coef, "ppo_vf_coef", strict=False)
        self.max_grad_norm = _positive(ppo_max_grad_norm, "ppo_max_grad_norm", strict=False)
        for name, flag in (("ppo_shared", ppo_shared), ("ppo_squash", ppo_squash)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"{name} must be true or false; got {flag!r}")
        hidden = _positive(ppo_hidden, "ppo_hidden", integer=True)

        self.spec = EnvSpec.of(task_dist)
        self.num_envs = num_envs
        self.shared = bool(ppo_shared)
        self.squash = bool(ppo_squash)
        self.n_learners = 1 if self.shared else num_envs  # L
        self.streams = num_envs if self.shared else 1  # S: envs per learner; env i = (learner i // S, stream i % S)
        self.encoder = ObsEncoder(self.spec.observation_space)
        self.discrete = self.spec.discrete_actions
        if self.discrete:
            self.n_actions = self.spec.n_actions
            n_out = self.n_actions
        else:
            self.action_dim = self.spec.action_dim  # d
            n_out = self.action_dim
            box = self.spec.action_space
            self.low = torch.as_tensor(np.asarray(box.low, dtype=np.float32).reshape(-1))  # (d,)
            self.high = torch.as_tensor(np.asarray(box.high, dtype=np.float32).reshape(-1))  # (d,)
        # running statistics for Box observations; integer observations are one-hot, not normalised
        self.obs_rms = None if self.encoder.one_hot else RunningMeanStd(self.n_learners, self.encoder.size)
        self.generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        self.model = StackedActorCritic(self.n_learners, self.encoder.size, n_out, hidden, self.generator,
                                        log_std=not self.discrete)
        # eps 1e-5 as in CleanRL / SB3 PPO; elementwise, so one Adam is L independent ones
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr, eps=1e-5)
        keys = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")
        self.buffer: dict[str, list[np.ndarray]] = {k: [] for k in keys}  # one (N, ...) array per step
        self._drawn: np.ndarray | None = None  # Box: (N, d) the Gaussian sample u of the last act
        self.n_updates = 0

    # -- shapes and inputs

    def _by_learner(self, x: torch.Tensor) -> torch.Tensor:
        """(T, N, ...) -> (L, T*S, ...): each learner's samples, step-major (sample t*S + s)."""
        t, tail = x.shape[0], x.shape[2:]
        return x.reshape(t, self.n_learners, self.streams, *tail).transpose(0, 1).reshape(self.n_learners, -1, *tail)

    def _by_time(self, x: torch.Tensor) -> torch.Tensor:
        """(L, T*S) -> (T, N): the inverse of :meth:`_by_learner`."""
        return x.reshape(self.n_learners, -1, self.streams).transpose(0, 1).reshape(-1, self.num_envs)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(L, B, D) encoded observations -> network inputs: normalised if Box, one-hot as they are."""
        return x if self.obs_rms is None else self.obs_rms.normalize(x)

    def _log_prob_entropy(self, x: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of ``actions`` and the mean entropy, per learner.

        Args:
            x: (L, B, D) network inputs.
            actions: (L, B) int64 actions (Discrete) or (L, B, d) Gaussian samples u (Box).

        Returns:
            ``(logp, entropy)``: (L, B) log pi(a | s) and (L,) the policy's entropy averaged over
            the B states (Box: the Gaussian's, state-independent; see ``ppo_squash``).
        """
        if self.discrete:
            logp_all = torch.log_softmax(self.model.logits(x), -1)  # (L, B, A)
            logp = logp_all.gather(-1, actions[..., None]).squeeze(-1)  # (L, B)
            return logp, -(logp_all.exp() * logp_all).sum(-1).mean(1)  # (L, B), (L,)
        log_std = self.model.log_std  # (L, 1, d)
        logp = gaussian_log_prob(actions, self.model.logits(x), log_std)  # (L, B)
        if self.squash:
            logp = logp - tanh_log_det(actions)  # (L, B) Haarnoja et al. 2018, Eq. 21
        return logp, gaussian_entropy(log_std).squeeze(1)  # (L, B), (L,)

    # -- collect

    @torch.no_grad()
    @_single_thread()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Sample every env's action from its learner's policy.

        Args:
            obs: (N, *obs_shape) observations.

        Returns:
            (N,) int64 (Discrete) or (N, *action_shape) floats inside the box (Box: the Gaussian
            sample clipped, or squashed with ``ppo_squash``; the sample itself is kept for training).
        """
        x = self._normalize(self.encoder(obs).view(self.n_learners, self.streams, -1))  # (L, S, D)
        if self.discrete:
            probs = torch.softmax(self.model.logits(x).view(self.num_envs, -1), dim=-1)  # (N, A)
            u = torch.rand(self.num_envs, 1, generator=self.generator)  # (N, 1)
            actions = (probs.cumsum(-1) < u).sum(-1).clamp_(max=self.n_actions - 1)  # (N,) inverse-CDF sampling
            return actions.numpy().astype(np.int64)
        mean = self.model.logits(x)  # (L, S, d)
        noise = torch.randn(self.num_envs, self.action_dim, generator=self.generator)  # (N, d)
        u = mean + self.model.log_std.exp() * noise.view_as(mean)  # (L, S, d) u ~ N(mu, sigma^2)
        u = u.reshape(self.num_envs, -1)  # (N, d)
        self._drawn = u.numpy().copy()
        a = squash_to_box(u, self.low, self.high) if self.squash else u.clamp(self.low, self.high)  # (N, d)
        return a.numpy().reshape(self.num_envs, *self.spec.action_shape).astype(self.spec.action_dtype)

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
               terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Store one step of every env; after ``ppo_rollout`` steps, :meth:`train` on them.

        With Box actions the stored action is the Gaussian sample u drawn by the last :meth:`act`
        (what PPO's log-probabilities are of), not ``actions``, the clipped action the env ran.
        """
        if not self.discrete:
            if self._drawn is None:
                raise RuntimeError("ppo: update() needs the sample of a preceding act(); call act, step, update")
            actions, self._drawn = self._drawn, None
        for key, val in (("obs", obs), ("actions", actions), ("rewards", rewards), ("next_obs", next_obs),
                         ("terminated", terminated), ("truncated", truncated)):
            self.buffer[key].append(np.array(val))
        if len(self.buffer["obs"]) == self.rollout:
            self.train({k: np.stack(v) for k, v in self.buffer.items()})
            for v in self.buffer.values():
                v.clear()

    # -- train

    @_single_thread()
    def train(self, rollout: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """One PPO update of every learner on a rollout, then (Box observations) the running statistics.

        Args:
            rollout: ``obs`` and ``next_obs`` (T, N, *obs_shape), ``rewards``, ``terminated``,
                ``truncated`` (T, N), and ``actions``: (T, N) int64 (Discrete) or (T, N,
                *action_shape) the Gaussian samples u (Box), as :meth:`update` stores them.

        Returns:
            Per-learner diagnostics of the last minibatch, each (L,): ``policy_loss``,
            ``value_loss``, ``entropy``, ``grad_norm`` (before clipping).
        """
        obs, next_obs = rollout["obs"], rollout["next_obs"]
        t, n = obs.shape[:2]
        raw = self._by_learner(self.encoder(obs.reshape(t * n, *obs.shape[2:])).view(t, n, -1))  # (L, M, D), M = T*S
        x = self._normalize(raw)  # (L, M, D)
        x_next = self._normalize(self._by_learner(self.encoder(next_obs.reshape(t * n, *obs.shape[2:])).view(t, n, -1)))
        if self.discrete:
            actions = self._by_learner(torch.as_tensor(rollout["actions"], dtype=torch.long))  # (L, M)
        else:
            drawn = torch.as_tensor(np.asarray(rollout["actions"], dtype=np.float32).reshape(t, n, self.action_dim))
            actions = self._by_learner(drawn)  # (L, M, d)
        with torch.no_grad():  # the behaviour policy: weights and statistics have not moved since the rollout began
            values = self._by_time(self.model.value(x))  # (T, N)
            next_values = self._by_time(self.model.value(x_next))  # (T, N)
            logp_old = self._log_prob_entropy(x, actions)[0]  # (L, M)
            adv, returns = gae(torch.as_tensor(rollout["rewards"], dtype=torch.float32), values, next_values,
                               torch.as_tensor(rollout["terminated"]), torch.as_tensor(rollout["truncated"]),
                               self.gamma, self.gae_lambda)  # (T, N) each
            adv, returns = self._by_learner(adv), self._by_learner(returns)  # (L, M)
            # per-learner normalisation over its whole rollout (population std: defined for M = 1)
            adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, correction=0, keepdim=True) + 1e-8)

        params = list(self.model.parameters())
        for _ in range(self.epochs):
            order = torch.rand(x.shape[:2], generator=self.generator).argsort(dim=1)  # (L, M) a shuffle per learner
            for idx in order.tensor_split(self.minibatches, dim=1):  # (L, mb)
                xb = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))  # (L, mb, D)
                old, advb, retb = (v.gather(1, idx) for v in (logp_old, adv, returns))  # (L, mb)
                ab = actions.gather(1, idx if self.discrete else idx[..., None].expand(-1, -1, self.action_dim))
                logp, entropy = self._log_prob_entropy(xb, ab)  # (L, mb), (L,)
                policy_loss = -clipped_surrogate(logp, old, advb, self.clip).mean(1)  # (L,)
                value_loss = 0.5 * (self.model.value(xb) - retb).pow(2).mean(1)  # (L,)
                loss = policy_loss + self.vf_coef * value_loss - self.ent_coef * entropy  # (L,)
                self.optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()  # disjoint slices: learner i's gradient is that of loss[i] alone
                grad_norm = clip_grad_norm_per_learner_(params, self.max_grad_norm or math.inf)  # (L,)
                self.optimizer.step()
        if self.obs_rms is not None:
            self.obs_rms.update(raw)  # after the update: the next rollout is drawn and trained with the new statistics
        self.n_updates += 1
        return {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(),
                "entropy": entropy.detach(), "grad_norm": grad_norm}
