"""UCB-VI: the bonus and one backup by hand, learning and exploring on a 2-state chain, batched vs
one run at a time, runs through the collection runner, and the config errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
from gymnasium import spaces

from icrl import envs
from icrl.collectors import POLICIES, collect_block, make_policy, run_policy
from icrl.collectors.ucbvi import UCBVIPolicy, optimistic_q, state_index, tie_priorities, ucbvi_bonus
from icrl.config import CollectConfig, ConfigError, load_config

DR, KTD = "icrl/DarkRoom-v0", "icrl/KeyToDoor-v0"
DR5 = {"size": 5, "horizon": 10}  # 25 states: a tiny Dark Room
KTD3 = {"size": 3, "horizon": 20}  # 18 states; the door ends episodes early


class ChainDist(envs.TaskDistribution):
    """A deterministic 2-state chain: action 1 moves to (or stays in) state 1, action 0 to state 0;
    reward 1 for action 1 in state 1. From state 0 the best return over H steps is H - 1."""

    env_id = "test/Chain"
    observation_space = spaces.Discrete(2)
    action_space = spaces.Discrete(2)
    horizon = 4

    def sample(self, n, rng):
        return np.zeros((n, 1))


def _chain_run(policy: UCBVIPolicy, episodes: int) -> np.ndarray:
    """Run ``policy`` on ChainDist by hand; returns (N, episodes) returns."""
    n, h = policy.num_envs, ChainDist.horizon
    policy.set_tasks(np.zeros((n, 1)), episodes)
    returns = np.zeros((n, episodes))
    for k in range(episodes):
        s = np.zeros(n, dtype=np.int64)
        for t in range(h):
            a = policy.act(s)
            r = ((s == 1) & (a == 1)).astype(np.float64)
            policy.update(s, a, r, a.copy(), np.zeros(n, bool), np.full(n, t == h - 1))
            returns[:, k] += r
            s = a.copy()
    return returns


def _collect(env_id, kwargs, n, episodes, scale, seed=0):
    train, _ = envs.task_distribution(env_id, **kwargs).split()
    tasks = train[np.arange(n) % len(train)]
    return collect_block(env_id, kwargs, "ucbvi", {"ucbvi_bonus_scale": scale}, tasks, np.arange(n),
                         np.zeros(n, np.int64), 0, np.random.SeedSequence(seed), episodes=episodes)


# ------------------------------------------------------------------------------- formulas by hand


def test_bonus_matches_the_formula_on_a_hand_case():
    # S = 2, A = 2, K = 5, H = 2: T = K H = 10, delta = 1/(K H) = 0.1, L = log(S A T / delta) = log(400)
    visits = np.array([0.0, 1.0, 4.0])
    b = ucbvi_bonus(visits, n_states=2, n_actions=2, episodes=5, horizon=2)
    # 2 H sqrt(L / max(1, N)): 4 sqrt(5.991465 / 1) = 9.790984, 4 sqrt(5.991465 / 4) = 4.895492
    np.testing.assert_allclose(b, [9.790984, 9.790984, 4.895492], rtol=1e-6)
    np.testing.assert_allclose(b, 4 * np.sqrt(math.log(400) / np.array([1, 1, 4])), rtol=1e-12)
    np.testing.assert_allclose(ucbvi_bonus(visits, 2, 2, 5, 2, scale=0.5), b / 2, rtol=1e-12)


def test_one_backup_on_a_hand_made_mdp():
    # 2 states, 2 actions, H = 2; the end state (index 2) has value 0.
    # (s0,a0): N=2, R=1 -> r=0.5, s0 twice; (s0,a1): N=1, R=0 -> r=0, s1 once;
    # (s1,a0): unvisited -> r = R_MAX = 1, self-loop; (s1,a1): N=4, R=4 -> r=1, s1 3x, end 1x.
    visits = np.array([[[2.0, 1.0], [0.0, 4.0]]])  # (1, S, A)
    rewards = np.array([[[1.0, 0.0], [0.0, 4.0]]])
    sa = np.array([0, 1, 3, 3])  # (s0,a0), (s0,a1), (s1,a1), (s1,a1)
    nxt = np.array([0, 1, 1, 2])
    cnt = np.array([2.0, 1.0, 3.0, 1.0])
    bonus = np.array([[[0.1, 0.2], [0.3, 0.05]]])
    q = dict(optimistic_q(visits, rewards, (sa, nxt, cnt), bonus, horizon=2))
    assert sorted(q) == [1, 2]
    # Q_2 = min(2, r + b): 0.6, 0.2, 1.3, 1.05; V_2 = (0.6, 1.3)
    np.testing.assert_allclose(q[2][0], [[0.6, 0.2], [1.3, 1.05]], rtol=1e-12)
    # Q_1 = min(2, r + P V_2 + b): (s0,a0) 0.5 + 0.6 + 0.1 = 1.2; (s0,a1) 0 + 1.3 + 0.2 = 1.5;
    # (s1,a0) 1 + 1.3 (self-loop) + 0.3 = 2.6 -> 2; (s1,a1) 1 + 0.75 * 1.3 + 0.25 * 0 + 0.05 = 2.025 -> 2
    np.testing.assert_allclose(q[1][0], [[1.2, 1.5], [2.0, 2.0]], rtol=1e-12)


def test_the_policy_counts_and_plans_the_same_backup():
    # The same data fed through update(): the plan's greedy sets are the argmax sets of the hand Q.
    pol = UCBVIPolicy(1, ChainDist(), np.random.default_rng(0))
    pol.set_tasks(np.zeros((1, 1)), episodes=5)
    f = np.zeros(1, bool)
    for s, a, r, s2, term in [(0, 0, 1.0, 0, False), (0, 0, 0.0, 0, False), (0, 1, 0.0, 1, False),
                              (1, 1, 1.0, 1, False), (1, 1, 1.0, 1, False), (1, 1, 1.0, 1, False),
                              (1, 1, 1.0, 1, True)]:
        pol.update(np.array([s]), np.array([a]), np.array([r]), np.array([s2]), np.array([term]), f)
    np.testing.assert_array_equal(pol.visits[0], [[2, 1], [0, 4]])
    sa, nxt, cnt = pol.transition_counts(np.array([0]))
    assert list(zip(sa, nxt, cnt)) == [(0, 0, 2.0), (1, 1, 1.0), (3, 1, 3.0), (3, 2, 1.0)]
    bonus = ucbvi_bonus(pol.visits, 2, 2, 5, ChainDist.horizon)
    pol.plan(np.array([0]))
    for h, q in optimistic_q(pol.visits, pol.reward_sums, (sa, nxt, cnt), bonus, ChainDist.horizon):
        np.testing.assert_array_equal(pol.greedy[0, h - 1], q[0] == q[0].max(axis=1, keepdims=True))


def test_state_index_of_discrete_and_multidiscrete_observations():
    np.testing.assert_array_equal(state_index(np.array([3, 4]), spaces.Discrete(3, start=2)), [1, 2])
    md = spaces.MultiDiscrete([9, 9, 2])
    obs = np.array([[0, 0, 0], [4, 4, 1], [8, 8, 1]])
    np.testing.assert_array_equal(state_index(obs, md), [0, (4 * 9 + 4) * 2 + 1, 161])


def test_tie_priorities_depend_only_on_the_key_and_the_counter():
    keys = np.array([1, 2, 3], dtype=np.uint64)
    u = tie_priorities(keys, np.array([0, 5, 9]), 4)
    assert u.shape == (3, 4) and (u >= 0).all() and (u < 1).all() and len(np.unique(u)) == 12
    np.testing.assert_array_equal(tie_priorities(keys[1:2], np.array([5]), 4), u[1:2])


# ------------------------------------------------------------------------------ behaviour


def test_learns_the_chain_optimum():
    pol = UCBVIPolicy(4, ChainDist(), np.random.default_rng(0), ucbvi_bonus_scale=0.01)
    returns = _chain_run(pol, episodes=20)
    np.testing.assert_array_equal(returns[:, -5:], ChainDist.horizon - 1)  # optimal: 0 + 1 + 1 + 1
    assert (pol.greedy[:, :, 1] == [False, True]).all()  # in state 1, action 1 alone at every step


def test_a_huge_bonus_explores_every_pair_instead_of_exploiting():
    pol = UCBVIPolicy(4, ChainDist(), np.random.default_rng(0), ucbvi_bonus_scale=1e6)
    returns = _chain_run(pol, episodes=10)
    assert (pol.visits > 0).all()  # every (s, a) of every run tried
    assert pol.greedy.all()  # every Q_h at the cap H: all actions tied, nothing exploited yet
    assert returns.mean() < ChainDist.horizon - 1


def test_batched_runs_act_as_one_run_at_a_time():
    for env_id, kwargs in ((DR, DR5), (KTD, KTD3)):
        train, _ = envs.task_distribution(env_id, **kwargs).split()
        tasks = train[:3]
        dist = envs.task_distribution(env_id, **kwargs)
        seq = np.random.SeedSequence(7)
        batched = make_policy("ucbvi", 3, dist, np.random.default_rng(1), ucbvi_bonus_scale=0.0)
        whole = run_policy(env_id, kwargs, batched, tasks, seq, episodes=8)
        acts = np.split(whole.steps["action"], np.cumsum(whole.lengths)[:-1])
        for i in range(3):
            one = make_policy("ucbvi", 1, dist, np.random.default_rng(99), ucbvi_bonus_scale=0.0)
            one.tie_key[:] = batched.tie_key[i]  # the run's own key: its tie-breaks
            alone = run_policy(env_id, kwargs, one, tasks[i:i + 1], seq, episodes=8)
            np.testing.assert_array_equal(alone.steps["action"], acts[i])


def test_dark_room_return_rises_through_the_runner():
    batch = _collect(DR, DR5, n=8, episodes=20, scale=0.0)
    ret = np.stack(batch.episode_returns)  # (8, 20)
    assert ret[:, -5:].mean() > ret[:, :5].mean() + 3
    batch.validate()


def test_key_to_door_return_rises_with_early_episode_ends():
    batch = _collect(KTD, KTD3, n=8, episodes=30, scale=0.0)
    ret = np.stack(batch.episode_returns)  # (8, 30)
    assert batch.steps["terminated"].any()  # doors opened: episodes ended before the horizon
    assert ret[:, -10:].mean() > ret[:, :10].mean()
    assert ret[:, -5:].mean() > 1.5  # key and door found on most runs


# ------------------------------------------------------------------------------ registry, config


def test_registered_with_its_config_parameter():
    assert POLICIES["ucbvi"] is UCBVIPolicy
    params = CollectConfig().algorithm_params()
    assert params["ucbvi_bonus_scale"] == 1.0
    pol = make_policy("ucbvi", 2, envs.task_distribution(DR), np.random.default_rng(0), **params)
    assert pol.scale == 1.0 and (pol.n_states, pol.n_actions, pol.horizon) == (81, 5, 20)
    with pytest.raises(ValueError, match="ucbvi_bonus_scale"):
        make_policy("ucbvi", 2, envs.task_distribution(DR), np.random.default_rng(0), ucbvi_bonus_scale=-1.0)


def test_refuses_box_observations_and_actions():
    with pytest.raises(ValueError, match="icrl/PointRobot-v0 has Box observations"):
        make_policy("ucbvi", 1, envs.task_distribution("icrl/PointRobot-v0"), np.random.default_rng(0))

    class BoxActions(ChainDist):
        env_id = "test/BoxActions"
        action_space = spaces.Box(-1.0, 1.0, (2,))

    with pytest.raises(ValueError, match="test/BoxActions has Box actions"):
        UCBVIPolicy(1, BoxActions(), np.random.default_rng(0))


def test_validate_env_refuses_ucbvi_on_the_point_robot_in_one_line():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["env.id=icrl/PointRobot-v0", "collect.algorithms=[ucbvi]"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("collect.algorithms.0: ucbvi does not fit icrl/PointRobot-v0")
    assert "Box observations" in msg
