"""Tests of icrl.histories: round trip, windows, atomic writes, verify, resume, derived files."""
from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from icrl.histories import DatasetWriter, HistoryBatch, _fill_shard, _h5_image, file_sha256
from icrl.store import HistoryStore
from icrl.integrity import complete_shards, remove_partials, verify

META = {"env_id": "icrl/DarkRoom-v0", "env_kwargs": {"size": 9}, "sources": ["ppo", "random"],
        "collect": {"seed": 0, "histories_per_shard": 3}, "task_split": "train"}


def make_batch(rng: np.random.Generator, n: int, first_task: int = 0) -> HistoryBatch:
    """Ragged histories with (2,)-shaped obs, bool flags and ragged episode returns."""
    lengths = rng.integers(1, 40, size=n).astype(np.int64)
    total = int(lengths.sum())
    return HistoryBatch(
        steps={"obs": rng.integers(0, 9, size=(total, 2)), "action": rng.integers(0, 5, total),
               "reward": rng.normal(size=total), "terminated": rng.random(total) < 0.1,
               "truncated": rng.random(total) < 0.2, "oracle_action": rng.integers(0, 5, total)},
        lengths=lengths, task=np.arange(first_task, first_task + n, dtype=np.int64),
        task_params=rng.normal(size=(n, 2)), run=rng.integers(0, 4, n).astype(np.int64),
        source=rng.integers(0, 2, n).astype(np.int64),
        episode_returns=[rng.normal(size=int(rng.integers(0, 6))) for _ in range(n)])


def write_dataset(directory: Path, n_shards: int = 3, seed: int = 0) -> list[HistoryBatch]:
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(directory, META)
    batches = [make_batch(rng, 3 + k, first_task=10 * k) for k in range(n_shards)]
    writer.finish([writer.write_shard(k, b) for k, b in enumerate(batches)])
    return batches


