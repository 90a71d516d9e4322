"""Checkpoints (DESIGN §8): ``RUN/checkpoint/`` holds

- ``model.safetensors``: the weights (``safetensors.torch.save_model``; no pickle),
- ``model.json``: the model config, checked against the weights on load,
- ``trainer.json``: step, RNG states (numpy bit-generator state, torch CPU state) as JSON,
- ``optimizer.pt``: AdamW state, loaded with ``torch.load(..., weights_only=True)``.

Files are written under temporary names and renamed, ``trainer.json`` last, so a kill mid-write
leaves the previous checkpoint whole. A missing, truncated or corrupted file is a
:class:`CheckpointError` with a message that names it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model

from icrl.config import ConfigError
from icrl.models import make_model as build_model
from icrl.models.transformer import ModelConfig


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


def _replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def save_checkpoint(directory: str | Path, model: torch.nn.Module, model_config: ModelConfig,
                    optimizer: torch.optim.Optimizer | None = None, trainer_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically file by file (``trainer.json`` last)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_model(model, str(d / "model.safetensors.tmp"))
    _replace(d / "model.safetensors.tmp", d / "model.safetensors")
    (d / "model.json.tmp").write_text(json.dumps(model_config.to_dict(), indent=2))
    _replace(d / "model.json.tmp", d / "model.json")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), d / "optimizer.pt.tmp")
        _replace(d / "optimizer.pt.tmp", d / "optimizer.pt")
    if trainer_state is not None:
        (d / "trainer.json.tmp").write_text(json.dumps(trainer_state))
        _replace(d / "trainer.json.tmp", d / "trainer.json")
    return d


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelConfig]:
    """Rebuild the model from ``model.json`` and load ``model.safetensors`` strictly."""
    d = Path(directory)
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
