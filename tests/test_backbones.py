"""The backbone contract: every registered backbone conforms, AD and DPT run on each of them, and
the trainer reaches their auxiliary losses, hooks and parameter groups."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from icrl.config import ConfigError, load_config
from icrl.data import HistorySampler
from icrl.histories import HistoryBatch
from icrl.methods import make_model
from icrl.models import BACKBONES, ADModel, DPTModel, ModelConfig, check_backbone
from icrl.models.backbones import ATTENTION, Structure, make_backbone
from icrl.models.t2mir import pooled_inputs
from icrl.training import make_optimizer

BOX = {"type": "Box", "shape": [2], "low": [-1.0, -1.0], "high": [1.0, 1.0], "dtype": "float32"}
GRID = {"type": "MultiDiscrete", "nvec": [4, 4]}
FIVE = {"type": "Discrete", "n": 5}


def config(kind: str, backbone: str, window: int | None = None, obs: dict = GRID, action: dict = FIVE) -> ModelConfig:
    return ModelConfig(kind=kind, obs_space=obs, action_space=action, backbone=backbone, n_layer=2, n_head=2,
                       n_embd=16, block_size=40, window=window, state_size=8, n_token_experts=4, n_task_experts=4)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_registered_backbone_conforms(name):
    check_backbone(name)


def windows(backbone: str) -> list[int | None]:
    return [None, 6] if backbone != "s5" else [None]


def ad_inputs(B: int, T: int, box: bool, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    if box:
        obs = torch.rand(B, T, 2, generator=g) * 2 - 1  # (B, T, 2)
        pa = torch.rand(B, T, 2, generator=g) * 2 - 1  # (B, T, 2)
        pa[:, 0] = float("nan")
    else:
        obs = torch.randint(0, 4, (B, T, 2), generator=g)  # (B, T, 2)
        pa = torch.randint(0, 5, (B, T), generator=g)  # (B, T)
        pa[:, 0] = -1
    return obs, pa, torch.rand(B, T, generator=g)


@pytest.mark.parametrize("box", [False, True])
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_ad_online_step_equals_the_full_pass_on_every_backbone(backbone, box):
    g = torch.Generator().manual_seed(1)
    for window in windows(backbone):
        cfg = config("ad", backbone, window, BOX if box else GRID, BOX if box else FIVE)
        model = ADModel(cfg, torch.Generator().manual_seed(0)).eval()
        obs, pa, pr = ad_inputs(3, 30, box, g)
        with torch.no_grad():
            full = model(obs, pa, pr)  # (B, T, out)
        cache = model.new_cache(3)
        steps = torch.stack([model.step(cache, obs[:, t], pa[:, t], pr[:, t]) for t in range(30)], dim=1)
        torch.testing.assert_close(steps, full, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_dpt_readouts_from_the_online_state_equal_the_full_pass_on_every_backbone(backbone):
    g = torch.Generator().manual_seed(2)
    for window in windows(backbone):
        model = DPTModel(config("dpt", backbone, window), torch.Generator().manual_seed(0)).eval()
        n = 20
        obs, nxt = torch.randint(0, 4, (2, n, 2), generator=g), torch.randint(0, 4, (2, n, 2), generator=g)
        act, rew = torch.randint(0, 5, (2, n), generator=g), torch.rand(2, n, generator=g)
        query = torch.randint(0, 4, (2, 2), generator=g)
        with torch.no_grad():
            full = model(obs, act, rew, nxt, query)  # (B, n+1, out)
            some = model(obs, act, rew, nxt, query, torch.tensor([0, 7, 20]))  # (B, 3, out)
        torch.testing.assert_close(some, full[:, [0, 7, 20]], atol=1e-4, rtol=0)
        cache = model.new_cache(2)
        online = []
        for j in range(n + 1):
            online.append(model.readout(cache, query))
            if j < n:
                model.append(cache, obs[:, j], act[:, j], rew[:, j], nxt[:, j])
        torch.testing.assert_close(torch.stack(online, 1), full, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backbone", list(ATTENTION))
def test_a_fork_shares_the_context_and_holds_only_its_suffix(backbone):
    """A fork keeps the root cache itself and, per node, only the tokens it committed; a fork of a
    fork copies nothing until a node commits; a readout writes nothing; a root that moved on, or a
    full linear cache, is an error that says so."""
    torch.manual_seed(0)
    net = make_backbone(config("ad", backbone, window=6)).eval()
    state = net.init_state(2, "cpu", torch.float32)
    x = torch.randn(2, 20, 16)  # (B, T, C)
    with torch.no_grad():
        for t in range(20):
            net.step(x[:, t : t + 1], state)
        node = state.fork(torch.tensor([1, 1, 0]))
        assert node.root is state and node.k.shape == (2, 3, 2, 0, 8)  # (L, B, nh, d, hs): no suffix
        for _ in range(2):
            net.step(torch.randn(3, 1, 16), node)
        assert node.k.shape == (2, 3, 2, 2, 8) and node.pos == 22 and state.pos == 20
        children = node.fork(torch.arange(3).repeat_interleave(5))  # 5 actions of 3 beams
        suffix = node.k.clone()
        net.step(torch.randn(15, 1, 16), children, commit=False)
        assert children.k is node.k and torch.equal(node.k, suffix)  # shared, and a readout wrote nothing
        kept = children.fork(torch.tensor([0, 7]))
        net.step(torch.randn(2, 1, 16), kept)
        assert kept.k.shape == (2, 2, 2, 3, 8) and torch.equal(node.k, suffix)  # copied on write
        if backbone == "t2mir":
            assert kept.pool.root is state.pool and kept.pool.inputs.shape == (2, 3, 16)  # the pool's suffix only
        net.step(x[:, :1], state)
        with pytest.raises(ValueError, match="fork it again"):
            net.step(torch.randn(2, 1, 16), kept)
    net = make_backbone(config("ad", backbone)).eval()  # no window: a linear cache of block_size 40
    state = net.init_state(1, "cpu", torch.float32)
    with torch.no_grad():
        for _ in range(40):
            net.step(torch.randn(1, 1, 16), state)
        node = state.fork(torch.tensor([0, 0]))
        assert net.step(torch.randn(2, 1, 16), node, commit=False).shape == (2, 1, 16)  # a readout still fits
        with pytest.raises(ValueError, match="cache is full"):
            net.step(torch.randn(2, 1, 16), node)


def test_s5_rollouts_run_past_the_training_length_at_constant_memory():
    """No block_size bound online: the state has one size whatever the rollout's length."""
    cfg = config("ad", "s5")
    assert cfg.capacity is None and config("ad", "transformer").capacity == 40
    model = ADModel(cfg, torch.Generator().manual_seed(0)).eval()
    cache = model.new_cache(2)
    size = cache.x.shape
    obs, pa, pr = ad_inputs(2, 1, False, torch.Generator().manual_seed(0))
    for _ in range(100):  # 2.5x block_size
        out = model.step(cache, obs[:, 0], pa[:, 0].clamp(min=0), pr[:, 0])
    assert cache.pos == 100 and cache.x.shape == size and torch.isfinite(out).all()


