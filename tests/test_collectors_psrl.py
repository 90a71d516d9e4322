"""Posterior sampling (PSRL) over a particle set: the posterior, the sampling rule, the reward models
and priors of the point robots, and smoke runs through the collection pipeline."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from icrl import envs
from icrl.collectors import POLICIES, PosteriorSamplingPolicy, collect_block, make_policy, run_policy
from icrl.collectors.psrl import RESAMPLE_LOG_RATIO, sample_categorical
from icrl.config import CollectConfig
from icrl.evaluation import episode_success

PR, SPR, DR = "icrl/PointRobot-v0", "icrl/SparsePointRobot-v0", "icrl/DarkRoom-v0"


def _policy(env_id: str, n: int = 1, seed: int = 0, **params) -> PosteriorSamplingPolicy:
    return make_policy("psrl", n, envs.task_distribution(env_id), np.random.default_rng(seed), **params)


def _block(env_id: str, n: int, episodes: int, seed: int = 0):
    """``n`` PSRL histories on the family's train goals (cycled), and those goals."""
    train, _ = envs.task_distribution(env_id).split()
    tasks = train[np.arange(n) % len(train)]  # (n, 2)
    batch = collect_block(env_id, {}, "psrl", {}, tasks, np.arange(n), np.zeros(n, np.int64), 0,
                          np.random.SeedSequence(seed), episodes=episodes)
    return batch, tasks


def _false(n: int) -> np.ndarray:
    return np.zeros(n, dtype=bool)


# ------------------------------------------------------------------ the task-distribution contract


def test_point_robot_reward_model_reproduces_the_env_reward_bit_for_bit():
    rng = np.random.default_rng(0)
    for env_id in (PR, SPR):
        dist = envs.task_distribution(env_id)
        goals = dist.sample_prior(500, rng)  # (500, 2)
        obs = rng.uniform(-1.2, 1.2, (500, 2)).astype(np.float32)  # near the goals: sparse rewards happen
        obs[:250] = (goals[:250] - rng.uniform(-0.15, 0.15, (250, 2))).astype(np.float32)
        act = rng.uniform(-1.5, 1.5, (500, 2))
        next_obs, reward, success = dist.transition(goals, obs, act)
        assert success.any() and not success.all()  # both sides of the sparse radius are tested
        assert np.array_equal(dist.expected_reward(goals, obs, act, next_obs), reward)
        assert dist.has_reward_model


def test_point_robot_prior_is_the_generating_prior_not_the_train_split():
    dist = envs.task_distribution(SPR)
    goals = dist.sample_prior(1000, np.random.default_rng(1))  # (1000, 2)
    assert goals.shape == (1000, 2)
    assert np.allclose(np.linalg.norm(goals, axis=1), 1.0) and (goals[:, 1] >= 0).all()
    assert not np.isin(goals[:, 0], dist.all_tasks()[:, 0]).any()  # fresh goals, not the enumerated ones
    dense = envs.task_distribution(PR).sample_prior(1000, np.random.default_rng(1))
    assert dense.min() >= -1 and dense.max() <= 1 and dense.min() < -0.9 and dense.max() > 0.9


def test_task_distribution_defaults_prior_to_sample_and_name_the_missing_reward_model():
    dist = envs.task_distribution(DR)
    assert not dist.has_reward_model
    assert np.array_equal(dist.sample_prior(7, np.random.default_rng(3)), dist.sample(7, np.random.default_rng(3)))
    with pytest.raises(NotImplementedError, match=r"expected_reward \(docs/extending.md\)"):
        dist.expected_reward(dist.sample(1, np.random.default_rng(0)), None, None, None)


# ------------------------------------------------------------------------------- the posterior


def test_posterior_update_by_hand():
    pol = _policy(PR, psrl_particles=3, psrl_sigma=0.1)
    pol.particles = np.array([[[0.3, 0.4], [0.0, 0.6], [0.8, 0.6]]])  # (1, 3, 2): distances 0.5, 0.6, 1.0
    origin = np.zeros((1, 2), np.float32)
    # One transition ending at the origin with reward -0.5 (the first particle's):
    # log w_i = -(r - r_hat_i)^2 / (2 sigma^2) = -(0, 0.1, 0.5)^2 / 0.02 = (0, -0.5, -12.5).
    pol.update(origin, np.zeros((1, 2), np.float32), np.array([-0.5]), origin, _false(1), _false(1))
    assert pol.log_w == pytest.approx(np.array([[0.0, -0.5, -12.5]]), abs=1e-9)
    # A second one with reward -0.6 (the second particle's) adds (-0.5, 0, -8) and the row is shifted
    # to max 0: (-0.5, -0.5, -20.5) + 0.5.
    pol.update(origin, np.zeros((1, 2), np.float32), np.array([-0.6]), origin, _false(1), _false(1))
    assert pol.log_w == pytest.approx(np.array([[0.0, 0.0, -20.0]]), abs=1e-9)


