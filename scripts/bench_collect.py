"""Benchmark: batched bandit collection vs a plain per-task Python loop, measured side by side.

The batched path is the real one: ``collect_block`` (policy + native vector env + recording of
every step) on 1,000 Gaussian-bandit tasks x 500 pulls (DPT's setting: K 5, sigma 0.3, U[0, 1]).
The reference runs the same algorithm one task at a time with a Python loop over steps on
K-element numpy arrays, sampling the reward inline and recording actions and rewards: the usual
way a bandit baseline is written, with no env overhead at all. Its rate is measured on a subset
of the tasks (``--loop-tasks``) since it is per-task and linear in their number.

    python scripts/bench_collect.py [--tasks 1000] [--horizon 500] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time

import numpy as np

from icrl import envs
from icrl.collectors import collect_block

ENV_ID = "icrl/GaussianBandit-v0"
SIGMA = 0.3
PRIOR_MEAN, PRIOR_STD = 0.5, math.sqrt(1 / 12)
UCB_C = 1.0


def loop_thompson(mu: np.ndarray, horizon: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Gaussian Thompson sampling on one task, one pull per loop iteration."""
    k = len(mu)
    counts, sums = np.zeros(k), np.zeros(k)
    actions, rewards = np.zeros(horizon, dtype=np.int64), np.zeros(horizon)
    prior_prec, noise_prec = 1.0 / PRIOR_STD**2, 1.0 / SIGMA**2
    best, regret = mu.max(), 0.0
    for t in range(horizon):
        var = 1.0 / (prior_prec + counts * noise_prec)
        mean = var * (PRIOR_MEAN * prior_prec + sums * noise_prec)
        a = int(np.argmax(mean + np.sqrt(var) * rng.standard_normal(k)))
        r = mu[a] + SIGMA * rng.standard_normal()
        counts[a] += 1.0
        sums[a] += r
        actions[t], rewards[t] = a, r
        regret += best - mu[a]
    return actions, rewards, regret


def loop_ucb(mu: np.ndarray, horizon: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """UCB (mu_hat + c/sqrt(n), unpulled arms first, random ties) on one task."""
    k = len(mu)
    counts, sums = np.zeros(k), np.zeros(k)
    actions, rewards = np.zeros(horizon, dtype=np.int64), np.zeros(horizon)
    best, regret = mu.max(), 0.0
    for t in range(horizon):
        unpulled = np.flatnonzero(counts == 0)
        if unpulled.size:
            a = int(unpulled[rng.integers(unpulled.size)])
        else:
            index = sums / counts + UCB_C / np.sqrt(counts)
            top = np.flatnonzero(index == index.max())
            a = int(top[0] if top.size == 1 else top[rng.integers(top.size)])
        r = mu[a] + SIGMA * rng.standard_normal()
        counts[a] += 1.0
        sums[a] += r
        actions[t], rewards[t] = a, r
        regret += best - mu[a]
    return actions, rewards, regret


LOOPS = {"thompson": loop_thompson, "ucb": loop_ucb}


def time_batched(name: str, tasks: np.ndarray, horizon: int, repeats: int) -> tuple[float, float]:
    """Best wall time of ``collect_block`` over ``repeats`` runs, and the mean final regret."""
    n = len(tasks)
    best, regret = math.inf, 0.0
    for rep in range(repeats):
        start = time.perf_counter()
        batch = collect_block(ENV_ID, {"horizon": horizon, "sigma": SIGMA}, name, {"ucb_c": UCB_C}, tasks,
                              np.arange(n), np.zeros(n, dtype=np.int64), 0, np.random.SeedSequence(rep))
        best = min(best, time.perf_counter() - start)
        regret = float(batch.steps["regret"].reshape(n, horizon).sum(axis=1).mean())
    return best, regret


def time_loop(name: str, tasks: np.ndarray, horizon: int, repeats: int) -> tuple[float, float]:
    """Best wall time of the per-task loop over ``repeats`` runs, and the mean final regret."""
    best, regrets = math.inf, []
    for rep in range(repeats):
        rng = np.random.default_rng(rep)
        start = time.perf_counter()
        regrets = [LOOPS[name](mu, horizon, rng)[2] for mu in tasks]
        best = min(best, time.perf_counter() - start)
    return best, float(np.mean(regrets))


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--tasks", type=int, default=1000, help="histories collected by the batched path")
parser.add_argument("--horizon", type=int, default=500, help="pulls per history")
parser.add_argument("--loop-tasks", type=int, default=100, help="tasks timed in the per-task loop")
parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
args = parser.parse_args()

tasks = envs.task_distribution(ENV_ID).sample(args.tasks, np.random.default_rng(0))
collect_block(ENV_ID, {"horizon": 5}, "ucb", {}, tasks[:8], np.arange(8), np.zeros(8, dtype=np.int64), 0,
              np.random.SeedSequence(0))  # warm-up: imports and first-call costs

rows = []
for name in LOOPS:
    t_batch, reg_batch = time_batched(name, tasks, args.horizon, args.repeats)
    t_loop, reg_loop = time_loop(name, tasks[: args.loop_tasks], args.horizon, args.repeats)
    batch_rate = args.tasks * args.horizon / t_batch
    loop_rate = args.loop_tasks * args.horizon / t_loop
    rows.append({"algorithm": name, "batched_pulls_per_s": batch_rate, "loop_pulls_per_s": loop_rate,
                 "speedup": batch_rate / loop_rate, "batched_seconds": t_batch, "loop_seconds": t_loop,
                 "batched_final_regret": reg_batch, "loop_final_regret": reg_loop})

print(f"{ENV_ID}: batched {args.tasks} histories x {args.horizon} pulls through collect_block; "
      f"loop {args.loop_tasks} tasks one at a time; best of {args.repeats}")
print(f"{'algorithm':<10} {'batched pulls/s':>16} {'loop pulls/s':>13} {'speedup':>8} "
      f"{'regret (batched)':>17} {'regret (loop)':>14}")
for r in rows:
    print(f"{r['algorithm']:<10} {r['batched_pulls_per_s']:>16,.0f} {r['loop_pulls_per_s']:>13,.0f} "
          f"{r['speedup']:>7.1f}x {r['batched_final_regret']:>17.2f} {r['loop_final_regret']:>14.2f}")

if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump({"env_id": ENV_ID, "tasks": args.tasks, "horizon": args.horizon, "loop_tasks": args.loop_tasks,
                   "repeats": args.repeats, "machine": platform.processor() or platform.machine(),
                   "results": rows}, f, indent=2)
    print(f"wrote {args.json}")