def test_pooled_inputs_hand_case():
    """Stream means over the window and the history; a readout averages its prefix and itself."""
    u = torch.tensor([[1.0, 3.0, 5.0, 7.0, 100.0]])[:, :, None]  # (1, 5, 1): 4 stream tokens, 1 readout
    s = Structure(4, window=2, readouts=torch.tensor([3]))
    got = pooled_inputs(u, s)[0, :, 0].tolist()
    assert got == [1.0, 2.0, 4.0, 6.0, (3.0 + 5.0 + 100.0) / 3]
    resets = torch.tensor([[True, False, True, False]])
    got = pooled_inputs(u[:, :4], Structure(4, resets=resets))[0, :, 0].tolist()
    assert got == [1.0, 2.0, 5.0, 6.0]


def batch_of(tasks: list[int], length: int = 12) -> HistoryBatch:
    n = len(tasks)
    steps = {"obs": np.zeros((n * length, 2), np.int64), "action": np.zeros(n * length, np.int64),
             "reward": np.arange(n * length, dtype=np.float32), "terminated": np.zeros(n * length, bool),
             "truncated": np.zeros(n * length, bool)}
    return HistoryBatch(steps=steps, lengths=np.full(n, length), task=np.asarray(tasks), task_params=np.zeros((n, 1)),
                        run=np.zeros(n, np.int64), source=np.zeros(n, np.int64),
                        episode_returns=[np.zeros(1)] * n)


