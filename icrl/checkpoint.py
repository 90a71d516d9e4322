"""Checkpoints (docs/architecture.md#training): ``RUN/checkpoint/`` holds

- ``model.safetensors``: the weights (safetensors; no pickle),
- ``model.json``: the model config (with the observation and action spaces), checked against the
  weights on load,
- ``spec.json``: the env spec the model was trained on (``icrl.spaces.EnvSpec``; absent in
  checkpoints written before specs were stored),
- ``config.json``: the resolved experiment config it was trained under (absent in checkpoints
  written before configs were stored), so ``icrl eval --checkpoint`` needs no ``--config``,
- ``trainer.json``: step, RNG states (numpy bit-generator state, torch CPU state) as JSON,
- ``optimizer.pt``: AdamW state, loaded with ``torch.load(..., weights_only=True)``.

A new checkpoint is written whole into ``checkpoint.tmp/`` (``trainer.json`` last) and then swapped
in: ``checkpoint`` -> ``checkpoint.old``, ``checkpoint.tmp`` -> ``checkpoint``, ``checkpoint.old``
removed. Replacing the files one by one in place would let a kill leave new weights beside an old
step and optimizer. A kill between the two renames leaves no ``checkpoint``;
:func:`recover_checkpoint` (called before every load) restores the complete one of the two. Every
file is serialised in memory and written with plain file writes, so a full disk or a read-only
folder is an ``OSError`` with its errno and the path; ``checkpoint.tmp`` is then removed and the
previous checkpoint is left as it was.

Loading checks before it allocates: ``model.json`` field by field (integers that are integers,
sizes in range, valid spaces) and the memory its model would take (:meth:`ModelConfig.memory_bytes`)
against ``ICRL_MAX_MODEL_BYTES`` (default 4 GiB) or the ``max_bytes`` argument; then the tensors
named in the ``model.safetensors`` header against the architecture, before they are read; then
that every weight is finite. On ``--resume``, :func:`load_training_state` checks ``trainer.json``
(step, RNG states) and ``optimizer.pt`` (its groups and state against the optimizer of the model).
Every problem is a one-line :class:`CheckpointError` naming the file and the field.
"""
from __future__ import annotations

import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save as safetensors_bytes

from icrl.config import ConfigError
from icrl.histories import write_synced
from icrl.methods import make_model as build_model
from icrl.models.config import ModelConfig
from icrl.spaces import EnvSpec
from icrl.typed import brief

MAX_MODEL_BYTES = 4 << 30  # default bound of ModelConfig.memory_bytes at load; ICRL_MAX_MODEL_BYTES raises it
MAX_JSON_BYTES = 64 << 20  # a checkpoint's JSON files are small (trainer.json: ~20 kB per process)


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


def _json_bytes(data: Any, indent: int | None = None) -> bytes:
    return json.dumps(data, indent=indent).encode("utf-8")


def recover_checkpoint(directory: str | Path) -> None:
    """Finish or undo a checkpoint swap cut short by a kill (see the module docstring).

    Acts only when ``directory`` is missing, so a reader never disturbs a writer at work.
    """
    d = Path(directory)
    tmp, old = d.with_name(d.name + ".tmp"), d.with_name(d.name + ".old")
    if d.exists():
        return
    if (tmp / "trainer.json").exists():  # the new checkpoint was complete: finish the swap
        os.replace(tmp, d)
    elif old.exists():  # the new one was not: keep the previous
        os.replace(old, d)


