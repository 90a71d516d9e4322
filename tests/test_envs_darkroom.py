"""Tests of the Dark Room family (envs/darkroom.py) and Dark Key-to-Door (envs/keytodoor.py).

Conformance (check_env on every id, native SAME_STEP vector env equal to gymnasium's SyncVectorEnv),
single vs vector trajectories, the oracle reaching ``max_return`` on every task, ``max_return``
against value iteration, the DICP and DPT splits (the 8 held-out Dark Room goals), episode ends,
task handling, analytic transitions and kwarg validation.
"""

from __future__ import annotations

import itertools
import random
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, VectorEnv

import icrl.envs
from icrl.envs import task_distribution
from icrl.envs.grid import GridTaskDistribution, split_order

DR, LARGE, HARD = "icrl/DarkRoom-v0", "icrl/DarkRoomLarge-v0", "icrl/DarkRoomHard-v0"
PERM, KTD = "icrl/DarkRoomPermuted-v0", "icrl/KeyToDoor-v0"
IDS = [DR, LARGE, HARD, PERM, KTD]
# The DPT paper's Dark Room (Lee et al. 2023) as a config of icrl/DarkRoom-v0.
DPT_DARKROOM = {"size": 10, "horizon": 100, "start": [0, 0], "split": "dpt"}


def make_vec(env_id: str, num_envs: int, **kwargs) -> VectorEnv:
    return gymnasium.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
    )


def all_tasks(dist: GridTaskDistribution) -> np.ndarray:
    return np.concatenate(dist.split())


def oracle_returns_vector(env_id: str, tasks: np.ndarray, **kwargs) -> np.ndarray:
    """Return of the first episode of the oracle in a vector env holding every task."""
    dist = task_distribution(env_id, **kwargs)
    venv = make_vec(env_id, len(tasks), **kwargs)
    obs, _ = venv.reset(seed=0, options={"task": tasks})
    returns, running = np.zeros(len(tasks)), np.ones(len(tasks), dtype=bool)
    while running.any():
        obs, rew, term, trunc, _ = venv.step(dist.oracle_action(tasks, obs))
        returns += np.where(running, rew, 0.0)
        running &= ~(term | trunc)
    return returns


def optimal_returns(dist: GridTaskDistribution, tasks: np.ndarray) -> np.ndarray:
    """The best return of one episode from the start, by finite-horizon value iteration."""
    nvec = dist.obs_nvec
    states = np.array(list(itertools.product(*map(range, nvec))), dtype=np.int64)  # (S, d)
    n_t, n_s, n_a = len(tasks), len(states), 5
    tk = np.repeat(tasks.astype(np.int64), n_s * n_a, axis=0)  # (T*S*A, task)
    ob = np.tile(np.repeat(states, n_a, axis=0), (n_t, 1))  # (T*S*A, d)
    ac = np.tile(np.arange(n_a), n_t * n_s)  # (T*S*A,)
    nxt, rew, term = dist.transition(tk, ob, ac)
    nxt_idx = np.ravel_multi_index(tuple(nxt.T), nvec).reshape(n_t, n_s, n_a)
    rew, cont = rew.reshape(n_t, n_s, n_a), ~term.reshape(n_t, n_s, n_a)
    value = np.zeros((n_t, n_s))
    rows = np.arange(n_t)[:, None, None]
    for _ in range(dist.horizon):
        value = (rew + cont * value[rows, nxt_idx]).max(axis=2)  # (T, S)
    start = np.ravel_multi_index(tuple(dist.start_obs(1)[0]), nvec)
    return value[:, start]


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
    others = [str(w.message) for w in caught]
    assert [m for m in others if "different from the unwrapped" not in m] == []


