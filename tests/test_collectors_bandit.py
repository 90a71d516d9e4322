"""Tests of the bandit source algorithms and the batched collection runner (icrl/collectors/)."""
from __future__ import annotations

import math
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from icrl import envs
from icrl.collectors import (
    POLICIES,
    DPTRandomPolicy,
    EmpPolicy,
    LinUCBPolicy,
    ThompsonPolicy,
    UCBPolicy,
    collect_block,
    make_policy,
    run_policy,
)
from icrl.collectors.bandit import (
    argmax_random_tiebreak,
    beta_posterior,
    dpt_random_probs,
    empirical_means,
    gaussian_posterior,
    linucb_index,
    ucb1_index,
    ucb_index,
)

GAUSS = "icrl/GaussianBandit-v0"
BERN = "icrl/BernoulliBandit-v0"
LINEAR = "icrl/LinearBandit-v0"


def _collect(env_id: str, name: str, tasks: np.ndarray, seed: int = 0, env_kwargs: dict | None = None,
             params: dict | None = None, **kw: Any):
    n = len(tasks)
    return collect_block(env_id, env_kwargs or {}, name, params or {}, tasks, np.arange(n),
                         np.zeros(n, dtype=np.int64), 0, np.random.SeedSequence(seed), **kw)


def _tasks(env_id: str, n: int, seed: int = 0, **env_kwargs: Any) -> np.ndarray:
    return envs.task_distribution(env_id, **env_kwargs).sample(n, np.random.default_rng(seed))


# ---------------------------------------------------------------------------------- index math

# A hand-built table: 2 learners, 3 arms.
SUMS = np.array([[1.0, 3.0, 0.0], [0.5, -0.5, 4.5]])
COUNTS = np.array([[2.0, 4.0, 0.0], [1.0, 1.0, 9.0]])


def test_ucb_index_hand_table():
    # mu_hat + 1/sqrt(n): 0.5 + 1/sqrt(2), 0.75 + 1/2, unpulled; 0.5 + 1, -0.5 + 1, 0.5 + 1/3
    expected = np.array([[1.2071067811865475, 1.25, np.inf], [1.5, 0.5, 0.8333333333333333]])
    np.testing.assert_allclose(ucb_index(SUMS, COUNTS, 1.0), expected, rtol=1e-12)
    # c scales only the bonus: c = 0 gives the empirical means
    np.testing.assert_allclose(ucb_index(SUMS, COUNTS, 0.0)[1], [0.5, -0.5, 0.5])


def test_ucb1_index_hand_table():
    # t = 6 and 11; mu_hat + sqrt(2 ln t / n): 0.5 + sqrt(ln 6) = 1.83857, 0.75 + sqrt(ln 6 / 2) = 1.69651;
    # 0.5 + sqrt(2 ln 11) = 2.68993, -0.5 + sqrt(2 ln 11) = 1.68993, 0.5 + sqrt(2 ln 11 / 9) = 1.22998
    t = COUNTS.sum(axis=1)
    expected = np.array([[1.8385661990458504, 1.6965092364124228, np.inf],
                         [2.689929347170073, 1.689929347170073, 1.229976449056691]])
    np.testing.assert_allclose(ucb1_index(SUMS, COUNTS, t, 1.0), expected, rtol=1e-12)


def test_argmax_tiebreak_is_uniform_over_maxima():
    values = np.tile([[1.0, np.inf, 0.0, np.inf], [3.0, 1.0, 2.0, 0.0]], (10000, 1))
    picks = argmax_random_tiebreak(values, np.random.default_rng(0))
    assert np.all(picks[1::2] == 0)  # rows without a tie: the plain argmax
    assert set(np.unique(picks[::2])) == {1, 3}
    assert abs((picks[::2] == 1).mean() - 0.5) < 0.02
    np.testing.assert_array_equal(argmax_random_tiebreak(values[1::2], np.random.default_rng(0)), 0)


