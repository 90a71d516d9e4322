"""The whole experiment as one function: collect (or stream) -> train -> eval (DESIGN §1)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from icrl.config import Config
from icrl.evaluation import evaluate
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
    name = "regret.png" if results["metric"] == "cumulative_regret" else "return.png"
    plot = plot_results(results, Path(out_dir) / name)
    tracker = Tracker(out_dir, cfg, "eval")
    tracker.log_eval(results, plot)
    tracker.close()
    return results, plot


def run(cfg: Config, run_dir: str | Path, progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Collect into ``RUN/data`` (unless streamed or given), train, evaluate; returns (results, plot)."""
    from icrl.collect import collect
    from icrl.training import train

    run_dir = Path(run_dir)
    if cfg.data.source == "dataset" and not cfg.data.dataset:
        collect(cfg, run_dir / "data", progress=progress)
    checkpoint = train(cfg, run_dir, progress=progress)
    return evaluate_and_plot(cfg, checkpoint, run_dir, progress=progress)
