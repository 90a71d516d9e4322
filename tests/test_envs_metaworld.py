"""Tests of the MuJoCo families: Meta-World ML1 (envs/metaworld.py) and Half-Cheetah-Vel
(envs/half_cheetah_vel.py), on the loop vector env of envs/sims.py.

Conformance (check_env on every id, the space contract in plain JSON), the benchmark's own
50 / 50 ML1 split and the 40 / 10 cheetah split, the goal hidden from the agent while the oracle
(Meta-World's scripted expert) sees it and succeeds, success reported per step and per episode
through icrl's runner, the vector env equal to single envs across episode ends, seeded
determinism, Half-Cheetah-Vel's reward on a hand-computed step, task validation, and the one-line
error without the ``mujoco`` extra. These need the extra (CI installs it): without it they fail
at the import below rather than skip.
"""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from pathlib import Path

import gymnasium
import metaworld  # noqa: F401  (the mujoco extra: fail, not skip, where it is missing)
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import icrl.envs
from icrl.collectors import run_policy
from icrl.cli import main
from icrl.collectors.mdp import NoiseDistillPolicy
from icrl.envs import task_distribution
from icrl.envs.metaworld import _task_data
from icrl.evaluation import episode_success
from icrl.policies import OraclePolicy
from icrl.spaces import EnvSpec

REACH, PUSH, PICK = "icrl/MetaWorld-Reach-v3", "icrl/MetaWorld-Push-v3", "icrl/MetaWorld-PickPlace-v3"
CHEETAH = "icrl/HalfCheetahVel-v0"
MW = [REACH, PUSH, PICK]
IDS = [*MW, CHEETAH]
BENCHMARK = {REACH: "reach-v3", PUSH: "push-v3", PICK: "pick-place-v3"}


def make_vec(env_id: str, num_envs: int, **kwargs):
    return gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_and_space_contract(env_id: str) -> None:
    env = gymnasium.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    # Meta-World's goal dims are 0 <= x <= 0 on purpose (hidden); gymnasium warns about that only.
    allowed = ["maximum and minimum values are equal"] if env_id in MW else []
    assert [str(w.message) for w in caught if not any(a in str(w.message) for a in allowed)] == []
    dist = task_distribution(env_id)
    spec = EnvSpec.of(dist)
    assert env.observation_space == dist.observation_space and env.action_space == dist.action_space
    assert gymnasium.spec(env_id).max_episode_steps is None and env_id in icrl.envs.family_ids()
    json.dumps(spec.to_dict(), allow_nan=False)  # finite bounds: the manifest stays plain JSON
    if env_id in MW:
        assert dist.observation_space.shape == (39,) and dist.observation_space.dtype == np.float32
        assert dist.action_space == gymnasium.spaces.Box(-1, 1, (4,), np.float32)
        assert dist.horizon == 100 and dist.task_shape == (6,) and spec.has_oracle and spec.has_max_return
        assert spec.baselines == ("random", "oracle")
    else:
        assert dist.observation_space.shape == (17,) and dist.action_space == gymnasium.spaces.Box(-1, 1, (6,), np.float32)
        assert dist.horizon == 200 and dist.task_shape == (1,)
        assert not spec.has_oracle and not spec.has_max_return and spec.baselines == ("random",)


@pytest.mark.parametrize("env_id", MW)
def test_ml1_split_is_the_benchmarks_own(env_id: str) -> None:
    dist = task_distribution(env_id)
    train, test = dist.split()
    assert train.shape == test.shape == (50, 6)
    assert len(np.unique(np.concatenate([train, test]), axis=0)) == 100  # no test task is a train task
    ml1 = metaworld.ML1(BENCHMARK[env_id], seed=0)
    for ours, theirs in ((train, ml1.train_tasks), (test, ml1.test_tasks)):
        for task, t in zip(ours, theirs):
            want, got = pickle.loads(t.data), pickle.loads(_task_data(BENCHMARK[env_id], task).data)
            np.testing.assert_array_equal(got.pop("rand_vec"), want.pop("rand_vec"))
            assert got == want  # same env class, observability (hidden goal) and kwargs
    assert np.all(np.isin(dist.sample(20, np.random.default_rng(0)), train).all(axis=1))


