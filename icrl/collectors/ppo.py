"""PPO as a batched source algorithm: N independent actor-critic learners trained at once (DESIGN §5).

Clipped PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", Eq. 7 and 9) with
generalised advantage estimation (Schulman et al. 2016, "High-Dimensional Continuous Control Using
Generalized Advantage Estimation", Eq. 16), for discrete actions, on integer observations
(Discrete / MultiDiscrete, each component one-hot encoded) or Box observations.

Independent mode (default): env i has a learner of its own, starting from scratch, so every
learning history is a different run of the algorithm. The L = N learners are not a Python loop:
each weight is one stacked tensor of shape (L, in, out) and a layer is one ``torch.baddbmm`` over
all learners. Summing the learners' losses gives every learner exactly the gradient of its own
loss (their parameters are disjoint slices); Adam is elementwise, so one Adam over the stacked
tensors is L Adams; gradient clipping and advantage normalisation are done per learner. What one
learner sees never reaches another (tested). Shared mode (``ppo_shared=True``, DICP's collector):
one learner (L = 1) trained on all N streams together.

Loop phases, as in Stable-Baselines3: :meth:`PPOPolicy.act` / :meth:`PPOPolicy.update` collect a
rollout of ``ppo_rollout`` steps per env, then :meth:`PPOPolicy.train` runs ``ppo_epochs`` epochs
of ``ppo_minibatches`` minibatches over each learner's rollout (for an independent learner: its
steps, shuffled along the time axis). Truncated episodes are bootstrapped with V(final obs),
terminated ones with 0; the runner hands over the final observation as ``next_obs``.

All randomness (initial weights, actions, minibatch shuffles) comes from one ``torch.Generator``
seeded from the policy's numpy generator.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Iterable

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from icrl.collectors.mdp import num_actions

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


def observation_space(task_dist: Any) -> spaces.Space:
    """The single-env observation space of a family, read from its task distribution.

    A ``single_observation_space`` / ``observation_space`` attribute wins (so a gymnasium env or
    vector env can stand in for the task distribution); else the grid families' ``obs_nvec``
    (MultiDiscrete) or a bandit's constant observation (Discrete(1)).

    Raises:
        ValueError: none of these is there.
    """
    for attr in ("single_observation_space", "observation_space"):
        space = getattr(task_dist, attr, None)
        if isinstance(space, spaces.Space):
            return space
    nvec = getattr(task_dist, "obs_nvec", None)
    if nvec is not None:
        return spaces.MultiDiscrete(np.asarray(nvec, dtype=np.int64))
    if getattr(task_dist, "n_arms", None) is not None:
        return spaces.Discrete(1)  # a bandit's observation is a constant
    raise ValueError(f"cannot tell the observation space of {type(task_dist).__name__}; give the task "
                     "distribution an `observation_space` (or `obs_nvec` for integer observations)")


class ObsEncoder:
    """Observations to float32 network inputs.

    Discrete: one-hot. MultiDiscrete: each component one-hot, concatenated (Dark Room (x, y) on a
    9x9 grid: 9 + 9 = 18 inputs). Box: flattened floats.

    Args:
        space: the single-env observation space.
    """

    def __init__(self, space: spaces.Space) -> None:
        self.one_hot = not isinstance(space, spaces.Box)
        if isinstance(space, spaces.Discrete):
            nvec, start = np.array([space.n]), np.array([space.start])
        elif isinstance(space, spaces.MultiDiscrete):
            nvec, start = space.nvec.reshape(-1), np.asarray(space.start).reshape(-1)
        elif isinstance(space, spaces.Box):
            nvec, start = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        else:
            raise ValueError(f"ppo needs Discrete, MultiDiscrete or Box observations; got {space}")
        self.shape = space.shape
        self.size = int(nvec.sum()) if self.one_hot else int(np.prod(space.shape))
        # column of component k's value v is offset[k] + v - start[k]
        self.offset = torch.as_tensor(np.concatenate([[0], np.cumsum(nvec)[:-1]]) - start, dtype=torch.long)

    def __call__(self, obs: np.ndarray) -> torch.Tensor:
        """(B, *obs_shape) observations -> (B, size) float32."""
        b = len(obs)
        if not self.one_hot:
            return torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(b, -1))  # (B, size)
        idx = torch.as_tensor(np.asarray(obs, dtype=np.int64).reshape(b, -1)) + self.offset  # (B, k)
        return torch.zeros(b, self.size).scatter_(1, idx, 1.0)  # (B, size)


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
    first policy) and 1 on the value head.
    """

    def __init__(self, n_learners: int, obs_size: int, n_actions: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        g = math.sqrt(2.0)
        self.actor = StackedMLP(n_learners, [obs_size, hidden, hidden, n_actions], [g, g, 0.01], generator)
        self.critic = StackedMLP(n_learners, [obs_size, hidden, hidden, 1], [g, g, 1.0], generator)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(L, B, obs_size) -> (L, B, n_actions)."""
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
        task_dist: the family's task distribution (observation space and action count; see
            :func:`observation_space` and :func:`~icrl.collectors.mdp.num_actions`); a gymnasium env
            works too.
        rng: the policy's generator; seeds the torch generator of all PPO randomness.
        ppo_rollout: steps per env between updates (T).
        ppo_epochs: passes over each rollout.
        ppo_minibatches: minibatches per epoch; an independent learner's T steps are shuffled
            along the time axis and split into this many.
        ppo_lr: Adam learning rate.
        ppo_gamma: discount.
        ppo_gae_lambda: GAE lambda.
        ppo_clip: clip range eps of the probability ratio.
        ppo_ent_coef: entropy-bonus coefficient.
        ppo_vf_coef: value-loss coefficient.
        ppo_max_grad_norm: clip each learner's gradient norm to this (0: no clipping).
        ppo_hidden: width of the two hidden layers of the actor and of the critic.
        ppo_shared: one learner on all N streams (DICP) instead of N independent learners.

    The defaults are tuned for Dark Room (9x9, H 20): 63 of 64 independent runs end (mean of the
    last 10 episodes) at >= 80% of the oracle return within 300 episodes; see
    ``python scripts/bench_collect.py --only ppo``. A discount of 0.9 learned markedly more reliably there than 0.99.
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator, ppo_rollout: int = 100,
                 ppo_epochs: int = 4, ppo_minibatches: int = 2, ppo_lr: float = 3e-3, ppo_gamma: float = 0.9,
                 ppo_gae_lambda: float = 0.95, ppo_clip: float = 0.2, ppo_ent_coef: float = 0.03,
                 ppo_vf_coef: float = 0.5, ppo_max_grad_norm: float = 0.5, ppo_hidden: int = 32,
                 ppo_shared: bool = False) -> None:
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
        if not isinstance(ppo_shared, (bool, np.bool_)):
            raise ValueError(f"ppo_shared must be true or false; got {ppo_shared!r}")
        hidden = _positive(ppo_hidden, "ppo_hidden", integer=True)

        self.num_envs = num_envs
        self.shared = bool(ppo_shared)
        self.n_learners = 1 if self.shared else num_envs  # L
        self.streams = num_envs if self.shared else 1  # S: envs per learner; env i = (learner i // S, stream i % S)
        self.encoder = ObsEncoder(observation_space(task_dist))
        self.n_actions = num_actions(task_dist)
        self.generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        self.model = StackedActorCritic(self.n_learners, self.encoder.size, self.n_actions, hidden, self.generator)
        # eps 1e-5 as in CleanRL / SB3 PPO; elementwise, so one Adam is L independent ones
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr, eps=1e-5)
        keys = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")
        self.buffer: dict[str, list[np.ndarray]] = {k: [] for k in keys}  # one (N, ...) array per step
        self.n_updates = 0

    # -- collect

    def _by_learner(self, x: torch.Tensor) -> torch.Tensor:
        """(T, N, ...) -> (L, T*S, ...): each learner's samples, step-major (sample t*S + s)."""
        t, tail = x.shape[0], x.shape[2:]
        return x.reshape(t, self.n_learners, self.streams, *tail).transpose(0, 1).reshape(self.n_learners, -1, *tail)

    def _by_time(self, x: torch.Tensor) -> torch.Tensor:
        """(L, T*S) -> (T, N): the inverse of :meth:`_by_learner`."""
        return x.reshape(self.n_learners, -1, self.streams).transpose(0, 1).reshape(-1, self.num_envs)

    @torch.no_grad()
    @_single_thread()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Sample every env's action from its learner's policy: (N, *obs_shape) -> (N,) int64."""
        x = self.encoder(obs).view(self.n_learners, self.streams, -1)  # (L, S, D)
        probs = torch.softmax(self.model.logits(x).view(self.num_envs, -1), dim=-1)  # (N, A)
        u = torch.rand(self.num_envs, 1, generator=self.generator)  # (N, 1)
        actions = (probs.cumsum(-1) < u).sum(-1).clamp_(max=self.n_actions - 1)  # (N,) inverse-CDF sampling
        return actions.numpy().astype(np.int64)

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
               terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Store one step of every env; after ``ppo_rollout`` steps, :meth:`train` on them."""
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
        """One PPO update of every learner on a rollout.

        Args:
            rollout: ``obs`` and ``next_obs`` (T, N, *obs_shape), ``actions``, ``rewards``,
                ``terminated``, ``truncated`` (T, N), as :meth:`update` receives them.

        Returns:
            Per-learner diagnostics of the last minibatch, each (L,): ``policy_loss``,
            ``value_loss``, ``entropy``, ``grad_norm`` (before clipping).
        """
        obs, next_obs = rollout["obs"], rollout["next_obs"]
        t, n = obs.shape[:2]
        x = self._by_learner(self.encoder(obs.reshape(t * n, *obs.shape[2:])).view(t, n, -1))  # (L, M, D), M = T*S
        x_next = self._by_learner(self.encoder(next_obs.reshape(t * n, *obs.shape[2:])).view(t, n, -1))  # (L, M, D)
        actions = self._by_learner(torch.as_tensor(rollout["actions"], dtype=torch.long))  # (L, M)
        with torch.no_grad():  # the behaviour policy: the weights have not moved since the rollout began
            values = self._by_time(self.model.value(x))  # (T, N)
            next_values = self._by_time(self.model.value(x_next))  # (T, N)
            logp_old = torch.log_softmax(self.model.logits(x), -1).gather(-1, actions[..., None]).squeeze(-1)  # (L, M)
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
                ab, old, advb, retb = (v.gather(1, idx) for v in (actions, logp_old, adv, returns))  # (L, mb)
                logp_all = torch.log_softmax(self.model.logits(xb), -1)  # (L, mb, A)
                logp = logp_all.gather(-1, ab[..., None]).squeeze(-1)  # (L, mb)
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean(1)  # (L,)
                policy_loss = -clipped_surrogate(logp, old, advb, self.clip).mean(1)  # (L,)
                value_loss = 0.5 * (self.model.value(xb) - retb).pow(2).mean(1)  # (L,)
                loss = policy_loss + self.vf_coef * value_loss - self.ent_coef * entropy  # (L,)
                self.optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()  # disjoint slices: learner i's gradient is that of loss[i] alone
                grad_norm = clip_grad_norm_per_learner_(params, self.max_grad_norm or math.inf)  # (L,)
                self.optimizer.step()
        self.n_updates += 1
        return {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(),
                "entropy": entropy.detach(), "grad_norm": grad_norm}
