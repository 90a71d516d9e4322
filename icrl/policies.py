"""The pretrained model as a batched online policy, and the oracle (docs/architecture.md#evaluation)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from icrl.methods import method_of
from icrl.models.encoders import first_action
from icrl.planning import CachedImaginer, PlanSettings, beam_search, candidate_search
from icrl.precision import autocast


class ModelPolicy:
    """A pretrained model as a batched policy: one cached token per step, no re-encoding.

    Its method steps it (:mod:`icrl.methods`): AD appends the token (obs_t, a_{t-1}, r_{t-1}) and
    reads a_t from it (rolling window cache); DPT reads out the current query against the cached
    context, then appends the transition. The
    action comes from the model's head (``ActionHead.act``): sampled at ``temperature``, or the
    argmax / mean with ``greedy``. A DICP model with ``plan`` settings plans instead once its
    context is full (``icrl.planning``: beam search for Discrete actions, candidates for Box ones)
    on forks of the online state, which the search leaves as it was. The model runs at ``precision``
    (``fp32`` or ``bf16`` autocast, :mod:`icrl.precision`); its outputs are cast to fp32 before an
    action is drawn or planned from them.
    """

    def __init__(self, model: torch.nn.Module, num_envs: int, rng: np.random.Generator, greedy: bool = False,
                 temperature: float = 1.0, plan: PlanSettings | None = None, precision: str = "fp32") -> None:
        self.model, self.rng, self.greedy, self.temperature = model, rng, greedy, temperature
        self.precision = precision
        self.config, self.method = model.config, method_of(model.config.kind)
        self.device = next(model.parameters()).device
        self.cache = model.new_cache(num_envs, device=self.device)
        self.prev_action = first_action(self.config.action, num_envs, self.device)  # (N,) or (N, d) sentinel
        self.prev_reward = torch.zeros(num_envs, device=self.device)
        self.t = 0
        if plan is not None and not self.config.world_model:
            raise ValueError(f"planning needs a DICP model (model.world_model), not {self.config.method}")
        self.plan = plan
        self.episode_t = np.zeros(num_envs, dtype=np.int64)  # (N,) step within the current episode

    def _obs(self, obs: np.ndarray) -> torch.Tensor:
        obs = np.asarray(obs)
        return torch.as_tensor(obs.reshape(len(obs), -1), device=self.device)  # (N, k)

    def _action(self, actions: np.ndarray) -> torch.Tensor:
        a = np.asarray(actions)
        if self.config.discrete_actions:
            return torch.as_tensor(a, device=self.device)  # (N,)
        return torch.as_tensor(a.reshape(len(a), -1), dtype=torch.float32, device=self.device)  # (N, d)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        with autocast(self.device, self.precision):
            out = self.method.act(self.model, self.cache, self._obs(obs), self.prev_action, self.prev_reward)
            out = out.float()  # (N, out) the draw, its temperature and the search in fp32
            if self.plan is not None and self.t >= self.plan.start:
                actions = self._planned(self._obs(obs), out)  # (N,) or (N, d)
            else:
                actions = self.model.head.act(out, self.rng, self.greedy, self.temperature)  # (N,) or (N, d)
        return actions.reshape(len(actions), *self.config.action.shape)

    def _planned(self, obs: torch.Tensor, out: torch.Tensor) -> np.ndarray:
        """DICP's search from the current context (``icrl.planning``); the cache is only forked."""
        root = CachedImaginer(self.model, self.cache, obs, out)
        p = self.plan
        if not self.config.discrete_actions:
            return candidate_search(root, self.model.head, p.plan_candidates, self.rng, self.temperature).cpu().numpy()
        left = np.maximum(p.horizon - self.episode_t, 1)  # (N,) steps left in each episode
        depth = torch.as_tensor(np.minimum(p.plan_depth, left), device=self.device)  # (N,)
        plan = beam_search(root, self.config.n_actions, depth, p.beam_width, self.rng, self.greedy,
                           self.temperature, p.plan_order)
        return plan.action.cpu().numpy()

    @torch.no_grad()
    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
               terminated: np.ndarray, truncated: np.ndarray) -> None:
        a = self._action(actions)
        r = torch.as_tensor(rewards, dtype=torch.float32, device=self.device)
        with autocast(self.device, self.precision):
            if self.method.observe(self.model, self.cache, self._obs(obs), a, r, self._obs(next_obs)):
                self.prev_action, self.prev_reward = a, r
        self.t += 1
        self.episode_t = np.where(np.asarray(terminated) | np.asarray(truncated), 0, self.episode_t + 1)  # (N,)


class OraclePolicy:
    """The task distribution's optimal action in every state (upper reference)."""

    def __init__(self, num_envs: int, task_dist: Any, rng: np.random.Generator, tasks: np.ndarray) -> None:
        self.task_dist, self.tasks = task_dist, tasks

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.task_dist.oracle_action(self.tasks, obs))  # (N,) int or (N, *shape) float

    def update(self, *args: Any) -> None:
        pass
