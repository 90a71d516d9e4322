"""Models for in-context RL: Algorithm Distillation (AD) and the Decision-Pretrained Transformer
(DPT), each on any registered backbone (transformer, T2MIR, S5; docs/architecture.md#models), and
DICP's world model on top of either (``model.world_model``; :mod:`icrl.models.dicp`). Which model a
config builds, and how it is trained and stepped, is its method's (:mod:`icrl.methods`)."""

from __future__ import annotations

from .ad import ADModel
from .backbones import BACKBONES, Structure, banded_causal_mask, check_backbone, readout_mask
from .dicp import DICPADModel, DICPDPTModel
from .dpt import DPTModel
from .encoders import ActionHead, check_batch, encode_obs
from .losses import ad_loss, dpt_loss, head_loss
from .config import ModelConfig
from .transformer import KVCache, Transformer

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
    "dpt_loss",
    "encode_obs",
    "head_loss",
    "readout_mask",
]

