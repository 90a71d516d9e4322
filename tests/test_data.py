"""AD windows and DPT samples: alignment of inputs and targets, weights, streams."""
import numpy as np
import pytest
import torch

from icrl.data import HistorySampler, StreamSampler
from icrl.histories import HistoryBatch


def _batch(lengths=(6, 9), episodes_len=3):
    """Histories whose step t of history h has action (10*h + t) % 4 and reward 100*h + t."""
    n = sum(lengths)
    h = np.repeat(np.arange(len(lengths)), lengths)
    t = np.concatenate([np.arange(L) for L in lengths])
    steps = {"obs": (t % 3)[:, None].astype(np.int64), "next_obs": ((t + 1) % 3)[:, None].astype(np.int64),
             "action": ((10 * h + t) % 4).astype(np.int64), "reward": (100 * h + t).astype(np.float32),
             "terminated": np.zeros(n, bool), "truncated": (t % episodes_len) == episodes_len - 1,
             "oracle_action": (h + t % 3).astype(np.int64) % 4}
    return HistoryBatch(steps=steps, lengths=np.array(lengths), task=np.arange(len(lengths)),
                        task_params=np.zeros((len(lengths), 1)), run=np.zeros(len(lengths), np.int64),
                        source=np.zeros(len(lengths), np.int64), episode_returns=[np.zeros(2), np.zeros(3)])


