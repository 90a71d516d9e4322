"""Bandit source algorithms, batched over N tasks as (N, n_arms) numpy arrays
(docs/architecture.md#collection-and-source-algorithms).

Every policy here runs N independent bandit learners at once with no Python loop over tasks:
the statistics live in (N, n_arms) arrays (or (N, d, d) for LinUCB) and each step is a handful of
vectorised numpy operations. The index and posterior formulas are small pure functions so the
tests can check them against hand-computed numbers.

The baselines follow the DPT paper (Lee et al. 2023, "Supervised Pretraining Can Learn
In-Context Reinforcement Learning", App. on bandit baselines): Emp (empirical mean), UCB with the
bonus c/sqrt(n_a), Thompson sampling with a N(0.5, 1/12) prior (the mean and variance of U[0, 1])
and known noise, LinUCB, and the "random contexts" used to build DPT's pretraining data. ``bayes``
samples from the exact posterior over the optimal arm: the policy DPT's loss targets.

All policies share one constructor signature, ``(num_envs, task_dist, rng, **params)``, and the
batched interface of :class:`icrl.collectors.base.Policy`. Learning statistics are kept across
episodes: a learning history is the whole run of the learner.
"""
from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np

from icrl.envs import BernoulliBanditTaskDistribution
from icrl.collectors.psrl import sample_categorical
from icrl.posterior import arm_posterior_probs, linear_posterior_probs

# ----------------------------------------------------------------------------------------------
# pure index / posterior math


def empirical_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Empirical mean reward of every arm, (N, K) ``sums / max(counts, 1)``: 0 if never pulled."""
    return sums / np.maximum(counts, 1.0)


def ucb_index(sums: np.ndarray, counts: np.ndarray, c: float) -> np.ndarray:
    """UCB index in the DPT-paper form, mu_hat_a + c / sqrt(n_a); +inf for unpulled arms.

    DPT (Lee et al. 2023, App. baselines) uses this bonus without the log t factor of UCB1; its
    online controller pulls unpulled arms first, which the +inf here reproduces.

    Args:
        sums: (N, K) summed rewards per arm.
        counts: (N, K) pulls per arm.
        c: exploration constant (>= 0).

    Returns:
        (N, K) float64 index.
    """
    n = np.maximum(counts, 1.0)
    index = sums / n + c / np.sqrt(n)
    return np.where(counts > 0, index, np.inf)


def ucb1_index(sums: np.ndarray, counts: np.ndarray, t: np.ndarray, c: float) -> np.ndarray:
    """UCB1 index mu_hat_a + c * sqrt(2 ln t / n_a) (Auer et al. 2002); +inf for unpulled arms.

    Args:
        sums: (N, K) summed rewards per arm.
        counts: (N, K) pulls per arm.
        t: (N,) total pulls so far of each learner (``counts.sum(1)``).
        c: exploration constant (>= 0); c = 1 is Auer et al.'s UCB1.

    Returns:
        (N, K) float64 index.
    """
    n = np.maximum(counts, 1.0)
    log_t = np.log(np.maximum(np.asarray(t, dtype=np.float64), 1.0))[:, None]  # (N, 1)
    index = sums / n + c * np.sqrt(2.0 * log_t / n)
    return np.where(counts > 0, index, np.inf)


def gaussian_posterior(
    sums: np.ndarray, counts: np.ndarray, prior_mean: float, prior_std: float, noise_std: float
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior N(m, s^2) of each arm's mean under a N(mu0, sigma0^2) prior and known noise sigma.

    Conjugate normal update: precision 1/s^2 = 1/sigma0^2 + n/sigma^2 and
    m = s^2 * (mu0/sigma0^2 + sum_r/sigma^2), i.e. m = w*mu0 + (1 - w)*mean_r with prior weight
    w = sigma^2 / (sigma^2 + n*sigma0^2). (DPT's released baseline code writes the weight as
    sigma0^2 / (sigma0^2 + n*sigma^2), swapping the two variances; its variance update is exact.
    We use the exact conjugate posterior; with sigma0^2 = 1/12 and sigma^2 = 0.09 the two differ
    little.)

    Args:
        sums: (N, K) summed rewards per arm.
        counts: (N, K) pulls per arm.
        prior_mean: mu0.
        prior_std: sigma0 (> 0).
        noise_std: known reward noise sigma (> 0).

    Returns:
        ``(mean, std)``, each (N, K) float64.
    """
    prior_prec = 1.0 / prior_std**2
    noise_prec = 1.0 / noise_std**2
    post_var = 1.0 / (prior_prec + counts * noise_prec)
    post_mean = post_var * (prior_mean * prior_prec + sums * noise_prec)
    return post_mean, np.sqrt(post_var)