def test_check_env_on_the_dpt_paper_config() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(gymnasium.make(DR, **DPT_DARKROOM).unwrapped)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_gives_native_same_step_vector_env(env_id: str) -> None:
    venv = make_vec(env_id, 6)
    single = gymnasium.make(env_id)
    assert isinstance(venv, VectorEnv) and type(venv).__name__.endswith("VectorEnv")
    assert venv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP and venv.num_envs == 6
    assert venv.single_action_space == single.action_space == gymnasium.spaces.Discrete(5)
    assert venv.single_observation_space == single.observation_space
    assert isinstance(single.observation_space, gymnasium.spaces.MultiDiscrete)
    obs, info = venv.reset(seed=0)
    dim = 3 if env_id == KTD else 2
    assert obs.shape == (6, dim) and obs.dtype == np.int64 and info == {}
    assert obs in venv.observation_space
    obs, rew, term, trunc, infos = venv.step(venv.action_space.sample())
    assert obs in venv.observation_space and infos == {}
    assert rew.shape == (6,) and rew.dtype == np.float64
    assert term.dtype == np.bool_ and trunc.dtype == np.bool_
    assert venv.spec is not None and venv.spec.id == env_id
    assert gymnasium.spec(env_id).max_episode_steps is None


@pytest.mark.parametrize(("env_id", "task"), [(HARD, (9, 8)), (KTD, (5, 4, 4, 4)), (DR, (4, 3))])
def test_native_final_info_matches_sync_vector_env_in_same_step_mode(env_id, task) -> None:
    # Env 0 follows the oracle (terminates early in Hard / KeyToDoor); env 1 wanders; all truncate.
    sync = gymnasium.make_vec(
        env_id, num_envs=3, vectorization_mode="sync", horizon=6,
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
    )
    native = make_vec(env_id, 3, horizon=6)
    dist = task_distribution(env_id, horizon=6)
    tasks = np.stack([np.array(task, dtype=float)] * 3)
    s_obs, _ = sync.reset(seed=0, options={"task": task})  # sync passes the options to every env
    n_obs, _ = native.reset(seed=0, options={"task": tasks})
    for _ in range(13):
        acts = np.array([dist.oracle_action(tasks[:1], n_obs[:1])[0], 1, 4])
        s_obs, s_rew, s_term, s_trunc, s_inf = sync.step(acts)
        n_obs, n_rew, n_term, n_trunc, n_inf = native.step(acts)
        for s, n in ((s_obs, n_obs), (s_rew, n_rew), (s_term, n_term), (s_trunc, n_trunc)):
            np.testing.assert_array_equal(s, n)
        assert s_inf.keys() == n_inf.keys()
        if "final_obs" in s_inf:
            for key in ("_final_obs", "_final_info"):
                np.testing.assert_array_equal(s_inf[key], n_inf[key])
            assert s_inf["final_info"] == n_inf["final_info"] == {}
            for s, n in zip(s_inf["final_obs"], n_inf["final_obs"]):
                assert (s is None and n is None) or np.array_equal(s, n)


# --------------------------------------------------------------------------- single == vector


@pytest.mark.parametrize(("env_id", "kwargs"), [(i, {}) for i in IDS] + [(DR, DPT_DARKROOM)])
def test_single_and_vector_trajectories_are_identical(env_id: str, kwargs: dict) -> None:
    dist = task_distribution(env_id, **kwargs)
    train, test = dist.split()
    tasks = np.concatenate([train[:5], test[:3]])  # (8, *task_shape)
    n, steps = len(tasks), 3 * dist.horizon + 7
    venv = make_vec(env_id, n, **kwargs)
    obs, _ = venv.reset(seed=1, options={"task": tasks})
    rng = np.random.default_rng(0)
    actions, vec = [], {"obs": [], "rew": [], "term": [], "trunc": [], "final": []}
    for _ in range(steps):  # half oracle, half random: reaches goals, keys and doors
        act = np.where(rng.random(n) < 0.5, dist.oracle_action(tasks, obs), rng.integers(5, size=n))
        obs, rew, term, trunc, infos = venv.step(act)
        actions.append(act)
        for key, val in (("obs", obs), ("rew", rew), ("term", term), ("trunc", trunc)):
            vec[key].append(val)
        vec["final"].append(infos.get("final_obs", np.full(n, None, dtype=object)))
    assert np.any(vec["term"]) == (env_id in (HARD, KTD)) and np.any(vec["trunc"])
    env = gymnasium.make(env_id, **kwargs).unwrapped
    for i in range(n):
        env.reset(seed=1, options={"task": tasks[i]})
        for t in range(steps):
            o, r, te, tr, info = env.step(int(actions[t][i]))
            assert info == {} and r == vec["rew"][t][i]
            assert (te, tr) == (vec["term"][t][i], vec["trunc"][t][i])
            if te or tr:
                np.testing.assert_array_equal(o, vec["final"][t][i])
                o, _ = env.reset()  # what SAME_STEP autoreset does
            else:
                assert vec["final"][t][i] is None
            np.testing.assert_array_equal(o, vec["obs"][t][i])