def test_ad_window_shifts_previous_action_and_reward():
    s = HistorySampler(_batch(), "ad", 4)
    b = s.sample(np.random.default_rng(0), 64)
    pr, pa, target = b["prev_reward"].numpy(), b["prev_action"].numpy(), b["target"].numpy()
    h = (pr[:, 1] // 100).astype(int)  # history of each window
    t_prev = pr[:, 1:] - 100 * h[:, None]  # (B, 3) step index of the previous step at positions 1..3
    assert np.all(np.diff(t_prev, axis=1) == 1)
    assert np.array_equal(target[:, 1:], (10 * h[:, None] + t_prev + 1) % 4)  # a_t follows r_{t-1}
    assert np.array_equal(pa[:, 1:], target[:, :-1])  # prev action = previous target
    first = pa[:, 0] == -1  # windows that start a history have no previous step
    assert np.all(pr[first, 0] == 0) and np.all(t_prev[first, 0] == 0)


def test_ad_whole_history_window_starts_at_step_zero():
    s = HistorySampler(_batch(lengths=(5, 5)), "ad", 5)
    b = s.sample(np.random.default_rng(1), 8)
    assert torch.all(b["prev_action"][:, 0] == -1)
    assert torch.all(b["obs"][:, :, 0] == torch.tensor([0, 1, 2, 0, 1]))


def test_dpt_sample_context_and_label():
    batch = _batch()
    s = HistorySampler(batch, "dpt", 5)
    b = s.sample(np.random.default_rng(0), 32)
    assert b["ctx_obs"].shape == (32, 5, 1) and b["ctx_action"].shape == (32, 5)
    assert torch.equal(b["ctx_next_obs"], (b["ctx_obs"] + 1) % 3)
    # the label is the oracle action at the query state of the same history
    h_of = (b["ctx_reward"][:, 0] // 100).long()
    assert torch.equal(b["target"], (h_of + b["query_obs"][:, 0]) % 4)


def test_dpt_readout_subset():
    s = HistorySampler(_batch(), "dpt", 5, readouts=3)
    b = s.sample(np.random.default_rng(0), 4)
    p = b["prefixes"]
    assert len(p) == 3 and torch.all(p[1:] > p[:-1]) and p.min() >= 0 and p.max() <= 5


def test_weights_sample_and_loss_modes():
    batch = _batch(lengths=(6, 6, 6))
    w = np.array([0.0, 1.0, 3.0])
    s = HistorySampler(batch, "ad", 6, weights=w, weighting="sample")
    b = s.sample(np.random.default_rng(0), 4000)
    h = (b["prev_reward"][:, 1] // 100).long().numpy()
    freq = np.bincount(h, minlength=3) / 4000
    assert freq[0] == 0 and freq[2] / freq[1] == pytest.approx(3.0, rel=0.1)
    assert torch.all(b["weights"] == 1)
    s = HistorySampler(batch, "ad", 6, weights=w, weighting="loss")
    b = s.sample(np.random.default_rng(0), 300)
    h = (b["prev_reward"][:, 1] // 100).long().numpy()
    assert np.allclose(b["weights"].numpy(), w[h])
    with pytest.raises(ValueError, match="weight 0"):
        HistorySampler(batch, "ad", 6, weights=np.zeros(3), weighting="sample")


def test_short_histories_are_a_clear_error():
    with pytest.raises(ValueError, match="shorter than the AD window"):
        HistorySampler(_batch(), "ad", 7)


def test_stream_draws_fresh_tasks_and_mixes_sources():
    s = StreamSampler("dpt", "icrl/GaussianBandit-v0", {"n_arms": 3, "horizon": 10}, 10, ["dpt_random", "thompson"],
                      [0.5, 0.5])
    rng = np.random.default_rng(0)
    a, b = s.sample(rng, 6), s.sample(rng, 6)
    assert a["ctx_action"].shape == (6, 10) and not torch.equal(a["ctx_reward"], b["ctx_reward"])
    assert a["target"].max() < 3


def test_symmetries_map_every_sample_by_one_drawn_matrix_after_the_other_draws():
    """AD windows of a Box family: obs, the previous action and the label are mapped by the sample's
    matrix (the first step's NaN sentinel stays NaN); with no symmetries the batch is unchanged."""
    from icrl.histories import HistoryBatch

    rng = np.random.default_rng(0)
    n, L = 4, 30
    steps = {"obs": rng.normal(size=(n * L, 2)).astype(np.float32), "action": rng.uniform(-1, 1, (n * L, 2)).astype(np.float32),
             "reward": rng.normal(size=n * L).astype(np.float32), "terminated": np.zeros(n * L, bool),
             "truncated": np.zeros(n * L, bool)}
    batch = HistoryBatch(steps=steps, lengths=np.full(n, L), task=np.arange(n), task_params=np.zeros((n, 1)),
                         run=np.zeros(n, np.int64), source=np.zeros(n, np.int64), episode_returns=[np.zeros(1)] * n)
    swap = np.array([[0.0, -1.0], [1.0, 0.0]])  # a rotation by 90 degrees
    plain = HistorySampler(batch, "ad", L, discrete_actions=False)
    mapped = HistorySampler(batch, "ad", L, discrete_actions=False, symmetries=[(swap, swap)])
    a = plain.sample(np.random.default_rng(1), 8)
    b = mapped.sample(np.random.default_rng(1), 8)
    m = torch.as_tensor(swap, dtype=torch.float32)
    torch.testing.assert_close(b["obs"], a["obs"] @ m.T)
    torch.testing.assert_close(b["target"], a["target"] @ m.T)
    torch.testing.assert_close(b["prev_action"], a["prev_action"] @ m.T, equal_nan=True)
    assert torch.isnan(b["prev_action"][:, 0]).all() == torch.isnan(a["prev_action"][:, 0]).all()
    torch.testing.assert_close(b["prev_reward"], a["prev_reward"])
    both = HistorySampler(batch, "ad", L, discrete_actions=False, symmetries=[(np.eye(2), np.eye(2)), (swap, swap)])
    c = both.sample(np.random.default_rng(1), 64)
    d = plain.sample(np.random.default_rng(1), 64)
    same = (c["obs"] == d["obs"]).all(-1).all(-1)  # (B,) the identity's samples
    assert 10 < int(same.sum()) < 54  # both matrices drawn
