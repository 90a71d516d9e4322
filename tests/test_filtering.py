"""LHF (icrl.filtering): hand-computed scores, probabilities, Algorithm 1, and a real dataset."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from icrl.collect import collect
from icrl.config import load_config
from icrl.envs import TaskDistribution
from icrl.filtering import (
    bandit_window_returns,
    filter_dataset,
    lhf_probabilities,
    lhf_scores,
    load_weights,
    plot_best_worst,
    resample_counts,
    score_store,
    task_scores,
    weighting_of,
)
from icrl.store import HistoryStore
from icrl.integrity import verify

DATA = ["env.kwargs.horizon=200", "collect.n_tasks=10", "collect.runs_per_task=4",
        "collect.algorithms=thompson,random", "collect.histories_per_shard=16", "filter.window=20"]


# ----------------------------------------------------------------------------- scores
def test_scores_of_hand_computed_histories():
    r_max = 4.0
    returns = [
        # monotone 1,2,3,4: Improvement = (2.5 + (4 - 1)) / 8 = 0.6875; no drop -> Stability 1
        np.array([1.0, 2.0, 3.0, 4.0]),
        # 4,2,3,0: diffs -2, +1, -3 -> drops mean -2.5 -> Stability 1 - 2.5/4 = 0.375;
        # Improvement = (2.25 + 4) / 8 = 0.78125
        np.array([4.0, 2.0, 3.0, 0.0]),
        # constant 3,3,3: Improvement = (3 + 0) / 8 = 0.375; Stability 1
        np.array([3.0, 3.0, 3.0]),
        # single episode 2: Improvement = (2 + 0) / 8 = 0.25; no differences -> Stability 1
        np.array([2.0]),
    ]
    assert lhf_scores(returns, r_max) == pytest.approx([0.6875 + 1, 0.78125 + 0.375, 0.375 + 1, 0.25 + 1])
    # lam = 0.5: U = Improvement + 0.5 * Stability
    assert lhf_scores(returns, r_max, lam=0.5) == pytest.approx(
        [0.6875 + 0.5, 0.78125 + 0.1875, 0.375 + 0.5, 0.25 + 0.5])
    # rises are not averaged in: 0,4,3 has one drop (-1) -> Stability 1 - 1/4; Improvement (7/3 + 4)/8
    assert lhf_scores([np.array([0.0, 4.0, 3.0])], r_max) == pytest.approx([(7 / 3 + 4) / 8 + 0.75])


@pytest.mark.parametrize("args, match", [
    (([np.ones(3)], 0.0), "r_max"),
    (([np.ones(3)], -1.0), "r_max"),
    (([], 1.0), "returns is empty"),
    (([np.array([])], 1.0), "non-empty"),
    (([np.array([1.0, np.nan])], 1.0), "NaN"),
    (([np.ones(3)], 1.0, -0.1), "filter.lam"),
])
def test_scores_reject_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        lhf_scores(*args)


# ----------------------------------------------------------------------------- probabilities
def test_linear_probabilities_min_max_within_the_task():
    u = np.array([1.2, 0.7, 2.2, 1.7])
    # (U - 0.7) / (2.2 - 0.7) = [0.5/1.5, 0, 1, 1/1.5]
    assert lhf_probabilities(u) == pytest.approx([1 / 3, 0.0, 1.0, 2 / 3])
    assert lhf_probabilities(np.full(5, 1.3)).tolist() == [1.0] * 5  # all equal: uniform
    assert lhf_probabilities(np.array([0.4])).tolist() == [1.0]  # one history
    with pytest.raises(ValueError, match="filter.mode"):
        lhf_probabilities(u, mode="rank")


def test_softmax_probabilities_match_hand_computation():
    # U / alpha = [1, 2, 3]: softmax ∝ e, e^2, e^3; min-max -> (e^2 - e) / (e^3 - e) = 1 / (e + 1)
    p = lhf_probabilities(np.array([0.5, 1.0, 1.5]), mode="softmax", alpha=0.5)
    assert p == pytest.approx([0.0, 1 / (math.e + 1), 1.0])
    # a lower temperature sharpens: the middle history moves towards 0
    assert lhf_probabilities(np.array([0.5, 1.0, 1.5]), mode="softmax", alpha=0.1)[1] < p[1]
    assert lhf_probabilities(np.full(3, 2.0), mode="softmax").tolist() == [1.0] * 3


# ----------------------------------------------------------------------------- Algorithm 1
def _algorithm1(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's loop, literally: one history at a time until the task is full again."""
    counts, accepted = np.zeros(len(p), np.int64), 0
    while accepted < len(p):
        for i in range(len(p)):
            if rng.random() < p[i]:
                counts[i] += 1
                accepted += 1
                if accepted == len(p):
                    break
    return counts


