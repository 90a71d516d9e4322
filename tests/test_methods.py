"""The method contract (icrl.methods): every registered method, with and without DICP's world
model, on every backbone: sampled, trained one step and stepped online through the contract alone;
the registry and the config's choices agree."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from icrl.config import ModelSection
from icrl.data import HistorySampler
from icrl.policies import ModelPolicy
from icrl.histories import HistoryBatch
from icrl.methods import METHODS, make_model, method_loss, method_of
from icrl.models import BACKBONES, ModelConfig


def _histories(n: int = 4, length: int = 24) -> HistoryBatch:
    """n histories on a 3-cell chain with 4 actions, reward 1 in cell 2."""
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 3, size=n * length)
    steps = {"obs": obs, "next_obs": (obs + 1) % 3, "action": rng.integers(0, 4, size=n * length),
             "reward": (obs == 2).astype(np.float32), "oracle_action": np.full(n * length, 1),
             "terminated": np.zeros(n * length, bool), "truncated": np.arange(n * length) % 6 == 5}
    return HistoryBatch(steps=steps, lengths=np.full(n, length), task=np.arange(n), task_params=np.zeros((n, 1)),
                        run=np.zeros(n, np.int64), source=np.zeros(n, np.int64),
                        episode_returns=[np.zeros(4) for _ in range(n)])


def test_the_config_offers_every_registered_method_and_backbone():
    fields = {f.name: f.metadata for f in dataclasses.fields(ModelSection)}
    assert sorted(fields["kind"]["choices"]) == sorted(METHODS)
    assert sorted(fields["backbone"]["choices"]) == sorted(BACKBONES)
    with pytest.raises(ValueError, match="unknown method 'bc'"):
        method_of("bc")


@pytest.mark.parametrize("world_model", [False, True], ids=["plain", "dicp"])
@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("kind", list(METHODS))
def test_every_method_trains_and_acts_on_every_backbone(kind, backbone, world_model):
    method = METHODS[kind]
    cfg = ModelConfig(kind=kind, obs_space={"type": "Discrete", "n": 3}, action_space={"type": "Discrete", "n": 4},
                      backbone=backbone, n_layer=1, n_head=2, n_embd=16, block_size=12, state_size=8,
                      n_token_experts=2, n_task_experts=2, world_model=world_model,
                      reward_values=[0.0, 1.0] if world_model else [])
    model = make_model(cfg, torch.Generator().manual_seed(0))
    assert isinstance(model, method.dicp_class if world_model else method.model_class)
    sampler = HistorySampler(_histories(), kind, 12, readouts=4, world_model=world_model)
    batch = sampler.sample(np.random.default_rng(0), 4, paired=backbone == "t2mir")
    loss, parts = method_loss(model, kind, batch)
    aux = model.aux_loss()
    (loss if aux is None else loss + aux).backward()
    assert torch.isfinite(loss) and (set(parts) == {"loss_policy", "loss_reward", "loss_next_obs"}) == world_model
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    policy = ModelPolicy(model, 3, np.random.default_rng(1))
    obs = np.zeros(3, np.int64)
    for _ in range(5):
        actions = policy.act(obs)  # (3,)
        assert actions.shape == (3,) and np.all((actions >= 0) & (actions < 4))
        policy.update(obs, actions, np.ones(3, np.float32), (obs + 1) % 3, np.zeros(3, bool), np.zeros(3, bool))
        obs = (obs + 1) % 3