def test_half_cheetah_vel_split() -> None:
    dist = task_distribution(CHEETAH)
    train, test = dist.split()
    assert train.shape == (40, 1) and test.shape == (10, 1)
    both = np.concatenate([train, test])
    assert np.all((both >= 0) & (both <= 3)) and len(np.unique(both)) == 50
    np.testing.assert_array_equal(task_distribution(CHEETAH).split()[0], train)  # a fixed draw
    assert not np.array_equal(task_distribution(CHEETAH, split_seed=1).split()[0], train)


# --------------------------------------------------------------------------- the hidden goal and the oracle


def test_goal_is_hidden_from_the_agent_but_not_from_the_oracle() -> None:
    dist = task_distribution(REACH)
    a = dist.split()[0][0]
    b = a.copy()
    b[3:] = dist.split()[0][1][3:]  # same object, another goal
    if np.linalg.norm(b[:2] - b[3:5]) < 0.15:
        b[3:] = dist.split()[0][2][3:]
    assert not np.allclose(a[3:], b[3:])
    venv = make_vec(REACH, 2)
    obs, _ = venv.reset(seed=0, options={"task": np.stack([a, b])})
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 2, 4)).astype(np.float32)
    for act in actions:
        np.testing.assert_array_equal(obs[0], obs[1])  # the agent cannot tell the goals apart
        assert np.all(obs[:, 36:] == 0)
        obs, *_ = venv.step(np.stack([act[0], act[0]]))
    oracle = dist.oracle_action(np.stack([a, b]), obs)  # (2, 4): it moves toward each goal
    assert not np.allclose(oracle[0], oracle[1])
    np.testing.assert_array_equal(obs[0], obs[1])


@pytest.mark.parametrize("env_id", MW)
def test_scripted_expert_succeeds_and_success_is_reported(env_id: str) -> None:
    # The evaluation's own path: icrl's runner, the oracle baseline, success rate per episode.
    dist = task_distribution(env_id)
    tasks = dist.split()[0][:3]
    seq = np.random.SeedSequence(0)
    batch = run_policy(env_id, {}, OraclePolicy(3, dist, np.random.default_rng(0), tasks), tasks, seq)
    rate = episode_success(batch, 3)  # (3, 1)
    assert rate.mean() >= 0.9, rate
    assert batch.steps["obs"].shape == (300, 39) and batch.steps["success"].dtype == np.bool_
    returns = np.array([r[0] for r in batch.episode_returns])
    np.testing.assert_allclose(dist.max_return(tasks), returns)  # R_max is the expert's return


def test_noise_distillation_collects_on_reach() -> None:
    dist = task_distribution(REACH, horizon=10)
    tasks = dist.split()[0][:2]
    policy = NoiseDistillPolicy(2, dist, np.random.default_rng(0))
    batch = run_policy(REACH, {"horizon": 10}, policy, tasks, np.random.SeedSequence(1), episodes=2)
    assert batch.lengths.tolist() == [20, 20]
    assert np.all(batch.steps["obs"][:, 36:] == 0) and batch.steps["oracle_action"].shape == (40, 4)
    assert batch.steps["truncated"].sum() == 4


# --------------------------------------------------------------------------- vector env = single envs


@pytest.mark.parametrize("env_id", [REACH, CHEETAH])
def test_vector_env_matches_single_envs(env_id: str) -> None:
    H = 3
    dist = task_distribution(env_id, horizon=H)
    tasks = dist.split()[1][:2]
    venv = make_vec(env_id, 2, horizon=H)
    singles = [gymnasium.make(env_id, horizon=H) for _ in tasks]
    vobs, _ = venv.reset(seed=7, options={"task": tasks})
    for i, (env, task) in enumerate(zip(singles, tasks)):
        obs, _ = env.reset(seed=7 + i, options={"task": task})  # SyncVectorEnv's seeds
        np.testing.assert_array_equal(obs, vobs[i])
    actions = np.random.default_rng(0).uniform(-1, 1, (7, 2, *dist.action_space.shape)).astype(np.float32)
    for t, act in enumerate(actions, start=1):
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(act)
        assert vtrunc.tolist() == [t % H == 0] * 2 and not vterm.any()
        for i, env in enumerate(singles):
            obs, rew, term, trunc, info = env.step(act[i])
            assert (rew, term, trunc) == (vrew[i], vterm[i], vtrunc[i])
            if env_id in MW:
                assert info["success"] == vinfo["success"][i]
            if trunc:
                np.testing.assert_array_equal(obs, vinfo["final_obs"][i])
                obs, _ = env.reset()  # the vector env has already reset this one
            np.testing.assert_array_equal(obs, vobs[i])


