"""The semantic checks of icrl.validation: one hand-made bad shard or manifest for every rule, each
refused by `icrl verify`, by a reader at open and by a collection's resume, naming the file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from icrl import integrity, store
from icrl.histories import DatasetWriter, HistoryBatch, _content_digest, _write_h5
from icrl.integrity import complete_shards, verify
from icrl.spaces import EnvSpec
from icrl.store import HistoryStore
from icrl.validation import MAX_ROW_ITEMS, manifest_problems

DARK = EnvSpec.for_env("icrl/DarkRoom-v0", {"size": 9})  # obs MultiDiscrete([9 9]), actions Discrete(5)
POINT = EnvSpec.for_env("icrl/PointRobot-v0", {})  # obs Box (2,), actions Box [-1, 1]^2
PLAN = "ab" * 32


def make_batch(spec: EnvSpec, lengths: list[int], seed: int = 0) -> HistoryBatch:
    """A sound batch of histories in ``spec``'s spaces."""
    rng = np.random.default_rng(seed)
    total, n = sum(lengths), len(lengths)
    if spec.discrete_obs:
        obs = rng.integers(0, 9, size=(total, *spec.obs_shape))
    else:
        obs = rng.uniform(-3, 3, size=(total, *spec.obs_shape)).astype(np.float32)
    if spec.discrete_actions:
        action, oracle = rng.integers(0, spec.n_actions, total), rng.integers(0, spec.n_actions, total)
    else:
        action = rng.uniform(-1, 1, (total, *spec.action_shape)).astype(np.float32)
        oracle = rng.uniform(-1, 1, (total, *spec.action_shape)).astype(np.float32)
    return HistoryBatch(
        steps={"obs": obs, "next_obs": obs.copy(), "action": action, "oracle_action": oracle,
               "reward": rng.normal(size=total), "terminated": np.zeros(total, bool),
               "truncated": rng.random(total) < 0.2, "regret": np.full(total, np.nan)},
        lengths=np.asarray(lengths, np.int64), task=np.arange(n), task_params=rng.normal(size=(n, 2)),
        run=np.zeros(n, np.int64), source=np.zeros(n, np.int64),
        episode_returns=[rng.normal(size=2) for _ in range(n)])


def write_dataset(directory: Path, spec: EnvSpec = DARK) -> None:
    """Two shards of 3 histories (lengths 4, 5, 6 and 3, 3, 3) with the spec in the manifest."""
    meta = {"env_id": spec.env_id, "env_kwargs": {}, "sources": ["a", "b"], "spec": spec.to_dict(),
            "plan_sha256": PLAN}
    writer = DatasetWriter(directory, meta)
    writer.finish([writer.write_shard(0, make_batch(spec, [4, 5, 6])),
                   writer.write_shard(1, make_batch(spec, [3, 3, 3], seed=1))])


def rewrite_shard(directory: Path, edit: Callable[[dict[str, np.ndarray]], None],
                  name: str = "shard-00001.h5", create: Callable[[h5py.File], None] | None = None,
                  manifest_edit: Callable[[dict], None] | None = None) -> None:
    """Rewrite shard ``name`` with ``edit`` applied to its datasets (``"steps/obs"`` -> array), a
    fresh content checksum (then ``create`` run on the file), and the manifest updated to its new
    sha256: only the semantic rule under test is broken."""
    path = directory / name
    with h5py.File(path, "r") as f:
        arrays = {f"{g}/{k}": f[g][k][()] for g in ("histories", "steps") for k in f[g]}
        attrs = dict(f.attrs)
    edit(arrays)

    def fill(f: h5py.File) -> None:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        f.require_group("steps")
        f.require_group("histories")
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["content_sha256"] = _content_digest(f)
        if create is not None:
            create(f)

    sha = _write_h5(path, fill)
    manifest = json.loads((directory / "manifest.json").read_text())
    entry = next(e for e in manifest["shards"] if e["file"] == name)
    entry["sha256"], entry["bytes"] = sha, path.stat().st_size
    if manifest_edit is not None:
        manifest_edit(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def assert_refused(directory: Path, *needles: str, name: str = "shard-00001.h5", resume: bool = True) -> None:
    """verify, HistoryStore and (``resume``) complete_shards all refuse the shard, naming it and
    the rule."""
    problems = verify(directory)
    assert problems and all(name in p for p in problems), problems
    assert any(all(n in p for n in needles) for p in problems), problems
    assert all("\n" not in p for p in problems)
    with pytest.raises(ValueError, match=name) as err:
        HistoryStore(directory)
    assert all(n in str(err.value) for n in needles), err.value
    if resume:
        spec = EnvSpec.from_dict(json.loads((directory / "manifest.json").read_text())["spec"])
        assert int(name[6:11]) not in complete_shards(directory, PLAN, spec, n_sources=2)


def test_sound_datasets_pass(tmp_path: Path) -> None:
    for spec in (DARK, POINT):
        write_dataset(tmp_path / spec.env_id.split("/")[1], spec)
        assert verify(tmp_path / spec.env_id.split("/")[1]) == []
        with HistoryStore(tmp_path / spec.env_id.split("/")[1]) as s:
            assert s.n_histories == 6 and s.n_steps == 24
        assert set(complete_shards(tmp_path / spec.env_id.split("/")[1], PLAN, spec, 2)) == {0, 1}


def _set(key: str, row: int, value) -> Callable[[dict], None]:
    def edit(a: dict[str, np.ndarray]) -> None:
        a[key] = a[key].copy()
        a[key][row] = value
    return edit


def _replace(key: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict], None]:
    def edit(a: dict[str, np.ndarray]) -> None:
        a[key] = make(a[key])
    return edit


