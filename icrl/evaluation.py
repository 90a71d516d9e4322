"""Online evaluation on unseen tasks (docs/architecture.md#evaluation), and the DPT paper's offline mode.

The model (weights frozen, stepping with its KV cache) and every baseline act on the same eval
tasks with the same random numbers: each method's vector env is seeded from the same
``SeedSequence``, and the envs draw their noise per step whatever the action. Bandits (the spec's
``reports_regret``) report the cumulative expected regret per step, MDPs the return per in-context
episode, and, where the env reports ``info["success"]``, the success rate per episode as well
(``other_metrics``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from icrl import envs
from icrl.checkpoint import load_model
from icrl.collectors import child_seed_sequence, make_policy, run_policy
from icrl.config import Config, ConfigError, to_dict
from icrl.histories import HistoryBatch
from icrl.methods import method_of
from icrl.planning import PlanSettings, context_steps
from icrl.policies import ModelPolicy, OraclePolicy
from icrl.precision import resolve_precision
from icrl.results import SCHEMA, summarise_all, write_results
from icrl.spaces import EnvSpec, space_to_dict

_EVAL_TASKS, _EVAL_RUN = 0, 1  # spawn keys under eval.seed
_POLICY = 2  # child of the run sequence that seeds every method's own generator (the env uses 0)


def eval_tasks(cfg: Config) -> tuple[np.ndarray, str]:
    """The eval tasks, each repeated ``eval.rollouts`` times: a finite family's ``eval.split`` (test:
    held out, train: the first ``eval.n_tasks`` of the training split), else fresh draws from the
    eval prior."""
    dist = envs.task_distribution(cfg.env.id, **cfg.eval_env_kwargs())
    split = dist.split()
    if split is not None:
        train, test = split
        tasks, name = (test, "test") if cfg.eval.split == "test" else (train[:cfg.eval.n_tasks], "train")
    elif cfg.eval.split == "train":
        raise ConfigError(f"eval.split: {cfg.env.id} draws its tasks from a prior and has no training "
                          f"split; leave eval.split at test")
    else:
        rng = np.random.default_rng(np.random.SeedSequence(cfg.eval.seed, spawn_key=(_EVAL_TASKS,)))
        tasks, name = dist.sample(cfg.eval.n_tasks, rng), "sampled"
    return np.repeat(tasks, cfg.eval.rollouts, axis=0), name


def episode_success(batch: HistoryBatch, n: int) -> np.ndarray:
    """(N, E) 1.0 where the env reported ``success`` at some step of the episode, else 0.0."""
    success = np.asarray(batch.steps["success"], dtype=bool)  # (S,)
    ends = np.asarray(batch.steps["terminated"], bool) | np.asarray(batch.steps["truncated"], bool)  # (S,)
    hist = np.repeat(np.arange(n), batch.lengths)  # (S,) history of each step
    ended_before = np.concatenate([[0], np.cumsum(ends)])[:-1]  # (S,) episode ends before each step
    episode = ended_before - ended_before[batch.offsets[:-1]][hist]  # (S,) episode index within its history
    E = len(batch.episode_returns[0])
    out = np.zeros((n, E))
    keep = episode < E
    np.maximum.at(out, (hist[keep], episode[keep]), success[keep].astype(np.float64))
    return out


def curves_of(batch: HistoryBatch, metric: str, n: int) -> dict[str, np.ndarray]:
    """The per-task curves of one method: ``{metric: (N, L)}`` (cumulative regret per step, or the
    return of each episode), plus ``success_rate`` (N, E) where the env reports success."""
    if metric == "cumulative_regret":
        return {metric: np.cumsum(batch.steps["regret"].reshape(n, -1), axis=1)}
    out = {metric: np.stack(batch.episode_returns)}
    if "success" in batch.steps:
        out["success_rate"] = episode_success(batch, n)
    return out


def source_curve(cfg: Config, dist: Any, tasks: np.ndarray, seq: np.random.SeedSequence,
                 metric: str) -> dict[str, np.ndarray]:
    """The training data's source algorithms on the eval tasks, mixed by ``collect.fractions``.

    Task i is run by the source the collection plan would give it (a seeded permutation of the
    fractions), so a mixture of Thompson and UCB is compared as the mixture the model imitated.
    """
    from icrl.collect import source_counts

    n = len(tasks)
    counts = source_counts(n, cfg.collect.fractions, len(cfg.collect.algorithms))
    owner = np.random.default_rng(child_seed_sequence(seq, _POLICY + 1)).permutation(
        np.repeat(np.arange(len(counts)), counts))  # (n,) source of each eval task
    curves: dict[str, np.ndarray] | None = None
    for k, name in enumerate(cfg.collect.algorithms):
        if not (owner == k).any():
            continue
        rng = np.random.default_rng(child_seed_sequence(seq, _POLICY))
        policy = make_policy(name, n, dist, rng, **cfg.collect.algorithm_params())
        c = curves_of(run_policy(cfg.env.id, cfg.eval_env_kwargs(), policy, tasks, seq, episodes=cfg.eval.episodes),
                      metric, n)
        curves = c if curves is None else curves
        for key in curves:
            curves[key][owner == k] = c[key][owner == k]
    return curves


def model_method(cfg: Config, mcfg: Any) -> str:
    """The results key of a model: its method (``ad``, ``dpt``, ``dicp_ad``, ``dicp_dpt``), with
    ``_noplan`` for a DICP model evaluated with ``eval.planning=false`` (its policy alone)."""
    return mcfg.method + ("_noplan" if mcfg.world_model and not cfg.eval.planning else "")


def plan_settings(cfg: Config, mcfg: Any) -> PlanSettings | None:
    """How a DICP model plans under ``cfg.eval`` (None: it does not: no world model, or planning off)."""
    if not (mcfg.world_model and cfg.eval.planning):
        return None
    horizon = EnvSpec.for_env(cfg.eval.env_id or cfg.env.id, cfg.eval_env_kwargs()).horizon
    e = cfg.eval
    return PlanSettings(beam_width=e.beam_width, plan_depth=e.plan_depth, plan_candidates=e.plan_candidates,
                        plan_order=e.plan_order, horizon=horizon, start=context_steps(mcfg))


def method_curve(cfg: Config, method: str, dist: Any, tasks: np.ndarray, seq: np.random.SeedSequence, metric: str,
                 model: torch.nn.Module | None = None, precision: str = "fp32") -> dict[str, np.ndarray]:
    """Per-task curves of one method (a baseline name, or the model's key, :func:`model_method`) on
    ``tasks``: ``{metric: (N, L)}`` and, where the env reports it, ``success_rate`` (see :func:`curves_of`);
    the model runs at ``precision`` (``fp32`` or ``bf16``, :func:`eval_precision`)."""
    if method == "source":
        return source_curve(cfg, dist, tasks, seq, metric)
    n = len(tasks)
    rng = np.random.default_rng(child_seed_sequence(seq, _POLICY))
    if model is not None and method == model_method(cfg, model.config):
        policy = ModelPolicy(model, n, rng, greedy=cfg.eval.greedy, temperature=cfg.eval.temperature,
                             plan=plan_settings(cfg, model.config), precision=precision)
    elif method == "oracle":
        policy = OraclePolicy(n, dist, rng, tasks)
    else:
        try:
            policy = make_policy(method, n, dist, rng, **cfg.collect.algorithm_params())
        except ValueError as e:
            raise ConfigError(f"eval.baselines: {method}: {e}") from None
    batch = run_policy(cfg.env.id, cfg.eval_env_kwargs(), policy, tasks, seq, episodes=cfg.eval.episodes)
    return curves_of(batch, metric, n)


def run_seq(cfg: Config) -> np.random.SeedSequence:
    """The eval run's random numbers, shared by every method (and by the training probes)."""
    return np.random.SeedSequence(cfg.eval.seed, spawn_key=(_EVAL_RUN,))


def metric_of(spec: EnvSpec) -> str:
    """Bandits report the cumulative regret per step, MDPs the return per episode."""
    return "cumulative_regret" if spec.reports_regret else "episode_return"


def eval_precision(cfg: Config, model: torch.nn.Module, num_envs: int) -> str:
    """The precision the model runs online at: ``train.precision``, where ``auto`` times a few online
    steps of ``num_envs`` rollouts, forward only, under fp32 and bf16 (:mod:`icrl.precision`): a
    one-token step is another workload than a training batch, so ``icrl eval`` measures its own."""
    device = next(model.parameters()).device
    return resolve_precision(cfg.train.precision, device, model, num_envs, online_steps, backward=False)[0]


def online_steps(model: torch.nn.Module, num_envs: int, steps: int = 8) -> None:
    """``steps`` online steps (act, update) of a fresh :class:`ModelPolicy` of ``num_envs`` rollouts
    on zero observations, actions and rewards: what :func:`eval_precision` times (a step costs the
    same whatever the values); the model's own state is not touched."""
    c = model.config
    policy = ModelPolicy(model, num_envs, np.random.default_rng(0))
    obs = np.zeros((num_envs, *c.observation.shape), c.observation.dtype)
    actions = np.zeros((num_envs, *c.action.shape), c.action.dtype)
    rewards, done = np.zeros(num_envs, np.float32), np.zeros(num_envs, bool)
    for _ in range(min(steps, c.capacity or steps)):
        policy.act(obs)
        policy.update(obs, actions, rewards, obs, done, done)


def check_model_fits(cfg: Config, mcfg: Any) -> None:
    """ConfigError unless the model's spaces match the eval env and its context holds the rollout."""
    spec = EnvSpec.for_env(cfg.env.id, cfg.eval_env_kwargs())
    env_obs, env_act = space_to_dict(spec.observation_space), space_to_dict(spec.action_space)
    if (mcfg.obs_space, mcfg.action_space) != (env_obs, env_act):
        raise ConfigError(f"--checkpoint: the model was trained on obs {mcfg.observation} and actions {mcfg.action}, "
                          f"but {cfg.env.id} has obs {spec.observation_space} and actions {spec.action_space}")
    steps = spec.horizon * cfg.eval.episodes
    if mcfg.capacity is not None and steps > mcfg.capacity:
        raise ConfigError(f"eval.episodes: the rollout holds {steps} steps but the full-context {mcfg.kind.upper()} "
                          f"model's block_size is {mcfg.block_size}; train with model.window for rollouts of any length")
    if mcfg.world_model and cfg.eval.planning:
        if mcfg.capacity is not None:
            raise ConfigError("eval.planning: DICP plans once the context is full, and a full-context model's cache "
                              "has no room for imagined steps then; train with model.window, or set eval.planning=false")
        if not mcfg.discrete_actions and mcfg.head != "gaussian":
            raise ConfigError(f"eval.planning: Box-action planning draws candidates from a gaussian head, not "
                              f"{mcfg.head}; train with model.head=gaussian, or set eval.planning=false")


def probe(cfg: Config, model: torch.nn.Module, precision: str | None = None) -> dict[str, float]:
    """The model alone online on the eval tasks, as ``icrl eval`` runs it (used during training to
    record quality against training time), at ``precision`` (None: :func:`eval_precision`; training
    passes the precision it runs at, so its probes cost no measurement).

    Returns:
        ``probe/final`` and ``probe/mean_over_curve`` of the mean curve (return or cumulative
        regret), logged against ``train/step`` (``eval/…`` is the evaluation after training).
    """
    dist = envs.task_distribution(cfg.env.id, **cfg.eval_env_kwargs())
    metric = metric_of(EnvSpec.of(dist))
    tasks, _ = eval_tasks(cfg)
    was_training = model.training
    model.eval()
    try:
        precision = precision or eval_precision(cfg, model, len(tasks))
        curve = method_curve(cfg, model_method(cfg, model.config), dist, tasks, run_seq(cfg), metric,
                             model, precision)[metric].mean(0)  # (L,)
    finally:
        model.train(was_training)
    return {"probe/final": float(curve[-1]), "probe/mean_over_curve": float(curve.mean())}


def evaluate(cfg: Config, checkpoint: str | Path | None, out_dir: str | Path, progress: bool = True,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the model (if ``checkpoint``) and the baselines online on the unseen tasks.

    Writes ``results.json`` (with the entries of ``extra``, e.g. the world the model was trained
    on) and ``curves.npz`` into ``out_dir`` (the plots: ``icrl.pipeline``).

    Returns:
        The results dict (schema ``icrl.results/v1``).
    """
    start = time.perf_counter()
    env_kwargs = cfg.eval_env_kwargs()
    dist = envs.task_distribution(cfg.env.id, **env_kwargs)
    spec = EnvSpec.of(dist)
    tasks, split = eval_tasks(cfg)
    metric = metric_of(spec)
    model = None
    if checkpoint is not None:
        model, mcfg = load_model(checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
        model.eval()
        check_model_fits(cfg, mcfg)
    precision = eval_precision(cfg, model, len(tasks)) if model is not None else "fp32"
    methods = ([model_method(cfg, mcfg)] if model is not None else []) + (cfg.eval.baselines or list(spec.baselines))
    if not spec.has_oracle and "oracle" in methods:
        methods.remove("oracle")
    if model is not None and (method_of(mcfg.kind).imitates_source or metric == "episode_return") \
            and "source" not in methods:
        # a method that imitates its source, and an MDP model learned from its histories: compare
        # with the source's own learning curve on the same tasks
        methods.append("source")
    if "source" in methods and len(cfg.collect.algorithms) == 1 and cfg.collect.algorithms[0] in methods:
        methods.remove(cfg.collect.algorithms[0])  # the same curve as "source" (same tasks, same random numbers)
    seq = run_seq(cfg)
    per_method = {m: method_curve(cfg, m, dist, tasks, seq, metric, model, precision)
                  for m in tqdm(methods, desc="eval", unit="method", disable=not progress)}
    curves = {f"{name}.{m}" if name != metric else m: c for m, cs in per_method.items() for name, c in cs.items()}
    results = {"schema": SCHEMA, "env": cfg.env.id, "env_kwargs": env_kwargs, "task_split": split,
               "n_tasks": len(tasks) // cfg.eval.rollouts, "n_rollouts_per_task": cfg.eval.rollouts, "metric": metric,
               "x": "step" if metric == "cumulative_regret" else "episode",
               **summarise_all(curves, len(tasks) // cfg.eval.rollouts, cfg.eval.rollouts), "spec": spec.to_dict(),
               "checkpoint": str(checkpoint) if checkpoint is not None else None, "config": to_dict(cfg),
               "seed": cfg.seed, "precision": precision, "wall_seconds": time.perf_counter() - start, **(extra or {})}
    return write_results(out_dir, results, curves)
