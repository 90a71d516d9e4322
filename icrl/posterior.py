"""The Bayes-optimal target of DPT on bandits with a known prior: P(a* = a | D).

DPT's pretraining loss -log q(a* | D) is minimised by the posterior probability that each arm is
the optimal one (Lee et al. 2023, §4); sampling from it is posterior sampling with the true prior.
The Bayes loss is the posterior's entropy E_D[H(P(a*|D))], and a model's excess loss is
E_D[KL(P(a*|D) || q(.|D))]: how far a trained DPT is from the posterior it imitates
(``scripts/posterior_gap.py``).

- Independent arms (Gaussian or Bernoulli rewards, U[0, 1] or Beta prior on every mean): each
  arm's posterior on a grid of G cells over [0, 1], then
  P(a* = a) = sum_g p_a(g) prod_{b != a} F_b(g), with F_b(g) the CDF at the cell's midpoint (half
  the cell's own mass); exact up to the grid.
- Linear (theta ~ N(0, I/d), rewards phi(a)^T theta + N(0, sigma^2)): the conjugate posterior
  N(Lambda^-1 X^T r / sigma^2, Lambda^-1) with Lambda = d I + X^T X / sigma^2, and P(a* = a) by
  Monte Carlo over theta.
"""

from __future__ import annotations

import numpy as np

CHUNK = 2048  # posterior rows per block: bounds the (rows, K, G) grid arrays to ~100 MB


def arm_posterior_probs(counts: np.ndarray, sums: np.ndarray, *, sigma: float | None, prior: str = "uniform",
                        alpha: float = 1.0, beta: float = 1.0, grid: int = 1024) -> np.ndarray:
    """P(a* = a | D) for independent arms from per-arm pull counts and reward sums.

    Args:
        counts, sums: (..., K) pulls and summed rewards per arm.
        sigma: Gaussian reward noise; None = Bernoulli rewards (sums count successes).
        prior: "uniform" (U[0, 1]) or "beta" (Beta(alpha, beta)) on every arm mean.
        grid: cells over [0, 1].

    Returns:
        (..., K) probabilities, summing to 1 over arms.
    """
    if prior not in ("uniform", "beta"):
        raise ValueError(f"prior must be 'uniform' or 'beta', got {prior!r}")
    g = (np.arange(grid) + 0.5) / grid  # (G,) cell midpoints
    log_prior = np.zeros(grid) if prior == "uniform" else (alpha - 1) * np.log(g) + (beta - 1) * np.log1p(-g)  # (G,)
    shape = counts.shape
    n_flat = counts.reshape(-1, shape[-1]).astype(np.float64)  # (R, K)
    s_flat = sums.reshape(-1, shape[-1]).astype(np.float64)  # (R, K)
    out = np.empty_like(n_flat)  # (R, K)
    for lo in range(0, len(n_flat), CHUNK):
        n, s = n_flat[lo:lo + CHUNK, :, None], s_flat[lo:lo + CHUNK, :, None]  # (r, K, 1)
        if sigma is None:
            loglik = s * np.log(g) + (n - s) * np.log1p(-g)  # (r, K, G) Bernoulli
        else:
            loglik = (s * g - 0.5 * n * g**2) / sigma**2  # (r, K, G) Gaussian, terms free of mu dropped
        logp = log_prior + loglik  # (r, K, G)
        p = np.exp(logp - logp.max(axis=-1, keepdims=True))  # (r, K, G)
        p /= p.sum(axis=-1, keepdims=True)  # (r, K, G) each arm's posterior mass per cell
        cdf = np.cumsum(p, axis=-1) - 0.5 * p  # (r, K, G) P(mu_b < cell midpoint)
        ones = np.ones_like(cdf[:, :1])  # (r, 1, G)
        left = np.cumprod(np.concatenate((ones, cdf[:, :-1]), axis=1), axis=1)  # (r, K, G) prod over b < a
        right = np.cumprod(np.concatenate((ones, cdf[:, :0:-1]), axis=1), axis=1)[:, ::-1]  # (r, K, G) over b > a
        probs = (p * left * right).sum(axis=-1)  # (r, K)
        out[lo:lo + CHUNK] = probs / probs.sum(axis=-1, keepdims=True)
    return out.reshape(shape)


def linear_posterior_probs(xtx: np.ndarray, xtr: np.ndarray, features: np.ndarray, sigma: float,
                           rng: np.random.Generator, n_samples: int = 4096) -> np.ndarray:
    """P(a* = a | D) for a linear bandit with prior theta ~ N(0, I/d), by Monte Carlo.

    Args:
        xtx: (..., d, d) sum of phi(a_i) phi(a_i)^T over the data.
        xtr: (..., d) sum of phi(a_i) r_i.
        features: (K, d) arm features.
        sigma: reward noise.
        n_samples: posterior draws of theta per row.

    Returns:
        (..., K) probabilities (multiples of 1 / n_samples).
    """
    d = features.shape[1]
    shape = xtr.shape[:-1]
    A = xtx.reshape(-1, d, d) / sigma**2 + d * np.eye(d)  # (R, d, d) posterior precision
    cov = np.linalg.inv(A)  # (R, d, d)
    mean = np.einsum("rij,rj->ri", cov, xtr.reshape(-1, d) / sigma**2)  # (R, d)
    chol = np.linalg.cholesky(cov)  # (R, d, d)
    out = np.empty((len(mean), features.shape[0]))  # (R, K)
    rows = max(1, CHUNK * 64 // n_samples)  # rows per block: ~131k theta draws, (r, S, K) stays ~10 MB
    for lo in range(0, len(mean), rows):
        z = rng.standard_normal((len(mean[lo:lo + rows]), n_samples, d))  # (r, S, d)
        theta = mean[lo:lo + rows, None] + np.einsum("rij,rsj->rsi", chol[lo:lo + rows], z)  # (r, S, d)
        best = np.argmax(theta @ features.T, axis=-1)  # (r, S)
        onehot = best[..., None] == np.arange(features.shape[0])  # (r, S, K)
        out[lo:lo + rows] = onehot.mean(axis=1)
    return out.reshape(*shape, features.shape[0])


def entropy(p: np.ndarray) -> np.ndarray:
    """H(p) in nats over the last axis; 0 log 0 = 0."""
    return cross_entropy(p, np.log(np.where(p > 0, p, 1.0)))


def cross_entropy(p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """-sum_a p(a) log q(a) over the last axis; terms with p = 0 contribute 0."""
    return -np.sum(np.where(p > 0, p * log_q, 0.0), axis=-1)