def beta_posterior(
    successes: np.ndarray, counts: np.ndarray, alpha0: float = 1.0, beta0: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Beta(alpha, beta) posterior of each Bernoulli arm: alpha0 + successes, beta0 + failures.

    ``successes`` are the reward sums of binary rewards; Beta(1, 1) is the uniform prior.
    Returns ``(alpha, beta)`` shaped like ``counts``.
    """
    return alpha0 + successes, beta0 + (counts - successes)


def linucb_index(cov_inv: np.ndarray, b: np.ndarray, features: np.ndarray, beta: float) -> np.ndarray:
    """LinUCB index theta_hat^T phi(a) + beta * ||phi(a)||_{Sigma^-1} for every arm (Li et al. 2010).

    Args:
        cov_inv: (N, d, d) inverse of Sigma = lambda*I + sum phi phi^T.
        b: (N, d) sum of r * phi(a) over the history.
        features: (K, d) arm features phi(a).
        beta: confidence width (>= 0).

    Returns:
        (N, K) float64 index.
    """
    theta = np.einsum("nij,nj->ni", cov_inv, b)  # (N, d) ridge estimate Sigma^-1 b
    mean = theta @ features.T  # (N, K)
    proj = np.matmul(features[None], cov_inv)  # (N, K, d) = phi^T Sigma^-1
    width = np.sqrt(np.maximum((proj * features[None]).sum(-1), 0.0))  # (N, K)
    return mean + beta * width


def sherman_morrison_update(cov_inv: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sherman–Morrison: (A + x x^T)^-1 = A^-1 - (A^-1 x)(A^-1 x)^T / (1 + x^T A^-1 x), batched.

    ``cov_inv`` is (N, d, d) symmetric A^-1 and ``x`` (N, d); returns a new (N, d, d) array.
    """
    ax = np.einsum("nij,nj->ni", cov_inv, x)  # (N, d)
    denom = 1.0 + np.einsum("ni,ni->n", x, ax)  # (N,)
    return cov_inv - ax[:, :, None] * ax[:, None, :] / denom[:, None, None]


def argmax_random_tiebreak(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise argmax with ties broken uniformly at random.

    Only rows that do have a tie consume random numbers (one uniform per arm of each tied row),
    so the common tie-free step costs one argmax, one gather and one comparison.

    Args:
        values: (N, K) scores (+inf allowed).
        rng: the policy's generator.

    Returns:
        (N,) int64 chosen columns.
    """
    choice = values.argmax(axis=1)  # (N,) first maximum
    best = np.take_along_axis(values, choice[:, None], axis=1)  # (N, 1)
    is_max = values == best  # (N, K)
    if np.count_nonzero(is_max) == len(values):  # exactly one maximum per row: no ties anywhere
        return choice.astype(np.int64, copy=False)
    tied = np.count_nonzero(is_max, axis=1) > 1  # (N,)
    noise = rng.random((int(tied.sum()), values.shape[1]))  # (n_tied, K)
    choice[tied] = np.where(is_max[tied], noise, -1.0).argmax(axis=1)
    return choice.astype(np.int64, copy=False)


def dpt_random_probs(n: int, n_arms: int, rng: np.random.Generator) -> np.ndarray:
    """Per-task action distributions of DPT's random contexts.

    DPT (Lee et al. 2023, App. on bandit data collection) builds pretraining contexts by drawing,
    per task, p = (1 - w) * Dirichlet(1) + w * one_hot(random arm) with w ~ U{0, 0.1, ..., 1}, so
    the contexts range from near-uniform to concentrated on one (usually suboptimal) arm.

    Args:
        n: number of tasks.
        n_arms: K.
        rng: generator.

    Returns:
        (n, K) float64 rows summing to 1.
    """
    w = rng.integers(0, 11, size=n) / 10.0  # (n,) in {0, 0.1, ..., 1}
    dirichlet = rng.dirichlet(np.ones(n_arms), size=n)  # (n, K)
    arm = rng.integers(0, n_arms, size=n)  # (n,)
    probs = (1.0 - w)[:, None] * dirichlet
    probs[np.arange(n), arm] += w
    return probs


# ----------------------------------------------------------------------------------------------
# helpers on the task distribution


def _n_arms(task_dist: Any, name: str) -> int:
    n_arms = getattr(task_dist, "n_arms", None)
    if n_arms is None:
        raise ValueError(
            f"policy {name!r} needs a bandit task distribution (with n_arms); got "
            f"{type(task_dist).__name__} for env {getattr(task_dist, 'env_id', '?')!r}"
        )
    return int(n_arms)


def _thompson_noise_std(task_dist: Any) -> float | None:
    """Known reward-noise std of a Gaussian-noise bandit, or None for Bernoulli rewards."""
    sigma = getattr(task_dist, "sigma", None)
    if sigma is not None:
        return float(sigma)
    if isinstance(task_dist, BernoulliBanditTaskDistribution):
        return None
    raise ValueError(
        "thompson needs a bandit with Gaussian noise of known std (task_dist.sigma) or a Bernoulli "
        f"bandit; got {type(task_dist).__name__} for env {getattr(task_dist, 'env_id', '?')!r}"
    )


def _check(value: float, name: str, low: float, strict: bool) -> float:
    """``value`` as a float, or a ValueError naming the parameter ``name`` and its range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > low if strict else value >= low)
    if not ok:
        rel = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {rel} {low}; got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------------------
# policies


class CountingPolicy(abc.ABC):
    """Base of the count-based bandit learners: per-arm pull counts and reward sums.

    Each step changes the statistics of one arm per row, so subclasses that score arms from their
    own statistics only (Emp, UCB, Thompson) refresh a cached (N, K) table at the N pulled
    entries in :meth:`_refresh` instead of recomputing all N*K entries every step; the cached
    values are computed with the same float operations as the pure functions above.
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator, name: str) -> None:
        self.num_envs = num_envs
        self.n_arms = _n_arms(task_dist, name)
        self.rng = rng
        self.counts = np.zeros((num_envs, self.n_arms))  # (N, K) pulls per arm
        self.sums = np.zeros((num_envs, self.n_arms))  # (N, K) summed rewards per arm
        self.t = np.zeros(num_envs)  # (N,) total pulls
        self._row_start = np.arange(num_envs) * self.n_arms  # (N,) flat index of each row's arm 0

    @abc.abstractmethod
    def act(self, obs: np.ndarray) -> np.ndarray:
        """(N,) int64 actions; subclasses define the rule."""

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Add the pulled arms' rewards to the statistics (each row pulls one arm: no aliasing)."""
        flat = self._row_start + actions  # (N,) flat indices of the pulled (row, arm) entries
        counts, sums = self.counts.reshape(-1), self.sums.reshape(-1)  # views
        counts[flat] += 1.0
        sums[flat] += rewards
        self.t += 1.0
        self._refresh(flat, counts[flat], sums[flat])

    def _refresh(self, flat: np.ndarray, n: np.ndarray, s: np.ndarray) -> None:
        """Update cached per-arm values at ``flat`` from their new counts ``n`` and sums ``s``."""


class RandomPolicy(CountingPolicy):
    """Uniformly random arms."""

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator) -> None:
        super().__init__(num_envs, task_dist, rng, "random")

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.integers(0, self.n_arms, size=self.num_envs, dtype=np.int64)


