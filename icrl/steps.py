"""Step fields as the samplers take them (docs/architecture.md#streaming-reads): every history in
memory (:class:`MemorySteps`), or read from the shards on demand (:class:`ShardSteps`).

Both give the same arrays for the same rows: ``obs`` and ``next_obs`` as (rows, k), ``action`` and
``oracle_action`` as int64 (Discrete) or (rows, d) float32 (Box), ``reward`` as float32. Rows are
flat step indices in the dataset's order (history ``i`` is rows ``offsets[i] : offsets[i] +
lengths[i]``); every row of a ``take`` must lie inside one history, so it lies inside one shard.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from icrl.histories import _H5_ERRORS, HistoryBatch, file_sha256
from icrl.spaces import EnvSpec
from icrl.store import HistoryStore
from icrl.validation import _value_problem

FIELDS = ("obs", "next_obs", "action", "reward", "oracle_action")  # what the samplers read


class DataError(ValueError):
    """Streamed data that fail their checks where they are read (corrupted, out of the spec); the
    message names the shard and the row, and how to check the whole dataset."""


def as_model_input(name: str, x: np.ndarray, discrete_actions: bool) -> np.ndarray:
    """A stored field as the samplers use it: obs flattened to (N, k), actions int64 or (N, d)
    float32, rewards float32."""
    if name in ("action", "oracle_action"):
        return x.astype(np.int64) if discrete_actions else x.reshape(len(x), -1).astype(np.float32)
    if name == "reward":
        return x.astype(np.float32)
    return x.reshape(len(x), -1)


class MemorySteps:
    """Every step of ``batch`` in memory (``HistoryStore.load()``).

    Args:
        batch: the histories.
        discrete_actions: actions are Discrete integers (False: Box floats).
    """

    def __init__(self, batch: HistoryBatch, discrete_actions: bool) -> None:
        self.arrays = {k: as_model_input(k, batch.steps[k], discrete_actions) for k in FIELDS if k in batch.steps}
        self.offsets, self.lengths = batch.offsets[:-1], batch.lengths
        self.task = np.asarray(batch.task, dtype=np.int64)  # (n_histories,)

    def has(self, name: str) -> bool:
        return name in self.arrays

    def take(self, name: str, rows: np.ndarray) -> np.ndarray:
        return self.arrays[name][rows]


class ShardSteps:
    """Steps read from the shards when a batch asks for them; only the index is in memory.

    Each row of a ``take`` is one read (``ds[a:b]`` over the span it covers) from the shard
    holding it, through HDF5's chunk cache (``cache_bytes`` in all, the bounded cache). What is
    read is checked as the store's open check would have checked it (finite, inside the spaces
    of ``spec``; DICP's reward classes); corruption is caught where it is read: by the chunks'
    Fletcher-32 checksums, or, for a shard written without them, by its sha256 against the
    manifest on this process's first read of it.

    Args:
        store: the dataset, opened with ``check="index"`` (no step read at open).
        discrete_actions: actions are Discrete integers (False: Box floats).
        spec: the env spec the values must fit (None: finiteness only).
        reward_values: DICP's reward classes: a reward outside them is an error (None: any).
        shards: the shards this process samples from (its share under DDP; None: all).
    """

    def __init__(self, store: HistoryStore, discrete_actions: bool, spec: EnvSpec | None = None,
                 reward_values: list[float] | None = None, shards: list[int] | None = None) -> None:
        self.store, self.discrete, self.spec = store, discrete_actions, spec
        self.reward_values = None if reward_values is None else np.asarray(reward_values, dtype=np.float32)
        self.offsets, self.lengths, self.task = store.offsets, store.lengths, np.asarray(store.task, dtype=np.int64)
        self.shards = None if shards is None else sorted(shards)
        self._verified: set[int] = set()
        self._pid = os.getpid()

    def has(self, name: str) -> bool:
        return name in self.store.fields

    def history_shards(self) -> np.ndarray:
        """(n_histories,) the shard of every history."""
        return np.searchsorted(self.store.shard_starts, self.offsets, side="right") - 1

    def take(self, name: str, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        flat = rows.reshape(len(rows), -1)  # (B, m): one read per sample
        lo, hi = flat.min(axis=1), flat.max(axis=1) + 1  # (B,) the span each sample covers
        shard = np.searchsorted(self.store.shard_starts, lo, side="right") - 1  # (B,)
        out = []
        for b in range(len(flat)):
            s, start = int(shard[b]), int(self.store.shard_starts[shard[b]])
            span = self._read(s, name, int(lo[b]) - start, int(hi[b]) - start)
            out.append(span[flat[b] - lo[b]])
        x = as_model_input(name, np.concatenate(out), self.discrete)  # (B*m, ...)
        return x.reshape(*rows.shape, *x.shape[1:])

    def _read(self, shard: int, name: str, a: int, b: int) -> np.ndarray:
        """Rows ``a:b`` of one shard's field, checked (class doc)."""
        file = self.store.manifest["shards"][shard]["file"]
        if self._pid != os.getpid():  # a forked copy checks for itself
            self._verified, self._pid = set(), os.getpid()
        if shard not in self._verified:
            if not self.store.has_chunk_checksums(shard) and \
                    file_sha256(self.store.directory / file) != self.store.manifest["shards"][shard]["sha256"]:
                raise DataError(f"{file}: sha256 mismatch (corrupted or replaced); run `icrl verify {self.store.directory}`")
            self._verified.add(shard)
        try:
            x = self.store.rows(shard, name, a, b)
        except _H5_ERRORS as exc:  # a failed Fletcher-32 checksum, a truncated chunk
            raise DataError(f"{file}: steps/{name} rows {a}:{b} are unreadable ({str(exc).splitlines()[0][:120]}); "
                             f"the shard is corrupted: run `icrl verify {self.store.directory}`") from None
        found = _value_problem(f"steps/{name}", x, self.spec)
        if found is not None:
            raise DataError(f"{file}: steps/{name} row {a + int(np.flatnonzero(found[0])[0])} {found[1]}; "
                             f"run `icrl verify {self.store.directory}`")
        if name == "reward" and self.reward_values is not None and not np.isin(x, self.reward_values).all():
            other = float(x[~np.isin(x, self.reward_values)][0])
            raise DataError(f"{file}: a reward of {other} is outside model.reward_values {self.reward_values.tolist()}; "
                             f"list every reward value, or leave it empty to regress rewards")
        return x

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_verified": set(), "_pid": -1}
