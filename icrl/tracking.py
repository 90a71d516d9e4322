"""Metrics: a JSONL file always, Weights & Biases when enabled (imported lazily).

Keys are namespaced (``train/…``, ``eval/…``, ``time/…``). The wandb mode is passed to
``wandb.init`` only when the config sets it: an explicit mode overrides ``WANDB_MODE``, and
presets never set one (docs/architecture.md#training).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from icrl.config import Config, to_dict


class Tracker:
    """Writes metric rows to ``RUN/metrics.jsonl`` and, if enabled, to a wandb run.

    Args:
        run_dir: the run folder.
        cfg: the experiment config (its ``wandb`` section decides about wandb).
        job: ``train`` or ``eval`` (wandb job type).
        enabled: False for non-master DDP ranks: nothing is written.
    """

    def __init__(self, run_dir: str | Path, cfg: Config, job: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_line()
        if cfg.wandb.enabled:
            import wandb

            kwargs: dict[str, Any] = {"project": cfg.wandb.project, "name": cfg.name, "job_type": job,
                                      "config": to_dict(cfg), "dir": str(run_dir), "reinit": "finish_previous"}
            if cfg.wandb.entity:
                kwargs["entity"] = cfg.wandb.entity
            if cfg.wandb.mode:
                kwargs["mode"] = cfg.wandb.mode
            self.wandb = wandb.init(**kwargs)
            for ns, step in (("train", "train/step"), ("time", "train/step"), ("eval", "eval/step")):
                self.wandb.define_metric(step)
                self.wandb.define_metric(f"{ns}/*", step_metric=step)

    def _drop_partial_line(self) -> None:
        """A run killed mid-write leaves half a row at the end; a resumed run must not append to it."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def log(self, row: dict[str, Any]) -> None:
        """Append one row of namespaced metrics."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log(row)

    def log_eval(self, results: dict[str, Any], plot: str | Path | None) -> None:
        """Eval curves as wandb line plots, a summary table and the PNG (JSONL gets the summary)."""
        if not self.enabled:
            return
        self.log({f"eval/{m}/final": s["final"] for m, s in results["summary"].items()})
        if self.wandb is None:
            return
        import wandb

        x = results["x"]
        for method, curve in results["curves"].items():
            table = wandb.Table(data=[[i + 1, m, s] for i, (m, s) in enumerate(zip(curve["mean"], curve["stderr"]))],
                                columns=[x, "mean", "stderr"])
            self.wandb.log({f"eval/{method}/curve": wandb.plot.line(table, x, "mean", title=f"{method}: {results['metric']}")})
        rows = [[m, s["final"], s["final_stderr"], s["mean_over_curve"]] for m, s in results["summary"].items()]
        self.wandb.log({"eval/summary": wandb.Table(data=rows, columns=["method", "final", "final_stderr", "mean_over_curve"])})
        if plot is not None:
            self.wandb.log({"eval/plot": wandb.Image(str(plot))})

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