class EmpPolicy(CountingPolicy):
    """Emp (DPT's greedy baseline): each unpulled arm once, then argmax of the empirical mean."""

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator) -> None:
        super().__init__(num_envs, task_dist, rng, "emp")
        self.index = np.full((num_envs, self.n_arms), np.inf)  # (N, K) mean, +inf while unpulled

    def _refresh(self, flat: np.ndarray, n: np.ndarray, s: np.ndarray) -> None:
        self.index.reshape(-1)[flat] = s / n  # = empirical_means at the pulled entries

    def act(self, obs: np.ndarray) -> np.ndarray:
        return argmax_random_tiebreak(self.index, self.rng)


class UCBPolicy(CountingPolicy):
    """UCB in the DPT-paper form, argmax mu_hat_a + c / sqrt(n_a), unpulled arms first."""

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator, ucb_c: float = 1.0) -> None:
        super().__init__(num_envs, task_dist, rng, "ucb")
        self.c = _check(ucb_c, "ucb_c", 0.0, strict=False)
        self.index = np.full((num_envs, self.n_arms), np.inf)  # (N, K) ucb_index, kept current

    def _refresh(self, flat: np.ndarray, n: np.ndarray, s: np.ndarray) -> None:
        self.index.reshape(-1)[flat] = s / n + self.c / np.sqrt(n)  # = ucb_index at those entries

    def act(self, obs: np.ndarray) -> np.ndarray:
        return argmax_random_tiebreak(self.index, self.rng)


