"""Semantic checks of a dataset on disk, in one place (format: :mod:`icrl.histories`).

Every consumer of a dataset runs the same checks: ``icrl verify`` (:func:`icrl.integrity.verify`),
a collection's resume (:func:`icrl.integrity.complete_shards`) and every reader
(:class:`icrl.store.HistoryStore` at open). Each problem is one message naming the file, and the
history or field where there is one.

- :func:`manifest_problems`: the manifest's entries, run before any file is opened or hashed. File
  names must be plain names inside the dataset folder matching ``shard-NNNNN.h5`` (shards) or
  ``<name>.h5`` (derived files), each listed once; counts are non-negative ints below 2**62.
- :func:`check_shard`: one open shard, in three stages. (1) Metadata only, nothing read: the
  required datasets exist with numeric (not compound) dtypes, every dataset's size (shape x
  itemsize) fits in the file (a compressed dataset cannot expand beyond what is stored), row counts
  match the manifest's counts and row shapes the env spec's spaces. (2) The index, read once:
  lengths non-negative and each at most the shard's step count, summed in Python ints (a length
  that would wrap int64 is caught), offsets their cumulative sums, sources inside the manifest's
  list. (3) The steps, one read per field, checked vectorised over the whole field: observations
  and rewards finite, discrete observations and actions inside their space, ``Box`` actions finite
  and inside the bounds, flags ``terminated``/``truncated``/``success`` only 0 or 1. Optionally
  (``content=True``) the root ``content_sha256`` is recomputed from the arrays already read.

Step fields other than those the collectors write (``obs``, ``next_obs``, ``action``,
``oracle_action``, ``reward``, ``terminated``, ``truncated``, ``regret``, ``success``) get the
metadata checks of stage (1) (numeric, one row per step, bounded size) but their values are never
read here. ``regret`` may hold NaN (steps where a bandit reports none), so its values are not
checked either.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces

from icrl.histories import (
    _H5_ERRORS,
    _HEX64_RE,
    _NAME_RE,
    _SHARD_RE,
    INDEX_FIELDS,
    REQUIRED_FIELDS,
    _content_digest,
)
from icrl.spaces import EnvSpec, SpaceError

__all__ = ["MAX_COUNT", "MAX_ROW_ITEMS", "ShardCheck", "ShardExpect", "check_shard", "check_shard_file",
           "manifest_problems", "manifest_spec"]

MAX_COUNT = 1 << 62  # largest history or step count a manifest may state (sums stay inside int64)
# Widest row (items per step or per history) of a field whose shape the spec does not fix:
# task_params, unknown step fields, observations of a dataset without a spec.
MAX_ROW_ITEMS = 1 << 16
_INT_INDEX = ("offset", "length", "task", "run", "source", "return_offsets")
_FLAGS = ("terminated", "truncated", "success")
_CHECKED_STEPS = ("obs", "next_obs", "action", "oracle_action", "reward", "regret") + _FLAGS


def _count_ok(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT


# ----------------------------------------------------------------------------- the manifest
def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """Problems of a parsed ``manifest.json``'s entries, found without opening any file.

    Shard entries need ``file`` matching ``shard-NNNNN.h5``, ``sha256`` (64 hex digits) and
    ``n_histories``/``n_steps`` counts; derived entries ``name``, ``file == name + ".h5"`` and
    ``sha256``. A name with a ``/``, ``..`` or an absolute path never matches these patterns. A
    file listed twice, totals that are not counts, a malformed ``spec`` or ``plan_sha256`` are
    problems too.
    """
    problems: list[str] = []
    seen: set[str] = set()

    def name_ok(file: Any, pattern_ok: bool, what: str) -> None:
        if not isinstance(file, str) or not pattern_ok:
            problems.append(f"manifest.json: {what} file {str(file)[:80]!r} is not a plain "
                            f"{'shard-NNNNN.h5' if what == 'shard' else '<name>.h5'} name inside the "
                            f"dataset folder")
        elif file in seen:
            problems.append(f"manifest.json: {file} is listed more than once")
        else:
            seen.add(file)

    for e in manifest.get("shards", []):
        if not isinstance(e, dict):
            problems.append(f"manifest.json: malformed shard entry {str(e)[:80]}")
            continue
        file = e.get("file")
        name_ok(file, isinstance(file, str) and bool(_SHARD_RE.match(file)), "shard")
        if not (isinstance(e.get("sha256"), str) and _HEX64_RE.match(e["sha256"])):
            problems.append(f"manifest.json: {str(file)[:80]}: sha256 must be 64 hex digits")
        bad = [k for k in ("n_histories", "n_steps") if not _count_ok(e.get(k))]
        bad += ["bytes"] if "bytes" in e and not _count_ok(e["bytes"]) else []  # absent before sizes were listed
        if bad:
            problems.append(f"manifest.json: {str(file)[:80]}: {bad} must be integers in [0, 2**62]")
    for e in manifest.get("derived", []):
        if not isinstance(e, dict):
            problems.append(f"manifest.json: malformed derived entry {str(e)[:80]}")
            continue
        name, file = e.get("name"), e.get("file")
        plain = (isinstance(name, str) and bool(_NAME_RE.match(name)) and file == f"{name}.h5"
                 and not _SHARD_RE.match(file) and name != "manifest")
        name_ok(file, plain, "derived")
        if not (isinstance(e.get("sha256"), str) and _HEX64_RE.match(e["sha256"])):
            problems.append(f"manifest.json: {str(file)[:80]}: sha256 must be 64 hex digits")
    bad = [k for k in ("n_histories", "n_steps") if not _count_ok(manifest.get(k))]
    if bad:
        problems.append(f"manifest.json: {bad} must be integers in [0, 2**62]")
    plan = manifest.get("plan_sha256")
    if plan is not None and not (isinstance(plan, str) and _HEX64_RE.match(plan)):
        problems.append("manifest.json: plan_sha256 must be 64 hex digits")
    if manifest.get("spec") is not None:
        try:
            EnvSpec.from_dict(manifest["spec"])
        except SpaceError as e:
            problems.append(f"manifest.json: bad spec ({e})")
    return problems


def manifest_spec(manifest: dict[str, Any]) -> EnvSpec | None:
    """The env spec the data were collected under: the manifest's ``spec``; for a dataset written
    before specs were stored, rebuilt from its env id and kwargs; ``None`` when neither works
    (then the checks against the spec are skipped)."""
    try:
        if manifest.get("spec") is not None:
            return EnvSpec.from_dict(manifest["spec"])
        return EnvSpec.for_env(manifest["env_id"], manifest["env_kwargs"])
    except Exception:  # an env family that is not registered in this process, a malformed spec
        return None


# ----------------------------------------------------------------------------- one shard
@dataclass(frozen=True)
class ShardExpect:
    """What a shard must hold; ``None`` leaves that check out.

    Attributes:
        n_histories: The history count the manifest lists for it.
        n_steps: The step count the manifest lists for it.
        n_sources: Length of the manifest's ``sources`` (``histories/source`` indexes it).
        spec: The env spec (shapes, dtypes and value ranges of the step fields).
        plan_sha256: The collection plan it must have been made under (root ``plan_sha256``).
    """

    n_histories: int | None = None
    n_steps: int | None = None
    n_sources: int | None = None
    spec: EnvSpec | None = None
    plan_sha256: str | None = None


@dataclass
class ShardCheck:
    """The outcome of :func:`check_shard`.

    Attributes:
        problems: One message per problem, each naming the file; empty when sound.
        n_histories: Histories in the shard (0 when its index is unusable).
        n_steps: Steps in the shard (0 when its index is unusable).
        index: ``histories/<k>`` arrays (``INDEX_FIELDS``), read once; empty on problems.
        plan_sha256: The plan the shard records, or ``None``.
        steps: ``steps/<k>`` arrays read for a content check (every field), so that a reader
            need not read them again; empty otherwise or on problems.
    """

    problems: list[str]
    n_histories: int = 0
    n_steps: int = 0
    index: dict[str, np.ndarray] = field(default_factory=dict)
    plan_sha256: str | None = None
    steps: dict[str, np.ndarray] = field(default_factory=dict)


def _rows(a: np.ndarray) -> np.ndarray:
    """``a`` as ``(rows, items per row)``, empty arrays included."""
    return a.reshape(a.shape[0], math.prod(a.shape[1:]))


def _row_shapes(spec: EnvSpec | None) -> dict[str, tuple[int, ...]]:
    """Required row shape (shape[1:]) of the step fields the spec fixes."""
    rows = {"reward": (), "regret": (), **{k: () for k in _FLAGS}}
    if spec is not None:
        rows.update(obs=spec.obs_shape, next_obs=spec.obs_shape, action=spec.action_shape,
                    oracle_action=spec.action_shape)
    return rows


def _layout_problems(f: h5py.File, name: str, expect: ShardExpect) -> list[str]:
    """Stage 1: datasets present, numeric, bounded in size, shaped as the manifest and spec say.
    Reads metadata only."""
    for g in ("histories", "steps"):
        if not isinstance(f.get(g), h5py.Group):
            return [f"{name}: missing group {g}/"]
    missing = [f"histories/{k}" for k in INDEX_FIELDS if not isinstance(f["histories"].get(k), h5py.Dataset)]
    missing += [f"steps/{k}" for k in REQUIRED_FIELDS if not isinstance(f["steps"].get(k), h5py.Dataset)]
    if missing:
        return [f"{name}: missing datasets {missing}"]
    problems, datasets = [], {}
    for g in ("histories", "steps"):
        for k in f[g]:
            ds = f[g].get(k)
            if isinstance(ds, h5py.Dataset):
                datasets[f"{g}/{k}"] = ds
            else:
                problems.append(f"{name}: {g}/{k} is not a dataset")
    file_size = f.id.get_filesize()
    for key, ds in datasets.items():
        dt = ds.dtype
        if dt.kind not in "biuf" or dt.names is not None or dt.itemsize > 8:
            problems.append(f"{name}: {key} has dtype {dt}; store plain numbers (bool, int, float)")
        elif key.startswith("histories/") and key.split("/")[1] in _INT_INDEX and dt.kind not in "iu":
            problems.append(f"{name}: {key} has dtype {dt}; it must be integer")
        elif ds.ndim == 0:
            problems.append(f"{name}: {key} is a scalar; give one row per history or step")
        elif math.prod(ds.shape) * dt.itemsize > file_size:
            # uncompressed data is stored in the file; more is a compressed or sparse bomb
            problems.append(f"{name}: {key} of shape {ds.shape} would expand beyond the "
                            f"{file_size}-byte file; refusing to read it")
    if problems:
        return problems
    n = datasets["histories/length"].shape[0]
    if expect.n_histories is not None and n != expect.n_histories:
        problems.append(f"{name}: {n} histories, manifest.json says {expect.n_histories}")
    for k in ("offset", "length", "task", "run", "source"):
        if datasets[f"histories/{k}"].shape != (n,):
            problems.append(f"{name}: histories/{k} does not have one row per history")
    tp = datasets["histories/task_params"].shape
    if len(tp) != 2 or tp[0] != n or tp[1] > MAX_ROW_ITEMS:
        problems.append(f"{name}: histories/task_params must have shape ({n}, P) with P <= "
                        f"{MAX_ROW_ITEMS}, got {tp}")
    if datasets["histories/return_offsets"].shape != (n + 1,) \
            or datasets["histories/return_values"].ndim != 1:
        problems.append(f"{name}: histories/return_offsets is inconsistent with return_values")
    rows = expect.n_steps if expect.n_steps is not None else datasets["steps/reward"].shape[0]
    shapes = _row_shapes(expect.spec)
    for key, ds in datasets.items():
        if not key.startswith("steps/"):
            continue
        k = key.split("/")[1]
        if ds.shape[0] != rows:
            what = "manifest.json says" if expect.n_steps is not None else "steps/reward has"
            problems.append(f"{name}: {key} has {ds.shape[0]} rows, {what} {rows} steps")
        elif k in shapes and ds.shape[1:] != shapes[k]:
            problems.append(f"{name}: {key} has rows of shape {ds.shape[1:]}, the env spec gives "
                            f"{shapes[k]}")
        elif math.prod(ds.shape[1:]) > MAX_ROW_ITEMS:
            problems.append(f"{name}: {key} has rows of {ds.shape[1:]}, more than {MAX_ROW_ITEMS} items")
    return problems


def _index_problems(idx: dict[str, np.ndarray], name: str, rows: int,
                    n_sources: int | None) -> tuple[list[str], int]:
    """Stage 2 on the read index: returns (problems, total steps)."""
    lengths = idx["length"]
    n = len(lengths)
    if n and (lengths.min() < 0 or lengths.max() > rows):
        j = int(np.flatnonzero((lengths < 0) | (lengths > rows))[0])
        return [f"{name}: history {j} has length {int(lengths[j])}, outside [0, {rows}] (the "
                f"shard's steps)"], 0
    total = sum(lengths.tolist())  # Python ints: no wrap-around, whatever the dtype
    problems = []
    if total != rows:
        problems.append(f"{name}: the history lengths sum to {total}, but the shard has {rows} steps")
    lengths = lengths.astype(np.int64)  # each in [0, rows]: safe
    if not np.array_equal(idx["offset"], np.cumsum(lengths) - lengths):
        problems.append(f"{name}: histories/offset does not match the cumulative lengths")
    for k in ("task", "run"):
        if n and idx[k].min() < 0:
            problems.append(f"{name}: histories/{k} of history {int(np.argmin(idx[k]))} is negative")
    source = idx["source"]
    hi = n_sources if n_sources is not None else MAX_COUNT
    if n and (source.min() < 0 or source.max() >= hi):
        j = int(np.flatnonzero((source < 0) | (source >= hi))[0])
        where = f"outside the {n_sources} sources" if n_sources is not None else "negative"
        problems.append(f"{name}: histories/source of history {j} is {where}")
    ro, rv = idx["return_offsets"], idx["return_values"]
    if ro[0] != 0 or np.any(ro[1:] < ro[:-1]) or ro[-1] != len(rv):
        problems.append(f"{name}: histories/return_offsets is inconsistent with return_values")
    for k in ("task_params", "return_values"):
        bad = ~_rows(np.isfinite(idx[k])).all(axis=1)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            j = j if k == "task_params" else int(np.searchsorted(ro, j, side="right")) - 1
            problems.append(f"{name}: histories/{k} of history {j} is not finite")
    return problems, total


def _inside(flat: np.ndarray, low: np.ndarray, high: np.ndarray) -> bool:
    """Every row of ``flat`` (rows, items) within ``[low, high]`` (scalars or per item)."""
    low, high = np.broadcast_to(low, flat.shape[1:]), np.broadcast_to(high, flat.shape[1:])
    if np.all(low == low.flat[0]) and np.all(high == high.flat[0]):  # one bound: whole-array reductions
        return bool(flat.min() >= low.flat[0] and flat.max() <= high.flat[0])
    return bool(np.all(flat.min(axis=0) >= low) and np.all(flat.max(axis=0) <= high))


def _value_problem(key: str, a: np.ndarray, spec: EnvSpec | None) -> tuple[np.ndarray, str] | None:
    """Stage 3 for one read step field: ``(bad rows mask, what is wrong)`` or ``None``.

    Sound data pass on whole-array reductions (column min/max, one ``isfinite``); the row mask
    that locates a problem is only built once a problem is known."""
    k = key.split("/")[1]
    flat = _rows(a)  # (rows, items)
    if k in _FLAGS:
        raw = flat.view(np.uint8) if a.dtype.kind == "b" else flat  # a bool read from HDF5 can hold 2
        if raw.size and (raw.min() < 0 or raw.max() > 1 or (a.dtype.kind == "f" and np.any(raw % 1))):
            return ~((raw == 0) | (raw == 1)).all(axis=1), "is a flag other than 0 or 1"
        return None
    if k in ("reward", "obs", "next_obs") and a.dtype.kind == "f" and not np.isfinite(flat).all():
        return ~np.isfinite(flat).all(axis=1), "is not finite"
    if spec is None or k not in ("obs", "next_obs", "action", "oracle_action"):
        return None
    space = spec.observation_space if k in ("obs", "next_obs") else spec.action_space
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        if a.dtype.kind not in "iu":
            return np.ones(len(a), bool), f"has dtype {a.dtype}; {space} needs integers"
        if isinstance(space, spaces.Discrete):
            lo, hi = np.int64(space.start), np.int64(space.start + space.n)
        else:
            lo, hi = np.asarray(space.start).reshape(-1), np.asarray(space.start + space.nvec).reshape(-1)
        if _inside(flat, lo, hi - 1):
            return None
        return ((flat < lo) | (flat >= hi)).any(axis=1), f"is outside {space}"
    if k in ("action", "oracle_action"):  # a Box of actions: finite and inside the bounds
        if a.dtype.kind != "f":
            return np.ones(len(a), bool), f"has dtype {a.dtype}; {space} needs floats"
        low, high = space.low.reshape(-1), space.high.reshape(-1)
        if _inside(flat, low, high):  # NaN fails the comparisons
            return None
        return ~(np.isfinite(flat) & (flat >= low) & (flat <= high)).all(axis=1), \
            f"is non-finite or outside {space}"
    return None


def _digest_attr(f: h5py.File, key: str) -> str | None:
    """Hex of a uint8[32] root attribute (read only once its shape is known), else ``None``."""
    if key not in f.attrs or f.attrs.get_id(key).shape != (32,):
        return None
    return bytes(np.asarray(f.attrs[key], dtype=np.uint8)).hex()


def check_shard(f: h5py.File, name: str, expect: ShardExpect = ShardExpect(),
                content: bool = False, values: bool = True) -> ShardCheck:
    """Check an open shard against the format and ``expect`` (see the module docstring).

    Args:
        f: The shard, open for reading.
        name: Its file name, used in every message.
        expect: Counts, sources, spec and plan from the manifest or the collection.
        content: Also recompute the root ``content_sha256`` (from the arrays read anyway; the
            step fields the checks do not read are read for it).
        values: Read and check the step values (stage 3); False stops after the index, for a
            reader that checks what it reads (:class:`icrl.steps.ShardSteps`).

    Returns:
        A :class:`ShardCheck`; on problems in stages 1-2 the steps are not read.
    """
    plan = _digest_attr(f, "plan_sha256")
    if expect.plan_sha256 is not None and plan != expect.plan_sha256:
        return ShardCheck([f"{name}: made under another collection plan than manifest.json "
                           f"(plan_sha256 {str(plan)[:12]}, expected {expect.plan_sha256[:12]})"],
                          plan_sha256=plan)
    problems = _layout_problems(f, name, expect)
    if problems:
        return ShardCheck(problems, plan_sha256=plan)
    idx = {k: f["histories"][k][()] for k in INDEX_FIELDS}
    rows = f["steps"]["reward"].shape[0]
    problems, total = _index_problems(idx, name, rows, expect.n_sources)
    n = len(idx["length"])
    if problems or not (values or content):
        return ShardCheck(problems, n, total, idx if not problems else {}, plan)
    loaded = {f"histories/{k}": v for k, v in idx.items()}
    ends = np.cumsum(idx["length"].astype(np.int64))  # (n,) end row of each history
    for k in sorted(f["steps"]):
        if k not in _CHECKED_STEPS and not content:
            continue  # unknown fields: metadata checked above, values never read
        a = f["steps"][k][()]
        loaded[f"steps/{k}"] = a
        if k not in _CHECKED_STEPS or not len(a):
            continue
        found = _value_problem(f"steps/{k}", a, expect.spec)
        if found is not None:
            row = int(np.flatnonzero(found[0])[0])
            j = int(np.searchsorted(ends, row, side="right"))
            step = row - (int(ends[j - 1]) if j else 0)
            problems.append(f"{name}: steps/{k} of history {j} (step {step}) {found[1]}")
    if content and not problems and _digest_attr(f, "content_sha256") != \
            bytes(_content_digest(f, loaded)).hex():
        problems.append(f"{name}: content checksum mismatch (data corrupted)")
    steps = {k[len("steps/"):]: v for k, v in loaded.items() if k.startswith("steps/")} if content and not problems else {}
    return ShardCheck(problems, n, total, idx if not problems else {}, plan, steps)


def check_shard_file(path: Path, expect: ShardExpect = ShardExpect(), content: bool = False) -> ShardCheck:
    """:func:`check_shard` on the file at ``path``; an unreadable file is one problem, never an
    exception."""
    try:
        with h5py.File(path, "r") as f:
            return check_shard(f, path.name, expect, content)
    except _H5_ERRORS as exc:
        return ShardCheck([f"{path.name}: unreadable HDF5 (truncated or corrupted): "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"])
