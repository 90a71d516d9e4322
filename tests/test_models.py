"""Tests for icrl.models: cached decoding equals the full pass, masks, losses, errors, overfit."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from icrl.models import (
    ADModel,
    DPTModel,
    ModelConfig,
    ad_loss,
    check_batch,
    dpt_loss,
    encode_obs,
    readout_mask,
)
from icrl.methods import make_model
from icrl.spaces import EnvSpec, space_to_dict


def discrete(obs_sizes: list[int], n_actions: int) -> dict:
    """ModelConfig space fields of integer observations with these one-hot sizes and n Discrete actions."""
    obs = gym.spaces.Discrete(obs_sizes[0]) if len(obs_sizes) == 1 else gym.spaces.MultiDiscrete(obs_sizes)
    return {"obs_space": space_to_dict(obs), "action_space": space_to_dict(gym.spaces.Discrete(n_actions))}


def ad_config(**kw) -> ModelConfig:
    base = dict(kind="ad", **discrete([3, 2], 4), n_layer=2, n_head=2, n_embd=32, block_size=256)
    return ModelConfig(**{**base, **kw})


def dpt_config(**kw) -> ModelConfig:
    base = dict(kind="dpt", **discrete([3, 2], 4), n_layer=2, n_head=2, n_embd=32, block_size=200)
    return ModelConfig(**{**base, **kw})


def ad_batch(B: int, T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.stack((torch.randint(0, 3, (B, T), generator=g), torch.randint(0, 2, (B, T), generator=g)), -1)
    prev_action = torch.randint(0, 4, (B, T), generator=g)
    prev_action[:, 0] = -1
    prev_reward = torch.rand(B, T, generator=g)
    return obs, prev_action, prev_reward


def dpt_batch(B: int, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)

    def obs(*shape: int) -> torch.Tensor:
        return torch.stack((torch.randint(0, 3, shape, generator=g), torch.randint(0, 2, shape, generator=g)), -1)

    return (obs(B, n), torch.randint(0, 4, (B, n), generator=g), torch.randn(B, n, generator=g), obs(B, n),
            obs(B, n + 1))


def embedding_leaf(model: torch.nn.Module) -> list[torch.Tensor]:
    """Replace the embed Linear's output by a leaf tensor so its gradient can be inspected."""
    leaves: list[torch.Tensor] = []

    def hook(_mod, _inp, out):
        leaf = out.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf

    model.embed.register_forward_hook(hook)
    return leaves


# ---------------------------------------------------------------- config and encoding


def test_config_round_trip_and_strict_keys():
    cfg = ad_config(window=16, dropout=0.1)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig keys.*n_layers"):
        ModelConfig.from_dict({**cfg.to_dict(), "n_layers": 3})
    with pytest.raises(ValueError, match="window"):
        dpt_config(window=0)
    with pytest.raises(ValueError, match="n_embd"):
        ad_config(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="kind"):
        ad_config(kind="gpt")


def test_encode_obs_and_obs_sizes():
    out = encode_obs(torch.tensor([[2, 1], [0, 0]]), [3, 2])
    assert out.tolist() == [[0, 0, 1, 0, 1], [1, 0, 0, 1, 0]]
    assert EnvSpec("x", gym.spaces.Discrete(1), gym.spaces.Discrete(2), 1).obs_sizes == [1]
    assert EnvSpec("x", gym.spaces.MultiDiscrete([9, 9]), gym.spaces.Discrete(2), 1).obs_sizes == [9, 9]