class UCB1Policy(CountingPolicy):
    """UCB1, argmax mu_hat_a + c * sqrt(2 ln t / n_a), unpulled arms first."""

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator, ucb_c: float = 1.0) -> None:
        super().__init__(num_envs, task_dist, rng, "ucb1")
        self.c = _check(ucb_c, "ucb_c", 0.0, strict=False)

    def act(self, obs: np.ndarray) -> np.ndarray:
        # ln t moves every arm's bonus each step, so the index is recomputed in full
        return argmax_random_tiebreak(ucb1_index(self.sums, self.counts, self.t, self.c), self.rng)


class ThompsonPolicy(CountingPolicy):
    """Thompson sampling: Beta(1, 1)-Bernoulli or Gaussian with a N(mu0, sigma0^2) prior.

    The reward model follows the task distribution: Bernoulli bandits get the
    Beta-Bernoulli posterior; Gaussian and linear bandits get the Gaussian posterior with the known
    noise ``task_dist.sigma`` (DPT's Thompson baseline; on the linear bandit it ignores the
    features and keeps one posterior per arm, as in the DPT paper).
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator,
                 thompson_prior_mean: float = 0.5, thompson_prior_std: float = math.sqrt(1.0 / 12.0)) -> None:
        super().__init__(num_envs, task_dist, rng, "thompson")
        self.prior_mean = _check(thompson_prior_mean, "thompson_prior_mean", -math.inf, strict=True)
        self.prior_std = _check(thompson_prior_std, "thompson_prior_std", 0.0, strict=True)
        self.noise_std = _thompson_noise_std(task_dist)
        # cached posterior parameters, (N, K) each: Beta (alpha, beta) or Gaussian (mean, std)
        if self.noise_std is None:
            self.post_a, self.post_b = beta_posterior(self.sums, self.counts)
        else:
            self.post_a, self.post_b = gaussian_posterior(
                self.sums, self.counts, self.prior_mean, self.prior_std, self.noise_std)

    def _refresh(self, flat: np.ndarray, n: np.ndarray, s: np.ndarray) -> None:
        if self.noise_std is None:
            a, b = beta_posterior(s, n)
        else:
            a, b = gaussian_posterior(s, n, self.prior_mean, self.prior_std, self.noise_std)
        self.post_a.reshape(-1)[flat] = a
        self.post_b.reshape(-1)[flat] = b

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.noise_std is None:  # Bernoulli rewards: the sums are the success counts
            sample = self.rng.beta(self.post_a, self.post_b)  # (N, K)
        else:
            sample = self.post_a + self.post_b * self.rng.standard_normal(self.post_a.shape)  # (N, K)
        return np.argmax(sample, axis=1).astype(np.int64)  # continuous draws: ties have probability 0


class LinUCBPolicy:
    """LinUCB (Li et al. 2010; DPT's linear-bandit baseline): argmax theta^T phi(a) + beta ||phi(a)||_{Sigma^-1}.

    Sigma = lambda*I + sum_t phi(a_t) phi(a_t)^T is kept as its inverse, updated by
    Sherman–Morrison rank-one steps in (N, d, d) arrays; theta_hat = Sigma^-1 sum_t r_t phi(a_t).
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator,
                 linucb_beta: float = 1.0, linucb_lambda: float = 1.0) -> None:
        features = getattr(task_dist, "features", None)
        if features is None:
            raise ValueError(
                f"linucb needs a linear bandit (features); got env {getattr(task_dist, 'env_id', '?')!r}. "
                "Use icrl/LinearBandit-v0 or another source algorithm (ucb, thompson, ...)."
            )
        self.features = np.asarray(features, dtype=np.float64)  # (K, d)
        self.beta = _check(linucb_beta, "linucb_beta", 0.0, strict=False)
        lam = _check(linucb_lambda, "linucb_lambda", 0.0, strict=True)
        self.rng = rng
        d = self.features.shape[1]
        self.cov_inv = np.broadcast_to(np.eye(d) / lam, (num_envs, d, d)).copy()  # (N, d, d)
        self.b = np.zeros((num_envs, d))  # (N, d)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return argmax_random_tiebreak(linucb_index(self.cov_inv, self.b, self.features, self.beta), self.rng)

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        x = self.features[actions]  # (N, d)
        self.cov_inv = sherman_morrison_update(self.cov_inv, x)
        self.b += rewards[:, None] * x


