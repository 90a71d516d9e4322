"""Tests of the MDP source algorithms: random, noise distillation (AD^eps) and batched PPO."""
from __future__ import annotations

import inspect

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

from icrl import envs
from icrl.collectors import POLICIES, collect_block, make_policy, run_policy
from icrl.collectors.bandit import RandomPolicy as BanditRandomPolicy
from icrl.collectors.mdp import NoiseDistillPolicy, UniformRandomPolicy, noise_eps
from icrl.collectors.ppo import (
    ObsEncoder,
    PPOPolicy,
    clip_grad_norm_per_learner_,
    clipped_surrogate,
    gae,
    stacked_orthogonal,
)
from icrl.config import CollectConfig
from icrl.spaces import SpaceError

DR = "icrl/DarkRoom-v0"
GAUSS = "icrl/GaussianBandit-v0"


def _dist(env_id: str = DR, **kwargs):
    return envs.task_distribution(env_id, **kwargs)


# ------------------------------------------------------------------------------------- PPO math


def test_gae_hand_computed_with_termination_and_truncation():
    # column 0: step 0 runs on, step 1 is truncated (bootstrap V(final obs) = 3, but A does not flow
    # back over the boundary), step 2 terminates (no bootstrap). Column 1: no episode ends.
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    values = torch.tensor([[0.5, 1.0], [1.0, 2.0], [2.0, 3.0]])
    next_values = torch.tensor([[1.0, 2.0], [3.0, 3.0], [4.0, 5.0]])
    terminated = torch.tensor([[False, False], [False, False], [True, False]])
    truncated = torch.tensor([[False, False], [True, False], [False, False]])
    adv, ret = gae(rewards, values, next_values, terminated, truncated, gamma=0.9, lam=0.8)
    # column 0: deltas 1 + .9*1 - .5 = 1.4, 0 + .9*3 - 1 = 1.7, 2 - 2 = 0
    #   A2 = 0, A1 = 1.7 (done: no flow from A2), A0 = 1.4 + .72 * 1.7 = 2.624
    # column 1: deltas .8, 1.7, 1.5; A2 = 1.5, A1 = 1.7 + .72*1.5 = 2.78, A0 = .8 + .72*2.78 = 2.8016
    expected = torch.tensor([[2.624, 2.8016], [1.7, 2.78], [0.0, 1.5]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


def test_gae_lambda_one_is_discounted_return_minus_value():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.3], [0.2], [0.1]])
    next_values = torch.tensor([[0.2], [0.1], [9.0]])  # 9.0: ignored, the last step terminates
    no = torch.zeros(3, 1, dtype=torch.bool)
    term = torch.tensor([[False], [False], [True]])
    adv, ret = gae(rewards, values, next_values, term, no, gamma=0.5, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[1 + 0.5 * 2 + 0.25 * 3], [2 + 0.5 * 3], [3.0]]))


def test_clipped_surrogate_hand_batch():
    ratio = torch.tensor([1.5, 0.5, 0.5, 1.5])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    logp_old = torch.log(torch.full((4,), 0.4))
    logp_new = (logp_old + torch.log(ratio)).requires_grad_()
    obj = clipped_surrogate(logp_new, logp_old, adv, clip=0.2)
    # r A vs clip(r, .8, 1.2) A: min(1.5, 1.2) = 1.2; min(.5, .8) = .5; min(-.5, -.8) = -.8; min(-1.5, -1.2) = -1.5
    torch.testing.assert_close(obj, torch.tensor([1.2, 0.5, -0.8, -1.5]))
    obj.sum().backward()
    # clipped entries carry no gradient; the others d(r A)/d logp = r A
    torch.testing.assert_close(logp_new.grad, torch.tensor([0.0, 0.5, 0.0, -1.5]))


def test_per_learner_gradient_clipping():
    w = torch.zeros(2, 3, requires_grad=True)  # learner on dim 0
    b = torch.zeros(2, 1, requires_grad=True)
    w.grad = torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.0, 0.0]])
    b.grad = torch.tensor([[12.0], [0.4]])
    norms = clip_grad_norm_per_learner_([w, b], max_norm=1.0)
    torch.testing.assert_close(norms, torch.tensor([13.0, 0.5]))
    # learner 0 (norm 13 over both tensors) is scaled to norm ~1; learner 1 (0.5 < 1) is untouched
    torch.testing.assert_close(w.grad[0], torch.tensor([3.0, 4.0, 0.0]) / (13.0 + 1e-6))
    torch.testing.assert_close(b.grad[0], torch.tensor([12.0]) / (13.0 + 1e-6))
    torch.testing.assert_close(w.grad[1], torch.tensor([0.3, 0.0, 0.0]))
    torch.testing.assert_close(b.grad[1], torch.tensor([0.4]))


