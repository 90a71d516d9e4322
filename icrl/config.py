"""Typed experiment configs: dataclass schemas, YAML presets, ``key.sub=value`` overrides.

A config is one :class:`Config` holding a section per stage. Every field carries a one-line doc
(``metadata["help"]``), so ``icrl <command> --help`` documents all of them. Loading is strict:
an unknown key (with the closest valid key suggested), a value of the wrong type or out of range
raises :class:`ConfigError` with a one-line message that names the key; the CLI turns it into
exit code 2 before anything is written. The generic machinery (conversion, checks, presets with
``base:``) is :mod:`icrl.typed`; this module holds icrl's schema and the checks that need its envs.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icrl.typed import ConfigError, brief, build, describe as describe_fields, option as _f, read_preset, set_path, suggest

__all__ = ["Config", "ConfigError", "load_config", "validate_env", "import_env_module", "to_dict", "describe"]


@dataclass
class EnvConfig:
    """The environment family and its task distribution."""

    id: str = _f("icrl/GaussianBandit-v0", "gymnasium id of the env family (icrl/<Name>-v0)")
    module: str = _f("", "Python module to import first, one that registers a family of your own (docs/extending.md)")
    kwargs: dict = _f({}, "constructor kwargs of the env and its task distribution (n_arms, horizon, sigma, prior, ...)")


@dataclass
class CollectConfig:
    """Learning-history collection (docs/architecture.md#collection-and-source-algorithms)."""

    algorithms: list[str] = _f(["thompson"], "source algorithms: random, emp, ucb, ucb1, thompson, linucb, dpt_random (bandits); "
                                                 "ppo, noise_distill, random (any env, Discrete or Box actions); psrl (a family with a reward model); "
                                                 "ucbvi (finite MDPs: Discrete or MultiDiscrete observations, Discrete actions)")
    fractions: list[float] = _f([], "fraction of histories per algorithm, in the order of `algorithms` (empty: equal shares)")
    n_tasks: int = _f(1000, "number of training tasks", min=1)
    runs_per_task: int = _f(1, "independent runs (histories) per task", min=1)
    episodes: int = _f(1, "episodes per history (bandits: 1 episode = the whole horizon)", min=1)
    histories_per_shard: int = _f(250, "histories per HDF5 shard; one shard is one deterministic block", min=1)
    backend: str = _f("serial", "where blocks run: serial (this process), process (collect.workers processes) or "
                      "ray (Ray tasks; pip install 'icrl[ray]'); the data are the same whatever the backend",
                      choices=["serial", "process", "ray"])
    workers: int = _f(2, "worker processes of the process backend; CPUs of a local Ray", min=1)
    ray_address: str = _f("", "ray backend: cluster address to attach to (e.g. auto); empty starts a local Ray")
    ucb_c: float = _f(1.0, "exploration constant c of ucb (mu + c/sqrt(n)) and ucb1 (mu + c*sqrt(2 ln t / n))", min=0.0)
    thompson_prior_mean: float = _f(0.5, "Gaussian Thompson sampling: prior mean mu0 of each arm")
    thompson_prior_std: float = _f(math.sqrt(1 / 12), "Gaussian Thompson sampling: prior std sigma0 of each arm", min=1e-9)
    linucb_beta: float = _f(1.0, "LinUCB: width beta of the confidence bonus", min=0.0)
    linucb_lambda: float = _f(1.0, "LinUCB: ridge regulariser lambda of Sigma = lambda*I + sum phi phi^T", min=1e-9)
    ppo_rollout: int = _f(100, "PPO: steps per env between updates (rollout length T)", min=1)
    ppo_epochs: int = _f(4, "PPO: passes over each rollout", min=1)
    ppo_minibatches: int = _f(2, "PPO: minibatches per epoch (each learner's rollout shuffled along time; <= ppo_rollout)",
                              min=1)
    ppo_lr: float = _f(3e-3, "PPO: Adam learning rate", min=1e-12)
    ppo_gamma: float = _f(0.9, "PPO: discount", min=0.0, max=1.0)
    ppo_gae_lambda: float = _f(0.95, "PPO: GAE lambda", min=0.0, max=1.0)
    ppo_clip: float = _f(0.2, "PPO: clip range eps of the probability ratio", min=1e-9)
    ppo_ent_coef: float = _f(0.03, "PPO: entropy-bonus coefficient", min=0.0)
    ppo_vf_coef: float = _f(0.5, "PPO: value-loss coefficient", min=0.0)
    ppo_max_grad_norm: float = _f(0.5, "PPO: clip each learner's gradient norm to this (0 = off)", min=0.0)
    ppo_hidden: int = _f(32, "PPO: width of the two tanh hidden layers of the actor and of the critic", min=1, max=4096)
    ppo_shared: bool = _f(False, "PPO: one learner trained on all streams (DICP) instead of one learner per history")
    ppo_squash: bool = _f(False, "PPO on Box actions: tanh-squash the Gaussian sample into the box (SAC-style, with "
                          "the log-prob correction) instead of letting the env clip it")
    psrl_particles: int = _f(512, "PSRL: prior tasks (particles) per history that the posterior reweighs", min=1)
    psrl_sigma: float = _f(0.05, "PSRL: std of the Gaussian reward likelihood (a tolerance when rewards are exact)",
                           min=1e-9)
    bayes_temperature: float = _f(1.0, "bayes: samples arms from P(a* | D)^(1/T) under the family's exact prior "
                                  "(T = 1: Thompson sampling with the true prior; set it to eval.temperature to see "
                                  "what a perfect DPT does there)", min=1e-6)
    ucbvi_bonus_scale: float = _f(1.0, "UCB-VI: multiplier c of the bonus c * 2H sqrt(log(S A T / delta) / max(1, N(s,a))); "
                                  "1 keeps Dark Room near random for 100 episodes, 0.001 learns (docs/architecture.md)",
                                  min=0.0)

    def algorithm_params(self) -> dict[str, float]:
        """Hyper-parameters handed to every source algorithm."""
        return {k: getattr(self, k) for k in
                ("ucb_c", "thompson_prior_mean", "thompson_prior_std", "linucb_beta", "linucb_lambda",
                 "ppo_rollout", "ppo_epochs", "ppo_minibatches", "ppo_lr", "ppo_gamma", "ppo_gae_lambda", "ppo_clip",
                 "ppo_ent_coef", "ppo_vf_coef", "ppo_max_grad_norm", "ppo_hidden", "ppo_shared", "ppo_squash",
                 "psrl_particles", "psrl_sigma", "ucbvi_bonus_scale", "bayes_temperature")}


@dataclass
class ModelSection:
    """The sequence model (docs/architecture.md#models); its input and output layers come from the env's spaces."""

    kind: str = _f("dpt", "method: ad (Algorithm Distillation) or dpt (Decision-Pretrained Transformer)",
                   choices=["ad", "dpt"])
    backbone: str = _f("transformer", "sequence network: transformer; t2mir (transformer whose last feed-forward is "
                       "a token-wise and a task-wise mixture of experts); s5 (state space layers: constant memory "
                       "online, no window)", choices=["transformer", "t2mir", "s5"])
    n_layer: int = _f(4, "blocks (attention or S5 layers)", min=1)
    n_head: int = _f(4, "attention heads (transformer, t2mir)", min=1)
    n_embd: int = _f(64, "width of the residual stream (a multiple of n_head)", min=8)
    dropout: float = _f(0.0, "dropout probability", min=0.0, max=0.9)
    window: int = _f(0, "attention window K in steps (banded causal mask; AD tokens, DPT context): a rollout "
                     "of any length then runs on a ring cache of K steps; 0 = full causal", min=0)
    rope: bool = _f(True, "RoPE relative positions; false = no positional encoding (a DPT bandit context is a set)")
    head: str = _f("auto", "action head: categorical (Discrete actions); gaussian (NLL, as DICP) or tanh (MSE, as T2MIR) "
                   "for Box actions; auto = categorical or gaussian", choices=["auto", "categorical", "gaussian", "tanh"])
    block_size: int = _f(0, "max tokens of context (AD: train.seq_len; DPT: context length); 0 = derived", min=0)
    state_size: int = _f(64, "s5: HiPPO state size N per layer (even)", min=2)
    n_token_experts: int = _f(6, "t2mir: experts of the token-wise MoE", min=1)
    n_task_experts: int = _f(8, "t2mir: experts of the task-wise MoE (8-12 in T2MIR)", min=1)
    experts_per_token: int = _f(2, "t2mir: top-k experts per token in both MoEs", min=1)
    balance_weight: float = _f(0.1, "t2mir: weight of the token MoE's load-balance loss", min=0.0)
    contrast_weight: float = _f(0.01, "t2mir: weight of the task router's InfoNCE loss (0: no paired batches)", min=0.0)
    router_tau: float = _f(0.005, "t2mir: momentum of the task router's target per optimiser step", min=0.0, max=1.0)
    world_model: bool = _f(False, "DICP (Son et al. 2025): also predict the reward and next observation of a query "
                           "action, and plan with them online (eval.planning); results key dicp_ad / dicp_dpt")
    world_model_coef: float = _f(1.0, "DICP: lambda of L_policy + lambda (L_reward + L_next_obs)", min=0.0)
    reward_values: list[float] = _f([], "DICP: the env's finite reward set, classified by cross-entropy as the DICP "
                                    "code does on the grid worlds (e.g. [0, 1]); empty = MSE on normalised rewards")


@dataclass
class DataConfig:
    """Where training samples come from (docs/architecture.md#learning-histories-and-storage, #models)."""

    source: str = _f("dataset", "dataset (learning histories on disk) or stream (collect.algorithms run live on "
                     "fresh tasks every batch, nothing on disk)", choices=["dataset", "stream"])
    dataset: str = _f("", "dataset folder; empty: RUN/data written by the collect stage")
    context_len: int = _f(0, "DPT: transitions in a context (readouts after every prefix 0..n); 0 = env horizon", min=0)
    readouts: int = _f(0, "DPT: readout prefixes per batch, drawn at random from 0..n (0 = all n+1); fewer is "
                       "cheaper and still an unbiased estimate of the all-prefix loss", min=0)
    symmetries: bool = _f(False, "augment every training sample by one of the env family's declared symmetries "
                          "(TaskDistribution.symmetries, e.g. the square's 8 on Point-Robot), drawn at random")
    seq_len: int = _f(0, "AD: steps per training window (across episodes of one history); 0 = whole history", min=0)
    episode_stride: int = _f(1, "train on every k-th episode of each history (episodes k-1, 2k-1, ...): a window then "
                             "spans k times as much of the learning process, so the model learns to improve k "
                             "times faster per episode; 1 = every episode", min=1)
    streaming: bool = _f(False, "read training windows from the shards on demand instead of loading the dataset into "
                         "memory (same batches for the same seed; memory flat in the dataset's size)")
    cache_mb: int = _f(64, "streaming: HDF5 chunk cache over all shards, in MiB (the bounded read cache)", min=1)


@dataclass
class FilterConfig:
    """Learning History Filtering (Chen et al. 2025; docs/architecture.md#learning-history-filtering-lhf)."""

    enabled: bool = _f(False, "train on the histories' LHF weights, which `icrl filter` (or `icrl run` before "
                       "training) writes next to the shards")
    lam: float = _f(1.0, "lambda of U = Improvement + lambda * Stability", min=0.0)
    mode: str = _f("linear", "scores to probabilities: linear (min-max within a task) or softmax(U/alpha) first",
                   choices=["linear", "softmax"])
    alpha: float = _f(0.25, "softmax temperature alpha", min=1e-6)
    use: str = _f("resample", "resample (the paper's Algorithm 1), sample (draw histories with probability "
                  "proportional to P) or loss (weight each history's cross-entropy by P)",
                  choices=["resample", "sample", "loss"])
    window: int = _f(50, "bandits: pulls per pseudo-episode for the windowed returns (R_max = window * max mu)", min=1)


@dataclass
class TrainConfig:
    """Supervised pretraining (docs/architecture.md#training)."""

    steps: int = _f(2000, "optimizer steps", min=1)
    batch_size: int = _f(64, "samples (contexts or windows) per step", min=1)
    lr: float = _f(1e-3, "peak learning rate of AdamW", min=0.0)
    weight_decay: float = _f(0.01, "AdamW weight decay", min=0.0)
    warmup_steps: int = _f(100, "linear warm-up steps before the cosine decay", min=0)
    min_lr_ratio: float = _f(0.1, "final learning rate as a fraction of lr", min=0.0, max=1.0)
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = off)", min=0.0)
    log_every: int = _f(50, "steps between metric lines", min=1)
    checkpoint_every: int = _f(500, "steps between checkpoints (one is always written at the end)", min=1)
    eval_every: int = _f(0, "steps between online probes of the model alone (probe/final, probe/mean_over_curve "
                         "against train/step in metrics.jsonl) on tasks other than the held-out ones; they choose "
                         "RUN/checkpoint-best; 0 = off", min=0)
    device: str = _f("auto", "auto (cuda if present), cpu or cuda", choices=["auto", "cpu", "cuda"])
    precision: str = _f("fp32", "fp32, bf16 (autocast, on CPU or CUDA) or auto: bf16 on a CUDA GPU with native bf16, "
                        "on a CPU whichever a few timed steps of this model find faster (icrl/precision.py; the "
                        "choice then depends on the machine and its load, so two runs may differ); training, "
                        "probes and eval", choices=["auto", "fp32", "bf16"])
    threads: int = _f(0, "torch CPU threads; 0 = torch's default", min=0)