def save_checkpoint(directory: str | Path, model: torch.nn.Module, model_config: ModelConfig,
                    optimizer: torch.optim.Optimizer, trainer_state: dict[str, Any],
                    spec: EnvSpec | None = None, config: dict[str, Any] | None = None) -> Path:
    """Write a whole new checkpoint folder and swap it in for the previous one (the only writer).

    Raises:
        OSError: the disk is full, the folder read-only, ...: with errno and the path; no
            ``checkpoint.tmp`` is left behind and the previous checkpoint is intact.
    """
    d = Path(directory)
    recover_checkpoint(d)
    tmp, old = d.with_name(d.name + ".tmp"), d.with_name(d.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)  # a partial folder of a killed writer
    shutil.rmtree(old, ignore_errors=True)
    # Serialised in memory first: torch's and safetensors' own writers report a failed write as a
    # RuntimeError or SafetensorError without the errno; plain writes give an ordinary OSError.
    weights = safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    files = {"model.safetensors": weights, "model.json": _json_bytes(model_config.to_dict(), 2)}
    if spec is not None:
        files["spec.json"] = _json_bytes(spec.to_dict(), 2)
    if config is not None:
        files["config.json"] = _json_bytes(config, 2)
    files["optimizer.pt"] = buffer.getvalue()
    files["trainer.json"] = _json_bytes(trainer_state)  # last: its presence marks the folder complete
    try:
        tmp.mkdir(parents=True)
        for name, data in files.items():
            write_synced(tmp / name, data)
        if d.exists():
            os.replace(d, old)
        os.replace(tmp, d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not d.exists() and old.exists():  # failed between the two renames: put the previous one back
            os.replace(old, d)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return d


def max_model_bytes(max_bytes: int | None = None) -> int:
    """The bound on a loaded model's memory: ``max_bytes``, else ``ICRL_MAX_MODEL_BYTES``, else 4 GiB."""
    if max_bytes is not None:
        return int(max_bytes)
    text = os.environ.get("ICRL_MAX_MODEL_BYTES", "").strip()
    if not text:
        return MAX_MODEL_BYTES
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise CheckpointError(f"ICRL_MAX_MODEL_BYTES: expected a positive number of bytes, got {brief(text)}")
    return int(value)


def _read_json(path: Path, what: str) -> Any:
    """A checkpoint's JSON file as data; missing, too large or not JSON is a one-line error."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or type(e).__name__}") from None
    if len(raw) > MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: larger than {MAX_JSON_BYTES} bytes; not {what}")
    try:
        return json.loads(raw)
    except RecursionError:
        raise CheckpointError(f"{path}: not {what} (nested too deeply)") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not {what} (not UTF-8 text: a binary file?)") from None
    except ValueError as e:  # JSONDecodeError names line and column only; also ints past the digit limit
        raise CheckpointError(f"{path}: not {what} ({brief(str(e).splitlines()[0], quote=False)})") from None


def load_model_config(directory: str | Path, max_bytes: int | None = None) -> ModelConfig:
    """``model.json`` of a checkpoint, checked field by field and against the memory bound.

    Args:
        directory: the checkpoint folder.
        max_bytes: the most memory (:meth:`ModelConfig.memory_bytes`) the model may take; None:
            ``ICRL_MAX_MODEL_BYTES`` from the environment, else 4 GiB.

    Raises:
        CheckpointError: one line naming ``model.json`` and the field.
    """
    path = Path(directory) / "model.json"
    try:
        data = _read_json(path, "a model config")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; not a checkpoint written by icrl train") from None
    try:
        config = ModelConfig.from_dict(data)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a valid model config: {brief(str(e).splitlines()[0], 400, quote=False)}") from None
    limit = max_model_bytes(max_bytes)
    terms = config.memory_terms()
    need = sum(terms.values())
    if need > limit:
        field = max(terms, key=terms.get)
        raise CheckpointError(f"{path}: the model would take about {_size(need)}, over the bound of {_size(limit)}; "
                              f"most of it is {field}. A corrupted model.json? If the size is meant, raise "
                              f"ICRL_MAX_MODEL_BYTES")
    return config


def _size(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB" if n >= 2**20 else f"{n} bytes"


def load_model(directory: str | Path, device: str | torch.device = "cpu",
               max_bytes: int | None = None) -> tuple[torch.nn.Module, ModelConfig]:
    """Rebuild the model from ``model.json`` and load ``model.safetensors`` strictly.

    Args:
        directory: the checkpoint folder.
        device: where the model goes.
        max_bytes: the memory bound of :func:`load_model_config`.

    Raises:
        CheckpointError: one line naming the file and the field or tensor: an invalid or oversized
            ``model.json``; a missing or damaged ``model.safetensors``; weights of another
            architecture; a weight holding NaN or inf.
    """
    d = Path(directory)
    recover_checkpoint(d)
    if not d.is_dir():
        raise CheckpointError(f"--checkpoint: {d} is not a checkpoint folder (expected RUN/checkpoint)")
    config = load_model_config(d, max_bytes)
    model = build_model(config)
    expected = model.state_dict()
    path = d / "model.safetensors"
    try:  # the header first: names, shapes and dtypes are checked before any tensor is read
        with safe_open(str(path), framework="pt") as f:
            header = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupted or truncated ({brief(str(e).splitlines()[0], quote=False)})") from None
    mismatch = sorted(set(header) ^ set(expected)) or sorted(
        k for k in header if header[k][0] != tuple(expected[k].shape))
    if mismatch:
        raise CheckpointError(f"{path}: weights do not match the architecture in model.json (tensor "
                              f"{brief(mismatch[0], quote=False)}; a checkpoint of another architecture?)")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupted or truncated ({brief(str(e).splitlines()[0], quote=False)})") from None
    for name, tensor in state.items():
        if tensor.dtype != expected[name].dtype:
            raise CheckpointError(f"{path}: tensor {name} is {tensor.dtype}, the model needs {expected[name].dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {name} holds NaN or inf; the checkpoint is unusable "
                                  "(resume or retrain from an earlier checkpoint)")
    model.load_state_dict(state, strict=True)
    return model.to(device), config


def load_spec(directory: str | Path) -> EnvSpec | None:
    """The env spec a checkpoint was trained on, or None for a checkpoint written before specs."""
    path = Path(directory) / "spec.json"
    if not path.is_file():
        return None
    try:
        return EnvSpec.from_dict(json.loads(path.read_text()))
    except (ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a valid env spec ({str(e).splitlines()[0][:80]})") from None


def load_run_config(directory: str | Path) -> dict[str, Any] | None:
    """The resolved config (plain data) a checkpoint was trained under, or None when not stored."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a valid config ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a config (its top level is not a mapping)")
    return data


