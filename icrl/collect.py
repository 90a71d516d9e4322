"""Collection of learning histories into a dataset (docs/architecture.md#collection-and-source-algorithms).

The histories of a dataset are numbered 0..N-1; history ``h`` runs on task ``h // runs_per_task``
(run ``h % runs_per_task``) with the source algorithm assigned to it by a seeded permutation of the
configured fractions. Histories are made in fixed blocks of ``collect.histories_per_shard``; block
``b`` draws all its randomness from ``SeedSequence(seed, spawn_key=(BLOCK, b, source))`` and is
written as ``shard-b``, so the data never depends on batching, backend or worker count.

A collection holds its folder's lock (:func:`icrl.lock.folder_lock`) for the whole job. The plan
record (config minus backend settings) is written to ``collect.json`` and its SHA-256 into every
shard and the manifest (``plan_sha256``): a resume keeps only shards of its own plan and refuses a
folder holding another's. Workers of the ``process`` backend die with the collecting process
(:func:`icrl.procs.die_with_parent`), so a killed collection leaves nothing running.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from icrl import envs
from icrl.collectors import collect_block
from icrl.config import Config, ConfigError, import_env_module, to_dict
from icrl.histories import DatasetWriter, HistoryBatch, _write_json, file_sha256
from icrl.integrity import complete_shards, remove_partials
from icrl.lock import LOCK_NAME, folder_lock
from icrl.procs import die_with_parent
from icrl.spaces import EnvSpec
from icrl.store import _load_manifest

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


_PLAN: dict[str, CollectionPlan] = {}  # this process's plan, keyed by the config that made it


def plan_of(cfg: Config) -> CollectionPlan:
    """``make_plan(cfg)`` once per process: every block of a collection reuses it (a worker of the
    process or Ray backend makes it on its first block)."""
    key = json.dumps(to_dict(cfg), sort_keys=True)
    if key not in _PLAN:
        _PLAN.clear()
        _PLAN[key] = make_plan(cfg)
    return _PLAN[key]


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


def _block_stats(batch: HistoryBatch, n_sources: int, episodes: int) -> list[dict[str, np.ndarray]]:
    """Per source: the final cumulative regret (bandits) and mean episode return of each history,
    and the sum and count of the returns per episode of its histories of ``episodes`` episodes
    (the source's learning curve)."""
    ends = np.cumsum(batch.lengths)
    per_hist_regret = None
    if "regret" in batch.steps:
        cum = np.concatenate([[0.0], np.cumsum(batch.steps["regret"], dtype=np.float64)])
        per_hist_regret = cum[ends] - cum[ends - batch.lengths]
    mean_return = np.array([r.mean() if len(r) else np.nan for r in batch.episode_returns])
    whole = np.array([len(r) == episodes for r in batch.episode_returns])
    returns = np.array([r for r in batch.episode_returns if len(r) == episodes]).reshape(-1, episodes)  # (n', E)
    return [{"regret": per_hist_regret[batch.source == k] if per_hist_regret is not None else np.zeros(0),
             "return": mean_return[batch.source == k],
             "curve_sum": returns[batch.source[whole] == k].sum(0), "curve_n": int((batch.source[whole] == k).sum())}
            for k in range(n_sources)]


def _write_block(cfg: Config, b: int, out: str, meta: dict) -> tuple[int, dict, list]:
    """Collect block ``b`` and write it as its shard (runs in a worker process for ``process``)."""
    import_env_module(cfg)  # a fresh worker has not imported a user env family yet
    batch = collect_shard(cfg, plan_of(cfg), b)
    entry = DatasetWriter(out, meta).write_shard(b, batch)
    return b, entry, _block_stats(batch, len(cfg.collect.algorithms), cfg.collect.episodes)


def _run_blocks(cfg: Config, todo: list[int], out: str, meta: dict) -> Iterator[tuple[int, dict, list]]:
    """Run the blocks ``todo`` on the configured backend; yields ``(block, shard entry, stats)`` as
    blocks complete. Every block writes its own shard, so no data travels back but statistics."""
    c = cfg.collect
    if c.backend == "ray" and todo:
        try:
            import ray
        except ImportError:
            raise ConfigError("collect.backend: ray needs the optional extra: pip install 'icrl[ray]'") from None
        if not ray.is_initialized():  # attach to a cluster by address, or start a local Ray
            kwargs = {"address": c.ray_address} if c.ray_address else {"num_cpus": c.workers}
            ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
        remote = ray.remote(_write_block)
        pending = [remote.remote(cfg, b, out, meta) for b in todo]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    elif c.backend == "process" and c.workers > 1 and len(todo) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=c.workers, mp_context=ctx, initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_write_block, cfg, b, out, meta) for b in todo]
            for future in as_completed(futures):
                yield future.result()
    else:
        for b in todo:
            yield _write_block(cfg, b, out, meta)


def _check_plan(out: Path, plan_record: dict) -> None:
    """A folder holds one collection: resuming with another config would mix two datasets."""
    path = out / "collect.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = None
        if old != plan_record:
            raise ConfigError(f"--out: {out} holds (part of) a collection with another config; "
                              "use a new folder, or the same config to resume it")
    else:
        _write_json(path, plan_record)  # via collect.json.tmp-<pid>, fsynced, renamed