# --------------------------------------------------------------------------- oracle and max_return


@pytest.mark.parametrize(("env_id", "kwargs"), [(i, {}) for i in IDS] + [(DR, DPT_DARKROOM)])
def test_oracle_reaches_max_return_on_every_task_single_and_vector(env_id, kwargs) -> None:
    dist = task_distribution(env_id, **kwargs)
    tasks = all_tasks(dist)
    expected = dist.max_return(tasks)
    np.testing.assert_array_equal(oracle_returns_vector(env_id, tasks, **kwargs), expected)
    env = gymnasium.make(env_id, **kwargs).unwrapped
    returns = []
    for task in tasks:
        obs, _ = env.reset(options={"task": task})
        total, done = 0.0, False
        while not done:
            obs, r, te, tr, _ = env.step(int(dist.oracle_action(task[None], obs[None])[0]))
            total, done = total + r, te or tr
        returns.append(total)
    np.testing.assert_array_equal(returns, expected)


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [(DR, {}), (DR, {"horizon": 5}), (LARGE, {}), (HARD, {}), (HARD, {"horizon": 6}),
     (PERM, {}), (PERM, {"horizon": 10}), (KTD, {}), (KTD, {"horizon": 9})],
)
def test_max_return_is_the_optimum_by_value_iteration(env_id: str, kwargs: dict) -> None:
    dist = task_distribution(env_id, **kwargs)
    tasks = all_tasks(dist)
    if env_id == KTD:  # 6,561 tasks: the test split plus a spread of train tasks
        tasks = np.concatenate([dist.split()[1], dist.split()[0][::25]])
    np.testing.assert_array_equal(dist.max_return(tasks), optimal_returns(dist, tasks))
    # the oracle is optimal at short horizons too (partial credit when the goal is far)
    np.testing.assert_array_equal(oracle_returns_vector(env_id, tasks, **kwargs),
                                  dist.max_return(tasks))


def test_max_return_formulas_on_hand_built_tasks() -> None:
    dr = task_distribution(DR)
    np.testing.assert_array_equal(dr.max_return(np.array([[4, 4], [4, 5], [0, 0], [8, 8]])),
                                  [20, 20, 13, 13])  # min(20, 21 - d)
    np.testing.assert_array_equal(task_distribution(DR, **DPT_DARKROOM).max_return(
        np.array([[0, 0], [9, 9], [3, 4]])), [100, 83, 94])
    np.testing.assert_array_equal(task_distribution(HARD).max_return(
        np.array([[8, 8], [0, 0], [16, 16]])), [1, 1, 1])
    np.testing.assert_array_equal(task_distribution(HARD, horizon=15).max_return(
        np.array([[8, 8], [0, 1], [0, 0]])), [1, 1, 0])  # d = 0, 15, 16
    np.testing.assert_array_equal(task_distribution(PERM).max_return(np.arange(5)[None]), [35])
    ktd = task_distribution(KTD, horizon=10)
    np.testing.assert_array_equal(ktd.max_return(np.array(
        [[4, 4, 4, 4], [0, 0, 8, 8], [4, 0, 4, 5], [4, 0, 4, 8]])), [2, 1, 2, 1])
    assert task_distribution(KTD, horizon=7).max_return(np.array([[0, 0, 4, 4]])).tolist() == [0]


