"""The Bayes-optimal P(a* | D) against hand-computed cases, and scripts/posterior_gap.py end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from icrl.posterior import arm_posterior_probs, cross_entropy, entropy, linear_posterior_probs

BIG = 1e6  # pulls that pin an arm's mean to a point


def test_no_data_gives_the_prior_symmetry():
    p = arm_posterior_probs(np.zeros((3, 5)), np.zeros((3, 5)), sigma=0.3)
    np.testing.assert_allclose(p, np.full((3, 5), 0.2), atol=1e-12)
    assert entropy(p) == pytest.approx([math.log(5)] * 3)


def test_unpulled_uniform_arm_against_a_known_mean():
    # mu_0 ~ U[0, 1], mu_1 pinned at 0.3: P(a* = 0) = P(mu_0 > 0.3) = 0.7.
    p = arm_posterior_probs(np.array([0.0, BIG]), np.array([0.0, 0.3 * BIG]), sigma=0.3)
    np.testing.assert_allclose(p, [0.7, 0.3], atol=2e-3)


def test_bernoulli_and_beta_prior_posteriors():
    # One success on arm 0 under U[0, 1] -> Beta(2, 1), CDF m^2; arm 1 pinned at 0.6: 1 - 0.36.
    p = arm_posterior_probs(np.array([1.0, BIG]), np.array([1.0, 0.6 * BIG]), sigma=None)
    np.testing.assert_allclose(p[0], 0.64, atol=2e-3)
    # A Beta(2, 1) prior and no data is the same posterior; arm 1 pinned at 0.5: 1 - 0.25.
    p = arm_posterior_probs(np.array([0.0, BIG]), np.array([0.0, 0.5 * BIG]), sigma=None, prior="beta", alpha=2.0)
    np.testing.assert_allclose(p[0], 0.75, atol=2e-3)
    with pytest.raises(ValueError, match="prior"):
        arm_posterior_probs(np.zeros(2), np.zeros(2), sigma=0.3, prior="normal")


def test_linear_posterior_one_pull():
    # d = 1, theta ~ N(0, 1), phi = +1 / -1: a* = 0 iff theta > 0. One pull of arm 0 with r = 0.3,
    # sigma = 1: precision 1 + 1 = 2, mean 0.3 / 2, so P(a* = 0) = Phi(0.15 / sqrt(0.5)).
    features = np.array([[1.0], [-1.0]])
    xtx, xtr = np.array([[[1.0]], [[0.0]]]), np.array([[0.3], [0.0]])  # (2, 1, 1), (2, 1): one pull; no data
    p = linear_posterior_probs(xtx, xtr, features, 1.0, np.random.default_rng(0), n_samples=200_000)
    expected = 0.5 * (1 + math.erf(0.15 / math.sqrt(0.5) / math.sqrt(2)))
    np.testing.assert_allclose(p[0], [expected, 1 - expected], atol=5e-3)
    np.testing.assert_allclose(p[1], [0.5, 0.5], atol=5e-3)


def test_cross_entropy_is_entropy_plus_kl():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.5, 0.25])
    assert entropy(p) == pytest.approx(math.log(2))
    kl = 0.5 * math.log(0.5 / 0.25)  # the second arm's term is 0
    assert cross_entropy(p, np.log(q)) == pytest.approx(math.log(2) + kl)


@pytest.mark.parametrize("contexts", ["train", "own"])
def test_posterior_gap_script(contexts, tmp_path, capsys, monkeypatch):
    from icrl.checkpoint import save_checkpoint
    from icrl.methods import make_model
    from icrl.models.config import ModelConfig

    root = Path(__file__).parent.parent
    spec = importlib.util.spec_from_file_location("posterior_gap", root / "scripts/posterior_gap.py")
    gap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gap)
    mcfg = ModelConfig.from_dict(dict(kind="dpt", obs_sizes=[1], n_actions=5, n_layer=1, n_head=2, n_embd=16, block_size=20))
    model = make_model(mcfg, torch.Generator().manual_seed(0))
    save_checkpoint(tmp_path / "ckpt", model, mcfg, torch.optim.AdamW(model.parameters()), {"step": 0})
    monkeypatch.setattr(sys, "argv", ["posterior_gap", "--config", str(root / "configs/quickstart.yaml"),
                                      "--checkpoint", str(tmp_path / "ckpt"), "--batches", "2", "--batch-size", "8",
                                      "--json", str(tmp_path / "gap.json"), "--contexts", contexts,
                                      "env.kwargs.horizon=20"])
    gap.main()
    assert "KL(P||q)" in capsys.readouterr().out
    rows = json.loads((tmp_path / "gap.json").read_text())["rows"]
    assert [r["prefix"] for r in rows] == [[0, 0], [1, 4], [5, 19], [20, 20], [0, 20]]
    assert rows[0]["bayes"] == pytest.approx(math.log(5))  # before any data: the uniform prior over 5 arms
    assert all(r["kl"] > 0 for r in rows)  # an untrained model is not the posterior
