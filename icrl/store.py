"""Reading a dataset folder written by :class:`icrl.histories.DatasetWriter` (format:
docs/architecture.md#learning-histories-and-storage and :mod:`icrl.histories`): the manifest
check and :class:`HistoryStore`, which checks every shard at open (:mod:`icrl.validation`: index,
shapes and dtypes against the env spec, finite values, one read per field), keeps the per-history
index and reads steps on demand, plus derived files (LHF scores, weights) written next to the
shards and listed in the manifest.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from icrl.histories import (
    _H5_ERRORS,
    _NAME_RE,
    _SHARD_RE,
    INDEX_FIELDS,
    SCHEMA,
    HistoryBatch,
    _require,
    _require_json,
    _write_h5,
    _write_json,
    file_sha256,
)
from icrl.spaces import EnvSpec, SpaceError
from icrl.validation import ShardExpect, check_shard, manifest_problems, manifest_spec


def _read_manifest(directory: Path) -> dict[str, Any]:
    """Read ``manifest.json`` and check its keys' types, with a FileNotFoundError/ValueError that
    says why; its entries are checked by :func:`icrl.validation.manifest_problems`."""
    path = directory / "manifest.json"
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset folder {directory} does not exist; "
                                f"pass the --out folder of `icrl collect`")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the collection did not finish (the "
                                f"manifest is written last); rerun `icrl collect` to resume it")
    text = path.read_text(encoding="utf-8")
    _require(bool(text.strip()), f"{path} is empty; rerun `icrl collect` to rewrite it")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rerun `icrl collect`") from exc
    _require(isinstance(manifest, dict) and manifest.get("schema") == SCHEMA,
             f"{path}: not an {SCHEMA!r} manifest")
    kinds = {"env_id": str, "env_kwargs": dict, "sources": list, "n_histories": int,
             "n_steps": int, "shards": list, "derived": list}
    bad = [k for k, t in kinds.items() if not isinstance(manifest.get(k), t)]
    _require(not bad, f"{path}: keys {bad} are missing or of the wrong type")
    return manifest


def _load_manifest(directory: Path) -> dict[str, Any]:
    """:func:`_read_manifest`, then its entries checked (file names, counts) before any file is
    opened: the first problem is a ValueError."""
    manifest = _read_manifest(directory)
    problems = manifest_problems(manifest)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ValueError(f"{directory}/{problems[0]}{more}")
    return manifest


class HistoryStore:
    """Read-only access to a dataset folder written by :class:`DatasetWriter`.

    The per-history index (``lengths``, ``task``, ``run``, ``source``, ``task_params``,
    ``episode_returns``) is loaded from every shard at open; steps are read on demand with
    ``ds[a:b]`` slices. Handles reopen in a forked or unpickled copy (DataLoader workers).

    Args:
        directory: The dataset folder (holding ``manifest.json``).
        check: What is checked at open: "values" (layout, index and the step values), "content"
            (also each shard's content checksum, from the same reads: corruption caught without a
            second pass; the arrays read are kept for the first :meth:`load`), or "index" (layout
            and index only, no step read: a reader that checks what it reads,
            :class:`icrl.steps.ShardSteps`).
        cache_bytes: HDF5's chunk cache, split over the shards' step fields (None: h5py's 1 MiB per
            field and shard).
    """

    def __init__(self, directory: str | os.PathLike, check: str = "values", cache_bytes: int | None = None) -> None:
        _require(check in ("values", "content", "index"), f"check must be values, content or index, got {check!r}")
        self.directory = Path(directory)
        self._cache_bytes = cache_bytes
        self.manifest = _load_manifest(self.directory)
        self.n_histories: int = self.manifest["n_histories"]
        self.n_steps: int = self.manifest["n_steps"]
        _require(self.n_histories > 0 and len(self.manifest["shards"]) > 0,
                 f"{self.directory}/manifest.json lists zero histories; collect some with "
                 f"`icrl collect --out {self.directory}`")
        self.env_id: str = self.manifest["env_id"]
        self.env_kwargs: dict[str, Any] = self.manifest["env_kwargs"]
        self.sources: list[str] = list(self.manifest["sources"])
        self._spec: dict[str, Any] | None = self.manifest.get("spec")
        self._files: list[h5py.File] = []
        self._pid, self._closed = -1, False
        self._open()
        spec, n_sources = manifest_spec(self.manifest), len(self.sources)
        parts: list[dict[str, np.ndarray]] = []
        self._read: list[dict[str, np.ndarray]] = []  # a content check's step arrays, until load()
        for f, entry in zip(self._files, self.manifest["shards"]):
            expect = ShardExpect(entry["n_histories"], entry["n_steps"], n_sources, spec,
                                 self.manifest.get("plan_sha256"))
            try:
                shard = check_shard(f, entry["file"], expect, content=check == "content", values=check != "index")
                problems = shard.problems
            except _H5_ERRORS as exc:
                problems = [f"{entry['file']}: unreadable, corrupted ({str(exc).splitlines()[0][:120]})"]
            if not problems and parts and tuple(sorted(f["steps"])) != self.fields:
                problems = [f"{entry['file']}: step fields differ from the first shard's"]
            if problems:
                self.close()
                more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
                raise ValueError(f"{problems[0]}{more}; run `icrl verify {self.directory}`")
            self.fields: tuple[str, ...] = tuple(sorted(f["steps"]))
            parts.append(shard.index)
            self._read.append(shard.steps)
        cat = {k: np.concatenate([p[k] for p in parts]) for k in INDEX_FIELDS}
        self.lengths: np.ndarray = cat["length"]
        self.task: np.ndarray = cat["task"]
        self.run: np.ndarray = cat["run"]
        self.source: np.ndarray = cat["source"]
        self.task_params: np.ndarray = cat["task_params"]
        self.episode_returns: list[np.ndarray] = [
            p["return_values"][a:b] for p in parts
            for a, b in zip(p["return_offsets"][:-1], p["return_offsets"][1:])]
        self._offset = cat["offset"]
        self._shard_of = np.repeat(np.arange(len(parts)), [len(p["length"]) for p in parts])
        # (n_shards + 1,) first row of each shard in the dataset's flat step order
        self.shard_starts = np.concatenate([[0], np.cumsum([len(d["reward"]) for d in self._datasets])])
        self.offsets = self._offset + self.shard_starts[self._shard_of]  # (n,) first flat row of each history
        if len(self.lengths) != self.n_histories:
            self.close()
            raise ValueError(f"shards hold {len(self.lengths)} histories, manifest says "
                             f"{self.n_histories}; run `icrl verify {self.directory}`")

    def _open(self) -> None:
        paths = [self.directory / e["file"] for e in self.manifest["shards"]]
        absent = [p.name for p in paths if not p.is_file()]
        if absent:
            raise FileNotFoundError(f"shards listed in {self.directory}/manifest.json are "
                                    f"missing: {absent}; run `icrl verify {self.directory}`")
        self._files, self._datasets, self._pid = [], [], os.getpid()
        # h5py's chunk cache is per dataset: the budget is split over the shards' step fields (<= 10)
        cache = {} if self._cache_bytes is None else {"rdcc_nbytes": max(1 << 16, self._cache_bytes // (10 * len(paths)))}
        for p in paths:
            try:
                self._files.append(h5py.File(p, "r", **cache))
                self._datasets.append({k: self._files[-1]["steps"][k]
                                       for k in self._files[-1]["steps"]})
            except _H5_ERRORS as exc:
                self.close()
                raise ValueError(f"{p.name} is unreadable ({exc}); run `icrl verify "
                                 f"{self.directory}`") from exc

    @property
    def spec(self) -> EnvSpec:
        """The env spec the histories were collected under: the manifest's ``spec``, or, for a
        dataset written before specs were stored, rebuilt from its env id and kwargs."""
        if self._spec is not None:
            try:
                return EnvSpec.from_dict(self._spec)
            except SpaceError as e:
                raise ValueError(f"{self.directory}/manifest.json: bad spec ({e})") from None
        try:
            return EnvSpec.for_env(self.env_id, self.env_kwargs)
        except ValueError as e:
            raise ValueError(f"{self.directory}/manifest.json has no spec and its env {self.env_id} cannot be "
                             f"built to rebuild it ({str(e).splitlines()[0][:80]}); import the module that "
                             f"registers it (env.module)") from None

    def _check(self, i: int) -> int:
        _require(not self._closed, f"HistoryStore({self.directory}) is closed; open a new one")
        _require(isinstance(i, (int, np.integer)) and 0 <= i < self.n_histories,
                 f"history index i={i!r} must be an integer in [0, {self.n_histories})")
        if self._pid != os.getpid():  # forked or unpickled: HDF5 handles are per process
            self._open()
        return int(i)

    def window(self, i: int, start: int, length: int) -> dict[str, np.ndarray]:
        """Steps ``start : start + length`` of history ``i`` (one ``ds[a:b]`` read a field)."""
        i, n = self._check(i), int(self.lengths[i])
        _require(0 <= start and 0 <= length and start + length <= n, f"window start={start}, "
                 f"length={length} must lie inside history {i} of {n} steps")
        a = int(self._offset[i]) + int(start)
        return {k: ds[a:a + int(length)] for k, ds in self._datasets[self._shard_of[i]].items()}

    def rows(self, shard: int, field: str, a: int, b: int) -> np.ndarray:
        """Rows ``a:b`` of ``steps/<field>`` of shard ``shard`` (one read)."""
        self._check(0)
        return self._datasets[shard][field][a:b]

    def has_chunk_checksums(self, shard: int) -> bool:
        """Whether every step field of the shard carries Fletcher-32 chunk checksums (HDF5 checks
        them on every read); shards written before they were added carry none."""
        self._check(0)
        return all(ds.fletcher32 for ds in self._datasets[shard].values())

    def history(self, i: int) -> dict[str, np.ndarray]:
        """All steps of history ``i``: field -> array of shape ``(lengths[i], ...)``."""
        return self.window(i, 0, int(self.lengths[self._check(i)]))

    def load(self) -> HistoryBatch:
        """Every history in memory as one :class:`HistoryBatch` (small datasets, training). After a
        content check, its arrays, not a second read."""
        self._check(0)
        read, self._read = self._read, []
        shards = read if read and all(read) else [{k: d[k][()] for k in self.fields} for d in self._datasets]
        return HistoryBatch(
            steps={k: np.concatenate([s[k] for s in shards]) for k in self.fields},
            lengths=self.lengths, task=self.task, task_params=self.task_params, run=self.run,
            source=self.source, episode_returns=list(self.episode_returns))

    def write_derived(self, name: str, arrays: dict[str, np.ndarray],
                      meta: dict[str, Any]) -> dict[str, Any]:
        """Write ``DIR/<name>.h5`` atomically and list it in the manifest (rewritten
        atomically; shards untouched). Rewriting an existing name replaces it.

        Args:
            name: File stem such as ``"lhf_weights"``: letters, digits, ``_ . -``.
            arrays: Dataset name -> numeric array.
            meta: JSON-serialisable description, kept in the manifest entry.

        Returns:
            The manifest entry ``{"name", "file", "sha256", "meta"}``.
        """
        _require(bool(_NAME_RE.match(name)) and not _SHARD_RE.match(f"{name}.h5")
                 and name != "manifest", f"derived name {name!r} must match "
                 f"{_NAME_RE.pattern} and not be a shard or manifest name")
        _require(len(arrays) > 0 and all(_NAME_RE.match(k) and np.asarray(v).dtype.kind in
                 "biuf" for k, v in arrays.items()), "arrays must map plain names to numeric "
                 "arrays (at least one)")
        _require_json(meta, "meta")

        def fill(f: h5py.File) -> None:
            for key, value in sorted(arrays.items()):
                f.create_dataset(key, data=np.asarray(value))

        path = self.directory / f"{name}.h5"
        entry = {"name": name, "file": path.name, "sha256": _write_h5(path, fill), "meta": meta}
        kept = [d for d in self.manifest["derived"] if d.get("name") != name]
        manifest = {**self.manifest, "derived": sorted(kept + [entry], key=lambda d: d["name"])}
        _write_json(self.directory / "manifest.json", manifest)
        self.manifest = manifest  # only once it is on disk
        return entry

    def read_derived(self, name: str) -> dict[str, np.ndarray]:
        """Arrays of derived file ``name``, checked against the manifest's sha256."""
        derived = {d.get("name"): d for d in self.manifest["derived"]}
        _require(name in derived, f"no derived data named {name!r}; the manifest lists "
                 f"{sorted(derived)}")
        path = self.directory / derived[name]["file"]
        _require(path.is_file() and file_sha256(path) == derived[name]["sha256"],
                 f"{path} is missing or does not match its manifest sha256; recompute it")
        with h5py.File(path, "r") as f:
            return {k: f[k][()] for k in f}

    def close(self) -> None:
        """Close the shard files; idempotent."""
        if self._pid == os.getpid():
            for f in self._files:
                f.close()
        self._files, self._datasets, self._pid, self._closed, self._read = [], [], -1, True, []

    def __getstate__(self) -> dict[str, Any]:
        # h5py handles cannot be pickled (spawned DataLoader workers); they reopen on first use.
        return {**self.__dict__, "_files": [], "_datasets": [], "_pid": -1, "_read": []}

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n_histories
