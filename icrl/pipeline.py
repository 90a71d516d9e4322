"""The whole experiment as one function: collect (or stream) -> train -> eval (docs/architecture.md#data-flow)."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from icrl.config import Config, ConfigError, resolved_env_kwargs, to_dict
from icrl.evaluation import evaluate
from icrl.results import aggregate_seeds
from icrl.histories import atomic_write
from icrl.lock import folder_lock
from icrl.plots import plot_results
from icrl.runs import save_config, trained_steps
from icrl.tracking import Tracker


def evaluate_and_plot(cfg: Config, checkpoint: str | Path | None, out_dir: str | Path,
                      progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Online evaluation, its PNG next to ``results.json``, and the eval metrics tracked.

    With ``eval.offline_sizes`` set, also the DPT paper's offline mode into ``results_offline.json``.
    The env is the one the checkpoint was trained on unless ``eval.env_id`` asks for another
    (:func:`eval_world`); ``results.json`` records both.
    """
    with folder_lock(out_dir, "eval"):
        cfg, trained_on = eval_world(cfg, checkpoint)
        world = None if trained_on is None else {
            "trained_on": trained_on,
            "distribution_shift": not _same_env(trained_on, cfg.env.id, cfg.eval_env_kwargs())}
        results = evaluate(cfg, checkpoint, out_dir, progress=progress, extra=world)
        if cfg.eval.offline_sizes and checkpoint is not None:
            from icrl.offline import evaluate_offline

            evaluate_offline(cfg, checkpoint, out_dir)
        return results, plot_and_track(cfg, results, out_dir)


def track_collection(cfg: Config, run_dir: str | Path, summary: dict[str, Any]) -> None:
    """The collection's size, per-source figures and each source's learning curve (mean return per
    episode) into ``run_dir``'s metrics and wandb run."""
    tracker = Tracker(run_dir, cfg, "collect")
    tracker.log_collection(summary, summary.get("source_curves") or None)
    tracker.close()


def trained_world(checkpoint: str | Path) -> dict[str, Any] | None:
    """``{"env_id", "env_kwargs"}`` a checkpoint was trained on (kwargs None when only its spec
    was stored), or None for a checkpoint written before either was stored."""
    from icrl.checkpoint import load_run_config, load_spec

    spec, stored = load_spec(checkpoint), load_run_config(checkpoint)  # both checked
    if stored is not None:
        env = stored.get("env") if isinstance(stored.get("env"), dict) else {}
        return {"env_id": str(env.get("id", ""))[:200], "env_kwargs": env.get("kwargs")}
    return None if spec is None else {"env_id": spec.env_id, "env_kwargs": None}


def eval_world(cfg: Config, checkpoint: str | Path | None) -> tuple[Config, dict[str, Any] | None]:
    """The config to evaluate ``checkpoint`` under, and the world it was trained on.

    A config whose env differs from the checkpoint's is refused: distribution shift is a
    deliberate choice, made with ``eval.env_id`` (another family) and ``eval.env_kwargs``.
    """
    if checkpoint is None:
        return cfg, None
    trained = trained_world(checkpoint)
    if cfg.eval.env_id:
        cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, id=cfg.eval.env_id))
    elif trained is not None and not _same_env(trained, cfg.env.id, cfg.env.kwargs):
        from icrl.checkpoint import load_model
        from icrl.evaluation import check_model_fits

        check_model_fits(cfg, load_model(checkpoint)[1])  # other spaces: the sharper message
        kwargs = "" if trained["env_kwargs"] is None else f" {json.dumps(trained['env_kwargs'])[:80]}"
        raise ConfigError(f"--checkpoint: the model was trained on {trained['env_id']}{kwargs}, the config's env is "
                          f"{cfg.env.id} {json.dumps(cfg.env.kwargs)[:80]}; to evaluate it on another env on "
                          f"purpose set eval.env_id (and eval.env_kwargs)")
    return cfg, trained


