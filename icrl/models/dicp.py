"""DICP: in-context RL with a learned world model and planning (Son et al., ICLR 2025, "Distilling
Reinforcement Learning Algorithms for In-Context Model-Based Planning"), on top of AD and of DPT,
on any backbone (docs/architecture.md#methods).

The sequence model keeps its policy and additionally predicts, for a *query action*, the reward
and the next observation it leads to. The query is one more readout token (the backbone contract's
readouts: it sees a prefix of the stream and itself, nothing sees it), embedding
``[obs(o) | action(a) | 1]`` with a Linear of its own (the constant column is its flag):

- DICP-AD (:class:`DICPADModel`): stream token t embeds (o_t, a_{t-1}, r_{t-1}) as in AD; the
  query of step t sits after the stream prefix of t + 1 tokens (it sees o_t) and embeds (o_t, a_t),
  predicting r_t and o_{t+1}.
- DICP-DPT (:class:`DICPDPTModel`): context token j embeds (s_j, a_j, r_j, s'_j) as in DPT; the
  query of transition j sits after prefix j and embeds (s_j, a_j), predicting r_j and s'_j. It
  sits beside DPT's query-state readouts in the same pass.

Labels are the history's stored ``reward`` and ``next_obs`` of the queried step (the episode's
real last observation where it ended, never the autoreset one). The loss (the reference's
``loss_action + dynamics_strength * (loss_reward + loss_next_state)``; assembled by
:func:`icrl.methods.method_loss` from the method's outputs and labels) is

    L = L_policy + lambda (L_reward + L_next_obs),            lambda = model.world_model_coef

with every term reduced as the policy loss (mean over a sample's queries, then the weighted mean
over samples). ``L_next_obs``: for Discrete / MultiDiscrete observations the cross-entropy of each
component, summed over components (the factorised negative log-likelihood of o_{t+1}; the
reference classifies the whole Dark Room cell, which is the same for a single component); for a
Box, the squared error in the normalised units of the observation encoder, averaged over
dimensions. ``L_reward``: with ``model.reward_values`` (a finite reward set, e.g. [0, 1] on the
grid worlds) the cross-entropy over those values, as the reference does for Dark Room, Dark
Key-to-Door and Permuted Dark Room (``pred_reward = Linear(n_embd, 2)``); otherwise the squared
error of the reward normalised by the training data's mean and std (the reference regresses
Meta-World rewards). Classes let a planner read a reward of exactly 0 where none is expected, so
that with no reward in sight the stable sort leaves the policy's own order (``icrl/planning.py``).
The paper also describes a return-to-go head; the reference code has none, and neither does this.

Online, the planner forks the incremental state (``state.index``) and reads the query tokens out
with ``commit=False``; :meth:`DICPMixin.query_token`, :meth:`DICPMixin.transition_token`,
:meth:`DICPMixin.policy_token` and :meth:`DICPMixin.predict_world` are what it uses.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ad import ADModel
from .backbones import Structure
from .dpt import DPTModel
from .encoders import is_first
from .losses import reduce_positions
from .transformer import ModelConfig, init_weights


class WorldModelHeads(nn.Module):
    """The query-action embedding and the reward and next-observation heads of DICP.

    Args:
        config: the model's ``ModelConfig`` (``world_model=True``).
        obs_width: D, the width of the encoded observation (one-hot columns, or k for a Box).
        action_width: A, the width of the encoded action.
    """

    def __init__(self, config: ModelConfig, obs_width: int, action_width: int) -> None:
        super().__init__()
        C, self.values = config.n_embd, list(config.reward_values)
        self.query = nn.Linear(obs_width + action_width + 1, C, bias=config.bias)
        self.reward = nn.Linear(C, len(self.values) or 1, bias=config.bias)
        self.next_obs = nn.Linear(C, obs_width, bias=config.bias)
        self.register_buffer("reward_mean", torch.zeros(()))  # () of the training rewards (regression only)
        self.register_buffer("reward_std", torch.ones(()))  # ()

    @torch.no_grad()
    def set_reward_stats(self, rewards: Any) -> None:
        """Regression: normalise rewards by the mean and std of the training data's ``rewards`` (N,);
        a constant reward is only centred."""
        r = torch.as_tensor(rewards, dtype=torch.float64).reshape(-1)
        std = float(r.std(unbiased=False)) if len(r) else 1.0
        self.reward_mean.fill_(float(r.mean()) if len(r) else 0.0)
        self.reward_std.fill_(std if std >= 1e-6 else 1.0)

    def reward_labels(self, reward: torch.Tensor) -> torch.Tensor:
        """Class of each reward, the index of the nearest of ``reward_values``: (...) -> (...) int64."""
        values = torch.tensor(self.values, dtype=torch.float64, device=reward.device)  # (R,)
        return (reward.to(torch.float64)[..., None] - values).abs().argmin(-1)  # (...)


class DICPMixin:
    """What DICP adds to AD and DPT: the world-model heads, their loss and the planner's interface.

    A subclass is an ``ADModel`` or ``DPTModel`` that calls :meth:`_build_world` at the end of its
    constructor, after the base model drew its initial weights, so the base's draws are unchanged.
    """

    config: ModelConfig
    world: WorldModelHeads

    def _build_world(self, generator: torch.Generator | None) -> None:
        if not self.config.world_model:
            raise ValueError(f"{type(self).__name__} needs ModelConfig(world_model=True)")
        self.world = WorldModelHeads(self.config, self.obs_enc.width, self.act_enc.width)
        init_weights(self.world, self.config.n_layer, generator)

    # ---- tokens ---------------------------------------------------------------------------------
    def query_features(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Query-action features ``[obs(o) | action(a) | 1]``: obs (..., k), action (...) or (..., d) -> (..., D+A+1)."""
        dtype = self.world.query.weight.dtype
        o = self.obs_enc(obs, dtype)  # (..., D)
        a = self.act_enc(action, dtype)  # (..., A)
        return torch.cat((o, a, torch.ones_like(o[..., :1])), dim=-1)  # (..., D+A+1)

    def query_token(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Embedded query-action tokens: obs (N, k), action (N,) or (N, d) -> (N, 1, C)."""
        return self.world.query(self.query_features(obs[:, None], action[:, None]))  # (N, 1, C)

    # ---- predictions ----------------------------------------------------------------------------
    def world_outputs(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward and next-observation head outputs of query hidden states: (..., C) -> (..., R), (..., D)."""
        return self.world.reward(h), self.world.next_obs(h)  # (..., R), (..., D)

    @torch.no_grad()
    def predict_world(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The most likely reward and next observation of query hidden states (for planning).

        Args:
            h: (N, C) final hidden states of query-action tokens.

        Returns:
            reward (N,) float32: the value of the most likely class, or the regressed mean in reward
            units; next_obs (N, k): the most likely value of every Discrete component (int64), or
            the regressed mean of a Box in observation units (float32).
        """
        r_out, o_out = self.world_outputs(h)  # (N, R), (N, D)
        if self.world.values:
            values = torch.tensor(self.world.values, device=h.device)  # (R,)
            reward = values[r_out.argmax(-1)]  # (N,)
        else:
            reward = r_out[:, 0].float() * self.world.reward_std.float() + self.world.reward_mean.float()  # (N,)
        if self.obs_enc.discrete:
            parts = o_out.split(self.obs_enc.sizes, dim=-1)  # k x (N, n_i)
            next_obs = torch.stack([p.argmax(-1) for p in parts], dim=-1)  # (N, k)
        else:
            next_obs = o_out.float() * self.obs_enc.std + self.obs_enc.mean  # (N, k)
        return reward, next_obs

    # ---- loss -----------------------------------------------------------------------------------
    def world_losses(self, r_out: torch.Tensor, o_out: torch.Tensor, reward: torch.Tensor,
                     next_obs: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted reward and next-observation losses over (B, M) queries.

        Args:
            r_out: (B, M, R) reward head outputs; o_out: (B, M, D) next-observation head outputs.
            reward: (B, M) label rewards r; next_obs: (B, M, k) label next observations o'.
            weights: (B,) per-sample loss weights.

        Returns:
            L_reward and L_next_obs, each ``sum_b w_b mean_m l_bm / sum_b w_b``: cross-entropy over
            ``reward_values`` or squared error of the normalised reward; cross-entropy summed over
            the components of a discrete o', or squared error of the normalised o' averaged over
            its dimensions.
        """
        dtype = torch.float64 if r_out.dtype == torch.float64 else torch.float32
        B, M = reward.shape
        if self.world.values:
            labels = self.world.reward_labels(reward)  # (B, M)
            l_r = F.cross_entropy(r_out.reshape(B * M, -1).to(dtype), labels.reshape(-1), reduction="none")  # (B*M,)
            l_r = l_r.view(B, M)  # (B, M)
        else:
            target = (reward.to(dtype) - self.world.reward_mean.to(dtype)) / self.world.reward_std.to(dtype)  # (B, M)
            l_r = (r_out[..., 0].to(dtype) - target).pow(2)  # (B, M)
        if self.obs_enc.discrete:
            l_o = torch.zeros(B, M, dtype=dtype, device=r_out.device)  # (B, M)
            for i, part in enumerate(o_out.to(dtype).split(self.obs_enc.sizes, dim=-1)):  # (B, M, n_i) each
                y = next_obs[..., i].long().reshape(-1)  # (B*M,) value of component i
                l_o = l_o + F.cross_entropy(part.reshape(B * M, -1), y, reduction="none").view(B, M)  # (B, M)
        else:
            target = ((next_obs.to(self.obs_enc.mean.dtype) - self.obs_enc.mean) / self.obs_enc.std).to(dtype)  # (B, M, k)
            l_o = (o_out.to(dtype) - target).pow(2).mean(-1)  # (B, M)
        return reduce_positions(l_r, weights), reduce_positions(l_o, weights)


class DICPADModel(DICPMixin, ADModel):
    """DICP on AD: AD's policy plus a query-action readout per step predicting (r_t, o_{t+1}).

    Args:
        config: a ``ModelConfig`` with ``kind="ad"`` and ``world_model=True``.
        generator: draws the initial weights; AD's are drawn first, exactly as ``ADModel`` draws them.
    """

    policy_from_stream = True  # the policy is read from the last stream token (no readout)

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__(config, generator)
        self._build_world(generator)

    def forward(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor,
                task_ids: torch.Tensor | None = None, query_action: torch.Tensor | None = None,
                query_steps: torch.Tensor | None = None) -> Any:
        """AD's pass, plus the world model's queries when ``query_action`` is given.

        Args:
            obs, prev_action, prev_reward, task_ids: as ``ADModel.forward``; a window lies within
                one history (a reset only at its first step).
            query_action: (B, T) int64 or (B, T, d) the actions a_t to query (the history's own);
                None: the plain AD pass.
            query_steps: (M,) int64 steps t in [0, T) to query (default all T).

        Returns:
            Without ``query_action``: (B, T, out) policy outputs. With it: the policy outputs and
            the world-model outputs (B, M, R) and (B, M, D) of the queries (o_t, a_t), read out
            after the stream prefix of t + 1 tokens (RoPE position t + 1, where the online query
            sits).
        """
        if query_action is None:
            return super().forward(obs, prev_action, prev_reward, task_ids)
        B, T = obs.shape[:2]
        action_shape = (B, T) if self.discrete else (B, T, self.act_enc.width)
        if query_action.shape != action_shape:
            raise ValueError(f"query_action must be {action_shape}, got {tuple(query_action.shape)}")
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} steps exceeds block_size={self.config.block_size}")
        steps = torch.arange(T, device=obs.device) if query_steps is None else query_steps.to(obs.device)  # (M,)
        if steps.dim() != 1 or len(steps) == 0 or int(steps.min()) < 0 or int(steps.max()) >= T:
            raise ValueError(f"query_steps must be a non-empty 1-D tensor of steps in [0, {T})")
        if bool(is_first(prev_action, self.discrete)[:, 1:].any()):
            raise ValueError("a DICP-AD window must lie within one history (a history start only at its first step)")
        x = self.embed_tokens(obs, prev_action, prev_reward)  # (B, T, C)
        q = self.world.query(self.query_features(obs[:, steps], query_action[:, steps]))  # (B, M, C)
        structure = Structure(T, self.config.window, readouts=(steps + 1).cpu(), task_ids=task_ids)
        h = self.backbone(torch.cat((x, q), dim=1), structure)  # (B, T+M, C)
        return (self.head(h[:, :T]), *self.world_outputs(h[:, T:]))  # (B, T, out), (B, M, R), (B, M, D)

    def transition_token(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                         next_obs: torch.Tensor) -> torch.Tensor:
        """The stream token that follows (o, a, r, o'): AD's (o', a, r) -> (N, 1, C)."""
        return self.embed_tokens(next_obs[:, None], action[:, None], reward[:, None])  # (N, 1, C)

    def policy_token(self, obs: torch.Tensor) -> None:
        """AD reads its policy from the last stream token itself: no readout (None)."""
        return None


class DICPDPTModel(DICPMixin, DPTModel):
    """DICP on DPT: DPT's query-state readouts plus a query-action readout per context transition.

    Args:
        config: a ``ModelConfig`` with ``kind="dpt"`` and ``world_model=True``.
        generator: draws the initial weights; DPT's are drawn first, exactly as ``DPTModel`` draws them.
    """

    policy_from_stream = False  # the policy is a query-state readout

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__(config, generator)
        self._build_world(generator)

    def forward(self, ctx_obs: torch.Tensor, ctx_action: torch.Tensor, ctx_reward: torch.Tensor,
                ctx_next_obs: torch.Tensor, query_obs: torch.Tensor, prefixes: torch.Tensor | None = None,
                task_ids: torch.Tensor | None = None, world: bool = False,
                world_prefixes: torch.Tensor | None = None) -> Any:
        """DPT's pass, plus the world model's queries when ``world``.

        Args:
            ctx_obs, ctx_action, ctx_reward, ctx_next_obs, query_obs, prefixes, task_ids: as
                ``DPTModel.forward``.
            world: also read out the query actions (s_j, a_j) of the context's own transitions.
            world_prefixes: (M,) int64 transitions j in [0, n) to query (default all n); query j
                sees the first j transitions and predicts (r_j, s'_j).

        Returns:
            Without ``world``: (B, J, out) policy outputs. With it: those and the world-model outputs
            (B, M, R) and (B, M, D).
        """
        if not world:
            return super().forward(ctx_obs, ctx_action, ctx_reward, ctx_next_obs, query_obs, prefixes, task_ids)
        B, n, k = ctx_obs.shape
        if n > self.config.block_size:
            raise ValueError(f"context of {n} transitions exceeds block_size={self.config.block_size}")
        device = ctx_obs.device
        J = n + 1 if prefixes is None else len(prefixes)
        pol = torch.arange(n + 1) if prefixes is None else prefixes.cpu()  # (J,)
        wm = torch.arange(n) if world_prefixes is None else world_prefixes.cpu()  # (M,)
        if wm.dim() != 1 or len(wm) == 0 or int(wm.min()) < 0 or int(wm.max()) >= n:
            raise ValueError(f"world_prefixes must be a non-empty 1-D tensor of transitions in [0, {n})")
        if query_obs.shape == (B, k):
            query_obs = query_obs[:, None].expand(B, J, k)  # (B, J, k)
        wm_dev = wm.to(device)
        feats = torch.cat((self.context_features(ctx_obs, ctx_action, ctx_reward, ctx_next_obs),
                           self.readout_features(query_obs)), dim=1)  # (B, n+J, F)
        q = self.world.query(self.query_features(ctx_obs[:, wm_dev], ctx_action[:, wm_dev]))  # (B, M, C)
        x = torch.cat((self.embed(feats), q), dim=1)  # (B, n+J+M, C)
        structure = Structure(n, self.config.window, readouts=torch.cat((pol, wm)), task_ids=task_ids)
        h = self.backbone(x, structure)  # (B, n+J+M, C)
        M = len(wm)
        return (self.head(h[:, n:n + J]), *self.world_outputs(h[:, n + J:n + J + M]))  # (B, J, out), (B, M, R), (B, M, D)

    def transition_token(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                         next_obs: torch.Tensor) -> torch.Tensor:
        """The context token of the transition (s, a, r, s') -> (N, 1, C)."""
        return self.embed(self.context_features(obs[:, None], action[:, None], reward[:, None], next_obs[:, None]))

    def policy_token(self, obs: torch.Tensor) -> torch.Tensor:
        """DPT's query-state readout token: obs (N, k) -> (N, 1, C)."""
        return self.embed(self.readout_features(obs[:, None]))  # (N, 1, C)

