"""Source algorithms on continuous (Box) action spaces: Gaussian PPO, random, noise distillation, the runner."""
from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from icrl import envs
from icrl.collectors import collect_block, make_policy, run_policy
from icrl.collectors.gaussian import (
    RunningMeanStd,
    gaussian_entropy,
    gaussian_log_prob,
    squash_to_box,
    tanh_log_det,
)
from icrl.collectors.mdp import NoiseDistillPolicy
from icrl.envs import tasks as registry
from icrl.spaces import SpaceError

PR = "icrl/PointRobot-v0"
FAKE = "icrl_test/BoxFake-v0"


def _pr():
    return envs.task_distribution(PR)


def _block(env_id, name, tasks, episodes=2, params=None, seed=0, env_kwargs=None):
    n = len(tasks)
    return collect_block(env_id, env_kwargs or {}, name, params or {}, tasks, np.arange(n), np.zeros(n, np.int64), 0,
                         np.random.SeedSequence(seed), episodes=episodes)


# ------------------------------------------------------------------------------- a fake Box family


def _fake_family() -> tuple[type, type, type]:
    """A Box family with no oracle whose env returns NaN observations where a task asks for it.

    Task = (s,): env i's obs after its step s is NaN (-1: never). Obs = (steps into the episode,
    sum of actions); horizon 5, truncated. Classes defined in a function, registered as objects.
    """
    obs_space = spaces.Box(-100.0, 100.0, (2,), np.float32)
    act_space = spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 2.0], np.float32))

    class _Tasks(envs.TaskDistribution):
        task_shape = (1,)
        observation_space = obs_space
        action_space = act_space
        horizon = 5

        def sample(self, n, rng):
            return np.full((n, 1), -1.0)

    class _Env(gymnasium.Env):
        observation_space = obs_space
        action_space = act_space

    class _VectorEnv(VectorEnv):
        metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

        def __init__(self, num_envs: int = 1):
            self.num_envs = num_envs
            self.single_observation_space, self.single_action_space = obs_space, act_space
            self.observation_space = batch_space(obs_space, num_envs)
            self.action_space = batch_space(act_space, num_envs)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.nan_at = np.asarray(options["task"])[:, 0].astype(np.int64)
            self.t = np.zeros(self.num_envs, dtype=np.int64)  # steps into the episode
            self.step_count = 0  # steps since reset (the step index of a history)
            self.obs = np.zeros((self.num_envs, 2), np.float32)
            return self.obs.copy(), {}

        def step(self, actions):
            assert np.all(actions >= act_space.low) and np.all(actions <= act_space.high)  # the runner clipped
            self.t += 1
            self.obs[:, 0] = self.t
            self.obs[:, 1] += np.asarray(actions).sum(1)
            self.obs[self.nan_at == self.step_count] = np.nan
            self.step_count += 1
            trunc = self.t >= 5
            infos = {}
            if trunc.any():
                final = np.full(self.num_envs, None, dtype=object)
                for i in np.flatnonzero(trunc):
                    final[i] = self.obs[i].copy()
                infos = {"final_obs": final, "_final_obs": trunc.copy()}
                self.obs[trunc] = 0.0
                self.t[trunc] = 0
            return self.obs.copy(), -np.ones(self.num_envs), np.zeros(self.num_envs, bool), trunc, infos

    return _Env, _VectorEnv, _Tasks


@pytest.fixture
def fake_family():
    """Register the fake family for one test, then leave icrl's and gymnasium's registries as they were."""
    assert FAKE not in envs.family_ids()
    envs.register_family(FAKE, *_fake_family())
    yield FAKE
    registry._FAMILIES.pop(FAKE, None)
    gymnasium.registry.pop(FAKE, None)


# ------------------------------------------------------------------------------------ Gaussian math


def test_gaussian_log_prob_and_entropy_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 5, 2, generator=g)  # (L, B, d)
    log_std = torch.randn(3, 1, 2, generator=g)  # (L, 1, d) state-independent, one per learner
    x = torch.randn(3, 5, 2, generator=g)
    ref = torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp().expand_as(mean)), 1)
    torch.testing.assert_close(gaussian_log_prob(x, mean, log_std), ref.log_prob(x))  # (L, B)
    torch.testing.assert_close(gaussian_entropy(log_std).expand(3, 5), ref.entropy())  # (L, 1) -> (L, B)