def test_same_generator_same_weights():
    a = make_model(ad_config(), torch.Generator().manual_seed(3))
    b = make_model(ad_config(), torch.Generator().manual_seed(3))
    c = make_model(ad_config(), torch.Generator().manual_seed(4))
    for (na, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(pa, pb), na
    assert not torch.equal(a.embed.weight, c.embed.weight)


# ---------------------------------------------------------------- AD


@pytest.mark.parametrize("window, rope", [(32, True), (None, True), (32, False)])
def test_ad_cached_rollout_equals_full_pass(window, rope):
    T = 240
    model = ADModel(ad_config(window=window, rope=rope), torch.Generator().manual_seed(0)).eval()
    obs, pa, pr = ad_batch(3, T)
    with torch.no_grad():
        full = model(obs, pa, pr)  # (B, T, A)
    cache = model.new_cache(3)
    steps = torch.stack([model.step(cache, obs[:, t], pa[:, t], pr[:, t]) for t in range(T)], dim=1)
    assert cache.pos == T
    if window is not None:
        assert cache.k.shape[3] == window + 1  # the ring holds only K slots (and one readout scratch slot)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)
    # The window matters: a full-causal model with the same weights gives other late logits.
    if window is not None:
        unbanded = ADModel(ad_config(window=None), torch.Generator().manual_seed(0)).eval()
        with torch.no_grad():
            assert (unbanded(obs, pa, pr)[:, window:] - full[:, window:]).abs().max() > 1e-3


def test_ad_ring_rollout_runs_past_block_size():
    model = ADModel(ad_config(window=8, block_size=16), torch.Generator().manual_seed(0)).eval()
    obs, pa, pr = ad_batch(2, 40)
    cache = model.new_cache(2)
    for t in range(40):
        logits = model.step(cache, obs[:, t], pa[:, t], pr[:, t])
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()


@pytest.mark.parametrize("n_layer", [1, 2])
def test_ad_perturbation_reaches_only_the_window(n_layer):
    K, T, s = 8, 48, 10
    model = ADModel(ad_config(window=K, n_layer=n_layer), torch.Generator().manual_seed(1)).eval()
    obs, pa, pr = ad_batch(1, T)
    pr2 = pr.clone()
    pr2[0, s] += 1.0
    with torch.no_grad():
        diff = (model(obs, pa, pr2) - model(obs, pa, pr)).abs().amax(dim=-1)[0]  # (T,)
    # Each layer looks K - 1 steps back, so L layers reach L (K - 1) steps past the token.
    reach = s + n_layer * (K - 1) + 1
    assert (diff[:s] == 0).all()
    assert (diff[s:reach] > 1e-6).all()
    assert (diff[reach:] == 0).all()


def test_ad_first_step_flag_ignores_reward():
    model = ADModel(ad_config(), torch.Generator().manual_seed(0)).eval()
    obs, pa, pr = ad_batch(1, 5)
    pr2 = pr.clone()
    pr2[0, 0] = 123.0  # reward before the first step does not exist
    with torch.no_grad():
        torch.testing.assert_close(model(obs, pa, pr2), model(obs, pa, pr), atol=0, rtol=0)


# ---------------------------------------------------------------- DPT


def test_readout_mask_layout():
    m = readout_mask(2)  # tokens c0 c1 r0 r1 r2
    expected = [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [1, 0, 0, 1, 0],
        [1, 1, 0, 0, 1],
    ]
    assert m.int().tolist() == expected


def test_readout_mask_window_layout():
    m = readout_mask(3, torch.tensor([0, 2, 3]), window=2)  # tokens c0 c1 c2 r0 r2 r3
    expected = [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],  # c2 sees c1 and itself
        [0, 0, 0, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],  # r2 sees c0 c1
        [0, 1, 1, 0, 0, 1],  # r3 sees the last 2: c1 c2
    ]
    assert m.int().tolist() == expected


