"""PNG plots of evaluation curves (mean ± stderr bands) and of training (loss and probes).

A plot says what it shows: the subtitle names the model, its training steps, how it acts
(temperature or greedy), the seeds and tasks and what the band is; the source is named by its
algorithms; a curve identical to another is marked "= other" in the legend and drawn with its own
dashes and markers on top, so no line hides under another.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# One fixed colour per method (the model red, no baseline red), the same on every plot.
_STYLE = {"ad": ("tab:red", "-"), "dpt": ("tab:red", "-"), "oracle": ("black", ":"), "random": ("tab:gray", "--"),
          "emp": ("tab:blue", "-"), "ucb": ("tab:orange", "-"), "ucb1": ("tab:green", "-"),
          "thompson": ("tab:purple", "-"), "linucb": ("tab:brown", "-"), "source": ("tab:pink", "-."),
          "psrl": ("tab:cyan", "-"), "noise_distill": ("tab:olive", "-"), "ppo": ("tab:olive", "-")}
_MODELS = ("ad", "dpt")
# Dashes and markers for a curve drawn over an identical one (the lower one stays visible).
_OVER = [((0, (4, 3)), "o"), ((0, (1, 2)), "s"), ((0, (6, 2, 1, 2)), "^"), ((0, (2, 4)), "D")]


_YLABEL = {"cumulative_regret": "cumulative regret", "episode_return": "episode return",
           "success_rate": "success rate (goal reached in the episode)"}


def source_label(config: dict[str, Any]) -> str:
    """``source (ppo)``, or with a mixture ``source (ppo 70%, random 30%)``: the algorithms that
    made the training data (``collect.algorithms`` and ``collect.fractions``)."""
    collect = config.get("collect", {})
    algos = list(collect.get("algorithms", []))
    if not algos:
        return "source"
    fractions = collect.get("fractions") or []
    if len(algos) > 1 and len(fractions) == len(algos):
        return "source (" + ", ".join(f"{a} {100 * f:.0f}%" for a, f in zip(algos, fractions)) + ")"
    return f"source ({', '.join(algos)})"


def settings_line(results: dict[str, Any]) -> str:
    """What the plot shows, in one line: model, training steps, how it acts, seeds, tasks, band."""
    config = results.get("config", {})
    parts = []
    model = next((m for m in results["curves"] if m in _MODELS), None)
    if model is not None:
        steps = config.get("train", {}).get("steps")
        ev = config.get("eval", {})
        acting = "greedy" if ev.get("greedy") else f"temperature {ev.get('temperature', 1.0):g}"
        parts.append(f"{model.upper()}" + (f" after {steps:,} training steps" if steps else "") + f", {acting}")
    seeds = results.get("seeds")
    if seeds and len(seeds) > 1:
        parts.append(f"{len(seeds)} training seeds")
    rollouts = results.get("n_rollouts_per_task", 1)
    parts.append(f"{results['n_tasks']} {results['task_split']} tasks" + (f" x {rollouts} rollouts" if rollouts > 1 else ""))
    parts.append(f"band: ±1 stderr over {results.get('stderr_over', 'rollouts (task x rollout rows)')}")
    return "; ".join(parts)


def identical_to(curves: dict[str, dict]) -> dict[str, str]:
    """For each curve equal (mean and stderr) to an earlier one, the name of that earlier one."""
    out: dict[str, str] = {}
    names = list(curves)
    for i, m in enumerate(names):
        for other in names[:i]:
            if other not in out and np.allclose(curves[m]["mean"], curves[other]["mean"], rtol=0, atol=1e-12) \
                    and np.allclose(curves[m]["stderr"], curves[other]["stderr"], rtol=0, atol=1e-12):
                out[m] = other
                break
    return out


def plot_results(results: dict[str, Any], path: str | Path) -> Path:
    """Every method's curve of a ``results.json`` with a ±1 stderr band, one panel per metric
    (the main one, then ``other_metrics`` such as the success rate); returns the PNG path."""
    panels = [(results["metric"], results["curves"])]
    panels += [(name, other["curves"]) for name, other in results.get("other_metrics", {}).items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.8), squeeze=False)
    source = source_label(results.get("config", {}))
    for ax, (metric, curves) in zip(axes[0], panels):
        same = identical_to(curves)
        for k, (method, curve) in enumerate(curves.items()):
            mean, err = np.asarray(curve["mean"]), np.asarray(curve["stderr"])
            x = np.arange(1, len(mean) + 1)
            color, ls = _STYLE.get(method, (None, "-"))
            label = source if method == "source" else method
            style: dict[str, Any] = {"ls": ls, "zorder": 3 if method in _MODELS else 2}
            if method in same:  # drawn on top of its twin, dashed and marked so both show
                label += f" (= {source if same[method] == 'source' else same[method]})"
                dashes, marker = _OVER[list(same).index(method) % len(_OVER)]
                style.update(ls=dashes, marker=marker, markevery=max(1, len(mean) // 10), ms=4, zorder=4)
            line, = ax.plot(x, mean, color=color, label=label, lw=2 if method in _MODELS else 1.3, **style)
            ax.fill_between(x, mean - err, mean + err, color=line.get_color(), alpha=0.15, lw=0, zorder=1)
        ax.set_xlabel("step" if results["x"] == "step" else "in-context episode")
        ax.set_ylabel(_YLABEL.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle(f"{results['env']}: {_YLABEL.get(results['metric'], results['metric'])}\n{settings_line(results)}",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training(metrics_path: str | Path, path: str | Path) -> Path | None:
    """Training loss, and the online probes (``probe/…``, or ``eval/…`` of older runs) where
    ``train.eval_every`` made them, against training steps; returns the PNG path (None without
    loss rows, e.g. a run that never logged)."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    loss = [(r["train/step"], r["train/loss"]) for r in rows if "train/loss" in r]
    if not loss:
        return None
    probes = []
    for r in rows:
        ns = "probe" if "probe/final" in r else "eval" if "eval/final" in r and "train/step" in r else None
        if ns is not None:
            probes.append((r["train/step"], r[f"{ns}/final"], r[f"{ns}/mean_over_curve"]))
    fig, axes = plt.subplots(1, 2 if probes else 1, figsize=(12 if probes else 6.5, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot(*zip(*loss), color="tab:blue", lw=1.3)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (mean over the logging window)")
    ax.grid(alpha=0.3)
    if probes:
        ax = axes[0][1]
        steps, final, mean = zip(*probes)
        ax.plot(steps, final, "o-", color="tab:red", label="final (last episode or step)")
        ax.plot(steps, mean, "s--", color="tab:orange", label="mean over the curve")
        ax.set_xlabel("training step")
        ax.set_ylabel("probe: the model online on the eval tasks")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle(f"training: {Path(metrics_path).parent.name}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