def assert_batches_equal(a: HistoryBatch, b: HistoryBatch) -> None:
    assert set(a.steps) == set(b.steps)
    for k in a.steps:
        assert a.steps[k].dtype == b.steps[k].dtype, k
        np.testing.assert_array_equal(a.steps[k], b.steps[k])
    for k in ("lengths", "task", "task_params", "run", "source"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert len(a.episode_returns) == len(b.episode_returns)
    for x, y in zip(a.episode_returns, b.episode_returns):
        np.testing.assert_array_equal(x, y)


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(255 - x for x in data[mid:mid + 16])
    path.write_bytes(bytes(data))


def flip_data(path: Path, dataset: str = "histories/task_params") -> None:
    """Corrupt the raw data bytes of one dataset (the metadata stays valid)."""
    with h5py.File(path, "r") as f:
        start, size = f[dataset].id.get_offset(), f[dataset].id.get_storage_size()
    data = bytearray(path.read_bytes())
    data[start:start + size] = bytes(255 - x for x in data[start:start + size])
    path.write_bytes(bytes(data))


def test_round_trip(tmp_path: Path) -> None:
    batches = write_dataset(tmp_path)
    assert verify(tmp_path) == []
    whole = HistoryBatch.concat(batches)
    with HistoryStore(tmp_path) as store:
        assert store.n_histories == whole.n_histories == 12
        assert store.n_steps == int(whole.lengths.sum())
        assert store.env_id == META["env_id"] and store.env_kwargs == META["env_kwargs"]
        assert store.sources == META["sources"]
        assert set(store.fields) == set(whole.steps)
        assert_batches_equal(store.load(), whole)
        offsets = whole.offsets
        for i in range(store.n_histories):
            h = store.history(i)
            for k, arr in whole.steps.items():
                np.testing.assert_array_equal(h[k], arr[offsets[i]:offsets[i + 1]])
        assert store.history(0)["terminated"].dtype == np.bool_
        assert store.history(0)["obs"].shape[1:] == (2,)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["schema"] == "icrl.histories/v1" and manifest["derived"] == []
    assert manifest["collect"] == META["collect"] and manifest["task_split"] == "train"
    assert [s["file"] for s in manifest["shards"]] == [f"shard-0000{k}.h5" for k in range(3)]
    assert manifest["n_histories"] == 12


def test_same_batch_same_bytes(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a")
    write_dataset(tmp_path / "b")
    for k in range(3):
        name = f"shard-0000{k}.h5"
        assert file_sha256(tmp_path / "a" / name) == file_sha256(tmp_path / "b" / name)


def test_in_memory_image_equals_a_file_written_by_hdf5(tmp_path: Path) -> None:
    """Shards are built in memory, then written with plain writes: the bytes are those HDF5 writes
    to a file itself, and the same batch always gives the same image."""
    batch = make_batch(np.random.default_rng(0), 5)
    with h5py.File(tmp_path / "direct.h5", "w", libver=("v110", "v110")) as f:
        _fill_shard(f, batch)
    image = _h5_image("a", lambda f: _fill_shard(f, batch))
    assert image == (tmp_path / "direct.h5").read_bytes()
    assert image == _h5_image("b", lambda f: _fill_shard(f, batch))
    assert not list(Path.cwd().glob("a")) and not list(Path.cwd().glob("b"))  # nothing on disk


def _fail_writes_to_temp_files(monkeypatch, code: int, after: int = 0) -> None:
    """``os.write`` to a ``*.tmp-*`` file raises ``OSError(code)`` once ``after`` such writes
    went through (other writes pass)."""
    real, count = os.write, [0]

    def write(fd, data):
        if ".tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            count[0] += 1
            if count[0] > after:
                raise OSError(code, os.strerror(code))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_failing_write_is_an_oserror_leaving_no_temp_file(tmp_path: Path, monkeypatch, code: int) -> None:
    rng = np.random.default_rng(0)
    writer = DatasetWriter(tmp_path, META)
    entries = [writer.write_shard(k, make_batch(rng, 3)) for k in range(2)]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    _fail_writes_to_temp_files(monkeypatch, code)
    with pytest.raises(OSError) as err:
        writer.write_shard(2, make_batch(rng, 3))
    assert err.value.errno == code
    with pytest.raises(OSError):
        writer.finish(entries)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file, shards intact
    assert set(complete_shards(tmp_path)) == {0, 1}
    writer.finish(entries)
    assert verify(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_real_full_disk_is_an_oserror(tmp_path: Path) -> None:
    """The temp name pointing at /dev/full makes the kernel itself answer ENOSPC to the write."""
    writer = DatasetWriter(tmp_path, META)
    tmp = tmp_path / f"shard-00000.h5.tmp-{os.getpid()}"
    tmp.symlink_to("/dev/full")
    with pytest.raises(OSError) as err:
        writer.write_shard(0, make_batch(np.random.default_rng(0), 3))
    assert err.value.errno == errno.ENOSPC
    assert not list(tmp_path.iterdir())


def test_shard_layout_is_numeric_and_chunked(tmp_path: Path) -> None:
    write_dataset(tmp_path, n_shards=1)
    with h5py.File(tmp_path / "shard-00000.h5", "r") as f:
        for k in f["steps"]:
            assert f["steps"][k].chunks is not None and f["steps"][k].chunks[1:] == \
                f["steps"][k].shape[1:]
        n = len(f["histories/length"])
        assert f["histories/return_offsets"].shape == (n + 1,)
        assert f["histories/task_params"].shape == (n, 2)
        np.testing.assert_array_equal(f["histories/offset"][()],
                                      np.concatenate([[0], np.cumsum(f["histories/length"])[:-1]]))
        assert all(f[g][k].dtype.kind in "biuf" for g in ("steps", "histories") for k in f[g])


def test_window_equals_history_slices(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    rng = np.random.default_rng(1)
    with HistoryStore(tmp_path) as store:
        for _ in range(50):
            i = int(rng.integers(store.n_histories))
            n = int(store.lengths[i])
            start = int(rng.integers(n))
            length = int(rng.integers(1, n - start + 1))
            h, w = store.history(i), store.window(i, start, length)
            for k in store.fields:
                np.testing.assert_array_equal(w[k], h[k][start:start + length])


@pytest.mark.parametrize("start,length", [(-1, 1), (0, 10_000), (5, -2), (2, 40)])
def test_window_bounds(tmp_path: Path, start: int, length: int) -> None:
    write_dataset(tmp_path, n_shards=1)
    with HistoryStore(tmp_path) as store, pytest.raises(ValueError, match="window start"):
        store.window(0, start, length)


def test_history_index_bounds_and_closed(tmp_path: Path) -> None:
    write_dataset(tmp_path, n_shards=1)
    store = HistoryStore(tmp_path)
    with pytest.raises(ValueError, match="history index"):
        store.history(store.n_histories)
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.history(0)


def test_store_pickles_and_reopens(tmp_path: Path) -> None:
    write_dataset(tmp_path, n_shards=2)
    with HistoryStore(tmp_path) as store:
        clone = pickle.loads(pickle.dumps(store))
        np.testing.assert_array_equal(clone.window(4, 0, 1)["obs"], store.window(4, 0, 1)["obs"])
        clone.close()


def test_corrupted_shard_detected_and_named(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    flip_middle(tmp_path / "shard-00001.h5")
    problems = verify(tmp_path)
    assert problems and all("shard-00001.h5" in p for p in problems)
    assert any("sha256" in p for p in problems)


def test_corrupted_data_detected_by_content_checksum(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    flip_data(tmp_path / "shard-00002.h5", "histories/return_values")
    problems = verify(tmp_path)
    assert any("shard-00002.h5" in p and "sha256" in p for p in problems)
    assert any("shard-00002.h5" in p and "content checksum" in p for p in problems)


def test_truncated_shard_detected(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    path = tmp_path / "shard-00002.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    problems = verify(tmp_path)
    assert any("shard-00002.h5" in p and "unreadable" in p for p in problems)
    assert all("Traceback" not in p for p in problems)
    with pytest.raises(ValueError, match="shard-00002.h5"):
        HistoryStore(tmp_path)


def test_missing_shard_detected(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    (tmp_path / "shard-00000.h5").unlink()
    assert verify(tmp_path) == ["shard-00000.h5: listed in manifest.json but missing"]
    with pytest.raises(FileNotFoundError, match="shard-00000.h5"):
        HistoryStore(tmp_path)


def test_manifest_problems_detected(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    manifest = tmp_path / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    assert any("not valid JSON" in p for p in verify(tmp_path))
    manifest.unlink()
    problems = verify(tmp_path)
    assert len(problems) == 1 and "manifest.json" in problems[0] and "missing" in problems[0]
    assert verify(tmp_path / "nope") and "does not exist" in verify(tmp_path / "nope")[0]


def test_index_inconsistency_detected(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["shards"][1]["n_histories"] += 1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(tmp_path)
    assert any("shard-00001.h5" in p and "histories" in p for p in problems)
    assert any("shard sums" in p for p in problems)


def test_temp_files_never_end_in_h5_and_are_ignored(tmp_path: Path, monkeypatch) -> None:
    seen: list[str] = []
    real_open = os.open

    def spy(path, flags, *args, **kwargs):  # records every file the writer creates
        if flags & os.O_CREAT:
            seen.append(os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    batches = write_dataset(tmp_path, n_shards=2)
    monkeypatch.undo()
    assert len(seen) == 3 and not any(s.endswith((".h5", ".json")) for s in seen)  # 2 shards, manifest
    assert all(Path(s).name.endswith(f".tmp-{os.getpid()}") for s in seen)
    # A killed writer's leftover (here a copy of a real shard) must not be read or counted.
    (tmp_path / "shard-00005.h5.tmp-99999").write_bytes((tmp_path / "shard-00000.h5").read_bytes())
    assert verify(tmp_path) == []
    assert set(complete_shards(tmp_path)) == {0, 1}
    with HistoryStore(tmp_path) as store:
        assert store.n_histories == sum(b.n_histories for b in batches)
    assert remove_partials(tmp_path) == ["shard-00005.h5.tmp-99999"]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_complete_shards_keeps_good_skips_partial_and_corrupt(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    writer = DatasetWriter(tmp_path, META)
    entries = {k: writer.write_shard(k, make_batch(rng, 2)) for k in range(5)}
    # killed collection: no manifest; corrupt data in one shard, metadata in another, one
    # truncated, one temp leftover
    flip_data(tmp_path / "shard-00001.h5")
    flip_middle(tmp_path / "shard-00004.h5")
    path = tmp_path / "shard-00003.h5"
    path.write_bytes(path.read_bytes()[:1000])
    (tmp_path / "shard-00005.h5.tmp-123").write_bytes(b"partial")
    found = complete_shards(tmp_path)
    assert set(found) == {0, 2}
    assert found[0] == entries[0] and found[2] == entries[2]
    # resume: rewrite the missing shards, then finish
    rng = np.random.default_rng(4)
    for k in (1, 3, 4):
        found[k] = writer.write_shard(k, make_batch(rng, 2))
    remove_partials(tmp_path)
    writer.finish(list(found.values()))
    assert verify(tmp_path) == []


def test_derived_round_trip_leaves_shards_untouched(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    before = {p.name: file_sha256(p) for p in tmp_path.glob("shard-*.h5")}
    weights = np.linspace(0, 1, 12)
    with HistoryStore(tmp_path) as store:
        entry = store.write_derived("lhf_weights", {"weight": weights, "keep": weights > 0.5},
                                    {"method": "linear", "lambda": 1.0})
        out = store.read_derived("lhf_weights")
        np.testing.assert_array_equal(out["weight"], weights)
        assert out["keep"].dtype == np.bool_
        with pytest.raises(ValueError, match="no derived data"):
            store.read_derived("other")
        with pytest.raises(ValueError, match="derived name"):
            store.write_derived("shard-00000", {"w": weights}, {})
    assert entry["file"] == "lhf_weights.h5"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["derived"] == [entry]
    assert {p.name: file_sha256(p) for p in tmp_path.glob("shard-*.h5")} == before
    assert verify(tmp_path) == []
    with HistoryStore(tmp_path) as store:  # a fresh reader sees it through the manifest
        np.testing.assert_array_equal(store.read_derived("lhf_weights")["weight"], weights)
    flip_middle(tmp_path / "lhf_weights.h5")
    assert any("lhf_weights.h5" in p for p in verify(tmp_path))


def test_store_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HistoryStore(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        HistoryStore(tmp_path)
    (tmp_path / "manifest.json").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        HistoryStore(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"schema": "icrl.histories/v1", **META, "n_histories": 0, "n_steps": 0, "shards": [],
         "derived": []}))
    with pytest.raises(ValueError, match="zero histories"):
        HistoryStore(tmp_path)


def test_batch_validation_and_writer_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    batch = make_batch(rng, 3)
    batch.validate()
    bad = make_batch(rng, 3)
    bad.steps["reward"] = bad.steps["reward"][:-1]
    with pytest.raises(ValueError, match="reward"):
        bad.validate()
    bad = make_batch(rng, 3)
    del bad.steps["truncated"]
    with pytest.raises(ValueError, match="truncated"):
        bad.validate()
    with pytest.raises(ValueError, match="different step fields"):
        HistoryBatch.concat([batch, bad])
    with pytest.raises(ValueError, match="sources"):
        DatasetWriter(tmp_path, {"env_id": "x", "env_kwargs": {}})
    with pytest.raises(ValueError, match="JSON"):
        DatasetWriter(tmp_path, {**META, "collect": {"seed": np.int64(3)}})
    writer = DatasetWriter(tmp_path, META)
    batch.source[0] = 7
    with pytest.raises(ValueError, match="source"):
        writer.write_shard(0, batch)
    with pytest.raises(ValueError, match="shard index"):
        writer.write_shard(100_000, make_batch(rng, 1))
    with pytest.raises(ValueError, match="shard_entries"):
        writer.finish([])


def test_every_episode_keeps_every_kth_whole_episode() -> None:
    # history 0: episodes of 2, 3, 1, 2 steps then 1 step of an unfinished episode; history 1: 3, 3 steps
    ends0 = [0, 1, 0, 0, 1, 1, 0, 1, 0]
    ends1 = [0, 0, 1, 0, 0, 1]
    ends = np.array(ends0 + ends1, bool)
    steps = {"obs": np.arange(15), "action": np.zeros(15, np.int64), "reward": np.arange(15, dtype=np.float32),
             "terminated": np.zeros(15, bool), "truncated": ends}
    batch = HistoryBatch(steps=steps, lengths=np.array([9, 6]), task=np.array([0, 1]), task_params=np.zeros((2, 1)),
                         run=np.zeros(2, np.int64), source=np.zeros(2, np.int64),
                         episode_returns=[np.array([1.0, 9, 5, 13]), np.array([3.0, 12])])
    sub = batch.every_episode(2)
    sub.validate()
    assert sub.lengths.tolist() == [5, 3]  # history 0: episodes 1 (rows 2-4) and 3 (rows 6-7); history 1: episode 1
    assert sub.steps["obs"].tolist() == [2, 3, 4, 6, 7, 12, 13, 14]
    assert [r.tolist() for r in sub.episode_returns] == [[9.0, 13.0], [12.0]]
    assert batch.every_episode(1) is batch
    assert batch.every_episode(3).steps["obs"].tolist() == [5]  # only history 0 has a 3rd episode


def test_plan_is_recorded_in_every_shard_and_the_manifest(tmp_path: Path) -> None:
    plan = "ab" * 32
    writer = DatasetWriter(tmp_path, {**META, "plan_sha256": plan})
    rng = np.random.default_rng(0)
    manifest = writer.finish([writer.write_shard(k, make_batch(rng, 2)) for k in range(2)])
    assert manifest["plan_sha256"] == plan
    for k in range(2):
        with h5py.File(tmp_path / f"shard-0000{k}.h5", "r") as f:
            assert f.attrs["plan_sha256"].tobytes().hex() == plan
    assert verify(tmp_path) == []
    with pytest.raises(ValueError, match="plan_sha256"):
        DatasetWriter(tmp_path, {**META, "plan_sha256": "not hex"})


def test_finish_keeps_the_derived_entries_it_is_given(tmp_path: Path) -> None:
    write_dataset(tmp_path, n_shards=1)
    with HistoryStore(tmp_path) as store:
        entry = store.write_derived("lhf", {"weight": np.ones(3)}, {"lambda": 1.0})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    writer = DatasetWriter(tmp_path, META)
    assert writer.finish(manifest["shards"], [entry])["derived"] == [entry]
    assert verify(tmp_path) == []
    assert writer.finish(manifest["shards"])["derived"] == []


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_derived_file_that_cannot_be_written_leaves_the_dataset_as_it_was(tmp_path: Path, monkeypatch) -> None:
    write_dataset(tmp_path, n_shards=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with HistoryStore(tmp_path) as store:
        _fail_writes_to_temp_files(monkeypatch, errno.ENOSPC)
        with pytest.raises(OSError):
            store.write_derived("lhf", {"weight": np.ones(3)}, {})
        _fail_writes_to_temp_files(monkeypatch, errno.ENOSPC, after=1)  # the file, not the manifest
        with pytest.raises(OSError):
            store.write_derived("lhf", {"weight": np.ones(3)}, {})
        monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "lhf.h5"}
    assert after == before and verify(tmp_path) == []