@dataclass
class EvalConfig:
    """Online evaluation on unseen tasks (docs/architecture.md#evaluation)."""

    n_tasks: int = _f(200, "unseen tasks to evaluate on (a family with a fixed split evaluates on its held-out "
                      "tasks; with eval.split=train, on at most this many of its training tasks)", min=1)
    seed: int = _f(10_000, "seed of the eval tasks and the shared random numbers (distinct from training)", min=0)
    env_kwargs: dict = _f({}, "eval task distribution: overrides of env.kwargs (prior, sigma, horizon, ...); with "
                          "eval.env_id, that family's kwargs")
    env_id: str = _f("", "evaluate on another env family than the one trained on (deliberate distribution shift, "
                     "recorded in results.json); empty: the checkpoint's own env")
    baselines: list[str] = _f([], "baseline methods; empty = every one that fits the env")
    split: str = _f("test", "tasks of a finite family (Dark Room, Key-to-Door) to evaluate on: test (held out) or "
                    "train (the training split, e.g. to choose eval.temperature without the held-out tasks)",
                    choices=["test", "train"])
    episodes: int = _f(1, "in-context episodes per task (bandits: 1 = the horizon)", min=1)
    rollouts: int = _f(1, "independent rollouts per eval task (a finite family has few held-out tasks: Dark Room 8)",
                       min=1)
    greedy: bool = _f(False, "take the model's argmax instead of sampling from its softmax")
    temperature: float = _f(1.0, "sample the model's actions from softmax(logits / temperature): below 1 sharpens "
                            "what it has learned, 1 is its imitation as trained", min=1e-3)
    offline_sizes: list[int] = _f([], "DPT offline mode: dataset sizes n to read before choosing (empty = off)")
    planning: bool = _f(True, "DICP models: plan with the learned world model once the context is full (key "
                        "dicp_ad / dicp_dpt); false acts with the policy alone (key dicp_ad_noplan / dicp_dpt_noplan)")
    beam_width: int = _f(10, "DICP planning, Discrete actions: beams kept per depth", min=1)
    plan_depth: int = _f(8, "DICP planning, Discrete actions: imagined steps, at most to the episode's end "
                         "(DICP: grid size - 1 = 8 on Dark Room, 16 on Key-to-Door and Permuted Dark Room)", min=1)
    plan_candidates: int = _f(10, "DICP planning, Box actions: the policy mean plus this many - 1 sampled actions, "
                              "the one of highest predicted reward taken", min=1)
    plan_order: str = _f("policy", "DICP planning: order in which a node's actions are expanded (stable ties): policy "
                         "(the policy's sampled order at every node) or root (the policy's at the root, action "
                         "index order below, as the DICP code)", choices=["policy", "root"])


