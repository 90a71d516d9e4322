"""What streaming reads cost and save, in one run: peak memory of training on a dataset and on one
10x larger, the streaming sampler's samples/s against what a training step consumes, and the
start-up of training against the full re-hash it replaced.

    python scripts/bench_data.py [--small 1000000] [--steps 30] [--json PATH]

Data: the ad_bandit setup (Gaussian bandit, 5 arms, H 100, Thompson + UCB histories, 2,000 per
shard), collected once into runs/bench_data/ at ``--small`` steps and 10x that. Model: ad_bandit's
(AD, 3 layers, width 64, batch 64 x 100 steps).

- Peak RSS: ``ru_maxrss`` of a fresh process that trains ``--steps`` steps, in memory (every
  history loaded, as before streaming) and streamed (``data.streaming``), on both datasets.
- Headroom: samples/s of the streaming sampler alone (one thread) against the samples/s a training
  step consumes (batch / seconds per step, 2 threads, samples drawn from memory so only compute is
  timed); medians of ``--repeats``.
- Start-up, each in a fresh process: the sampler of a streamed run (manifest, sizes, index), of an
  in-memory run (content checksum from the same reads), and ``icrl verify`` (every shard's sha256
  and values: what training ran at every start before). The page cache is warm for all three.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIG = "configs/ad_bandit.yaml"
ROOT = Path("runs/bench_data")


def dataset(steps: int) -> Path:
    """A bandit dataset of ``steps`` steps (collected once, then reused)."""
    from icrl.collect import collect
    from icrl.config import load_config

    out = ROOT / f"data-{steps}"
    if not (out / "manifest.json").is_file():
        collect(load_config(CONFIG, [f"collect.n_tasks={steps // 200}"]), out, progress=False)  # 2 sources x H 100
    return out


def child(args: list[str]) -> dict:
    """Run this script's ``--child`` mode in a fresh process; its JSON line."""
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_child(mode: str, data: str, streaming: bool, steps: int) -> dict:
    from icrl.config import load_config

    cfg = load_config(CONFIG, [f"data.dataset={data}", f"data.streaming={str(streaming).lower()}",
                               f"train.steps={steps}", "train.log_every=10", "train.threads=2", "seeds=[]"])
    t0 = time.perf_counter()
    if mode == "train":
        from icrl.training import train

        with tempfile.TemporaryDirectory() as run:
            train(cfg, run, progress=False)
    elif mode == "verify":
        from icrl.integrity import verify

        assert verify(data) == []
    else:  # "start": everything training does before its first step that touches the data
        from icrl.spaces import EnvSpec
        from icrl.data import make_sampler

        make_sampler(cfg, Path(data).parent, EnvSpec.for_env(cfg.env.id, cfg.env.kwargs))
    return {"seconds": time.perf_counter() - t0, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def headroom(data: Path, repeats: int) -> dict:
    """Streaming samples/s (1 thread) against the samples/s one training step consumes (2 threads)."""
    import torch

    from icrl.config import load_config
    from icrl.spaces import EnvSpec
    from icrl.data import make_sampler
    from icrl.training import loss_of, make_optimizer, model_config
    from icrl.methods import make_model

    cfg = load_config(CONFIG, [f"data.dataset={data}", "data.streaming=true"])
    spec = EnvSpec.for_env(cfg.env.id, cfg.env.kwargs)
    streamed, length = make_sampler(cfg, data.parent, spec)
    memory, _ = make_sampler(load_config(CONFIG, [f"data.dataset={data}"]), data.parent, spec)
    rng, B = np.random.default_rng(0), cfg.train.batch_size
    torch.set_num_threads(1)
    draw = []
    for _ in range(repeats):
        t = time.perf_counter()
        streamed.sample(rng, B)
        draw.append(time.perf_counter() - t)
    torch.set_num_threads(2)
    model = make_model(model_config(cfg, spec, length), torch.Generator().manual_seed(0))
    opt, step = make_optimizer(model, cfg, torch.device("cpu")), []
    for i in range(repeats + 3):
        batch = memory.sample(rng, B)
        t = time.perf_counter()
        loss, _ = loss_of(model, "ad", batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:  # after warm-up
            step.append(time.perf_counter() - t)
    supply, demand = B / statistics.median(draw), B / statistics.median(step)
    return {"stream_samples_per_s": supply, "train_samples_per_s": demand, "headroom": supply / demand}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=1_000_000, help="steps of the smaller dataset (the other is 10x)")
    p.add_argument("--steps", type=int, default=30, help="training steps of each peak-memory run")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", default="", help="also write the figures here")
    p.add_argument("--child", nargs=4, metavar=("MODE", "DATA", "STREAMING", "STEPS"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        mode, data, streaming, steps = a.child
        print(json.dumps(run_child(mode, data, streaming == "1", int(steps))))
        return
    sizes = {n: dataset(n) for n in (a.small, 10 * a.small)}
    out: dict = {"rss_mb": {}, "start_s": {}}
    for n, data in sizes.items():
        for streaming in (False, True):
            r = child(["train", str(data), str(int(streaming)), str(a.steps)])
            out["rss_mb"][f"{n} {'streamed' if streaming else 'memory'}"] = r["max_rss_mb"]
    big = str(sizes[10 * a.small])
    for name, mode, streaming in (("streamed start", "start", "1"), ("in-memory start", "start", "0"),
                                  ("full re-hash (icrl verify)", "verify", "0")):
        out["start_s"][name] = child([mode, big, streaming, "1"])["seconds"]
    out["headroom"] = headroom(sizes[10 * a.small], a.repeats)
    rss = out["rss_mb"]
    print("| dataset | in memory: peak RSS | streamed: peak RSS |\n| --- | --- | --- |")
    for n in sizes:
        print(f"| {n:,} steps | {rss[f'{n} memory']:.0f} MB | {rss[f'{n} streamed']:.0f} MB |")
    s, b = a.small, 10 * a.small
    print(f"streamed peak RSS, 10x data: {rss[f'{b} streamed'] / rss[f'{s} streamed']:.2f}x "
          f"(in memory {rss[f'{b} memory'] / rss[f'{s} memory']:.2f}x)")
    h = out["headroom"]
    print(f"streaming supplies {h['stream_samples_per_s']:.0f} samples/s on one thread; a training step consumes "
          f"{h['train_samples_per_s']:.0f} samples/s on two: headroom {h['headroom']:.1f}x")
    print("start-up on the 10x dataset: " + ", ".join(f"{k} {v:.2f} s" for k, v in out["start_s"].items()))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
