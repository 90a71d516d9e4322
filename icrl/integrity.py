"""Integrity of history datasets on disk: verify a folder, find resumable shards, clean up.

Checks the layout written by :mod:`icrl.histories` (see its docstring): each shard's index and
root ``content_sha256`` attribute, the manifest's per-file sha256 and totals, derived files.
:func:`complete_shards` and :func:`remove_partials` let a killed collection resume;
:func:`verify` backs ``icrl verify``. This module imports from :mod:`icrl.histories` and
:mod:`icrl.store`, never the reverse.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from icrl.histories import _H5_ERRORS, _SHARD_RE, _content_digest, _index_problems, file_sha256
from icrl.store import _load_manifest


def _shard_problems(f: h5py.File, name: str,
                    n_sources: int | None) -> tuple[list[str], int, int]:
    """Check an open shard's index and content checksum; returns (problems, n, n_steps)."""
    problems, n, total, laid_out = _index_problems(f, name, n_sources)
    if laid_out and not np.array_equal(f.attrs.get("content_sha256", []), _content_digest(f)):
        problems.append(f"{name}: content checksum mismatch (data corrupted)")
    return problems, n, total


def _check_shard_file(path: Path, n_sources: int | None) -> tuple[list[str], int, int]:
    try:
        with h5py.File(path, "r") as f:
            return _shard_problems(f, path.name, n_sources)
    except _H5_ERRORS as exc:
        return [f"{path.name}: unreadable HDF5 (truncated or corrupted): {exc}"], 0, 0


def complete_shards(directory: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """Shard index -> manifest entry for the shards on disk that open, pass their index and
    content checks and, where a manifest lists them, match its sha256. To resume a killed
    collection, only the indices missing here need collecting again."""
    directory, listed = Path(directory), {}
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        listed = {e["file"]: e["sha256"] for e in manifest["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no (valid) manifest yet: each shard's own content checksum decides
    found: dict[int, dict[str, Any]] = {}
    for path in sorted(directory.glob("shard-*.h5")):
        match = _SHARD_RE.match(path.name)
        if match and path.is_file():
            problems, n, total = _check_shard_file(path, None)
            sha = file_sha256(path)
            if not problems and n > 0 and listed.get(path.name, sha) == sha:
                found[int(match.group(1))] = {"file": path.name, "n_histories": n,
                                              "n_steps": total, "sha256": sha}
    return found


def remove_partials(directory: str | os.PathLike) -> list[str]:
    """Delete the temp files (``*.tmp-<pid>``) of killed writers; returns their names.
    Call it only while no writer works on the folder."""
    removed = sorted(p.name for p in Path(directory).glob("*.tmp-*") if p.is_file())
    for name in removed:
        (Path(directory) / name).unlink()
    return removed


def verify(directory: str | os.PathLike) -> list[str]:
    """Check a dataset folder: manifest, every shard's sha256 and index, derived files.

    Returns:
        One message per problem, each naming the file concerned; ``[]`` when sound.
    """
    directory = Path(directory)
    try:
        manifest = _load_manifest(directory)
    except (ValueError, OSError) as exc:
        return [str(exc)]
    problems: list[str] = []
    totals = [0, 0]
    for e in manifest["shards"]:
        totals = [totals[0] + e["n_histories"], totals[1] + e["n_steps"]]
        path = directory / e["file"]
        if not path.is_file():
            problems.append(f"{e['file']}: listed in manifest.json but missing")
            continue
        if file_sha256(path) != e["sha256"]:
            problems.append(f"{e['file']}: sha256 mismatch (file corrupted or replaced)")
        found, n, total = _check_shard_file(path, len(manifest["sources"]))
        problems += found
        if not found and [n, total] != [e["n_histories"], e["n_steps"]]:
            problems.append(f"{e['file']}: holds {n} histories / {total} steps, manifest says "
                            f"{e['n_histories']} / {e['n_steps']}")
    if totals != [manifest["n_histories"], manifest["n_steps"]]:
        problems.append(f"manifest.json: n_histories/n_steps {manifest['n_histories']}/"
                        f"{manifest['n_steps']} differ from the shard sums {totals[0]}/{totals[1]}")
    for e in manifest["derived"]:
        file = str(e.get("file", "?")) if isinstance(e, dict) else "?"
        path = directory / file
        if not path.is_file():
            problems.append(f"{file}: derived file listed in manifest.json but missing")
        elif file_sha256(path) != e.get("sha256"):
            problems.append(f"{file}: derived file sha256 mismatch (corrupted or replaced)")
    return problems
