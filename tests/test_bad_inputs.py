"""Every bad input is a one-line error with a non-zero exit and nothing written or changed.

The table ``CASES`` (docs/reliability.md#the-bad-input-suite lists it) runs each case against a
fresh copy of a small world (a dataset, a trained run, config files, user modules): the command's
exit status, a single stderr line with no traceback that says what is wrong, and every file of
the world byte-for-byte as before. Garbage configs never raise a traceback (property tests); a full
disk, a read-only folder and the space contract have tests of their own below.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icrl.cli import main
from icrl.config import ConfigError, load_config
from icrl.integrity import complete_shards, verify

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16"]
BANDIT = ["env.kwargs.n_arms=3", "env.kwargs.horizon=10"]
STREAM = [*BANDIT, "data.source=stream", "collect.algorithms=dpt_random", *TINY]


def _one_line_error(capsys, code, needle, expected=2):
    err = capsys.readouterr().err.strip()
    assert code == expected, err
    assert err.count("\n") == 0 and needle in err and "Traceback" not in err, err


# ---------------------------------------------------------------- the table

@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return build_world(tmp_path_factory.mktemp("world"))


def build_world(w: Path) -> Path:
    """What the cases spoil (each on its own copy): ``data/`` (a bandit dataset of two shards),
    ``run/`` (a DPT trained one step, its checkpoint with config and spec), ``mod/`` (user modules)."""
    assert main(["collect", "--quiet", "--out", str(w / "data"), *BANDIT, "collect.n_tasks=4",
                 "collect.histories_per_shard=2", "collect.algorithms=thompson"]) == 0
    assert main(["train", "--quiet", "--out", str(w / "run"), *STREAM, "train.steps=1"]) == 0
    (w / "mod").mkdir()
    modules = {"raises.py": "raise RuntimeError('the family is broken')\n",
               "syntax.py": "def broken(:\n",
               "exits.py": "import sys\nsys.exit(0)\n",
               "registers_nothing.py": "X = 1\n"}
    for name, text in modules.items():
        (w / "mod" / name).write_text(text)
    return w


def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> sha256 of its bytes ("dir" for a folder): what a failed command
    must leave as it was."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@dataclass
class Case:
    id: str
    argv: list[str]  # "{w}" stands for the world's copy
    needle: str  # what the one line must say
    setup: Callable[[Path], None] | None = None  # spoils the copy before the command runs
    code: int = 2


def _write(rel: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        path = w / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def _json_edit(rel: str, edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        data = json.loads((w / rel).read_text())
        edit(data)  # in place
        (w / rel).write_text(json.dumps(data))
    return setup


def _model_json(**changes) -> Callable[[Path], None]:
    return _json_edit("run/checkpoint/model.json", lambda d: d.update(changes))


def _nan_weights(w: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = w / "run/checkpoint/model.safetensors"
    state = load_file(str(path))
    key = sorted(state)[0]
    state[key] = torch_full_like(state[key], float("nan"))
    save_file(state, str(path))


def torch_full_like(t, value):
    import torch

    return torch.full_like(t, value)


def _corrupt_optimizer(w: Path) -> None:
    (w / "run/checkpoint/optimizer.pt").write_bytes(b"PK\x03\x04 not a zip")


def _shard(edit: Callable[[dict], None], create: Callable | None = None,
           manifest_edit: Callable[[dict], None] | None = None) -> Callable[[Path], None]:
    """Rewrite ``data/shard-00001.h5`` with ``edit`` applied to its arrays, its checksums made to
    match again: only the rule under test is broken."""
    from test_validation import rewrite_shard

    return lambda w: rewrite_shard(w / "data", edit, create=create, manifest_edit=manifest_edit)


def _set(key: str, row: int, value) -> Callable[[dict], None]:
    def edit(a: dict) -> None:
        a[key] = a[key].copy()
        a[key][row] = value
    return edit


def _seven_at_3(key: str) -> Callable[[dict], None]:  # a 0/1 flag that is 7 at step 3 of history 0
    return lambda a: a.update({key: np.where(np.arange(len(a[key])) == 3, 7, a[key]).astype(np.int64)})


def _wrapping_lengths(a: dict) -> None:  # 2 histories of 10 steps; these sum to 20 (mod 2**64)
    a["histories/length"] = np.array([2**62, 2**62, 2**62, 2**62 + 20], np.int64)
    a["histories/offset"] = np.cumsum(a["histories/length"]) - a["histories/length"]
    for k in ("task", "run", "source"):
        a[f"histories/{k}"] = np.zeros(4, np.int64)
    a["histories/task_params"] = a["histories/task_params"][[0, 0, 0, 0]]
    a["histories/return_offsets"] = np.zeros(5, np.int64)
    a["histories/return_values"] = np.zeros(0)


def _bomb(f) -> None:
    del f["steps/reward"]
    f.create_dataset("steps/reward", shape=(10**10,), dtype="f8", chunks=(1 << 16,), compression="gzip")


def _manifest(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    return _json_edit("data/manifest.json", edit)


def _flip_byte(w: Path) -> None:
    path = w / "data/shard-00001.h5"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _flip_data_byte(w: Path) -> None:
    """A flipped byte inside the data that training reads (the middle of steps/reward); one where
    no reader looks is left to ``icrl verify``."""
    path = w / "data/shard-00001.h5"
    with h5py.File(path, "r") as f:
        chunk = f["steps/reward"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset + chunk.size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


TRAIN = ["train", "--out", "{w}/new", *STREAM, "train.steps=1"]
RESUME = ["train", "--out", "{w}/run", *STREAM, "train.steps=3", "--resume"]
EVAL = ["eval", "--checkpoint", "{w}/run/checkpoint", "--out", "{w}/ev", "eval.n_tasks=2"]
AD_TRAIN = ["train", "--out", "{w}/new", *BANDIT, "data.dataset={w}/data", "model.kind=ad", *TINY, "train.steps=1"]
COLLECT = ["collect", "--out", "{w}/new", *BANDIT, "collect.n_tasks=2"]
CFG = ["collect", "--out", "{w}/new", "--config", "{w}/c.yaml"]
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

CASES = [
    # configs: overrides
    Case("unknown key", [*COLLECT, "colect.n_tasks=3"], "did you mean collect"),
    Case("unknown nested key", [*COLLECT, "collect.n_task=3"], "collect.n_task"),
    Case("int given a word", [*COLLECT, "collect.n_tasks=many"], "collect.n_tasks"),
    Case("int given a fraction", [*COLLECT, "collect.n_tasks=1.5"], "collect.n_tasks"),
    Case("below the minimum", [*COLLECT, "collect.n_tasks=0"], "collect.n_tasks"),
    Case("not one of the choices", [*COLLECT, "model.kind=gpt"], "model.kind"),
    Case("bool given garbage", [*COLLECT, "wandb.enabled=maybe"], "wandb.enabled"),
    Case("list that does not parse", [*COLLECT, "collect.algorithms=[ucb"], "collect.algorithms"),
    Case("override without =", [*COLLECT, "=3"], "key.sub=value"),
    Case("unknown env", [*COLLECT, "env.id=icrl/DarkRom-v0"], "did you mean icrl/DarkRoom-v0"),
    Case("a gymnasium env that is no family", [*COLLECT, "env.id=FrozenLake-v1"], "docs/extending.md"),
    Case("unknown env kwarg", [*COLLECT, "env.kwargs.n_armz=3"], "env.kwargs.n_armz"),
    Case("env kwarg of the wrong type", [*COLLECT, "env.kwargs.n_arms=three"], "env.kwargs.n_arms"),
    Case("env kwarg out of range", [*COLLECT, "env.kwargs.n_arms=0"], "n_arms"),
    Case("eval env kwarg unknown", [*COLLECT, "eval.env_kwargs.nope=1"], "eval.env_kwargs.nope"),
    Case("width not a multiple of heads", [*COLLECT, "model.n_embd=30", "model.n_head=4"], "model.n_embd"),
    Case("unknown algorithm", [*COLLECT, "collect.algorithms=ucbb"], "collect.algorithms.0"),
    Case("algorithm that does not fit the env", [*COLLECT, "collect.algorithms=linucb"], "does not fit"),
    Case("fractions of another length", [*COLLECT, "collect.algorithms=ucb,random", "collect.fractions=[1]"],
         "collect.fractions"),
    Case("negative fraction", [*COLLECT, "collect.fractions=[-1]"], "collect.fractions"),
    Case("seeds repeated", [*COLLECT, "seeds=[1,1]"], "seeds"),
    Case("unknown baseline", [*COLLECT, "eval.baselines=[oracel]"], "eval.baselines.0"),
    Case("unknown eval env", [*COLLECT, "eval.env_id=icrl/Nope-v0"], "eval.env_id"),
    Case("categorical head on Box actions", [*COLLECT, "env.id=icrl/PointRobot-v0", "env.kwargs={}",
                                             "collect.algorithms=random", "model.head=categorical"], "model.head"),
    Case("a key of 10,000 characters", [*COLLECT, "x" * 10_000 + "=1"], "unknown key"),
    Case("a value of 10,000 characters", [*COLLECT, "collect.n_tasks=" + "9" * 10_000], "collect.n_tasks"),
    # configs: files
    Case("config file missing", [*CFG[:-1], "{w}/missing.yaml"], "--config"),
    Case("config is a folder", [*CFG[:-1], "{w}/data"], "--config"),
    Case("config is binary", CFG, "not UTF-8", _write("c.yaml", bytes(range(256)))),
    Case("config is a list", CFG, "not a mapping", _write("c.yaml", "- a\n- b\n")),
    Case("config is a credentials file", CFG, "not a mapping", _write("c.yaml", "AKIASECRETKEY123:hunter2\n")),
    Case("config does not parse", CFG, "--config", _write("c.yaml", "collect: {n_tasks: 3\n")),
    Case("config is an alias bomb", CFG, "--config", _write("c.yaml", BOMB)),
    Case("config names a missing base", CFG, "nowhere.yaml", _write("c.yaml", "base: nowhere.yaml\n")),
    Case("config is its own base", CFG, "its own base", _write("c.yaml", "base: c.yaml\n")),
    Case("config with an unknown section", CFG, "did you mean", _write("c.yaml", "colect: {n_tasks: 3}\n")),
    Case("config with a wrong type", CFG, "collect.n_tasks", _write("c.yaml", "collect: {n_tasks: [1, 2]}\n")),
    Case("config with an empty document", CFG, "not a mapping", _write("c.yaml", "0\n")),
    # user modules
    Case("module that raises", [*COLLECT, "env.module=raises"], "RuntimeError"),
    Case("module with a syntax error", [*COLLECT, "env.module=syntax"], "SyntaxError"),
    Case("module that calls sys.exit(0)", [*COLLECT, "env.module=exits"], "SystemExit"),
    Case("relative module name", [*COLLECT, "env.module=.raises"], "relative"),
    Case("module not found", [*COLLECT, "env.module=no_such_module"], "no_such_module"),
    Case("module that registers nothing", [*COLLECT, "env.module=registers_nothing", "env.id=my/Nope-v0"],
         "env.id"),
    # paths and run folders
    Case("--out is a file", ["collect", "--out", "{w}/run/metrics.jsonl", *BANDIT], "--out"),
    Case("--out under a file", ["collect", "--out", "{w}/run/metrics.jsonl/x", *BANDIT], "--out"),
    Case("train into a finished run", ["train", "--out", "{w}/run", *STREAM, "train.steps=1"], "--overwrite"),
    Case("run into a folder holding a run", ["run", "--out", "{w}/run", *STREAM, "train.steps=1"], "--resume"),
    Case("--resume and --overwrite together", [*RESUME, "--overwrite"], "choose one"),
    Case("--resume with nothing to resume", ["train", "--out", "{w}/data", *STREAM, "--resume"], "checkpoint"),
    Case("eval of a missing checkpoint", ["eval", "--checkpoint", "{w}/nothing", *BANDIT], "--checkpoint"),
    Case("eval of a file as checkpoint", ["eval", "--checkpoint", "{w}/run/metrics.jsonl", *BANDIT], "checkpoint"),
    Case("eval without config of an old checkpoint", EVAL, "--config",
         lambda w: (w / "run/checkpoint/config.json").unlink() or (w / "run/config.json").unlink()),
    Case("eval on another env", [*EVAL, "--config", "{w}/c.yaml"], "eval.env_id",
         _write("c.yaml", "env: {kwargs: {n_arms: 3, horizon: 10, sigma: 0.5}}\n")),
    Case("eval on other spaces on purpose", [*EVAL, "eval.env_id=icrl/PointRobot-v0", "collect.algorithms=random"],
         "the model was trained on obs"),
    Case("eval longer than the model's context", [*EVAL, "eval.env_kwargs.horizon=11"], "block_size"),
    Case("seeds without the run folder", ["eval", "--checkpoint", "{w}/run", *STREAM, "seeds=[0,1]"], "seed-0"),
    Case("filter without a dataset", ["filter", *BANDIT], "--data"),
    Case("filter of a missing folder", ["filter", "--data", "{w}/nothing", *BANDIT], "--data"),
    Case("train on a missing dataset", [*AD_TRAIN[:-1], "data.dataset={w}/nothing"], "data.dataset"),
    Case("train on an empty folder", [*AD_TRAIN[:-1], "data.dataset={w}/mod"], "data.dataset"),
    Case("train on data of another env", [*AD_TRAIN, "env.id=icrl/BernoulliBandit-v0"], "holds icrl/GaussianBandit-v0"),
    Case("train on data of other actions", [*AD_TRAIN, "env.kwargs.n_arms=5"], "data.dataset"),
    Case("train on data of another horizon", [*AD_TRAIN, "env.kwargs.horizon=12"], "10-step episodes"),
    Case("train window longer than the data", [*AD_TRAIN, "data.seq_len=11"], "data"),
    Case("episode stride beyond the histories", [*AD_TRAIN, "data.episode_stride=2"], "fewer than 2 episodes"),
    Case("episode stride on a stream", [*TRAIN, "data.episode_stride=2"], "data.episode_stride"),
    Case("model window longer than its training windows", [*TRAIN, "model.window=11"], "model.window"),
    Case("a training split of a family drawn from a prior", ["eval", *BANDIT, "eval.split=train"], "eval.split"),
    Case("a model too large to hold", [*TRAIN, "model.n_embd=65536", "model.n_head=2"], "ICRL_MAX_MODEL_BYTES"),
    # datasets: manifests, names, shards (each read by training, some by verify)
    Case("manifest that is not JSON", AD_TRAIN, "manifest.json", _write("data/manifest.json", "{")),
    Case("manifest that is empty", AD_TRAIN, "manifest.json", _write("data/manifest.json", "")),
    Case("manifest that is a list", AD_TRAIN, "manifest.json", _write("data/manifest.json", "[]")),
    Case("manifest of another schema", AD_TRAIN, "manifest.json", _manifest(lambda m: m.update(schema="x/v9"))),
    Case("manifest without shards", AD_TRAIN, "manifest.json", _manifest(lambda m: m.pop("shards"))),
    Case("shard named ../x", AD_TRAIN, "../x", _manifest(lambda m: m["shards"][1].update(file="../x/shard-00001.h5"))),
    Case("shard named /etc/passwd", AD_TRAIN, "/etc/passwd", _manifest(lambda m: m["shards"][1].update(file="/etc/passwd"))),
    Case("shard listed twice", AD_TRAIN, "more than once", _manifest(lambda m: m["shards"].append(m["shards"][0]))),
    Case("derived file outside the folder", AD_TRAIN, "../lhf.h5",
         _manifest(lambda m: m["derived"].append({"name": "lhf", "file": "../lhf.h5", "sha256": "0" * 64}))),
    Case("count that is a bool", AD_TRAIN, "manifest.json", _manifest(lambda m: m["shards"][0].update(n_histories=True))),
    Case("count of 2**70 steps", AD_TRAIN, "manifest.json", _manifest(lambda m: m.update(n_steps=2**70))),
    Case("shard listed but missing", AD_TRAIN, "shard-00001.h5", lambda w: (w / "data/shard-00001.h5").unlink()),
    Case("shard truncated", AD_TRAIN, "shard-00001.h5",
         lambda w: (w / "data/shard-00001.h5").write_bytes((w / "data/shard-00001.h5").read_bytes()[:-200])),
    Case("shard with a flipped byte", AD_TRAIN, "shard-00001.h5", _flip_data_byte),
    Case("manifest spec that is garbage", AD_TRAIN, "spec", _manifest(lambda m: m.update(spec={"env_id": 3}))),
    Case("obs of the wrong shape", AD_TRAIN, "steps/obs",
         _shard(lambda a: a.update({"steps/obs": np.zeros((len(a["steps/obs"]), 2), np.int64)}))),
    Case("rewards of a compound dtype", AD_TRAIN, "steps/reward", _shard(lambda a: a.update(
        {"steps/reward": np.array([(x, x) for x in a["steps/reward"]], dtype=[("a", "f8"), ("b", "f8")])}))),
    Case("fractional actions", AD_TRAIN, "needs integers",
         _shard(lambda a: a.update({"steps/action": a["steps/action"] + 0.5}))),
    Case("action outside the space", AD_TRAIN, "steps/action of history 1", _shard(_set("steps/action", 12, 7))),
    Case("terminated = 7", AD_TRAIN, "other than 0 or 1", _shard(_seven_at_3("steps/terminated"))),
    Case("NaN reward", AD_TRAIN, "steps/reward of history 0 (step 5) is not finite",
         _shard(_set("steps/reward", 5, np.nan))),
    Case("infinite reward", AD_TRAIN, "is not finite", _shard(_set("steps/reward", 15, np.inf))),
    Case("lengths that wrap int64", AD_TRAIN, "has length 4611686018427387904", _shard(
        _wrapping_lengths, manifest_edit=lambda m: (m["shards"][1].update(n_histories=4), m.update(n_histories=6)))),
    Case("offsets out of step", AD_TRAIN, "histories/offset",
         _shard(lambda a: a.update({"histories/offset": np.array([0, 3])}))),
    Case("source outside the sources", AD_TRAIN, "histories/source", _shard(_set("histories/source", 1, 5))),
    Case("a decompression bomb", AD_TRAIN, "would expand beyond", _shard(lambda a: None, create=_bomb)),
    Case("counts that disagree with the manifest", AD_TRAIN, "manifest.json says",
         _manifest(lambda m: (m["shards"][1].update(n_steps=19), m.update(n_steps=39)))),
    Case("verify: shard named ../x", ["verify", "{w}/data"], "../x",
         _manifest(lambda m: m["shards"][1].update(file="../x/shard-00001.h5")), code=1),
    Case("verify: NaN reward", ["verify", "{w}/data"], "is not finite", _shard(_set("steps/reward", 5, np.nan)), code=1),
    Case("verify: terminated = 7", ["verify", "{w}/data"], "other than 0 or 1",
         _shard(_seven_at_3("steps/terminated")), code=1),
    Case("verify: flipped byte", ["verify", "{w}/data"], "shard-00001.h5", _flip_byte, code=1),
    Case("verify: missing folder", ["verify", "{w}/nothing"], "does not exist", code=1),
    Case("filter of a dataset with a NaN reward", ["filter", "--data", "{w}/data", *BANDIT], "is not finite",
         _shard(_set("steps/reward", 5, np.nan))),
    Case("collect onto shards of another plan", ["collect", "--out", "{w}/data", *BANDIT, "collect.n_tasks=4",
                                                "collect.histories_per_shard=2", "collect.algorithms=thompson",
                                                "seed=1"], "--out"),
    # checkpoints
    Case("model.json with a fractional depth", EVAL, "n_layer", _model_json(n_layer=1.5)),
    Case("model.json with a boolean width", EVAL, "n_embd", _model_json(n_embd=True)),
    Case("model.json of 10**9 width", EVAL, "ICRL_MAX_MODEL_BYTES", _model_json(n_embd=10**9)),
    Case("model.json of a 10**12 block", EVAL, "ICRL_MAX_MODEL_BYTES", _model_json(block_size=10**12)),
    Case("model.json of an unknown kind", EVAL, "kind", _model_json(kind="gpt")),
    Case("model.json with an unknown key", EVAL, "unknown ModelConfig keys", _model_json(evil=1)),
    Case("model.json with a Dict space", EVAL, "obs_space", _model_json(obs_space={"type": "Dict"})),
    Case("model.json that is a list", EVAL, "model.json", _write("run/checkpoint/model.json", "[1, 2]")),
    Case("model.json that is not JSON", EVAL, "model.json", _write("run/checkpoint/model.json", "{nope")),
    Case("model.json missing", EVAL, "model.json", lambda w: (w / "run/checkpoint/model.json").unlink()),
    Case("weights missing", EVAL, "model.safetensors", lambda w: (w / "run/checkpoint/model.safetensors").unlink()),
    Case("weights that are garbage", EVAL, "model.safetensors", _write("run/checkpoint/model.safetensors", b"garbage")),
    Case("weights of another architecture", EVAL, "another architecture", _model_json(n_layer=2)),
    Case("weights that are NaN", EVAL, "NaN", _nan_weights),
    Case("spec.json that is not JSON", EVAL, "spec.json", _write("run/checkpoint/spec.json", "{")),
    Case("config.json that is a list", EVAL, "config.json", _write("run/checkpoint/config.json", "[]")),
    Case("trainer.json missing on resume", RESUME, "trainer.json",
         lambda w: (w / "run/checkpoint/trainer.json").unlink()),
    Case("trainer.json that is not JSON", RESUME, "trainer.json", _write("run/checkpoint/trainer.json", "{")),
    Case("trainer.json with a negative step", RESUME, "step",
         _json_edit("run/checkpoint/trainer.json", lambda d: d.update(step=-4))),
    Case("trainer.json with a bad rng state", RESUME, "trainer.json",
         _json_edit("run/checkpoint/trainer.json", lambda d: d.update(torch_rng=[[1, 2, 3]]))),
    Case("optimizer.pt that is garbage", RESUME, "optimizer.pt", _corrupt_optimizer),
    Case("optimizer.pt missing", RESUME, "optimizer.pt", lambda w: (w / "run/checkpoint/optimizer.pt").unlink()),
]


def run_case(case: Case, world: Path, w: Path) -> tuple[int, str, dict, dict]:
    """Run ``case`` on a fresh copy ``w`` of ``world``: (exit status, stderr, tree before, after)."""
    import contextlib
    import io

    shutil.copytree(world, w)
    if case.setup is not None:
        case.setup(w)
    cwd, path = os.getcwd(), list(sys.path)
    sys.path.insert(0, str(w / "mod"))
    os.chdir(w)  # a relative `base:` resolves next to the config
    before, err = _tree(w), io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = main([a.replace("{w}", str(w)) for a in case.argv])
    finally:
        os.chdir(cwd)
        sys.path[:] = path
    return code, err.getvalue().strip(), before, _tree(w)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, world, tmp_path):
    code, err, before, after = run_case(case, world, tmp_path / "w")
    assert code == case.code, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert case.needle in err, err
    assert len(err) < 600, err  # quotes are bounded
    assert after == before, "a failed command changed the world"


keys = st.sampled_from(["seed", "name", "collect.n_tasks", "collect.algorithms", "collect.fractions", "env.id",
                        "env.kwargs.sigma", "env.kwargs.n_arms", "model.kind", "model.n_embd", "train.lr",
                        "eval.env_kwargs.horizon", "wandb.mode", "data.source", "nope", "collect", "a.b.c"])
values = st.one_of(st.text(max_size=12), st.integers(-5, 10**6).map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["true", "[1, 2", "{a: 1}", "ucb,thompson", "", "null", "-1e309"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(keys, values), max_size=4))
def test_garbage_overrides_never_raise_a_traceback(pairs):
    try:
        load_config(None, [f"{k}={v}" for k, v in pairs])
    except ConfigError as e:
        assert "\n" not in str(e)


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=8), c, max_size=3)),
                    max_leaves=8))
def test_garbage_yaml_documents_never_raise_a_traceback(tmp_path_factory, doc):
    import yaml

    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump({"collect": doc, "env": doc} if isinstance(doc, dict) else doc))
    try:
        load_config(path)
    except ConfigError as e:
        assert "\n" not in str(e)


def test_nan_loss_stops_training_naming_step_and_checkpoint(tmp_path, capsys):
    code = main(["train", "--quiet", "--out", str(tmp_path), "env.kwargs.n_arms=3", "env.kwargs.horizon=10",
                 "data.source=stream", "collect.algorithms=dpt_random", *TINY, "train.steps=200", "train.lr=1e30",
                 "train.warmup_steps=0", "train.grad_clip=0", "train.checkpoint_every=1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0
    assert "at step" in err and "last good checkpoint is step" in err


# ---------------------------------------------------------------- the space contract


def _family(env_id: str, obs_sp, act_sp, nan_at: int | None = None):
    """Register a tiny user family with the given spaces; its env returns NaN observations from
    step ``nan_at`` of every episode on. Returns the id (unregistered by the fixture)."""
    import gymnasium
    import numpy as np
    from gymnasium.vector import AutoresetMode, VectorEnv
    from gymnasium.vector.utils import batch_space

    from icrl import envs

    class Tasks(envs.TaskDistribution):
        task_shape = (1,)
        observation_space, action_space, horizon = obs_sp, act_sp, 5

        def sample(self, n, rng):
            return rng.uniform(-1, 1, (n, 1))

    class Env(gymnasium.Env):
        def __init__(self):
            self.observation_space, self.action_space, self.horizon = obs_sp, act_sp, 5

    class Vec(VectorEnv):
        metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

        def __init__(self, num_envs=1):
            self.num_envs = num_envs
            self.single_observation_space, self.single_action_space = obs_sp, act_sp
            self.observation_space = batch_space(obs_sp, num_envs)
            self.action_space = batch_space(act_sp, num_envs)

        def reset(self, *, seed=None, options=None):
            self.t = np.zeros(self.num_envs, np.int64)
            return np.zeros((self.num_envs, 1), np.float32), {}

        def step(self, actions):
            self.t += 1
            obs = np.full((self.num_envs, 1), np.nan if nan_at is not None and self.t[0] >= nan_at else 0.0, np.float32)
            trunc = self.t >= 5
            self.t[trunc] = 0
            info = {"final_obs": np.array([o for o in obs] + [None])[:-1], "_final_obs": trunc} if trunc.any() else {}
            return obs, np.zeros(self.num_envs), np.zeros(self.num_envs, bool), trunc, info

    envs.register_family(env_id, Env, Vec, Tasks)
    return env_id


@pytest.fixture
def user_families():
    import gymnasium

    from icrl.envs import tasks as registry

    ids = []
    yield ids
    for env_id in ids:
        registry._FAMILIES.pop(env_id, None)
        gymnasium.registry.pop(env_id, None)


def test_spaces_outside_the_contract_are_one_line_errors_with_nothing_written(tmp_path, capsys, user_families):
    import numpy as np
    from gymnasium import spaces

    box = spaces.Box(-1.0, 1.0, (1,), np.float32)
    cases = [
        (spaces.Dict({"pos": box}), box, "observation space Dict"),
        (box, spaces.Box(-np.inf, np.inf, (1,), np.float32), "unbounded"),
        (box, spaces.MultiBinary(2), "action space MultiBinary"),
    ]
    for i, (obs_space, action_space, needle) in enumerate(cases):
        env_id = _family(f"bad/Space{i}-v0", obs_space, action_space)
        user_families.append(env_id)
        for cmd in (["collect", "--out", str(tmp_path / f"d{i}")], ["run", "--out", str(tmp_path / f"r{i}")]):
            _one_line_error(capsys, main([*cmd, f"env.id={env_id}", "collect.algorithms=random"]), needle)
    assert not list(tmp_path.iterdir())


def test_nan_observation_of_a_user_env_names_step_and_task_and_writes_nothing(tmp_path, capsys, user_families):
    import numpy as np
    from gymnasium import spaces

    box = spaces.Box(-1.0, 1.0, (1,), np.float32)
    user_families.append(_family("bad/NanObs-v0", box, box, nan_at=3))
    out = tmp_path / "data"
    _one_line_error(capsys, main(["collect", "--quiet", "--out", str(out), "env.id=bad/NanObs-v0",
                                  "collect.algorithms=random", "collect.n_tasks=4"]),
                    "bad/NanObs-v0 returned a non-finite observation at step 2 of task 0")
    assert not out.exists()


def test_a_discrete_models_checkpoint_on_a_box_env_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["env.kwargs.n_arms=3", "env.kwargs.horizon=10", "data.source=stream", "collect.algorithms=dpt_random", *TINY]
    assert main(["train", "--quiet", "--out", str(run), *common, "train.steps=1"]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in run.iterdir())
    _one_line_error(capsys, main(["eval", "--checkpoint", str(run / "checkpoint"), "eval.env_id=icrl/PointRobot-v0",
                                  "collect.algorithms=random", *TINY]), "the model was trained on obs Discrete(1) and actions Discrete(3)")
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_dataset_collected_in_other_spaces_is_refused_before_training(tmp_path, capsys):
    data = tmp_path / "data"
    common = ["env.id=icrl/PointRobot-v0", "collect.algorithms=[random]", "collect.n_tasks=2", "collect.episodes=2"]
    assert main(["collect", "--quiet", "--out", str(data), *common]) == 0
    capsys.readouterr()
    # the point robot's observation box grows with the horizon: a model of horizon 50 would see other inputs
    _one_line_error(capsys, main(["train", "--out", str(tmp_path / "run"), *common, f"data.dataset={data}",
                                  "env.kwargs.horizon=50", "model.kind=ad", *TINY]),
                    "was collected with obs Box(-3.0, 3.0, (2,), float32)")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- real storage faults

def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {(done.stderr or 'not permitted').strip()[:80]}")


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB filesystem (a tmpfs), for a real ENOSPC; skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=2m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _icrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "icrl.cli", *args], capture_output=True, text=True, timeout=300)


def test_a_real_full_disk_during_collection_is_one_line_and_the_rerun_is_byte_identical(small_disk, tmp_path):
    args = [*BANDIT[:1], "env.kwargs.horizon=100", "collect.n_tasks=400", "collect.histories_per_shard=50", "--quiet"]
    done = _icrl("collect", "--out", str(small_disk / "data"), *args)
    err = done.stderr.strip()
    assert done.returncode == 2 and err.count("\n") == 0 and "disk full" in err, err  # no segfault (139)
    kept = complete_shards(small_disk / "data")
    assert 0 < len(kept) < 8 and not list((small_disk / "data").glob("*.tmp-*"))
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert _icrl("collect", "--out", str(small_disk / "data"), *args).returncode == 0
    assert _icrl("collect", "--out", str(tmp_path / "ref"), *args).returncode == 0
    for shard in sorted((tmp_path / "ref").glob("shard-*.h5")):
        assert (small_disk / "data" / shard.name).read_bytes() == shard.read_bytes()
    assert verify(small_disk / "data") == []


def test_a_real_full_disk_during_training_keeps_the_last_checkpoint(small_disk):
    run = small_disk / "run"  # one checkpoint (~1.2 MB of weights and AdamW state) fits, two at once do not
    done = _icrl("train", "--quiet", "--out", str(run), *BANDIT, "data.source=stream", "collect.algorithms=dpt_random",
                 "model.n_layer=2", "model.n_head=2", "model.n_embd=64", "train.steps=4", "train.checkpoint_every=2",
                 "train.batch_size=2")
    err = done.stderr.strip()
    assert done.returncode == 2 and err.count("\n") == 0 and "disk full" in err, err
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] == 2
    assert not (run / "checkpoint.tmp").exists() and not (run / "checkpoint.old").exists()
    from icrl.checkpoint import load_model

    load_model(run / "checkpoint")  # whole and loadable


def test_a_read_only_folder_is_one_line_for_every_command(tmp_path, capsys):
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, "size=8m")
    try:
        assert main(["collect", "--quiet", "--out", str(disk / "data"), *BANDIT, "collect.n_tasks=4"]) == 0
        assert main(["train", "--quiet", "--out", str(disk / "run"), *STREAM, "train.steps=2",
                     "train.checkpoint_every=1"]) == 0
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        capsys.readouterr()
        before = _tree(disk)
        commands = [["collect", "--out", str(disk / "data2"), *BANDIT, "collect.n_tasks=4"],
                    ["collect", "--out", str(disk / "data"), *BANDIT, "collect.n_tasks=4"],
                    ["filter", "--data", str(disk / "data"), *BANDIT],
                    ["train", "--out", str(disk / "run2"), *STREAM, "train.steps=2"],
                    ["train", "--out", str(disk / "run"), *STREAM, "train.steps=4", "--resume"],
                    ["eval", "--checkpoint", str(disk / "run" / "checkpoint"), "eval.n_tasks=2"],
                    ["run", "--out", str(disk / "run3"), *STREAM, "train.steps=2"]]
        for argv in commands:
            code = main(argv)
            err = capsys.readouterr().err.strip()
            assert code == 2 and err.count("\n") == 0 and "Read-only file system" in err, (argv[0], err)
        assert _tree(disk) == before
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