def _drop(key: str) -> Callable[[dict], None]:
    return lambda a: a.pop(key)


# shard-00001.h5 holds histories of 3, 3, 3 steps: row 4 is step 1 of history 1, row 7 step 1 of history 2
DISCRETE_CASES = {
    "missing field": (_drop("steps/truncated"), ["missing datasets", "steps/truncated"]),
    "missing index": (_drop("histories/offset"), ["missing datasets", "histories/offset"]),
    "compound dtype": (_replace("steps/reward", lambda r: np.array(
        [(x, x) for x in r], dtype=[("a", "f8"), ("b", "f8")])), ["steps/reward", "dtype"]),
    "string dtype": (_replace("steps/terminated", lambda t: np.array(["x"] * len(t), dtype="S1")),
                     ["steps/terminated", "dtype"]),
    "float index": (_replace("histories/length", lambda x: x.astype(np.float64)),
                    ["histories/length", "must be integer"]),
    "obs shape": (_replace("steps/obs", lambda o: np.concatenate([o, o[:, :1]], 1)),
                  ["steps/obs", "(3,)", "env spec gives (2,)"]),
    "action shape": (_replace("steps/action", lambda a: a[:, None]), ["steps/action", "env spec gives ()"]),
    "obs outside its space": (_set("steps/obs", 4, [9, 0]), ["steps/obs of history 1 (step 1)", "outside"]),
    "action outside Discrete": (_set("steps/action", 7, 5), ["steps/action of history 2 (step 1)", "outside"]),
    "negative oracle action": (_set("steps/oracle_action", 0, -1), ["steps/oracle_action of history 0 (step 0)"]),
    "float actions for Discrete": (_replace("steps/action", lambda a: a.astype(np.float64)),
                                   ["steps/action", "needs integers"]),
    "terminated not a flag": (_replace("steps/terminated", lambda t: np.where(np.arange(len(t)) == 4, 2, 0)),
                              ["steps/terminated of history 1 (step 1)", "other than 0 or 1"]),
    "truncated not a flag": (_replace("steps/truncated", lambda t: np.full(len(t), 0.5)),
                             ["steps/truncated of history 0 (step 0)", "other than 0 or 1"]),
    "NaN reward": (_set("steps/reward", 7, np.nan), ["steps/reward of history 2 (step 1) is not finite"]),
    "infinite reward": (_set("steps/reward", 5, -np.inf), ["steps/reward of history 1 (step 2) is not finite"]),
    "negative length": (_replace("histories/length", lambda x: np.array([4, -1, 6])),
                        ["history 1 has length -1"]),
    "length beyond the shard": (_replace("histories/length", lambda x: np.array([3, 3, 30])),
                                ["history 2 has length 30"]),
    "lengths not summing to the steps": (_replace("histories/length", lambda x: np.array([3, 3, 2])),
                                         ["lengths sum to 8", "9 steps"]),
    "offset": (_replace("histories/offset", lambda x: np.array([0, 3, 5])), ["histories/offset"]),
    "negative task": (_set("histories/task", 1, -3), ["histories/task of history 1 is negative"]),
    "source outside the sources": (_set("histories/source", 2, 2), ["histories/source of history 2", "2 sources"]),
    "index rows": (_replace("histories/run", lambda x: x[:2]), ["histories/run", "one row per history"]),
    "return offsets": (_replace("histories/return_offsets", lambda x: x[::-1].copy()), ["return_offsets"]),
    "NaN task parameters": (_set("histories/task_params", 2, np.nan), ["histories/task_params of history 2"]),
    "NaN episode return": (_set("histories/return_values", 3, np.nan), ["histories/return_values of history 1"]),
    "wide task parameters": (_replace("histories/task_params", lambda x: np.zeros((3, MAX_ROW_ITEMS + 1))),
                             ["histories/task_params"]),
}


