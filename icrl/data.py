"""Training samples, drawn from learning histories in memory, read from the shards on demand
(:mod:`icrl.steps`) or made by a live stream. The sampler draws histories, window starts and
weights; each method lays out its samples (:mod:`icrl.methods`):

- AD (Laskin et al. 2022): a window of ``seq_len`` consecutive steps of one history, across its
  episodes; inputs (obs_t, a_{t-1}, r_{t-1}), targets a_t at every position.
- DPT (Lee et al. 2023): ``context_len`` consecutive transitions (s, a, r, s') of one history, a
  query state from the same task and its oracle action as the label of every prefix j = 0..n.
- DICP (Son et al. 2025; ``world_model=True``): also the labels of the world model's query
  actions, the stored reward and next observation of the queried steps.
- Stream: every batch runs the configured source algorithms live on fresh tasks (e.g. DPT's random
  contexts and Thompson sampling on bandits) and samples from those histories; nothing on disk.

Per-history weights (LHF, docs/architecture.md#learning-history-filtering-lhf) act through
``weighting``: "sample" draws histories with probability proportional to their weight, "loss"
scales their loss, "none" ignores them. Box actions are (N, d) floats, with a NaN row as AD's
"no previous action" sentinel (docs/architecture.md#the-space-contract).

``symmetries`` (a Box family's ``TaskDistribution.symmetries``, ``data.symmetries``) maps every
sample by one of the family's linear symmetries, drawn per sample after every other draw of the
batch: observations and next observations by its obs matrix, actions and action labels by its
action matrix; a task seen under all of them counts as that many tasks.

``paired=True`` lays a batch out as two halves of segments of the same tasks, row i and row
i + B/2 from one task (a second history of it, drawn by weight among the task's histories, or
another window of the same one), with ``task_ids`` (B,): T2MIR's contrastive pairs.
All randomness comes from the ``np.random.Generator`` passed to ``sample``. :func:`make_sampler`
builds the sampler a config asks for, with the dataset's checks and its LHF weights.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from icrl import envs
from icrl.collectors import collect_block
from icrl.config import Config, ConfigError
from icrl.histories import HistoryBatch
from icrl.integrity import quick_check
from icrl.methods import method_of
from icrl.spaces import EnvSpec
from icrl.steps import MemorySteps, ShardSteps
from icrl.store import HistoryStore


OBS_FIELDS = ("obs", "ctx_obs", "ctx_next_obs", "query_obs", "wm_next_obs")  # sample fields in obs units
ACTION_FIELDS = ("prev_action", "target", "ctx_action")  # sample fields in action units (Box families)


class HistorySampler:
    """Random AD windows or DPT samples from histories held in memory.

    The method (``kind``, :mod:`icrl.methods`) lays out each sample from the drawn histories and
    window starts; the draws of histories, starts and weights are the sampler's.

    Args:
        batch: all histories (``HistoryStore.load()``), or their steps read from the shards
            (:class:`icrl.steps.ShardSteps`).
        kind: the method's name, "ad" or "dpt".
        length: AD window length T or DPT context length n, in steps.
        weights: (n_histories,) non-negative per-history weights, or None for all ones.
        weighting: "none", "sample" or "loss".
        readouts: DPT: prefixes read out per batch, a random subset of 0..n (0 = all).
        discrete_actions: actions are Discrete integers (False: Box floats, stored (N, *shape)).
        symmetries: ``(obs_matrix (k, k), action_matrix (d, d))`` pairs to augment samples with
            (module doc); empty for none.
        world_model: DICP (``icrl.models.dicp``): AD windows also carry the labels of the query
            actions, ``wm_reward`` (B, T) r_t and ``wm_next_obs`` (B, T, k) the stored o_{t+1};
            DPT's labels are its context's own (r_j, s'_j). With ``readouts`` > 0 a random subset of
            that many queries per batch, ``wm_steps`` (AD) or ``wm_prefixes`` (DPT), drawn after
            every other draw of the batch.
    """

    def __init__(self, batch: HistoryBatch | ShardSteps, kind: str, length: int, weights: np.ndarray | None = None,
                 weighting: str = "none", readouts: int = 0, discrete_actions: bool = True,
                 world_model: bool = False, symmetries: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> None:
        self.kind, self.length, self.weighting, self.readouts = kind, length, weighting, readouts
        self.symmetries = [(torch.as_tensor(o, dtype=torch.float32), torch.as_tensor(a, dtype=torch.float32))
                           for o, a in symmetries]
        self.discrete, self.world_model = discrete_actions, world_model
        self.steps = batch if isinstance(batch, ShardSteps) else MemorySteps(batch, discrete_actions)
        self.offsets, self.lengths, self.task = self.steps.offsets, self.steps.lengths, self.steps.task
        if world_model and not self.steps.has("next_obs"):
            raise ValueError("DICP's world model learns o_{t+1} from next_obs; these histories have no next_obs per step")
        self.method = method_of(kind)
        self.method.check_data(self.steps)
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
        shards = getattr(self.steps, "shards", None)
        if shards is not None:  # this process's share of the shards (DDP): draws only histories there
            mine = np.isin(self.steps.history_shards(), shards) * (w if weighting == "sample" else 1.0)
            if mine.sum() <= 0:
                raise ValueError(f"shards {shards} hold no history to sample")
            self.p = mine / mine.sum()

    def partners(self, rng: np.random.Generator, h: np.ndarray) -> np.ndarray:
        """For every history in ``h``, one of the same task: drawn by weight ("sample" weighting)
        or uniformly among the task's histories (itself included: then another window of it)."""
        out = np.empty_like(h)
        for i, j in enumerate(h):
            same = np.flatnonzero(self.task == self.task[j])  # (m,) histories of j's task
            w = self.weights[same] if self.p is not None else np.ones(len(same))
            out[i] = same[rng.choice(len(same), p=w / w.sum())] if w.sum() > 0 else j
        return out

    def sample(self, rng: np.random.Generator, batch_size: int, h: np.ndarray | None = None,
               paired: bool = False) -> dict[str, torch.Tensor]:
        """One batch of model inputs, targets and loss weights, as CPU tensors.

        Args:
            rng: the sampling generator.
            batch_size: samples per batch (even when ``paired``).
            h: the histories to use (default: drawn by weight, with replacement).
            paired: two halves of segments of the same tasks, with ``task_ids`` (module doc).
        """
        if h is None and paired:
            if batch_size % 2:
                raise ValueError(f"a paired batch needs an even batch size, got {batch_size}")
            first = rng.choice(len(self.lengths), size=batch_size // 2, p=self.p)  # (B/2,)
            h = np.concatenate((first, self.partners(rng, first)))  # (B,)
        elif h is None:
            h = rng.choice(len(self.lengths), size=batch_size, p=self.p)  # (B,)
        start = rng.integers(0, self.lengths[h] - self.length + 1)  # (B,) window start within history
        idx = (self.offsets[h] + start)[:, None] + np.arange(self.length)  # (B, L) flat step indices
        loss_w = self.weights[h] if self.weighting == "loss" else np.ones(batch_size)
        out = {"weights": torch.as_tensor(loss_w, dtype=torch.float32)}
        if paired:
            out["task_ids"] = torch.as_tensor(self.task[h])  # (B,)
        out.update(self.method.sample(self.steps, h, start, idx, rng, self.readouts, self.world_model))
        return self.augment(out, rng)

    def augment(self, out: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Map every sample of a batch by one of the symmetries, drawn with ``rng`` (none: unchanged)."""
        if not self.symmetries:
            return out
        g = torch.as_tensor(rng.integers(len(self.symmetries), size=len(out["weights"])))  # (B,)
        obs_m = torch.stack([o for o, _ in self.symmetries])[g]  # (B, k, k)
        act_m = torch.stack([a for _, a in self.symmetries])[g]  # (B, d, d)
        for key in out:
            if key in OBS_FIELDS or key in ACTION_FIELDS:
                m = obs_m if key in OBS_FIELDS else act_m
                x = out[key]  # (B, ..., n): every row of sample b by its matrix (a NaN sentinel row stays NaN)
                out[key] = torch.einsum("bij,bmj->bmi", m, x.reshape(len(x), -1, x.shape[-1])).reshape(x.shape)
        return out


class StreamSampler:
    """Samples on fresh tasks every batch: the collect stage run live, nothing on disk.

    Each batch draws ``batch_size`` tasks from the training prior, runs the configured source
    algorithms on them (split by ``fractions`` as in collection) and samples one AD window or DPT
    context from each history. For DPT with the ``dpt_random`` source this is the DPT paper's
    pretraining distribution (Lee et al. 2023, §5.1) with an unlimited number of tasks.

    Args:
        kind: "ad" or "dpt".
        env_id, env_kwargs: a family whose tasks can be sampled (``split() is None``).
        length: AD window / DPT context length, at most one history.
        algorithms, fractions, params: as ``collect.algorithms``, ``collect.fractions`` and
            ``CollectConfig.algorithm_params()``.
        episodes: episodes per history.
        readouts: DPT readout prefixes per batch (0 = all); DICP's queries per batch.
        world_model: DICP's labels too (see ``HistorySampler``).
    """

    def __init__(self, kind: str, env_id: str, env_kwargs: dict, length: int, algorithms: list[str],
                 fractions: list[float] | None = None, params: dict | None = None, episodes: int = 1,
                 readouts: int = 0, world_model: bool = False) -> None:
        self.kind, self.env_id, self.env_kwargs, self.length, self.readouts = kind, env_id, env_kwargs, length, readouts
        self.world_model = world_model
        self.algorithms, self.fractions, self.params, self.episodes = algorithms, fractions or [], params or {}, episodes
        self.dist = envs.task_distribution(env_id, **env_kwargs)
        self.discrete = EnvSpec.of(self.dist).discrete_actions
        if self.dist.split() is not None:
            raise ValueError(f"{env_id} has a finite task set: collect a dataset of its training tasks instead")

    def sample(self, rng: np.random.Generator, batch_size: int, paired: bool = False) -> dict[str, torch.Tensor]:
        from icrl.collect import source_counts

        if paired:  # two histories of every task: rows i and i + B/2
            if batch_size % 2:
                raise ValueError(f"a paired batch needs an even batch size, got {batch_size}")
            half = self.dist.sample(batch_size // 2, rng)
            tasks = np.concatenate((half, half))
        else:
            tasks = self.dist.sample(batch_size, rng)
        counts = source_counts(batch_size, self.fractions, len(self.algorithms))
        parts, start = [], 0
        for k, (name, count) in enumerate(zip(self.algorithms, counts)):
            if count == 0:
                continue
            parts.append(collect_block(self.env_id, self.env_kwargs, name, self.params, tasks=tasks[start:start + count],
                                       task_index=np.arange(start, start + count), run_index=np.zeros(count, np.int64),
                                       source_index=k, seed_seq=np.random.SeedSequence(rng.integers(2**63)),
                                       episodes=self.episodes))
            start += count
        batch = HistoryBatch.concat(parts)
        sampler = HistorySampler(batch, self.kind, self.length, readouts=self.readouts, discrete_actions=self.discrete,
                                 world_model=self.world_model)
        out = sampler.sample(rng, batch_size, h=np.arange(batch_size))
        if paired:
            out["task_ids"] = torch.as_tensor(np.tile(np.arange(batch_size // 2), 2))  # (B,)
        return out


def make_sampler(cfg: Config, run_dir: Path, spec: EnvSpec, weights: np.ndarray | None = None,
                 weighting: str = "none", share: tuple[int, int] = (0, 1)) -> tuple[Any, int]:
    """The batch sampler of ``cfg.data`` and the sequence length it produces (AD: T; DPT: n).

    A dataset gets the cheap check at start (:func:`icrl.integrity.quick_check`); its values and
    checksums are checked as they are read: all at once in memory, or window by window with
    ``data.streaming``, where process ``share = (rank, world)`` of a DDP run samples from its own
    shards (every ``world``-th), if there are at least as many shards as processes.
    """
    d, kind, method = cfg.data, cfg.model.kind, method_of(cfg.model.kind)
    if d.source == "stream":
        if d.episode_stride > 1 or d.symmetries:
            key = "episode_stride: subsampling" if d.episode_stride > 1 else "symmetries: augmentation"
            raise ConfigError(f"data.{key} applies to histories on disk (data.source: dataset)")
        steps = spec.horizon * cfg.collect.episodes
        n = method.length(d, spec.horizon, steps)
        if n > steps:
            raise ConfigError(f"data.{method.length_key}: {n}-step samples are longer than the {steps}-step "
                              f"histories of the stream (env horizon x collect.episodes)")
        try:
            return StreamSampler(kind, cfg.env.id, cfg.env.kwargs, n, cfg.collect.algorithms, cfg.collect.fractions,
                                 cfg.collect.algorithm_params(), cfg.collect.episodes, d.readouts,
                                 world_model=cfg.model.world_model), n
        except ValueError as e:
            raise ConfigError(f"data.source: {e}") from None
    symmetries = family_symmetries(cfg)
    path = Path(d.dataset) if d.dataset else run_dir / "data"
    problems = quick_check(path)  # manifest, sizes, index: a damaged dataset is a clear error, not a traceback
    if problems:
        raise ConfigError(f"data.dataset: {problems[0]}" + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))
    if d.streaming and d.episode_stride > 1:
        raise ConfigError("data.episode_stride: subsampling episodes needs the dataset in memory (data.streaming: false)")
    try:
        store = HistoryStore(path, check="index" if d.streaming else "content", cache_bytes=d.cache_mb << 20)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise ConfigError(f"data.dataset: {str(e).splitlines()[0]}") from None
    with contextlib.nullcontext() if d.streaming else store:  # a stream keeps its store open
        if store.env_id != cfg.env.id:
            raise ConfigError(f"data.dataset: {path} holds {store.env_id} histories but env.id is {cfg.env.id}")
        try:
            stored = store.spec
        except ValueError as e:
            raise ConfigError(f"data.dataset: {e}") from None
        if not stored.same_world(spec):
            raise ConfigError(f"data.dataset: {path} was collected with obs {stored.observation_space} and actions "
                              f"{stored.action_space}, but {cfg.env.id} with these env.kwargs has obs "
                              f"{spec.observation_space} and actions {spec.action_space}; collect again or use the "
                              f"kwargs it was collected with")
        if stored.horizon != spec.horizon:
            raise ConfigError(f"data.dataset: {path} was collected with {stored.horizon}-step episodes but "
                              f"{cfg.env.id} with these env.kwargs has {spec.horizon}; use the kwargs it was collected with")
        if d.streaming:
            rank, world = share
            n_shards = len(store.shard_starts) - 1
            batch = ShardSteps(store, spec.discrete_actions, stored, list(cfg.model.reward_values) or None,
                               list(range(rank, n_shards, world)) if 1 < world <= n_shards else None)
        else:
            batch = store.load()
        if weights is None and cfg.filter.enabled:  # LHF: scores and weights next to the shards
            weights, weighting = lhf_weights(cfg, path, store)
    if not d.streaming:
        batch = batch.every_episode(d.episode_stride)  # after LHF: the scores judge the whole history
    if batch.lengths.min() == 0:
        raise ConfigError(f"data.episode_stride: {int((batch.lengths == 0).sum())} histories have fewer than "
                          f"{d.episode_stride} episodes")
    length = method.length(d, spec.horizon, int(batch.lengths.min()))
    try:
        return HistorySampler(batch, kind, length, weights, weighting, d.readouts, spec.discrete_actions,
                              world_model=cfg.model.world_model, symmetries=symmetries), length
    except ValueError as e:
        stride = f" (histories as kept by data.episode_stride={d.episode_stride})" if d.episode_stride > 1 else ""
        raise ConfigError(f"data: {e}{stride}") from None


def family_symmetries(cfg: Config) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The env family's symmetries when ``data.symmetries`` asks for them (``load_config`` checked
    that it declares some), else none."""
    if not cfg.data.symmetries:
        return ()
    return tuple(envs.task_distribution(cfg.env.id, **cfg.env.kwargs).symmetries)


def lhf_weights(cfg: Config, path: Path, store: HistoryStore) -> tuple[np.ndarray, str]:
    """The LHF weights for ``cfg.filter`` of the dataset at ``path`` (open as ``store``), as the filter
    stage wrote them; training only reads them (a missing or stale file is a ConfigError naming the
    command that writes it)."""
    from icrl.filtering import load_weights

    loaded = load_weights(store, cfg)
    if loaded is None:
        raise ConfigError(f"filter: {path} has no LHF weights for this config's filter section and seed {cfg.seed} "
                          f"(or the data changed since); write them with `icrl filter --config CONFIG --data {path}` "
                          f"(with the same overrides), or `icrl run`")
    return loaded


def stream_rows(sampler: Any, rng: np.random.Generator, batch_size: int, keys: tuple[str, str]) -> np.ndarray:
    """A field of four stream batches (the first of ``keys`` a batch holds: AD's name, DPT's), its
    (B, T, ...) rows flattened to (N, ...), drawn with their own generator ``rng``."""
    rows = []
    for _ in range(4):
        b = sampler.sample(rng, batch_size)
        x = b[keys[0]] if keys[0] in b else b[keys[1]]  # (B, T, ...)
        rows.append(x.reshape(-1, *x.shape[2:]))  # (B*T, ...)
    return torch.cat(rows).numpy()  # (N, ...)


def in_memory(sampler: Any) -> dict[str, np.ndarray] | None:
    """The step arrays of a sampler that holds its dataset in memory, else None (a stream, or
    windows read from the shards)."""
    steps = getattr(sampler, "steps", None)
    return steps.arrays if isinstance(steps, MemorySteps) else None


def training_obs(sampler: Any, rng: np.random.Generator, batch_size: int) -> np.ndarray:
    """Observations the model trains on, (N, k), for the Box normalisation statistics: the whole
    dataset in memory (under every symmetry the samples are mapped by), or a few batches of a
    stream or of windows read from the shards."""
    arrays = in_memory(sampler)
    if arrays is not None:
        return np.concatenate([arrays["obs"] @ m.numpy().T for m, _ in sampler.symmetries]) if sampler.symmetries \
            else arrays["obs"]
    return stream_rows(sampler, rng, batch_size, ("obs", "ctx_obs"))  # (N, k)


def training_rewards(sampler: Any, rng: np.random.Generator, batch_size: int) -> np.ndarray:
    """Rewards the model trains on, (N,), for DICP's reward normalisation: the whole dataset in
    memory, or a few batches of a stream or of windows read from the shards."""
    arrays = in_memory(sampler)
    if arrays is not None:
        return arrays["reward"]
    return stream_rows(sampler, rng, batch_size, ("wm_reward", "ctx_reward"))  # (N,)
