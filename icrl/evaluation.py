"""Online evaluation on unseen tasks (docs/architecture.md#evaluation), and the DPT paper's offline mode.

The model (weights frozen, stepping with its KV cache) and every baseline act on the same eval
tasks with the same random numbers: each method's vector env is seeded from the same
``SeedSequence``, and the envs draw their noise per step whatever the action. Bandits (the spec's
``reports_regret``) report the cumulative expected regret per step, MDPs the return per in-context
episode, and, where the env reports ``info["success"]``, the success rate per episode as well
(``other_metrics``).
"""
from __future__ import annotations

import json
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
from icrl.histories import HistoryBatch, atomic_write
from icrl.methods import method_of
from icrl.models.encoders import first_action
from icrl.planning import CachedImaginer, PlanSettings, beam_search, candidate_search, context_steps
from icrl.precision import autocast, resolve_precision
from icrl.spaces import EnvSpec, space_to_dict

_EVAL_TASKS, _EVAL_RUN = 0, 1  # spawn keys under eval.seed
_POLICY = 2  # child of the run sequence that seeds every method's own generator (the env uses 0)
SCHEMA = "icrl.results/v1"


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


def per_task(c: np.ndarray, n_tasks: int, rollouts: int) -> np.ndarray:
    """(N, L) per-task means of one method's rows: the rollouts of each task and, where the rows of
    several training seeds are stacked, the seeds averaged.

    Rows are ordered seed, task, rollout (``eval_tasks`` repeats each task ``rollouts`` times in a
    row; ``aggregate_seeds`` stacks the seeds' arrays).
    """
    rows, L = c.shape[0], c.shape[1:]
    if n_tasks < 1 or rollouts < 1 or rows % (n_tasks * rollouts):
        raise ValueError(f"{rows} rows are not seeds x {n_tasks} tasks x {rollouts} rollouts")
    return c.reshape(rows // (n_tasks * rollouts), n_tasks, rollouts, *L).mean(axis=(0, 2))  # (N, L)


def summarise(curves: dict[str, np.ndarray], n_tasks: int | None = None, rollouts: int = 1) -> tuple[dict, dict]:
    """Mean and standard error over tasks of every method's curve, and its summary.

    The unit is the task: the rollouts of one task share the task (and a seed's model), so they are
    not independent draws; each task's rows are averaged first (:func:`per_task`), then the mean
    and ``std(ddof=1) / sqrt(N)`` are taken over the N per-task means. With several training seeds
    a task's mean averages the seeds too, so the stderr is that of the seed-averaged model over the
    eval tasks; the spread the training seed adds is ``final_stderr_seeds`` (``aggregate_seeds``).

    Args:
        curves: ``{method: (rows, L)}`` per-rollout curves.
        n_tasks: the number of eval tasks; None: every row is a task.
        rollouts: rollouts per task.
    """
    out, summary = {}, {}
    for m, c in curves.items():
        c = per_task(c, n_tasks or len(c), rollouts)  # (N, L)
        mean = c.mean(0)
        stderr = c.std(0, ddof=1) / np.sqrt(len(c)) if len(c) > 1 else np.zeros_like(mean)
        out[m] = {"mean": mean.tolist(), "stderr": stderr.tolist()}
        summary[m] = {"final": float(mean[-1]), "final_stderr": float(stderr[-1]), "mean_over_curve": float(mean.mean())}
    return out, summary


def stderr_over(n_tasks: int, rollouts: int, n_seeds: int = 1) -> str:
    """The words ``results.json`` states the unit of its stderr in."""
    averaged = ([f"{rollouts} rollouts"] if rollouts > 1 else []) + ([f"{n_seeds} training seeds"] if n_seeds > 1 else [])
    return f"tasks (n={n_tasks}" + (f"; {' and '.join(averaged)} averaged per task)" if averaged else ")")


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


def summarise_all(curves: dict[str, np.ndarray], n_tasks: int, rollouts: int, n_seeds: int = 1) -> dict[str, Any]:
    """``curves``/``summary`` of the main metric, ``other_metrics`` and ``stderr_over`` from a flat
    dict of per-rollout curves whose keys are ``method`` (the main metric) or ``metric.method``
    (e.g. ``success_rate.ad``); stderrs over tasks (:func:`summarise`)."""
    main = {k: c for k, c in curves.items() if "." not in k}
    mean_curves, summary = summarise(main, n_tasks, rollouts)
    out: dict[str, Any] = {"curves": mean_curves, "summary": summary,
                           "stderr_over": stderr_over(n_tasks, rollouts, n_seeds)}
    others = sorted({k.split(".", 1)[0] for k in curves if "." in k})
    if others:
        out["other_metrics"] = {}
        for name in others:
            c, s = summarise({k.split(".", 1)[1]: v for k, v in curves.items() if k.startswith(name + ".")},
                             n_tasks, rollouts)
            out["other_metrics"][name] = {"curves": c, "summary": s}
    return out


def write_results(out_dir: str | Path, results: dict[str, Any], curves: dict[str, np.ndarray]) -> dict[str, Any]:
    """``results.json`` and ``curves.npz`` (every rollout's curve, to aggregate seeds) into ``out_dir``,
    each written whole or not at all (results last: its presence means the evaluation finished)."""
    import io

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **curves)
    atomic_write(out_dir / "curves.npz", buffer.getvalue())
    atomic_write(out_dir / "results.json", json.dumps(results, indent=1).encode())
    return results


