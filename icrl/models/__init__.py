"""Transformer models for in-context RL: Algorithm Distillation (AD) and the Decision-Pretrained
Transformer (DPT) on one causal backbone with a KV cache (DESIGN §7)."""

from __future__ import annotations

import torch

from .ad import ADModel, banded_causal_mask
from .dpt import DPTModel, readout_mask
from .losses import ad_loss, dpt_loss
from .transformer import (
    KVCache,
    ModelConfig,
    Transformer,
    check_batch,
    encode_obs,
    obs_sizes_for,
)

__all__ = [
    "ADModel",
    "DPTModel",
    "KVCache",
    "ModelConfig",
    "Transformer",
    "ad_loss",
    "banded_causal_mask",
    "check_batch",
    "dpt_loss",
    "encode_obs",
    "make_model",
    "obs_sizes_for",
    "readout_mask",
]


def make_model(config: ModelConfig, generator: torch.Generator | None = None) -> ADModel | DPTModel:
    """Build the model named by ``config.kind`` ("ad" -> ADModel, "dpt" -> DPTModel)."""
    return ADModel(config, generator) if config.kind == "ad" else DPTModel(config, generator)
