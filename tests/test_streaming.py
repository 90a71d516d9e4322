"""Streaming reads (icrl.steps): the same batches as the in-memory sampler, corruption caught where
it is read, a start that hashes nothing, and the filter as a stage of its own."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from icrl import histories
from icrl.collect import collect
from icrl.config import ConfigError, load_config
from icrl.data import HistorySampler
from icrl.filtering import filter_stage, load_weights
from icrl.integrity import quick_check
from icrl.spaces import EnvSpec
from icrl.steps import ShardSteps
from icrl.store import HistoryStore
from icrl.data import make_sampler

BANDIT = ["env.kwargs.horizon=40", "collect.n_tasks=6", "collect.runs_per_task=3", "collect.algorithms=thompson,random",
          "collect.histories_per_shard=5", "filter.enabled=true", "filter.window=10"]
BOX = ["env.id=icrl/PointRobot-v0", "collect.n_tasks=4", "collect.runs_per_task=2", "collect.algorithms=random",
       "collect.episodes=3", "collect.histories_per_shard=3"]


@pytest.fixture(scope="module")
def bandit_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "data"
    collect(load_config(None, BANDIT), out, progress=False)
    return out


@pytest.fixture(scope="module")
def box_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream-box") / "data"
    collect(load_config(None, BOX), out, progress=False)
    return out


def _samplers(path, kind, length, weights=None, weighting="none", **kw):
    """The in-memory and the streaming sampler of one dataset."""
    with HistoryStore(path) as store:
        batch, discrete = store.load(), store.spec.discrete_actions
    streamed = ShardSteps(HistoryStore(path, check="index"), discrete)
    return (HistorySampler(batch, kind, length, weights, weighting, discrete_actions=discrete, **kw),
            HistorySampler(streamed, kind, length, weights, weighting, discrete_actions=discrete, **kw))


def _same_batches(a, b, n=5, **kw):
    ra, rb = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(n):
        x, y = a.sample(ra, 8, **kw), b.sample(rb, 8, **kw)
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and torch.equal(x[k].nan_to_num(7.0), y[k].nan_to_num(7.0)), k


@pytest.mark.parametrize("kind, kw", [("ad", {}), ("ad", {"world_model": True, "readouts": 5}),
                                      ("dpt", {"readouts": 4}), ("dpt", {"world_model": True, "readouts": 4})])
def test_streaming_draws_the_same_batches_as_memory(bandit_data, kind, kw):
    cfg = load_config(None, BANDIT)
    filter_stage(cfg, bandit_data)
    weights, _ = load_weights(bandit_data, cfg)
    for weighting in ("sample", "loss"):
        _same_batches(*_samplers(bandit_data, kind, 12, weights, weighting, **kw))
    _same_batches(*_samplers(bandit_data, kind, 12, **kw), paired=True)


def test_streaming_box_actions_and_their_sentinel(box_data):
    memory, streamed = _samplers(box_data, "ad", 30)
    _same_batches(memory, streamed)
    b = streamed.sample(np.random.default_rng(0), 64)
    assert b["prev_action"].dtype == torch.float32 and b["target"].shape == (64, 30, 2)


def test_a_ddp_share_samples_only_its_own_shards(bandit_data):
    store = HistoryStore(bandit_data, check="index")
    n_shards = len(store.shard_starts) - 1
    assert n_shards >= 3
    seen = []
    for rank in range(2):
        steps = ShardSteps(store, True, shards=list(range(rank, n_shards, 2)))
        s = HistorySampler(steps, "ad", 12)
        h_shard = steps.history_shards()
        rng = np.random.default_rng(rank)
        drawn = rng.choice(len(s.lengths), size=2000, p=s.p)  # the draw sample() makes
        assert set(h_shard[drawn].tolist()) == set(range(rank, n_shards, 2))
        seen.append(set(drawn.tolist()))
    assert seen[0] | seen[1] == set(range(store.n_histories))  # together the ranks cover the dataset


def _flip_chunk(path: Path, field: str) -> None:
    """Flip bytes inside the first data chunk of ``steps/<field>`` (the metadata stays valid)."""
    with h5py.File(path, "r") as f:
        info = f[f"steps/{field}"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    a = info.byte_offset + info.size // 2
    data[a:a + 4] = bytes(255 - x for x in data[a:a + 4])
    path.write_bytes(bytes(data))


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_a_flipped_chunk_is_caught_where_it_is_read(bandit_data, tmp_path):
    data = _copy(bandit_data, tmp_path / "data")
    _flip_chunk(data / "shard-00001.h5", "reward")
    assert quick_check(data) == []  # the cheap start check cannot see it...
    store = HistoryStore(data, check="index")
    assert store.has_chunk_checksums(1)
    steps = ShardSteps(store, True)
    first = int(store.offsets[np.searchsorted(store.offsets, store.shard_starts[1])])
    steps.take("obs", np.array([[first, first + 1]]))  # another field of that shard reads fine
    with pytest.raises(ValueError, match=r"shard-00001.h5: steps/reward rows .* unreadable.*icrl verify"):
        steps.take("reward", np.array([[first, first + 1]]))  # ...its checksum catches it on read


def test_a_shard_without_chunk_checksums_is_hashed_on_first_read(bandit_data, tmp_path):
    data = _copy(bandit_data, tmp_path / "data")
    shard = data / "shard-00000.h5"
    with h5py.File(shard, "r+") as f:  # as written before chunk checksums: the same values, no filter
        for k in list(f["steps"]):
            x, chunks = f["steps"][k][()], f["steps"][k].chunks
            del f["steps"][k]
            f["steps"].create_dataset(k, data=x, chunks=chunks)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["shards"][0].update(sha256=histories.file_sha256(shard), bytes=shard.stat().st_size)
    (data / "manifest.json").write_text(json.dumps(manifest))
    store = HistoryStore(data, check="index")
    assert not store.has_chunk_checksums(0) and store.has_chunk_checksums(1)
    ShardSteps(store, True).take("reward", np.array([[0, 1, 2]]))  # sound: its hash matches
    _flip_chunk(shard, "reward")
    with pytest.raises(ValueError, match="shard-00000.h5: sha256 mismatch.*icrl verify"):
        ShardSteps(HistoryStore(data, check="index"), True).take("obs", np.array([[0, 1, 2]]))


def test_quick_check_sees_a_truncated_or_missing_shard(bandit_data, tmp_path):
    data = _copy(bandit_data, tmp_path / "data")
    shard = data / "shard-00002.h5"
    shard.write_bytes(shard.read_bytes()[:-100])
    assert any("shard-00002.h5" in p and "truncated" in p for p in quick_check(data))
    shard.unlink()
    assert any("shard-00002.h5: listed in manifest.json but missing" in p for p in quick_check(data))


def test_a_streaming_start_hashes_nothing_and_reads_no_step(bandit_data, monkeypatch):
    cfg = load_config(None, BANDIT + [f"data.dataset={bandit_data}", "data.streaming=true", "data.seq_len=12",
                                 "model.kind=ad"])
    filter_stage(cfg, bandit_data)
    hashed = []
    monkeypatch.setattr(histories, "file_sha256", lambda p: hashed.append(p))
    monkeypatch.setattr("icrl.steps.file_sha256", lambda p: hashed.append(p))
    monkeypatch.setattr("icrl.store.HistoryStore.load", lambda self: pytest.fail("the stream loaded the dataset"))
    sampler, length = make_sampler(cfg, bandit_data.parent, EnvSpec.for_env(cfg.env.id, cfg.env.kwargs))
    assert isinstance(sampler.steps, ShardSteps) and length == 12 and hashed == []
    sampler.sample(np.random.default_rng(0), 4)
    assert hashed == []  # every shard carries chunk checksums: nothing to hash


def test_an_in_memory_start_reads_each_step_field_once(bandit_data, monkeypatch):
    with HistoryStore(bandit_data) as store:
        expected = store.load()
    reads = []
    real = h5py.Dataset.__getitem__

    def counted(ds, key):
        if ds.name.startswith("/steps/"):
            reads.append((ds.file.filename, ds.name))
        return real(ds, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counted)
    with HistoryStore(bandit_data, check="content") as store:
        first = store.load()
        assert len(reads) == len(set(reads)) == len(store.fields) * len(store.shard_starts[1:])  # the check's reads only
        again = store.load()  # a second load reads the shards again
    for batch in (first, again):
        assert batch.steps.keys() == expected.steps.keys()
        for k in expected.steps:
            np.testing.assert_array_equal(batch.steps[k], expected.steps[k])


def test_training_only_reads_the_filter_stage_output(tmp_path, bandit_data):
    data = _copy(bandit_data, tmp_path / "data")
    (data / "lhf.h5").unlink()
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps({**manifest, "derived": []}))
    cfg = load_config(None, BANDIT + [f"data.dataset={data}", "data.seq_len=12"])
    spec = EnvSpec.for_env(cfg.env.id, cfg.env.kwargs)
    with pytest.raises(ConfigError, match=r"^filter: .* has no LHF weights .*`icrl filter --config CONFIG --data "):
        make_sampler(cfg, tmp_path, spec)
    assert filter_stage(cfg, data)["n_histories"] == 18
    stamp = (data / "lhf.h5").stat().st_mtime_ns
    assert filter_stage(cfg, data, refresh=False) is None  # current weights are kept, not rewritten
    assert (data / "lhf.h5").stat().st_mtime_ns == stamp
    make_sampler(cfg, tmp_path, spec)
    other = load_config(None, BANDIT + [f"data.dataset={data}", "data.seq_len=12", "filter.lam=0.5"])
    with pytest.raises(ConfigError, match="has no LHF weights"):  # stale: another filter section
        make_sampler(other, tmp_path, spec)


def test_streamed_training_stops_on_a_corrupted_chunk_with_one_line(bandit_data, tmp_path):
    from icrl.training import train

    data = _copy(bandit_data, tmp_path / "data")
    for shard in sorted(data.glob("shard-*.h5")):
        _flip_chunk(shard, "reward")  # whichever history the first batch draws
    cfg = load_config(None, BANDIT + [f"data.dataset={data}", "data.streaming=true", "data.seq_len=12", "model.kind=ad",
                                      "model.n_layer=1", "model.n_embd=16", "train.steps=2", "filter.enabled=false"])
    with pytest.raises(ConfigError, match=r"^data.dataset: shard-\d+\.h5: steps/reward rows .* unreadable .*icrl "
                                          r"verify.* \(no checkpoint yet\)$"):
        train(cfg, tmp_path / "run", progress=False)