@pytest.mark.parametrize("window, rope", [(16, True), (16, False)])
def test_dpt_ring_rollout_equals_banded_pass(window, rope):
    """A sliding-window DPT decodes 240 steps on a ring of 16 transitions, exactly as the full pass."""
    n = 240
    model = DPTModel(dpt_config(block_size=n, window=window, rope=rope), torch.Generator().manual_seed(0)).eval()
    s, a, r, s2, q = dpt_batch(2, n)
    with torch.no_grad():
        full = model(s, a, r, s2, q)  # (B, n+1, A)
    cache = model.new_cache(2)
    assert cache.k.shape[3] == window + 1  # K context slots + the readout's scratch slot
    rows = []
    for j in range(n + 1):
        rows.append(model.readout(cache, q[:, j]))
        if j < n:
            model.append(cache, s[:, j], a[:, j], r[:, j], s2[:, j])
    torch.testing.assert_close(torch.stack(rows, dim=1), full, atol=1e-5, rtol=0)
    # The window matters: without it the same weights give other late logits.
    unbanded = DPTModel(dpt_config(block_size=n, rope=rope), torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        assert (unbanded(s, a, r, s2, q)[:, 2 * window:] - full[:, 2 * window:]).abs().max() > 1e-3


def test_dpt_window_perturbation_reach():
    """Transition i reaches readouts i+1 .. i + L(K-1) + 1 through L layers of a K-window, no further."""
    n, K, i, L = 40, 5, 9, 2
    model = DPTModel(dpt_config(block_size=n, window=K, n_layer=L), torch.Generator().manual_seed(3)).eval()
    s, a, r, s2, q = dpt_batch(1, n)
    r2 = r.clone()
    r2[0, i] += 1.0
    with torch.no_grad():
        diff = (model(s, a, r2, s2, q) - model(s, a, r, s2, q)).abs().amax(dim=-1)[0]  # (n+1,)
    # The context token reaches L (K - 1) context tokens on, each seen by the next K readouts' layer L.
    reach = i + (L - 1) * (K - 1) + K + 1
    assert (diff[: i + 1] == 0).all()
    assert (diff[i + 1 : reach] > 1e-6).all()
    assert (diff[reach:] == 0).all()


@pytest.mark.parametrize("rope", [True, False])
def test_dpt_online_equals_one_pass_and_readout_leaves_cache(rope):
    n = 200
    model = DPTModel(dpt_config(block_size=n, rope=rope), torch.Generator().manual_seed(0)).eval()
    s, a, r, s2, q = dpt_batch(2, n)
    with torch.no_grad():
        full = model(s, a, r, s2, q)  # (B, n+1, A)
    assert full.shape == (2, n + 1, 4)
    cache = model.new_cache(2)
    rows = []
    for j in range(n + 1):
        k_before, v_before = cache.k[:, :, :, :j].clone(), cache.v[:, :, :, :j].clone()
        rows.append(model.readout(cache, q[:, j]))
        assert cache.pos == j
        assert torch.equal(cache.k[:, :, :, :j], k_before) and torch.equal(cache.v[:, :, :, :j], v_before)
        if j < n:
            model.append(cache, s[:, j], a[:, j], r[:, j], s2[:, j])
    torch.testing.assert_close(torch.stack(rows, dim=1), full, atol=1e-5, rtol=0)
    # Reading out twice in a row gives the same answer (the scratch slot is not context).
    torch.testing.assert_close(model.readout(cache, q[:, 0]), model.readout(cache, q[:, 0]), atol=0, rtol=0)


def test_dpt_subset_of_prefixes_equals_rows_of_the_full_pass():
    n = 30
    model = DPTModel(dpt_config(block_size=n), torch.Generator().manual_seed(0)).eval()
    s, a, r, s2, q = dpt_batch(3, n)
    prefixes = torch.tensor([0, 4, 5, 17, 30])
    with torch.no_grad():
        full = model(s, a, r, s2, q)  # (B, n+1, A)
        part = model(s, a, r, s2, q[:, prefixes], prefixes)  # (B, 5, A)
    torch.testing.assert_close(part, full[:, prefixes], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="prefixes"):
        model(s, a, r, s2, q[:, 0], torch.tensor([0, n + 1]))


def test_dpt_single_query_broadcasts():
    model = DPTModel(dpt_config(), torch.Generator().manual_seed(0)).eval()
    s, a, r, s2, q = dpt_batch(2, 6)
    with torch.no_grad():
        one = model(s, a, r, s2, q[:, 0])
        many = model(s, a, r, s2, q[:, :1].expand(2, 7, 2))
    torch.testing.assert_close(one, many, atol=0, rtol=0)


def test_dpt_readout_influences_nothing_else_and_context_is_causal():
    n, j, i = 12, 5, 7
    model = DPTModel(dpt_config(), torch.Generator().manual_seed(2)).eval()
    s, a, r, s2, q = dpt_batch(1, n)
    with torch.no_grad():
        base = model(s, a, r, s2, q)
        q2 = q.clone()
        q2[0, j] = (q2[0, j] + 1) % torch.tensor([3, 2])
        diff_q = (model(s, a, r, s2, q2) - base).abs().amax(dim=-1)[0]  # (n+1,)
        r2 = r.clone()
        r2[0, i] += 1.0
        diff_c = (model(s, a, r2, s2, q) - base).abs().amax(dim=-1)[0]  # (n+1,)
    others = torch.arange(n + 1) != j
    assert diff_q[j] > 1e-4 and diff_q[others].max() < 1e-6
    # Transition i is seen by readouts j > i only.
    assert diff_c[: i + 1].max() < 1e-6 and (diff_c[i + 1 :] > 1e-6).all()


# ---------------------------------------------------------------- losses


def test_ad_loss_closed_form():
    ln3 = math.log(3.0)
    logits = torch.tensor([[[0.0, 0.0], [ln3, 0.0]], [[0.0, ln3], [0.0, 0.0]]])  # (2, 2, 2)
    actions = torch.tensor([[0, 0], [0, 1]])
    weights = torch.tensor([1.0, 3.0])
    # CE: sample 0 -> ln 2, ln(4/3); sample 1 -> ln 4, ln 2.
    l0, l1 = (math.log(2) + math.log(4 / 3)) / 2, (math.log(4) + math.log(2)) / 2
    assert ad_loss(logits, actions, weights).item() == pytest.approx((1 * l0 + 3 * l1) / 4, abs=1e-6)
    assert ad_loss(logits, actions, weights).item() == pytest.approx(0.9023944, abs=1e-6)
    # Masking sample 1's second step (with a padding label -1) leaves l1 = ln 4.
    mask = torch.tensor([[1, 1], [1, 0]])
    padded = torch.tensor([[0, 0], [0, -1]])
    expected = (l0 + 3 * math.log(4)) / 4
    assert ad_loss(logits, padded, weights, mask).item() == pytest.approx(expected, abs=1e-6)


def test_dpt_loss_closed_form():
    ln3 = math.log(3.0)
    logits = torch.tensor([[[ln3, 0.0], [0.0, 0.0], [0.0, ln3]]])  # (1, 3, 2)
    # Label 0 everywhere: CE = ln(4/3), ln 2, ln 4.
    expected = (math.log(4 / 3) + math.log(2) + math.log(4)) / 3
    assert dpt_loss(logits, torch.tensor([0]), torch.tensor([2.0])).item() == pytest.approx(expected, abs=1e-6)
    # Per-readout labels 0, 1, 1: CE = ln(4/3), ln 2, ln(4/3); weights 0 and 1 keep only sample 2.
    two = torch.cat((torch.zeros(1, 3, 2), logits))
    labels = torch.tensor([[1, 1, 1], [0, 1, 1]])
    expected = (2 * math.log(4 / 3) + math.log(2)) / 3
    assert dpt_loss(two, labels, torch.tensor([0.0, 1.0])).item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="labels"):
        dpt_loss(logits, torch.tensor([[0, 0]]), torch.tensor([1.0]))