def test_tanh_correction_by_hand():
    u, mu, sigma = 0.5, 0.2, 0.7
    log_normal = -0.5 * ((u - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    by_hand = log_normal - np.log(1.0 - np.tanh(u) ** 2 + 1e-6)
    ut = torch.tensor([[u]], dtype=torch.float64)
    ours = gaussian_log_prob(ut, torch.tensor([[mu]], dtype=torch.float64),
                             torch.tensor([[np.log(sigma)]], dtype=torch.float64)) - tanh_log_det(ut)
    assert ours.item() == pytest.approx(by_hand, abs=1e-12)
    # torch's exact TanhTransform agrees up to the 1e-6 inside the log
    squashed = torch.distributions.TransformedDistribution(torch.distributions.Normal(mu, sigma),
                                                           [torch.distributions.TanhTransform()])
    assert squashed.log_prob(torch.tensor(np.tanh(u))).item() == pytest.approx(by_hand, abs=1e-5)
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0])
    torch.testing.assert_close(squash_to_box(torch.tensor([[0.0, 0.0], [50.0, -50.0]]), low, high),
                               torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_running_mean_std_matches_numpy_over_the_concatenated_data():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (4, b, 3)) for b in (1, 7, 20)]  # (L, B, D) batches of 4 learners
    data = np.concatenate(batches, axis=1)  # (L, 28, D)
    exact = RunningMeanStd(4, 3, epsilon=0.0)
    sb3 = RunningMeanStd(4, 3)  # SB3's pseudo-count 1e-4 at mean 0, variance 1
    for b in batches:
        exact.update(torch.as_tensor(b))
        sb3.update(torch.as_tensor(b))
    np.testing.assert_allclose(exact.mean.numpy(), data.mean(1), rtol=1e-12)
    np.testing.assert_allclose(exact.var.numpy(), data.var(1), rtol=1e-12)
    np.testing.assert_allclose(sb3.mean.numpy(), data.mean(1), rtol=1e-4)
    z = sb3.normalize(torch.as_tensor(data, dtype=torch.float32))  # (L, B, D)
    assert z.dtype == torch.float32
    np.testing.assert_allclose(z.numpy().mean(1), 0.0, atol=1e-3)
    big = sb3.normalize(torch.full((4, 1, 3), 1e6))
    assert torch.all(big == 10.0)  # clipped to +-10 as in SB3's VecNormalize


# ------------------------------------------------------------------------------------ Box PPO