def training_probes(run_dir: str | Path) -> list[dict[str, float]]:
    """The ``train.eval_every`` probes of a run's metrics.jsonl: step, training seconds, final, mean.

    Probe rows carry ``probe/final`` and ``probe/mean_over_curve``; runs written before the probes
    had their own namespace carry ``eval/final`` and ``eval/mean_over_curve``, read the same.
    """
    path = Path(run_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    out = []
    for r in rows:
        ns = "probe" if "probe/final" in r else "eval" if "eval/final" in r else None
        if ns is not None:
            out.append({"step": r["train/step"], "train_s": r["time/train_s"], "final": r[f"{ns}/final"],
                        "mean_over_curve": r[f"{ns}/mean_over_curve"]})
    return out


def aggregate_seeds(run_dirs: list[Path], seeds: list[int], walls: list[float], out_dir: str | Path,
                    train_dirs: list[Path] | None = None) -> dict[str, Any]:
    """One ``results.json`` over the runs of several training seeds (their ``curves.npz``).

    A method's rows are stacked over the seeds (the model: seeds x tasks x rollouts rows); a
    baseline whose curves are identical in every run (same eval tasks and random numbers) counts
    once. The ± is over the eval tasks, each task's mean averaging its rollouts and the seeds
    (:func:`summarise`): the seeds share the eval tasks, so a (seed, task) mean is not an
    independent draw, and the tasks are the sample taken from the task distribution. What the
    training seed adds is reported next to it: ``final_stderr_seeds`` of a method that differs by
    seed is the stderr over the seeds of each seed's final value (mean over its tasks), and
    ``per_seed`` keeps each seed's summary, wall time (collect + train + eval) and the probes of
    ``train.eval_every`` (quality against training time, from ``train_dirs``, by default the run
    folders); ``wall_seconds`` is the sum of the wall times.
    """
    runs = [json.loads((Path(d) / "results.json").read_text()) for d in run_dirs]
    arrays = [dict(np.load(Path(d) / "curves.npz")) for d in run_dirs]
    curves, by_seed = {}, []
    for m in arrays[0]:
        rows = [a[m] for a in arrays]
        same = all(np.array_equal(r, rows[0]) for r in rows[1:])
        curves[m] = rows[0] if same else np.concatenate(rows)
        if not same:
            by_seed.append(m)
    n_tasks, rollouts = runs[0]["n_tasks"], runs[0].get("n_rollouts_per_task", 1)
    results = {**runs[0], **summarise_all(curves, n_tasks, rollouts, len(seeds)), "seeds": list(seeds),
               "per_seed": {str(s): {"summary": r["summary"], "wall_seconds": w, "probes": training_probes(d)}
                            for s, r, w, d in zip(seeds, runs, walls, train_dirs or run_dirs)},
               "checkpoint": None, "wall_seconds": float(sum(walls))}
    for key in by_seed:
        finals = np.array([a[key][:, -1].mean() for a in arrays])  # (S,) each seed's final value
        name, method = key.split(".", 1) if "." in key else (None, key)
        summary = results["summary"] if name is None else results["other_metrics"][name]["summary"]
        summary[method]["final_stderr_seeds"] = float(finals.std(ddof=1) / np.sqrt(len(finals)))
    results["config"] = {**results["config"], "seed": seeds[0], "seeds": list(seeds)}
    return write_results(out_dir, results, curves)


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of every method's final value, best first."""
    label = "final regret" if results["metric"] == "cumulative_regret" else "final return"
    rows = sorted(results["summary"].items(), key=lambda kv: kv[1]["final"],
                  reverse=results["metric"] == "episode_return")
    lines = [f"{'method':<10} {label:>14} {'± stderr':>9} {'mean over curve':>16}"]
    lines += [f"{m:<10} {s['final']:>14.3f} {s['final_stderr']:>9.3f} {s['mean_over_curve']:>16.3f}" for m, s in rows]
    if "stderr_over" in results:
        lines.append(f"stderr over {results['stderr_over']}")
    return "\n".join(lines)