def test_stacked_orthogonal_is_orthogonal_per_learner():
    g = torch.Generator().manual_seed(0)
    for fan_in, fan_out in ((18, 32), (32, 5)):
        w = stacked_orthogonal(4, fan_in, fan_out, 2.0, g)  # (4, in, out)
        assert w.shape == (4, fan_in, fan_out)
        small = min(fan_in, fan_out)
        gram = w.transpose(1, 2) @ w if fan_in >= fan_out else w @ w.transpose(1, 2)  # (4, small, small)
        torch.testing.assert_close(gram, 4.0 * torch.eye(small).expand(4, -1, -1), atol=1e-5, rtol=1e-5)
        assert not torch.equal(w[0], w[1])


def test_obs_encoder_one_hot_and_box():
    enc = ObsEncoder(spaces.MultiDiscrete([3, 2]))
    torch.testing.assert_close(enc(np.array([[0, 1], [2, 0]])),
                               torch.tensor([[1.0, 0, 0, 0, 1], [0, 0, 1, 1, 0]]))
    enc = ObsEncoder(spaces.Discrete(3, start=1))
    torch.testing.assert_close(enc(np.array([1, 3])), torch.tensor([[1.0, 0, 0], [0, 0, 1]]))
    enc = ObsEncoder(spaces.Box(-1, 1, (2, 2)))
    assert enc(np.zeros((5, 2, 2))).shape == (5, 4)


# -------------------------------------------------------------------------------- PPO learners


