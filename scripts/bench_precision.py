"""fp32 against bf16 autocast on this CPU: training tokens/s of the Dark Room AD model at several
widths, side by side in one process, and what ``train.precision=auto`` picks for each.

The setup is ``configs/darkroom_ad.yaml`` (batches of 32 windows of 200 steps, a 100-step attention
window, obs two 9-way coordinates, 5 actions) at width 64 / 128 / 256 with 4 / 4 / 6 layers, built
by the library (``collect``, ``make_sampler``, ``model_config``, ``make_model``, ``make_optimizer``,
``loss_of``). The batch is drawn from a small dataset of random-policy histories collected into a
temporary folder instead of the PPO dataset: a step costs the same whatever the data. A step is forward, backward, gradient clipping and an AdamW step;
fp32 and bf16 steps alternate (which goes first alternates too), and tokens/s = B T / the median
seconds per step. ``auto`` is :func:`icrl.precision.resolve_precision` on the same model and batch,
as training runs it (its own forward+backward timing, bf16 only if >= 1.1x as fast).

Run: ``python scripts/bench_precision.py`` (about a minute on one core).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from icrl.collect import collect
from icrl.config import load_config
from icrl.methods import make_model
from icrl.precision import autocast, resolve_precision
from icrl.spaces import EnvSpec
from icrl.data import make_sampler
from icrl.training import loss_of, make_optimizer, model_config

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "darkroom_ad.yaml"
LAYERS = {64: 4, 128: 4, 256: 6}
CPU = torch.device("cpu")


def setup(width: int, n_layer: int, data: Path) -> tuple[torch.nn.Module, torch.optim.Optimizer,
                                                       dict[str, torch.Tensor], float]:
    """The model, its optimizer, one training batch from ``data/data`` (collected on first use) and
    the config's gradient clip."""
    cfg = load_config(CONFIG, [f"model.n_embd={width}", f"model.n_layer={n_layer}", "data.episode_stride=1",
                               "collect.algorithms=[random]", "collect.n_tasks=8", "collect.runs_per_task=1",
                               "collect.episodes=10", "collect.histories_per_shard=8"])
    if not (data / "data").exists():
        collect(cfg, data / "data", progress=False)
    spec = EnvSpec.for_env(cfg.env.id, cfg.env.kwargs)
    sampler, length = make_sampler(cfg, data, spec)
    model = make_model(model_config(cfg, spec, length), torch.Generator().manual_seed(0)).train()
    batch = sampler.sample(np.random.default_rng(0), cfg.train.batch_size)
    return model, make_optimizer(model, cfg, CPU), batch, cfg.train.grad_clip


def step_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return loss_of(model, "ad", batch)[0]  # AD on a transformer: no auxiliary loss


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               clip: float, precision: str) -> float:
    """Seconds of one training step at ``precision``, as ``icrl.training`` takes it."""
    t0 = time.perf_counter()
    with autocast(CPU, precision):
        loss = step_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=list(LAYERS), help="n_embd (64, 128, 256: 4, 4, 6 layers)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per precision and width")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per precision first")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"## fp32 vs bf16 autocast, Dark Room AD training (32 x 200 tokens per step, {args.threads} thread"
          f"{'s' if args.threads > 1 else ''}, median of {args.steps} steps)\n")
    print("| width | layers | params | fp32 tokens/s | bf16 tokens/s | bf16 / fp32 | auto picks (its bf16 / fp32) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as tmp:
        for width in args.widths:
            n_layer = LAYERS.get(width, 4)
            model, optimizer, batch, clip = setup(width, n_layer, Path(tmp))
            tokens = batch["obs"].shape[0] * batch["obs"].shape[1]  # B T
            times: dict[str, list[float]] = {"fp32": [], "bf16": []}
            for r in range(args.warmup + args.steps):
                for name in ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32"):
                    seconds = train_step(model, optimizer, batch, clip, name)
                    if r >= args.warmup:
                        times[name].append(seconds)
            rate = {name: tokens / statistics.median(t) for name, t in times.items()}
            choice, info = resolve_precision("auto", CPU, model, batch, step_loss)
            params = sum(q.numel() for q in model.parameters())
            print(f"| {width} | {n_layer} | {params / 1e6:.2f}M | {rate['fp32']:,.0f} | {rate['bf16']:,.0f} | "
                  f"{rate['bf16'] / rate['fp32']:.2f}x | {choice} ({info['speedup']:.2f}x) |", flush=True)


if __name__ == "__main__":
    main()
