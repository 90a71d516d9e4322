"""Training survives kills: SIGKILL then --resume equals the uninterrupted run; SIGTERM checkpoints;
torchrun with 2 gloo processes trains and resumes."""
import json
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.torch import load_file

from icrl.checkpoint import recover_checkpoint

TRAIN = ["train", "--quiet", "env.kwargs.n_arms=3", "env.kwargs.horizon=30", "model.n_layer=1", "model.n_head=2",
         "model.n_embd=16", "data.source=stream", "collect.algorithms=dpt_random", "train.batch_size=8",
         "train.warmup_steps=5", "train.log_every=1", "train.checkpoint_every=10"]


def _cmd(out, steps, *extra):
    return [sys.executable, "-m", "icrl.cli", *TRAIN, "--out", str(out), f"train.steps={steps}", *extra]


def _weights(run):
    return load_file(str(run / "checkpoint/model.safetensors"))


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["train/step"]: r["train/loss"] for r in rows}  # later rows (after a resume) win


def _same(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def _logged_step(run):
    """The last step in metrics.jsonl (complete lines only: the writer may be mid-line), or 0."""
    try:
        text = (run / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line).get("train/step", 0) for line in text.split("\n")[:-1] if line.strip()]
    return max(steps, default=0)


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["live-stream", "shards-streamed"])
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path, streaming):
    """The kill is keyed to progress, not wall time: it lands right after a step drawn at random
    between the first checkpoint (step 10) and the end, whatever the machine's speed. One trial
    kills on a checkpoint step (inside or right after the write), the other anywhere. Samples come
    from a live stream, or are read window by window from a dataset's shards."""
    steps = 300
    ref = tmp_path / "ref"
    extra = []
    if streaming:
        data = tmp_path / "data"
        subprocess.run([sys.executable, "-m", "icrl.cli", "collect", "--quiet", "--out", str(data), *TRAIN[2:4],
                        "collect.algorithms=dpt_random", "collect.n_tasks=40", "collect.histories_per_shard=8"],
                       check=True, capture_output=True)
        extra = ["data.source=dataset", f"data.dataset={data}", "data.streaming=true"]
    subprocess.run(_cmd(ref, steps, *extra), check=True, capture_output=True)
    rng = random.Random(0)
    # margin before the end: the run goes on for a few steps between the poll and the kill
    targets = [10 * rng.randint(1, (steps - 60) // 10), rng.randint(11, steps - 60)]
    for trial, target in enumerate(targets):
        run = tmp_path / f"killed{trial}"
        proc = subprocess.Popen(_cmd(run, steps, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while _logged_step(run) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        recover_checkpoint(run / "checkpoint")  # the kill may land between the two renames of a swap
        done = json.loads((run / "checkpoint/trainer.json").read_text())["step"]
        logged = _logged_step(run)
        assert proc.returncode == -signal.SIGKILL and logged < steps, f"the run ended before the kill (step {logged})"
        assert 10 <= done <= logged < steps and logged >= target, (target, done, logged)
        subprocess.run(_cmd(run, steps, *extra, "--resume"), check=True, capture_output=True)
        assert _same(_weights(run), _weights(ref))
        assert _losses(run) == _losses(ref)


def test_a_swap_cut_short_is_recovered(tmp_path):
    d, tmp, old = tmp_path / "checkpoint", tmp_path / "checkpoint.tmp", tmp_path / "checkpoint.old"
    tmp.mkdir()
    (tmp / "trainer.json").write_text('{"step": 20}')  # new folder complete, not yet renamed
    old.mkdir()
    (old / "trainer.json").write_text('{"step": 10}')
    recover_checkpoint(d)
    assert json.loads((d / "trainer.json").read_text())["step"] == 20
    d.rename(tmp_path / "gone")
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"partial")  # new folder incomplete: keep the previous
    recover_checkpoint(d)
    assert json.loads((d / "trainer.json").read_text())["step"] == 10


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_before_exiting(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(run, 100000), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "--resume" in err
    step = json.loads((run / "checkpoint/trainer.json").read_text())["step"]
    assert step == max(_losses(run))  # the checkpoint holds the last finished step


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_and_resume(tmp_path):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    base = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "icrl.cli", *TRAIN, "--out", str(tmp_path / "run"),
            "train.threads=1"]
    subprocess.run([*base, "train.steps=20"], check=True, capture_output=True, timeout=300)
    state = json.loads((tmp_path / "run/checkpoint/trainer.json").read_text())
    assert state["step"] == 20 and len(state["numpy_rng"]) == 2
    assert max(_losses(tmp_path / "run")) == 20  # rank 0 alone logs: one row per step
    rows = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    assert len(rows) == 20
    subprocess.run([*base, "train.steps=30", "--resume"], check=True, capture_output=True, timeout=300)
    assert json.loads((tmp_path / "run/checkpoint/trainer.json").read_text())["step"] == 30