def test_zero_weight_sample_gets_zero_gradient():
    ad = ADModel(ad_config(window=4), torch.Generator().manual_seed(0))
    leaves = embedding_leaf(ad)
    obs, pa, pr = ad_batch(3, 10)
    ad_loss(ad(obs, pa, pr), torch.randint(0, 4, (3, 10)), torch.tensor([1.0, 0.0, 2.0])).backward()
    grad = leaves[0].grad  # (3, 10, C)
    assert torch.all(grad[1] == 0) and grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0

    dpt = DPTModel(dpt_config(), torch.Generator().manual_seed(0))
    leaves = embedding_leaf(dpt)
    s, a, r, s2, q = dpt_batch(3, 6)
    dpt_loss(dpt(s, a, r, s2, q), torch.tensor([0, 1, 2]), torch.tensor([0.0, 1.0, 1.0])).backward()
    grad = leaves[0].grad  # (3, 13, C)
    assert torch.all(grad[0] == 0) and grad[1].abs().sum() > 0 and grad[2].abs().sum() > 0


# ---------------------------------------------------------------- errors


def test_errors_name_block_size_and_obs_mismatch():
    dpt = DPTModel(dpt_config(block_size=4))
    s, a, r, s2, q = dpt_batch(1, 5)
    with pytest.raises(ValueError, match="block_size=4"):
        dpt(s, a, r, s2, q)
    cache = dpt.new_cache(1)
    for t in range(4):
        dpt.append(cache, s[:, t], a[:, t], r[:, t], s2[:, t])
    assert dpt.readout(cache, q[:, 0]).shape == (1, 4)  # a full cache can still be read out
    with pytest.raises(ValueError, match="block_size=4"):
        dpt.append(cache, s[:, 4], a[:, 4], r[:, 4], s2[:, 4])

    ad = ADModel(ad_config(block_size=8))
    obs, pa, pr = ad_batch(1, 9)
    with pytest.raises(ValueError, match="block_size=8"):
        ad(obs, pa, pr)
    cache = ad.new_cache(1)
    for t in range(8):
        ad.step(cache, obs[:, t], pa[:, t], pr[:, t])
    with pytest.raises(ValueError, match="block_size=8.*window"):
        ad.step(cache, obs[:, 8], pa[:, 8], pr[:, 8])
    with pytest.raises(ValueError, match=r"obs must be \(B, T, 2\)"):
        ad(obs[..., :1], pa, pr)

    cfg = ad_config()
    check_batch(cfg, np.array([[2, 1], [0, 0]]), np.array([3, 0]))
    with pytest.raises(ValueError, match="dataset obs has 1 components but the model was built for 2"):
        check_batch(cfg, np.zeros((5, 1), dtype=np.int64), np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match=r"component 1 spans \[0, 2\].*obs_sizes\[1\] >= 3"):
        check_batch(cfg, np.array([[0, 0], [0, 2]]), np.array([0, 0]))
    with pytest.raises(ValueError, match="n_actions=4; set n_actions >= 6"):
        check_batch(cfg, np.array([[0, 0]]), np.array([5]))


