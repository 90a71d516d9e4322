"""Models for in-context RL: Algorithm Distillation (AD) and the Decision-Pretrained Transformer
(DPT), each on any registered backbone (transformer, T2MIR, S5; docs/architecture.md#models), and
DICP's world model on top of either (``model.world_model``; :mod:`icrl.models.dicp`)."""

from __future__ import annotations

import torch

from .ad import ADModel
from .backbones import BACKBONES, Structure, banded_causal_mask, check_backbone, readout_mask
from .dicp import DICPADModel, DICPDPTModel, dicp_loss
from .dpt import DPTModel
from .encoders import ActionHead, check_batch, encode_obs
from .losses import ad_loss, dpt_loss, head_loss
from .transformer import KVCache, ModelConfig, Transformer

__all__ = [
    "ADModel",
    "BACKBONES",
    "ActionHead",
    "DICPADModel",
    "DICPDPTModel",
    "DPTModel",
    "KVCache",
    "ModelConfig",
    "Structure",
    "Transformer",
    "ad_loss",
    "banded_causal_mask",
    "check_backbone",
    "check_batch",
    "dicp_loss",
    "dpt_loss",
    "encode_obs",
    "head_loss",
    "make_model",
    "readout_mask",
]


def make_model(config: ModelConfig, generator: torch.Generator | None = None) -> ADModel | DPTModel:
    """Build the model named by ``config.kind`` ("ad" -> ADModel, "dpt" -> DPTModel), or its DICP
    variant (DICPADModel, DICPDPTModel) when ``config.world_model``."""
    if config.world_model:
        return DICPADModel(config, generator) if config.kind == "ad" else DICPDPTModel(config, generator)
    return ADModel(config, generator) if config.kind == "ad" else DPTModel(config, generator)
