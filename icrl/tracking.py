"""Metrics: a JSONL file always, Weights & Biases when enabled (imported lazily).

Keys are namespaced: ``train/…`` and ``time/…`` (the training loop), ``probe/…`` (the model's
online probes during training, ``train.eval_every``), ``eval/…`` (the evaluation after training),
``collect/…`` (the dataset). Everything but ``eval/…`` is plotted against ``train/step``.

On wandb one training seed is one run: the run folder keeps the run's id in ``RUN/wandb_run_id``,
so collection, training and evaluation of that folder (even in separate commands) resume the same
run. Its ``group`` is the config name, its name ``<name>-seed<seed>`` (``<name>-seeds<a>-<b>-…``
for the aggregate of several seeds), the command is its job type and a tag. The wandb mode is
passed to ``wandb.init`` only when the config sets it: an explicit mode overrides ``WANDB_MODE``,
and presets never set one (docs/architecture.md#training). :func:`check_wandb` checks the mode and
the login before any work starts.
"""
from __future__ import annotations

import json
import netrc
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from icrl.config import Config, ConfigError, to_dict

RUN_ID_FILE = "wandb_run_id"
_STEP_OF = {"train": "train/step", "time": "train/step", "probe": "train/step"}


def wandb_mode(cfg: Config) -> str:
    """The mode wandb will run in: ``wandb.mode``, else ``WANDB_MODE``, else online."""
    return cfg.wandb.mode or os.environ.get("WANDB_MODE", "") or "online"


