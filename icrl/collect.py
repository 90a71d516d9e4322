"""Collection of learning histories into a dataset (DESIGN §4–5).

The histories of a dataset are numbered 0..N-1; history ``h`` runs on task ``h // runs_per_task``
(run ``h % runs_per_task``) with the source algorithm assigned to it by a seeded permutation of the
configured fractions. Histories are made in fixed blocks of ``collect.histories_per_shard``; block
``b`` draws all its randomness from ``SeedSequence(seed, spawn_key=(BLOCK, b, source))`` and is
written as ``shard-b``, so the data never depends on batching, backend or worker count.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from icrl import envs
from icrl.collectors import collect_block
from icrl.config import Config, to_dict
from icrl.histories import DatasetWriter, HistoryBatch

# spawn keys of the independent random streams of a collection
_TASKS, _SOURCES, _BLOCK = 0, 1, 2


@dataclass
class CollectionPlan:
    """Which task, run and source every history of a dataset gets."""

    tasks: np.ndarray        # (n_tasks, *task_shape) task parameters
    task_split: str          # "sampled" (drawn from the prior) or "train" (a finite family's split)
    history_task: np.ndarray  # (N,) task index of each history
    history_run: np.ndarray   # (N,) run index within the task
    history_source: np.ndarray  # (N,) index into cfg.collect.algorithms
    block_size: int

    @property
    def n_histories(self) -> int:
        return len(self.history_task)

    @property
    def n_blocks(self) -> int:
        return -(-self.n_histories // self.block_size)

    def block(self, b: int) -> np.ndarray:
        """History indices of block ``b``."""
        return np.arange(b * self.block_size, min((b + 1) * self.block_size, self.n_histories))


def source_counts(n: int, fractions: list[float], k: int) -> np.ndarray:
    """Split ``n`` histories over ``k`` sources by ``fractions`` (largest remainder; equal if empty)."""
    f = np.full(k, 1.0 / k) if not fractions else np.asarray(fractions, dtype=np.float64)
    if np.any(f < 0) or f.sum() <= 0:
        raise ValueError(f"collect.fractions: must be non-negative with a positive sum, got {fractions}")
    f = f / f.sum()
    counts = np.floor(f * n).astype(np.int64)
    rest = np.argsort(-(f * n - counts), kind="stable")[: n - counts.sum()]
    counts[rest] += 1
    return counts


def make_plan(cfg: Config) -> CollectionPlan:
    """Tasks and the (task, run, source) of every history, from the master seed alone."""
    c = cfg.collect
    dist = envs.task_distribution(cfg.env.id, **cfg.env.kwargs)
    split = dist.split()
    if split is None:
        tasks = dist.sample(c.n_tasks, np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_TASKS,))))
        task_split = "sampled"
    else:  # a finite family: cycle through its training tasks
        train = split[0]
        tasks = train[np.arange(c.n_tasks) % len(train)]
        task_split = "train"
    n = c.n_tasks * c.runs_per_task
    counts = source_counts(n, c.fractions, len(c.algorithms))
    source = np.repeat(np.arange(len(c.algorithms)), counts)
    source = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_SOURCES,))).permutation(source)
    h = np.arange(n)
    return CollectionPlan(tasks, task_split, h // c.runs_per_task, h % c.runs_per_task, source, c.histories_per_shard)


def collect_shard(cfg: Config, plan: CollectionPlan, b: int) -> HistoryBatch:
    """Run block ``b``: every source algorithm on its histories of the block, batched."""
    idx = plan.block(b)
    parts = []
    for k, name in enumerate(cfg.collect.algorithms):
        sub = idx[plan.history_source[idx] == k]
        if len(sub) == 0:
            continue
        parts.append(collect_block(
            cfg.env.id, cfg.env.kwargs, name, cfg.collect.algorithm_params(),
            tasks=plan.tasks[plan.history_task[sub]], task_index=plan.history_task[sub],
            run_index=plan.history_run[sub], source_index=k, episodes=cfg.collect.episodes,
            seed_seq=np.random.SeedSequence(cfg.seed, spawn_key=(_BLOCK, b, k)),
        ))
    return HistoryBatch.concat(parts)


def collect(cfg: Config, out: str | Path, progress: bool = True) -> dict:
    """Collect the dataset of ``cfg`` into ``out`` and return a summary.

    Returns:
        ``{"out", "n_histories", "n_steps", "seconds", "per_source": {name: {...}}}`` where each
        source has its history count, mean final cumulative regret (bandits) and mean episode return.
    """
    plan = make_plan(cfg)
    meta = {"env_id": cfg.env.id, "env_kwargs": cfg.env.kwargs, "sources": list(cfg.collect.algorithms),
            "task_split": plan.task_split, "seed": cfg.seed, "collect": to_dict(cfg.collect)}
    writer = DatasetWriter(out, meta)
    start = time.perf_counter()
    entries, stats = [], {name: {"n": 0, "regret": [], "return": []} for name in cfg.collect.algorithms}
    for b in tqdm(range(plan.n_blocks), desc="collect", unit="shard", disable=not progress):
        batch = collect_shard(cfg, plan, b)
        entries.append(writer.write_shard(b, batch))
        ends = np.cumsum(batch.lengths)
        for k, name in enumerate(cfg.collect.algorithms):
            mask = batch.source == k
            stats[name]["n"] += int(mask.sum())
            if "regret" in batch.steps:
                cum = np.concatenate([[0.0], np.cumsum(batch.steps["regret"], dtype=np.float64)])
                per_hist = cum[ends] - cum[ends - batch.lengths]
                stats[name]["regret"].append(per_hist[mask])
            stats[name]["return"] += [r.mean() for r, m in zip(batch.episode_returns, mask) if m and len(r)]
    writer.finish(entries)
    per_source = {}
    for name, s in stats.items():
        row = {"histories": s["n"]}
        if s["regret"]:
            row["final_regret"] = float(np.concatenate(s["regret"]).mean())
        if s["return"]:
            row["mean_return"] = float(np.mean(s["return"]))
        per_source[name] = row
    return {"out": str(out), "n_histories": plan.n_histories, "n_steps": int(sum(e["n_steps"] for e in entries)),
            "seconds": time.perf_counter() - start, "per_source": per_source}
