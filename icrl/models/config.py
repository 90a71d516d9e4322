"""``ModelConfig``: the architecture of a model (its method, spaces, backbone and sizes), the one
description every backbone and method is built from, saved as ``model.json`` next to every
checkpoint (docs/architecture.md#models)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from icrl.models.backbones import ATTENTION, BACKBONES
from icrl.models.encoders import HEADS, discrete_sizes, resolve_head
from icrl.spaces import SpaceError, check_action_space, check_observation_space, space_from_dict, space_to_dict
from icrl.typed import brief, integer


@dataclass(kw_only=True)
class ModelConfig:
    """Architecture of an AD or DPT model on one backbone; saved next to every checkpoint as JSON.

    The spaces are those of the env spec (``icrl.spaces.space_to_dict`` form), so a checkpoint
    knows the observations and actions it was trained on. A ``model.json`` written before the spec
    existed (``obs_sizes`` and ``n_actions``) still loads: :meth:`from_dict` converts it.
    """

    kind: str  # "ad" (Algorithm Distillation) or "dpt" (Decision-Pretrained Transformer)
    obs_space: dict  # observation space: Discrete / MultiDiscrete (one-hot) or Box (normalised, linear)
    action_space: dict  # action space: Discrete or bounded Box
    head: str = "auto"  # categorical (Discrete) | gaussian | tanh (Box); auto picks categorical / gaussian
    backbone: str = "transformer"  # transformer | t2mir | s5 (icrl.models.backbones)
    n_layer: int = 4  # blocks (attention or S5 layers)
    n_head: int = 4  # attention heads per block (attention backbones)
    n_embd: int = 64  # residual stream width; n_embd / n_head must be even (RoPE rotates pairs)
    dropout: float = 0.0  # dropout on embeddings, attention weights and residual branches
    block_size: int = 256  # max tokens a pass or cache holds: AD = training length, DPT = max context n
    window: int | None = None  # attention window K in context tokens (banded causal mask); None = full causal
    bias: bool = True  # biases in Linear layers and LayerNorms
    rope: bool = True  # RoPE relative positions; False = no positional encoding (order only via the causal mask)
    state_size: int = 64  # s5: HiPPO state size N per layer (N / 2 complex states are stored)
    n_token_experts: int = 6  # t2mir: experts of the token-wise MoE
    n_task_experts: int = 8  # t2mir: experts of the task-wise MoE
    experts_per_token: int = 2  # t2mir: top-k experts in both MoEs
    balance_weight: float = 0.1  # t2mir: weight of the token MoE's load-balance loss
    contrast_weight: float = 0.01  # t2mir: weight of the task router's InfoNCE loss
    router_tau: float = 0.005  # t2mir: momentum of the task router's target, per optimiser step
    world_model: bool = False  # DICP (icrl.models.dicp): also predict r and o' of a query action, to plan with
    world_model_coef: float = 1.0  # DICP: lambda of L_policy + lambda (L_reward + L_next_obs)
    reward_values: list = field(default_factory=list)  # DICP: the finite reward set to classify; [] = MSE regression

    def __post_init__(self) -> None:
        # Types first, strictly: a model.json is user input, and 1.5 or true must not pass as 1.
        for name in ("n_layer", "n_head", "n_embd", "block_size", "window", "state_size", "n_token_experts",
                     "n_task_experts", "experts_per_token"):
            value = getattr(self, name)
            if value is None and name == "window":
                continue
            setattr(self, name, integer(f"ModelConfig.{name}", value))
        for name in ("bias", "rope", "world_model"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ModelConfig.{name} must be true or false, got {brief(getattr(self, name))}")
        for name in ("kind", "head", "backbone"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"ModelConfig.{name} must be a string, got {brief(getattr(self, name))}")
        for name in ("dropout", "balance_weight", "contrast_weight", "router_tau", "world_model_coef"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"ModelConfig.{name} must be a number, got {brief(value)}")
        from icrl.methods import METHODS  # the methods stand above the models

        if self.kind not in METHODS:
            raise ValueError(f"ModelConfig.kind must be one of {sorted(METHODS)}, got {brief(self.kind)}")
        values = self.reward_values
        if not isinstance(values, (list, tuple)) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
            raise ValueError(f"ModelConfig.reward_values must be a list of numbers, got {brief(values)}")
        self.reward_values = [float(v) for v in values]
        if len(set(self.reward_values)) != len(self.reward_values) or len(self.reward_values) == 1:
            raise ValueError(f"ModelConfig.reward_values must be empty or at least 2 distinct values, got {brief(values)}")
        if self.world_model_coef < 0:
            raise ValueError(f"ModelConfig.world_model_coef must be >= 0, got {self.world_model_coef}")
        try:
            self.obs_space = space_to_dict(check_observation_space(space_from_dict(self.obs_space)))
        except (SpaceError, AssertionError) as e:  # gymnasium checks its arguments with assert
            raise ValueError(f"ModelConfig.obs_space: {brief(str(e), quote=False)}") from None
        try:
            self.action_space = space_to_dict(check_action_space(space_from_dict(self.action_space)))
        except (SpaceError, AssertionError) as e:
            raise ValueError(f"ModelConfig.action_space: {brief(str(e), quote=False)}") from None
        self.head = resolve_head(self.head, self.action_space)
        if self.head not in HEADS:
            raise ValueError(f"ModelConfig.head must be auto or one of {', '.join(HEADS)}, got {brief(self.head)}")
        if (self.head == "categorical") != (self.action_space["type"] == "Discrete"):
            raise ValueError(f"ModelConfig.head: a {self.head} head does not fit {self.action_space['type']} actions")
        if self.backbone not in BACKBONES:
            raise ValueError(f"ModelConfig.backbone must be one of {', '.join(BACKBONES)}, got {brief(self.backbone)}")
        if self.n_layer < 1 or self.n_head < 1:
            raise ValueError(f"ModelConfig.n_layer and n_head must be >= 1, got {self.n_layer}, {self.n_head}")
        if self.backbone in ATTENTION and (self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2):
            fix = 2 * self.n_head * max(1, self.n_embd // (2 * self.n_head))
            raise ValueError(
                f"ModelConfig.n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head}) with an "
                f"even head size for RoPE; choose e.g. n_embd = {fix}"
            )
        if self.backbone == "s5" and self.window is not None:
            raise ValueError("ModelConfig.window: the s5 backbone has no attention window (its state carries the "
                             "whole history at a fixed size); leave the window unset")
        if self.backbone == "s5" and (self.state_size < 2 or self.state_size % 2):
            raise ValueError(f"ModelConfig.state_size must be even and >= 2 (conjugate pairs), got {self.state_size}")
        if self.backbone == "t2mir" and not 1 <= self.experts_per_token <= min(self.n_token_experts, self.n_task_experts):
            raise ValueError(f"ModelConfig.experts_per_token ({self.experts_per_token}) must be in [1, "
                             f"{min(self.n_token_experts, self.n_task_experts)}] (the smaller MoE's expert count)")
        if min(self.balance_weight, self.contrast_weight) < 0 or not 0 <= self.router_tau <= 1:
            raise ValueError("ModelConfig.balance_weight and contrast_weight must be >= 0 and router_tau in [0, 1]")
        if not 0.0 <= self.dropout < 1.0:  # NaN fails too
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.block_size < 1:
            raise ValueError(f"ModelConfig.block_size must be >= 1, got {self.block_size}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"ModelConfig.window must be >= 1 or None, got {self.window}")

    def memory_bytes(self) -> int:
        """An upper estimate of the memory the model takes in float32 for one sequence, in bytes.

        Parameters (the input Linear at its widest, AD's or DPT's feature layout, the blocks, the
        head) plus what ``block_size`` implies for one pass over a full context: the KV cache of
        every layer, the (T, T) attention mask and the (n_head, T, T) attention scores, with
        T = block_size tokens for AD and 2 * block_size + 1 (context and readouts) for DPT.
        Checked before a checkpoint's model is built, so a bogus ``model.json`` allocates nothing.
        """
        return sum(self.memory_terms().values())

    def memory_terms(self) -> dict[str, int]:
        """The parts of :meth:`memory_bytes`, keyed by the fields that size them."""
        C, L = self.n_embd, self.n_layer
        obs, act = self.obs_space, self.action_space
        D = (obs["n"] if obs["type"] == "Discrete" else int(np.sum(obs["nvec"])) if obs["type"] == "MultiDiscrete"
             else math.prod(obs["shape"]))
        A = act["n"] if act["type"] == "Discrete" else math.prod(act["shape"])
        out = 2 * A if self.head == "gaussian" else A
        features = 2 * D + 2 * A + 2  # DPT's [s | a | r | s' | flag | r * one-hot(a)], wider than AD's
        params = (features + 1) * C + 2 * C + (C + 1) * out + 2 * D + 2 * A  # input, final LayerNorm, head
        from icrl.methods import method_of

        T = method_of(self.kind).pass_tokens(self.block_size)
        if self.world_model:  # DICP: the query-action embedding, the reward and next-obs heads, a query per step
            params += (D + A + 2) * C + (C + 1) * (max(1, len(self.reward_values)) + D)
            T += self.block_size
        if self.backbone == "s5":  # per layer: B~, C~ (complex), Lambda, dt, D, LayerNorm, the GLU's two Linears
            P = self.state_size // 2
            params += L * (4 * P * C + 2 * P + 2 * C * C + 5 * C)
            return {"parameters (n_layer, n_embd, state_size)": 4 * params,
                    "S5 states of one pass (n_layer, state_size, block_size)": 2 * 8 * L * T * P}
        params += L * (12 * C * C + 13 * C)
        if self.backbone == "t2mir":  # the last layer's experts (2C hidden) and routers replace its MLP
            params += (self.n_token_experts + self.n_task_experts) * (3 * C * C + 4 * C) + 8 * C * C
        return {"parameters (n_layer, n_embd, obs_space, action_space)": 4 * params,
                "KV cache (n_layer, n_embd, block_size)": 4 * 2 * L * (self.block_size + 1) * C,
                "attention (n_head, block_size)": T * T + 4 * self.n_head * T * T}

    @property
    def method(self) -> str:
        """The method's name, the key of its results: ``ad``, ``dpt``, or ``dicp_ad`` / ``dicp_dpt``
        with the world model of DICP (Son et al. 2025)."""
        return f"dicp_{self.kind}" if self.world_model else self.kind

    @property
    def capacity(self) -> int | None:
        """The most tokens an online rollout may hold on this backbone; None = unbounded."""
        from icrl.models.backbones import backbone_class

        return backbone_class(self.backbone).capacity_of(self)

    @property
    def observation(self) -> Any:
        """The observation space as a gymnasium space."""
        return space_from_dict(self.obs_space)

    @property
    def action(self) -> Any:
        """The action space as a gymnasium space."""
        return space_from_dict(self.action_space)

    @property
    def discrete_actions(self) -> bool:
        """Discrete actions (a categorical head) rather than a Box."""
        return self.action_space["type"] == "Discrete"

    @property
    def obs_sizes(self) -> list[int]:
        """One-hot size per obs component (integer observations only)."""
        return discrete_sizes(self.observation)

    @property
    def n_actions(self) -> int:
        """Number of discrete actions (Discrete actions only)."""
        return int(self.action_space["n"])

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Rebuild a config from ``to_dict`` output; unknown or missing keys are a ValueError.

        A config of the format before spaces (``obs_sizes`` and ``n_actions`` instead of
        ``obs_space`` and ``action_space``) is converted: ``[n]`` -> ``Discrete(n)``, longer lists
        -> ``MultiDiscrete``, ``n_actions`` -> ``Discrete(n_actions)``.
        """
        if not isinstance(d, dict):
            raise ValueError(f"ModelConfig must be a mapping of fields, got {type(d).__name__}")
        d = dict(d)
        if "obs_sizes" in d and "obs_space" not in d:
            sizes = d.pop("obs_sizes")
            if not isinstance(sizes, list) or not sizes:
                raise ValueError(f"ModelConfig.obs_sizes must be a non-empty list, got {brief(sizes)}")
            sizes = [integer("ModelConfig.obs_sizes", n) for n in sizes]
            d["obs_space"] = ({"type": "Discrete", "n": sizes[0], "start": 0} if len(sizes) == 1
                              else {"type": "MultiDiscrete", "nvec": sizes, "start": [0] * len(sizes)})
        if "n_actions" in d and "action_space" not in d:
            d["action_space"] = {"type": "Discrete", "n": integer("ModelConfig.n_actions", d.pop("n_actions")), "start": 0}
        names = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(d) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {brief(unknown)}; valid keys are {sorted(names)}")
        missing = sorted(n for n in ("kind", "obs_space", "action_space") if n not in d)
        if missing:
            raise ValueError(f"ModelConfig is missing required keys {missing}")
        return cls(**d)
