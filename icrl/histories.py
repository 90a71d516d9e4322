"""Learning-history storage: HDF5 shards plus a JSON manifest (docs/architecture.md#learning-histories-and-storage).

A dataset is a folder ``DIR/``: ``shard-NNNNN.h5`` files (5-digit index, one block of histories
each), derived files ``<name>.h5`` (LHF scores, weights) and ``manifest.json``, written last::

    {"schema": "icrl.histories/v1", "env_id": str, "env_kwargs": {...}, "sources": [names],
     "collect": {...}, "task_split": ..., (any other metadata given to DatasetWriter)
     "n_histories": int, "n_steps": int,
     "shards": [{"file": "shard-00000.h5", "n_histories": int, "n_steps": int, "sha256": hex,
                 "bytes": int}],
     "derived": [{"name": str, "file": "<name>.h5", "sha256": hex, "meta": {...}}]}

A shard holds numeric datasets only (strings and configs live in the manifest):

- ``steps/<field>``: the shard's histories back to back, shape ``(n_steps, ...)``; fields ``obs``,
  ``action``, ``reward``, ``terminated``, ``truncated``, optional ``oracle_action``, ``regret``.
  Chunked along axis 0 and uncompressed, so a random window ``ds[a:b]`` touches one or two
  chunks and decompresses nothing; each chunk carries a Fletcher-32 checksum that HDF5 checks
  on every read (shards written before it hold none: readers hash those once instead).
- ``histories/offset``, ``length``, ``task``, ``run``, ``source``: ``(n,)`` int64; history ``j``
  is rows ``offset[j] : offset[j] + length[j]`` of every ``steps/*``; ``source`` indexes the
  manifest's ``sources``. ``histories/task_params``: ``(n, P)`` float64 flattened task parameters.
- ``histories/return_values`` (flat float64) and ``return_offsets`` (``(n + 1,)`` int64): history
  ``j``'s episode returns are ``values[offsets[j] : offsets[j + 1]]``.
- Root attribute ``content_sha256`` (uint8[32]): SHA-256 of every dataset's name, dtype, shape and
  bytes, so a shard can be checked before any manifest exists (resuming a killed collection);
  the manifest's ``sha256`` hashes the whole file.
- Root attribute ``plan_sha256`` (uint8[32], shards of ``icrl collect``): SHA-256 of the collection
  plan the shard was made under (the record in ``collect.json``, also the manifest's
  ``plan_sha256``), so a resume never mixes shards of two plans.

Files use the HDF5 1.10 format (metadata checksummed). Every file is built in memory (HDF5's core
driver without a backing store), then written with plain ``write`` calls under
``<final name>.tmp-<pid>`` (never ending in ``.h5``, so no reader takes it for a shard), fsynced and
renamed. A full disk, a read-only folder or a missing permission is therefore an ordinary
``OSError`` from ``open``/``write``/``fsync``, with the temp file removed, never an error inside
HDF5's own close. Identical batches give byte-identical shards.

This module holds the format, :class:`HistoryBatch` and the writer (:class:`DatasetWriter`); the
semantic checks of files on disk live in :mod:`icrl.validation`, the reader
(:class:`HistoryStore`) in :mod:`icrl.store` and checking a folder on disk (``verify``,
``complete_shards``, ``remove_partials``) in :mod:`icrl.integrity`; all import from here (never
the reverse).
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import h5py
import numpy as np

SCHEMA = "icrl.histories/v1"
REQUIRED_FIELDS = ("obs", "action", "reward", "terminated", "truncated")
INDEX_FIELDS = ("offset", "length", "task", "run", "source", "task_params", "return_values",
                "return_offsets")
# ~64 KiB chunks: inside HDF5's advised 10 KiB-1 MiB range; large enough that the chunk index of
# a long history stays small, small enough that a training window (tens to a few thousand steps)
# reads at most ~2 chunks per field and h5py's default 1 MiB chunk cache holds 16 of them.
CHUNK_BYTES = 64 * 1024
_SHARD_RE = re.compile(r"^shard-(\d{5})\.h5$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_IMAGES = itertools.count()  # numbers the in-memory files this process builds
# A damaged HDF5 file can surface as almost any exception inside h5py (OSError, KeyError, even
# AttributeError when a header decodes as another object type), so file checks catch them all.
_H5_ERRORS = (Exception,)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _require_json(obj: Any, what: str) -> None:
    try:
        json.dumps(obj)
    except TypeError as exc:
        raise ValueError(f"{what} must be JSON-serialisable (convert numpy values with "
                         f".item()/.tolist()): {exc}") from exc


@dataclass
class HistoryBatch:
    """A block of learning histories in memory, steps flat over all histories.

    Attributes:
        steps: Field -> array ``(total_steps, ...)``: ``obs``, ``action``, ``reward``,
            ``terminated``, ``truncated``, optional ``oracle_action``, ``regret``.
        lengths: ``(n,)`` int64 steps per history.
        task: ``(n,)`` int64 task index (histories of the same task share it).
        task_params: ``(n, P)`` float64 flattened task parameters.
        run: ``(n,)`` int64 run index within its task.
        source: ``(n,)`` int64 index into the manifest's list of source names.
        episode_returns: ``n`` ragged 1-D float64 arrays.
    """

    steps: dict[str, np.ndarray]
    lengths: np.ndarray
    task: np.ndarray
    task_params: np.ndarray
    run: np.ndarray
    source: np.ndarray
    episode_returns: list[np.ndarray]

    @property
    def n_histories(self) -> int:
        """Number of histories."""
        return int(len(self.lengths))

    @property
    def offsets(self) -> np.ndarray:
        """``(n + 1,)`` int64: history ``j`` is rows ``offsets[j]:offsets[j + 1]`` of ``steps``."""
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def validate(self) -> None:
        """Check shapes and dtypes; raise ``ValueError`` naming the inconsistent field."""
        lengths = np.asarray(self.lengths)
        _require(lengths.ndim == 1 and lengths.dtype.kind in "iu" and bool(np.all(lengths >= 0)),
                 f"lengths must be a 1-D array of non-negative ints, got {lengths.dtype} "
                 f"{lengths.shape}")
        n, total = len(lengths), int(lengths.sum())
        for name in ("task", "run", "source"):
            arr = np.asarray(getattr(self, name))
            _require(arr.shape == (n,) and arr.dtype.kind in "iu", f"{name} must be an integer "
                     f"array of shape ({n},) like lengths, got {arr.dtype} {arr.shape}")
        _require(np.ndim(self.task_params) == 2 and len(self.task_params) == n,
                 f"task_params must have shape ({n}, P), got {np.shape(self.task_params)}")
        _require(len(self.episode_returns) == n and all(np.ndim(r) == 1 for r in
                 self.episode_returns), f"episode_returns must be {n} 1-D arrays, one a history")
        missing = [f for f in REQUIRED_FIELDS if f not in self.steps]
        _require(not missing, f"steps lacks the required fields {missing}")
        for name, arr in self.steps.items():
            arr = np.asarray(arr)
            _require(bool(_NAME_RE.match(name)),
                     f"step field {name!r} must match {_NAME_RE.pattern}")
            _require(arr.dtype.kind in "biuf", f"steps[{name!r}] has dtype {arr.dtype}; "
                     f"store numbers or bools")
            _require(arr.ndim > 0 and arr.shape[0] == total, f"steps[{name!r}] has shape "
                     f"{arr.shape} but lengths sum to {total}; give one row per step")

    @classmethod
    def concat(cls, batches: Sequence[HistoryBatch]) -> HistoryBatch:
        """Concatenate batches with the same step fields (histories kept in order)."""
        _require(len(batches) > 0, "concat needs at least one batch, got none")
        fields = list(batches[0].steps)
        for b in batches:
            _require(set(b.steps) == set(fields), f"cannot concat batches with different step "
                     f"fields: {sorted(fields)} vs {sorted(b.steps)}")

        def cat(name: str, dtype: type) -> np.ndarray:
            return np.concatenate([np.asarray(getattr(b, name)) for b in batches]).astype(dtype)

        return cls(steps={f: np.concatenate([np.asarray(b.steps[f]) for b in batches])
                          for f in fields},
                   lengths=cat("lengths", np.int64), task=cat("task", np.int64),
                   task_params=cat("task_params", np.float64), run=cat("run", np.int64),
                   source=cat("source", np.int64),
                   episode_returns=[np.asarray(r, np.float64) for b in batches
                                    for r in b.episode_returns])

    def every_episode(self, stride: int) -> HistoryBatch:
        """Keep every ``stride``-th episode of each history: episodes stride-1, 2*stride-1, ...

        A history of E episodes becomes one of E // stride episodes that ends, as the original
        does, with the learner's latest behaviour; an AD window over it spans ``stride`` times as
        much of the learning process (the learner seen ``stride`` times faster). Episode ends are
        the steps with ``terminated`` or ``truncated``; steps after the last episode end are dropped.
        """
        _require(stride >= 1, f"stride must be >= 1, got {stride}")
        if stride == 1:
            return self
        ends = np.asarray(self.steps["terminated"], bool) | np.asarray(self.steps["truncated"], bool)  # (N,)
        hist = np.repeat(np.arange(self.n_histories), self.lengths)  # (N,) history of each step
        ended = np.concatenate([[0], np.cumsum(ends)])  # (N + 1,) episode ends before each row
        episode = ended[:-1] - ended[self.offsets[:-1]][hist]  # (N,) episode index within its history
        complete = np.bincount(hist, weights=ends, minlength=self.n_histories)[hist]  # (N,) episodes ended in it
        keep = (episode % stride == stride - 1) & (episode < complete)  # (N,)
        lengths = np.bincount(hist, weights=keep, minlength=self.n_histories).astype(np.int64)
        return HistoryBatch(steps={f: np.asarray(a)[keep] for f, a in self.steps.items()}, lengths=lengths,
                            task=self.task, task_params=self.task_params, run=self.run, source=self.source,
                            episode_returns=[np.asarray(r)[stride - 1::stride] for r in self.episode_returns])


# ----------------------------------------------------------------------------- files
def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes, name: Path | None = None) -> None:
    """Write ``data`` to ``path`` with plain writes and fsync it. A failure (``ENOSPC``, ``EROFS``,
    ``EACCES``) is the ``OSError`` of the failing call, naming ``name`` (default ``path``): write
    and fsync errors carry no file name of their own."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(name or path)) from exc
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``<path>.tmp-<pid>`` (:func:`write_synced`), rename it to ``path`` and
    fsync the folder: a crash leaves either the old state or the complete new file, never a
    half-written one under the final name. Any failure is the ``OSError`` of the failing call,
    naming ``path``, and the temp file is gone."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        write_synced(tmp, data, name=path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # a failed rename or folder fsync
        raise


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def _h5_image(name: str, fill: Callable[[h5py.File], None]) -> bytes:
    """The bytes of a new HDF5 file filled by ``fill``, built in memory.

    HDF5's core driver without a backing store never touches the disk, so an I/O error cannot
    arise inside HDF5 (where a full disk at close crashed the process); the image equals what the
    same calls write to a file on disk. The 1.10 format checksums its metadata: a flipped byte
    outside the data fails on open (the 1.8 default leaves most of a small file as unchecked free
    space)."""
    with h5py.File(name, "w", driver="core", backing_store=False, libver=("v110", "v110")) as f:
        fill(f)
        f.flush()
        return f.id.get_file_image()