def _feed(pol: Any, actions: list[list[int]], rewards: list[list[float]]) -> None:
    """Hand a policy a sequence of steps: row t of ``actions``/``rewards`` is one step of all envs."""
    for a, r in zip(actions, rewards):
        n = len(a)
        pol.update(np.zeros(n), np.asarray(a), np.asarray(r, dtype=np.float64), np.zeros(n),
                   np.zeros(n, bool), np.zeros(n, bool))


def test_ucb_policy_pulls_unpulled_arms_first():
    dist = envs.task_distribution(GAUSS, n_arms=4)
    n = 3000
    pol = UCBPolicy(n, dist, np.random.default_rng(1))
    _feed(pol, [[0] * n, [2] * n], [[50.0] * n, [50.0] * n])
    # far better empirical means on arms 0 and 2, yet unpulled arms 1 and 3 go first, 50/50
    a = pol.act(np.zeros(n, dtype=np.int64))
    assert set(np.unique(a)) == {1, 3}
    assert abs((a == 1).mean() - 0.5) < 0.04


@pytest.mark.parametrize("name", ["emp", "ucb", "ucb1", "thompson"])
@pytest.mark.parametrize("env_id", [GAUSS, BERN])
def test_cached_index_equals_pure_functions(name, env_id):
    """The per-step refresh of the pulled entries gives exactly the full recomputation."""
    dist = envs.task_distribution(env_id, n_arms=4)
    n = 50
    pol = make_policy(name, n, dist, np.random.default_rng(0), ucb_c=0.7)
    rng = np.random.default_rng(1)
    acts = rng.integers(0, 4, size=(30, n))
    rews = (rng.random((30, n)) < 0.5).astype(np.float64) if env_id == BERN else rng.normal(size=(30, n))
    _feed(pol, acts, rews)
    counts = np.stack([np.bincount(acts[:, i], minlength=4) for i in range(n)]).astype(np.float64)
    sums = np.stack([np.bincount(acts[:, i], rews[:, i], minlength=4) for i in range(n)])
    np.testing.assert_array_equal(pol.counts, counts)
    np.testing.assert_allclose(pol.sums, sums, rtol=1e-12, atol=1e-12)
    if name == "emp":
        expected = np.where(counts > 0, empirical_means(pol.sums, pol.counts), np.inf)
        np.testing.assert_array_equal(pol.index, expected)
    elif name == "ucb":
        np.testing.assert_array_equal(pol.index, ucb_index(pol.sums, pol.counts, 0.7))
    elif name == "ucb1":
        np.testing.assert_array_equal(pol.t, counts.sum(axis=1))
    elif env_id == BERN:
        a, b = beta_posterior(pol.sums, pol.counts)
        np.testing.assert_array_equal(pol.post_a, a)
        np.testing.assert_array_equal(pol.post_b, b)
    else:
        m, sd = gaussian_posterior(pol.sums, pol.counts, 0.5, math.sqrt(1 / 12), 0.3)
        np.testing.assert_array_equal(pol.post_a, m)
        np.testing.assert_array_equal(pol.post_b, sd)


# ---------------------------------------------------------------------------------- posteriors


def test_beta_posterior_after_hand_sequence():
    dist = envs.task_distribution(BERN, n_arms=3)
    pol = ThompsonPolicy(1, dist, np.random.default_rng(0))
    for a, r in [(0, 1.0), (0, 0.0), (2, 1.0), (0, 1.0), (0, 1.0), (1, 0.0)]:
        pol.update(None, np.array([a]), np.array([r]), None, np.array([False]), np.array([False]))
    alpha, beta = beta_posterior(pol.sums, pol.counts)
    # Beta(1, 1) prior: arm 0 saw 3 ones and 1 zero, arm 1 one zero, arm 2 one one
    np.testing.assert_array_equal(alpha, [[4.0, 1.0, 2.0]])
    np.testing.assert_array_equal(beta, [[2.0, 2.0, 1.0]])