@dataclass
class WandbConfig:
    """Weights & Biases tracking (opt-in; metrics always go to metrics.jsonl)."""

    enabled: bool = _f(False, "log to wandb")
    mode: str = _f("", "wandb mode (online, offline, disabled); empty: leave it to WANDB_MODE",
                   choices=["", "online", "offline", "disabled"])
    project: str = _f("icrl", "wandb project")
    entity: str = _f("", "wandb entity (empty: your default)")
    artifacts: bool = _f(False, "also log results.json and the checkpoint as wandb artifacts")


@dataclass
class Config:
    """One experiment: env, collection, model, training, evaluation, tracking."""

    name: str = _f("experiment", "run name; outputs go to runs/<name>/ unless --out is given")
    seed: int = _f(0, "master seed; the same seed gives byte-identical data", min=0)
    seeds: list[int] = _f([], "icrl run: one whole run per training seed into RUN/seed-<s>/ and RUN/results.json "
                          "aggregating them (empty: one run with `seed`); icrl eval --checkpoint RUN re-evaluates each seed's model")
    env: EnvConfig = field(default_factory=EnvConfig, metadata={"help": "environment"})
    collect: CollectConfig = field(default_factory=CollectConfig, metadata={"help": "collection"})
    model: ModelSection = field(default_factory=ModelSection, metadata={"help": "model"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "training data"})
    filter: FilterConfig = field(default_factory=FilterConfig, metadata={"help": "learning-history filtering"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "training"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "evaluation"})
    wandb: WandbConfig = field(default_factory=WandbConfig, metadata={"help": "tracking"})

    def eval_env_kwargs(self) -> dict:
        """Kwargs of the eval env: the training env's, overridden by ``eval.env_kwargs``; with
        ``eval.env_id`` (another family), ``eval.env_kwargs`` alone."""
        return dict(self.eval.env_kwargs) if self.eval.env_id else {**self.env.kwargs, **self.eval.env_kwargs}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                cls: type = Config) -> Any:
    """Load a config: defaults <- YAML file <- ``key.sub=value`` overrides, strictly validated.

    Args:
        path: a YAML preset, or None for the defaults; a preset may extend another with ``base: FILE``.
        overrides: ``key.sub=value`` strings; values are converted to the field's type.
        cls: the root dataclass.

    Raises:
        ConfigError: one line naming the key: unknown key (closest valid key suggested), wrong
            type, out-of-range value, unreadable file.
    """
    data: Any = read_preset(Path(path)) if path is not None else {}
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"{item}: overrides are key.sub=value")
        key, value = item.split("=", 1)
        set_path(data, key.strip().split("."), value)
    cfg = build(cls, data)
    validate_env(cfg)
    return cfg


