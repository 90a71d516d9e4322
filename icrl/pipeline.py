"""The whole experiment as one function: collect (or stream) -> train -> eval (docs/architecture.md#data-flow)."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from icrl.config import Config, ConfigError
from icrl.evaluation import aggregate_seeds, evaluate
from icrl.plots import plot_results
from icrl.tracking import Tracker


def evaluate_and_plot(cfg: Config, checkpoint: str | Path | None, out_dir: str | Path,
                      progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Online evaluation, its PNG next to ``results.json``, and the eval metrics tracked.

    With ``eval.offline_sizes`` set, also the DPT paper's offline mode into ``results_offline.json``.
    """
    results = evaluate(cfg, checkpoint, out_dir, progress=progress)
    if cfg.eval.offline_sizes and checkpoint is not None:
        from icrl.offline import evaluate_offline

        evaluate_offline(cfg, checkpoint, out_dir)
    return results, plot_and_track(cfg, results, out_dir)


def plot_and_track(cfg: Config, results: dict[str, Any], out_dir: str | Path) -> Path:
    """The PNG of ``results`` next to its ``results.json``, and the eval metrics tracked."""
    name = "regret.png" if results["metric"] == "cumulative_regret" else "return.png"
    plot = plot_results(results, Path(out_dir) / name)
    tracker = Tracker(out_dir, cfg, "eval")
    tracker.log_eval(results, plot)
    tracker.close()
    return plot


def evaluate_seeds(cfg: Config, run_dir: str | Path, out_dir: str | Path,
                   progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Re-evaluate every training seed's model of a multi-seed run at ``cfg``'s eval settings.

    Each ``RUN/seed-<s>/checkpoint`` is evaluated as ``run`` evaluates it, into ``OUT/seed-<s>/``,
    and the seeds are aggregated into ``OUT``. The per-seed wall times stay what the models cost
    (collect + train + eval, from ``RUN/results.json``); without that file they are the
    re-evaluation's own. The probes are those of training (``RUN/seed-<s>/metrics.jsonl``).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    train_dirs = [run_dir / f"seed-{s}" for s in cfg.seeds]
    missing = [str(d / "checkpoint") for d in train_dirs if not (d / "checkpoint").is_dir()]
    if missing:
        raise ConfigError(f"--checkpoint: with seeds {cfg.seeds} give the run folder holding seed-<s>/checkpoint; "
                          f"not found: {', '.join(missing)}")
    summary = run_dir / "results.json"
    before = json.loads(summary.read_text()).get("per_seed", {}) if summary.exists() else {}
    walls = []
    for s, d in zip(cfg.seeds, train_dirs):
        start = time.perf_counter()
        evaluate_and_plot(dataclasses.replace(cfg, seed=s, seeds=[]), d / "checkpoint", out_dir / f"seed-{s}",
                          progress=progress)
        walls.append(before.get(str(s), {}).get("wall_seconds", time.perf_counter() - start))
    results = aggregate_seeds([out_dir / f"seed-{s}" for s in cfg.seeds], cfg.seeds, walls, out_dir, train_dirs)
    return results, plot_and_track(cfg, results, out_dir)


def run(cfg: Config, run_dir: str | Path, progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Collect into ``RUN/data`` (unless streamed or given), train, evaluate; returns (results, plot).

    With ``cfg.seeds`` every seed makes a whole run of its own in ``RUN/seed-<s>/`` (its data, its
    model) and ``RUN/results.json`` aggregates them (``aggregate_seeds``).
    """
    from icrl.collect import collect
    from icrl.spaces import EnvSpec
    from icrl.training import check_trainable, train

    run_dir = Path(run_dir)
    check_trainable(cfg, EnvSpec.for_env(cfg.env.id, cfg.env.kwargs))  # before collecting anything
    if cfg.seeds:
        walls = []
        for s in cfg.seeds:
            start = time.perf_counter()
            run(dataclasses.replace(cfg, seed=s, seeds=[]), run_dir / f"seed-{s}", progress=progress)
            walls.append(time.perf_counter() - start)
        results = aggregate_seeds([run_dir / f"seed-{s}" for s in cfg.seeds], cfg.seeds, walls, run_dir)
        return results, plot_and_track(cfg, results, run_dir)
    if cfg.data.source == "dataset" and not cfg.data.dataset:
        collect(cfg, run_dir / "data", progress=progress)
    checkpoint = train(cfg, run_dir, progress=progress)
    return evaluate_and_plot(cfg, checkpoint, run_dir, progress=progress)
