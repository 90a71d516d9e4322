"""The ``icrl`` command: ``icrl collect | verify | ...`` (docs/architecture.md#commands-and-configuration).

Each command takes ``--config FILE`` plus ``key.sub=value`` overrides; ``--help`` lists every
config field. Bad inputs are one-line errors with exit code 2, raised before anything is written.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path
from typing import Any

from icrl.config import ConfigError, describe, load_config
from icrl.envs.sims import MissingExtra
from icrl.spaces import SpaceError


def _config_parser(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="config fields (set in the YAML file or as key.sub=value):\n" + "\n".join(describe()))
    p.add_argument("--config", metavar="FILE", help="YAML preset (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override any config field")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icrl", description="In-context reinforcement learning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = _config_parser(sub, "collect", "run source algorithms on many tasks and store their learning histories")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = _config_parser(sub, "filter", "score learning histories (LHF) and store their weights next to the shards")
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: data.dataset)")
    p = sub.add_parser("verify", help="check every shard checksum and index of a dataset")
    p.add_argument("dir", metavar="DIR")
    p = _config_parser(sub, "train", "pretrain an AD or DPT model on learning histories (or a DPT stream)")
    p.add_argument("--out", metavar="RUN", help="run folder (default runs/<name>)")
    _run_folder_flags(p, "continue from RUN/checkpoint")
    p = _config_parser(sub, "eval", "evaluate a checkpoint and the baselines online on unseen tasks "
                                    "(--config defaults to the one stored with the checkpoint)")
    p.add_argument("--checkpoint", metavar="RUN/checkpoint",
                   help="model to evaluate (omit: baselines only); with `seeds`, the run folder: every "
                        "RUN/seed-<s>/checkpoint is evaluated and the seeds aggregated")
    p.add_argument("--out", metavar="DIR", help="where results.json and the plot go (default: the run folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = _config_parser(sub, "run", "collect (or stream) -> train -> eval into one run folder")
    p.add_argument("--out", metavar="RUN", help="run folder (default runs/<name>)")
    _run_folder_flags(p, "continue the stage that was interrupted (collect, filter, train or eval)")
    return parser


def _run_folder_flags(p: argparse.ArgumentParser, resume_help: str) -> None:
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--overwrite", action="store_true", help="remove what icrl wrote into RUN and start again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _load(config: str | Path | None, overrides: list[str]) -> Any:
    """The config of a command, with wandb's mode and login checked before any work."""
    from icrl.tracking import check_wandb

    cfg = load_config(config, overrides)
    check_wandb(cfg)
    return cfg


_CREATED: list[Path] = []  # output folders this command created (removed again if they end up empty)


def _prepare_out(path: str) -> Path:
    """Create an output folder, or fail with a one-line error (exit 2)."""
    out = Path(path)
    try:
        missing = [d for d in (out, *out.parents) if not d.exists()]
        _CREATED.extend(reversed(missing))  # removed deepest first
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot create {out}: {e.strerror or e}") from None
    return out