def validate_env(cfg: Config) -> None:
    """Check ``env.id`` and ``env.kwargs`` against the registered family, naming the bad key."""
    from icrl import envs

    import_env_module(cfg)
    ids = envs.family_ids()
    if cfg.env.id not in ids:
        raise ConfigError(f"env.id: {_unknown_env(cfg.env.id, ids)}")
    check_env_kwargs(cfg.env.id, cfg.env.kwargs, "env.kwargs.")
    if cfg.eval.env_id and cfg.eval.env_id not in ids:
        raise ConfigError(f"eval.env_id: {_unknown_env(cfg.eval.env_id, ids)}")
    check_env_kwargs(cfg.eval.env_id or cfg.env.id, cfg.eval_env_kwargs(), "eval.env_kwargs.")
    import numpy as np

    from icrl.collectors import POLICIES, make_policy
    from icrl.spaces import EnvSpec, SpaceError

    known = set(POLICIES)
    dist = envs.task_distribution(cfg.env.id, **cfg.env.kwargs)
    try:
        spec = EnvSpec.of(dist)
        EnvSpec.for_env(cfg.eval.env_id or cfg.env.id, cfg.eval_env_kwargs())
    except SpaceError as e:
        raise ConfigError(f"env.id: {e}") from None
    head = cfg.model.head
    if head != "auto" and (head == "categorical") != spec.discrete_actions:
        fit = "categorical" if spec.discrete_actions else "gaussian or tanh"
        raise ConfigError(f"model.head: {head} does not fit the {'Discrete' if spec.discrete_actions else 'Box'} "
                          f"actions of {cfg.env.id}; use {fit} (or auto)")
    if cfg.data.symmetries and not tuple(dist.symmetries):
        raise ConfigError(f"data.symmetries: {cfg.env.id} declares no symmetries (TaskDistribution.symmetries)")
    from icrl.training import model_config

    model_config(cfg, spec, cfg.model.block_size or 1)  # the architecture's own checks (backbone, widths, window)

    for i, name in enumerate(cfg.collect.algorithms):
        if name not in known:
            raise ConfigError(f"collect.algorithms.{i}: unknown algorithm {brief(name)}{suggest('', brief(name, quote=False), known)}")
        try:  # e.g. LinUCB needs arm features, Thompson a bandit reward model
            make_policy(name, 1, dist, np.random.default_rng(0), **cfg.collect.algorithm_params())
        except (ValueError, ArithmeticError) as e:  # arithmetic: e.g. a noise sigma of 1e-313 in a posterior
            raise ConfigError(f"collect.algorithms.{i}: {name} does not fit {cfg.env.id}: {brief(e, quote=False)}") from None
    methods = known | {"oracle", "source"}
    for i, name in enumerate(cfg.eval.baselines):
        if name not in methods:
            raise ConfigError(f"eval.baselines.{i}: unknown method {brief(name)}{suggest('', brief(name, quote=False), methods)}")
    if any(f < 0 for f in cfg.collect.fractions) or (cfg.collect.fractions and sum(cfg.collect.fractions) <= 0):
        raise ConfigError(f"collect.fractions: must be non-negative with a positive sum, got {brief(cfg.collect.fractions)}")
    if cfg.collect.fractions and len(cfg.collect.fractions) != len(cfg.collect.algorithms):
        raise ConfigError(f"collect.fractions: {len(cfg.collect.fractions)} fractions for "
                          f"{len(cfg.collect.algorithms)} algorithms; give one per algorithm or none")
    if any(s < 0 for s in cfg.seeds) or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds: must be distinct non-negative integers, got {brief(cfg.seeds)}")


