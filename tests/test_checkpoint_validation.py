"""A checkpoint is checked before it is used: a bad ``model.json`` (types, sizes, spaces, memory),
damaged or non-finite weights, a bad ``trainer.json`` or ``optimizer.pt`` are each one line with
exit code 2 naming the file and the field; a failed write is an ``OSError`` with errno and path
that leaves the previous checkpoint intact and no ``checkpoint.tmp``."""
import errno
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from icrl import checkpoint as ckpt_mod
from icrl.checkpoint import CheckpointError, check_training_state, load_model, load_training_state, save_checkpoint
from icrl.cli import main
from icrl.config import load_config

COMMON = ["env.kwargs.n_arms=3", "env.kwargs.horizon=10", "data.source=stream", "collect.algorithms=dpt_random",
          "model.n_layer=1", "model.n_head=2", "model.n_embd=16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder with a checkpoint after 2 steps (so the optimizer has state)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--quiet", "--out", str(run), *COMMON, "train.steps=2"]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    capsys.readouterr()
    return copy


def _one_line_error(capsys, code, needle):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert needle in err, err
    return err


def _edit_json(path, **fields):
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def _eval(run):
    return main(["eval", "--quiet", "--checkpoint", str(run / "checkpoint"), *COMMON, "eval.n_tasks=2"])


def _resume(run):
    return main(["train", "--quiet", "--out", str(run), *COMMON, "train.steps=3", "--resume"])


DISCRETE_3 = {"type": "Discrete", "n": 3, "start": 0}
MODEL_JSON_CASES = [
    ({"n_layer": 1.5}, "model.json: not a valid model config: ModelConfig.n_layer must be an integer, got 1.5"),
    ({"n_layer": True}, "ModelConfig.n_layer must be an integer, got True"),
    ({"n_head": 0}, "ModelConfig.n_head must be an integer in [1, 2**53], got 0"),
    ({"n_embd": "16"}, "ModelConfig.n_embd must be an integer, got '16'"),
    ({"n_embd": 15}, "ModelConfig.n_embd (15) must be a multiple of n_head (2)"),
    ({"block_size": -3}, "ModelConfig.block_size must be an integer in [1"),
    ({"window": 0.5}, "ModelConfig.window must be an integer"),
    ({"dropout": "x"}, "ModelConfig.dropout must be a number"),
    ({"rope": 1}, "ModelConfig.rope must be true or false"),
    ({"kind": "gpt"}, "ModelConfig.kind must be one of ['ad', 'dpt'], got 'gpt'"),
    ({"obs_space": {"type": "Discrete", "n": 0, "start": 0}}, "ModelConfig.obs_space: Discrete n must be an integer in [1"),
    ({"obs_space": {"type": "Discrete", "n": 2.5, "start": 0}}, "ModelConfig.obs_space: Discrete n must be an integer"),
    ({"obs_space": {"type": "MultiDiscrete", "nvec": [3, False]}}, "ModelConfig.obs_space: MultiDiscrete nvec must be an integer"),
    ({"action_space": {"type": "Dict"}}, "ModelConfig.action_space: unknown space type"),
    ({"action_space": [3]}, "ModelConfig.action_space: expected a space mapping"),
    ({"action_space": {"type": "Box", "shape": [1], "low": [0.0], "high": [float("inf")], "dtype": "float32"}},
     "ModelConfig.action_space:"),
    ({"x" * 5000: 1}, "unknown ModelConfig keys"),
    # sizes that pass the type checks but would allocate far more than the bound
    ({"action_space": {**DISCRETE_3, "n": 10**12}}, "most of it is parameters (n_layer, n_embd, obs_space, action_space)"),
    ({"n_embd": 2**20, "n_head": 2}, "most of it is parameters"),
    ({"block_size": 10**7}, "most of it is attention (n_head, block_size)"),
]


@pytest.mark.parametrize("fields, needle", MODEL_JSON_CASES, ids=[str(i) for i in range(len(MODEL_JSON_CASES))])
def test_bad_model_json_is_one_line_naming_file_and_field(run, capsys, fields, needle):
    _edit_json(run / "checkpoint/model.json", **fields)
    err = _one_line_error(capsys, _eval(run), needle)
    assert "model.json" in err and len(err) < 600