# --------------------------------------------------------------------------- splits


def test_darkroom_held_out_goals_are_dicps() -> None:
    dist = task_distribution(DR)
    train, test = dist.split()
    expected = [(4, 2), (5, 6), (6, 8), (7, 2), (3, 6), (0, 5), (5, 8), (5, 4)]
    assert [tuple(int(v) for v in g) for g in test] == expected
    assert dist.max_return(test).mean() == 17.25
    assert train.shape == (73, 2) and test.shape == (8, 2) and train.dtype == np.float64


def test_dicp_split_is_the_literal_dicp_procedure_and_keeps_global_random() -> None:
    # DICP's sample_darkroom: x-major goals, random.seed(seed); random.shuffle; round(n * ratio).
    state = random.getstate()
    goals = [(x, y) for x in range(9) for y in range(9)]
    random.seed(0)
    random.shuffle(goals)
    random.setstate(state)
    train, test = task_distribution(DR).split()
    assert [tuple(map(int, g)) for g in train] == goals[:73]
    assert [tuple(map(int, g)) for g in test] == goals[73:]
    perms = list(range(120))
    random.seed(4)
    random.shuffle(perms)
    random.setstate(state)
    train, test = task_distribution(PERM).split()
    every = list(itertools.permutations(range(5)))
    assert [tuple(map(int, p)) for p in train] == [every[i] for i in perms[:108]]
    assert [tuple(map(int, p)) for p in test] == [every[i] for i in perms[108:]]
    draws = random.random()
    random.setstate(state)
    task_distribution(KTD).split()
    assert random.random() == draws  # the split never touches the global generator


def test_dpt_paper_split() -> None:
    # DPT's collect_data.py: goals (j, i) j-major, RandomState(0).shuffle, int(.8 * len).
    goals = np.array([[(j, i) for i in range(10)] for j in range(10)]).reshape(-1, 2)
    np.random.RandomState(seed=0).shuffle(goals)
    train, test = task_distribution(DR, **DPT_DARKROOM).split()
    np.testing.assert_array_equal(train, goals[:80])
    np.testing.assert_array_equal(test, goals[80:])


@pytest.mark.parametrize(
    ("env_id", "n_train", "n_test"),
    [(DR, 73, 8), (LARGE, 202, 23), (HARD, 260, 29), (PERM, 108, 12), (KTD, 6233, 328)],
)
def test_split_sizes_partition_and_determinism(env_id: str, n_train: int, n_test: int) -> None:
    dist = task_distribution(env_id)
    train, test = dist.split()
    assert (len(train), len(test)) == (n_train, n_test)
    if env_id == KTD:
        assert n_train == round(0.95 * 9**4)
    every = dist.all_tasks()
    both = np.concatenate([train, test])
    assert len(np.unique(both, axis=0)) == len(every) == len(both)  # disjoint, covers all
    again = task_distribution(env_id).split()
    assert train.tobytes() == again[0].tobytes() and test.tobytes() == again[1].tobytes()
    train[:] = -1  # split() returns copies
    assert dist.split()[0].min() >= 0
    other = task_distribution(env_id, split_seed=1).split()[1]
    assert not np.array_equal(other, test)


def test_split_order_and_train_fraction() -> None:
    assert split_order(225, "dicp", 0, 0.9)[1] == 202  # round(202.5) = 202, as DICP's round()
    assert split_order(100, "dpt", 0, 0.8)[1] == 80
    order, n_train = split_order(81, "dicp", 0, 0.5)
    assert n_train == 40 and sorted(order.tolist()) == list(range(81))
    assert len(task_distribution(DR, train_fraction=0.5).split()[1]) == 41
    assert len(task_distribution(DR, split="dpt").split()[0]) == int(0.8 * 81)


