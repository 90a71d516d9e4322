"""The space contract: EnvSpec, the encoders and action heads chosen from it, and AD/DPT on Box spaces."""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from icrl import envs
from icrl.models import ADModel, DPTModel, ModelConfig, check_batch, head_loss
from icrl.models.encoders import ActionEncoder, ActionHead, ObsEncoder, first_action, is_first
from icrl.spaces import EnvSpec, SpaceError, space_from_dict, space_to_dict

BOX_OBS = gym.spaces.Box(-3.0, 3.0, (2,), np.float32)
BOX_ACT = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 2.0], np.float32))


def box_config(kind: str, head: str = "auto", **kw) -> ModelConfig:
    base = dict(kind=kind, obs_space=space_to_dict(BOX_OBS), action_space=space_to_dict(BOX_ACT), head=head,
                n_layer=2, n_head=2, n_embd=32, block_size=64)
    return ModelConfig(**{**base, **kw})


# ---------------------------------------------------------------- EnvSpec


def test_every_registered_family_declares_a_supported_spec_that_round_trips():
    for env_id in [i for i in envs.family_ids() if i.startswith("icrl/")]:  # tests may register fakes
        spec = EnvSpec.for_env(env_id, {})
        assert EnvSpec.from_dict(spec.to_dict()) == spec
        env = gym.make(env_id)
        assert space_to_dict(env.observation_space) == space_to_dict(spec.observation_space), env_id
        assert space_to_dict(env.action_space) == space_to_dict(spec.action_space), env_id
        assert env.unwrapped.horizon == spec.horizon, env_id


def test_point_robot_spec_is_continuous():
    spec = EnvSpec.for_env("icrl/PointRobot-v0", {})
    assert not spec.discrete_actions and not spec.discrete_obs
    assert spec.action_shape == (2,) and spec.action_dim == 2 and spec.obs_dim == 2 and spec.horizon == 20
    with pytest.raises(SpaceError, match="continuous actions"):
        spec.n_actions


@pytest.mark.parametrize("space, needle", [
    (gym.spaces.Dict({"a": gym.spaces.Discrete(2)}), "observation space Dict"),
    (gym.spaces.Text(5), "observation space Text"),
])
def test_unsupported_observation_spaces_are_one_line_errors(space, needle):
    with pytest.raises(SpaceError, match=needle) as e:
        EnvSpec("my/X-v0", space, gym.spaces.Discrete(2), 10)
    assert "\n" not in str(e.value) and "Discrete, MultiDiscrete or Box" in str(e.value)


@pytest.mark.parametrize("space, needle", [
    (gym.spaces.Box(-np.inf, np.inf, (2,)), "unbounded"),
    (gym.spaces.MultiBinary(3), "not supported"),
    (gym.spaces.Box(0, 5, (2,), np.int64), "must be float"),
    (gym.spaces.Discrete(3, start=1), "numbered from 0"),
])
def test_unsupported_action_spaces_are_one_line_errors(space, needle):
    with pytest.raises(SpaceError, match=needle) as e:
        EnvSpec("my/X-v0", gym.spaces.Discrete(2), space, 10)
    assert "\n" not in str(e.value)


def test_spaces_serialise_to_plain_json():
    for space in (gym.spaces.Discrete(7), gym.spaces.MultiDiscrete([9, 9, 2]), BOX_OBS, BOX_ACT,
                  gym.spaces.Box(0.0, 1.0, (2, 3), np.float64)):
        d = space_to_dict(space)
        assert space_from_dict(d) == space
    with pytest.raises(SpaceError, match="unknown space type"):
        space_from_dict({"type": "Graph"})


def test_check_actions():
    spec = EnvSpec("x", BOX_OBS, BOX_ACT, 5)
    assert spec.check_actions(np.zeros((3, 2)), 3).dtype == np.float32
    with pytest.raises(SpaceError, match=r"expected \(3, 2\) floats"):
        spec.check_actions(np.zeros(3), 3)
    with pytest.raises(SpaceError, match="NaN or inf"):
        spec.check_actions(np.full((3, 2), np.nan), 3)
    d = EnvSpec("x", BOX_OBS, gym.spaces.Discrete(4), 5)
    with pytest.raises(SpaceError, match=r"in \[0, 4\)"):
        d.check_actions(np.array([0, 4]), 2)


# ---------------------------------------------------------------- encoders and heads