def _same_env(trained: dict[str, Any], env_id: str, env_kwargs: dict) -> bool:
    """``trained`` (see :func:`trained_world`) is the env ``env_id`` with ``env_kwargs``, defaults
    filled in on both sides (only the id is compared where the checkpoint stored no kwargs)."""
    if trained["env_id"] != env_id:
        return False
    kwargs = trained["env_kwargs"]
    return kwargs is None or (isinstance(kwargs, dict) and
                              resolved_env_kwargs(env_id, kwargs) == resolved_env_kwargs(env_id, env_kwargs))


def plot_path(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Where the PNG of ``results`` goes: ``regret.png`` (bandits) or ``return.png``."""
    return Path(out_dir) / ("regret.png" if results.get("metric") == "cumulative_regret" else "return.png")


def plot_and_track(cfg: Config, results: dict[str, Any], out_dir: str | Path) -> Path:
    """The PNG of ``results`` next to its ``results.json``, and the eval metrics tracked."""
    plot = plot_results(results, plot_path(results, out_dir))
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
    with folder_lock(out_dir, "eval"):
        return _evaluate_seeds(cfg, Path(run_dir), Path(out_dir), progress)


def _evaluate_seeds(cfg: Config, run_dir: Path, out_dir: Path, progress: bool) -> tuple[dict[str, Any], Path]:
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


def run(cfg: Config, run_dir: str | Path, progress: bool = True, resume: bool = False) -> tuple[dict[str, Any], Path]:
    """Collect into ``RUN/data`` (unless streamed or given), train, evaluate; returns (results, plot).

    With ``cfg.seeds`` every seed makes a whole run of its own in ``RUN/seed-<s>/`` (its data, its
    model) and ``RUN/results.json`` aggregates them (``aggregate_seeds``). ``resume`` continues
    the stage a kill interrupted (collect, filter, train, eval) and skips the finished ones (a
    seed with its results, a complete dataset, a checkpoint at ``train.steps``); whether the
    folder may be written at all is :func:`icrl.runs.claim`'s decision, made before.
    """
    from icrl.collect import collect
    from icrl.filtering import filter_stage
    from icrl.spaces import EnvSpec
    from icrl.training import check_trainable, train

    run_dir = Path(run_dir)
    check_trainable(cfg, EnvSpec.for_env(cfg.env.id, cfg.env.kwargs))  # before collecting anything
    with folder_lock(run_dir, "run"):
        if cfg.seeds:
            walls_path = run_dir / "walls.json"  # what each finished seed cost, kept for a resume
            walls = json.loads(walls_path.read_text()) if resume and walls_path.is_file() else {}
            for s in cfg.seeds:
                seed_dir = run_dir / f"seed-{s}"
                if resume and (seed_dir / "results.json").is_file() and str(s) in walls:
                    continue
                start = time.perf_counter()
                run(dataclasses.replace(cfg, seed=s, seeds=[]), seed_dir, progress=progress, resume=resume)
                walls[str(s)] = time.perf_counter() - start
                atomic_write(walls_path, json.dumps(walls).encode())
            save_config(run_dir, to_dict(cfg))  # what `icrl eval --checkpoint RUN` re-evaluates the seeds with
            results = aggregate_seeds([run_dir / f"seed-{s}" for s in cfg.seeds], cfg.seeds,
                                      [walls[str(s)] for s in cfg.seeds], run_dir)
            return results, plot_and_track(cfg, results, run_dir)
        collected = resume and (run_dir / "data" / "manifest.json").is_file()
        if cfg.data.source == "dataset" and not cfg.data.dataset and not collected:
            track_collection(cfg, run_dir, collect(cfg, run_dir / "data", progress=progress))  # resumes a cut-short one
        done = trained_steps(run_dir) if resume else None
        checkpoint = run_dir / "checkpoint"
        if done is None or done < cfg.train.steps:
            if cfg.filter.enabled:  # the filter stage: weights written once, training only reads them
                try:
                    filter_stage(cfg, Path(cfg.data.dataset) if cfg.data.dataset else run_dir / "data", refresh=False)
                except ValueError as e:
                    raise ConfigError(f"filter: {str(e).splitlines()[0]}") from None
            checkpoint = train(cfg, run_dir, resume=done is not None, progress=progress)
        return evaluate_and_plot(cfg, checkpoint, run_dir, progress=progress)
