"""The collection pipeline: determinism, source mixtures, the CLI, corruption detection."""
import errno
import json
import os

import h5py
import numpy as np
import pytest

from icrl.cli import main
from icrl.collect import collect, make_plan, source_counts
from icrl.config import load_config
from icrl.store import HistoryStore
from icrl.integrity import complete_shards, verify

SMALL = ["env.kwargs.horizon=30", "collect.n_tasks=10", "collect.histories_per_shard=4"]


def _steps(path):
    with HistoryStore(path) as store:
        batch = store.load()
    return batch


def test_same_seed_gives_byte_identical_shards(tmp_path):
    cfg = load_config(None, SMALL + ["collect.algorithms=thompson,ucb,random", "collect.runs_per_task=2"])
    collect(cfg, tmp_path / "a", progress=False)
    collect(cfg, tmp_path / "b", progress=False)
    a = json.loads((tmp_path / "a/manifest.json").read_text())["shards"]
    b = json.loads((tmp_path / "b/manifest.json").read_text())["shards"]
    assert [s["sha256"] for s in a] == [s["sha256"] for s in b] and len(a) == 5
    other = load_config(None, SMALL + ["collect.algorithms=thompson,ucb,random", "collect.runs_per_task=2", "seed=1"])
    collect(other, tmp_path / "c", progress=False)
    assert _steps(tmp_path / "c").steps["reward"].tobytes() != _steps(tmp_path / "a").steps["reward"].tobytes()


def test_block_data_does_not_depend_on_shard_size_of_other_blocks(tmp_path):
    """A block is a function of (seed, block index) only: the first shard is the same whatever n_tasks."""
    small = load_config(None, SMALL)
    large = load_config(None, ["env.kwargs.horizon=30", "collect.n_tasks=20", "collect.histories_per_shard=4"])
    collect(small, tmp_path / "s", progress=False)
    collect(large, tmp_path / "l", progress=False)
    assert make_plan(small).tasks.tolist() == make_plan(large).tasks[:10].tolist()
    # the files differ only in the plan they record; every dataset's bytes are the same
    with h5py.File(tmp_path / "s/shard-00000.h5") as a, h5py.File(tmp_path / "l/shard-00000.h5") as b:
        assert a.attrs["content_sha256"].tobytes() == b.attrs["content_sha256"].tobytes()
        assert a.attrs["plan_sha256"].tobytes() != b.attrs["plan_sha256"].tobytes()


def test_source_fractions_and_plan():
    assert source_counts(10, [0.7, 0.3], 2).tolist() == [7, 3]
    assert source_counts(10, [], 3).tolist() == [4, 3, 3]
    cfg = load_config(None, SMALL + ["collect.algorithms=thompson,random", "collect.fractions=0.7,0.3",
                                     "collect.runs_per_task=3"])
    plan = make_plan(cfg)
    assert plan.n_histories == 30 and np.bincount(plan.history_source).tolist() == [21, 9]
    assert plan.history_task.tolist() == np.repeat(np.arange(10), 3).tolist()


def test_cli_collect_prints_summary_and_verify_detects_corruption(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["collect", "--quiet", "--config", "configs/collect_ucb.yaml", "--out", str(out), *SMALL]) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "10 histories" in text and "mean final regret" in text
    assert main(["verify", str(out)]) == 0
    shard = out / "shard-00001.h5"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert main(["verify", str(out)]) == 1
    assert "shard-00001.h5" in capsys.readouterr().err
    (out / "shard-00002.h5").unlink()
    assert any("shard-00002.h5" in p for p in verify(out))


def test_collected_regret_matches_sum_of_gaps(tmp_path):
    cfg = load_config(None, SMALL + ["collect.algorithms=emp"])
    collect(cfg, tmp_path / "d", progress=False)
    with HistoryStore(tmp_path / "d") as store:
        batch = store.load()
        means = store.task_params  # Gaussian task = arm means
    regret = batch.steps["regret"].reshape(10, 30)
    actions = batch.steps["action"].reshape(10, 30)
    gaps = means.max(1, keepdims=True) - np.take_along_axis(means, actions, 1)
    assert regret == pytest.approx(gaps)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_full_disk_at_the_write_is_a_clean_error_and_the_rerun_completes(tmp_path, monkeypatch, capsys):
    """ENOSPC from the plain write of the third shard: a one-line error, no temp file, the earlier
    shards intact; the same command run again completes the dataset."""
    real = os.write

    def write(fd, data):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith("shard-00002.h5.tmp-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    args = ["collect", "--quiet", "--out", str(tmp_path), *SMALL]
    monkeypatch.setattr(os, "write", write)
    assert main(args) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "disk full" in err
    assert sorted(complete_shards(tmp_path)) == [0, 1] and not list(tmp_path.glob("*.tmp-*"))
    assert not (tmp_path / "manifest.json").exists()
    assert main(args) == 0 and verify(tmp_path) == []


def test_summary_holds_each_sources_learning_curve(tmp_path):
    cfg = load_config(None, ["env.id=icrl/DarkRoom-v0", "env.kwargs.horizon=10", "collect.algorithms=[random,ppo]",
                             "collect.n_tasks=6", "collect.episodes=4", "collect.histories_per_shard=4"])
    summary = collect(cfg, tmp_path / "data", progress=False)
    with HistoryStore(tmp_path / "data") as store:
        for k, name in enumerate(store.sources):
            returns = np.array([r for r, s in zip(store.episode_returns, store.source) if s == k])
            np.testing.assert_allclose(summary["source_curves"][name], returns.mean(0))