def test_box_obs_encoder_normalises_with_training_statistics():
    enc = ObsEncoder(BOX_OBS)
    data = np.array([[1.0, 10.0], [3.0, 10.0]])
    enc.set_stats(data)
    assert enc.mean.tolist() == [2.0, 10.0]
    assert enc.std.tolist() == [1.0, 1.0]  # a constant component is only centred
    out = enc(torch.tensor([[3.0, 12.0]]), torch.float32)
    assert out[0].tolist() == pytest.approx([1.0, 2.0])
    assert set(dict(enc.named_buffers())) == {"mean", "std"}  # saved with the weights


def test_box_action_encoder_scales_to_unit_box_and_zeroes_the_sentinel():
    enc = ActionEncoder(BOX_ACT)
    a = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    assert enc.scale(a).tolist() == [[1.0, -1.0], [-1.0, 0.0]]
    assert torch.allclose(enc.unscale(enc.scale(a)), a)
    first = first_action(BOX_ACT, 2)
    assert torch.isnan(first).all() and is_first(first, discrete=False).tolist() == [True, True]
    assert enc(first, torch.float32).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    d = first_action(gym.spaces.Discrete(3), 2)
    assert d.tolist() == [-1, -1] and is_first(d, discrete=True).all()


def test_gaussian_head_loss_is_the_negative_log_likelihood_of_the_scaled_action():
    torch.manual_seed(0)
    head = ActionHead(8, BOX_ACT, "gaussian")
    out = torch.randn(3, 5, 4)
    target = torch.stack((torch.rand(3, 5) * 2 - 1, torch.rand(3, 5) * 2), -1)  # inside the box
    y = 2 * (target - torch.tensor([-1.0, 0.0])) / torch.tensor([2.0, 2.0]) - 1  # scaled to [-1, 1]
    mean, log_std = out[..., :2], out[..., 2:].clamp(-5, 2)
    ref = -torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp()), 1).log_prob(y)
    assert torch.allclose(head.loss(out, target), ref, atol=1e-5)
    # by hand at one point: mean 0, log-std 0, y = 1 -> 0.5 + log sqrt(2 pi) per dimension
    out0 = torch.zeros(1, 4)
    assert head.loss(out0, torch.tensor([[1.0, 2.0]])).item() == pytest.approx(2 * (0.5 + 0.5 * math.log(2 * math.pi)))


def test_tanh_head_loss_is_the_squared_error_of_the_scaled_action():
    head = ActionHead(8, BOX_ACT, "tanh")
    out = torch.tensor([[0.0, 0.5]])
    target = torch.tensor([[0.5, 1.0]])  # scaled: [0.5, 0.0]
    expected = ((0.0 - 0.5) ** 2 + (math.tanh(0.5) - 0.0) ** 2) / 2
    assert head.loss(out, target).item() == pytest.approx(expected)


def test_heads_act_in_the_box():
    rng = np.random.default_rng(0)
    head = ActionHead(8, BOX_ACT, "gaussian")
    out = torch.tensor([[0.5, -0.5, math.log(0.1), math.log(0.1)]]).repeat(20000, 1)
    greedy = head.act(out, rng, greedy=True)
    assert greedy[0].tolist() == pytest.approx([0.5, 0.5])  # the mean, unscaled: [-1, 1] -> [-1, 1], [0, 2]
    draws = head.act(out, rng)
    assert draws.mean(0) == pytest.approx([0.5, 0.5], abs=0.01)
    assert draws.std(0) == pytest.approx([0.1, 0.1], abs=0.01)  # sigma 0.1 in the scaled box of width 2 = 0.1
    wide = head.act(torch.tensor([[0.0, 0.0, 2.0, 2.0]]).repeat(1000, 1), rng)
    assert (wide[:, 0] >= -1).all() and (wide[:, 0] <= 1).all() and (wide[:, 1] >= 0).all() and (wide[:, 1] <= 2).all()
    tanh = ActionHead(8, BOX_ACT, "tanh")
    assert tanh.act(torch.tensor([[100.0, -100.0]]), rng).tolist() == [[1.0, 0.0]]


def test_a_head_that_does_not_fit_the_action_space_is_refused():
    with pytest.raises(SpaceError, match="categorical head does not fit"):
        ActionHead(8, BOX_ACT, "categorical")
    with pytest.raises(SpaceError, match="gaussian head does not fit"):
        ActionHead(8, gym.spaces.Discrete(3), "gaussian")
    with pytest.raises(ValueError, match="head"):
        box_config("ad", head="categorical")
    assert box_config("ad").head == "gaussian"


