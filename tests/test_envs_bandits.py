"""Tests of the bandit families (envs/bandits.py, envs/linear_bandit.py, envs/tasks.py).

Conformance (check_env on every id), single vs vector equality (deterministic parts exactly,
reward distributions by seeded statistical tests), truncation and autoreset, task handling,
seeding, kwarg validation, priors and the registry.
"""

from __future__ import annotations

import math
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, VectorEnv

import icrl.envs
from icrl.envs import register_family, task_distribution
from icrl.envs.bandits import (
    BernoulliBanditEnv,
    BernoulliBanditTaskDistribution,
    BernoulliBanditVectorEnv,
    GaussianBanditEnv,
    GaussianBanditTaskDistribution,
    GaussianBanditVectorEnv,
)

GAUSS, BERN, LIN = "icrl/GaussianBandit-v0", "icrl/BernoulliBandit-v0", "icrl/LinearBandit-v0"
IDS = [GAUSS, BERN, LIN]


def make_vec(env_id: str, num_envs: int, **kwargs) -> VectorEnv:
    return gymnasium.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
    )


def ks_2samp_pvalue(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov test, asymptotic p-value (Numerical Recipes §14.3.3)."""
    x, y = np.sort(x), np.sort(y)
    grid = np.concatenate([x, y])
    d = np.max(np.abs(np.searchsorted(x, grid, "right") / x.size
                      - np.searchsorted(y, grid, "right") / y.size))
    en = math.sqrt(x.size * y.size / (x.size + y.size))
    lam = (en + 0.12 + 0.11 / en) * d
    # Q_KS(lam) = 2 sum_k (-1)^(k-1) exp(-2 k^2 lam^2)
    q = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return float(min(max(q, 0.0), 1.0))


def test_ks_helper_separates_distributions() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 2000), rng.normal(0, 1, 2000)
    assert ks_2samp_pvalue(a, b) > 0.01
    assert ks_2samp_pvalue(a, rng.normal(0.2, 1, 2000)) < 1e-4
    assert ks_2samp_pvalue(a, rng.normal(0, 1.2, 2000)) < 1e-3


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_unwrapped_and_wrapped(env_id: str) -> None:
    env = gymnasium.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    # check_env always notes that a wrapped env differs from env.unwrapped; nothing else may warn.
    others = [str(w.message) for w in caught]
    others = [m for m in others if "different from the unwrapped" not in m]
    assert others == []


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_gives_native_same_step_vector_env(env_id: str) -> None:
    venv = make_vec(env_id, 6)
    assert isinstance(venv, VectorEnv)
    assert type(venv).__name__.endswith("VectorEnv") and venv.num_envs == 6
    assert venv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    single = gymnasium.make(env_id)
    assert venv.single_action_space == single.action_space
    assert venv.single_observation_space == single.observation_space == gymnasium.spaces.Discrete(1)
    obs, info = venv.reset(seed=0)
    assert obs.shape == (6,) and obs.dtype == np.int64 and info == {}
    assert obs in venv.observation_space
    obs, rew, term, trunc, infos = venv.step(venv.action_space.sample())
    assert rew.shape == (6,) and rew.dtype == np.float64
    assert term.dtype == np.bool_ and trunc.dtype == np.bool_ and not term.any()
    assert infos["regret"].shape == (6,) and infos["_regret"].all()
    assert venv.spec is not None and venv.spec.id == env_id


def test_native_final_info_matches_sync_vector_env_in_same_step_mode() -> None:
    sync = gymnasium.make_vec(
        BERN, num_envs=3, vectorization_mode="sync", horizon=4,
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
    )
    native = make_vec(BERN, 3, horizon=4)
    task = np.array([0.2, 0.6, 0.1, 0.3, 0.4])
    sync.reset(seed=0, options={"task": task})  # sync passes the same options to every env
    native.reset(seed=0, options={"task": np.stack([task] * 3)})
    for _ in range(4):
        s_obs, _, _, s_trunc, s_inf = sync.step(np.array([0, 1, 2]))
        n_obs, _, _, n_trunc, n_inf = native.step(np.array([0, 1, 2]))
    np.testing.assert_array_equal(s_obs, n_obs)
    np.testing.assert_array_equal(s_trunc, n_trunc)
    for key in ("final_obs", "_final_obs", "_final_info"):
        np.testing.assert_array_equal(s_inf[key], n_inf[key])
    for key in ("regret", "_regret"):
        np.testing.assert_array_equal(s_inf["final_info"][key], n_inf["final_info"][key])
    # The native env also keeps the step's regret at the top level (the reset info is empty).
    np.testing.assert_array_equal(n_inf["regret"], n_inf["final_info"]["regret"])


# --------------------------------------------------------------------------- single == vector


@pytest.mark.parametrize("env_id", IDS)
def test_single_and_vector_share_means_and_regret(env_id: str) -> None:
    dist = task_distribution(env_id)
    tasks = dist.sample(4, np.random.default_rng(1))
    means = dist.means(tasks)  # (4, K)
    k = dist.n_arms
    venv = make_vec(env_id, 4)
    venv.reset(seed=0, options={"task": tasks})
    np.testing.assert_array_equal(venv.unwrapped.tasks, tasks)
    for i in range(4):
        env = gymnasium.make(env_id).unwrapped
        env.reset(seed=0, options={"task": tasks[i]})
        for a in range(k):
            *_, info = env.step(a)
            assert info["regret"] == pytest.approx(means[i].max() - means[i, a], abs=1e-12)
    for a in range(k):
        *_, infos = venv.step(np.full(4, a))
        np.testing.assert_allclose(infos["regret"], means.max(1) - means[:, a], atol=1e-12)


@pytest.mark.parametrize("env_id", IDS)
def test_single_env_equals_one_wide_vector_env_bitwise(env_id: str) -> None:
    # Both draw rewards through the same noise function from generators seeded the same way.
    env = gymnasium.make(env_id, horizon=50).unwrapped
    venv = make_vec(env_id, 1, horizon=50)
    for options in ({}, {"task": task_distribution(env_id).sample(1, np.random.default_rng(3))}):
        env.reset(seed=11, options={"task": options["task"][0]} if options else None)
        venv.reset(seed=11, options=options or None)
        np.testing.assert_array_equal(env.task, venv.unwrapped.tasks[0])
        actions = np.random.default_rng(5).integers(env.n_arms, size=120)  # spans 3 episodes
        single = []
        for a in actions:
            _, reward, _, truncated, _ = env.step(a)
            single.append(reward)
            if truncated:
                env.reset()  # what the vector env's SAME_STEP autoreset does
        vector = np.array([venv.step(np.array([a]))[1][0] for a in actions])
        np.testing.assert_array_equal(single, vector)


@pytest.mark.parametrize("env_id", IDS)
def test_single_and_vector_reward_distributions_agree(env_id: str) -> None:
    n = 4000
    dist = task_distribution(env_id)
    task = dist.sample(1, np.random.default_rng(7))  # (1, *task_shape)
    mu = dist.means(task)[0]
    arm = int(np.argsort(mu)[len(mu) // 2])  # a middle arm, mean away from 0 and 1
    env = gymnasium.make(env_id, horizon=n).unwrapped
    env.reset(seed=100, options={"task": task[0]})
    single = np.array([env.step(arm)[1] for _ in range(n)])
    venv = make_vec(env_id, n)
    venv.reset(seed=200, options={"task": np.repeat(task, n, axis=0)})
    vector = venv.step(np.full(n, arm))[1]
    if env_id == BERN:
        assert set(np.unique(single)) <= {0.0, 1.0} and set(np.unique(vector)) <= {0.0, 1.0}
        p = (single.sum() + vector.sum()) / (2 * n)
        z = (single.mean() - vector.mean()) / math.sqrt(2 * p * (1 - p) / n)
        assert abs(z) < 4
        for r in (single, vector):  # against the model itself: Bernoulli(mu_a)
            assert abs(r.mean() - mu[arm]) < 4 * math.sqrt(mu[arm] * (1 - mu[arm]) / n)
    else:
        assert ks_2samp_pvalue(single, vector) > 1e-3
        for r in (single, vector):  # against the model itself: N(mu_a, 0.3^2)
            assert abs(r.mean() - mu[arm]) < 4 * 0.3 / math.sqrt(n)
            assert abs(r.std() - 0.3) < 0.02


# --------------------------------------------------------------------------- episodes and tasks


@pytest.mark.parametrize("env_id", IDS)
def test_single_env_truncates_exactly_at_horizon(env_id: str) -> None:
    env = gymnasium.make(env_id, horizon=7)
    for _ in range(2):
        env.reset(seed=0)
        flags = [env.step(0)[2:4] for _ in range(7)]
        assert flags == [(False, False)] * 6 + [(False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(0)


@pytest.mark.parametrize("env_id", IDS)
def test_vector_env_truncates_at_horizon_and_autoresets_same_step(env_id: str) -> None:
    venv = make_vec(env_id, 3, horizon=5)
    venv.reset(seed=0)
    tasks = venv.unwrapped.tasks
    acts = np.array([0, 1, 1])
    for episode in range(3):
        for t in range(1, 6):
            obs, _, term, trunc, infos = venv.step(acts)
            assert not term.any()
            assert trunc.all() == (t == 5) and trunc.any() == (t == 5)
            assert ("final_obs" in infos) == (t == 5)
        np.testing.assert_array_equal(obs, np.zeros(3, dtype=np.int64))  # already the reset obs
        assert infos["_final_obs"].all() and list(infos["final_obs"]) == [0, 0, 0]
        assert infos["_final_info"].all() and infos["final_info"]["_regret"].all()
        np.testing.assert_array_equal(infos["final_info"]["regret"], infos["regret"])
        np.testing.assert_array_equal(venv.unwrapped.tasks, tasks)  # task kept across autoreset


@pytest.mark.parametrize("env_id", IDS)
def test_task_kept_across_reset_and_switched_by_option(env_id: str) -> None:
    dist = task_distribution(env_id)
    t1, t2 = dist.sample(2, np.random.default_rng(0))
    env = gymnasium.make(env_id).unwrapped
    env.reset(options={"task": t1})
    for kwargs in ({}, {"seed": 3}, {"options": {}}):
        env.reset(**kwargs)
        np.testing.assert_array_equal(env.task, t1)
    env.reset(options={"task": t2})
    np.testing.assert_array_equal(env.task, t2)

    venv = make_vec(env_id, 2)
    venv.reset(options={"task": np.stack([t1, t2])})
    venv.reset(seed=4)
    np.testing.assert_array_equal(venv.unwrapped.tasks, np.stack([t1, t2]))
    venv.reset(options={"task": np.stack([t2, t2])})
    np.testing.assert_array_equal(venv.unwrapped.tasks, np.stack([t2, t2]))


@pytest.mark.parametrize("env_id", IDS)
def test_prior_task_comes_from_the_seed(env_id: str) -> None:
    env = gymnasium.make(env_id).unwrapped
    env.reset(seed=1)
    first = env.task
    env.reset()
    np.testing.assert_array_equal(env.task, first)  # kept by an unseeded reset
    env.reset(seed=2)
    assert not np.array_equal(env.task, first)
    env.reset(seed=1)
    np.testing.assert_array_equal(env.task, first)
    expected = task_distribution(env_id).sample(1, np.random.default_rng(1))[0]
    np.testing.assert_array_equal(first, expected)  # drawn from the prior with np_random


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_rewards(env_id: str) -> None:
    def single_rewards(seed: int) -> np.ndarray:
        env = gymnasium.make(env_id, horizon=30)
        env.reset(seed=seed)
        return np.array([env.step(t % 3)[1] for t in range(30)])

    def vector_rewards(seed: int) -> np.ndarray:
        venv = make_vec(env_id, 8, horizon=10)
        venv.reset(seed=seed)
        return np.stack([venv.step(np.arange(8) % 3)[1] for _ in range(25)])

    assert single_rewards(9).tobytes() == single_rewards(9).tobytes()
    assert vector_rewards(9).tobytes() == vector_rewards(9).tobytes()
    assert not np.array_equal(single_rewards(9), single_rewards(10))
    assert not np.array_equal(vector_rewards(9), vector_rewards(10))


def test_bad_tasks_and_actions_raise() -> None:
    env = gymnasium.make(GAUSS).unwrapped
    with pytest.raises(ValueError, match="task: expected shape"):
        env.reset(options={"task": np.zeros(3)})
    with pytest.raises(ValueError, match="tasks:"):
        gymnasium.make(BERN).unwrapped.reset(options={"task": np.full(5, 1.5)})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action:"):
        env.step(5)
    venv = make_vec(GAUSS, 3)
    with pytest.raises(ValueError, match="tasks: expected one task per env"):
        venv.reset(options={"task": np.zeros((2, 5))})
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(3, dtype=np.int64))
    venv.reset(seed=0)
    for bad in (np.zeros(2, dtype=np.int64), np.zeros(3), np.array([0, 5, 1])):
        with pytest.raises(ValueError, match="actions:"):
            venv.step(bad)


# --------------------------------------------------------------------------- kwarg validation

BAD_KWARGS = [
    (GAUSS, {"sigma": -1.0}, "sigma"),
    (GAUSS, {"sigma": 0}, "sigma"),
    (GAUSS, {"n_arms": 1}, "n_arms"),
    (GAUSS, {"n_arms": 5.0}, "n_arms"),
    (GAUSS, {"horizon": 0}, "horizon"),
    (GAUSS, {"prior": "normal"}, "prior"),
    (BERN, {"prior_alpha": 0.0}, "prior_alpha"),
    (BERN, {"prior_beta": float("nan")}, "prior_beta"),
    (BERN, {"horizon": True}, "horizon"),
    (LIN, {"dim": 0}, "dim"),
    (LIN, {"sigma": float("inf")}, "sigma"),
    (LIN, {"feature_seed": -1}, "feature_seed"),
    (LIN, {"n_arms": "10"}, "n_arms"),
]


@pytest.mark.parametrize(("env_id", "kwargs", "name"), BAD_KWARGS)
def test_bad_kwargs_raise_value_error_naming_the_kwarg(
    env_id: str, kwargs: dict, name: str
) -> None:
    pattern = f"^{name}: "
    with pytest.raises(ValueError, match=pattern):
        gymnasium.make(env_id, **kwargs)
    with pytest.raises(ValueError, match=pattern):
        make_vec(env_id, 2, **kwargs)
    with pytest.raises(ValueError, match=pattern):
        task_distribution(env_id, **kwargs)


def test_error_message_format_and_other_bad_arguments() -> None:
    with pytest.raises(ValueError) as err:
        GaussianBanditEnv(sigma=-1.0)
    assert str(err.value) == "sigma: must be > 0, got -1.0"
    with pytest.raises(ValueError, match="^num_envs: "):
        make_vec(BERN, 0)
    with pytest.raises(ValueError, match="^n_arm: not a kwarg"):
        task_distribution(GAUSS, n_arm=3)
    with pytest.raises(ValueError, match="^env_id: unknown family"):
        task_distribution("icrl/NoSuchBandit-v0")


# --------------------------------------------------------------------------- task distributions


def test_arm_mean_priors() -> None:
    rng = np.random.default_rng(0)
    beta = task_distribution(BERN, prior="beta", prior_alpha=2.0, prior_beta=5.0)
    samples = beta.sample(20000, rng)
    assert samples.shape == (20000, 5) and samples.dtype == np.float64
    assert samples.mean() == pytest.approx(2 / 7, abs=0.005)
    var = 2 * 5 / (7**2 * 8)  # Beta variance ab / ((a+b)^2 (a+b+1))
    assert samples.var() == pytest.approx(var, rel=0.05)
    uni = task_distribution(GAUSS, n_arms=3).sample(20000, rng)
    assert uni.shape == (20000, 3) and 0 <= uni.min() and uni.max() <= 1
    assert uni.mean() == pytest.approx(0.5, abs=0.005)
    assert uni.var() == pytest.approx(1 / 12, rel=0.05)


@pytest.mark.parametrize("env_id", IDS)
def test_sample_is_seeded_and_split_is_none(env_id: str) -> None:
    dist = task_distribution(env_id)
    a = dist.sample(16, np.random.default_rng(42))
    b = dist.sample(16, np.random.default_rng(42))
    assert a.shape == (16, *dist.task_shape) and a.tobytes() == b.tobytes()
    assert dist.sample(0, np.random.default_rng(0)).shape == (0, *dist.task_shape)
    assert dist.split() is None
    assert dist.env_id == env_id


def test_oracle_action_and_max_return_on_hand_built_tasks() -> None:
    dist = task_distribution(GAUSS, n_arms=3, horizon=10)
    tasks = np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    actions = dist.oracle_action(tasks, np.zeros(2, dtype=np.int64))
    assert actions.dtype == np.int64 and actions.tolist() == [1, 0]
    np.testing.assert_allclose(dist.max_return(tasks), [9.0, 7.0])
    np.testing.assert_array_equal(dist.means(tasks), tasks)
    with pytest.raises(ValueError, match="tasks:"):
        dist.means(np.zeros((2, 4)))


def test_linear_features_identical_everywhere_and_means_linear() -> None:
    kwargs = {"n_arms": 6, "dim": 3, "feature_seed": 99}
    dist = task_distribution(LIN, **kwargs)
    env = gymnasium.make(LIN, **kwargs).unwrapped
    venv = make_vec(LIN, 2, **kwargs).unwrapped
    expected = np.random.default_rng(99).standard_normal((6, 3)) / math.sqrt(3)
    for features in (dist.features, env.features, venv.features):
        assert features.tobytes() == expected.tobytes()
    default = task_distribution(LIN).features
    assert default.shape == (10, 2)
    assert default.tobytes() == gymnasium.make(LIN).unwrapped.features.tobytes()
    assert not np.array_equal(default, task_distribution(LIN, feature_seed=1).features)
    theta = dist.sample(5, np.random.default_rng(0))  # (5, 3)
    np.testing.assert_allclose(dist.means(theta), theta @ expected.T)
    mu = dist.means(theta)
    np.testing.assert_array_equal(dist.oracle_action(theta, np.zeros(5)), mu.argmax(1))
    np.testing.assert_allclose(dist.max_return(theta), 200 * mu.max(1))
    big = task_distribution(LIN, dim=2).sample(40000, np.random.default_rng(1))
    np.testing.assert_allclose(np.cov(big.T), np.eye(2) / 2, atol=0.01)  # theta ~ N(0, I/d)


# --------------------------------------------------------------------------- registry


def test_registry_lists_families_and_reregistration_is_harmless() -> None:
    assert set(IDS) <= set(icrl.envs.family_ids())
    spec_before = gymnasium.spec(GAUSS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_family(
            GAUSS, GaussianBanditEnv, GaussianBanditVectorEnv, GaussianBanditTaskDistribution
        )
    assert gymnasium.spec(GAUSS) == spec_before
    assert isinstance(spec_before.entry_point, str) and spec_before.max_episode_steps is None
    with pytest.raises(ValueError, match="^env_id: .*already registered"):
        register_family(
            GAUSS, BernoulliBanditEnv, BernoulliBanditVectorEnv, BernoulliBanditTaskDistribution
        )
    with pytest.raises(ValueError, match="^task_cls: "):
        register_family("icrl/Other-v0", GaussianBanditEnv, GaussianBanditVectorEnv, dict)
