"""Scaling on one machine: collection histories/s with 1 vs 2 worker processes (process backend),
and training steps/s with 1 vs 2 DDP processes (torchrun, gloo), measured side by side in one run.

    python scripts/bench_scale.py [--json PATH]

Each DDP process draws train.batch_size samples per step, so 2 processes train on twice the
samples per step; samples/s is the comparable number and is printed too.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from icrl.collect import collect
from icrl.config import load_config

# Bandit histories are cheap to make and large to write (I/O-bound); PPO histories are compute-bound.
COLLECT = {"bandit (thompson+ucb, H 500, 40,000 histories)":
           ["env.kwargs.horizon=500", "collect.n_tasks=40000", "collect.histories_per_shard=2000",
            "collect.algorithms=thompson,ucb"],
           "Dark Room PPO (128 independent runs x 100 episodes)":
           ["env.id=icrl/DarkRoom-v0", "collect.algorithms=ppo", "collect.n_tasks=128", "collect.episodes=100",
            "collect.histories_per_shard=32"]}
TRAIN = ["train", "--quiet", "--config", "configs/quickstart.yaml", "train.steps=60", "train.log_every=10",
         "train.checkpoint_every=1000", "train.threads=1"]


def bench_collect(overrides: list[str], workers: int, root: Path) -> float:
    """Histories/s of one collection with ``workers`` processes (1 = the serial backend)."""
    backend = ["collect.backend=process", f"collect.workers={workers}"] if workers > 1 else []
    cfg = load_config(None, overrides + backend)
    out = root / f"collect{workers}"
    start = time.perf_counter()
    summary = collect(cfg, out, progress=False)
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return summary["n_histories"] / seconds


def bench_train(procs: int, root: Path) -> dict:
    out = root / f"train{procs}"
    if procs == 1:
        cmd = [sys.executable, "-m", "icrl.cli", *TRAIN, "--out", str(out)]
    else:
        torchrun = shutil.which("torchrun") or sys.exit("torchrun not found")
        cmd = [torchrun, "--standalone", f"--nproc_per_node={procs}", "-m", "icrl.cli", *TRAIN, "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step_ms = sum(r["time/step_ms"] for r in rows[1:]) / len(rows[1:])  # the first window holds the warm-up
    batch = load_config("configs/quickstart.yaml").train.batch_size
    return {"processes": procs, "steps_per_s": 1000 / step_ms, "samples_per_s": 1000 / step_ms * batch * procs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rates = {name: (bench_collect(o, 1, root), bench_collect(o, 2, root)) for name, o in COLLECT.items()}
        t1, t2 = bench_train(1, root), bench_train(2, root)
    for name, (c1, c2) in rates.items():
        print(f"collection, {name}: 1 worker {c1:,.0f} histories/s, 2 workers {c2:,.0f} histories/s, "
              f"ratio {c2 / c1:.2f}x")
    print(f"training (quickstart DPT, 1 thread per process): 1 process {t1['steps_per_s']:.2f} steps/s "
          f"({t1['samples_per_s']:,.0f} samples/s), 2 DDP processes {t2['steps_per_s']:.2f} steps/s "
          f"({t2['samples_per_s']:,.0f} samples/s), samples/s ratio {t2['samples_per_s'] / t1['samples_per_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"collect_histories_per_s": {k: {"1": a, "2": b} for k, (a, b) in rates.items()},
                                               "train": [t1, t2]}, indent=1))


if __name__ == "__main__":
    main()