@pytest.mark.parametrize("content, needle", [
    (b"[1, 2]", "must be a mapping of fields"),
    (b"{\"kind\": ", "not a model config (Expecting value"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary", "not a model config (not UTF-8"),
    (b"[" * 100_000, "not a model config (nested too deeply)"),
    (b"{\"n_layer\": " + b"9" * 5000 + b"}", "not a model config"),
])
def test_model_json_that_is_not_a_config(run, capsys, content, needle):
    (run / "checkpoint/model.json").write_bytes(content)
    _one_line_error(capsys, _eval(run), needle)


def test_the_memory_bound_is_raised_by_environment_or_argument(run, capsys, monkeypatch):
    _edit_json(run / "checkpoint/model.json", block_size=3000)  # ~0.3 GiB of attention for one DPT pass
    with pytest.raises(CheckpointError, match="over the bound of 100 MiB"):
        load_model(run / "checkpoint", max_bytes=100 << 20)
    monkeypatch.setenv("ICRL_MAX_MODEL_BYTES", "1e6")
    _one_line_error(capsys, _eval(run), "raise ICRL_MAX_MODEL_BYTES")
    monkeypatch.setenv("ICRL_MAX_MODEL_BYTES", "lots")
    with pytest.raises(CheckpointError, match="ICRL_MAX_MODEL_BYTES: expected a positive number of bytes"):
        load_model(run / "checkpoint")
    monkeypatch.setenv("ICRL_MAX_MODEL_BYTES", "1e10")
    assert load_model(run / "checkpoint")[1].block_size == 3000  # no weight depends on block_size


def test_the_estimate_bounds_the_real_model():
    from icrl.methods import make_model
    from icrl.models.config import ModelConfig

    for kind in ("ad", "dpt"):
        cfg = ModelConfig(kind=kind, obs_space={"type": "MultiDiscrete", "nvec": [5, 7]}, action_space=DISCRETE_3,
                          n_layer=2, n_head=2, n_embd=16, block_size=8)
        model = make_model(cfg)
        real = 4 * sum(t.numel() for t in model.state_dict().values())
        assert real <= cfg.memory_terms()["parameters (n_layer, n_embd, obs_space, action_space)"] < 1.5 * real


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(run, capsys, value):
    path = run / "checkpoint/model.safetensors"
    state = load_file(str(path))
    name = sorted(state)[3]
    state[name].view(-1)[0] = value
    save_file(state, str(path))
    err = _one_line_error(capsys, _eval(run), f"tensor {name} holds NaN or inf")
    assert "model.safetensors" in err
    _one_line_error(capsys, _resume(run), f"tensor {name} holds NaN or inf")


def test_weights_of_another_dtype_or_truncated(run, capsys):
    path = run / "checkpoint/model.safetensors"
    state = load_file(str(path))
    save_file({k: v.double() for k, v in state.items()}, str(path))
    _one_line_error(capsys, _eval(run), "is torch.float64, the model needs torch.float32")
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    _one_line_error(capsys, _eval(run), "model.safetensors: corrupted or truncated")


RNG_SIZE = torch.get_rng_state().numel()
TRAINER_CASES = [
    ({"step": -1}, "trainer.json: step must be a non-negative integer, got -1"),
    ({"step": 1.5}, "step must be a non-negative integer, got 1.5"),
    ({"step": "2"}, "step must be a non-negative integer, got '2'"),
    ({"step": True}, "step must be a non-negative integer, got True"),
    ({"numpy_rng": {}}, "numpy_rng must be a non-empty list"),
    ({"numpy_rng": [{"bit_generator": "MT19937", "state": {}}]}, "numpy_rng.0 is not a PCG64 state"),
    ({"numpy_rng": [{"bit_generator": "PCG64", "state": {"state": -1, "inc": 1}, "has_uint32": 0, "uinteger": 0}]},
     "numpy_rng.0 is not a PCG64 state"),
    ({"numpy_rng": ["x"]}, "numpy_rng.0 is not a PCG64 state"),
    ({"torch_rng": [[0] * 10]}, f"torch_rng.0 is not a CPU torch RNG state ({RNG_SIZE} integers in 0..255)"),
    ({"torch_rng": [[300] * RNG_SIZE]}, "torch_rng.0 is not a CPU torch RNG state"),
    ({"torch_rng": [[0] * RNG_SIZE, [0] * RNG_SIZE]}, "1 numpy_rng states but 2 torch_rng states"),
]


@pytest.mark.parametrize("fields, needle", TRAINER_CASES, ids=[str(i) for i in range(len(TRAINER_CASES))])
def test_bad_trainer_json_is_one_line_on_resume(run, capsys, fields, needle):
    _edit_json(run / "checkpoint/trainer.json", **fields)
    _one_line_error(capsys, _resume(run), needle)


def test_trainer_json_that_is_not_a_state(run, capsys):
    path = run / "checkpoint/trainer.json"
    path.write_text("[]")
    _one_line_error(capsys, _resume(run), "trainer.json: not a trainer state (top level is not a mapping)")
    path.write_bytes(b"\xff\xfe\x00\x01")
    _one_line_error(capsys, _resume(run), "trainer.json: not a trainer state")
    path.unlink()
    _one_line_error(capsys, _resume(run), "trainer.json: missing")


class NotWeights:  # a pickle that weights_only loading refuses
    pass


@pytest.mark.parametrize("payload, needle", [
    (b"not a zip", "optimizer.pt: corrupted, truncated or not an optimizer state"),
    ({"obj": NotWeights()}, "optimizer.pt: corrupted, truncated or not an optimizer state (UnpicklingError)"),
    ({"state": {}}, "optimizer.pt: not an optimizer state (expected param_groups and state)"),
    ([1, 2], "optimizer.pt: not an optimizer state"),
])
def test_optimizer_pt_that_is_not_an_optimizer_state(run, capsys, payload, needle):
    path = run / "checkpoint/optimizer.pt"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    _one_line_error(capsys, _resume(run), needle)


def _optimizer_for(run):
    from icrl.training import make_optimizer

    model, _ = load_model(run / "checkpoint")
    return make_optimizer(model, load_config(None, COMMON), torch.device("cpu"))


def _mutated(optim, edit):
    optim = {"state": {k: dict(v) for k, v in optim["state"].items()},
             "param_groups": [dict(g, params=list(g["params"])) for g in optim["param_groups"]]}
    edit(optim)
    return optim


@pytest.mark.parametrize("edit, needle", [
    (lambda o: o["param_groups"].pop(), "optimizer.pt: 1 parameter groups, the optimizer of this model has 2"),
    (lambda o: o["param_groups"][0]["params"].pop(), "optimizer.pt: param_groups.0 holds"),
    (lambda o: o["state"][0].update(exp_avg=torch.zeros(7, 7)), "optimizer.pt: state.0.exp_avg has shape (7, 7)"),
    (lambda o: o["state"][0]["exp_avg_sq"].view(-1).__setitem__(0, float("nan")), "state.0.exp_avg_sq holds NaN or inf"),
    (lambda o: o["state"].update({999: {}}), "state of parameter 999 belongs to no parameter group"),
    (lambda o: o["param_groups"][0].update(betas="fast"), "param_groups.0.betas is 'fast', expected a sequence of 2 numbers"),
    (lambda o: o["param_groups"][1].update(lr=None), "param_groups.1.lr is None, expected a number"),
])
def test_optimizer_state_must_fit_the_model(run, edit, needle):
    trainer, optim = load_training_state(run / "checkpoint")
    optimizer = _optimizer_for(run)
    check_training_state(run / "checkpoint", trainer, optim, optimizer, world=1)  # the saved state fits
    with pytest.raises(CheckpointError) as e:
        check_training_state(run / "checkpoint", trainer, _mutated(optim, edit), optimizer, world=1)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_rng_states_must_be_one_per_process(run):
    trainer, optim = load_training_state(run / "checkpoint")
    with pytest.raises(CheckpointError, match="was written by 1 processes, this run has 2"):
        load_training_state(run / "checkpoint", _optimizer_for(run), world=2)


# ---------------------------------------------------------------- writes


def _save_args(run):
    model, mcfg = load_model(run / "checkpoint")
    return model, mcfg, _optimizer_for(run), {"step": 99, "numpy_rng": [], "torch_rng": []}


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_full_disk_is_an_oserror_naming_the_file_and_keeps_the_previous_checkpoint(run, monkeypatch):
    before = _snapshot(run / "checkpoint")
    real_fsync = os.fsync

    def full(fd):  # ENOSPC at fsync (delayed allocation), as a full disk reports it: no file name
        if "checkpoint.tmp" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        save_checkpoint(run / "checkpoint", *_save_args(run))
    assert type(e.value) is OSError and e.value.errno == errno.ENOSPC
    assert e.value.filename == str(run / "checkpoint.tmp/model.safetensors")
    assert not (run / "checkpoint.tmp").exists() and not (run / "checkpoint.old").exists()
    assert _snapshot(run / "checkpoint") == before


def test_a_full_disk_during_resume_is_exit_2_and_the_checkpoint_stays(run, capsys, monkeypatch):
    before = _snapshot(run / "checkpoint")
    real_fsync = os.fsync

    def full(fd):
        if "checkpoint.tmp" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    _one_line_error(capsys, _resume(run), "checkpoint.tmp/model.safetensors")
    assert not (run / "checkpoint.tmp").exists()
    assert _snapshot(run / "checkpoint") == before


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ")
def test_a_real_write_failure_from_the_kernel(run):
    """RLIMIT_FSIZE makes the kernel fail the write itself (EFBIG), as a full disk fails it."""
    import resource
    import signal

    before = _snapshot(run / "checkpoint")
    args = _save_args(run)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, hard))
    try:
        with pytest.raises(OSError) as e:
            save_checkpoint(run / "checkpoint", *args)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert e.value.errno == errno.EFBIG and e.value.filename.endswith("model.safetensors")
    assert not (run / "checkpoint.tmp").exists()
    assert _snapshot(run / "checkpoint") == before


def test_a_failure_between_the_two_renames_restores_the_previous_checkpoint(run, monkeypatch):
    before = _snapshot(run / "checkpoint")
    real_replace, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error", str(src))
        real_replace(src, dst)

    args = _save_args(run)
    monkeypatch.setattr(ckpt_mod.os, "replace", second_fails)
    with pytest.raises(OSError):
        save_checkpoint(run / "checkpoint", *args)
    monkeypatch.setattr(ckpt_mod.os, "replace", real_replace)
    assert _snapshot(run / "checkpoint") == before
    assert not (run / "checkpoint.tmp").exists() and not (run / "checkpoint.old").exists()


def test_a_written_checkpoint_loads_back(run):
    model, mcfg, optimizer, state = _save_args(run)
    save_checkpoint(run / "checkpoint", model, mcfg, optimizer, state)
    loaded, cfg = load_model(run / "checkpoint")
    assert cfg == mcfg
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert json.loads((run / "checkpoint/trainer.json").read_text())["step"] == 99
