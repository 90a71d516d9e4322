"""K-armed bandits: Gaussian and Bernoulli rewards, as single envs and native numpy vector envs.

The protocol is the DPT paper's (Lee et al. 2023, "Supervised Pretraining Can Learn In-Context
Reinforcement Learning", §5.1): K = 5 arms with means mu_a ~ U[0, 1], Gaussian rewards
r = mu_a + N(0, sigma^2) with sigma = 0.3, horizon H = 500; the Bernoulli variant draws
r ~ Bernoulli(mu_a) and may use a Beta(alpha, beta) prior for the means. One pull is one step, the
observation is the constant 0, and ``info["regret"]`` is the expected regret mu* - mu_a of the pull.

:class:`BanditEnv` and :class:`BanditVectorEnv` hold everything but the reward model and the task
prior, so the linear bandit (``linear_bandit.py``) reuses them. Both draw rewards through the same
noise function, which is what makes the single and vector envs the same world
(docs/architecture.md#environments-and-tasks).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .tasks import (
    BanditTaskDistribution,
    SingleTaskMixin,
    VectorTaskMixin,
    check_vector_actions,
    require_choice,
    require_int,
    require_positive,
    same_step_final,
)

#: ``noise(means (n,), rng) -> rewards (n,) float64``: the reward model of a family.
RewardNoise = Callable[[np.ndarray, np.random.Generator], np.ndarray]

PRIORS = ("uniform", "beta")


def gaussian_rewards(means: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """``r = mu + N(0, sigma^2)`` for each mean (DPT §5.1). Returns ``(n,)`` float64."""
    return means + sigma * rng.standard_normal(means.shape[0])  # (n,)


def bernoulli_rewards(means: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``r ~ Bernoulli(mu)`` for each mean, as 0.0 / 1.0. Returns ``(n,)`` float64."""
    return (rng.random(means.shape[0]) < means).astype(np.float64)  # (n,)


# --------------------------------------------------------------------------- base envs


class BanditEnv(SingleTaskMixin, gymnasium.Env[int, np.int64]):
    """A single bandit: constant observation 0, one arm pull per step, truncation at ``horizon``.

    The task is set by ``reset(options={"task": task})`` and kept across later resets. Until a task
    is given, the env draws one from its prior with ``self.np_random``; a *seeded* reset redraws
    that prior task, so ``reset(seed=s)`` alone fixes the task and every reward.

    Args:
        tasks: The family's task distribution (holds the validated kwargs).
        noise: The family's reward model.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, tasks: BanditTaskDistribution, noise: RewardNoise) -> None:
        self.task_distribution = tasks
        self.horizon = tasks.horizon
        self.n_arms = tasks.n_arms
        self._noise = noise
        self.observation_space = spaces.Discrete(1)
        self.action_space = spaces.Discrete(tasks.n_arms)
        self._means = np.zeros(tasks.n_arms)  # (K,)
        self._best = 0.0
        self._t = 0

    def _set_task(self, tasks: np.ndarray) -> None:
        super()._set_task(tasks)
        self._means = self.task_distribution.means(tasks)[0]  # (K,)
        self._best = float(self._means.max())

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Start an episode; ``options={"task": task}`` (shape ``task_shape``) switches the task."""
        super().reset(seed=seed)
        self._reset_task(seed, options)
        self._t = 0
        return 0, {}

    def step(self, action: Any) -> tuple[int, float, bool, bool, dict[str, Any]]:
        """Pull ``action``; ``info["regret"]`` is ``max_a mu_a - mu_action``."""
        if self._task is None:
            raise RuntimeError("step() called before reset(); call reset() first")
        if self._t >= self.horizon:
            raise RuntimeError(
                f"step() called after the episode was truncated at horizon={self.horizon}; "
                "call reset() first"
            )
        if not self.action_space.contains(action):
            raise ValueError(f"action: must be an integer in [0, {self.n_arms}), got {action!r}")
        mu = self._means[int(action)]
        reward = float(self._noise(np.array([mu]), self.np_random)[0])
        self._t += 1
        return 0, reward, False, self._t >= self.horizon, {"regret": self._best - float(mu)}