def _remove_empty_outputs() -> None:
    """After a failed command: a folder it created and left empty is removed (nothing written)."""
    while _CREATED:
        out = _CREATED.pop()
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def cmd_collect(args: argparse.Namespace) -> int:
    from icrl.collect import collect
    from icrl.pipeline import track_collection

    cfg = _load(args.config, args.overrides)
    out = _prepare_out(args.out)
    summary = collect(cfg, out, progress=not args.quiet)
    track_collection(cfg, out, summary)
    print(f"wrote {summary['n_histories']} histories, {summary['n_steps']} steps to {summary['out']} "
          f"in {summary['seconds']:.1f}s")
    if summary["resumed"]:
        print(f"  resumed: kept {summary['resumed']} complete shards of an earlier run, collected the rest")
    for name, row in summary["per_source"].items():
        parts = [f"{row['histories']} histories"]
        if "final_regret" in row:
            parts.append(f"mean final regret {row['final_regret']:.2f}")
        if "mean_return" in row:
            parts.append(f"mean episode return {row['mean_return']:.3f}")
        print(f"  {name}: " + ", ".join(parts))
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    from icrl.filtering import filter_stage
    from icrl.tracking import Tracker

    cfg = _load(args.config, args.overrides)
    data = args.data or cfg.data.dataset
    if not data:
        raise ConfigError("--data: give the dataset folder (or set data.dataset)")
    if not Path(data).is_dir():
        raise ConfigError(f"--data: dataset folder {data} does not exist; pass the --out folder of `icrl collect`")
    try:
        report = filter_stage(cfg, data)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"--data: {str(e).splitlines()[0]}") from None
    if report is None:  # a torchrun rank other than 0: rank 0 wrote them
        return 0
    plot = report["plot"]
    print(f"LHF ({cfg.filter.mode}, lambda {cfg.filter.lam}, use {cfg.filter.use}) on {report['n_histories']} "
          f"histories of {report['n_tasks']} tasks; weights in {Path(data) / 'lhf.h5'}")
    print(f"{'source':<12} {'U mean':>7} {'U std':>6} {'U q25':>6} {'U q75':>6} {'kept':>6} {'dropped':>7} {'copies':>7}")
    rows = []
    for name, r in report["per_source"].items():
        u = r["U"]
        print(f"{name:<12} {u['mean']:>7.3f} {u['std']:>6.3f} {u['q25']:>6.3f} {u['q75']:>6.3f} "
              f"{r['kept']:>6} {r['dropped']:>7} {r['copies']:>7}")
        rows.append([name, u["mean"], u["std"], r["kept"], r["dropped"], r["copies"]])
    print(f"best/worst learning curves: {plot}")
    tracker = Tracker(data, cfg, "filter")
    if tracker.wandb is not None:
        import wandb

        tracker.wandb.log({"filter/per_source": wandb.Table(data=rows, columns=["source", "U_mean", "U_std", "kept", "dropped", "copies"]),
                           "filter/best_worst": wandb.Image(str(plot))})
    tracker.close()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from icrl.integrity import verify

    problems = verify(args.dir)
    if problems:
        for p in problems:
            print(f"icrl verify: {p}", file=sys.stderr)
        return 1
    manifest = json.loads((Path(args.dir) / "manifest.json").read_text())
    print(f"{args.dir}: sound ({manifest['n_histories']} histories, {len(manifest['shards'])} shards)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from icrl.lock import folder_lock
    from icrl.runs import claim, trained_steps
    from icrl.training import train

    cfg = _load(args.config, args.overrides)
    run_dir = _prepare_out(args.out or f"runs/{cfg.name}")
    with folder_lock(run_dir, "train"):
        if claim(run_dir, "train", cfg.train.steps, args.resume, args.overwrite):
            print(f"{run_dir}: trained to step {trained_steps(run_dir)} of {cfg.train.steps} already; nothing to do "
                  f"(--overwrite trains it again)")
            return 0
        ckpt = train(cfg, run_dir, resume=args.resume, progress=not args.quiet)
    print(f"checkpoint: {ckpt}")
    return 0


def _print_results(results: dict, plot: Path, out: Path) -> None:
    from icrl.results import format_table

    print(format_table(results))
    print(f"results: {out / 'results.json'}\nplot: {plot}")


def cmd_eval(args: argparse.Namespace) -> int:
    from icrl.pipeline import evaluate_and_plot, evaluate_seeds
    from icrl.runs import stored_config

    config = args.config
    if args.checkpoint and not Path(args.checkpoint).exists():
        raise ConfigError(f"--checkpoint: {args.checkpoint} does not exist")
    if config is None and args.checkpoint:  # the config the model was trained under
        config = stored_config(args.checkpoint)
        if config is None:
            raise ConfigError(f"--config: {args.checkpoint} holds no config.json (written before configs were "
                              "stored with checkpoints); give the training config with --config")
    cfg = _load(config, args.overrides)
    if cfg.seeds:  # --checkpoint names the run folder of `icrl run` over seeds
        if not args.checkpoint:
            raise ConfigError(f"--checkpoint: with seeds {cfg.seeds} give the run folder holding seed-<s>/checkpoint")
        out = _prepare_out(args.out or args.checkpoint)
        results, plot = evaluate_seeds(cfg, args.checkpoint, out, progress=not args.quiet)
    else:
        default = Path(args.checkpoint).parent if args.checkpoint else Path(f"runs/{cfg.name}")
        out = _prepare_out(args.out or str(default))
        results, plot = evaluate_and_plot(cfg, args.checkpoint, out, progress=not args.quiet)
    _print_results(results, plot, out)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from icrl.lock import folder_lock
    from icrl.pipeline import plot_path, run
    from icrl.runs import claim

    cfg = _load(args.config, args.overrides)
    out = _prepare_out(args.out or f"runs/{cfg.name}")
    with folder_lock(out, "run"):
        if claim(out, "run", cfg.train.steps, args.resume, args.overwrite):
            results = json.loads((out / "results.json").read_text())
            plot = plot_path(results, out)
            print(f"{out}: finished already; nothing to do (--overwrite runs it again)")
            _print_results(results, plot, out)
            return 0
        results, plot = run(cfg, out, progress=not args.quiet, resume=args.resume)
    _print_results(results, plot, out)
    return 0


COMMANDS = {"collect": cmd_collect, "filter": cmd_filter, "verify": cmd_verify, "train": cmd_train, "eval": cmd_eval, "run": cmd_run}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may stand before or after the options (argparse's positional list stops at the
    # first option), so leftover key=value words are overrides too.
    args, extra = parser.parse_known_args(argv)
    bad = [w for w in extra if w.startswith("-") or "=" not in w or not hasattr(args, "overrides")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    _CREATED.clear()
    try:
        try:
            return COMMANDS[args.command](args)
        except BaseException:
            _remove_empty_outputs()
            raise
    except (ConfigError, SpaceError, MissingExtra) as e:  # SpaceError: an env or dataset outside the space
        print(f"icrl {args.command}: error: {e}", file=sys.stderr)  # contract; MissingExtra: an extra to install
        return 2
    except OSError as e:  # storage: a full disk, a read-only or unwritable folder, a vanished file
        where = str(e.filename or "output")[:200]
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            print(f"icrl {args.command}: error: disk full while writing {where} ({e.strerror}); what was written "
                  "before is intact: free space and rerun the same command to continue", file=sys.stderr)
        else:
            print(f"icrl {args.command}: error: cannot write or read {where}: {e.strerror or type(e).__name__}",
                  file=sys.stderr)
        return 2
    except FloatingPointError as e:  # non-finite training loss
        print(f"icrl {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # TrainingInterrupted carries where the checkpoint went
        print(f"icrl {args.command}: {e or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
