"""Integrity of history datasets on disk: verify a folder, find resumable shards, clean up.

Checks the layout written by :mod:`icrl.histories` (see its docstring) with the semantic checks of
:mod:`icrl.validation` (each shard's index, shapes, dtypes and values against the env spec, and its
root ``content_sha256`` attribute), plus the manifest's per-file sha256 and totals and the derived
files. :func:`complete_shards` and :func:`remove_partials` let a killed collection resume;
:func:`verify` backs ``icrl verify``. This module imports from :mod:`icrl.histories`,
:mod:`icrl.validation` and :mod:`icrl.store`, never the reverse.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from icrl.histories import _SHARD_RE, file_sha256
from icrl.spaces import EnvSpec
from icrl.store import _read_manifest
from icrl.typed import ConfigError
from icrl.validation import ShardExpect, check_shard_file, manifest_problems, manifest_spec


def complete_shards(directory: str | os.PathLike, plan_sha256: str | None = None,
                    spec: EnvSpec | None = None, n_sources: int | None = None) -> dict[int, dict[str, Any]]:
    """Shard index -> manifest entry for the shards on disk that open, pass the checks of
    :func:`icrl.validation.check_shard` (content checksum included) and, where a manifest lists
    them, match its sha256. To resume a killed collection, only the indices missing here need
    collecting again; a damaged shard is left out (and rewritten by the resume).

    Args:
        directory: The dataset folder.
        plan_sha256: The plan of the collection being resumed: a sound shard made under another
            plan (or under none recorded) is refused, never overwritten.
        spec: The env spec to check the step fields against.
        n_sources: Number of source algorithms (``histories/source`` indexes them).

    Raises:
        ConfigError: a sound shard of another collection plan; the message names the file.
    """
    directory, listed = Path(directory), {}
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        if not manifest_problems(manifest):
            listed = {e["file"]: e["sha256"] for e in manifest["shards"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no (valid) manifest yet: each shard's own content checksum decides
    expect = ShardExpect(n_sources=n_sources, spec=spec)
    found: dict[int, dict[str, Any]] = {}
    for path in sorted(directory.glob("shard-*.h5")):
        match = _SHARD_RE.match(path.name)
        if not (match and path.is_file()):
            continue
        check = check_shard_file(path, expect, content=True)
        if check.problems or check.n_histories == 0:
            continue
        if plan_sha256 is not None and check.plan_sha256 != plan_sha256:
            made = "under another plan" if check.plan_sha256 else "without a recorded plan"
            raise ConfigError(f"--out: {path} was collected {made}, not this config's; use a new "
                              f"folder, or the config that made it to resume it")
        sha = file_sha256(path)
        if listed.get(path.name, sha) == sha:
            found[int(match.group(1))] = {"file": path.name, "n_histories": check.n_histories,
                                          "n_steps": check.n_steps, "sha256": sha, "bytes": path.stat().st_size}
    return found


def remove_partials(directory: str | os.PathLike) -> list[str]:
    """Delete the temp files (``*.tmp-<pid>``) of killed writers; returns their names.
    Call it only while no writer works on the folder (``icrl collect`` holds the folder's lock)."""
    removed = sorted(p.name for p in Path(directory).glob("*.tmp-*") if p.is_file())
    for name in removed:
        (Path(directory) / name).unlink()
    return removed


def verify(directory: str | os.PathLike) -> list[str]:
    """Check a dataset folder: manifest, every shard's sha256 and semantic checks
    (:mod:`icrl.validation`), derived files. The manifest's entries are checked first: a file name
    outside the dataset's patterns stops the check before any file is opened or hashed.

    Returns:
        One message per problem, each naming the file concerned; ``[]`` when sound.
    """
    directory = Path(directory)
    manifest, problems = _checked_manifest(directory)
    if manifest is None:
        return problems
    spec, n_sources = manifest_spec(manifest), len(manifest["sources"])
    for e in manifest["shards"]:
        path = directory / e["file"]
        if not path.is_file():
            problems.append(f"{e['file']}: listed in manifest.json but missing")
            continue
        if file_sha256(path) != e["sha256"]:
            problems.append(f"{e['file']}: sha256 mismatch (file corrupted or replaced)")
        expect = ShardExpect(e["n_histories"], e["n_steps"], n_sources, spec, manifest.get("plan_sha256"))
        problems += check_shard_file(path, expect, content=True).problems
    problems += _totals_problems(manifest)
    for e in manifest["derived"]:
        path = directory / e["file"]
        if not path.is_file():
            problems.append(f"{e['file']}: derived file listed in manifest.json but missing")
        elif file_sha256(path) != e["sha256"]:
            problems.append(f"{e['file']}: derived file sha256 mismatch (corrupted or replaced)")
    return problems


def quick_check(directory: str | os.PathLike) -> list[str]:
    """The check a reader makes at start, reading no step data and hashing nothing: the manifest
    and its entries, every listed file present, each shard's size where the manifest records it,
    the totals. What it cannot see (flipped bytes inside a shard) is caught where the data are
    read: by the chunks' Fletcher-32 checksums, or a shard's sha256 on first read where it has
    none (:class:`icrl.steps.ShardSteps`), or in memory by the content checksum
    (:class:`icrl.store.HistoryStore`). :func:`verify` stays the full check."""
    directory = Path(directory)
    manifest, problems = _checked_manifest(directory)
    if manifest is None:
        return problems
    for e in manifest["shards"] + manifest["derived"]:
        path = directory / e["file"]
        if not path.is_file():
            problems.append(f"{e['file']}: listed in manifest.json but missing")
        elif "bytes" in e and path.stat().st_size != e["bytes"]:
            problems.append(f"{e['file']}: {path.stat().st_size} bytes, manifest.json says {e['bytes']} "
                            f"(truncated or replaced)")
    return problems + _totals_problems(manifest)


def _checked_manifest(directory: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The manifest and no problems, or None and what is wrong with it (unreadable, or its entries)."""
    try:
        manifest = _read_manifest(directory)
    except (ValueError, OSError) as exc:
        return None, [str(exc)]
    problems = manifest_problems(manifest)
    return (None, problems) if problems else (manifest, [])


def _totals_problems(manifest: dict[str, Any]) -> list[str]:
    """The manifest's totals against the sums of its shard entries."""
    totals = [sum(e["n_histories"] for e in manifest["shards"]), sum(e["n_steps"] for e in manifest["shards"])]
    if totals == [manifest["n_histories"], manifest["n_steps"]]:
        return []
    return [f"manifest.json: n_histories/n_steps {manifest['n_histories']}/{manifest['n_steps']} differ from "
            f"the shard sums {totals[0]}/{totals[1]}"]
