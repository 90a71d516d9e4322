"""Training samples for AD and DPT, drawn from learning histories in memory or from a stream.

- AD (Laskin et al. 2022): a window of ``seq_len`` consecutive steps of one history, across its
  episodes; inputs (obs_t, a_{t-1}, r_{t-1}), targets a_t at every position.
- DPT (Lee et al. 2023): ``context_len`` consecutive transitions (s, a, r, s') of one history, a
  query state from the same task and its oracle action as the label of every prefix j = 0..n.
- DPT stream (bandits): every batch runs the random-context collector on fresh tasks; nothing on disk.

Per-history weights (LHF, DESIGN §6) act through ``weighting``: "sample" draws histories with
probability proportional to their weight, "loss" scales their cross-entropy, "none" ignores them.
All randomness comes from the ``np.random.Generator`` passed to ``sample``.
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium
import numpy as np
import torch

from icrl import envs
from icrl.collectors import collect_block
from icrl.histories import HistoryBatch
from icrl.models.transformer import obs_sizes_for


@dataclass(frozen=True)
class EnvSpec:
    """What a model must know of an env: obs one-hot sizes, number of actions, episode horizon."""

    env_id: str
    obs_sizes: list[int]
    n_actions: int
    horizon: int

    @classmethod
    def of(cls, env_id: str, env_kwargs: dict) -> EnvSpec:
        env = gymnasium.make(env_id, **env_kwargs)
        try:
            horizon = int(getattr(env.unwrapped, "horizon"))
            return cls(env_id, obs_sizes_for(env.observation_space), int(env.action_space.n), horizon)
        finally:
            env.close()


def _obs2d(obs: np.ndarray) -> np.ndarray:
    """Stored obs as (N, k) integer components (Discrete obs are stored as (N,))."""
    return obs[:, None] if obs.ndim == 1 else obs


class HistorySampler:
    """Random AD windows or DPT samples from histories held in memory.

    Args:
        batch: all histories (``HistoryStore.load()``).
        kind: "ad" or "dpt".
        length: AD window length T or DPT context length n, in steps.
        weights: (n_histories,) non-negative per-history weights, or None for all ones.
        weighting: "none", "sample" or "loss".
    """

    def __init__(self, batch: HistoryBatch, kind: str, length: int, weights: np.ndarray | None = None,
                 weighting: str = "none") -> None:
        self.kind, self.length, self.weighting = kind, length, weighting
        self.obs = _obs2d(batch.steps["obs"])  # (N, k)
        self.next_obs = _obs2d(batch.steps["next_obs"]) if "next_obs" in batch.steps else None
        self.action = batch.steps["action"].astype(np.int64)  # (N,)
        self.reward = batch.steps["reward"].astype(np.float32)  # (N,)
        self.oracle = batch.steps.get("oracle_action")
        self.offsets, self.lengths = batch.offsets[:-1], batch.lengths
        if kind == "dpt" and (self.oracle is None or self.next_obs is None):
            raise ValueError("DPT needs histories with oracle_action and next_obs per step; "
                             "collect them from an env family whose task distribution has an oracle")
        short = np.flatnonzero(self.lengths < length)
        if len(short):
            raise ValueError(f"{len(short)} histories are shorter than the {'AD window' if kind == 'ad' else 'DPT context'} "
                             f"of {length} steps (shortest {self.lengths.min()}); lower data.seq_len/data.context_len")
        w = np.ones(len(self.lengths)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != self.lengths.shape or np.any(w < 0) or not np.all(np.isfinite(w)):
            raise ValueError(f"history weights must be {self.lengths.shape} finite non-negative values")
        if weighting == "sample" and w.sum() <= 0:
            raise ValueError("every history has weight 0: nothing to sample")
        self.weights = w
        self.p = w / w.sum() if weighting == "sample" else None

    def sample(self, rng: np.random.Generator, batch_size: int, h: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """One batch of model inputs, targets and loss weights, as CPU tensors.

        Args:
            rng: the sampling generator.
            batch_size: samples per batch.
            h: the histories to use (default: drawn by weight, with replacement).
        """
        if h is None:
            h = rng.choice(len(self.lengths), size=batch_size, p=self.p)  # (B,)
        start = rng.integers(0, self.lengths[h] - self.length + 1)  # (B,) window start within history
        idx = (self.offsets[h] + start)[:, None] + np.arange(self.length)  # (B, L) flat step indices
        loss_w = self.weights[h] if self.weighting == "loss" else np.ones(batch_size)
        out = {"weights": torch.as_tensor(loss_w, dtype=torch.float32)}
        if self.kind == "ad":
            prev = idx - 1  # (B, T) previous step; -1 action marks the first step of a history
            first = (start[:, None] + np.arange(self.length)) == 0  # (B, T)
            prev_action = np.where(first, -1, self.action[np.maximum(prev, 0)])  # (B, T)
            prev_reward = np.where(first, 0.0, self.reward[np.maximum(prev, 0)])  # (B, T)
            out.update(obs=torch.as_tensor(self.obs[idx]), prev_action=torch.as_tensor(prev_action),
                       prev_reward=torch.as_tensor(prev_reward, dtype=torch.float32),
                       target=torch.as_tensor(self.action[idx]))
            return out
        # DPT: the query is a state the history visited; its label the oracle action there.
        q = self.offsets[h] + rng.integers(0, self.lengths[h])  # (B,)
        out.update(ctx_obs=torch.as_tensor(self.obs[idx]), ctx_action=torch.as_tensor(self.action[idx]),
                   ctx_reward=torch.as_tensor(self.reward[idx]), ctx_next_obs=torch.as_tensor(self.next_obs[idx]),
                   query_obs=torch.as_tensor(self.obs[q]), target=torch.as_tensor(self.oracle[q].astype(np.int64)))
        return out


class DPTStream:
    """DPT samples on fresh tasks every batch: the random-context collector (DPT §5.1) run live.

    Args:
        env_id, env_kwargs: a bandit family (constant obs, so the query is the one state).
        context_len: transitions per context (at most the horizon).
        params: source-algorithm hyper-parameters (unused by dpt_random, kept for one call path).
    """

    def __init__(self, env_id: str, env_kwargs: dict, context_len: int, params: dict | None = None) -> None:
        self.env_id, self.env_kwargs, self.params = env_id, env_kwargs, params or {}
        self.dist = envs.task_distribution(env_id, **env_kwargs)
        if not hasattr(self.dist, "means"):
            raise ValueError(f"data.source=stream is for bandits; {env_id} needs a collected dataset")
        horizon = int(getattr(self.dist, "horizon"))
        if context_len > horizon:
            raise ValueError(f"data.context_len={context_len} exceeds the env horizon {horizon}")
        self.context_len = context_len

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        tasks = self.dist.sample(batch_size, rng)
        seq = np.random.SeedSequence(rng.integers(2**63))
        hb = collect_block(self.env_id, self.env_kwargs, "dpt_random", self.params, tasks=tasks,
                           task_index=np.arange(batch_size), run_index=np.zeros(batch_size, np.int64),
                           source_index=0, seed_seq=seq)
        return HistorySampler(hb, "dpt", self.context_len).sample(rng, batch_size, h=np.arange(batch_size))
