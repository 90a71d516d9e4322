"""Collection backends give the same data; a SIGKILLed collection resumes to the same bytes."""
import json
import random
import signal
import subprocess
import sys
import time

import pytest

from icrl.cli import main
from icrl.collect import collect
from icrl.config import load_config
from icrl.integrity import verify

ARGS = ["env.kwargs.horizon=500", "collect.n_tasks=3000", "collect.histories_per_shard=100",
        "collect.algorithms=thompson,ucb"]


def _shas(path):
    return [s["sha256"] for s in json.loads((path / "manifest.json").read_text())["shards"]]


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
def test_sigkill_at_random_moments_then_resume_is_byte_identical(tmp_path):
    reference = tmp_path / "reference"
    assert main(["collect", "--quiet", "--out", str(reference), *ARGS]) == 0
    rng = random.Random(0)
    for trial in range(3):
        out = tmp_path / f"killed{trial}"
        cmd = [sys.executable, "-m", "icrl.cli", "collect", "--quiet", "--out", str(out), *ARGS]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert subprocess.run(cmd, capture_output=True).returncode == 0
        assert _shas(out) == _shas(reference)
        assert verify(out) == []
        assert not list(out.glob("*.tmp-*"))


def test_a_different_config_in_the_same_folder_is_refused(tmp_path, capsys):
    small = ["env.kwargs.horizon=20", "collect.n_tasks=4"]
    assert main(["collect", "--quiet", "--out", str(tmp_path), *small]) == 0
    assert main(["collect", "--quiet", "--out", str(tmp_path), *small, "seed=1"]) == 2
    assert "another config" in capsys.readouterr().err
    assert main(["collect", "--quiet", "--out", str(tmp_path), *small]) == 0  # same config: nothing to do