class BanditVectorEnv(VectorTaskMixin, VectorEnv):
    """``num_envs`` bandits stepped together in numpy, with SAME_STEP autoreset.

    ``reset(options={"task": tasks})`` takes ``(num_envs, *task_shape)`` tasks, kept across
    resets and autoresets; without them the tasks are drawn from the prior with ``self.np_random``
    (redrawn on every seeded reset until tasks are given). All envs share one reward stream from
    ``self.np_random``.

    ``infos["regret"]`` holds the regret of every env's pull, at every step (mask ``"_regret"`` all
    True); the reset info is empty, so on a truncation step nothing is overwritten. Truncated envs
    also get ``infos["final_obs"]``/``infos["final_info"]`` (with masks) as gymnasium's
    ``SyncVectorEnv`` builds them in SAME_STEP mode, and the returned obs is already the reset obs.

    Args:
        num_envs: Number of parallel bandits (>= 1).
        tasks: The family's task distribution.
        noise: The family's reward model.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int, tasks: BanditTaskDistribution, noise: RewardNoise) -> None:
        self.num_envs = require_int("num_envs", num_envs, 1)
        self.task_distribution = tasks
        self.horizon = tasks.horizon
        self.n_arms = tasks.n_arms
        self._noise = noise
        self.single_observation_space = spaces.Discrete(1)
        self.single_action_space = spaces.Discrete(tasks.n_arms)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._means = np.zeros((self.num_envs, tasks.n_arms))  # (N, K)
        self._best = np.zeros(self.num_envs)  # (N,)
        self._t = np.zeros(self.num_envs, dtype=np.int64)  # (N,) steps into the episode

    def _set_tasks(self, tasks: np.ndarray) -> None:
        super()._set_tasks(tasks)
        self._means = self.task_distribution.means(tasks)  # (N, K)
        self._best = self._means.max(axis=1)  # (N,)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env; ``options={"task": tasks}`` sets ``(num_envs, *task_shape)`` tasks."""
        super().reset(seed=seed)
        self._reset_tasks(seed, options)
        self._t[:] = 0
        return np.zeros(self.num_envs, dtype=np.int64), {}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Pull one arm in every env; ``actions`` is ``(num_envs,)`` integers."""
        if self._tasks is None:
            raise RuntimeError("step() called before reset(); call reset() first")
        acts = check_vector_actions(actions, self.num_envs, self.n_arms)
        mu = self._means[np.arange(self.num_envs), acts]  # (N,)
        rewards = np.asarray(self._noise(mu, self.np_random), dtype=np.float64)  # (N,)
        regret = self._best - mu  # (N,)
        self._t += 1
        truncated = self._t >= self.horizon  # (N,)
        terminated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {"regret": regret, "_regret": np.ones(self.num_envs, dtype=bool)}
        obs = np.zeros(self.num_envs, dtype=np.int64)
        if truncated.any():  # SAME_STEP autoreset; the task is kept across it
            infos.update(same_step_final(obs, truncated, infos))
            self._t[truncated] = 0
        return obs, rewards, terminated, truncated, infos


# --------------------------------------------------------------------------- task distributions


def validate_bernoulli_kwargs(
    n_arms: Any, horizon: Any, prior: Any, prior_alpha: Any, prior_beta: Any
) -> dict[str, Any]:
    """Check the Bernoulli bandit's kwargs; returns them normalised (ints, floats).

    Raises:
        ValueError: A message starting with the offending kwarg's name.
    """
    return {
        "n_arms": require_int("n_arms", n_arms, 2),
        "horizon": require_int("horizon", horizon, 1),
        "prior": require_choice("prior", prior, PRIORS),
        "prior_alpha": require_positive("prior_alpha", prior_alpha),
        "prior_beta": require_positive("prior_beta", prior_beta),
    }


def validate_gaussian_kwargs(
    n_arms: Any, horizon: Any, sigma: Any, prior: Any, prior_alpha: Any, prior_beta: Any
) -> dict[str, Any]:
    """Check the Gaussian bandit's kwargs (the Bernoulli ones plus ``sigma``), normalised.

    Raises:
        ValueError: A message starting with the offending kwarg's name.
    """
    kwargs = validate_bernoulli_kwargs(n_arms, horizon, prior, prior_alpha, prior_beta)
    kwargs["sigma"] = require_positive("sigma", sigma)
    return kwargs


class _ArmMeansTaskDistribution(BanditTaskDistribution):
    """Tasks that are the vector of arm means, drawn i.i.d. per arm from U[0, 1] or Beta(a, b)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.n_arms = kwargs["n_arms"]
        self.horizon = kwargs["horizon"]
        self.prior = kwargs["prior"]
        self.prior_alpha = kwargs["prior_alpha"]
        self.prior_beta = kwargs["prior_beta"]
        self.task_shape = (self.n_arms,)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, n_arms)`` arm means from the prior."""
        n = require_int("n", n, 0)
        if self.prior == "uniform":
            return rng.random((n, self.n_arms))  # (n, K)
        return rng.beta(self.prior_alpha, self.prior_beta, size=(n, self.n_arms))  # (n, K)

    def means(self, tasks: np.ndarray) -> np.ndarray:
        """The task *is* the arm means; returns a validated copy, ``(n, n_arms)``."""
        return self.check_tasks(tasks)


class GaussianBanditTaskDistribution(_ArmMeansTaskDistribution):
    """Tasks of ``icrl/GaussianBandit-v0``; takes the kwargs of :class:`GaussianBanditEnv`."""

    env_id = "icrl/GaussianBandit-v0"

    def __init__(
        self,
        n_arms: int = 5,
        horizon: int = 500,
        sigma: float = 0.3,
        prior: str = "uniform",
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
    ) -> None:
        kwargs = validate_gaussian_kwargs(n_arms, horizon, sigma, prior, prior_alpha, prior_beta)
        super().__init__(kwargs)
        self.sigma = kwargs["sigma"]


class BernoulliBanditTaskDistribution(_ArmMeansTaskDistribution):
    """Tasks of ``icrl/BernoulliBandit-v0``; takes the kwargs of :class:`BernoulliBanditEnv`."""

    env_id = "icrl/BernoulliBandit-v0"

    def __init__(
        self,
        n_arms: int = 5,
        horizon: int = 500,
        prior: str = "uniform",
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
    ) -> None:
        super().__init__(validate_bernoulli_kwargs(n_arms, horizon, prior, prior_alpha, prior_beta))

    def check_tasks(self, tasks: Any) -> np.ndarray:
        """As the base check, and every mean must be a probability in [0, 1]."""
        arr = super().check_tasks(tasks)
        if np.any((arr < 0.0) | (arr > 1.0)):
            raise ValueError("tasks: Bernoulli arm means must lie in [0, 1]")
        return arr


# --------------------------------------------------------------------------- concrete envs


class GaussianBanditEnv(BanditEnv):
    """``icrl/GaussianBandit-v0``: reward ``mu_a + N(0, sigma^2)``.

    Args:
        n_arms: Number of arms K (>= 2).
        horizon: Pulls per episode; the env truncates itself there.
        sigma: Standard deviation of the reward noise (> 0).
        prior: Prior of the arm means, ``"uniform"`` (U[0, 1]) or ``"beta"``.
        prior_alpha: Beta prior's alpha (used when ``prior="beta"``).
        prior_beta: Beta prior's beta (used when ``prior="beta"``).
    """

    def __init__(
        self,
        n_arms: int = 5,
        horizon: int = 500,
        sigma: float = 0.3,
        prior: str = "uniform",
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
    ) -> None:
        dist = GaussianBanditTaskDistribution(
            n_arms, horizon, sigma, prior, prior_alpha, prior_beta
        )
        super().__init__(dist, partial(gaussian_rewards, sigma=dist.sigma))


class GaussianBanditVectorEnv(BanditVectorEnv):
    """Native vector version of :class:`GaussianBanditEnv`; same kwargs plus ``num_envs``."""

    def __init__(
        self,
        num_envs: int = 1,
        n_arms: int = 5,
        horizon: int = 500,
        sigma: float = 0.3,
        prior: str = "uniform",
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
    ) -> None:
        dist = GaussianBanditTaskDistribution(
            n_arms, horizon, sigma, prior, prior_alpha, prior_beta
        )
        super().__init__(num_envs, dist, partial(gaussian_rewards, sigma=dist.sigma))


class BernoulliBanditEnv(BanditEnv):
    """``icrl/BernoulliBandit-v0``: reward ``Bernoulli(mu_a)`` in {0, 1}.

    Args:
        n_arms: Number of arms K (>= 2).
        horizon: Pulls per episode; the env truncates itself there.
        prior: Prior of the arm means, ``"uniform"`` (U[0, 1]) or ``"beta"``.
        prior_alpha: Beta prior's alpha (used when ``prior="beta"``).
        prior_beta: Beta prior's beta (used when ``prior="beta"``).
    """

    def __init__(
        self,
        n_arms: int = 5,
        horizon: int = 500,
        prior: str = "uniform",
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
    ) -> None:
        dist = BernoulliBanditTaskDistribution(n_arms, horizon, prior, prior_alpha, prior_beta)
        super().__init__(dist, bernoulli_rewards)


class BernoulliBanditVectorEnv(BanditVectorEnv):
    """Native vector version of :class:`BernoulliBanditEnv`; same kwargs plus ``num_envs``."""

    def __init__(
        self,
        num_envs: int = 1,
        n_arms: int = 5,
        horizon: int = 500,
        prior: str = "uniform",
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
    ) -> None:
        dist = BernoulliBanditTaskDistribution(n_arms, horizon, prior, prior_alpha, prior_beta)
        super().__init__(num_envs, dist, bernoulli_rewards)
