"""Posterior sampling for reinforcement learning (PSRL) over a particle set of tasks.

PSRL (Strens 2000, "A Bayesian Framework for Reinforcement Learning"; Osband, Russo & Van Roy
2013, "(More) Efficient Reinforcement Learning via Posterior Sampling") keeps a posterior over the
unknown task, samples one task from it at the start of every episode and acts optimally for the
sample during the episode. Exploration comes from the posterior's spread alone: a wrong sample is
refuted by the rewards it predicts, and the posterior shrinks onto the true task. On families
whose tasks hide a goal (the sparse point robot) this sweeps the candidate goals and then
exploits: a learning history that improves quickly and steadily, which Algorithm Distillation
can imitate (independent PPO learners find a sparse goal in only about half of their runs).

The posterior here is over a particle set, batched over N envs in numpy:

- Prior: per env, ``M = psrl_particles`` tasks ``theta_{n,1..M}`` drawn i.i.d. from
  ``task_dist.sample_prior(M, rng)`` (the family's generating prior over *all* tasks, not its train
  split), with uniform weights: a Monte Carlo approximation of the prior.
- Likelihood: a Gaussian reward model with std ``sigma = psrl_sigma``,
  ``r_t ~ N(r_hat_i(s_t, a_t, s'_t), sigma^2)`` with ``r_hat_i`` the family's
  ``task_dist.expected_reward`` under ``theta_i``. After every transition

      log w_i <- log w_i - (r_t - r_hat_i)^2 / (2 sigma^2)

  (constants dropped), so ``w_i / sum_j w_j`` is the exact posterior over the particle set when
  the rewards carry ``N(0, sigma^2)`` noise, and a self-normalised importance-sampling estimate
  of the posterior over the continuous prior (it converges as ``M`` grows). With deterministic
  rewards ``sigma`` is a tolerance: a particle whose predicted reward is off by ``k * sigma``
  loses ``k^2 / 2`` nats. The log weights are shifted by their row maximum after every update
  (the posterior is unchanged; the numbers stay bounded).
- Sampling: at the first step of every episode, and whenever the sampled particle has become
  implausible, a particle is drawn from ``softmax(log w)`` (inverse CDF of one uniform per
  env). Implausible: ``log w_cur < max_j log w_j - RESAMPLE_LOG_RATIO`` with
  ``RESAMPLE_LOG_RATIO = 10``, i.e. the data are ``e^10 ~ 2.2e4`` times likelier under the best
  particle. This is the generalised likelihood-ratio test: under the Gaussian model the true
  task's deficit ``2 (max log w - log w_true)`` is about ``chi^2_k`` (Wilks) with ``k`` the task
  dimension, and ``P(chi^2_2 > 20) = e^-10 ~ 4.5e-5``, so the true task is almost never
  abandoned, while a refuted hypothesis is dropped at once instead of being followed to the end
  of the episode (on the sparse point robot one zero reward inside the sampled goal's radius
  costs it ~(0.8 / 0.05)^2 / 2 = 128 nats, and the next plausible goal is tried in the same
  episode). Between those events the sample is kept, so behaviour within an episode is
  consistent, as PSRL requires.
- Acting: ``task_dist.oracle_action(sampled_tasks, obs)``, the family's optimal action for the
  sampled task.

The policy never sees the true tasks (it has no ``set_tasks`` hook): it learns them from the
rewards. It needs the family's oracle (``oracle_action``) and reward model
(``expected_reward``). The likelihood scores rewards only, so it assumes the task enters through
the reward (task-independent dynamics, as in the point robots); a family whose dynamics depend on
the task would need a transition likelihood too.

Randomness: the particles are drawn once from ``rng`` at construction, then every :meth:`act`
draws N uniforms whether or not an env resamples, so the random stream does not depend on the
data.

Cost per step: one ``expected_reward`` call on ``N * M`` transitions and one oracle call on N.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from icrl.spaces import EnvSpec

__all__ = ["PosteriorSamplingPolicy", "RESAMPLE_LOG_RATIO", "gaussian_log_likelihood", "sample_categorical"]

#: Resample mid-episode when the sampled particle's log weight is this far below the best one's
#: (a likelihood ratio of e^-10; see the module docstring).
RESAMPLE_LOG_RATIO = 10.0


def gaussian_log_likelihood(rewards: np.ndarray, predicted: np.ndarray, sigma: float) -> np.ndarray:
    """Log-likelihood of observed rewards under predicted means, constants dropped.

    ``-(r - r_hat)^2 / (2 sigma^2)``, broadcast as numpy broadcasts.

    Args:
        rewards: observed rewards, e.g. (N, 1).
        predicted: predicted rewards, e.g. (N, M).
        sigma: the reward noise std (> 0).

    Returns:
        float64 log-likelihoods of the broadcast shape.
    """
    diff = np.asarray(rewards, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)
    return -(diff * diff) / (2.0 * sigma * sigma)


def sample_categorical(log_w: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One index per row drawn from ``softmax(log_w)`` by the inverse CDF of ``u``.

    Args:
        log_w: (n, M) unnormalised log weights (finite, at least one per row).
        u: (n,) uniforms in [0, 1).

    Returns:
        (n,) int64 indices in [0, M).
    """
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))  # (n, M), max 1 per row
    cdf = np.cumsum(w, axis=1)  # (n, M)
    idx = (cdf < (u * cdf[:, -1])[:, None]).sum(axis=1)  # (n,) first index with cdf >= u * total
    return np.minimum(idx, log_w.shape[1] - 1).astype(np.int64)