class BayesPolicy:
    """Posterior probability matching with the family's exact prior: a_t ~ P(a* = a | D)^(1/T).

    DPT's loss is minimised by P(a* | D) (docs/architecture.md#models), so this is the policy a
    perfect DPT runs when it samples at temperature ``T = bayes_temperature``: at T = 1 it is
    Thompson sampling under the true prior (U[0, 1] or Beta arm means; theta ~ N(0, I/d) on the
    linear bandit), and below 1 it sharpens the posterior as ``eval.temperature`` sharpens DPT's
    logits. P(a* | D) comes from :mod:`icrl.posterior`: a grid over each arm's mean for independent
    arms, 4,096 posterior draws of theta for the linear bandit.
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator, bayes_temperature: float = 1.0) -> None:
        self.dist, self.rng, self.num_envs = task_dist, rng, num_envs
        self.temperature = _check(bayes_temperature, "bayes_temperature", 0.0, strict=True)
        n_arms = _n_arms(task_dist, "bayes")
        self.features = getattr(task_dist, "features", None)
        if self.features is None and getattr(task_dist, "prior", None) is None:
            raise ValueError(f"bayes needs a bandit family with a known prior (Gaussian, Bernoulli or linear); "
                             f"got {type(task_dist).__name__}")
        if self.features is not None:
            d = self.features.shape[1]
            self.xtx, self.xtr = np.zeros((num_envs, d, d)), np.zeros((num_envs, d))  # sum phi phi^T, sum phi r
        else:
            self.counts, self.sums = np.zeros((num_envs, n_arms)), np.zeros((num_envs, n_arms))  # (N, K) each

    def probs(self) -> np.ndarray:
        """(N, K) P(a* = a | D)^(1/T), normalised over arms."""
        d = self.dist
        if self.features is not None:
            p = linear_posterior_probs(self.xtx, self.xtr, self.features, d.sigma, self.rng)
        else:
            p = arm_posterior_probs(self.counts, self.sums, sigma=getattr(d, "sigma", None), prior=d.prior,
                                    alpha=d.prior_alpha, beta=d.prior_beta)
        p = p ** (1.0 / self.temperature)
        return p / p.sum(axis=1, keepdims=True)

    def act(self, obs: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):  # an arm ruled out has log-probability -inf
            return sample_categorical(np.log(self.probs()), self.rng.random(self.num_envs))

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        rows = np.arange(self.num_envs)
        if self.features is not None:
            x = self.features[actions]  # (N, d)
            self.xtx += x[:, :, None] * x[:, None, :]
            self.xtr += rewards[:, None] * x
        else:
            self.counts[rows, actions] += 1.0
            self.sums[rows, actions] += rewards


class DPTRandomPolicy:
    """DPT's random contexts: per task a fixed action distribution p, actions i.i.d. from p."""

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator) -> None:
        self.num_envs = num_envs
        self.rng = rng
        self.probs = dpt_random_probs(num_envs, _n_arms(task_dist, "dpt_random"), rng)  # (N, K)
        self._cdf = np.cumsum(self.probs, axis=1)
        self._cdf[:, -1] = 1.0  # guard against round-off leaving u > cdf[-1]

    def act(self, obs: np.ndarray) -> np.ndarray:
        u = self.rng.random(self.num_envs)[:, None]  # (N, 1)
        return (self._cdf <= u).sum(axis=1).astype(np.int64)  # inverse-CDF sampling

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """The context distribution is fixed: nothing to learn."""


BANDIT_POLICIES: dict[str, type] = {
    "random": RandomPolicy,
    "emp": EmpPolicy,
    "ucb": UCBPolicy,
    "ucb1": UCB1Policy,
    "thompson": ThompsonPolicy,
    "linucb": LinUCBPolicy,
    "dpt_random": DPTRandomPolicy,
    "bayes": BayesPolicy,
}