def test_seeded_resets_are_deterministic() -> None:
    tasks = task_distribution(CHEETAH).split()[1][:2]
    runs = []
    for _ in range(2):
        venv = make_vec(CHEETAH, 2, horizon=5)
        obs, _ = venv.reset(seed=3, options={"task": tasks})
        trace = [obs]
        for act in np.full((6, 2, 6), 0.3, np.float32):
            trace.append(venv.step(act)[0])
        runs.append(np.stack(trace))
    np.testing.assert_array_equal(runs[0], runs[1])
    other = make_vec(CHEETAH, 2, horizon=5).reset(seed=4, options={"task": tasks})[0]
    assert not np.array_equal(other, runs[0][0])  # the start noise comes from the seed


# --------------------------------------------------------------------------- Half-Cheetah-Vel's reward


def test_half_cheetah_vel_reward_on_a_hand_computed_step() -> None:
    env = gymnasium.make(CHEETAH).unwrapped
    goal = 1.5
    env.reset(seed=0, options={"task": np.array([goal])})
    sim = env._sim
    assert sim.dt == pytest.approx(0.05)  # frame_skip 5 x timestep 0.01
    action = np.array([0.5, -1.0, 0.25, 0.0, 1.0, -0.5], np.float32)
    x_before = float(sim.data.qpos[0])
    _, reward, *_ = env.step(action)
    velocity = (float(sim.data.qpos[0]) - x_before) / 0.05
    ctrl = 0.5 * 1e-1 * float(np.sum(action.astype(np.float64) ** 2))  # 0.05 * 2.5625
    assert reward == pytest.approx(-abs(velocity - goal) - ctrl, abs=1e-9)
    assert ctrl == pytest.approx(0.128125)


# --------------------------------------------------------------------------- validation and the extra


def test_tasks_meta_world_cannot_reset_are_refused() -> None:
    dist = task_distribution(REACH)
    task = dist.split()[0][0].copy()
    close = task.copy()
    close[[1, 3, 4]] = 0.7, close[0], 0.8  # in the reset space, but object and goal 0.1 apart:
    # closer than the 0.15 Meta-World's reset redraws until, which with a fixed task never ends
    with pytest.raises(ValueError, match="0.15"):
        dist.check_tasks(close[None])
    outside = task.copy()
    outside[5] = 5.0
    with pytest.raises(ValueError, match="reset space"):
        gymnasium.make(REACH).reset(options={"task": outside})
    with pytest.raises(ValueError, match="horizon"):
        task_distribution(REACH, horizon=0)


@pytest.mark.parametrize(("env_id", "module"), [(REACH, "metaworld"), (PICK, "metaworld"), (CHEETAH, "mujoco")])
def test_missing_extra_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture,
                                           env_id: str, module: str) -> None:
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # what an install without the extra sees
    monkeypatch.setitem(sys.modules, module, None)
    for make in (lambda: gymnasium.make(env_id), lambda: make_vec(env_id, 2), lambda: task_distribution(env_id)):
        with pytest.raises(ModuleNotFoundError) as err:
            make()
        message = str(err.value)
        assert "\n" not in message and env_id in message and 'pip install -e ".[mujoco]"' in message
    assert main(["collect", "--quiet", "--out", str(tmp_path / "data"), f"env.id={env_id}"]) == 2  # one line, no traceback
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and 'pip install -e ".[mujoco]"' in err