def test_gaussian_posterior_closed_form():
    sums = np.array([[2.7, 0.0]])  # arm 0 saw rewards 0.9, 0.7, 1.1; arm 1 nothing
    counts = np.array([[3.0, 0.0]])
    mean, std = gaussian_posterior(sums, counts, 0.5, math.sqrt(1 / 12), 0.3)
    # precision 12 + 3 / 0.09 = 45.3333; mean = (0.5 * 12 + 2.7 / 0.09) / 45.3333 = 36 / 45.3333
    np.testing.assert_allclose(mean, [[0.7941176470588235, 0.5]], rtol=1e-12)
    np.testing.assert_allclose(std, [[0.14852213144650114, math.sqrt(1 / 12)]], rtol=1e-12)
    # equals the prior-weight form w*mu0 + (1 - w)*mean_r with w = s^2 / (s^2 + n s0^2)
    w = 0.09 / (0.09 + 3 / 12)
    assert mean[0, 0] == pytest.approx(w * 0.5 + (1 - w) * 0.9, rel=1e-12)


def test_thompson_gaussian_samples_follow_posterior():
    dist = envs.task_distribution(GAUSS, n_arms=2, sigma=0.3)
    n = 40000
    pol = ThompsonPolicy(n, dist, np.random.default_rng(3))
    _feed(pol, [[0] * n] * 3, [[0.9] * n, [0.7] * n, [1.1] * n])
    # P(sample_0 > sample_1) for independent N(0.794, 0.1485^2) and N(0.5, 1/12) (closed form above)
    z = (0.7941176470588235 - 0.5) / math.hypot(0.14852213144650114, math.sqrt(1 / 12))
    p0 = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    assert abs((pol.act(np.zeros(n)) == 0).mean() - p0) < 0.01


def test_thompson_bernoulli_samples_follow_beta():
    dist = envs.task_distribution(BERN, n_arms=2)
    n = 40000
    pol = ThompsonPolicy(n, dist, np.random.default_rng(4))
    _feed(pol, [[0] * n, [0] * n, [1] * n], [[1.0] * n, [1.0] * n, [0.0] * n])
    # arm 0 ~ Beta(3, 1) (density 3x^2), arm 1 ~ Beta(1, 2) (P(Y > x) = (1 - x)^2):
    # P(arm 1 wins) = int_0^1 3x^2 (1 - x)^2 dx = 3 * B(3, 3) = 0.1
    assert abs((pol.act(np.zeros(n)) == 0).mean() - 0.9) < 0.01


def test_thompson_rejects_unknown_reward_model():
    class NoNoise(envs.BanditTaskDistribution):
        n_arms, horizon, task_shape = 3, 10, (3,)

        def sample(self, n, rng):
            return rng.random((n, 3))

        def means(self, tasks):
            return np.asarray(tasks)

    with pytest.raises(ValueError, match="thompson needs"):
        ThompsonPolicy(2, NoNoise(), np.random.default_rng(0))


# ---------------------------------------------------------------------------------- LinUCB