def test_legacy_model_json_loads_as_discrete_spaces():
    cfg = ModelConfig.from_dict({"kind": "ad", "obs_sizes": [9, 9], "n_actions": 5, "n_layer": 1, "n_head": 2,
                                 "n_embd": 16})
    assert cfg.obs_space["type"] == "MultiDiscrete" and cfg.obs_sizes == [9, 9] and cfg.n_actions == 5
    assert cfg.head == "categorical"
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_check_batch_on_box_data():
    cfg = box_config("ad")
    check_batch(cfg, np.zeros((4, 2), np.float32), np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="dataset obs has 3 components"):
        check_batch(cfg, np.zeros((4, 3), np.float32), np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="acts in Box of width 2"):
        check_batch(cfg, np.zeros((4, 2), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="NaN"):
        check_batch(cfg, np.full((4, 2), np.nan, np.float32), np.zeros((4, 2), np.float32))


# ---------------------------------------------------------------- AD and DPT on Box spaces


def _box_history(B: int, T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(B, T, 2, generator=g) * 2 - 1  # (B, T, 2)
    act = torch.stack((torch.rand(B, T, generator=g) * 2 - 1, torch.rand(B, T, generator=g) * 2), -1)  # (B, T, 2)
    rew = -torch.rand(B, T, generator=g)  # (B, T)
    return obs, act, rew


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("head", ["gaussian", "tanh"])
def test_box_ad_cached_steps_equal_the_full_pass(window, head):
    torch.manual_seed(0)
    model = ADModel(box_config("ad", head, window=window), torch.Generator().manual_seed(1)).eval()
    model.obs_enc.set_stats(np.random.default_rng(0).normal(0.3, 2.0, (100, 2)))
    obs, act, rew = _box_history(3, 12)
    prev_a = torch.cat((first_action(BOX_ACT, 3)[:, None], act[:, :-1]), 1)  # (B, T, 2) the sentinel first
    prev_r = torch.cat((torch.zeros(3, 1), rew[:, :-1]), 1)
    full = model(obs, prev_a, prev_r)  # (B, T, out)
    cache = model.new_cache(3)
    steps = torch.stack([model.step(cache, obs[:, t], prev_a[:, t], prev_r[:, t]) for t in range(12)], 1)
    assert torch.allclose(full, steps, atol=1e-5)
    assert full.shape[-1] == (4 if head == "gaussian" else 2)


@pytest.mark.parametrize("window", [None, 4])
def test_box_dpt_cached_readouts_equal_the_full_pass(window):
    model = DPTModel(box_config("dpt", window=window), torch.Generator().manual_seed(1)).eval()
    obs, act, rew = _box_history(2, 10)
    nxt = obs + 0.1
    query = torch.rand(2, 2)
    full = model(obs, act, rew, nxt, query)  # (B, n+1, out)
    cache = model.new_cache(2)
    for j in range(11):
        assert torch.allclose(model.readout(cache, query), full[:, j], atol=1e-5)
        if j < 10:
            model.append(cache, obs[:, j], act[:, j], rew[:, j], nxt[:, j])


def test_box_ad_learns_a_context_dependent_action():
    """The target action is the previous reward times a fixed direction: learnable only from context."""
    torch.manual_seed(0)
    model = ADModel(box_config("ad", "gaussian", block_size=16), torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    B, T = 64, 16
    obs = torch.zeros(B, T, 2)
    prev_r = torch.rand(B, T, generator=g) * 2 - 1  # (B, T)
    target = torch.stack((prev_r.clamp(-1, 1), torch.ones(B, T)), -1)  # (B, T, 2) inside the box
    prev_a = torch.cat((first_action(BOX_ACT, B)[:, None], target[:, :-1]), 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = head_loss(model.head, model(obs, prev_a, prev_r), target, torch.ones(B))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 2.0  # NLL falls by several nats as sigma shrinks around the right mean


def test_a_dataset_written_before_specs_rebuilds_its_spec_and_trains(tmp_path):
    import json

    from icrl.cli import main
    from icrl.store import HistoryStore

    data = tmp_path / "data"
    tiny = ["env.id=icrl/DarkRoom-v0", "collect.algorithms=[random]", "collect.n_tasks=4", "collect.episodes=2"]
    assert main(["collect", "--quiet", "--out", str(data), *tiny]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    spec = manifest.pop("spec")  # the manifest as written before the space contract
    (data / "manifest.json").write_text(json.dumps(manifest))
    with HistoryStore(data) as store:
        assert store.spec.to_dict() == spec
    assert main(["train", "--quiet", "--out", str(tmp_path / "run"), *tiny, f"data.dataset={data}", "model.kind=ad",
                 "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "train.steps=2"]) == 0