def test_resample_keeps_the_task_size_and_never_draws_zero_weight_histories():
    p = np.array([0.0, 0.3, 0.0, 1.0, 0.01])
    rng = np.random.default_rng(0)
    for _ in range(300):
        counts = resample_counts(p, rng)
        assert counts.sum() == 5 and counts[[0, 2]].tolist() == [0, 0]
    assert resample_counts(np.zeros(4), rng).tolist() == [1, 1, 1, 1]  # all zero: uniform
    assert resample_counts(np.ones(4), rng).tolist() == [1, 1, 1, 1]
    a = resample_counts(p, np.random.default_rng(7))
    assert a.tolist() == resample_counts(p, np.random.default_rng(7)).tolist()  # seeded
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        resample_counts(np.array([0.5, 1.5]), rng)


def test_resample_frequencies_converge_to_normalised_p():
    levels = np.array([0.0, 0.25, 0.5, 1.0])
    p = np.tile(levels, 5000)  # one task of 20k histories, the four levels interleaved
    counts = resample_counts(p, np.random.default_rng(1))
    assert counts.sum() == len(p)
    freq = np.array([counts[p == v].sum() for v in levels]) / len(p)
    assert freq == pytest.approx(levels / levels.sum(), abs=0.01)


def test_resample_has_the_distribution_of_the_literal_algorithm():
    """Drawing non-empty passes only does not change Algorithm 1's multiplicities."""
    p = np.array([0.2, 0.9, 0.05])
    fast, slow = np.random.default_rng(2), np.random.default_rng(3)
    a = np.array([resample_counts(p, fast) for _ in range(4000)])
    b = np.array([_algorithm1(p, slow) for _ in range(4000)])
    assert a.mean(0) == pytest.approx(b.mean(0), abs=0.05)
    assert (a[:, 0] >= 1).mean() == pytest.approx((b[:, 0] >= 1).mean(), abs=0.03)


def test_bandit_windows_drop_the_ragged_tail():
    # 0+1+2, 3+4+5, 6+7+8; pull 9 is dropped
    assert bandit_window_returns(np.arange(10.0), 3).tolist() == [3.0, 12.0, 21.0]
    assert bandit_window_returns(np.ones(6), 6).tolist() == [6.0]
    with pytest.raises(ValueError, match="lower filter.window"):
        bandit_window_returns(np.ones(5), 6)


# ----------------------------------------------------------------------------- datasets
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("lhf") / "data"
    collect(load_config(None, DATA), out, progress=False)
    return out


def test_score_store_prefers_thompson_over_random(dataset):
    cfg = load_config(None, DATA)
    with HistoryStore(dataset) as store:
        arrays = score_store(store, cfg)
        thompson = store.source == store.sources.index("thompson")
        per_task = np.bincount(store.task, weights=arrays["counts"])
        r_max = 20 * store.task_params.max(axis=1)  # W * max_a mu_a (Gaussian task = arm means)
        again = score_store(store, cfg)
        others = {use: score_store(store, load_config(None, DATA + [f"filter.use={use}"]))
                  for use in ("sample", "loss")}
    assert arrays["U"][thompson].mean() > arrays["U"][~thompson].mean()
    assert arrays["P"][thompson].mean() > arrays["P"][~thompson].mean()
    assert per_task.tolist() == [4.0] * 10  # Algorithm 1 keeps every task's size
    assert np.all(arrays["counts"][arrays["P"] == 0] == 0)
    assert arrays["r_max"] == pytest.approx(r_max)
    assert arrays["weights"].tolist() == arrays["counts"].tolist() and weighting_of(cfg) == "sample"
    assert again["counts"].tolist() == arrays["counts"].tolist()  # same seed, same resampling
    for use, other in others.items():  # sample and loss both hand P to training
        assert weighting_of(load_config(None, DATA + [f"filter.use={use}"])) == use
        assert other["weights"].tolist() == arrays["P"].tolist()


class _EpisodicDist(TaskDistribution):
    """A fake non-bandit family with a fixed R_max; scores use the stored episode returns."""

    task_shape = (5,)

    def __init__(self, r_max: float) -> None:
        self.r_max = r_max

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.zeros((n, 5))

    def max_return(self, tasks: np.ndarray) -> np.ndarray:
        return np.full(len(tasks), self.r_max)