def test_linucb_matches_direct_solve():
    dist = envs.task_distribution(LINEAR)
    n, lam, beta = 4, 0.7, 1.3
    pol = LinUCBPolicy(n, dist, np.random.default_rng(0), linucb_beta=beta, linucb_lambda=lam)
    rng = np.random.default_rng(5)
    acts = rng.integers(0, dist.n_arms, size=(60, n))
    rews = rng.normal(size=(60, n))
    for a, r in zip(acts, rews):
        pol.update(None, a, r, None, np.zeros(n, bool), np.zeros(n, bool))
    phi = dist.features  # (K, d)
    for i in range(n):
        x = phi[acts[:, i]]  # (T, d)
        sigma = lam * np.eye(phi.shape[1]) + x.T @ x
        theta = np.linalg.solve(sigma, x.T @ rews[:, i])
        width = np.sqrt(np.einsum("kd,de,ke->k", phi, np.linalg.inv(sigma), phi))
        direct = phi @ theta + beta * width
        np.testing.assert_allclose(pol.cov_inv[i], np.linalg.inv(sigma), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(linucb_index(pol.cov_inv, pol.b, phi, beta)[i], direct, rtol=1e-9)
        assert pol.act(np.zeros(n))[i] == np.argmax(direct)


def test_linucb_needs_linear_bandit():
    with pytest.raises(ValueError, match="linucb needs a linear bandit"):
        make_policy("linucb", 2, envs.task_distribution(GAUSS), np.random.default_rng(0))


def test_linucb_and_thompson_on_linear_bandit_beat_random():
    tasks = _tasks(LINEAR, 300)
    regret = {name: _collect(LINEAR, name, tasks).steps["regret"].reshape(300, -1).sum(1).mean()
              for name in ("random", "thompson", "linucb")}
    assert regret["linucb"] < regret["thompson"] < regret["random"]


# ---------------------------------------------------------------------------------- Emp, dpt_random


def test_emp_pulls_every_arm_once_first():
    k = 6
    batch = _collect(GAUSS, "emp", _tasks(GAUSS, 50, n_arms=k), env_kwargs={"n_arms": k, "horizon": 20})
    first = batch.steps["action"].reshape(50, 20)[:, :k]
    np.testing.assert_array_equal(np.sort(first, axis=1), np.tile(np.arange(k), (50, 1)))
    # the order of the initial sweep is random, not always 0..k-1
    assert len({tuple(row) for row in first}) > 1


def test_emp_then_exploits_empirical_best():
    dist = envs.task_distribution(GAUSS, n_arms=3)
    pol = EmpPolicy(2, dist, np.random.default_rng(0))
    # row 0: means 0.5, 0.9, 0.1; row 1: means 0.1, 0.2, -1.0
    _feed(pol, [[0, 0], [1, 1], [2, 2], [0, 0], [2, 0]], [[0.4, 0.1], [0.9, 0.2], [0.3, -1.0], [0.6, 0.1], [-0.1, 0.1]])
    np.testing.assert_array_equal(pol.act(np.zeros(2)), [1, 1])


def test_dpt_random_probs_structure():
    p = dpt_random_probs(5000, 5, np.random.default_rng(0))
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    # w = 1 (probability 1/11) makes a one-hot distribution
    assert abs((p.max(axis=1) == 1.0).mean() - 1 / 11) < 0.015


def test_dpt_random_action_frequencies_match_p():
    dist = envs.task_distribution(GAUSS, n_arms=5)
    pol = DPTRandomPolicy(4, dist, np.random.default_rng(2))
    draws = np.stack([pol.act(np.zeros(4)) for _ in range(20000)])  # (T, 4)
    freq = np.stack([np.bincount(draws[:, i], minlength=5) / 20000 for i in range(4)])
    np.testing.assert_allclose(freq, pol.probs, atol=0.012)
    assert np.all(freq[pol.probs == 0] == 0)


# ---------------------------------------------------------------------------------- registry


def test_make_policy_params():
    dist = envs.task_distribution(GAUSS)
    rng = np.random.default_rng(0)
    # the pipeline hands every algorithm the shared parameter set; each takes its own
    shared = {"ucb_c": 2.0, "thompson_prior_mean": 0.5, "linucb_beta": 1.0}
    assert make_policy("ucb", 3, dist, rng, **shared).c == 2.0
    assert isinstance(make_policy("random", 3, dist, rng, **shared), POLICIES["random"])
    with pytest.raises(ValueError, match="ucb_cc"):
        make_policy("ucb", 3, dist, rng, ucb_cc=1.0)
    with pytest.raises(ValueError, match="unknown source algorithm 'ucbx'"):
        make_policy("ucbx", 3, dist, rng)
    with pytest.raises(ValueError, match="ucb_c"):
        make_policy("ucb1", 3, dist, rng, ucb_c=-1.0)


# ---------------------------------------------------------------------------------- runner


@pytest.mark.parametrize("name", sorted(set(POLICIES) - {"linucb"}))
def test_runner_gaussian_bandit_records(name):
    n, h = 40, 30
    tasks = _tasks(GAUSS, n, seed=3)
    batch = _collect(GAUSS, name, tasks, env_kwargs={"horizon": h})
    batch.validate()
    np.testing.assert_array_equal(batch.lengths, np.full(n, h))
    np.testing.assert_array_equal(batch.task, np.arange(n))
    np.testing.assert_array_equal(batch.task_params, tasks)
    act = batch.steps["action"].reshape(n, h)
    rew = batch.steps["reward"].reshape(n, h)
    np.testing.assert_allclose([r[0] for r in batch.episode_returns], rew.sum(axis=1), rtol=1e-12)
    assert all(len(r) == 1 for r in batch.episode_returns)
    regret = batch.steps["regret"].reshape(n, h)
    assert np.all(regret >= 0)
    mu_taken = np.take_along_axis(tasks, act, axis=1)
    np.testing.assert_allclose(regret, tasks.max(axis=1, keepdims=True) - mu_taken, rtol=1e-12)
    oracle = np.broadcast_to(np.argmax(tasks, axis=1)[:, None], (n, h))
    np.testing.assert_array_equal(batch.steps["oracle_action"].reshape(n, h), oracle)
    trunc = batch.steps["truncated"].reshape(n, h)
    assert trunc[:, -1].all() and not trunc[:, :-1].any() and not batch.steps["terminated"].any()
    assert np.all(batch.steps["obs"] == 0) and np.all(batch.steps["next_obs"] == 0)


def test_runner_several_episodes_keeps_learning():
    n, h = 20, 15
    batch = _collect(GAUSS, "ucb", _tasks(GAUSS, n), env_kwargs={"horizon": h}, episodes=3)
    np.testing.assert_array_equal(batch.lengths, np.full(n, 3 * h))
    rew = batch.steps["reward"].reshape(n, 3, h)
    np.testing.assert_allclose(np.stack(batch.episode_returns), rew.sum(axis=2), rtol=1e-12)
    # statistics carry over: the second episode does not restart with an arm sweep of all 5 arms
    act = batch.steps["action"].reshape(n, 3, h)
    assert not all(len(set(act[i, 1, :5])) == 5 for i in range(n))


def test_runner_bernoulli_rewards_binary():
    batch = _collect(BERN, "thompson", _tasks(BERN, 30), env_kwargs={"horizon": 40})
    assert set(np.unique(batch.steps["reward"])) <= {0.0, 1.0}
    assert np.all(batch.steps["regret"] >= 0)


def test_same_block_twice_is_byte_identical():
    tasks = _tasks(GAUSS, 25)
    ss = np.random.SeedSequence(123, spawn_key=(2, 7, 0))
    a = collect_block(GAUSS, {"horizon": 50}, "thompson", {}, tasks, np.arange(25), np.zeros(25, int), 0, ss)
    ss.spawn(3)  # mutating the sequence's spawn counter must not change the block
    b = collect_block(GAUSS, {"horizon": 50}, "thompson", {}, tasks, np.arange(25), np.zeros(25, int), 0, ss)
    assert a.steps.keys() == b.steps.keys()
    for k in a.steps:
        assert a.steps[k].dtype == b.steps[k].dtype and a.steps[k].tobytes() == b.steps[k].tobytes()
    other = _collect(GAUSS, "thompson", tasks, seed=124, env_kwargs={"horizon": 50})
    assert other.steps["reward"].tobytes() != a.steps["reward"].tobytes()


def _countdown_family() -> tuple[type, type, type]:
    """A tiny fake family whose episodes end at different times, to test the runner's masking.

    Defined inside a function so the classes are registered as objects, not by an import path
    into this test module (which depends on pytest's import mode).
    """

    class _CountdownTasks(envs.TaskDistribution):
        """Task = episode length L; obs = steps into the episode; reward 1 + obs; terminates at L."""

        task_shape = (1,)
        observation_space = spaces.Discrete(10)
        action_space = spaces.Discrete(2)
        horizon = 3

        def sample(self, n, rng):
            return rng.integers(1, 4, size=(n, 1)).astype(np.float64)

        def oracle_action(self, tasks, obs):
            return (np.asarray(obs) % 2).astype(np.int64)

        def max_return(self, tasks):
            length = np.asarray(tasks)[:, 0]
            return length * (length + 1) / 2

    class _CountdownEnv(gymnasium.Env):
        observation_space = spaces.Discrete(10)
        action_space = spaces.Discrete(2)

    class _CountdownVectorEnv(VectorEnv):
        metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

        def __init__(self, num_envs: int = 1):
            self.num_envs = num_envs
            self.single_observation_space = spaces.Discrete(10)
            self.single_action_space = spaces.Discrete(2)
            self.observation_space = batch_space(self.single_observation_space, num_envs)
            self.action_space = batch_space(self.single_action_space, num_envs)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.length = np.asarray(options["task"])[:, 0].astype(np.int64)
            self.t = np.zeros(self.num_envs, dtype=np.int64)
            return self.t.copy(), {}

        def step(self, actions):
            rewards = 1.0 + self.t
            self.t += 1
            term = self.t >= self.length
            infos = {}
            if term.any():
                final = np.full(self.num_envs, None, dtype=object)
                final[term] = self.t[term]
                infos = {"final_obs": final, "_final_obs": term.copy()}
                self.t[term] = 0
            return self.t.copy(), rewards, term, np.zeros(self.num_envs, bool), infos

    return _CountdownEnv, _CountdownVectorEnv, _CountdownTasks


class _RecordingPolicy:
    """Acts 0 and records the next_obs handed to update (the runner's part is under test)."""

    def __init__(self, n):
        self.n, self.next_obs = n, []

    def act(self, obs):
        return np.zeros(self.n, dtype=np.int64)

    def update(self, obs, actions, rewards, next_obs, terminated, truncated):
        self.next_obs.append(np.array(next_obs))


def test_runner_masks_envs_that_finish_early():
    env_id = "icrl_test/Countdown-v0"
    envs.register_family(env_id, *_countdown_family())
    tasks = np.array([[1.0], [3.0], [2.0]])
    pol = _RecordingPolicy(3)
    batch = run_policy(env_id, {}, pol, tasks, np.random.SeedSequence(0), episodes=2, source_index=4)
    batch.validate()
    np.testing.assert_array_equal(batch.lengths, [2, 6, 4])  # 2 episodes of L steps, no fake steps
    np.testing.assert_array_equal(batch.source, [4, 4, 4])
    expected_obs = [0, 0] + [0, 1, 2, 0, 1, 2] + [0, 1, 0, 1]
    np.testing.assert_array_equal(batch.steps["obs"], expected_obs)
    np.testing.assert_array_equal(batch.steps["reward"], 1.0 + np.array(expected_obs))
    np.testing.assert_array_equal(batch.steps["oracle_action"], np.array(expected_obs) % 2)
    np.testing.assert_array_equal(np.flatnonzero(batch.steps["terminated"]), [0, 1, 4, 7, 9, 11])
    np.testing.assert_array_equal(np.stack(batch.episode_returns), [[1, 1], [6, 6], [3, 3]])
    assert "regret" not in batch.steps  # the fake env reports none
    # next_obs is s': the true final obs (L) where an episode ended, not the next episode's reset obs
    np.testing.assert_array_equal(batch.steps["next_obs"], [1, 1] + [1, 2, 3, 1, 2, 3] + [1, 2, 1, 2])
    # the policy sees the same s' in update
    # (the reset obs would be 0); envs past their last episode keep stepping, unrecorded
    assert [o.tolist() for o in pol.next_obs[:3]] == [[1, 1, 1], [1, 2, 2], [1, 3, 1]]


# ---------------------------------------------------------------------------------- published ordering


def test_published_ordering_gaussian_bandit():
    """DPT's setting (K 5, sigma 0.3, U[0,1], H 500) on 2,000 tasks: Thompson < UCB < Emp < random."""
    tasks = _tasks(GAUSS, 2000, seed=11)
    final = {name: _collect(GAUSS, name, tasks, seed=11).steps["regret"].reshape(2000, 500).sum(1).mean()
             for name in ("thompson", "ucb", "emp", "random")}
    assert final["thompson"] < final["ucb"] < final["emp"] < final["random"]
    # random: 500 * (E[max of 5 U(0,1)] - E[mu]) = 500 * (5/6 - 1/2) = 166.67
    assert final["random"] == pytest.approx(500 / 3, rel=0.03)


# ---------------------------------------------------------------------------------------------- bayes


def test_bayes_matches_the_posterior_of_a_hand_case():
    # Bernoulli arms with U[0, 1] means: one success on arm 0 gives Beta(2, 1) against Beta(1, 1),
    # P(mu_0 > mu_1) = int_0^1 2x * x dx = 2/3; at T = 1/2 the probabilities are squared: 4/9 : 1/9.
    dist = envs.task_distribution(BERN, n_arms=2)
    for temperature, expected in ((1.0, [2 / 3, 1 / 3]), (0.5, [0.8, 0.2])):
        policy = make_policy("bayes", 3, dist, np.random.default_rng(0), bayes_temperature=temperature)
        policy.update(None, np.zeros(3, np.int64), np.ones(3), None, None, None)
        np.testing.assert_allclose(policy.probs(), [expected] * 3, atol=1e-3)


def test_bayes_draws_arms_with_its_probabilities():
    dist = envs.task_distribution(GAUSS, n_arms=3, sigma=0.3)
    n = 20000
    policy = make_policy("bayes", n, dist, np.random.default_rng(1), bayes_temperature=0.7)
    policy.update(None, np.zeros(n, np.int64), np.full(n, 0.6), None, None, None)
    policy.update(None, np.ones(n, np.int64), np.full(n, 0.4), None, None, None)
    p = policy.probs()[0]  # every row holds the same data
    assert np.allclose(policy.probs(), p) and p[0] > p[1] and abs(p.sum() - 1) < 1e-12
    freq = np.bincount(policy.act(None), minlength=3) / n
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-9)