def plan_sha256(plan_record: dict) -> str:
    """Hex SHA-256 of a plan record's canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(plan_record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _kept_derived(out: Path, entries: list[dict]) -> list[dict]:
    """The derived entries (LHF scores, weights) of a finished dataset's manifest that stay valid:
    the shards are the same files and the derived file still matches its sha256."""
    try:
        old = _load_manifest(out)
    except (OSError, ValueError):
        return []
    if sorted((e["file"], e["sha256"]) for e in old["shards"]) != sorted((e["file"], e["sha256"]) for e in entries):
        return []
    return [d for d in old["derived"] if (out / d["file"]).is_file() and file_sha256(out / d["file"]) == d["sha256"]]


def _collect_blocks(cfg: Config, plan: CollectionPlan, out: Path, meta: dict, record: dict, spec: EnvSpec,
                    progress: bool) -> tuple[dict, dict, list[list], float]:
    """The locked part of :func:`collect`: check the plan, keep the complete shards, run the missing
    blocks, write the manifest. Returns ``(kept shards, all shard entries, per-source block
    statistics, start time)``."""
    _check_plan(out, record)
    remove_partials(out)
    found = complete_shards(out, meta["plan_sha256"], spec, len(cfg.collect.algorithms))
    done = {b: e for b, e in found.items() if b < plan.n_blocks}
    todo = [b for b in range(plan.n_blocks) if b not in done]
    start = time.perf_counter()
    entries = dict(done)
    k = len(cfg.collect.algorithms)
    stats: list[list] = [[] for _ in range(k)]
    with tqdm(total=plan.n_blocks, initial=len(done), desc="collect", unit="shard", disable=not progress) as bar:
        for b, entry, block_stats in _run_blocks(cfg, todo, str(out), meta):
            entries[b] = entry
            for i in range(k):
                stats[i].append(block_stats[i])
            bar.update(1)
    shard_entries = list(entries.values())
    DatasetWriter(out, meta).finish(shard_entries, _kept_derived(out, shard_entries))
    return done, entries, stats, start


def collect(cfg: Config, out: str | Path, progress: bool = True) -> dict:
    """Collect the dataset of ``cfg`` into ``out`` and return a summary.

    Blocks already complete on disk (a killed run of the same config) are kept, partial files
    removed, and only the missing blocks collected, so the result is byte-identical to an
    uninterrupted run; a finished dataset collected again keeps its derived files (LHF weights).
    ``collect.backend``: ``serial`` runs blocks in this process, ``process`` in ``collect.workers``
    worker processes, ``ray`` as Ray tasks on a local Ray or the cluster at ``collect.ray_address``
    (then ``out`` must be a path every node can write); each block writes its own shard, and the
    data are the same whatever the backend. The folder's lock is held throughout.

    Returns:
        ``{"out", "n_histories", "n_steps", "seconds", "resumed", "per_source": {name: {...}},
        "source_curves": {name: [...]}}`` where each source has its history count, mean final
        cumulative regret (bandits) and mean episode return of the histories collected in this
        call, and (several episodes per history) its mean return per episode.

    Raises:
        ConfigError: ``out`` holds another collection, or another process holds its lock.
    """
    out = Path(out)
    plan = plan_of(cfg)
    spec = EnvSpec.for_env(cfg.env.id, cfg.env.kwargs)
    meta = {"env_id": cfg.env.id, "env_kwargs": cfg.env.kwargs, "sources": list(cfg.collect.algorithms),
            "task_split": plan.task_split, "seed": cfg.seed, "collect": to_dict(cfg.collect),
            "spec": spec.to_dict()}
    record = {k: v for k, v in meta.items() if k not in ("collect", "spec")}  # the spec follows from env id + kwargs
    record["collect"] = {k: v for k, v in meta["collect"].items() if k not in ("backend", "workers", "ray_address")}
    meta["plan_sha256"] = plan_sha256(record)
    with folder_lock(out, "collect"):
        fresh = not any(p.name != LOCK_NAME for p in out.iterdir())
        try:
            done, entries, stats, start = _collect_blocks(cfg, plan, out, meta, record, spec, progress)
        except BaseException:
            if fresh and not any(out.glob("shard-*.h5")):
                # failed before any shard (e.g. an env's NaN observation): leave the folder as it was
                # found, empty, lock file included (a process that takes the lock meanwhile locks a
                # new file; this one writes nothing more)
                (out / "collect.json").unlink(missing_ok=True)
                remove_partials(out)
                (out / LOCK_NAME).unlink(missing_ok=True)
            raise
    per_source, curves = {}, {}
    for i, name in enumerate(cfg.collect.algorithms):
        regret = np.concatenate([s["regret"] for s in stats[i]]) if stats[i] else np.zeros(0)
        returns = np.concatenate([s["return"] for s in stats[i]]) if stats[i] else np.zeros(0)
        row = {"histories": int(len(returns))}
        if len(regret):
            row["final_regret"] = float(regret.mean())
        if len(returns) and np.isfinite(returns).any():
            row["mean_return"] = float(np.nanmean(returns))
        per_source[name] = row
        n = sum(s["curve_n"] for s in stats[i])
        if cfg.collect.episodes > 1 and n:
            curves[name] = (sum(s["curve_sum"] for s in stats[i]) / n).tolist()
    return {"out": str(out), "n_histories": plan.n_histories, "n_steps": int(sum(e["n_steps"] for e in entries.values())),
            "seconds": time.perf_counter() - start, "resumed": len(done), "per_source": per_source,
            "source_curves": curves}