def test_score_store_uses_episode_returns_without_means(dataset):
    cfg = load_config(None, DATA)
    with HistoryStore(dataset) as store:
        arrays = score_store(store, cfg, _EpisodicDist(10.0))
        idx = np.flatnonzero(store.task == 0)  # shards group histories by source, not by task
        task0 = [store.episode_returns[i] for i in idx]  # one episode each
        # R_max 0 (nothing to earn): scored against the largest |return| of the task instead
        fallback = score_store(store, cfg, _EpisodicDist(0.0))
    assert len(idx) == 4 and arrays["r_max"].tolist() == [10.0] * 40
    assert arrays["U"][idx] == pytest.approx(lhf_scores(task0, 10.0))
    biggest = max(abs(r).max() for r in task0)
    assert fallback["r_max"][idx] == pytest.approx([biggest] * 4)
    assert fallback["U"][idx] == pytest.approx(lhf_scores(task0, biggest))
    assert fallback["P"] == pytest.approx(arrays["P"])  # linear P ignores R_max's scale


def test_negative_returns_are_shifted_by_the_tasks_worst_return():
    """Point-Robot-like returns (minus a distance): b = -10 is subtracted, so R' = [0, 2, 5],
    [0, 0, 0] and [4, 1, 3] against R'_max = -3 + 10 = 7. By hand, with U = (mean + range) / 14
    + (1 + mean drop / 7): U_1 = (7/3 + 5) / 14 + 1, U_2 = 0 + 1, U_3 = (8/3 + 3) / 14 + 1 - 3/7."""
    returns = [np.array([-10.0, -8.0, -5.0]), np.array([-10.0, -10.0, -10.0]), np.array([-6.0, -9.0, -7.0])]
    u, r_max, shift = task_scores(returns, r_max=-3.0, lam=1.0)
    assert shift == -10.0 and r_max == 7.0
    assert u[0] == pytest.approx((7 / 3 + 5) / 14 + 1)
    assert u[1] == pytest.approx(1.0)
    assert u[2] == pytest.approx((((4 + 1 + 3) / 3) + 3) / 14 + 1 - 3 / 7)
    # the improving learner gets P = 1; the drop makes the third one the lowest, P = 0
    assert lhf_probabilities(u).tolist() == pytest.approx([1.0, (1 - u[2]) / (u[0] - u[2]), 0.0])
    # non-negative returns are untouched: the same scores as lhf_scores
    pos = [np.array([0.0, 2.0, 5.0]), np.array([1.0, 1.0, 1.0])]
    u_pos, r, b = task_scores(pos, r_max=7.0)
    assert b == 0.0 and r == 7.0 and u_pos == pytest.approx(lhf_scores(pos, 7.0))


def test_filter_dataset_writes_a_derived_file_and_keeps_shards(dataset, tmp_path):
    cfg = load_config(None, DATA + ["filter.use=loss"])
    shards = [e["sha256"] for e in json.loads((dataset / "manifest.json").read_text())["shards"]]
    assert load_weights(dataset) is None  # not filtered yet
    report = filter_dataset(cfg, dataset)
    assert verify(dataset) == []
    assert [e["sha256"] for e in json.loads((dataset / "manifest.json").read_text())["shards"]] == shards
    src = report["per_source"]
    assert set(src) == {"thompson", "random"} and src["thompson"]["U"]["mean"] > src["random"]["U"]["mean"]
    assert all(s["kept"] + s["dropped"] == s["histories"] for s in src.values())
    assert sum(s["copies"] for s in src.values()) == 40 and report["weighting"] == "loss"
    assert len(report["best"]) == len(report["worst"]) == 3
    with HistoryStore(dataset) as store:
        arrays = store.read_derived("lhf")
        assert arrays["U"][report["best"][0]] == pytest.approx(arrays["U"].max())
        assert arrays["U"][report["worst"][0]] == pytest.approx(arrays["U"].min())
        png = plot_best_worst(store, report, tmp_path / "lhf.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size < 200_000
    weights, weighting = load_weights(dataset)
    assert weighting == "loss" and weights.tolist() == arrays["P"].tolist()
    assert load_weights(dataset, cfg) is not None
    assert load_weights(dataset, load_config(None, DATA + ["filter.lam=0.5"])) is None  # stale
