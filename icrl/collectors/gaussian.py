"""The continuous policy's math for PPO on Box actions: the diagonal Gaussian, tanh squashing,
and running observation statistics (stacked over independent learners).

Pure functions and one small class, tested against ``torch.distributions`` and hand cases
(tests/test_collectors_box.py); :mod:`icrl.collectors.ppo` builds its Gaussian policy on them.
"""
from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2.0 * math.pi)
#: SAC's epsilon inside log(1 - tanh(u)^2 + eps) (Haarnoja et al. 2018's reference code; SB3 uses the same).
TANH_EPS = 1e-6


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(log_std)^2)), summed over the last (action) dimension.

    The normal density (Bishop 2006, "Pattern Recognition and Machine Learning", Eq. 2.43) with a
    diagonal covariance factorises over dimensions:
    sum_j [-(x_j - mu_j)^2 / (2 sigma_j^2) - log sigma_j - log(2 pi) / 2].

    Args:
        x: (..., d) samples.
        mean: (..., d) means (broadcast against ``x``).
        log_std: (..., d) log standard deviations (broadcast, e.g. (L, 1, d) against (L, B, d)).

    Returns:
        (...) log-densities.
    """
    z = (x - mean) * torch.exp(-log_std)  # (..., d) standardised sample
    return (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)  # (...)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Differential entropy of a diagonal Gaussian, sum_j (1/2 + log(2 pi)/2 + log sigma_j).

    h(N(mu, K)) = 1/2 log((2 pi e)^d |K|) (Cover & Thomas 2006, "Elements of Information Theory",
    Thm. 8.4.1), with K diagonal. Independent of the mean.

    Args:
        log_std: (..., d) log standard deviations.

    Returns:
        (...) entropies.
    """
    return (0.5 + 0.5 * _LOG_2PI + log_std).sum(-1)  # (...)


def tanh_log_det(u: torch.Tensor, eps: float = TANH_EPS) -> torch.Tensor:
    """sum_j log(1 - tanh(u_j)^2 + eps): the log-Jacobian of a = tanh(u), summed over the last dimension.

    log pi(a) = log N(u) - tanh_log_det(u) is the density of the squashed sample (Haarnoja et al.
    2018, "Soft Actor-Critic", App. C, Eq. 21; ``eps`` keeps the log finite where tanh saturates).

    Args:
        u: (..., d) unsquashed samples.
        eps: the added constant.

    Returns:
        (...) log-determinants.
    """
    return torch.log(1.0 - torch.tanh(u).pow(2) + eps).sum(-1)  # (...)


def squash_to_box(u: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """a = low + (tanh(u) + 1) (high - low) / 2: the tanh sample mapped affinely onto the box.

    The affine map's log-Jacobian sum_j log((high_j - low_j) / 2) is a constant: it cancels in
    PPO's probability ratio, and icrl's log pi(a) leaves it out (a density on [-1, 1]^d).

    Args:
        u: (..., d) unsquashed samples.
        low: (d,) lower bounds.
        high: (d,) upper bounds.

    Returns:
        (..., d) actions in [low, high].
    """
    return low + (torch.tanh(u) + 1.0) * (0.5 * (high - low))  # (..., d)


class RunningMeanStd:
    """Running mean and variance of every learner's observations (SB3's ``RunningMeanStd``, stacked).

    The pairwise update of Chan, Golub & LeVeque (1979, "Updating formulae and a pairwise algorithm
    for computing sample variances"), as SB3's ``update_from_moments`` does it: merging a batch (mean m_B, population
    variance v_B, count n_B) into the running (m_A, v_A, n_A) gives, with delta = m_B - m_A and
    n = n_A + n_B, m = m_A + delta n_B / n and v = (v_A n_A + v_B n_B + delta^2 n_A n_B / n) / n.
    The statistics start at mean 0, variance 1 and the pseudo-count ``epsilon`` (SB3's 1e-4); with
    ``epsilon = 0`` they are exactly the mean and population variance of all data seen. Kept in
    float64, one row per learner, so no learner's observations reach another's statistics.

    Args:
        n_learners: L.
        size: D, the flattened observation size.
        epsilon: the initial pseudo-count.
        clip: normalised observations are clipped to [-clip, clip] (SB3's ``clip_obs`` 10).
    """

    def __init__(self, n_learners: int, size: int, epsilon: float = 1e-4, clip: float = 10.0) -> None:
        self.mean = torch.zeros(n_learners, size, dtype=torch.float64)  # (L, D)
        self.var = torch.ones(n_learners, size, dtype=torch.float64)  # (L, D)
        self.count = float(epsilon)  # every learner sees the same number of observations
        self.clip = float(clip)

    def update(self, x: torch.Tensor) -> None:
        """Merge a batch of every learner's observations, (L, B, D), into the statistics."""
        x = x.to(torch.float64)
        batch_mean = x.mean(1)  # (L, D)
        batch_var = x.var(1, correction=0)  # (L, D)
        batch_count = x.shape[1]
        delta = batch_mean - self.mean  # (L, D)
        total = self.count + batch_count
        self.mean = self.mean + delta * (batch_count / total)  # (L, D)
        m2 = self.var * self.count + batch_var * batch_count + delta.pow(2) * (self.count * batch_count / total)
        self.var = m2 / total  # (L, D)
        self.count = total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(L, B, D) -> (L, B, D) float32, ``clip((x - mean) / sqrt(var + 1e-8), -clip, clip)`` (SB3's VecNormalize)."""
        z = (x.to(torch.float64) - self.mean[:, None]) / torch.sqrt(self.var[:, None] + 1e-8)  # (L, B, D)
        return z.clamp(-self.clip, self.clip).to(torch.float32)