def test_paired_batches_put_two_segments_of_one_task_in_rows_i_and_i_plus_half():
    tasks = [0, 0, 1, 1, 1, 2, 3, 3]
    weights = np.array([1, 1, 1, 0, 1, 1, 1, 0], float)  # histories 3 and 7 filtered out
    sampler = HistorySampler(batch_of(tasks), "ad", 5, weights, "sample")
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        b = sampler.sample(rng, 8, paired=True)
        ids = b["task_ids"]
        assert torch.equal(ids[:4], ids[4:])
        start = (b["prev_reward"][:, 1] // 12).long()  # the history each window came from
        seen.update(start.tolist())
        assert torch.equal(torch.as_tensor(np.asarray(tasks))[start], ids)
    assert 3 not in seen and 7 not in seen  # a zero-weight history is never anyone's partner
    with pytest.raises(ValueError, match="even batch size"):
        sampler.sample(rng, 7, paired=True)


def test_config_errors_name_the_backbone_fit_before_any_work():
    with pytest.raises(ConfigError, match="even head size"):
        load_config(None, ["model.n_embd=12", "model.n_head=4"])
    with pytest.raises(ConfigError, match="s5 backbone has no attention window"):
        load_config(None, ["model.backbone=s5", "model.window=8"])
    with pytest.raises(ConfigError, match="model.backbone"):
        load_config(None, ["model.backbone=lstm"])
    cfg = load_config(None, ["model.backbone=s5", "model.n_embd=12", "model.n_head=5"])  # no heads in S5
    assert cfg.model.backbone == "s5"


def test_s5_keeps_lambda_b_and_step_sizes_out_of_weight_decay():
    model = make_model(config("ad", "s5"))
    opt = make_optimizer(model, load_config(None), torch.device("cpu"))
    decay, no_decay = (set(map(id, g["params"])) for g in opt.param_groups)
    ssm = model.backbone.stack.h[0].ssm
    assert {id(ssm.B), id(ssm.log_neg_real), id(ssm.imag), id(ssm.log_step)} <= no_decay
    assert id(ssm.C) in decay and id(model.embed.weight) in decay


def test_t2mir_training_adds_the_aux_loss_and_moves_the_momentum_router(tmp_path):
    from icrl.cli import main

    run = tmp_path / "run"
    code = main(["train", "--quiet", "--out", str(run), "model.kind=ad", "model.backbone=t2mir", "model.n_layer=1",
                 "model.n_embd=16", "model.n_head=2", "model.n_task_experts=4", "model.n_token_experts=4",
                 "data.source=stream", "data.seq_len=40", "collect.episodes=1", "train.steps=6", "train.batch_size=4",
                 "train.log_every=3", "train.eval_every=0"])
    assert code == 0
    import json

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    aux = [r["train/aux_loss"] for r in rows if "train/aux_loss" in r]
    assert len(aux) == 2 and all(a > 0 for a in aux)
    from icrl.checkpoint import load_model

    model, mcfg = load_model(run / "checkpoint", torch.device("cpu"))
    initial = make_model(mcfg, torch.Generator().manual_seed(0)).backbone.moe.task.router_target  # seed 0's init
    moe = model.backbone.moe
    online, target = moe.task.gate.router, moe.task.router_target

    def gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
        return max(float((x - y).abs().max()) for x, y in zip(a.parameters(), b.parameters()))

    assert gap(target, initial) > 0  # updated after the optimiser steps ...
    assert gap(target, online) > 0  # ... but trailing the router, not copied from it
