"""Benchmark: batched independent PPO learners on Dark Room: how often they learn, and how fast.

1. Learning: ``--runs`` independent PPO runs (one learner per history, from scratch, the default
   ``collect.ppo_*`` hyper-parameters) on goals drawn from Dark Room's train split (9x9, H 20),
   ``--episodes`` episodes each, through ``collect_block`` (the collection pipeline's path). A run
   counts as learned when the mean return of its last 10 episodes is >= 80% of the oracle's.
2. Speed: env steps per second of those runs batched (stacked parameters, one vector env) vs the
   same kind of runs one at a time: a plain loop over single-learner PPO objects, each driven by
   ``run_policy`` on a one-env vector env (timed on ``--loop-runs`` runs; the cost is per run).
   Both are timed in this process, alternately, best of ``--repeats``.

    python scripts/bench_ppo.py [--runs 64] [--episodes 300] [--loop-runs 8] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time

import numpy as np

from icrl import envs
from icrl.collectors import collect_block, make_policy, run_policy
from icrl.config import CollectConfig

ENV_ID = "icrl/DarkRoom-v0"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--runs", type=int, default=64, help="independent PPO runs, batched")
parser.add_argument("--episodes", type=int, default=300, help="episodes per run (H 20 steps each)")
parser.add_argument("--loop-runs", type=int, default=8, help="runs timed one at a time")
parser.add_argument("--repeats", type=int, default=2, help="timed repeats of each path; the best is reported")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
args = parser.parse_args()

dist = envs.task_distribution(ENV_ID)
tasks = dist.sample(args.runs, np.random.default_rng(args.seed))  # goals from the train split
max_return = dist.max_return(tasks)  # (runs,)
params = CollectConfig().algorithm_params()
steps_per_run = args.episodes * dist.horizon


def batched(rep: int) -> tuple[float, np.ndarray]:
    """All runs at once; wall seconds and (runs, episodes) returns."""
    start = time.perf_counter()
    batch = collect_block(ENV_ID, {}, "ppo", params, tasks, np.arange(args.runs), np.zeros(args.runs, np.int64), 0,
                          np.random.SeedSequence([args.seed, rep]), episodes=args.episodes)
    return time.perf_counter() - start, np.stack(batch.episode_returns)


def one_at_a_time(rep: int) -> tuple[float, np.ndarray]:
    """The first ``--loop-runs`` runs, each its own single-learner PPO object; seconds and returns."""
    start, returns = time.perf_counter(), []
    for i in range(args.loop_runs):
        seq = np.random.SeedSequence([args.seed, rep, i])
        policy = make_policy("ppo", 1, dist, np.random.default_rng(seq), **params)
        batch = run_policy(ENV_ID, {}, policy, tasks[i:i + 1], seq, episodes=args.episodes)
        returns.append(batch.episode_returns[0])
    return time.perf_counter() - start, np.stack(returns)


collect_block(ENV_ID, {}, "ppo", params, tasks[:2], np.arange(2), np.zeros(2, np.int64), 0,
              np.random.SeedSequence(0), episodes=6)  # warm-up: first-call costs stay out of the timings
t_batch, t_loop = math.inf, math.inf
for rep in range(args.repeats):  # alternate, so a burst of load elsewhere hits both paths alike
    t, returns = batched(rep)
    if t < t_batch:
        t_batch, batch_returns = t, returns
    t, returns = one_at_a_time(rep)
    if t < t_loop:
        t_loop, loop_returns = t, returns

last = batch_returns[:, -10:].mean(1)  # (runs,)
learned = last >= 0.8 * max_return
batch_rate = args.runs * steps_per_run / t_batch
loop_rate = args.loop_runs * steps_per_run / t_loop
loop_learned = loop_returns[:, -10:].mean(1) >= 0.8 * max_return[: args.loop_runs]

print(f"{ENV_ID} (9x9, H {dist.horizon}): {args.runs} independent PPO runs x {args.episodes} episodes, "
      f"default collect.ppo_* parameters")
print(f"  learned (mean of last 10 episodes >= 80% of the oracle return): {learned.mean():.3f} "
      f"({learned.sum()}/{args.runs}); mean return first 10 episodes {batch_returns[:, :10].mean():.2f}, "
      f"last 10 {last.mean():.2f}, oracle {max_return.mean():.2f}")
print(f"  batched wall time: {t_batch:.1f} s for {args.runs * steps_per_run:,} env steps")
print(f"  env steps/s: batched {batch_rate:,.0f}, one run at a time {loop_rate:,.0f} "
      f"(on {args.loop_runs} runs; {loop_learned.sum()}/{args.loop_runs} learned) -> "
      f"ratio {batch_rate / loop_rate:.1f}x (best of {args.repeats}, measured alternately in this process)")

if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump({"env_id": ENV_ID, "runs": args.runs, "episodes": args.episodes, "loop_runs": args.loop_runs,
                   "repeats": args.repeats, "params": params, "learned_fraction": float(learned.mean()),
                   "batched_seconds": t_batch, "loop_seconds": t_loop, "batched_steps_per_s": batch_rate,
                   "loop_steps_per_s": loop_rate, "speedup": batch_rate / loop_rate,
                   "machine": platform.processor() or platform.machine()}, f, indent=2)
    print(f"wrote {args.json}")
