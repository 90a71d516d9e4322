"""Checkpoints (docs/architecture.md#training): ``RUN/checkpoint/`` holds

- ``model.safetensors``: the weights (``safetensors.torch.save_model``; no pickle),
- ``model.json``: the model config (with the observation and action spaces), checked against the
  weights on load,
- ``spec.json``: the env spec the model was trained on (``icrl.spaces.EnvSpec``; absent in
  checkpoints written before specs were stored),
- ``trainer.json``: step, RNG states (numpy bit-generator state, torch CPU state) as JSON,
- ``optimizer.pt``: AdamW state, loaded with ``torch.load(..., weights_only=True)``.

A new checkpoint is written whole into ``checkpoint.tmp/`` (``trainer.json`` last) and then swapped
in: ``checkpoint`` -> ``checkpoint.old``, ``checkpoint.tmp`` -> ``checkpoint``, ``checkpoint.old``
removed. Replacing the files one by one in place would let a kill leave new weights beside an old
step and optimizer. A kill between the two renames leaves no ``checkpoint``;
:func:`recover_checkpoint` (called before every load) restores the complete one of the two. A
missing, truncated or corrupted file is a :class:`CheckpointError` with a message that names it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model

from icrl.config import ConfigError
from icrl.models import make_model as build_model
from icrl.models.transformer import ModelConfig
from icrl.spaces import EnvSpec


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


def _fsync_write(path: Path, write: Any) -> None:
    write(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


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
                    spec: EnvSpec | None = None) -> Path:
    """Write a whole new checkpoint folder and swap it in for the previous one (the only writer)."""
    d = Path(directory)
    recover_checkpoint(d)
    tmp, old = d.with_name(d.name + ".tmp"), d.with_name(d.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)  # a partial folder of a killed writer
    shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir(parents=True)
    _fsync_write(tmp / "model.safetensors", lambda p: save_model(model, str(p)))
    _fsync_write(tmp / "model.json", lambda p: p.write_text(json.dumps(model_config.to_dict(), indent=2)))
    if spec is not None:
        _fsync_write(tmp / "spec.json", lambda p: p.write_text(json.dumps(spec.to_dict(), indent=2)))
    _fsync_write(tmp / "optimizer.pt", lambda p: torch.save(optimizer.state_dict(), p))
    _fsync_write(tmp / "trainer.json", lambda p: p.write_text(json.dumps(trainer_state)))  # last: complete
    if d.exists():
        os.replace(d, old)
    os.replace(tmp, d)
    shutil.rmtree(old, ignore_errors=True)
    return d


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelConfig]:
    """Rebuild the model from ``model.json`` and load ``model.safetensors`` strictly."""
    d = Path(directory)
    recover_checkpoint(d)
    if not d.is_dir():
        raise CheckpointError(f"--checkpoint: {d} is not a checkpoint folder (expected RUN/checkpoint)")
    try:
        config = ModelConfig.from_dict(json.loads((d / "model.json").read_text()))
    except FileNotFoundError:
        raise CheckpointError(f"{d / 'model.json'}: missing; not a checkpoint written by icrl train") from None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{d / 'model.json'}: not a valid model config: {str(e).splitlines()[0]}") from None
    model = build_model(config)
    try:
        state = load_file(str(d / "model.safetensors"), device=str(device))
    except FileNotFoundError:
        raise CheckpointError(f"{d / 'model.safetensors'}: missing") from None
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{d / 'model.safetensors'}: corrupted or truncated ({str(e).splitlines()[0]})") from None
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in state):
        raise CheckpointError(f"{d / 'model.safetensors'}: weights do not match the architecture in model.json "
                              "(a checkpoint of another architecture?)")
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


def load_training_state(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(trainer_state, optimizer_state)`` of a checkpoint, for ``--resume``."""
    d = Path(directory)
    try:
        trainer = json.loads((d / "trainer.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{d / 'trainer.json'}: missing; nothing to resume from") from None
    except json.JSONDecodeError:
        raise CheckpointError(f"{d / 'trainer.json'}: corrupted (not JSON)") from None
    try:
        optim = torch.load(d / "optimizer.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{d / 'optimizer.pt'}: missing") from None
    except Exception as e:  # torch raises several types for a damaged zip/pickle stream
        raise CheckpointError(f"{d / 'optimizer.pt'}: corrupted or truncated ({type(e).__name__})") from None
    return trainer, optim