def load_training_state(directory: str | Path, optimizer: torch.optim.Optimizer | None = None,
                        world: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(trainer_state, optimizer_state)`` of a checkpoint, for ``--resume``, checked.

    ``trainer.json`` and the form of ``optimizer.pt`` are always checked; given the ``optimizer``
    built for the model and the number of processes ``world``, :func:`check_training_state` also
    checks that they fit this run.

    Raises:
        CheckpointError: one line naming the file and the field.
    """
    d = Path(directory)
    try:
        trainer = _read_json(d / "trainer.json", "a trainer state")
    except FileNotFoundError:
        raise CheckpointError(f"{d / 'trainer.json'}: missing; nothing to resume from") from None
    try:
        optim = torch.load(d / "optimizer.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{d / 'optimizer.pt'}: missing") from None
    except Exception as e:  # torch raises several types for a damaged zip/pickle stream
        raise CheckpointError(f"{d / 'optimizer.pt'}: corrupted, truncated or not an optimizer state "
                              f"({type(e).__name__})") from None
    check_training_state(d, trainer, optim, optimizer, world)
    return trainer, optim


def check_training_state(directory: str | Path, trainer: Any, optim: Any,
                         optimizer: torch.optim.Optimizer | None = None, world: int | None = None) -> None:
    """Check a checkpoint's training state before a resume applies any of it.

    Args:
        directory: the checkpoint folder (named in the messages).
        trainer: ``trainer.json`` as loaded: ``step`` a non-negative int; ``numpy_rng`` and
            ``torch_rng`` one entry per process, a PCG64 bit-generator state and a CPU torch RNG
            state (a list of bytes of the length ``torch.get_rng_state()`` has).
        optim: ``optimizer.pt`` as loaded: a ``state_dict`` of an optimizer.
        optimizer: the optimizer of this run's model: the saved groups must hold as many
            parameters, with hyper-parameters of the same kinds, and each saved per-parameter
            tensor (e.g. AdamW's ``exp_avg``) the shape of its parameter and finite values.
        world: the processes of this run; the saved RNG states must be one per process.

    Raises:
        CheckpointError: one line naming the file and the field.
    """
    d = Path(directory)
    tpath, opath = d / "trainer.json", d / "optimizer.pt"
    if not isinstance(trainer, dict):
        raise CheckpointError(f"{tpath}: not a trainer state (top level is not a mapping)")
    step = trainer.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{tpath}: step must be a non-negative integer, got {brief(step)}")
    rngs = {}
    for key in ("numpy_rng", "torch_rng"):
        rngs[key] = trainer.get(key)
        if not isinstance(rngs[key], list) or not rngs[key]:
            raise CheckpointError(f"{tpath}: {key} must be a non-empty list (one state per process), "
                                  f"got {brief(rngs[key])}")
    if len(rngs["numpy_rng"]) != len(rngs["torch_rng"]):
        raise CheckpointError(f"{tpath}: {len(rngs['numpy_rng'])} numpy_rng states but "
                              f"{len(rngs['torch_rng'])} torch_rng states; one of each per process")
    if world is not None and len(rngs["numpy_rng"]) != world:
        raise CheckpointError(f"--resume: {d} was written by {len(rngs['numpy_rng'])} processes, this run has {world}")
    probe = np.random.default_rng()
    for i, state in enumerate(rngs["numpy_rng"]):
        try:
            probe.bit_generator.state = state
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise CheckpointError(f"{tpath}: numpy_rng.{i} is not a PCG64 state "
                                  f"({brief(str(e).splitlines()[0] if str(e) else type(e).__name__, quote=False)})") from None
    size = torch.get_rng_state().numel()
    for i, state in enumerate(rngs["torch_rng"]):
        if (not isinstance(state, list) or len(state) != size
                or any(isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= 255 for b in state)):
            raise CheckpointError(f"{tpath}: torch_rng.{i} is not a CPU torch RNG state ({size} integers in 0..255)")
    _check_optimizer_state(opath, optim, optimizer)


def _check_optimizer_state(path: Path, optim: Any, optimizer: torch.optim.Optimizer | None) -> None:
    groups = optim.get("param_groups") if isinstance(optim, dict) else None
    state = optim.get("state") if isinstance(optim, dict) else None
    if (not isinstance(groups, list) or not isinstance(state, dict)
            or not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)):
        raise CheckpointError(f"{path}: not an optimizer state (expected param_groups and state)")
    if optimizer is None:
        return
    ours = optimizer.param_groups
    if len(groups) != len(ours):
        raise CheckpointError(f"{path}: {len(groups)} parameter groups, the optimizer of this model has {len(ours)} "
                              "(a checkpoint of another model?)")
    params = {}  # saved parameter id -> this model's parameter, matched by position as torch does
    for g, (saved, group) in enumerate(zip(groups, ours)):
        if len(saved["params"]) != len(group["params"]):
            raise CheckpointError(f"{path}: param_groups.{g} holds {len(saved['params'])} parameters, the model "
                                  f"has {len(group['params'])} there (a checkpoint of another model?)")
        params.update(zip(saved["params"], group["params"]))
        for key, value in group.items():
            if key != "params" and key in saved and _kind(saved[key]) != _kind(value):  # absent: torch's default
                raise CheckpointError(f"{path}: param_groups.{g}.{brief(key, quote=False)} is "
                                      f"{brief(saved.get(key))}, expected a {_kind(value)}")
    for pid, entry in state.items():
        if pid not in params or not isinstance(entry, dict):
            raise CheckpointError(f"{path}: state of parameter {brief(pid)} belongs to no parameter group")
        param = params[pid]
        for key, value in entry.items():
            if not isinstance(value, torch.Tensor):
                continue
            if value.dim() and tuple(value.shape) != tuple(param.shape):
                raise CheckpointError(f"{path}: state.{pid}.{brief(key, quote=False)} has shape "
                                      f"{tuple(value.shape)}, its parameter {tuple(param.shape)}")
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"{path}: state.{pid}.{brief(key, quote=False)} holds NaN or inf")


def _kind(value: Any) -> str:
    """A hyper-parameter's kind, for comparing a saved group with this optimizer's."""
    if value is None or isinstance(value, bool):
        return "none" if value is None else "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (tuple, list)):
        return f"sequence of {len(value)} numbers" if all(_kind(v) == "number" for v in value) else "sequence"
    if isinstance(value, torch.Tensor):
        return "number" if value.numel() == 1 else "tensor"
    return type(value).__name__