def test_zero_reward_rules_out_the_goals_within_the_radius():
    pol = _policy(SPR, n=2, psrl_particles=512)
    pos = np.array([[0.0, 0.9], [-0.7, 0.7]], np.float32)  # (2, 2) near the half circle
    pol.update(pos, np.zeros((2, 2), np.float32), np.zeros(2), pos, _false(2), _false(2))
    near = np.linalg.norm(pol.particles - pos[:, None].astype(np.float64), axis=2) <= 0.2  # (2, M)
    assert near.sum(axis=1).min() >= 10  # the test means something
    post = np.exp(pol.log_w) / np.exp(pol.log_w).sum(axis=1, keepdims=True)  # (2, M)
    assert post[near].max() < 1e-40  # ruled out: predicted >= 0.8 where 0 was seen
    assert np.all(pol.log_w[~near] == 0.0)  # everyone else predicted the 0 exactly


def test_sample_categorical_follows_the_softmax():
    with np.errstate(divide="ignore"):
        log_w = np.log(np.array([[0.2, 0.0, 0.8], [1.0, 0.0, 0.0]]))  # (2, 3), -inf where the weight is 0
    u = np.array([[0.1, 0.5], [0.25, 0.99]])  # rows: which log_w row, draw per call
    assert sample_categorical(log_w, u[:, 0]).tolist() == [0, 0]
    assert sample_categorical(log_w, u[:, 1]).tolist() == [2, 0]
    draws = sample_categorical(np.repeat(log_w[:1], 20000, 0), np.random.default_rng(0).random(20000))
    assert np.bincount(draws, minlength=3) / 20000 == pytest.approx([0.2, 0.0, 0.8], abs=0.01)


# ------------------------------------------------------------------------------- the sampling rule


def _consistent_step(pol: PosteriorSamplingPolicy, dist, obs: np.ndarray, truncated: bool) -> np.ndarray:
    """One step whose reward is the sampled particle's own prediction (so it stays the best)."""
    act = pol.act(obs)
    next_obs, _, _ = dist.transition(pol.sampled_tasks, obs, act)
    reward = dist.expected_reward(pol.sampled_tasks, obs, act, next_obs)
    pol.update(obs, act, reward, next_obs, _false(len(obs)), np.full(len(obs), truncated))
    return next_obs


def test_sample_is_kept_while_plausible_and_redrawn_at_the_next_episode():
    dist = envs.task_distribution(SPR)
    n = 64
    pol = _policy(SPR, n=n, seed=2)
    obs = dist.start_obs(np.random.default_rng(0), n)  # (n, 2)
    first = None
    for t in range(dist.horizon):
        obs = _consistent_step(pol, dist, obs, truncated=t == dist.horizon - 1)
        first = pol.current.copy() if first is None else first
        assert np.array_equal(pol.current, first) and (pol.resamples == 1).all()  # kept all episode
    pol.act(obs)  # the next episode's first step: a fresh draw from the posterior
    assert (pol.resamples == 2).all()
    assert (pol.current != first).mean() > 0.5  # many goals stay plausible after one episode
    assert np.all(pol.log_w[np.arange(n), pol.current] > -RESAMPLE_LOG_RATIO)


def test_an_implausible_sample_is_redrawn_mid_episode():
    dist = envs.task_distribution(SPR)
    pol = _policy(SPR, n=1, seed=3)
    pos = np.zeros((1, 2), np.float32)
    pol.act(pos)
    goal = pol.sampled_tasks.astype(np.float32)  # stand on the sampled goal and see no reward there
    pol.update(pos, np.zeros((1, 2), np.float32), np.zeros(1), goal, _false(1), _false(1))
    assert pol.implausible().all()
    pol.act(goal)
    assert pol.resamples[0] == 2 and not pol.implausible().any()
    assert np.linalg.norm(pol.sampled_tasks - goal) > dist.goal_radius  # not ruled out by the zero


