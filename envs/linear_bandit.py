"""Linear bandit of the DPT paper (Lee et al. 2023, §5.1, "Linear bandits").

K = 10 arms with fixed features phi(a) ~ N(0, I/d), d = 2, drawn once from
``np.random.default_rng(feature_seed)`` and shared by every task; a task is theta ~ N(0, I/d);
the arm means are mu_a = phi(a)^T theta and the reward is mu_a + N(0, sigma^2) with sigma = 0.3;
horizon H = 200. The env, the vector env and the task distribution derive the same features from
the same ``feature_seed``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from .bandits import BanditEnv, BanditVectorEnv, gaussian_rewards
from .tasks import BanditTaskDistribution, require_int, require_positive

__all__ = [
    "LinearBanditEnv",
    "LinearBanditTaskDistribution",
    "LinearBanditVectorEnv",
    "linear_features",
    "validate_linear_kwargs",
]


def validate_linear_kwargs(
    n_arms: Any, dim: Any, horizon: Any, sigma: Any, feature_seed: Any
) -> dict[str, Any]:
    """Check the linear bandit's kwargs; returns them normalised (ints, floats).

    Raises:
        ValueError: A message starting with the offending kwarg's name.
    """
    return {
        "n_arms": require_int("n_arms", n_arms, 2),
        "dim": require_int("dim", dim, 1),
        "horizon": require_int("horizon", horizon, 1),
        "sigma": require_positive("sigma", sigma),
        "feature_seed": require_int("feature_seed", feature_seed, 0),
    }


def linear_features(n_arms: int, dim: int, feature_seed: int) -> np.ndarray:
    """The fixed arm features phi(a) ~ N(0, I/d), ``(n_arms, dim)`` float64, read-only."""
    rng = np.random.default_rng(feature_seed)
    features = rng.standard_normal((n_arms, dim)) / np.sqrt(dim)  # (K, d)
    features.setflags(write=False)
    return features


class LinearBanditTaskDistribution(BanditTaskDistribution):
    """Tasks of ``icrl/LinearBandit-v0``: theta ~ N(0, I/d); takes the env's kwargs.

    Attributes:
        features: ``(n_arms, dim)`` fixed arm features, shared by all tasks.
    """

    env_id = "icrl/LinearBandit-v0"
    baselines = ("random", "emp", "ucb", "thompson", "linucb", "oracle")

    def __init__(
        self,
        n_arms: int = 10,
        dim: int = 2,
        horizon: int = 200,
        sigma: float = 0.3,
        feature_seed: int = 1234,
    ) -> None:
        kwargs = validate_linear_kwargs(n_arms, dim, horizon, sigma, feature_seed)
        self.n_arms = kwargs["n_arms"]
        self.dim = kwargs["dim"]
        self.horizon = kwargs["horizon"]
        self.sigma = kwargs["sigma"]
        self.feature_seed = kwargs["feature_seed"]
        self.task_shape = (self.dim,)
        self.features = linear_features(self.n_arms, self.dim, self.feature_seed)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, dim)`` parameter vectors theta ~ N(0, I/d)."""
        n = require_int("n", n, 0)
        return rng.standard_normal((n, self.dim)) / np.sqrt(self.dim)  # (n, d)

    def means(self, tasks: np.ndarray) -> np.ndarray:
        """mu_a = phi(a)^T theta for every arm, ``(n, n_arms)``."""
        theta = self.check_tasks(tasks)  # (n, d)
        return theta @ self.features.T  # (n, d) @ (d, K) -> (n, K)


class LinearBanditEnv(BanditEnv):
    """``icrl/LinearBandit-v0``: reward ``phi(a)^T theta + N(0, sigma^2)``.

    Args:
        n_arms: Number of arms K (>= 2).
        dim: Feature dimension d (>= 1).
        horizon: Pulls per episode; the env truncates itself there.
        sigma: Standard deviation of the reward noise (> 0).
        feature_seed: Seed of the fixed arm features (>= 0).
    """

    def __init__(
        self,
        n_arms: int = 10,
        dim: int = 2,
        horizon: int = 200,
        sigma: float = 0.3,
        feature_seed: int = 1234,
    ) -> None:
        dist = LinearBanditTaskDistribution(n_arms, dim, horizon, sigma, feature_seed)
        super().__init__(dist, partial(gaussian_rewards, sigma=dist.sigma))

    @property
    def features(self) -> np.ndarray:
        """``(n_arms, dim)`` fixed arm features (read-only)."""
        return self.task_distribution.features


class LinearBanditVectorEnv(BanditVectorEnv):
    """Native vector version of :class:`LinearBanditEnv`; same kwargs plus ``num_envs``."""

    def __init__(
        self,
        num_envs: int = 1,
        n_arms: int = 10,
        dim: int = 2,
        horizon: int = 200,
        sigma: float = 0.3,
        feature_seed: int = 1234,
    ) -> None:
        dist = LinearBanditTaskDistribution(n_arms, dim, horizon, sigma, feature_seed)
        super().__init__(num_envs, dist, partial(gaussian_rewards, sigma=dist.sigma))

    @property
    def features(self) -> np.ndarray:
        """``(n_arms, dim)`` fixed arm features (read-only)."""
        return self.task_distribution.features