# ---------------------------------------------------------------- tiny overfit


def test_ad_overfits_a_tiny_rule():
    """Rule: repeat the previous action after a reward, else move to the next action."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind="ad", **discrete([1], 3), n_layer=2, n_head=2, n_embd=32, block_size=24, window=8)
    model = ADModel(cfg, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    B, T = 32, 24
    prev_action = torch.randint(0, 3, (B, T), generator=g)
    prev_action[:, 0] = -1
    prev_reward = torch.randint(0, 2, (B, T), generator=g).float()
    actions = torch.where(prev_reward > 0, prev_action, (prev_action + 1) % 3)
    actions[:, 0] = 0
    obs = torch.zeros(B, T, 1, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = ad_loss(model(obs, prev_action, prev_reward), actions, torch.ones(B))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_dpt_overfits_a_tiny_bandit():
    """Bandit with one rewarding arm: once the arm shows up in the context, the label is certain."""
    torch.manual_seed(0)
    A, n, B = 4, 8, 64
    cfg = ModelConfig(kind="dpt", **discrete([1], A), n_layer=2, n_head=2, n_embd=32, block_size=n)
    model = DPTModel(cfg, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    best = torch.randint(0, A, (B,), generator=g)
    actions = torch.randint(0, A, (B, n), generator=g)
    rewards = (actions == best[:, None]).float()
    zeros = torch.zeros(B, n, 1, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        loss = dpt_loss(model(zeros, actions, rewards, zeros, zeros[:, 0]), best, torch.ones(B))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Uniform guessing costs ln 4 = 1.39 per readout; readouts that have seen the arm cost ~0.
    assert losses[-1] < 0.6 * losses[0]
