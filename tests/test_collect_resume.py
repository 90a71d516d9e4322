"""Collection backends give the same data; a killed collection resumes to the same bytes; a folder
holds one collection, under one lock; workers die with the collecting process."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from icrl import collect as collect_module
from icrl.cli import main
from icrl.collect import collect
from icrl.config import ConfigError, load_config
from icrl.integrity import verify
from icrl.lock import FolderBusy
from icrl.store import HistoryStore

# 8 blocks of ~0.1-0.2 s each on one core: long enough that a kill keyed to progress lands mid-run
ARGS = ["env.kwargs.horizon=500", "collect.n_tasks=800", "collect.histories_per_shard=100",
        "collect.algorithms=thompson,ucb"]
N_BLOCKS = 8


def _shas(path):
    return [s["sha256"] for s in json.loads((path / "manifest.json").read_text())["shards"]]


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, ...); None once gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _children(pid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and (_stat(int(p.name)) or ["", ""])[1] == str(pid)]


def _alive(pids: list[int]) -> list[int]:
    """The pids still running (a zombie waiting for its reaper has stopped)."""
    return [p for p in pids if (_stat(p) or ["Z"])[0] not in ("Z", "X")]


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _alive(pids)


def test_process_backend_equals_serial(tmp_path):
    small = ["env.kwargs.horizon=50", "collect.n_tasks=40", "collect.histories_per_shard=7"]
    collect(load_config(None, small), tmp_path / "serial", progress=False)
    collect(load_config(None, small + ["collect.backend=process", "collect.workers=2"]), tmp_path / "proc",
            progress=False)
    assert _shas(tmp_path / "serial") == _shas(tmp_path / "proc") and len(_shas(tmp_path / "proc")) == 6


@pytest.mark.slow
def test_ray_backend_equals_serial(tmp_path):
    pytest.importorskip("ray")
    small = ["env.kwargs.horizon=50", "collect.n_tasks=40", "collect.histories_per_shard=7"]
    collect(load_config(None, small), tmp_path / "serial", progress=False)
    collect(load_config(None, small + ["collect.backend=ray", "collect.workers=2"]), tmp_path / "ray", progress=False)
    assert _shas(tmp_path / "serial") == _shas(tmp_path / "ray")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds processes in /proc")
@pytest.mark.parametrize("backend", ["serial", "process"])
def test_sigkill_once_shards_exist_then_resume_is_byte_identical(tmp_path, backend):
    """SIGKILL the collection once a random number of its shards is on disk; the kill must land
    mid-run, the process backend's workers must die with it, and a resume must give the bytes of
    an uninterrupted run."""
    reference = tmp_path / "reference"
    collect(load_config(None, ARGS), reference, progress=False)
    extra = ["collect.backend=process", "collect.workers=2"] if backend == "process" else []
    # with w workers up to w shards can land together; stop early enough that some are left
    at = random.Random().randint(1, N_BLOCKS - (2 if extra else 1))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "icrl.cli", "collect", "--quiet", "--out", str(out), *ARGS, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while len(list(out.glob("shard-*.h5"))) < at:
            assert proc.poll() is None, f"the collection ended before {at} shards existed"
            time.sleep(0.002)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    written = len(list(out.glob("shard-*.h5")))
    assert at <= written < N_BLOCKS and not (out / "manifest.json").exists(), (at, written)
    if extra:
        assert len(workers) >= 2  # the pool's workers (and multiprocessing's resource tracker)
        assert _wait_gone(workers, 5.0) == [], "workers outlived the killed collection"
    assert main(["collect", "--quiet", "--out", str(out), *ARGS, *extra]) == 0
    assert _shas(out) == _shas(reference), f"killed at {at} shards"
    assert verify(out) == [] and not list(out.glob("*.tmp-*"))


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds processes in /proc")
@pytest.mark.parametrize("platform", ["linux", "other"])
def test_die_with_parent_ends_a_worker_whose_parent_is_killed(tmp_path, platform):
    """A parent starts a child that calls die_with_parent (prctl on Linux, the watcher thread
    elsewhere); SIGKILLing the parent ends the child within seconds."""
    child = textwrap.dedent(f"""
        import os, sys, time
        if {platform!r} == "other":
            sys.platform = "darwin"
        from icrl.procs import die_with_parent
        die_with_parent(int(sys.argv[1]), poll_s=0.05)
        print("ready", flush=True)
        time.sleep(60)
    """)
    parent = textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {child!r}, str(os.getpid())], stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"ready\\n"
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE)
    try:
        pid = int(proc.stdout.readline())
        assert _alive([pid]) == [pid]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _wait_gone([pid], 5.0) == []
    finally:
        proc.kill()


def test_a_different_config_in_the_same_folder_is_refused(tmp_path, capsys):
    small = ["env.kwargs.horizon=20", "collect.n_tasks=4"]
    assert main(["collect", "--quiet", "--out", str(tmp_path), *small]) == 0
    assert main(["collect", "--quiet", "--out", str(tmp_path), *small, "seed=1"]) == 2
    assert "another config" in capsys.readouterr().err
    assert main(["collect", "--quiet", "--out", str(tmp_path), *small]) == 0  # same config: nothing to do


def test_shards_of_another_plan_are_never_taken_over(tmp_path, capsys):
    """Without collect.json (deleted), a sound shard of another plan is refused, naming it."""
    small = ["env.kwargs.horizon=20", "collect.n_tasks=4", "collect.histories_per_shard=2"]
    assert main(["collect", "--quiet", "--out", str(tmp_path), *small]) == 0
    (tmp_path / "collect.json").unlink()
    (tmp_path / "manifest.json").unlink()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("shard-*.h5")}
    assert main(["collect", "--quiet", "--out", str(tmp_path), *small, "seed=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "shard-00000.h5 was collected under another plan" in err
    assert {p.name: p.read_bytes() for p in tmp_path.glob("shard-*.h5")} == before


def test_resuming_keeps_only_shards_of_its_plan_and_writes_collect_json_atomically(tmp_path, monkeypatch):
    small = load_config(None, ["env.kwargs.horizon=20", "collect.n_tasks=6", "collect.histories_per_shard=2"])
    renamed: list[str] = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(Path(a).name), real(a, b))[1])
    collect(small, tmp_path, progress=False)
    assert f"collect.json.tmp-{os.getpid()}" in renamed
    plan = json.loads((tmp_path / "manifest.json").read_text())["plan_sha256"]
    assert plan == collect_module.plan_sha256(json.loads((tmp_path / "collect.json").read_text()))
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "shard-00001.h5").unlink()
    assert collect(small, tmp_path, progress=False)["resumed"] == 2


def test_collect_holds_the_folder_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from icrl.lock import folder_lock
        with folder_lock({str(tmp_path)!r}, "test"):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(FolderBusy, match=f"pid {holder.pid}"):
            collect(load_config(None, ["env.kwargs.horizon=10", "collect.n_tasks=2"]), tmp_path, progress=False)
        assert isinstance(FolderBusy("x"), ConfigError)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".icrl.lock"]  # nothing written


def test_collecting_a_finished_dataset_again_keeps_its_derived_files(tmp_path):
    cfg = load_config(None, ["env.kwargs.horizon=20", "collect.n_tasks=4", "collect.histories_per_shard=2"])
    collect(cfg, tmp_path, progress=False)
    with HistoryStore(tmp_path) as store:
        entry = store.write_derived("lhf", {"weight": [1.0, 2.0, 3.0, 4.0]}, {"lambda": 1.0})
    assert collect(cfg, tmp_path, progress=False)["resumed"] == 2
    assert json.loads((tmp_path / "manifest.json").read_text())["derived"] == [entry]
    (tmp_path / "lhf.h5").write_bytes(b"stale")  # a derived file that no longer matches is dropped
    collect(cfg, tmp_path, progress=False)
    assert json.loads((tmp_path / "manifest.json").read_text())["derived"] == []
    assert verify(tmp_path) == []


def _race(tmp_path: Path, trial: int) -> None:
    """Two collections with different seeds released together into one folder: whatever the
    interleaving, the folder ends as one sound dataset whose labels (collect.json, manifest) are
    those of the shards it holds, and the other job is refused with one line."""
    out, go = tmp_path / f"data-{trial}", tmp_path / f"go-{trial}"
    script = textwrap.dedent(f"""
        import os, sys, time
        from icrl.cli import main
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        sys.exit(main(["collect", "--quiet", "--out", {str(out)!r}, "env.kwargs.horizon=10", "collect.n_tasks=8",
                       "collect.histories_per_shard=2", "seed=" + sys.argv[1]]))""")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(seed)], stderr=subprocess.PIPE, text=True)
             for seed in (0, 1)]
    time.sleep(2.5)  # both have imported icrl and wait
    go.touch()
    codes = [p.wait(timeout=120) for p in procs]
    errs = [p.stderr.read().strip() for p in procs]
    assert sorted(codes) == [0, 2], errs
    loser = errs[codes.index(2)]
    assert loser.count("\n") == 0 and ("in use by pid" in loser or "another config" in loser), loser
    assert verify(out) == []  # every shard of the manifest's plan
    record = json.loads((out / "collect.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == record["seed"] == codes.index(0)
    assert manifest["plan_sha256"] == collect_module.plan_sha256(record)


def test_two_collections_released_together_never_mix(tmp_path):
    for trial in range(2):
        _race(tmp_path, trial)


@pytest.mark.slow
def test_two_collections_released_together_never_mix_in_20_trials(tmp_path):
    for trial in range(20):
        _race(tmp_path, trial)