def test_the_policy_learns_the_task_from_rewards_only():
    assert not hasattr(PosteriorSamplingPolicy, "set_tasks")  # run_policy never hands it the tasks
    train, _ = envs.task_distribution(SPR).split()
    firsts = []
    for tasks in (train[:4], train[-4:]):  # different true goals, same seeds
        pol = _policy(SPR, n=4, seed=5)
        batch = run_policy(SPR, {}, pol, tasks, np.random.SeedSequence(9), episodes=1)
        firsts.append(batch.steps["action"].reshape(4, -1, 2)[:, 0])  # (4, 2) first action per history
    assert np.array_equal(*firsts)  # before any reward the actions cannot depend on the goals


# ------------------------------------------------------------------------------- smoke runs


def test_psrl_finds_the_sparse_goal_within_a_few_episodes():
    batch, tasks = _block(SPR, 32, 20)
    success = episode_success(batch, 32).mean(axis=0)  # (20,) success rate per episode
    returns = np.stack(batch.episode_returns)  # (32, 20)
    oracle = envs.task_distribution(SPR).max_return(tasks).mean()
    assert success[0] < 0.7 and success[:3].mean() < success[-10:].mean()  # it learns across episodes
    assert success[9:].min() == 1.0  # measured: 1.0 from episode 6 on (seed 0)
    assert returns[:, -10:].mean() >= 0.95 * oracle


def test_psrl_on_the_dense_point_robot_nears_the_oracle():
    batch, tasks = _block(PR, 32, 10)
    returns = np.stack(batch.episode_returns).mean(axis=0)  # (10,)
    oracle = envs.task_distribution(PR).max_return(tasks).mean()  # about -2.4
    assert returns[0] < returns[1:].mean() - 1.0  # the first episode explores
    assert returns[1:].mean() >= oracle - 1.0  # then within the particle resolution of the oracle


def test_psrl_blocks_are_deterministic():
    a, _ = _block(SPR, 4, 3, seed=11)
    b, _ = _block(SPR, 4, 3, seed=11)
    for key in a.steps:
        assert np.array_equal(a.steps[key], b.steps[key]), key


# ------------------------------------------------------------------------------- errors and config


def test_families_without_a_reward_model_get_a_one_line_error():
    with pytest.raises(ValueError, match="reward model") as err:
        _policy(DR, n=2)
    assert "\n" not in str(err.value) and DR in str(err.value)


@pytest.mark.parametrize("bad,name", [({"psrl_particles": 0}, "psrl_particles"), ({"psrl_particles": 2.5}, "psrl_particles"),
                                      ({"psrl_sigma": 0.0}, "psrl_sigma"), ({"psrl_sigma": float("nan")}, "psrl_sigma")])
def test_bad_params_name_the_parameter(bad, name):
    with pytest.raises(ValueError, match=name):
        _policy(SPR, n=1, **bad)


def test_registered_and_config_defaults_match_the_constructor():
    assert POLICIES["psrl"] is PosteriorSamplingPolicy
    params = CollectConfig().algorithm_params()
    sig = inspect.signature(PosteriorSamplingPolicy)
    own = {n: p.default for n, p in sig.parameters.items() if n.startswith("psrl_")}
    assert own == {k: v for k, v in params.items() if k.startswith("psrl_")}
    assert isinstance(make_policy("psrl", 2, envs.task_distribution(SPR), np.random.default_rng(0), **params),
                      PosteriorSamplingPolicy)


def test_bandit_reward_model_is_the_pulled_arms_mean_and_psrl_runs_there():
    dist = envs.task_distribution("icrl/GaussianBandit-v0")
    tasks = dist.sample(3, np.random.default_rng(0))  # (3, K)
    arms = np.array([0, 2, 1])
    assert dist.has_reward_model
    assert np.array_equal(dist.expected_reward(tasks, np.zeros(3, np.int64), arms, np.zeros(3, np.int64)),
                          tasks[np.arange(3), arms])
    with pytest.raises(ValueError, match="actions"):
        dist.expected_reward(tasks, None, np.array([0, 1, dist.n_arms]), None)
    pol = _policy("icrl/GaussianBandit-v0", n=3)
    assert pol.particles.shape == (3, 512, dist.n_arms)
