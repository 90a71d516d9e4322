"""Tests of the point robot families (envs/point_robot.py).

Conformance (check_env on both ids, native SAME_STEP vector env against gymnasium's SyncVectorEnv),
single vs vector trajectories across episode ends, the fixed 45/5 splits, the oracle's optimality
on a hand-computed case, ``max_return`` against Monte Carlo rollouts, the sparse reward, success
flags, episode ends, task handling and input / kwarg validation.
"""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, VectorEnv

import icrl.envs
from icrl.envs import task_distribution
from icrl.envs.point_robot import PointRobotTaskDistribution, SparsePointRobotTaskDistribution

DENSE, SPARSE = "icrl/PointRobot-v0", "icrl/SparsePointRobot-v0"
IDS = [DENSE, SPARSE]


def make_vec(env_id: str, num_envs: int, **kwargs) -> VectorEnv:
    return gymnasium.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
    )


def rollout(
    dist: PointRobotTaskDistribution, goals: np.ndarray, starts: np.ndarray, actions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Returns and per-step rewards of open-loop action sequences ``(n, T, 2)`` from ``starts``."""
    pos, rewards = starts.astype(np.float32), []
    for t in range(actions.shape[1]):
        pos, r, _ = dist.transition(goals, pos, actions[:, t])
        rewards.append(r)
    rewards = np.stack(rewards, axis=1)  # (n, T)
    return rewards.sum(axis=1), rewards


def oracle_returns(dist: PointRobotTaskDistribution, goals: np.ndarray, starts: np.ndarray):
    """Returns and per-step rewards of the oracle from ``starts``, one row per (goal, start)."""
    pos, rewards = starts.astype(np.float32), []
    for _ in range(dist.horizon):
        pos, r, _ = dist.transition(goals, pos, dist.oracle_action(goals, pos))
        rewards.append(r)
    rewards = np.stack(rewards, axis=1)  # (n, H)
    return rewards.sum(axis=1), rewards


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_unwrapped_and_spaces(env_id: str) -> None:
    env = gymnasium.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    dist = task_distribution(env_id)
    box = gymnasium.spaces.Box(-3.0, 3.0, (2,), np.float32)  # 0.1 * horizon + 1
    assert env.observation_space == dist.observation_space == box
    assert env.action_space == dist.action_space == gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    assert task_distribution(env_id, horizon=50).observation_space.high.tolist() == [6.0, 6.0]
    assert dist.horizon == 20 and dist.task_shape == (2,)
    assert dist.baselines == ("random", "psrl", "oracle") and dist.has_oracle and dist.has_max_return
    assert gymnasium.spec(env_id).max_episode_steps is None
    assert env_id in icrl.envs.family_ids()


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_gives_native_same_step_vector_env(env_id: str) -> None:
    venv = make_vec(env_id, 4)
    assert type(venv).__name__.endswith("VectorEnv") and venv.num_envs == 4
    assert venv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert venv.single_observation_space == gymnasium.make(env_id).observation_space
    obs, info = venv.reset(seed=0)
    assert obs.shape == (4, 2) and obs.dtype == np.float32 and info == {}
    assert np.all(np.abs(obs) <= 0.1) and obs in venv.observation_space
    obs, rew, term, trunc, infos = venv.step(venv.action_space.sample())
    assert obs in venv.observation_space and rew.shape == (4,) and rew.dtype == np.float64
    assert not term.any() and not trunc.any() and term.dtype == trunc.dtype == np.bool_
    assert set(infos) == {"success", "_success"} and infos["success"].dtype == np.bool_
    assert infos["success"].shape == (4,) and infos["_success"].all()


@pytest.mark.parametrize("env_id", IDS)
def test_native_vector_env_matches_sync_vector_env(env_id: str) -> None:
    # With given goals, SyncVectorEnv's env i (seeded s + i) and native env i draw the same starts.
    dist = task_distribution(env_id, horizon=4)
    goal = dist.split()[1][0]
    sync = gymnasium.make_vec(
        env_id, num_envs=3, vectorization_mode="sync", horizon=4,
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
    )
    native = make_vec(env_id, 3, horizon=4)
    tasks = np.tile(goal, (3, 1))
    s_obs, _ = sync.reset(seed=5, options={"task": goal})  # sync passes the options to every env
    n_obs, _ = native.reset(seed=5, options={"task": tasks})
    np.testing.assert_array_equal(s_obs, n_obs)
    rng = np.random.default_rng(0)
    for t in range(1, 11):
        acts = np.where(rng.random((3, 1)) < 0.5, dist.oracle_action(tasks, n_obs),
                        rng.uniform(-1, 1, (3, 2))).astype(np.float32)
        s_obs, s_rew, s_term, s_trunc, s_inf = sync.step(acts)
        n_obs, n_rew, n_term, n_trunc, n_inf = native.step(acts)
        for s, n in ((s_obs, n_obs), (s_rew, n_rew), (s_term, n_term), (s_trunc, n_trunc)):
            np.testing.assert_array_equal(s, n)
        assert ("final_obs" in s_inf) == ("final_obs" in n_inf) == (t % 4 == 0)
        if "final_obs" in s_inf:
            for key in ("_final_obs", "_final_info"):
                np.testing.assert_array_equal(s_inf[key], n_inf[key])
            for key in ("success", "_success"):
                np.testing.assert_array_equal(s_inf["final_info"][key], n_inf["final_info"][key])
            for s, n in zip(s_inf["final_obs"], n_inf["final_obs"]):
                np.testing.assert_array_equal(s, n)
            np.testing.assert_array_equal(n_inf["success"], n_inf["final_info"]["success"])
        else:
            np.testing.assert_array_equal(s_inf["success"], n_inf["success"])


# --------------------------------------------------------------------------- single == vector


@pytest.mark.parametrize("env_id", IDS)
def test_single_and_vector_trajectories_are_identical(env_id: str) -> None:
    dist = task_distribution(env_id, horizon=8)
    train, test = dist.split()
    tasks = np.concatenate([train[:3], test[:2], [[0.05, 0.0]]])  # (6, 2); the last is near
    n, steps = len(tasks), 2 * dist.horizon + 5
    venv = make_vec(env_id, n, horizon=8)
    obs, _ = venv.reset(seed=11, options={"task": tasks})
    rng = np.random.default_rng(0)
    first, actions = obs, []
    vec: dict[str, list] = {"obs": [], "rew": [], "trunc": [], "final": [], "success": []}
    for _ in range(steps):  # half oracle, half random beyond the box (clipped)
        act = np.where(rng.random((n, 1)) < 0.5, dist.oracle_action(tasks, obs),
                       rng.uniform(-1.5, 1.5, (n, 2)))
        obs, rew, term, trunc, infos = venv.step(act)
        assert not term.any()
        actions.append(act)
        for key, val in (("obs", obs), ("rew", rew), ("trunc", trunc)):
            vec[key].append(val)
        vec["success"].append(infos["success"])
        vec["final"].append(infos.get("final_obs", np.full(n, None, dtype=object)))
    assert np.any(vec["trunc"]) and np.any(vec["success"]) and not np.all(vec["success"])
    env = gymnasium.make(env_id, horizon=8).unwrapped
    for i in range(n):
        o, _ = env.reset(seed=11 + i, options={"task": tasks[i]})
        np.testing.assert_array_equal(o, first[i])
        for t in range(steps):
            o, r, te, tr, info = env.step(actions[t][i])
            assert r == vec["rew"][t][i] and not te and tr == vec["trunc"][t][i]
            assert info == {"success": bool(vec["success"][t][i])}
            if tr:
                np.testing.assert_array_equal(o, vec["final"][t][i])
                o, _ = env.reset()  # what SAME_STEP autoreset does
            else:
                assert vec["final"][t][i] is None
            np.testing.assert_array_equal(o, vec["obs"][t][i])


# --------------------------------------------------------------------------- splits


@pytest.mark.parametrize("env_id", IDS)
def test_split_is_fixed_45_5_and_sample_draws_only_train(env_id: str) -> None:
    dist = task_distribution(env_id)
    train, test = dist.split()
    assert train.shape == (45, 2) and test.shape == (5, 2) and train.dtype == np.float64
    again = task_distribution(env_id).split()
    np.testing.assert_array_equal(np.concatenate([train, test]), np.concatenate(again))
    assert not {tuple(g) for g in train} & {tuple(g) for g in test}
    assert len({tuple(g) for g in np.concatenate([train, test])}) == 50
    other = task_distribution(env_id, split_seed=1).split()[0]
    assert not np.array_equal(other, train)
    a = dist.sample(400, np.random.default_rng(3))
    assert a.shape == (400, 2) and a.dtype == np.float64
    assert a.tobytes() == dist.sample(400, np.random.default_rng(3)).tobytes()
    assert {tuple(g) for g in a} <= {tuple(g) for g in train}
    assert len({tuple(g) for g in a}) > 40
    assert dist.sample(0, np.random.default_rng(0)).shape == (0, 2)
    small = task_distribution(env_id, n_tasks=10, train_fraction=0.7).split()
    assert (len(small[0]), len(small[1])) == (7, 3)


def test_goal_distributions() -> None:
    dense = np.concatenate(task_distribution(DENSE).split())
    assert np.all(np.abs(dense) <= 1) and dense.min() < -0.8 and dense.max() > 0.8
    sparse = np.concatenate(task_distribution(SPARSE).split())
    np.testing.assert_allclose(np.linalg.norm(sparse, axis=1), 1.0)
    assert np.all(sparse[:, 1] >= 0)  # the upper half circle


# --------------------------------------------------------------------------- oracle and max_return


def test_oracle_action_is_the_clipped_greedy_step() -> None:
    dist = task_distribution(DENSE)
    goals = np.array([[0.35, -0.05], [0.0, 0.0], [-1.0, 0.02]])
    obs = np.array([[0.0, 0.0], [0.03, -0.04], [0.0, 0.0]], dtype=np.float32)
    act = dist.oracle_action(goals, obs)
    assert act.dtype == np.float32 and act.shape == (3, 2)
    np.testing.assert_allclose(act, [[1.0, -0.5], [-0.3, 0.4], [-1.0, 0.2]], atol=1e-6)


@pytest.mark.parametrize(("env_id", "per_step"), [
    (DENSE, [-0.25, -0.15, -0.05] + [0.0] * 17),  # return -0.45
    (SPARSE, [0.0, 0.85, 0.95] + [1.0] * 17),  # return 18.8
])
def test_oracle_is_optimal_on_a_hand_case(env_id: str, per_step: list[float]) -> None:
    # Start (0, 0), goal (0.35, -0.05): x needs 3.5 steps, y half a step; the oracle moves
    # (0.1, -0.05), (0.1, 0), (0.1, 0), (0.05, 0) and then stays on the goal.
    dist = task_distribution(env_id)
    goal, start = np.array([[0.35, -0.05]]), np.zeros((1, 2))
    ret, rewards = oracle_returns(dist, goal, start)
    np.testing.assert_allclose(rewards[0], per_step, atol=1e-6)
    np.testing.assert_allclose(ret, [sum(per_step)], atol=1e-5)
    # No other action sequence beats it: random ones (some beyond the box) and perturbed oracles.
    rng = np.random.default_rng(0)
    pos, oracle_acts = start.astype(np.float32), []
    for _ in range(dist.horizon):
        oracle_acts.append(dist.oracle_action(goal, pos)[0])
        pos = dist.transition(goal, pos, oracle_acts[-1][None])[0]
    oracle_acts = np.array(oracle_acts)  # (H, 2)
    n = 1500
    candidates = np.concatenate([
        rng.uniform(-1.5, 1.5, (n, dist.horizon, 2)),
        oracle_acts + rng.normal(0, 0.05, (n, dist.horizon, 2)),
        oracle_acts + rng.normal(0, 0.3, (n, dist.horizon, 2)) * (rng.random((n, 1, 1)) < 0.2),
    ])
    returns, _ = rollout(dist, np.tile(goal, (len(candidates), 1)),
                         np.zeros((len(candidates), 2)), candidates)
    assert returns.max() <= ret[0] + 1e-6
    np.testing.assert_allclose(rollout(dist, goal, start, oracle_acts[None])[0], ret)


@pytest.mark.parametrize(("env_id", "tol"), [(DENSE, 0.02), (SPARSE, 0.04)])
def test_max_return_matches_monte_carlo_oracle_rollouts(env_id: str, tol: float) -> None:
    dist = task_distribution(env_id)
    goals = np.concatenate([dist.split()[1], dist.split()[0][:3]])  # (8, 2)
    expected = dist.max_return(goals)
    assert expected.shape == (8,) and expected.dtype == np.float64
    assert (expected < 0).all() if env_id == DENSE else (expected > 10).all()
    np.testing.assert_array_equal(expected, dist.max_return(goals))  # deterministic
    np.testing.assert_array_equal(expected[:1], dist.max_return(goals[:1]))
    n = 20000
    rng = np.random.default_rng(1)
    starts = rng.uniform(-0.1, 0.1, (len(goals) * n, 2))
    returns, _ = oracle_returns(dist, np.repeat(goals, n, axis=0), starts)
    np.testing.assert_allclose(returns.reshape(len(goals), n).mean(axis=1), expected, atol=tol)


def test_max_return_of_a_goal_at_the_origin_and_short_horizons() -> None:
    # Goal (0, 0): the oracle reaches it in one step from every start (|start| <= 0.1 per axis).
    dense = task_distribution(DENSE, horizon=3)
    ret = dense.max_return(np.zeros((1, 2)))
    np.testing.assert_allclose(ret, [0.0], atol=1e-6)
    sparse = task_distribution(SPARSE, horizon=3)
    np.testing.assert_allclose(sparse.max_return(np.zeros((1, 2))), [3.0], atol=1e-6)
    # Goal (0, 1) with H 1: one step of 0.1 leaves d ~ 0.9 (dense) and no sparse reward.
    np.testing.assert_allclose(task_distribution(DENSE, horizon=1).max_return(
        np.array([[0.0, 1.0]])), [-0.9], atol=2e-3)
    assert task_distribution(SPARSE, horizon=1).max_return(np.array([[0.0, 1.0]])).tolist() == [0]


# --------------------------------------------------------------------------- rewards and success


def test_sparse_reward_and_success_on_hand_cases() -> None:
    dist = task_distribution(SPARSE)
    goals = np.tile([0.0, 1.0], (5, 1))
    obs = np.array([[0.0, 0.7], [0.0, 0.9], [0.0, 1.0], [0.12, 1.0], [0.0, 0.5]], np.float32)
    acts = np.array([[0.0, 0.0], [0.0, 0.5], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    pos, rew, success = dist.transition(goals, obs, acts)
    # distances after the move: 0.3, 0.05, 0, 0.12, 0.4
    np.testing.assert_allclose(rew, [0.0, 0.95, 1.0, 0.88, 0.0], atol=1e-6)
    assert success.tolist() == [False, True, True, True, False]
    dense = task_distribution(DENSE)
    _, rew, success = dense.transition(goals, obs, acts)
    np.testing.assert_allclose(rew, [-0.3, -0.05, 0.0, -0.12, -0.4], atol=1e-6)
    assert success.tolist() == [False, True, True, True, False]
    _, _, success = task_distribution(DENSE, goal_radius=0.35).transition(goals, obs, acts)
    assert success.tolist() == [True, True, True, True, False]


@pytest.mark.parametrize("env_id", IDS)
def test_single_env_moves_clips_and_reports_success(env_id: str) -> None:
    env = gymnasium.make(env_id).unwrapped
    start, info = env.reset(seed=0, options={"task": (0.3, 0.0)})
    assert info == {} and start.dtype == np.float32 and np.all(np.abs(start) <= 0.1)
    obs, r, term, trunc, info = env.step(np.array([5.0, -0.5]))  # x clipped to 1
    np.testing.assert_allclose(obs, start + np.array([0.1, -0.05]), atol=1e-6)
    assert obs.dtype == np.float32 and not term and not trunc
    d = float(np.linalg.norm(obs.astype(np.float64) - (0.3, 0.0)))
    assert r == pytest.approx(-d if env_id == DENSE else (1 - d if d <= 0.2 else 0.0))
    assert info == {"success": d <= 0.2}
    for _ in range(3):
        obs, r, *_, info = env.step(env.task_distribution.oracle_action(
            np.array([[0.3, 0.0]]), obs[None])[0])
    assert info == {"success": True}
    assert r == pytest.approx(0.0 if env_id == DENSE else 1.0, abs=1e-6)


@pytest.mark.parametrize("env_id", IDS)
def test_episodes_truncate_at_horizon_and_keep_tasks(env_id: str) -> None:
    env = gymnasium.make(env_id, horizon=5).unwrapped
    for _ in range(2):
        env.reset(options={"task": (0.5, 0.5)})
        flags = [env.step(np.zeros(2))[2:4] for _ in range(5)]
        assert flags == [(False, False)] * 4 + [(False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2))
    venv = make_vec(env_id, 3, horizon=5)
    tasks = np.array([[0.5, 0.5], [-0.5, 0.2], [0.9, -0.9]])
    venv.reset(seed=0, options={"task": tasks})
    for t in range(1, 11):
        obs, _, term, trunc, infos = venv.step(np.zeros((3, 2)))
        assert not term.any() and trunc.all() == (t % 5 == 0) == trunc.any()
        if t % 5 == 0:
            assert infos["_final_obs"].all() and infos["_final_info"].all()
            assert np.all(np.abs(obs) <= 0.1)  # already the next episode's start
    np.testing.assert_array_equal(venv.unwrapped.tasks, tasks)


@pytest.mark.parametrize("env_id", IDS)
def test_tasks_seeds_and_start_states(env_id: str) -> None:
    dist = task_distribution(env_id)
    env = gymnasium.make(env_id).unwrapped
    obs_a, _ = env.reset(seed=3)
    task = env.task
    np.testing.assert_array_equal(task, dist.sample(1, np.random.default_rng(3))[0])
    obs_b, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert not np.array_equal(env.reset()[0], obs_a)  # a new start, the same goal
    np.testing.assert_array_equal(env.task, task)
    env.reset(options={"task": (2.0, -3.0)})  # any finite goal, in a split or not
    env.reset(seed=9)
    np.testing.assert_array_equal(env.task, [2.0, -3.0])
    venv = make_vec(env_id, 64)
    obs, _ = venv.reset(seed=2)
    assert {tuple(g) for g in venv.unwrapped.tasks} <= {tuple(g) for g in dist.split()[0]}
    assert len({tuple(o) for o in obs}) == 64 and np.all(np.abs(obs) <= 0.1)
    np.testing.assert_array_equal(make_vec(env_id, 64).reset(seed=2)[0], obs)
    unseeded = make_vec(env_id, 2)
    first, _ = unseeded.reset()
    assert not np.array_equal(unseeded.reset()[0], first)


# --------------------------------------------------------------------------- validation


def test_bad_actions_tasks_and_obs_raise() -> None:
    env = gymnasium.make(DENSE).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2))
    env.reset(seed=0)
    for bad in (np.zeros(3), np.zeros((1, 2)), np.array([1, 0]), np.array([np.nan, 0.0]),
                np.array([np.inf, 0.0]), 0.5):
        with pytest.raises(ValueError, match="^action: "):
            env.step(bad)
    for bad in ((1.0, 2.0, 3.0), (np.nan, 0.0)):
        with pytest.raises(ValueError, match="^tasks?: "):
            env.reset(options={"task": bad})
    venv = make_vec(SPARSE, 3)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="^tasks: expected one task per env"):
        venv.reset(options={"task": np.zeros((2, 2))})
    venv.reset(seed=0)
    for bad in (np.zeros((3,)), np.zeros((2, 2)), np.zeros((3, 2), dtype=np.int64),
                np.full((3, 2), np.nan), np.full((3, 2), -np.inf), [["a", "b"]] * 3):
        with pytest.raises(ValueError, match="^actions: "):
            venv.step(bad)
    with pytest.raises(ValueError, match="^obs: expected shape"):
        task_distribution(DENSE).oracle_action(np.zeros((2, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="^obs: every position must be finite"):
        task_distribution(DENSE).oracle_action(np.zeros((1, 2)), np.full((1, 2), np.nan))


BAD_KWARGS = [
    (DENSE, {"horizon": 0}, "horizon"),
    (DENSE, {"horizon": 2.5}, "horizon"),
    (DENSE, {"n_tasks": 1}, "n_tasks"),
    (DENSE, {"split_seed": -1}, "split_seed"),
    (DENSE, {"train_fraction": 1.0}, "train_fraction"),
    (DENSE, {"train_fraction": 0.01}, "train_fraction"),
    (DENSE, {"goal_radius": 0.0}, "goal_radius"),
    (SPARSE, {"goal_radius": 1.5}, "goal_radius"),
    (SPARSE, {"goal_radius": "0.2"}, "goal_radius"),
    (SPARSE, {"n_tasks": True}, "n_tasks"),
]


@pytest.mark.parametrize(("env_id", "kwargs", "name"), BAD_KWARGS)
def test_bad_kwargs_raise_value_error_naming_the_kwarg(env_id, kwargs, name) -> None:
    pattern = f"^{name}: "
    with pytest.raises(ValueError, match=pattern):
        gymnasium.make(env_id, **kwargs)
    with pytest.raises(ValueError, match=pattern):
        make_vec(env_id, 2, **kwargs)
    with pytest.raises(ValueError, match=pattern):
        task_distribution(env_id, **kwargs)


def test_kwargs_are_validated_per_family() -> None:
    with pytest.raises(ValueError, match="^num_envs: "):
        make_vec(DENSE, 0)
    assert task_distribution(DENSE, goal_radius=1.5).goal_radius == 1.5  # dense: any radius
    assert task_distribution(SPARSE, goal_radius=1).goal_radius == 1.0
    with pytest.raises(ValueError, match="^radius: not a kwarg"):
        task_distribution(SPARSE, radius=0.1)


@pytest.mark.parametrize("family", [PointRobotTaskDistribution, SparsePointRobotTaskDistribution])
def test_declared_symmetries_map_histories_to_histories_of_the_mapped_goal(family):
    """For every declared (M_obs, M_act): the mapped start, actions and goal give the mapped
    positions, the same rewards and success, and the mapped oracle action; the prior is invariant."""
    dist = family()
    rng = np.random.default_rng(0)
    goals = dist.sample(64, rng)  # (n, 2)
    for m_obs, m_act in dist.symmetries:
        obs, mobs = dist.start_obs(rng, 64), None
        mobs = (obs.astype(np.float64) @ m_obs.T).astype(np.float32)
        mgoals = goals @ m_obs.T
        assert np.allclose(dist.check_tasks(mgoals), mgoals)  # the mapped goal is a task of the family
        if family is SparsePointRobotTaskDistribution:
            assert np.all(mgoals[:, 1] >= 0) and np.allclose(np.linalg.norm(mgoals, axis=1), 1.0)
        for _ in range(20):
            act = rng.uniform(-1.5, 1.5, size=(64, 2))
            assert np.allclose(dist.oracle_action(mgoals, mobs), dist.oracle_action(goals, obs) @ m_act.T, atol=1e-6)
            obs, r, ok = dist.transition(goals, obs, act)
            mobs, mr, mok = dist.transition(mgoals, mobs, act @ m_act.T)
            assert np.allclose(mobs, obs.astype(np.float64) @ m_obs.T, atol=1e-6)
            assert np.allclose(mr, r, atol=1e-6) and np.array_equal(mok, ok)
