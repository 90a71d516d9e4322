"""PNG plots of evaluation curves (mean ± stderr bands) and of learning histories."""
from __future__ import annotations

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


_YLABEL = {"cumulative_regret": "cumulative regret", "episode_return": "episode return",
           "success_rate": "success rate (goal reached in the episode)"}


def plot_results(results: dict[str, Any], path: str | Path) -> Path:
    """Every method's curve of a ``results.json`` with a ±1 stderr band, one panel per metric
    (the main one, then ``other_metrics`` such as the success rate); returns the PNG path."""
    panels = [(results["metric"], results["curves"])]
    panels += [(name, other["curves"]) for name, other in results.get("other_metrics", {}).items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (metric, curves) in zip(axes[0], panels):
        for method, curve in curves.items():
            mean, err = np.asarray(curve["mean"]), np.asarray(curve["stderr"])
            x = np.arange(1, len(mean) + 1)
            color, ls = _STYLE.get(method, (None, "-"))
            line, = ax.plot(x, mean, ls, color=color, label=method, lw=2 if method in ("ad", "dpt") else 1.3)
            ax.fill_between(x, mean - err, mean + err, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_xlabel("step" if results["x"] == "step" else "in-context episode")
        ax.set_ylabel(_YLABEL.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    rollouts = results.get("n_rollouts_per_task", 1)
    seeds = f", {len(results['seeds'])} training seeds" if "seeds" in results else ""
    fig.suptitle(f"{results['env']}: {results['n_tasks']} {results['task_split']} tasks"
                 + (f" x {rollouts} rollouts" if rollouts > 1 else "") + seeds)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