def test_bayes_on_the_linear_bandit_sums_the_features():
    dist = envs.task_distribution(LINEAR, n_arms=4, dim=2)
    policy = make_policy("bayes", 2, dist, np.random.default_rng(0))
    phi = dist.features
    policy.update(None, np.array([1, 3]), np.array([0.5, -1.0]), None, None, None)
    policy.update(None, np.array([1, 0]), np.array([0.25, 2.0]), None, None, None)
    np.testing.assert_allclose(policy.xtx[0], 2 * np.outer(phi[1], phi[1]))
    np.testing.assert_allclose(policy.xtx[1], np.outer(phi[3], phi[3]) + np.outer(phi[0], phi[0]))
    np.testing.assert_allclose(policy.xtr[0], 0.75 * phi[1])
    np.testing.assert_allclose(policy.xtr[1], -phi[3] + 2.0 * phi[0])
    assert policy.probs().shape == (2, 4) and np.allclose(policy.probs().sum(1), 1)


def test_bayes_needs_a_bandit_with_a_prior_and_a_positive_temperature():
    with pytest.raises(ValueError, match="bayes_temperature"):
        make_policy("bayes", 2, envs.task_distribution(GAUSS), np.random.default_rng(0), bayes_temperature=0.0)
    with pytest.raises(ValueError, match="bandit"):
        make_policy("bayes", 2, envs.task_distribution("icrl/DarkRoom-v0"), np.random.default_rng(0))