@pytest.mark.parametrize("env_id", IDS)
def test_sample_draws_from_the_train_split(env_id: str) -> None:
    dist = task_distribution(env_id)
    train, _ = dist.split()
    a = dist.sample(300, np.random.default_rng(42))
    assert a.shape == (300, *dist.task_shape) and a.dtype == np.float64
    assert a.tobytes() == dist.sample(300, np.random.default_rng(42)).tobytes()
    keys = {tuple(t) for t in train}
    assert all(tuple(t) in keys for t in a)
    assert dist.sample(0, np.random.default_rng(0)).shape == (0, *dist.task_shape)
    assert dist.env_id == env_id


# --------------------------------------------------------------------------- dynamics


def test_darkroom_moves_clip_and_reward_after_the_move() -> None:
    env = gymnasium.make(DR).unwrapped
    obs, _ = env.reset(options={"task": (5, 4)})
    assert obs.tolist() == [4, 4] and obs.dtype == np.int64
    trail = [env.step(a)[:2] for a in (0, 4, 1, 2, 3, 3)]
    assert [(o.tolist(), r) for o, r in trail] == [
        ([5, 4], 1.0), ([5, 4], 1.0), ([4, 4], 0.0), ([4, 5], 0.0), ([4, 4], 0.0), ([4, 3], 0.0)]
    env = gymnasium.make(DR, start=[0, 0]).unwrapped
    assert env.reset(options={"task": (0, 0)})[0].tolist() == [0, 0]
    assert [env.step(a)[:2] for a in (1, 3)][1][1] == 1.0  # clipped at the wall, on the goal
    assert env.step(2)[0].tolist() == [0, 1]
    oracle = task_distribution(DR).oracle_action(
        np.array([[6, 1], [2, 7], [4, 0], [4, 8], [4, 4]]), np.tile([4, 4], (5, 1)))
    assert oracle.dtype == np.int64 and oracle.tolist() == [0, 1, 3, 2, 4]


def test_permuted_actions_follow_the_permutation() -> None:
    perm = np.array([3, 0, 4, 1, 2])  # agent action a makes the move perm[a]
    env = gymnasium.make(PERM).unwrapped
    assert env.reset(options={"task": perm})[0].tolist() == [0, 0]
    assert env.step(1)[0].tolist() == [1, 0]  # move 0: x+1
    assert env.step(4)[0].tolist() == [1, 1]  # move 2: y+1
    assert env.step(2)[0].tolist() == [1, 1]  # move 4: stay
    assert env.step(3)[0].tolist() == [0, 1]  # move 1: x-1
    dist = task_distribution(PERM)
    assert dist.oracle_action(perm[None], np.array([[0, 0]])).tolist() == [1]
    assert dist.oracle_action(perm[None], np.array([[8, 0]])).tolist() == [4]
    assert dist.oracle_action(perm[None], np.array([[8, 8]])).tolist() == [2]
    assert dist.all_tasks().shape == (120, 5)


def test_key_to_door_rewards_pickup_and_termination() -> None:
    env = gymnasium.make(KTD).unwrapped
    obs, _ = env.reset(options={"task": (5, 4, 4, 4)})  # door on the start cell
    assert obs.tolist() == [4, 4, 0]
    steps = [env.step(a) for a in (4, 1, 0)]
    assert [(s[0].tolist(), s[1], s[2]) for s in steps] == [
        ([4, 4, 0], 0.0, False), ([3, 4, 0], 0.0, False), ([4, 4, 0], 0.0, False)]  # no key yet
    obs, r, term, trunc, _ = env.step(0)
    assert (obs.tolist(), r, term, trunc) == ([5, 4, 1], 1.0, False, False)  # picked up
    assert env.step(4)[1:3] == (0.0, False)  # the key pays once
    obs, r, term, trunc, _ = env.step(1)
    assert (obs.tolist(), r, term, trunc) == ([4, 4, 1], 1.0, True, False)  # door opened
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(options={"task": (4, 4, 4, 4)})  # key and door on the start: stay, stay
    assert [env.step(4)[1:3] for _ in range(2)] == [(1.0, False), (1.0, True)]
    dist = task_distribution(KTD)
    tasks, obs = np.array([[0, 4, 8, 8]] * 2), np.array([[4, 4, 0], [4, 4, 1]])
    assert dist.oracle_action(tasks, obs).tolist() == [1, 0]