def _unknown_env(env_id: str, ids: tuple[str, ...]) -> str:
    """Why ``env_id`` is no family: a plain gymnasium env (one task) gets a pointer to the doc."""
    import gymnasium

    if env_id in gymnasium.registry:
        return (f"{brief(env_id)} is a gymnasium env (one task), not an icrl family of tasks; wrap it as a "
                f"family: docs/extending.md")
    return f"unknown env {brief(env_id)}{suggest('', brief(env_id, quote=False), ids)}"


def import_env_module(cfg: Config) -> None:
    """Import ``env.module`` (it registers a user env family); a no-op when empty or imported.

    Whatever the import raises (a SyntaxError, an exception at import time, ``sys.exit``) is a
    one-line :class:`ConfigError` naming the module and the exception; KeyboardInterrupt passes.
    """
    name = cfg.env.module
    if not name:
        return
    import importlib

    if name.startswith("."):
        raise ConfigError(f"env.module: {brief(name)} is a relative module name; give the absolute name "
                          "(e.g. my_package.envs)")
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):  # the module itself
            raise ConfigError(f"env.module: cannot import {brief(name)} (no module named {brief(e.name)}); "
                              "is it on PYTHONPATH?") from None
        raise ConfigError(_import_failure(name, e)) from None
    except (Exception, SystemExit) as e:  # user code: anything it raises is a bad env.module
        raise ConfigError(_import_failure(name, e)) from None