@pytest.mark.parametrize("case", sorted(DISCRETE_CASES))
def test_bad_shard_is_refused_naming_file_and_rule(tmp_path: Path, case: str) -> None:
    write_dataset(tmp_path)
    edit, needles = DISCRETE_CASES[case]
    rewrite_shard(tmp_path, edit)
    assert_refused(tmp_path, *needles)


BOX_CASES = {
    "NaN observation": (_set("steps/obs", 8, [0.0, np.nan]), ["steps/obs of history 2 (step 2) is not finite"]),
    "infinite next observation": (_set("steps/next_obs", 3, [np.inf, 0.0]), ["steps/next_obs of history 1 (step 0)"]),
    "action outside the box": (_set("steps/action", 1, [0.0, 1.5]), ["steps/action of history 0 (step 1)", "outside Box"]),
    "NaN action": (_set("steps/action", 6, [np.nan, 0.0]), ["steps/action of history 2 (step 0)", "non-finite"]),
    "oracle outside the box": (_set("steps/oracle_action", 2, [-1.01, 0.0]), ["steps/oracle_action of history 0"]),
    "integer actions for a Box": (_replace("steps/action", lambda a: a.astype(np.int64)), ["needs floats"]),
}


@pytest.mark.parametrize("case", sorted(BOX_CASES))
def test_bad_box_shard_is_refused(tmp_path: Path, case: str) -> None:
    write_dataset(tmp_path, POINT)
    edit, needles = BOX_CASES[case]
    rewrite_shard(tmp_path, edit)
    assert_refused(tmp_path, *needles)


def test_lengths_that_wrap_int64_are_caught(tmp_path: Path) -> None:
    """Lengths whose int64 sum wraps around to the true step count (and offsets that wrap with
    them) are caught: each length is checked against the shard's steps, sums are Python ints."""
    write_dataset(tmp_path)
    big = np.array([2**62, 2**62, 2**62, 2**62 + 9], np.int64)  # sums to 2**64 + 9 == 9 (mod 2**64)
    assert int(big.sum()) == 9

    def edit(a: dict[str, np.ndarray]) -> None:
        a["histories/length"] = big
        a["histories/offset"] = np.cumsum(big) - big  # wraps the same way
        for k in ("task", "run", "source"):
            a[f"histories/{k}"] = np.zeros(4, np.int64)
        a["histories/task_params"] = np.zeros((4, 2))
        a["histories/return_offsets"] = np.zeros(5, np.int64)
        a["histories/return_values"] = np.zeros(0)

    rewrite_shard(tmp_path, edit, manifest_edit=lambda m: (m["shards"][1].update(n_histories=4),
                                                           m.update(n_histories=7)))
    assert_refused(tmp_path, "history 0 has length 4611686018427387904")
    # unsigned: 2**64 - 1 + 10 == 9 (mod 2**64)
    rewrite_shard(tmp_path, _replace("histories/length", lambda x: np.array([2**64 - 1, 10, 0, 0], np.uint64)))
    assert_refused(tmp_path, "history 0 has length 18446744073709551615")