# --------------------------------------------------------------------------- episodes and tasks


def far_task(env_id: str) -> np.ndarray:
    """A task whose reward no 7 steps of stay / x+1 / y+1 from the start can reach."""
    return np.array({KTD: (0, 0, 8, 8), PERM: (0, 1, 2, 3, 4)}.get(env_id, (0, 0)), dtype=float)


@pytest.mark.parametrize("env_id", IDS)
def test_single_env_truncates_exactly_at_horizon(env_id: str) -> None:
    env = gymnasium.make(env_id, horizon=7)
    for _ in range(2):
        env.reset(seed=0, options={"task": far_task(env_id)})
        flags = [env.step(4)[2:4] for _ in range(7)]
        assert flags == [(False, False)] * 6 + [(False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(0)


@pytest.mark.parametrize(("env_id", "task", "n_steps"), [(HARD, (8, 5), 3), (KTD, (4, 6, 2, 6), 4)])
def test_terminal_families_end_on_success_single_and_vector(env_id, task, n_steps) -> None:
    dist = task_distribution(env_id)
    env = gymnasium.make(env_id).unwrapped
    obs, _ = env.reset(options={"task": task})
    for t in range(1, n_steps + 1):
        obs, r, term, trunc, _ = env.step(int(dist.oracle_action(np.array([task]), obs[None])[0]))
        assert term == (t == n_steps) and not trunc
    assert r == 1.0
    venv = make_vec(env_id, 2)
    tasks = np.array([task, task], dtype=float)
    obs, _ = venv.reset(options={"task": tasks})
    for t in range(1, n_steps + 1):
        obs, r, term, trunc, infos = venv.step(dist.oracle_action(tasks, obs))
        assert term.all() == (t == n_steps) and not trunc.any()
    np.testing.assert_array_equal(obs, dist.start_obs(2))  # autoreset in the same step
    assert infos["_final_obs"].all() and r.tolist() == [1.0, 1.0]
    np.testing.assert_array_equal(venv.unwrapped.tasks, tasks)
    # Success on the last step of the horizon: both flags, as gymnasium's TimeLimit reports them.
    env = gymnasium.make(env_id, horizon=n_steps).unwrapped
    obs, _ = env.reset(options={"task": task})
    for _ in range(n_steps):
        obs, r, term, trunc, _ = env.step(int(dist.oracle_action(np.array([task]), obs[None])[0]))
    assert (r, term, trunc) == (1.0, True, True)


@pytest.mark.parametrize("env_id", IDS)
def test_vector_env_truncates_at_horizon_and_keeps_tasks(env_id: str) -> None:
    venv = make_vec(env_id, 3, horizon=5)
    tasks = np.stack([far_task(env_id)] * 3)
    start, _ = venv.reset(seed=0, options={"task": tasks})
    for _ in range(3):
        for t in range(1, 6):
            obs, rew, term, trunc, infos = venv.step(np.array([4, 0, 2]))
            assert not term.any() and not rew.any()
            assert trunc.all() == (t == 5) and trunc.any() == (t == 5)
            assert ("final_obs" in infos) == (t == 5)
        np.testing.assert_array_equal(obs, start)  # already the reset obs
        assert infos["_final_obs"].all() and infos["_final_info"].all()
        assert [o.shape for o in infos["final_obs"]] == [start[0].shape] * 3
        np.testing.assert_array_equal(venv.unwrapped.tasks, tasks)  # kept across autoreset


@pytest.mark.parametrize("env_id", IDS)
def test_task_kept_across_reset_switched_by_option_and_drawn_from_seed(env_id: str) -> None:
    dist = task_distribution(env_id)
    t1, t2 = dist.split()[1][:2]
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

    fresh = gymnasium.make(env_id).unwrapped
    fresh.reset(seed=1)
    first = fresh.task
    fresh.reset()
    np.testing.assert_array_equal(fresh.task, first)
    fresh.reset(seed=1)
    np.testing.assert_array_equal(fresh.task, first)
    np.testing.assert_array_equal(first, dist.sample(1, np.random.default_rng(1))[0])


def test_bad_tasks_actions_and_obs_raise() -> None:
    env = gymnasium.make(DR).unwrapped
    with pytest.raises(ValueError, match="task: expected shape"):
        env.reset(options={"task": (1, 2, 3)})
    for bad in ((9, 0), (1.5, 2), (-1, 0)):
        with pytest.raises(ValueError, match="tasks:"):
            env.reset(options={"task": bad})
    with pytest.raises(ValueError, match="tasks: every task must be a permutation"):
        gymnasium.make(PERM).unwrapped.reset(options={"task": (0, 0, 1, 2, 3)})
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action:"):
        env.step(5)
    venv = make_vec(KTD, 3)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="tasks: expected one task per env"):
        venv.reset(options={"task": np.zeros((2, 4))})
    venv.reset(seed=0)
    for bad in (np.arange(2), np.zeros(3), np.array([0, 5, 1]), np.array([-1, 0, 1])):
        with pytest.raises(ValueError, match="actions:"):
            venv.step(bad)
    with pytest.raises(ValueError, match="obs: expected shape"):
        task_distribution(KTD).oracle_action(np.zeros((2, 4)), np.zeros((2, 2)))


# --------------------------------------------------------------------------- kwargs and registry

BAD_KWARGS = [
    (DR, {"size": 1}, "size"),
    (DR, {"size": 9.0}, "size"),
    (DR, {"horizon": 0}, "horizon"),
    (DR, {"horizon": True}, "horizon"),
    (DR, {"start": [9, 0]}, "start"),
    (DR, {"start": [1]}, "start"),
    (DR, {"start": "centre"}, "start"),
    (DR, {"start": [1.0, 2.0]}, "start"),
    (DR, {"split": "random"}, "split"),
    (DR, {"split_seed": -1}, "split_seed"),
    (DR, {"train_fraction": 1.0}, "train_fraction"),
    (DR, {"train_fraction": 0.001}, "train_fraction"),
    (LARGE, {"train_fraction": "0.9"}, "train_fraction"),
    (HARD, {"size": 0}, "size"),
    (PERM, {"horizon": -5}, "horizon"),
    (PERM, {"split_seed": 1.5}, "split_seed"),
    (KTD, {"train_fraction": 0.0}, "train_fraction"),
    (KTD, {"size": "9"}, "size"),
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


def test_kwargs_are_yaml_friendly_and_unknown_ones_are_named() -> None:
    for start in ([0, 0], (0, 0), np.array([0, 0])):
        assert task_distribution(DR, start=start).start == (0, 0)
    assert task_distribution(DR, size=10).start == (5, 5)
    with pytest.raises(ValueError, match="^start: not a kwarg"):
        task_distribution(PERM, start=[0, 0])
    with pytest.raises(ValueError, match="^num_envs: "):
        make_vec(DR, 0)


def test_registry_lists_the_grid_families() -> None:
    assert set(IDS) <= set(icrl.envs.family_ids())
    for env_id in IDS:
        spec = gymnasium.spec(env_id)
        assert isinstance(spec.entry_point, str) and isinstance(spec.vector_entry_point, str)
        assert isinstance(task_distribution(env_id), GridTaskDistribution)
