"""Run folders (docs/reliability.md#run-folders): what a folder of ``icrl run`` / ``icrl train`` holds,
and whether a new command may write it.

A folder that holds work (a dataset, a checkpoint, metrics, results) is never reused silently:
``--resume`` continues it, ``--overwrite`` removes what icrl wrote there (and nothing else) and
starts again; without either it is refused. Call :func:`claim` while holding the folder's lock
(:func:`icrl.lock.folder_lock`), so that no other process can change what it saw.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from icrl.histories import atomic_write
from icrl.typed import ConfigError

# what `icrl run` and `icrl train` write into a run folder (the dataset only under `run`)
TRAIN_OUTPUTS = ("checkpoint", "checkpoint.tmp", "checkpoint.old", "checkpoint-best", "checkpoint-best.tmp",
                 "checkpoint-best.old", "metrics.jsonl", "training.png", "config.json", "wandb", "wandb_run_id")
EVAL_OUTPUTS = ("results.json", "curves.npz", "results_offline.json", "regret.png", "return.png", "walls.json")
RUN_OUTPUTS = TRAIN_OUTPUTS + EVAL_OUTPUTS + ("data",)


def _seed_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("seed-*") if p.is_dir() and p.name[5:].isdigit())


def trained_steps(folder: Path) -> int | None:
    """The step of ``folder/checkpoint``, or None when there is none (or it cannot be read)."""
    try:
        return int(json.loads((folder / "checkpoint" / "trainer.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _holds_work(folder: Path, command: str) -> bool:
    names = ("checkpoint", "metrics.jsonl") if command == "train" else ("checkpoint", "metrics.jsonl", "results.json", "data")
    return any((folder / n).exists() for n in names) or (command == "run" and bool(_seed_folders(folder)))


def is_finished(folder: Path, command: str, steps: int) -> bool:
    """``run``: its results are written; ``train``: its checkpoint reached ``steps``."""
    if command == "run":
        return (folder / "results.json").is_file()
    done = trained_steps(folder)
    return done is not None and done >= steps


def claim(folder: str | Path, command: str, steps: int, resume: bool, overwrite: bool) -> bool:
    """Decide whether ``command`` (``run`` or ``train``) may write ``folder``; returns True when
    ``--resume`` finds the work already finished (nothing left to do).

    Raises:
        ConfigError: the folder holds work and neither ``resume`` nor ``overwrite`` was given, or
            both were.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: choose one (continue the run, or start it again)")
    if overwrite:
        remove_outputs(folder, RUN_OUTPUTS if command == "run" else TRAIN_OUTPUTS + EVAL_OUTPUTS)
        return False
    if not _holds_work(folder, command):
        return False
    finished = is_finished(folder, command, steps)
    if resume:
        return finished
    what = "a finished run" if finished else "an unfinished run"
    raise ConfigError(f"--out: {folder} holds {what}; pass --resume to continue it or --overwrite to start again")


def remove_outputs(folder: Path, names: tuple[str, ...]) -> None:
    """Delete what icrl wrote into a run folder (``names`` and ``seed-<s>/``); other files stay."""
    paths = [folder / n for n in names] + (_seed_folders(folder) if "data" in names else [])
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def save_config(folder: Path, config: dict) -> None:
    """``folder/config.json``: the resolved config of the run (``icrl eval`` reads it back)."""
    atomic_write(folder / "config.json", json.dumps(config, indent=1).encode())


def stored_config(checkpoint: str | Path) -> Path | None:
    """The ``config.json`` that belongs to ``checkpoint``: in the checkpoint folder, else in the run
    folder above it, else (a multi-seed run folder given as the checkpoint) in it; None if absent."""
    checkpoint = Path(checkpoint)
    for path in (checkpoint / "config.json", checkpoint.parent / "config.json"):
        if path.is_file():
            return path
    return None