def test_counts_are_checked_against_the_manifest_before_reading(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["shards"][1]["n_steps"] = 8
    manifest["n_steps"] = 23
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert_refused(tmp_path, "has 9 rows, manifest.json says 8 steps", resume=False)  # the shard itself is sound


def test_a_dataset_that_would_expand_beyond_its_file_is_refused_unread(tmp_path: Path, monkeypatch) -> None:
    """A compressed or never-written dataset of huge shape (a decompression bomb) is refused from
    its shape alone."""
    write_dataset(tmp_path)

    def bomb(f: h5py.File) -> None:
        del f["steps/reward"]
        f.create_dataset("steps/reward", shape=(10**10,), dtype="f8", chunks=(1 << 16,), compression="gzip")

    rewrite_shard(tmp_path, lambda a: None, create=bomb)
    read = h5py.Dataset.__getitem__

    def no_big_reads(self, key):
        assert self.size < 10**6, f"read {self.name} of {self.shape}"
        return read(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", no_big_reads)
    assert_refused(tmp_path, "steps/reward of shape (10000000000,) would expand beyond")


def test_unknown_step_fields_are_shape_checked_but_never_read(tmp_path: Path, monkeypatch) -> None:
    write_dataset(tmp_path)
    rewrite_shard(tmp_path, lambda a: a.update({"steps/extra": np.full(15, np.nan)}), name="shard-00000.h5")
    rewrite_shard(tmp_path, lambda a: a.update({"steps/extra": np.full(9, np.nan)}))
    read = h5py.Dataset.__getitem__
    reads: list[str] = []

    def spy(self, key):
        reads.append(self.name)
        return read(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    with HistoryStore(tmp_path) as s:  # NaN in an unknown field is not judged
        assert "extra" in s.fields
    assert "/steps/extra" not in reads and "/steps/reward" in reads
    monkeypatch.undo()
    assert verify(tmp_path) == []  # verify reads it for the content checksum only
    rewrite_shard(tmp_path, lambda a: a.update({"steps/extra": np.zeros(8)}))
    assert_refused(tmp_path, "steps/extra has 8 rows")


def test_a_shard_of_another_plan_is_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["plan_sha256"] = "cd" * 32
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(tmp_path)
    assert len(problems) == 2 and all("another collection plan" in p for p in problems)


def test_old_dataset_without_spec(tmp_path: Path) -> None:
    """No spec in the manifest: rebuilt from a registered env id, else the spec checks are skipped."""
    write_dataset(tmp_path / "dark")
    rewrite_shard(tmp_path / "dark", _set("steps/action", 7, 5),
                  manifest_edit=lambda m: m.pop("spec"))
    assert any("steps/action of history 2" in p for p in verify(tmp_path / "dark"))
    rewrite_shard(tmp_path / "dark", lambda a: None, manifest_edit=lambda m: m.update(env_id="nope/Unknown-v0"))
    assert verify(tmp_path / "dark") == []  # no spec to check action 5 against
    rewrite_shard(tmp_path / "dark", _set("steps/reward", 0, np.nan))
    assert any("steps/reward of history 0" in p for p in verify(tmp_path / "dark"))


# ----------------------------------------------------------------------------- manifest names
BAD_NAMES = {
    "parent folder": lambda m: m["shards"][0].update(file="../x"),
    "absolute path": lambda m: m["shards"][0].update(file="/etc/passwd"),
    "shard in a sub folder": lambda m: m["shards"][0].update(file="sub/shard-00000.h5"),
    "traversal after a shard name": lambda m: m["shards"][0].update(file="shard-00000.h5/../../x"),
    "not a shard name": lambda m: m["shards"][0].update(file="manifest.json"),
    "duplicate shard": lambda m: m["shards"].append(dict(m["shards"][0])),
    "derived traversal": lambda m: m["derived"].append({"name": "..", "file": "../lhf.h5", "sha256": "0" * 64}),
    "derived absolute": lambda m: m["derived"].append({"name": "x", "file": "/etc/passwd", "sha256": "0" * 64}),
    "derived named as a shard": lambda m: m["derived"].append(
        {"name": "shard-00000", "file": "shard-00000.h5", "sha256": "0" * 64}),
    "negative count": lambda m: m["shards"][0].update(n_steps=-1),
    "bool count": lambda m: m["shards"][0].update(n_histories=True),
    "huge count": lambda m: m.update(n_steps=2**70),
}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_bad_manifest_entries_are_refused_before_any_file_is_opened(tmp_path: Path, monkeypatch,
                                                                    case: str) -> None:
    write_dataset(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    BAD_NAMES[case](manifest)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    problems = manifest_problems(manifest)
    assert problems and all(p.startswith("manifest.json: ") and "\n" not in p for p in problems)

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a file was opened or hashed: {args}")

    monkeypatch.setattr(h5py, "File", forbidden)
    monkeypatch.setattr(integrity, "file_sha256", forbidden)
    monkeypatch.setattr(store, "file_sha256", forbidden)
    assert verify(tmp_path) == problems
    with pytest.raises(ValueError, match="manifest.json"):
        HistoryStore(tmp_path)


def test_duplicate_names_are_one_message_each() -> None:
    shard = {"file": "shard-00000.h5", "n_histories": 1, "n_steps": 1, "sha256": "0" * 64}
    manifest = {"n_histories": 2, "n_steps": 2, "shards": [shard, dict(shard)],
                "derived": [{"name": "shard-00000", "file": "shard-00000.h5", "sha256": "0" * 64}]}
    problems = manifest_problems(manifest)
    assert problems[0] == "manifest.json: shard-00000.h5 is listed more than once"
    assert len(problems) == 2 and "derived file 'shard-00000.h5'" in problems[1]