class PosteriorSamplingPolicy:
    """PSRL with a particle posterior over tasks (see the module docstring for the formulas).

    Args:
        num_envs: N.
        task_dist: the family's task distribution; it must have an oracle (``oracle_action``) and
            a reward model (``expected_reward``), and gives the prior (``prior``).
        rng: the policy's generator (particles and samples).
        psrl_particles: M, prior particles per env (>= 1).
        psrl_sigma: std of the Gaussian reward likelihood (> 0); with deterministic rewards, a
            tolerance on the predicted reward.

    Attributes:
        particles: (N, M, *task_shape) the candidate tasks of every env.
        log_w: (N, M) log posterior weights, shifted so that every row's maximum is 0.
        current: (N,) index of every env's sampled particle.
        resamples: (N,) number of particles drawn so far per env (episode starts included).

    Raises:
        ValueError: the family lacks an oracle or a reward model, or a parameter is out of range.
    """

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator,
                 psrl_particles: int = 512, psrl_sigma: float = 0.05) -> None:
        spec = EnvSpec.of(task_dist)
        missing = [what for what, ok in (("an oracle (oracle_action)", spec.has_oracle),
                                         ("a reward model (expected_reward)",
                                          spec.has_reward_model))
                   if not ok]
        if missing:
            raise ValueError(f"psrl needs {' and '.join(missing)} but {spec.env_id} has none; give its "
                             f"TaskDistribution one (docs/extending.md) or choose another source algorithm")
        if isinstance(psrl_particles, bool) or not isinstance(psrl_particles, numbers.Integral) or psrl_particles < 1:
            raise ValueError(f"psrl_particles must be an integer >= 1; got {psrl_particles!r}")
        if (isinstance(psrl_sigma, bool) or not isinstance(psrl_sigma, numbers.Real)
                or not math.isfinite(float(psrl_sigma)) or psrl_sigma <= 0):
            raise ValueError(f"psrl_sigma must be a finite number > 0; got {psrl_sigma!r}")
        self.num_envs = num_envs
        self.task_dist = task_dist
        self.spec = spec
        self.rng = rng
        self.n_particles = int(psrl_particles)
        self.sigma = float(psrl_sigma)
        task_shape = tuple(task_dist.task_shape)
        flat = np.asarray(task_dist.sample_prior(num_envs * self.n_particles, rng), dtype=np.float64)  # (N*M, *task_shape)
        if flat.shape != (num_envs * self.n_particles, *task_shape):
            raise ValueError(f"{spec.env_id}: sample_prior returned shape {flat.shape}, expected "
                             f"{(num_envs * self.n_particles, *task_shape)}; return one task per row")
        self.particles = flat.reshape(num_envs, self.n_particles, *task_shape)  # (N, M, *task_shape)
        self.log_w = np.zeros((num_envs, self.n_particles))  # (N, M) uniform prior weights
        self.current = np.zeros(num_envs, dtype=np.int64)  # (N,) sampled particle of every env
        self.resamples = np.zeros(num_envs, dtype=np.int64)  # (N,)
        self._episode_start = np.ones(num_envs, dtype=bool)  # (N,) the next act starts an episode
        self._rows = np.arange(num_envs)  # (N,)

    @property
    def sampled_tasks(self) -> np.ndarray:
        """(N, *task_shape) the task every env currently acts for."""
        return self.particles[self._rows, self.current]

    def implausible(self) -> np.ndarray:
        """(N,) bool: the sampled particle's log weight is more than RESAMPLE_LOG_RATIO below the best."""
        best = self.log_w.max(axis=1)  # (N,) 0 after an update, kept general
        return self.log_w[self._rows, self.current] < best - RESAMPLE_LOG_RATIO

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The oracle's action for every env's sampled task, resampling where due.

        Args:
            obs: (N, *obs_shape) current observations.

        Returns:
            (N,) int64 or (N, *action_shape) float actions.
        """
        u = self.rng.random(self.num_envs)  # (N,) drawn every step: a data-independent stream
        redraw = self._episode_start | self.implausible()  # (N,)
        if redraw.any():
            rows = np.flatnonzero(redraw)  # (k,)
            self.current[rows] = sample_categorical(self.log_w[rows], u[rows])  # (k,)
            self.resamples[rows] += 1
        self._episode_start[:] = False
        shape = (self.num_envs, *self.spec.action_shape)
        actions = np.asarray(self.task_dist.oracle_action(self.sampled_tasks, obs), dtype=self.spec.action_dtype)
        if actions.shape != shape:
            raise ValueError(f"{self.spec.env_id}: oracle_action returned shape {actions.shape}, expected "
                             f"{shape}; return one action per task")
        return actions  # (N, *action_shape)

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Weigh every particle by the likelihood of the observed reward; mark episode ends.

        ``log w_i += -(r - r_hat_i)^2 / (2 sigma^2)`` with ``r_hat_i =
        expected_reward(theta_i, obs, action, next_obs)``, then every row is shifted to max 0.
        """
        n, m = self.num_envs, self.n_particles
        flat_tasks = self.particles.reshape(n * m, *self.particles.shape[2:])  # (N*M, *task_shape)
        obs_r, act_r, next_r = (np.repeat(np.asarray(a), m, axis=0) for a in (obs, actions, next_obs))  # (N*M, ...)
        predicted = np.asarray(self.task_dist.expected_reward(flat_tasks, obs_r, act_r, next_r), dtype=np.float64)
        if predicted.shape != (n * m,):
            raise ValueError(f"{self.spec.env_id}: expected_reward returned shape {predicted.shape}, expected "
                             f"({n * m},); return one reward per task")
        r = np.asarray(rewards, dtype=np.float64)[:, None]  # (N, 1)
        self.log_w += gaussian_log_likelihood(r, predicted.reshape(n, m), self.sigma)  # (N, M)
        self.log_w -= self.log_w.max(axis=1, keepdims=True)  # (N, M) row max 0: same posterior
        done = np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)  # (N,)
        self._episode_start |= done