def _has_api_key() -> bool:
    """An API key in the environment, or a ``.netrc`` entry for the wandb host (where ``wandb login``
    writes it)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    paths = [Path(os.environ["NETRC"]).expanduser()] if os.environ.get("NETRC") else \
        [Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()]
    for path in paths:
        try:
            if path.exists() and netrc.netrc(str(path)).authenticators(host):
                return True
        except (netrc.NetrcParseError, OSError):
            continue
    return False


def check_wandb(cfg: Config) -> None:
    """With ``wandb.enabled``, fail before any work when wandb cannot run: not installed, or online
    without an API key (a run would otherwise stop at the first log call, or prompt, after the
    data were collected). Offline and disabled modes need no login."""
    if not cfg.wandb.enabled:
        return
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError("wandb.enabled: wandb is not installed; pip install wandb or set wandb.enabled=false") from None
    mode = wandb_mode(cfg)
    if mode in ("online", "run", "shared") and not _has_api_key():
        raise ConfigError("wandb.enabled: wandb is online but not logged in; run `wandb login` (or set WANDB_API_KEY) "
                          "or set wandb.mode=offline")


def run_id(run_dir: str | Path) -> str:
    """The wandb run id of a run folder: read from ``RUN/wandb_run_id``, made and written there first."""
    path = Path(run_dir) / RUN_ID_FILE
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    rid = secrets.token_hex(4)  # wandb ids: [a-z0-9], 8 characters like wandb.util.generate_id
    path.write_text(rid + "\n")
    return rid


def run_name(cfg: Config) -> str:
    """``<name>-seed<seed>``; the aggregate of several training seeds is ``<name>-seeds<a>-<b>…``."""
    if cfg.seeds:
        return f"{cfg.name}-seeds{'-'.join(str(s) for s in cfg.seeds)}"
    return f"{cfg.name}-seed{cfg.seed}"


class Tracker:
    """Writes metric rows to ``RUN/metrics.jsonl`` and, if enabled, to the run folder's wandb run.

    Args:
        run_dir: the run folder (one training seed; or the folder aggregating several).
        cfg: the experiment config (its ``wandb`` section decides about wandb).
        job: the command: ``collect``, ``train``, ``eval``, ``filter`` (wandb job type and tag).
        enabled: False for non-master DDP ranks: nothing is written.
    """

    def __init__(self, run_dir: str | Path, cfg: Config, job: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.artifacts = bool(getattr(cfg.wandb, "artifacts", False))
        self.name = run_name(cfg)
        self.wandb: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_line()
        if cfg.wandb.enabled:
            import wandb

            kwargs: dict[str, Any] = {"project": cfg.wandb.project, "id": run_id(run_dir), "resume": "allow",
                                      "group": cfg.name, "name": self.name, "job_type": job, "tags": [job],
                                      "config": to_dict(cfg), "dir": str(run_dir), "reinit": "finish_previous"}
            if cfg.wandb.entity:
                kwargs["entity"] = cfg.wandb.entity
            if cfg.wandb.mode:
                kwargs["mode"] = cfg.wandb.mode
            self.wandb = wandb.init(**kwargs)
            self.wandb.define_metric("train/step")
            for ns, step in _STEP_OF.items():
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

    def _summarise(self, values: dict[str, float]) -> None:
        """Summary scalars of the wandb run (what the runs table and the group's columns show)."""
        if self.wandb is not None:
            for k, v in values.items():
                self.wandb.summary[k] = v

    def log_collection(self, summary: dict[str, Any], source_curve: dict[str, list[float]] | None = None) -> None:
        """The dataset of ``icrl.collect.collect``: its size and each source's statistics.

        Args:
            summary: the dict ``collect`` returns (``n_histories``, ``n_steps``, ``seconds``,
                ``per_source: {name: {histories, final_regret?, mean_return?}}``).
            source_curve: per source, its mean learning curve (return per episode, or cumulative
                regret per step) if known: a wandb line chart of all sources.
        """
        if not self.enabled:
            return
        row: dict[str, float] = {"collect/n_histories": summary["n_histories"], "collect/n_steps": summary["n_steps"],
                                 "collect/seconds": summary["seconds"]}
        for name, stats in summary.get("per_source", {}).items():
            row.update({f"collect/{name}/{k}": v for k, v in stats.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self._summarise(row)
        if self.wandb is None:
            return
        import wandb

        rows = [[name, *(stats.get(k) for k in ("histories", "final_regret", "mean_return"))]
                for name, stats in summary.get("per_source", {}).items()]
        self.wandb.log({"collect/per_source": wandb.Table(data=rows, columns=["source", "histories", "final_regret",
                                                                               "mean_return"])})
        if source_curve:
            names = list(source_curve)
            length = max(len(c) for c in source_curve.values())
            self.wandb.log({"collect/source_curve": wandb.plot.line_series(
                xs=list(range(1, length + 1)), ys=[list(source_curve[n]) for n in names], keys=names,
                title="source learning curves", xname="episode or step")})

    def log_eval(self, results: dict[str, Any], plot: str | Path | None,
                 results_path: str | Path | None = None) -> None:
        """The evaluation of ``results`` (a ``results.json`` dict).

        metrics.jsonl gets one row of summary figures; wandb gets them as summary scalars
        (``eval/<method>/final``, ``…/final_stderr``, ``…/mean_over_curve``, ``…/final_stderr_seeds``
        over seeds; other metrics as ``eval/<metric>/<method>/…``), every method's curve overlaid
        in one chart (``eval/curves``) and with its ±1 stderr band (``eval/curves_band``: mean,
        lower and upper lines), a table of the curves (``eval/curve_table``: x, method, mean,
        lower, upper, for custom charts), the summary table and the PNG. With ``wandb.artifacts``,
        ``results.json`` (``results_path``, by default next to the plot) and the checkpoint it
        evaluated are logged as artifacts.
        """
        if not self.enabled:
            return
        figures = summary_scalars(results)
        self.log(figures)
        if self.wandb is None:
            return
        import wandb

        self._summarise(figures)
        self.wandb.summary["eval/stderr_over"] = results.get("stderr_over", "")
        x = results["x"]
        methods = list(results["curves"])
        curves = [results["curves"][m] for m in methods]
        xs = list(range(1, len(curves[0]["mean"]) + 1))
        title = f"{results['metric'].replace('_', ' ')} (± stderr over {results.get('stderr_over', 'tasks')})"
        self.wandb.log({"eval/curves": wandb.plot.line_series(xs=xs, ys=[c["mean"] for c in curves], keys=methods,
                                                              title=results["metric"].replace("_", " "), xname=x)})
        band_keys, band_ys = [], []
        for m, c in zip(methods, curves):
            band_keys += [m, f"{m} - stderr", f"{m} + stderr"]
            band_ys += [c["mean"], [a - b for a, b in zip(c["mean"], c["stderr"])],
                        [a + b for a, b in zip(c["mean"], c["stderr"])]]
        self.wandb.log({"eval/curves_band": wandb.plot.line_series(xs=xs, ys=band_ys, keys=band_keys, title=title,
                                                                   xname=x)})
        table = [[i + 1, m, mu, mu - se, mu + se] for m, c in zip(methods, curves)
                 for i, (mu, se) in enumerate(zip(c["mean"], c["stderr"]))]
        self.wandb.log({"eval/curve_table": wandb.Table(data=table, columns=[x, "method", "mean", "lower", "upper"])})
        rows = [[m, s["final"], s["final_stderr"], s["mean_over_curve"]] for m, s in results["summary"].items()]
        self.wandb.log({"eval/summary": wandb.Table(data=rows, columns=["method", "final", "final_stderr",
                                                                        "mean_over_curve"])})
        if plot is not None:
            self.wandb.log({"eval/plot": wandb.Image(str(plot))})
        if self.artifacts:
            path = Path(results_path) if results_path is not None else \
                Path(plot).parent / "results.json" if plot is not None else None
            if path is not None and path.exists():
                self.log_artifact(path, f"{self.name}-results", "results")
            if results.get("checkpoint") and Path(results["checkpoint"]).is_dir():
                self.log_artifact(results["checkpoint"], f"{self.name}-model", "model")

    def log_artifact(self, path: str | Path, name: str, kind: str) -> None:
        """A file or folder as a wandb artifact (with ``wandb.artifacts``; nothing without wandb)."""
        if self.wandb is None:
            return
        import wandb

        artifact = wandb.Artifact(name, type=kind)
        path = Path(path)
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.wandb.log_artifact(artifact)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def summary_scalars(results: dict[str, Any]) -> dict[str, float]:
    """Every summary figure of a ``results.json`` as a flat ``eval/…`` dict: the main metric's as
    ``eval/<method>/<figure>``, another metric's as ``eval/<metric>/<method>/<figure>``."""
    out = {f"eval/{m}/{k}": v for m, s in results["summary"].items() for k, v in s.items()
           if isinstance(v, (int, float))}
    for name, other in results.get("other_metrics", {}).items():
        out.update({f"eval/{name}/{m}/{k}": v for m, s in other["summary"].items() for k, v in s.items()
                    if isinstance(v, (int, float))})
    return out
