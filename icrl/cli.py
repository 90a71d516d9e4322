"""The ``icrl`` command: ``icrl collect | verify | ...`` (DESIGN §10).

Each command takes ``--config FILE`` plus ``key.sub=value`` overrides; ``--help`` lists every
config field. Bad inputs are one-line errors with exit code 2, raised before anything is written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from icrl.config import ConfigError, describe, load_config


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
    p = sub.add_parser("verify", help="check every shard checksum and index of a dataset")
    p.add_argument("dir", metavar="DIR")
    p = _config_parser(sub, "train", "pretrain an AD or DPT model on learning histories (or a DPT stream)")
    p.add_argument("--out", metavar="RUN", help="run folder (default runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = _config_parser(sub, "eval", "evaluate a checkpoint and the baselines online on unseen tasks")
    p.add_argument("--checkpoint", metavar="RUN/checkpoint", help="model to evaluate (omit: baselines only)")
    p.add_argument("--out", metavar="DIR", help="where results.json and the plot go (default: the run folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = _config_parser(sub, "run", "collect (or stream) -> train -> eval into one run folder")
    p.add_argument("--out", metavar="RUN", help="run folder (default runs/<name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _prepare_out(path: str) -> Path:
    """Create an output folder, or fail with a one-line error (exit 2)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot create {out}: {e.strerror or e}") from None
    return out


def cmd_collect(args: argparse.Namespace) -> int:
    from icrl.collect import collect

    cfg = load_config(args.config, args.overrides)
    out = _prepare_out(args.out)
    summary = collect(cfg, out, progress=not args.quiet)
    print(f"wrote {summary['n_histories']} histories, {summary['n_steps']} steps to {summary['out']} "
          f"in {summary['seconds']:.1f}s")
    for name, row in summary["per_source"].items():
        parts = [f"{row['histories']} histories"]
        if "final_regret" in row:
            parts.append(f"mean final regret {row['final_regret']:.2f}")
        if "mean_return" in row:
            parts.append(f"mean episode return {row['mean_return']:.3f}")
        print(f"  {name}: " + ", ".join(parts))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from icrl.histories import verify

    problems = verify(args.dir)
    if problems:
        for p in problems:
            print(f"icrl verify: {p}", file=sys.stderr)
        return 1
    manifest = json.loads((Path(args.dir) / "manifest.json").read_text())
    print(f"{args.dir}: sound ({manifest['n_histories']} histories, {len(manifest['shards'])} shards)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from icrl.training import train

    cfg = load_config(args.config, args.overrides)
    run_dir = _prepare_out(args.out or f"runs/{cfg.name}")
    ckpt = train(cfg, run_dir, resume=args.resume, progress=not args.quiet)
    print(f"checkpoint: {ckpt}")
    return 0


def _print_results(results: dict, plot: Path, out: Path) -> None:
    from icrl.evaluation import format_table

    print(format_table(results))
    print(f"results: {out / 'results.json'}\nplot: {plot}")


def cmd_eval(args: argparse.Namespace) -> int:
    from icrl.pipeline import evaluate_and_plot

    cfg = load_config(args.config, args.overrides)
    default = Path(args.checkpoint).parent if args.checkpoint else Path(f"runs/{cfg.name}")
    out = _prepare_out(args.out or str(default))
    results, plot = evaluate_and_plot(cfg, args.checkpoint, out, progress=not args.quiet)
    _print_results(results, plot, out)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from icrl.pipeline import run

    cfg = load_config(args.config, args.overrides)
    out = _prepare_out(args.out or f"runs/{cfg.name}")
    results, plot = run(cfg, out, progress=not args.quiet)
    _print_results(results, plot, out)
    return 0


COMMANDS = {"collect": cmd_collect, "verify": cmd_verify, "train": cmd_train, "eval": cmd_eval, "run": cmd_run}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"icrl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
