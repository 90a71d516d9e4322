"""Results of an evaluation (docs/architecture.md#evaluation): each method's curve summarised over
the eval tasks, ``results.json`` and ``curves.npz``, the seeds of a config aggregated, and the
table the CLI prints."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from icrl.histories import atomic_write

SCHEMA = "icrl.results/v1"


def per_task(c: np.ndarray, n_tasks: int, rollouts: int) -> np.ndarray:
    """(N, L) per-task means of one method's rows: the rollouts of each task and, where the rows of
    several training seeds are stacked, the seeds averaged.

    Rows are ordered seed, task, rollout (``eval_tasks`` repeats each task ``rollouts`` times in a
    row; ``aggregate_seeds`` stacks the seeds' arrays).
    """
    rows, L = c.shape[0], c.shape[1:]
    if n_tasks < 1 or rollouts < 1 or rows % (n_tasks * rollouts):
        raise ValueError(f"{rows} rows are not seeds x {n_tasks} tasks x {rollouts} rollouts")
    return c.reshape(rows // (n_tasks * rollouts), n_tasks, rollouts, *L).mean(axis=(0, 2))  # (N, L)


def summarise(curves: dict[str, np.ndarray], n_tasks: int | None = None, rollouts: int = 1) -> tuple[dict, dict]:
    """Mean and standard error over tasks of every method's curve, and its summary.

    The unit is the task: the rollouts of one task share the task (and a seed's model), so they are
    not independent draws; each task's rows are averaged first (:func:`per_task`), then the mean
    and ``std(ddof=1) / sqrt(N)`` are taken over the N per-task means. With several training seeds
    a task's mean averages the seeds too, so the stderr is that of the seed-averaged model over the
    eval tasks; the spread the training seed adds is ``final_stderr_seeds`` (``aggregate_seeds``).

    Args:
        curves: ``{method: (rows, L)}`` per-rollout curves.
        n_tasks: the number of eval tasks; None: every row is a task.
        rollouts: rollouts per task.
    """
    out, summary = {}, {}
    for m, c in curves.items():
        c = per_task(c, n_tasks or len(c), rollouts)  # (N, L)
        mean = c.mean(0)
        stderr = c.std(0, ddof=1) / np.sqrt(len(c)) if len(c) > 1 else np.zeros_like(mean)
        out[m] = {"mean": mean.tolist(), "stderr": stderr.tolist()}
        summary[m] = {"final": float(mean[-1]), "final_stderr": float(stderr[-1]), "mean_over_curve": float(mean.mean())}
    return out, summary


def stderr_over(n_tasks: int, rollouts: int, n_seeds: int = 1) -> str:
    """The words ``results.json`` states the unit of its stderr in."""
    averaged = ([f"{rollouts} rollouts"] if rollouts > 1 else []) + ([f"{n_seeds} training seeds"] if n_seeds > 1 else [])
    return f"tasks (n={n_tasks}" + (f"; {' and '.join(averaged)} averaged per task)" if averaged else ")")


def summarise_all(curves: dict[str, np.ndarray], n_tasks: int, rollouts: int, n_seeds: int = 1) -> dict[str, Any]:
    """``curves``/``summary`` of the main metric, ``other_metrics`` and ``stderr_over`` from a flat
    dict of per-rollout curves whose keys are ``method`` (the main metric) or ``metric.method``
    (e.g. ``success_rate.ad``); stderrs over tasks (:func:`summarise`)."""
    main = {k: c for k, c in curves.items() if "." not in k}
    mean_curves, summary = summarise(main, n_tasks, rollouts)
    out: dict[str, Any] = {"curves": mean_curves, "summary": summary,
                           "stderr_over": stderr_over(n_tasks, rollouts, n_seeds)}
    others = sorted({k.split(".", 1)[0] for k in curves if "." in k})
    if others:
        out["other_metrics"] = {}
        for name in others:
            c, s = summarise({k.split(".", 1)[1]: v for k, v in curves.items() if k.startswith(name + ".")},
                             n_tasks, rollouts)
            out["other_metrics"][name] = {"curves": c, "summary": s}
    return out


def write_results(out_dir: str | Path, results: dict[str, Any], curves: dict[str, np.ndarray]) -> dict[str, Any]:
    """``results.json`` and ``curves.npz`` (every rollout's curve, to aggregate seeds) into ``out_dir``,
    each written whole or not at all (results last: its presence means the evaluation finished)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **curves)
    atomic_write(out_dir / "curves.npz", buffer.getvalue())
    atomic_write(out_dir / "results.json", json.dumps(results, indent=1).encode())
    return results


def training_probes(run_dir: str | Path) -> list[dict[str, float]]:
    """The ``train.eval_every`` probes of a run's metrics.jsonl: step, training seconds, final, mean.

    Probe rows carry ``probe/final`` and ``probe/mean_over_curve``; runs written before the probes
    had their own namespace carry ``eval/final`` and ``eval/mean_over_curve``, read the same.
    """
    path = Path(run_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    out = []
    for r in rows:
        ns = "probe" if "probe/final" in r else "eval" if "eval/final" in r else None
        if ns is not None:
            out.append({"step": r["train/step"], "train_s": r["time/train_s"], "final": r[f"{ns}/final"],
                        "mean_over_curve": r[f"{ns}/mean_over_curve"]})
    return out


def aggregate_seeds(run_dirs: list[Path], seeds: list[int], walls: list[float], out_dir: str | Path,
                    train_dirs: list[Path] | None = None) -> dict[str, Any]:
    """One ``results.json`` over the runs of several training seeds (their ``curves.npz``).

    A method's rows are stacked over the seeds (the model: seeds x tasks x rollouts rows); a
    baseline whose curves are identical in every run (same eval tasks and random numbers) counts
    once. The ± is over the eval tasks, each task's mean averaging its rollouts and the seeds
    (:func:`summarise`): the seeds share the eval tasks, so a (seed, task) mean is not an
    independent draw, and the tasks are the sample taken from the task distribution. What the
    training seed adds is reported next to it: ``final_stderr_seeds`` of a method that differs by
    seed is the stderr over the seeds of each seed's final value (mean over its tasks), and
    ``per_seed`` keeps each seed's summary, wall time (collect + train + eval) and the probes of
    ``train.eval_every`` (quality against training time, from ``train_dirs``, by default the run
    folders); ``wall_seconds`` is the sum of the wall times.
    """
    runs = [json.loads((Path(d) / "results.json").read_text()) for d in run_dirs]
    arrays = [dict(np.load(Path(d) / "curves.npz")) for d in run_dirs]
    curves, by_seed = {}, []
    for m in arrays[0]:
        rows = [a[m] for a in arrays]
        same = all(np.array_equal(r, rows[0]) for r in rows[1:])
        curves[m] = rows[0] if same else np.concatenate(rows)
        if not same:
            by_seed.append(m)
    n_tasks, rollouts = runs[0]["n_tasks"], runs[0].get("n_rollouts_per_task", 1)
    results = {**runs[0], **summarise_all(curves, n_tasks, rollouts, len(seeds)), "seeds": list(seeds),
               "per_seed": {str(s): {"summary": r["summary"], "wall_seconds": w, "probes": training_probes(d)}
                            for s, r, w, d in zip(seeds, runs, walls, train_dirs or run_dirs)},
               "checkpoint": None, "wall_seconds": float(sum(walls))}
    for key in by_seed:
        finals = np.array([a[key][:, -1].mean() for a in arrays])  # (S,) each seed's final value
        name, method = key.split(".", 1) if "." in key else (None, key)
        summary = results["summary"] if name is None else results["other_metrics"][name]["summary"]
        summary[method]["final_stderr_seeds"] = float(finals.std(ddof=1) / np.sqrt(len(finals)))
    results["config"] = {**results["config"], "seed": seeds[0], "seeds": list(seeds)}
    return write_results(out_dir, results, curves)


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of every method's final value, best first."""
    label = "final regret" if results["metric"] == "cumulative_regret" else "final return"
    rows = sorted(results["summary"].items(), key=lambda kv: kv[1]["final"],
                  reverse=results["metric"] == "episode_return")
    lines = [f"{'method':<10} {label:>14} {'± stderr':>9} {'mean over curve':>16}"]
    lines += [f"{m:<10} {s['final']:>14.3f} {s['final_stderr']:>9.3f} {s['mean_over_curve']:>16.3f}" for m, s in rows]
    if "stderr_over" in results:
        lines.append(f"stderr over {results['stderr_over']}")
    return "\n".join(lines)