def _write_h5(path: Path, fill: Callable[[h5py.File], None]) -> str:
    """Build ``path`` in memory with ``fill``, write it atomically; returns its hex SHA-256."""
    # a name of its own: HDF5 tells in-memory files apart by name (never stored in the bytes)
    data = _h5_image(f"{path.name}.image-{os.getpid()}-{next(_IMAGES)}", fill)
    atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def _content_digest(f: h5py.File, loaded: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """SHA-256 over name, dtype, shape and bytes of every dataset, read in ~16 MiB blocks.

    Stored by the writer; :mod:`icrl.validation` recomputes it to check a shard, passing the
    datasets it has read already (``loaded``: ``"steps/obs"`` -> array) so none is read twice."""
    h = hashlib.sha256()
    for name in [f"{g}/{k}" for g in ("histories", "steps") for k in sorted(f[g])]:
        ds = f[name]
        h.update(f"{name}|{ds.dtype.str}|{ds.shape}|".encode())
        if loaded is not None and name in loaded:
            h.update(np.ascontiguousarray(loaded[name]).tobytes())
            continue
        rows = max(1, (16 << 20) // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]))))
        for a in range(0, ds.shape[0], rows):
            h.update(np.ascontiguousarray(ds[a:a + rows]).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _fill_shard(f: h5py.File, batch: HistoryBatch) -> None:
    total = int(np.sum(batch.lengths))
    for name, arr in batch.steps.items():
        arr = np.ascontiguousarray(arr)
        rows = min(total, max(1, CHUNK_BYTES // max(1, arr.itemsize * int(np.prod(arr.shape[1:])))))
        # fletcher32: HDF5 checks every chunk as it reads it, so a reader that streams a few
        # windows catches corruption without hashing the whole shard first
        f.create_dataset(f"steps/{name}", data=arr, chunks=(rows, *arr.shape[1:]) if arr.size else None,
                         fletcher32=bool(arr.size))
    returns = [np.asarray(r, np.float64) for r in batch.episode_returns]
    index = {"offset": batch.offsets[:-1], "length": batch.lengths, "task": batch.task,
             "run": batch.run, "source": batch.source, "task_params": batch.task_params,
             "return_values": np.concatenate(returns),
             "return_offsets": np.concatenate([[0], np.cumsum([len(r) for r in returns])])}
    for name, arr in index.items():
        dtype = np.float64 if name in ("task_params", "return_values") else np.int64
        f.create_dataset(f"histories/{name}", data=np.asarray(arr, dtype=dtype))
    f.attrs["content_sha256"] = _content_digest(f)


# ----------------------------------------------------------------------------- writing
class DatasetWriter:
    """Writes shards, then the manifest (last), into a dataset folder.

    Args:
        directory: The dataset folder (created if missing).
        meta: Manifest metadata: ``env_id``, ``env_kwargs``, ``sources`` (names that
            ``HistoryBatch.source`` indexes), usually ``collect`` (the collector config),
            ``task_split``, ``spec`` and ``plan_sha256`` (64 hex digits: also written into every
            shard as its root attribute). JSON-serialisable.
    """

    def __init__(self, directory: str | os.PathLike, meta: dict[str, Any]) -> None:
        missing = [k for k in ("env_id", "env_kwargs", "sources") if k not in meta]
        _require(not missing, f"meta lacks {missing}; pass env_id, env_kwargs and sources")
        reserved = sorted({"schema", "n_histories", "n_steps", "shards", "derived"} & set(meta))
        _require(not reserved, f"meta must not set {reserved}; the writer fills them")
        sources = meta["sources"]
        _require(isinstance(sources, list) and len(sources) > 0 and all(isinstance(s, str)
                 for s in sources), f"meta['sources'] must be a non-empty list of names, "
                 f"got {sources!r}")
        plan = meta.get("plan_sha256")
        _require(plan is None or (isinstance(plan, str) and bool(_HEX64_RE.match(plan))),
                 f"meta['plan_sha256'] must be 64 hex digits, got {str(plan)[:80]!r}")
        _require_json(meta, "meta")
        self.directory, self.meta = Path(directory), dict(meta)
        self.directory.mkdir(parents=True, exist_ok=True)

    def write_shard(self, index: int, batch: HistoryBatch) -> dict[str, Any]:
        """Write ``batch`` as ``shard-{index:05d}.h5``; returns its manifest entry
        ``{"file", "n_histories", "n_steps", "sha256", "bytes"}``."""
        _require(0 <= int(index) <= 99_999, f"shard index must be in [0, 99999], got {index}")
        batch.validate()
        _require(batch.n_histories > 0, f"shard {index}: the batch has no histories; skip it")
        k = len(self.meta["sources"])
        _require(bool(np.all((batch.source >= 0) & (batch.source < k))),
                 f"batch.source must index meta['sources'] (0..{k - 1})")
        path = self.directory / f"shard-{int(index):05d}.h5"
        plan = self.meta.get("plan_sha256")

        def fill(f: h5py.File) -> None:
            _fill_shard(f, batch)
            if plan is not None:
                f.attrs["plan_sha256"] = np.frombuffer(bytes.fromhex(plan), dtype=np.uint8)

        sha256 = _write_h5(path, fill)
        return {"file": path.name, "n_histories": batch.n_histories,
                "n_steps": int(np.sum(batch.lengths)), "sha256": sha256, "bytes": path.stat().st_size}

    def finish(self, shard_entries: Sequence[dict[str, Any]],
               derived: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        """Write ``manifest.json`` atomically, listing ``shard_entries`` and the ``derived`` file
        entries to keep (a finished dataset collected again keeps its LHF weights); returns the
        manifest."""
        entries = sorted((dict(e) for e in shard_entries), key=lambda e: e["file"])
        files = [e["file"] for e in entries]
        _require(len(files) > 0 and len(set(files)) == len(files),
                 f"shard_entries must list each written shard once, got {files}")
        absent = [f for f in files if not (self.directory / f).is_file()]
        _require(not absent, f"shard_entries lists shards not in {self.directory}: {absent}")
        manifest = {"schema": SCHEMA, **self.meta,
                    "n_histories": sum(int(e["n_histories"]) for e in entries),
                    "n_steps": sum(int(e["n_steps"]) for e in entries),
                    "shards": entries,
                    "derived": sorted((dict(d) for d in derived), key=lambda d: str(d["name"]))}
        _write_json(self.directory / "manifest.json", manifest)
        return manifest
