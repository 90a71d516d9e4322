"""Benchmark: batched collection vs one task (or run) at a time, measured side by side.

Three sections; ``--only`` picks one, by default all run.

1. bandit: batched bandit collection vs a plain per-task Python loop. The batched path is the
   real one: ``collect_block`` (policy + native vector env + recording of every step) on 1,000
   Gaussian-bandit tasks x 500 pulls (DPT's setting: K 5, sigma 0.3, U[0, 1]). The reference runs
   the same algorithm one task at a time with a Python loop over steps on K-element numpy arrays,
   sampling the reward inline and recording actions and rewards: the usual way a bandit baseline
   is written, with no env overhead at all. Its rate is measured on a subset of the tasks
   (``--loop-tasks``) since it is per-task and linear in their number. Reported in pulls/s, with
   the mean final regret of each side as a check that both ran the same algorithm.
2. ppo: batched independent PPO learners on Dark Room: how often they learn, and how fast.
   Learning: ``--ppo-runs`` independent PPO runs (one learner per history, from scratch, the
   default ``collect.ppo_*`` hyper-parameters) on goals drawn from Dark Room's train split (9x9,
   H 20), ``--ppo-episodes`` episodes each, through ``collect_block`` (the collection pipeline's
   path). A run counts as learned when the mean return of its last 10 episodes is >= 80% of the
   oracle's. Speed: env steps per second of those runs batched (stacked parameters, one vector
   env) vs the same kind of runs one at a time: a plain loop over single-learner PPO objects, each
   driven by ``run_policy`` on a one-env vector env (timed on ``--ppo-loop-runs`` runs; the cost
   is per run).
3. ppo_box: batched independent Box (diagonal Gaussian) PPO learners on the point robot
   (``icrl/PointRobot-v0``: 2-D position, actions in [-1, 1]^2 scaled by 0.1, reward -distance to
   a hidden goal, H 20), the same comparison as ``ppo``: env steps/s of ``--ppo-box-runs`` runs
   batched in one ``collect_block`` vs single-learner runs one at a time through ``run_policy``
   (timed on ``--ppo-box-loop-runs`` runs), default ``collect.ppo_*`` hyper-parameters. How well
   they learn is reported as the normalised score of the last 10 episodes,
   (R - R_random) / (R_oracle - R_random), with R_random the mean return of uniformly random
   actions on the same goals; a run counts as learned at a score >= 0.8.

In every section the two sides are timed in this process, alternately (so a burst of load
elsewhere hits both alike), and the best of ``--repeats`` is reported.

    python scripts/bench_collect.py [--only {bandit,ppo,ppo_box}] [--tasks 1000] [--horizon 500] [--loop-tasks 100]
        [--ppo-runs 64] [--ppo-episodes 300] [--ppo-loop-runs 8] [--ppo-box-runs 256] [--ppo-box-episodes 100]
        [--ppo-box-loop-runs 8] [--repeats 3] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

from icrl import envs
from icrl.collectors import collect_block, make_policy, run_policy
from icrl.config import CollectConfig

BANDIT_ENV_ID = "icrl/GaussianBandit-v0"
SIGMA = 0.3
PRIOR_MEAN, PRIOR_STD = 0.5, math.sqrt(1 / 12)
UCB_C = 1.0

PPO_ENV_ID = "icrl/DarkRoom-v0"
PPO_BOX_ENV_ID = "icrl/PointRobot-v0"
LEARNED_AT = 0.8  # a PPO run is learned when its last 10 episodes average >= this fraction of the oracle return
# a Box PPO run is learned when the normalised score of its last 10 episodes is >= this (returns are negative there,
# so a fraction of the oracle return means nothing)
BOX_LEARNED_AT = 0.8


def best_of(repeats: int, paths: dict[str, Callable[[int], Any]]) -> dict[str, tuple[float, Any]]:
    """Run each path ``fn(rep)`` once per repeat, alternating between them, timing each call.

    Returns, per path name, the best wall seconds and the result of that fastest call.
    """
    best: dict[str, tuple[float, Any]] = {name: (math.inf, None) for name in paths}
    for rep in range(repeats):
        for name, fn in paths.items():
            start = time.perf_counter()
            out = fn(rep)
            seconds = time.perf_counter() - start
            if seconds < best[name][0]:
                best[name] = (seconds, out)
    return best


# ----------------------------------------------------------------------------------------------
# bandit: collect_block vs a per-task loop


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


def bench_bandit(args: argparse.Namespace) -> dict[str, Any]:
    """Pulls/s of ``collect_block`` vs the per-task loop, per algorithm; prints a table, returns the JSON section."""
    n, horizon = args.tasks, args.horizon
    tasks = envs.task_distribution(BANDIT_ENV_ID).sample(n, np.random.default_rng(0))  # (tasks, K) arm means
    collect_block(BANDIT_ENV_ID, {"horizon": 5}, "ucb", {}, tasks[:8], np.arange(8), np.zeros(8, dtype=np.int64), 0,
                  np.random.SeedSequence(0))  # warm-up: imports and first-call costs

    rows = []
    for name in LOOPS:
        def batched(rep: int, name: str = name) -> Any:
            return collect_block(BANDIT_ENV_ID, {"horizon": horizon, "sigma": SIGMA}, name, {"ucb_c": UCB_C}, tasks,
                                 np.arange(n), np.zeros(n, dtype=np.int64), 0, np.random.SeedSequence(rep))

        def loop(rep: int, name: str = name) -> list[float]:
            rng = np.random.default_rng(rep)
            return [LOOPS[name](mu, horizon, rng)[2] for mu in tasks[: args.loop_tasks]]  # final regret per task

        timed = best_of(args.repeats, {"batched": batched, "loop": loop})
        (t_batch, batch), (t_loop, loop_regrets) = timed["batched"], timed["loop"]
        reg_batch = float(batch.steps["regret"].reshape(n, horizon).sum(axis=1).mean())  # (tasks * H,) -> (tasks, H)
        batch_rate = n * horizon / t_batch
        loop_rate = args.loop_tasks * horizon / t_loop
        rows.append({"algorithm": name, "batched_pulls_per_s": batch_rate, "loop_pulls_per_s": loop_rate,
                     "speedup": batch_rate / loop_rate, "batched_seconds": t_batch, "loop_seconds": t_loop,
                     "batched_final_regret": reg_batch, "loop_final_regret": float(np.mean(loop_regrets))})

    print(f"{BANDIT_ENV_ID}: batched {n} histories x {horizon} pulls through collect_block; "
          f"loop {args.loop_tasks} tasks one at a time; best of {args.repeats}, measured alternately")
    print(f"{'algorithm':<10} {'batched pulls/s':>16} {'loop pulls/s':>13} {'speedup':>8} "
          f"{'regret (batched)':>17} {'regret (loop)':>14}")
    for r in rows:
        print(f"{r['algorithm']:<10} {r['batched_pulls_per_s']:>16,.0f} {r['loop_pulls_per_s']:>13,.0f} "
              f"{r['speedup']:>7.1f}x {r['batched_final_regret']:>17.2f} {r['loop_final_regret']:>14.2f}")

    return {"measures": "pulls/s of collect_block on all tasks (batched) vs a per-task Python loop on the first "
                        "loop_tasks tasks (loop); final regret = mean over tasks of summed per-pull regret",
            "env_id": BANDIT_ENV_ID, "tasks": n, "horizon": horizon, "loop_tasks": args.loop_tasks,
            "sigma": SIGMA, "ucb_c": UCB_C, "results": rows}


# ----------------------------------------------------------------------------------------------
# ppo: batched independent learners vs one run at a time


def time_ppo_runs(env_id: str, tasks: np.ndarray, episodes: int, loop_runs: int, seed: int, repeats: int,
                  params: dict[str, Any]) -> tuple[float, np.ndarray, float, np.ndarray]:
    """Batched PPO runs vs the first ``loop_runs`` of them one at a time, timed alternately.

    Returns:
        ``(t_batch, batch_returns (runs, episodes), t_loop, loop_returns (loop_runs, episodes))``,
        each time the best of ``repeats``.
    """
    runs = len(tasks)
    dist = envs.task_distribution(env_id)

    def batched(rep: int) -> np.ndarray:
        """All runs at once; (runs, episodes) returns."""
        batch = collect_block(env_id, {}, "ppo", params, tasks, np.arange(runs), np.zeros(runs, np.int64), 0,
                              np.random.SeedSequence([seed, rep]), episodes=episodes)
        return np.stack(batch.episode_returns)

    def one_at_a_time(rep: int) -> np.ndarray:
        """The first ``loop_runs`` runs, each its own single-learner PPO object; (loop_runs, episodes) returns."""
        returns = []
        for i in range(loop_runs):
            seq = np.random.SeedSequence([seed, rep, i])
            policy = make_policy("ppo", 1, dist, np.random.default_rng(seq), **params)
            batch = run_policy(env_id, {}, policy, tasks[i:i + 1], seq, episodes=episodes)
            returns.append(batch.episode_returns[0])
        return np.stack(returns)

    collect_block(env_id, {}, "ppo", params, tasks[:2], np.arange(2), np.zeros(2, np.int64), 0,
                  np.random.SeedSequence(0), episodes=6)  # warm-up: first-call costs stay out of the timings
    timed = best_of(repeats, {"batched": batched, "loop": one_at_a_time})
    return (*timed["batched"], *timed["loop"])


def bench_ppo(args: argparse.Namespace) -> dict[str, Any]:
    """Learned fraction and env steps/s of batched PPO runs vs one at a time; prints, returns the JSON section."""
    runs, episodes, loop_runs, seed = args.ppo_runs, args.ppo_episodes, args.ppo_loop_runs, args.ppo_seed
    dist = envs.task_distribution(PPO_ENV_ID)
    tasks = dist.sample(runs, np.random.default_rng(seed))  # (runs, 2) goals from the train split
    max_return = dist.max_return(tasks)  # (runs,)
    params = CollectConfig().algorithm_params()
    steps_per_run = episodes * dist.horizon

    t_batch, batch_returns, t_loop, loop_returns = time_ppo_runs(PPO_ENV_ID, tasks, episodes, loop_runs, seed,
                                                                 args.repeats, params)

    last = batch_returns[:, -10:].mean(1)  # (runs,)
    learned = last >= LEARNED_AT * max_return
    loop_learned = loop_returns[:, -10:].mean(1) >= LEARNED_AT * max_return[:loop_runs]  # (loop_runs,)
    batch_rate = runs * steps_per_run / t_batch
    loop_rate = loop_runs * steps_per_run / t_loop

    print(f"{PPO_ENV_ID} (9x9, H {dist.horizon}): {runs} independent PPO runs x {episodes} episodes, "
          f"default collect.ppo_* parameters")
    print(f"  learned (mean of last 10 episodes >= {LEARNED_AT:.0%} of the oracle return): {learned.mean():.3f} "
          f"({learned.sum()}/{runs}); mean return first 10 episodes {batch_returns[:, :10].mean():.2f}, "
          f"last 10 {last.mean():.2f}, oracle {max_return.mean():.2f}")
    print(f"  batched wall time: {t_batch:.1f} s for {runs * steps_per_run:,} env steps")
    print(f"  env steps/s: batched {batch_rate:,.0f}, one run at a time {loop_rate:,.0f} "
          f"(on {loop_runs} runs; {loop_learned.sum()}/{loop_runs} learned) -> "
          f"ratio {batch_rate / loop_rate:.1f}x (best of {args.repeats}, measured alternately in this process)")

    return {"measures": "env steps/s of runs independent PPO learners batched in one collect_block (batched) vs "
                        "loop_runs single-learner runs one at a time via run_policy (loop); learned = mean return "
                        "of the last 10 episodes >= learned_at x oracle return",
            "env_id": PPO_ENV_ID, "runs": runs, "episodes": episodes, "episode_steps": dist.horizon,
            "loop_runs": loop_runs, "seed": seed, "learned_at": LEARNED_AT,
            "params": {k: v for k, v in params.items() if k.startswith("ppo_")},
            "learned_fraction": float(learned.mean()), "loop_learned_fraction": float(loop_learned.mean()),
            "mean_return_first10": float(batch_returns[:, :10].mean()), "mean_return_last10": float(last.mean()),
            "mean_oracle_return": float(max_return.mean()), "batched_seconds": t_batch, "loop_seconds": t_loop,
            "batched_steps_per_s": batch_rate, "loop_steps_per_s": loop_rate, "speedup": batch_rate / loop_rate}


# ----------------------------------------------------------------------------------------------
# ppo_box: batched independent Gaussian-policy learners vs one run at a time


def bench_ppo_box(args: argparse.Namespace) -> dict[str, Any]:
    """Env steps/s of batched Box PPO runs vs one at a time, and their scores; prints, returns the JSON section."""
    runs, episodes, loop_runs, seed = args.ppo_box_runs, args.ppo_box_episodes, args.ppo_box_loop_runs, args.ppo_seed
    dist = envs.task_distribution(PPO_BOX_ENV_ID)
    tasks = dist.sample(runs, np.random.default_rng(seed))  # (runs, 2) goals from the train split
    oracle = dist.max_return(tasks)  # (runs,)
    params = CollectConfig().algorithm_params()
    steps_per_run = episodes * dist.horizon
    random_returns = np.stack(collect_block(PPO_BOX_ENV_ID, {}, "random", {}, tasks, np.arange(runs), np.zeros(runs, np.int64), 0,
                                            np.random.SeedSequence([seed, 99]), episodes=10).episode_returns)
    baseline = random_returns.mean(1)  # (runs,) R_random of every goal

    t_batch, batch_returns, t_loop, loop_returns = time_ppo_runs(PPO_BOX_ENV_ID, tasks, episodes, loop_runs, seed,
                                                                 args.repeats, params)

    def score(returns: np.ndarray, rows: slice) -> np.ndarray:
        """(k,) normalised score of the last 10 episodes of each run."""
        return (returns[:, -10:].mean(1) - baseline[rows]) / (oracle[rows] - baseline[rows])

    scores, loop_scores = score(batch_returns, slice(None)), score(loop_returns, slice(0, loop_runs))
    batch_rate = runs * steps_per_run / t_batch
    loop_rate = loop_runs * steps_per_run / t_loop

    print(f"{PPO_BOX_ENV_ID} (H {dist.horizon}, actions {dist.action_space}): {runs} independent Gaussian-policy "
          f"PPO runs x {episodes} episodes, default collect.ppo_* parameters (clipped actions)")
    print(f"  mean return: random {baseline.mean():.2f}, first 10 episodes {batch_returns[:, :10].mean():.2f}, "
          f"last 10 {batch_returns[:, -10:].mean():.2f}, oracle {oracle.mean():.2f}; normalised score of the last 10 "
          f"episodes: mean {scores.mean():.2f}, learned (>= {BOX_LEARNED_AT}) {(scores >= BOX_LEARNED_AT).mean():.3f}")
    print(f"  batched wall time: {t_batch:.1f} s for {runs * steps_per_run:,} env steps")
    print(f"  env steps/s: batched {batch_rate:,.0f}, one run at a time {loop_rate:,.0f} "
          f"(on {loop_runs} runs; mean score {loop_scores.mean():.2f}) -> "
          f"ratio {batch_rate / loop_rate:.1f}x (best of {args.repeats}, measured alternately in this process)")

    return {"measures": "env steps/s of runs independent Box PPO learners batched in one collect_block (batched) vs "
                        "loop_runs single-learner runs one at a time via run_policy (loop); score = (mean return of "
                        "the last 10 episodes - random's) / (oracle's - random's)",
            "env_id": PPO_BOX_ENV_ID, "runs": runs, "episodes": episodes, "episode_steps": dist.horizon,
            "loop_runs": loop_runs, "seed": seed, "learned_at": BOX_LEARNED_AT,
            "params": {k: v for k, v in params.items() if k.startswith("ppo_")},
            "mean_score": float(scores.mean()), "learned_fraction": float((scores >= BOX_LEARNED_AT).mean()),
            "loop_mean_score": float(loop_scores.mean()), "mean_random_return": float(baseline.mean()),
            "mean_return_first10": float(batch_returns[:, :10].mean()),
            "mean_return_last10": float(batch_returns[:, -10:].mean()), "mean_oracle_return": float(oracle.mean()),
            "batched_seconds": t_batch, "loop_seconds": t_loop,
            "batched_steps_per_s": batch_rate, "loop_steps_per_s": loop_rate, "speedup": batch_rate / loop_rate}


# ----------------------------------------------------------------------------------------------

SECTIONS = {"bandit": bench_bandit, "ppo": bench_ppo, "ppo_box": bench_ppo_box}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(SECTIONS), default=None, help="run one section (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each side; the best is reported")
    parser.add_argument("--json", default=None, help="also write the numbers of the sections run to this JSON file")
    bandit = parser.add_argument_group("bandit")
    bandit.add_argument("--tasks", type=int, default=1000, help="histories collected by the batched path")
    bandit.add_argument("--horizon", type=int, default=500, help="pulls per history")
    bandit.add_argument("--loop-tasks", type=int, default=100, help="tasks timed in the per-task loop")
    ppo = parser.add_argument_group("ppo")
    ppo.add_argument("--ppo-runs", type=int, default=64, help="independent PPO runs, batched")
    ppo.add_argument("--ppo-episodes", type=int, default=300, help="episodes per run (H 20 steps each)")
    ppo.add_argument("--ppo-loop-runs", type=int, default=8, help="runs timed one at a time")
    ppo.add_argument("--ppo-seed", type=int, default=0, help="seed of the goals and PPO runs (both PPO sections)")
    ppo_box = parser.add_argument_group("ppo_box")
    ppo_box.add_argument("--ppo-box-runs", type=int, default=256, help="independent Box PPO runs, batched")
    ppo_box.add_argument("--ppo-box-episodes", type=int, default=100, help="episodes per run (H 20 steps each)")
    ppo_box.add_argument("--ppo-box-loop-runs", type=int, default=8, help="Box runs timed one at a time")
    args = parser.parse_args()
    for flag, value in [("--repeats", args.repeats), ("--tasks", args.tasks), ("--horizon", args.horizon),
                        ("--loop-tasks", args.loop_tasks), ("--ppo-runs", args.ppo_runs),
                        ("--ppo-episodes", args.ppo_episodes), ("--ppo-loop-runs", args.ppo_loop_runs),
                        ("--ppo-box-runs", args.ppo_box_runs), ("--ppo-box-episodes", args.ppo_box_episodes),
                        ("--ppo-box-loop-runs", args.ppo_box_loop_runs)]:
        if value < 1:
            parser.error(f"{flag} must be >= 1; got {value}")
    if args.loop_tasks > args.tasks:
        parser.error(f"--loop-tasks ({args.loop_tasks}) must be <= --tasks ({args.tasks})")
    if args.ppo_loop_runs > args.ppo_runs:
        parser.error(f"--ppo-loop-runs ({args.ppo_loop_runs}) must be <= --ppo-runs ({args.ppo_runs})")
    if args.ppo_box_loop_runs > args.ppo_box_runs:
        parser.error(f"--ppo-box-loop-runs ({args.ppo_box_loop_runs}) must be <= --ppo-box-runs ({args.ppo_box_runs})")
    if args.ppo_box_episodes < 10:
        parser.error(f"--ppo-box-episodes must be >= 10 (the score averages the last 10 episodes); got "
                     f"{args.ppo_box_episodes}")

    out: dict[str, Any] = {"script": "scripts/bench_collect.py", "argv": sys.argv[1:], "repeats": args.repeats,
                           "timing": "best wall seconds of repeats, the two sides of a section run alternately "
                                     "in one process", "machine": platform.processor() or platform.machine()}
    names = [args.only] if args.only else list(SECTIONS)
    for i, name in enumerate(names):
        if i:
            print()
        out[name] = SECTIONS[name](args)

    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
