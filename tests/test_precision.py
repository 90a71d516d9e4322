"""train.precision (icrl/precision.py): fp32 is the plain model, bf16 autocast stays within bf16 of it
(losses, and the online step against the full pass), and auto measures without leaving a trace."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from icrl import precision as precision_module
from icrl.config import ConfigError, load_config
from icrl.evaluation import online_steps
from icrl.policies import ModelPolicy
from icrl.models import ADModel, DPTModel, head_loss
from icrl.precision import autocast, resolve_precision
from icrl.training import train

from tests.test_models import ad_batch, ad_config, dpt_batch, dpt_config

CPU = torch.device("cpu")


def ad_loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    obs, pa, pr, target = batch
    return head_loss(model.head, model(obs, pa, pr), target, torch.ones(len(obs)))


def ad_training_batch(B: int = 4, T: int = 48) -> tuple[torch.Tensor, ...]:
    obs, pa, pr = ad_batch(B, T)
    return obs, pa, pr, torch.randint(0, 4, (B, T), generator=torch.Generator().manual_seed(5))


def test_fp32_runs_without_autocast_and_bf16_within_bf16_of_it():
    model = ADModel(ad_config(dropout=0.0), torch.Generator().manual_seed(0))
    batch = ad_training_batch()
    plain = ad_loss_fn(model, batch)
    with autocast(CPU, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
        fp32 = ad_loss_fn(model, batch)
    assert torch.equal(fp32, plain)  # bit for bit what training computed before train.precision
    with autocast(CPU, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        bf16 = ad_loss_fn(model, batch)
    assert bf16.dtype == torch.float32  # the loss itself is computed in fp32
    assert bf16 != fp32 and abs(bf16.item() - fp32.item()) < 2e-2 * fp32.item()
    bf16.backward()
    assert all(p.grad is None or (p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all())
               for p in model.parameters())
    with pytest.raises(ValueError, match="resolve auto"):
        autocast(CPU, "auto")


@pytest.mark.parametrize("was_training", [True, False])
def test_auto_measures_and_leaves_rng_grads_and_mode_as_they_were(was_training):
    model = ADModel(ad_config(dropout=0.1), torch.Generator().manual_seed(0))  # dropout draws from the torch RNG
    batch = ad_training_batch()
    ad_loss_fn(model, batch).backward()
    grads = [p.grad for p in model.parameters()]
    values = [g.clone() for g in grads]
    model.train(was_training)
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    choice, info = resolve_precision("auto", CPU, model, lambda: batch, ad_loss_fn, warmup=1, repeats=3)
    assert choice in ("fp32", "bf16") and info["choice"] == choice and info["measured"]
    assert info["fp32_ms"] > 0 and info["bf16_ms"] > 0 and info["speedup"] == info["fp32_ms"] / info["bf16_ms"]
    assert choice == ("bf16" if info["speedup"] >= precision_module.MARGIN else "fp32")
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is g and torch.equal(g, v) for p, g, v in zip(model.parameters(), grads, values))
    assert model.training == was_training


def test_fixed_precisions_are_not_measured_and_unknown_ones_refused():
    def never() -> None:
        raise AssertionError("a fixed precision must not draw a batch")

    model = ADModel(ad_config(), torch.Generator().manual_seed(0))
    for p in ("fp32", "bf16"):
        assert resolve_precision(p, CPU, model, never, ad_loss_fn) == (p, {"choice": p, "measured": False})
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", CPU, model, never, ad_loss_fn)


def test_eval_auto_times_online_steps_and_a_bf16_policy_acts():
    model = DPTModel(dpt_config(block_size=20), torch.Generator().manual_seed(0)).eval()
    choice, info = resolve_precision("auto", CPU, model, 6, online_steps, backward=False, warmup=1, repeats=3)
    assert choice in ("fp32", "bf16") and info["measured"] and not model.training
    s, a, r, s2, q = dpt_batch(6, 20)
    policy = ModelPolicy(model, 6, np.random.default_rng(0), precision="bf16")
    for t in range(5):
        actions = policy.act(q[:, t].numpy())
        assert actions.shape == (6,) and ((actions >= 0) & (actions < 4)).all()
        policy.update(s[:, t].numpy(), a[:, t].numpy(), r[:, t].numpy(), s2[:, t].numpy(), np.zeros(6, bool),
                      np.zeros(6, bool))


def test_config_refuses_another_precision_in_one_line():
    assert load_config(None, ["train.precision=bf16"]).train.precision == "bf16"
    assert load_config().train.precision == "fp32"  # reproducible by default: auto depends on the timing
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.precision=fp16"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("train.precision:") and all(p in msg for p in ("auto", "fp32", "bf16"))


TINY = ["env.kwargs.n_arms=3", "env.kwargs.horizon=20", "model.n_layer=1", "model.n_head=2", "model.n_embd=16",
        "model.dropout=0.1", "data.source=stream", "collect.algorithms=dpt_random", "train.batch_size=8",
        "train.steps=8", "train.warmup_steps=2", "train.log_every=4", "train.checkpoint_every=8"]


def test_an_auto_run_that_keeps_fp32_equals_the_fp32_run(tmp_path, monkeypatch):
    """The measurement's batch comes from its own stream and its dropout draws are undone, so a run
    whose measurement kept fp32 trains exactly as a run that never measured."""
    monkeypatch.setattr(precision_module, "MARGIN", float("inf"))  # measure, then keep fp32 whatever the timing
    runs = {}
    for p in ("fp32", "auto"):
        train(load_config(None, [*TINY, f"train.precision={p}"]), tmp_path / p, progress=False)
        runs[p] = [json.loads(line) for line in (tmp_path / p / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/loss"] for r in runs["auto"]] == [r["train/loss"] for r in runs["fp32"]]
    assert runs["auto"][0]["time/precision_bf16"] == 0 and runs["auto"][0]["time/bf16_speedup"] > 0
    assert "time/bf16_speedup" not in runs["fp32"][0] and "time/precision_bf16" not in runs["auto"][1]
    fp32, auto = (load_file(str(tmp_path / p / "checkpoint" / "model.safetensors")) for p in runs)
    assert fp32.keys() == auto.keys() and all(torch.equal(fp32[k], auto[k]) for k in fp32)
    assert json.loads((tmp_path / "auto" / "checkpoint" / "trainer.json").read_text())["precision"] == "fp32"


# ---------------------------------------------------------------- online step = full pass, under bf16 autocast


def scaled(model: torch.nn.Module) -> torch.nn.Module:
    """The model with logits of a few units (a trained model's scale): a bf16 tolerance then means something."""
    with torch.no_grad():
        model.head.weight.mul_(10)
    return model.eval()


@pytest.mark.parametrize("window", [None, 32])
def test_ad_cached_rollout_equals_full_pass_under_bf16_autocast(window):
    T = 120
    model = scaled(ADModel(ad_config(window=window), torch.Generator().manual_seed(0)))
    obs, pa, pr = ad_batch(3, T)
    with torch.no_grad():
        fp32 = model(obs, pa, pr)  # (B, T, A)
        with autocast(CPU, "bf16"):
            full = model(obs, pa, pr).float()  # (B, T, A)
            cache = model.new_cache(3)
            steps = torch.stack([model.step(cache, obs[:, t], pa[:, t], pr[:, t]).float() for t in range(T)], 1)
    assert not torch.equal(full, fp32)  # autocast ran in bf16
    torch.testing.assert_close(steps, full, atol=5e-2, rtol=0)
    torch.testing.assert_close(full, fp32, atol=5e-2, rtol=0)


def test_dpt_online_readouts_equal_full_pass_under_bf16_autocast():
    n = 60
    model = scaled(DPTModel(dpt_config(block_size=n), torch.Generator().manual_seed(0)))
    s, a, r, s2, q = dpt_batch(2, n)
    with torch.no_grad(), autocast(CPU, "bf16"):
        full = model(s, a, r, s2, q).float()  # (B, n+1, A)
        cache, rows = model.new_cache(2), []
        for j in range(n + 1):
            rows.append(model.readout(cache, q[:, j]).float())
            if j < n:
                model.append(cache, s[:, j], a[:, j], r[:, j], s2[:, j])
    torch.testing.assert_close(torch.stack(rows, dim=1), full, atol=5e-2, rtol=0)
