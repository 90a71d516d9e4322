"""Online-evaluation speed: one rollout step with the KV cache vs re-encoding the whole context.

For context lengths 100, 500 and 1,000 a DPT model (the quickstart's architecture) holds n cached
transitions for a batch of B rollouts; a step is "read out the query, append the new transition".
The simpler way re-runs the model over the n transitions plus one readout every step. Both are
timed side by side in this run and printed as steps/s (rollout steps of all B tasks per second)
and their ratio. AD is measured the same way: a rolling-cache step vs a forward pass over the
window. Last, training throughput (tokens/s) of the quickstart's training step.

    python scripts/bench_eval.py [--batch 64] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from icrl.models import ADModel, DPTModel, ModelConfig


def timed(fn, reps: int) -> float:
    """Seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def bench_dpt(n: int, batch: int, g: torch.Generator) -> dict:
    cfg = ModelConfig.from_dict(dict(kind="dpt", obs_sizes=[1], n_actions=5, n_layer=3, n_head=4, n_embd=64, block_size=n + 1))
    model = DPTModel(cfg, g).eval()
    obs = torch.zeros(batch, n + 1, 1, dtype=torch.long)
    act = torch.randint(0, 5, (batch, n + 1), generator=g)
    rew = torch.rand(batch, n + 1, generator=g)
    cache = model.new_cache(batch)
    for t in range(n):
        model.append(cache, obs[:, t], act[:, t], rew[:, t], obs[:, t])

    def cached() -> None:  # one rollout step at context n: read out, append, then rewind the append
        model.readout(cache, obs[:, n])
        model.append(cache, obs[:, n], act[:, n], rew[:, n], obs[:, n])
        cache.pos -= 1

    prefix = torch.tensor([n])

    @torch.no_grad()
    def reencode() -> None:  # the simpler way: the whole context and one readout, every step
        model(obs[:, :n], act[:, :n], rew[:, :n], obs[:, :n], obs[:, n], prefix)

    t_cache, t_full = timed(cached, 20), timed(reencode, 3 if n >= 500 else 10)
    return {"model": "dpt", "context": n, "cached_steps_per_s": batch / t_cache,
            "reencode_steps_per_s": batch / t_full, "speedup": t_full / t_cache}


def bench_ad(n: int, batch: int, g: torch.Generator) -> dict:
    cfg = ModelConfig.from_dict(dict(kind="ad", obs_sizes=[1], n_actions=5, n_layer=3, n_head=4, n_embd=64, block_size=n, window=n))
    model = ADModel(cfg, g).eval()
    obs = torch.zeros(batch, n, 1, dtype=torch.long)
    act = torch.randint(0, 5, (batch, n), generator=g)
    rew = torch.rand(batch, n, generator=g)
    cache = model.new_cache(batch)
    for t in range(n):
        model.step(cache, obs[:, t], act[:, t], rew[:, t])

    @torch.no_grad()
    def reencode() -> None:
        model(obs, act, rew)

    t_cache = timed(lambda: model.step(cache, obs[:, -1], act[:, -1], rew[:, -1]), 20)
    t_full = timed(reencode, 3 if n >= 500 else 10)
    return {"model": "ad", "context": n, "cached_steps_per_s": batch / t_cache,
            "reencode_steps_per_s": batch / t_full, "speedup": t_full / t_cache}


def bench_train(batch: int) -> dict:
    from icrl.config import load_config
    from icrl.spaces import EnvSpec
    from icrl.methods import make_model
    from icrl.data import make_sampler
    from icrl.training import loss_of, model_config

    cfg = load_config("configs/quickstart.yaml")
    spec = EnvSpec.for_env(cfg.env.id, cfg.env.kwargs)
    sampler, n = make_sampler(cfg, None, spec)
    model = make_model(model_config(cfg, spec, n))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    batches = [sampler.sample(rng, cfg.train.batch_size) for _ in range(6)]

    def step(i=[0]) -> None:
        loss, _ = loss_of(model, "dpt", batches[i[0] % 6])
        opt.zero_grad()
        loss.backward()
        opt.step()
        i[0] += 1

    t = timed(step, 10)
    tokens = cfg.train.batch_size * (n + (cfg.data.readouts or n + 1))
    return {"model": "dpt", "context": n, "train_step_ms": 1000 * t, "train_tokens_per_s": tokens / t}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="parallel rollouts (eval tasks)")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    rows = [bench_dpt(n, args.batch, g) for n in (100, 500, 1000)] + [bench_ad(n, args.batch, g) for n in (100, 500, 1000)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} rollouts")
    print(f"{'model':<5} {'context':>7} {'cached steps/s':>15} {'re-encode steps/s':>18} {'speedup':>8}")
    for r in rows:
        print(f"{r['model']:<5} {r['context']:>7} {r['cached_steps_per_s']:>15,.0f} {r['reencode_steps_per_s']:>18,.0f} "
              f"{r['speedup']:>7.1f}x")
    train = bench_train(args.batch)
    print(f"training (quickstart DPT, context {train['context']}): {train['train_step_ms']:.0f} ms/step, "
          f"{train['train_tokens_per_s']:,.0f} tokens/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rollout": rows, "train": train, "torch": torch.__version__,
                       "threads": torch.get_num_threads()}, f, indent=1)


if __name__ == "__main__":
    main()