def _box_rollout(t: int, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    trunc = np.zeros((t, n), dtype=bool)
    trunc[t // 2] = True
    return {"obs": rng.normal(0, 1, (t, n, 2)).astype(np.float32), "next_obs": rng.normal(0, 1, (t, n, 2)),
            "actions": rng.normal(0, 1.5, (t, n, 2)), "rewards": rng.random((t, n)),
            "terminated": np.zeros((t, n), dtype=bool), "truncated": trunc}


@pytest.mark.parametrize("squash", [False, True])
def test_box_learners_are_independent(squash):
    kw = dict(ppo_rollout=8, ppo_epochs=2, ppo_minibatches=2, ppo_squash=squash)
    a = make_policy("ppo", 3, _pr(), np.random.default_rng(0), **kw)
    b = make_policy("ppo", 3, _pr(), np.random.default_rng(0), **kw)
    assert a.model.log_std.shape == (3, 1, 2) and torch.all(a.model.log_std == 0)
    ra, rb, other = _box_rollout(8, 3, 1), _box_rollout(8, 3, 1), _box_rollout(8, 3, 2)
    for key in ra:  # learner 0 sees entirely different data in b
        rb[key][:, 0] = other[key][:, 0]
    for _ in range(2):  # the second update also runs on the statistics the first one left
        a.train(ra)
        b.train(rb)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):  # (L, ...) stacked, log_std included
        assert not torch.equal(pa[0], pb[0])
        assert torch.equal(pa[1:], pb[1:])
    for sa, sb in ((a.obs_rms.mean, b.obs_rms.mean), (a.obs_rms.var, b.obs_rms.var)):  # (L, D)
        assert not torch.equal(sa[0], sb[0]) and torch.equal(sa[1:], sb[1:])


def test_box_ppo_trains_on_the_sample_it_drew_and_acts_in_the_box():
    dist = _pr()
    obs = np.zeros((4, 2), np.float32)
    for squash in (False, True):
        pol = make_policy("ppo", 4, dist, np.random.default_rng(0), ppo_rollout=3, ppo_squash=squash)
        with torch.no_grad():
            pol.model.log_std.fill_(1.0)  # sigma e: most samples fall outside [-1, 1]
        a = pol.act(obs)
        drawn = pol._drawn.copy()  # (N, d) the Gaussian sample u
        assert a.shape == (4, 2) and a.dtype == np.float32 and np.all(np.abs(a) <= 1.0)
        assert np.abs(drawn).max() > 1.0
        expected = np.tanh(drawn) if squash else np.clip(drawn, -1.0, 1.0)  # [-1, 1]: the affine map is the identity
        np.testing.assert_allclose(a, expected, rtol=1e-6, atol=1e-6)
        pol.update(obs, a, np.zeros(4), obs, np.zeros(4, bool), np.zeros(4, bool))
        np.testing.assert_array_equal(pol.buffer["actions"][-1], drawn)  # u, not the clipped action
        x = pol._normalize(pol.encoder(obs).view(4, 1, -1))  # (L, 1, D)
        u = torch.as_tensor(drawn).view(4, 1, 2)
        logp, entropy = pol._log_prob_entropy(x, u)
        expected_logp = gaussian_log_prob(u, pol.model.logits(x), pol.model.log_std)  # (L, 1)
        if squash:
            expected_logp = expected_logp - tanh_log_det(u)
        torch.testing.assert_close(logp, expected_logp)
        torch.testing.assert_close(entropy, torch.full((4,), 2 * (0.5 + 0.5 * np.log(2 * np.pi) + 1.0)))
        with pytest.raises(RuntimeError, match="act"):
            pol.update(obs, a, np.zeros(4), obs, np.zeros(4, bool), np.zeros(4, bool))  # no act before it


def test_box_ppo_same_seed_same_histories_and_shared_mode():
    tasks = _pr().sample(3, np.random.default_rng(0))
    a = _block(PR, "ppo", tasks, episodes=3, params={"ppo_rollout": 20}, seed=3)
    b = _block(PR, "ppo", tasks, episodes=3, params={"ppo_rollout": 20}, seed=3)
    assert a.steps["action"].tobytes() == b.steps["action"].tobytes()
    pol = make_policy("ppo", 4, _pr(), np.random.default_rng(0), ppo_shared=True, ppo_rollout=10)
    batch = run_policy(PR, {}, pol, _pr().sample(4, np.random.default_rng(1)), np.random.SeedSequence(0), episodes=1)
    assert pol.n_learners == 1 and pol.n_updates == 2 and batch.steps["action"].shape == (80, 2)


def test_box_ppo_improves_on_the_point_robot():
    dist = _pr()
    tasks = dist.sample(8, np.random.default_rng(0))
    batch = _block(PR, "ppo", tasks, episodes=100, seed=1)
    returns = np.stack(batch.episode_returns)  # (8, 100)
    assert returns[:, -10:].mean() > returns[:, :10].mean() + 5.0  # about -17 -> -6; the oracle earns about -2.6


# ------------------------------------------------------------------------------ random, noise_distill


def test_smoke_every_source_through_collect_block():
    dist = _pr()
    tasks = dist.sample(4, np.random.default_rng(0))
    for name, params in (("random", {}), ("noise_distill", {}), ("ppo", {"ppo_rollout": 10}),
                         ("ppo", {"ppo_rollout": 10, "ppo_squash": True})):
        batch = _block(PR, name, tasks, params=params)
        steps = batch.steps
        assert batch.lengths.tolist() == [40] * 4
        for key in ("obs", "next_obs", "action", "oracle_action"):
            assert steps[key].shape == (160, 2) and steps[key].dtype == np.float32, (name, key)
        assert np.all(np.abs(steps["action"]) <= 1.0)
        assert steps["success"].dtype == bool and steps["success"].shape == (160,)
        np.testing.assert_allclose(steps["oracle_action"], dist.oracle_action(np.repeat(tasks, 40, 0), steps["obs"]))


def test_random_is_uniform_in_the_box(fake_family):
    pol = make_policy("random", 4000, envs.task_distribution(fake_family), np.random.default_rng(0))
    a = pol.act(np.zeros((4000, 2), np.float32))  # Box([-1, 0], [1, 2])
    assert a.shape == (4000, 2) and a.dtype == np.float32
    assert a[:, 0].min() >= -1 and a[:, 0].max() <= 1 and a[:, 1].min() >= 0 and a[:, 1].max() <= 2
    np.testing.assert_allclose(a.mean(0), [0.0, 1.0], atol=0.05)
    np.testing.assert_allclose(a.var(0), [1 / 3, 1 / 3], atol=0.03)  # U(a, b): (b - a)^2 / 12


def test_noise_distill_is_the_oracle_at_eps_0_and_uniform_at_eps_1():
    dist = _pr()
    n = 4000
    tasks = dist.sample(n, np.random.default_rng(0))
    obs = np.zeros((n, 2), np.float32)
    pol = NoiseDistillPolicy(n, dist, np.random.default_rng(0))
    pol.set_tasks(tasks, episodes=10)
    pol.episode[:] = 9.5  # progress 0.95: eps = 0
    np.testing.assert_array_equal(pol.act(obs), dist.oracle_action(tasks, obs))
    pol.episode[:] = 0.0  # eps = 1
    a = pol.act(obs)
    assert a.dtype == np.float32 and np.all(np.abs(a) <= 1.0)
    np.testing.assert_allclose(a.mean(0), 0.0, atol=0.05)
    np.testing.assert_allclose(a.var(0), 1 / 3, atol=0.03)  # U(-1, 1), not the oracle's (mostly saturated) steps
    assert np.mean(np.all(a == dist.oracle_action(tasks, obs), axis=1)) == 0.0


def test_noise_distill_needs_an_oracle(fake_family):
    with pytest.raises(ValueError, match="noise_distill needs an oracle"):
        make_policy("noise_distill", 2, envs.task_distribution(fake_family), np.random.default_rng(0))


# ----------------------------------------------------------------------------------- the runner


class _ConstantPolicy:
    def __init__(self, action):
        self.action, self.seen = np.asarray(action), []

    def act(self, obs):
        return np.array(self.action)

    def update(self, obs, actions, rewards, next_obs, terminated, truncated):
        self.seen.append(np.array(actions))


def test_run_policy_stores_and_executes_clipped_actions():
    dist = _pr()
    tasks = dist.sample(2, np.random.default_rng(0))
    pol = _ConstantPolicy(np.array([[5.0, -0.5], [-3.0, 2.0]]))
    batch = run_policy(PR, {}, pol, tasks, np.random.SeedSequence(0), episodes=1)
    expected = np.array([[1.0, -0.5], [-1.0, 1.0]], np.float32)
    np.testing.assert_array_equal(batch.steps["action"].reshape(2, 20, 2), np.repeat(expected[:, None], 20, 1))
    np.testing.assert_array_equal(pol.seen[0], expected)  # update sees the executed action too
    moves = batch.steps["next_obs"] - batch.steps["obs"]  # (40, 2) 0.1 * the clipped action
    np.testing.assert_allclose(moves.reshape(2, 20, 2), 0.1 * np.repeat(expected[:, None], 20, 1), atol=1e-6)


def test_run_policy_names_the_policy_on_bad_actions():
    tasks = _pr().sample(2, np.random.default_rng(0))
    for bad in (np.zeros(2), np.zeros((2, 3)), np.array([[0.0, np.nan], [0.0, 0.0]])):
        with pytest.raises(SpaceError, match="_ConstantPolicy.act") as err:
            run_policy(PR, {}, _ConstantPolicy(bad), tasks, np.random.SeedSequence(0))
        assert "\n" not in str(err.value)


def test_a_family_without_an_oracle_stores_no_oracle_action(fake_family):
    batch = _block(fake_family, "random", np.full((3, 1), -1.0))
    assert "oracle_action" not in batch.steps and "success" not in batch.steps
    assert batch.steps["action"].shape == (30, 2)
    assert batch.steps["action"][:, 0].min() >= -1 and batch.steps["action"][:, 1].min() >= 0


@pytest.mark.parametrize("nan_step", [3, 4])  # 4: the last step of the episode, a final obs
def test_a_nan_observation_names_the_env_step_and_task(fake_family, nan_step):
    tasks = np.array([[-1.0], [nan_step], [-1.0]])
    pol = make_policy("random", 3, envs.task_distribution(fake_family), np.random.default_rng(0))
    with pytest.raises(ValueError, match=rf"^{fake_family} returned a non-finite observation at step {nan_step} "
                                         r"of task 7 \(history 1\); check the env$"):
        run_policy(fake_family, {}, pol, tasks, np.random.SeedSequence(0), task_index=np.array([5, 7, 9]))