def _import_failure(name: str, e: BaseException) -> str:
    detail = str(e).splitlines()[0] if str(e) else ""
    return (f"env.module: importing {brief(name)} raised {type(e).__name__}"
            f"{': ' + brief(detail, quote=False) if detail else ''}; fix the module (or env.module)")


def _env_params(env_id: str) -> dict[str, Any]:
    """The keyword parameters of a registered env's constructor (``inspect.Parameter`` by name)."""
    import inspect

    import gymnasium

    entry = gymnasium.spec(env_id).entry_point
    env_cls = gymnasium.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    return {n: p for n, p in inspect.signature(env_cls).parameters.items()
            if n != "render_mode" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def resolved_env_kwargs(env_id: str, kwargs: dict) -> dict:
    """``kwargs`` with the env's defaults filled in: two configs of one world compare equal
    whether or not they spell a default out."""
    import inspect

    defaults = {n: p.default for n, p in _env_params(env_id).items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **kwargs}


def check_env_kwargs(env_id: str, kwargs: dict, prefix: str) -> None:
    """Check env kwargs against the env constructor's signature and its own validation."""
    import inspect

    from icrl import envs

    params = _env_params(env_id)
    for k, v in kwargs.items():
        if k not in params:
            raise ConfigError(f"{prefix}{brief(k, quote=False)}: unknown kwarg of {env_id}{suggest(prefix, brief(k, quote=False), params)}")
        default = params[k].default
        if default is not inspect.Parameter.empty and default is not None:
            ok = isinstance(v, type(default)) or (isinstance(default, float) and isinstance(v, int))
            if not ok or (isinstance(v, bool) and not isinstance(default, bool)):
                raise ConfigError(f"{prefix}{k}: expected {type(default).__name__}, got {brief(v)}")
    try:
        envs.task_distribution(env_id, **kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{prefix}{brief(str(e).splitlines()[0] if str(e) else type(e).__name__, 200, quote=False)}") from None


def to_dict(cfg: Any) -> dict:
    """The resolved config as plain data (for manifests, checkpoints and results)."""
    return dataclasses.asdict(cfg)


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per field of the experiment config: the body of ``icrl COMMAND --help``."""
    return describe_fields(cls, prefix)