def _rollout(t: int, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    trunc = np.zeros((t, n), dtype=bool)
    trunc[t // 2] = True
    return {"obs": rng.integers(0, 9, (t, n, 2)), "next_obs": rng.integers(0, 9, (t, n, 2)),
            "actions": rng.integers(0, 5, (t, n)), "rewards": rng.random((t, n)),
            "terminated": np.zeros((t, n), dtype=bool), "truncated": trunc}


def test_stacked_learners_are_independent():
    dist = _dist()
    a = make_policy("ppo", 3, dist, np.random.default_rng(0), ppo_rollout=8, ppo_epochs=2, ppo_minibatches=2)
    b = make_policy("ppo", 3, dist, np.random.default_rng(0), ppo_rollout=8, ppo_epochs=2, ppo_minibatches=2)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    ra, rb = _rollout(8, 3, 1), _rollout(8, 3, 1)
    other = _rollout(8, 3, 2)
    for key in ra:  # learner 0 sees entirely different data in b
        rb[key][:, 0] = other[key][:, 0]
    a.train(ra)
    b.train(rb)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):  # (L, ...) stacked
        assert not torch.equal(pa[0], pb[0])
        assert torch.equal(pa[1:], pb[1:])


def test_ppo_shared_mode_is_one_learner():
    pol = make_policy("ppo", 6, _dist(), np.random.default_rng(0), ppo_shared=True, ppo_rollout=4, ppo_minibatches=3)
    assert pol.n_learners == 1 and all(p.shape[0] == 1 for p in pol.model.parameters())
    stats = pol.train(_rollout(4, 6, 0))
    assert stats["policy_loss"].shape == (1,) and pol.n_updates == 1
    assert pol.act(np.full((6, 2), 4)).shape == (6,)


def test_ppo_updates_every_rollout_and_acts_in_range():
    pol = make_policy("ppo", 4, _dist(), np.random.default_rng(0), ppo_rollout=5)
    obs = np.full((4, 2), 4)
    for step in range(12):
        a = pol.act(obs)
        assert a.dtype == np.int64 and a.shape == (4,) and a.min() >= 0 and a.max() < 5
        pol.update(obs, a, np.zeros(4), obs, np.zeros(4, bool), np.zeros(4, bool))
    assert pol.n_updates == 2


class _CartPoleTasks(envs.TaskDistribution):
    """CartPole-v1 declared as a (one-task) family: Box observations, Discrete actions."""

    observation_space = gymnasium.make("CartPole-v1").observation_space
    action_space = spaces.Discrete(2)
    horizon = 500

    def sample(self, n, rng):
        return np.zeros((n, 0))


def test_ppo_on_box_observations_with_discrete_actions():
    env = gymnasium.make_vec("CartPole-v1", num_envs=4, vectorization_mode="vector_entry_point")
    pol = PPOPolicy(4, _CartPoleTasks(), np.random.default_rng(0), ppo_rollout=8)
    obs, _ = env.reset(seed=0)
    for _ in range(16):
        a = pol.act(obs)
        nxt, r, term, trunc, _ = env.step(a)
        pol.update(obs, a, r, nxt, term, trunc)
        obs = nxt
    env.close()
    assert pol.n_updates == 2 and pol.encoder.size == 4 and pol.n_actions == 2
    assert pol.obs_rms is not None and pol.obs_rms.count == pytest.approx(2 * 8 + 1e-4)  # Box obs: normalised
    assert make_policy("ppo", 2, _dist(), np.random.default_rng(0)).obs_rms is None  # one-hot: not normalised


def test_ppo_same_seed_same_histories():
    tasks = _dist().sample(4, np.random.default_rng(0))
    kw = dict(task_index=np.arange(4), run_index=np.zeros(4, np.int64), source_index=0, episodes=6)
    a = collect_block(DR, {}, "ppo", {"ppo_rollout": 20}, tasks, seed_seq=np.random.SeedSequence(3), **kw)
    b = collect_block(DR, {}, "ppo", {"ppo_rollout": 20}, tasks, seed_seq=np.random.SeedSequence(3), **kw)
    assert np.array_equal(a.steps["action"], b.steps["action"])
    c = collect_block(DR, {}, "ppo", {"ppo_rollout": 20}, tasks, seed_seq=np.random.SeedSequence(4), **kw)
    assert not np.array_equal(a.steps["action"], c.steps["action"])


def test_ppo_bad_params_name_the_parameter():
    dist = _dist()
    for bad, name in (({"ppo_rollout": 0}, "ppo_rollout"), ({"ppo_gamma": 1.5}, "ppo_gamma"),
                      ({"ppo_lr": -1.0}, "ppo_lr"), ({"ppo_rollout": 4, "ppo_minibatches": 5}, "ppo_minibatches"),
                      ({"ppo_shared": "yes"}, "ppo_shared")):
        with pytest.raises(ValueError, match=name):
            make_policy("ppo", 2, dist, np.random.default_rng(0), **bad)


def test_config_defaults_match_the_constructors():
    cfg = CollectConfig()
    params = cfg.algorithm_params()
    sig = inspect.signature(PPOPolicy)
    ppo = {n: p.default for n, p in sig.parameters.items() if n.startswith("ppo_")}
    assert ppo == {k: v for k, v in params.items() if k.startswith("ppo_")}
    for name in ("random", "noise_distill", "ppo"):  # every policy takes the pipeline's shared params
        make_policy(name, 2, _dist(), np.random.default_rng(0), **params)


def test_ppo_leaves_the_torch_thread_setting_alone():
    before = torch.get_num_threads()
    pol = make_policy("ppo", 2, _dist(), np.random.default_rng(0), ppo_rollout=2, ppo_minibatches=1)
    pol.act(np.full((2, 2), 4))
    pol.train(_rollout(2, 2, 0))
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------ random, noise_distill


def test_policies_read_the_spec_of_every_family():
    for env_id in envs.family_ids():
        dist = _dist(env_id)
        n_actions = dist.action_space.n if isinstance(dist.action_space, spaces.Discrete) else None
        pol = make_policy("random", 3, dist, np.random.default_rng(0))
        a = pol.act(None)
        if n_actions is not None:
            assert a.dtype == np.int64 and a.shape == (3,) and a.max() < n_actions
        else:
            assert a.shape == (3, *dist.action_space.shape) and dist.action_space.contains(a[0])
        if n_actions is not None:
            assert make_policy("ppo", 3, dist, np.random.default_rng(0)).n_actions == n_actions
    assert make_policy("random", 1, _dist(GAUSS, n_arms=7), np.random.default_rng(0)).spec.n_actions == 7

    class Undeclared(envs.TaskDistribution):  # no spaces, no horizon: no duck typing fills them in
        n_actions = 5

        def sample(self, n, rng):
            return np.zeros((n, 1))

    for name in ("random", "noise_distill", "ppo"):
        with pytest.raises(SpaceError, match="must declare observation_space, action_space, horizon"):
            make_policy(name, 2, Undeclared(), np.random.default_rng(0))


def test_random_is_uniform_on_mdps_and_matches_the_bandit_stream():
    assert POLICIES["random"] is UniformRandomPolicy
    pol = make_policy("random", 2000, _dist(), np.random.default_rng(0))
    acts = np.concatenate([pol.act(np.zeros((2000, 2), np.int64)) for _ in range(10)])
    np.testing.assert_allclose(np.bincount(acts, minlength=5) / len(acts), 0.2, atol=0.01)
    bandit = _dist(GAUSS, n_arms=5)
    a = make_policy("random", 50, bandit, np.random.default_rng(1))
    b = BanditRandomPolicy(50, bandit, np.random.default_rng(1))
    obs = np.zeros(50, np.int64)
    for _ in range(3):
        assert np.array_equal(a.act(obs), b.act(obs))


def test_noise_eps_schedule():
    np.testing.assert_allclose(noise_eps(np.array([0.0, 0.45, 0.75, 0.9, 0.95, 1.0])),
                               [1.0, 0.5, 1 - 0.75 / 0.9, 0.0, 0.0, 0.0])


def test_noise_distill_eps_follows_the_history():
    dist = _dist()  # horizon 20
    pol = NoiseDistillPolicy(2, dist, np.random.default_rng(0))
    pol.set_tasks(dist.sample(2, np.random.default_rng(0)), episodes=10)  # 200-step histories
    zeros, no = np.zeros(2), np.zeros(2, bool)
    eps = []
    for t in range(200):
        eps.append(pol.eps()[0])
        end = np.full(2, (t + 1) % 20 == 0)
        pol.update(None, None, zeros, None, no, end)
    np.testing.assert_allclose(eps, noise_eps(np.arange(200) / 200))  # the step schedule t / (H E)
    assert eps[0] == 1.0 and eps[90] == pytest.approx(0.5) and max(eps[180:]) == 0.0


def test_noise_distill_action_frequencies():
    dist = _dist()
    n = 5000
    tasks = np.tile([[8.0, 8.0]], (n, 1))
    obs = np.full((n, 2), 4)  # oracle: x+1 (action 0)
    for progress, eps in ((0.0, 1.0), (0.45, 0.5), (0.95, 0.0)):
        pol = NoiseDistillPolicy(n, dist, np.random.default_rng(0))
        pol.set_tasks(tasks, episodes=20)
        pol.episode[:] = progress * 20
        acts = pol.act(obs)
        freq = np.bincount(acts, minlength=5) / n
        expected = np.full(5, eps / 5)
        expected[0] += 1 - eps
        np.testing.assert_allclose(freq, expected, atol=0.025)


def test_noise_distill_needs_its_tasks():
    pol = make_policy("noise_distill", 2, _dist(), np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="set_tasks"):
        pol.act(np.full((2, 2), 4))


@pytest.mark.parametrize("env_id", [DR, "icrl/DarkRoomHard-v0"])
def test_noise_distill_last_tenth_is_the_oracle(env_id):
    dist = _dist(env_id)
    tasks = dist.sample(64, np.random.default_rng(0))
    batch = collect_block(env_id, {}, "noise_distill", {}, tasks, np.arange(64), np.zeros(64, np.int64), 0,
                          np.random.SeedSequence(0), episodes=10)
    ends = np.cumsum(batch.lengths)
    done = batch.steps["terminated"] | batch.steps["truncated"]
    first_step_oracle = []
    for h in range(64):
        s = slice(ends[h] - batch.lengths[h], ends[h])
        d = done[s]
        last_start = np.flatnonzero(d)[-2] + 1  # first step of the 10th (last) episode
        acts, oracle = batch.steps["action"][s], batch.steps["oracle_action"][s]
        assert np.array_equal(acts[last_start:], oracle[last_start:])
        first_step_oracle.append(acts[0] == oracle[0])
    assert np.mean(first_step_oracle) < 0.5  # eps = 1 at the start: mostly not the oracle (1/5 expected)
    returns = np.stack(batch.episode_returns)
    np.testing.assert_allclose(returns[:, -1], dist.max_return(tasks))  # the oracle's return


# ----------------------------------------------------------------------------------- learning


def test_run_policy_ppo_histories_improve():
    dist = _dist()
    tasks = dist.sample(16, np.random.default_rng(0))
    pol = make_policy("ppo", 16, dist, np.random.default_rng(0))
    batch = run_policy(DR, {}, pol, tasks, np.random.SeedSequence(0), episodes=60)
    returns = np.stack(batch.episode_returns)  # (16, 60)
    assert returns[:, -15:].mean() > returns[:, :15].mean() + 3.0
    assert pol.n_updates == 60 * 20 // 100


def test_ppo_learns_one_dark_room_task():  # ~4 s on 2 cores: not slow
    dist = _dist()
    goal = np.array([[7.0, 1.0]])  # 6 steps from the centre: oracle return 15
    for shared in (False, True):
        tasks = np.repeat(goal, 8, axis=0)  # 8 independent runs, or 8 streams of one shared learner
        pol = make_policy("ppo", 8, dist, np.random.default_rng(1), ppo_shared=shared)
        batch = run_policy(DR, {}, pol, tasks, np.random.SeedSequence(1), episodes=200)
        returns = np.stack(batch.episode_returns)  # (8, 200)
        last = returns[:, -10:].mean(1)  # (8,)
        assert (returns > 0).any(1).mean() >= 0.75  # (nearly) every run found the goal
        assert (last >= 0.8 * dist.max_return(goal)[0]).mean() >= 0.75, (shared, last)
        assert returns[:, -20:].mean() > returns[:, :20].mean() + 5
