"""Supervised pretraining of any method (docs/architecture.md#training): ``learn -> sample batch -> step``.

The batches come from :func:`icrl.data.make_sampler`, the loss from the method
(:func:`icrl.methods.method_loss`) plus the backbone's auxiliary loss. AdamW with linear warm-up and
cosine decay, global-norm gradient clipping; bf16 autocast where ``train.precision`` has it
(:mod:`icrl.precision`), SDPA flash kernels on CUDA. A run folder holds ``checkpoint/``,
``metrics.jsonl`` and the data. ``resume=True`` restores weights, optimizer, step and every RNG
state, so the continued run equals the uninterrupted one.
"""
from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from icrl.checkpoint import load_model, load_training_state, max_model_bytes, save_checkpoint
from icrl.config import Config, ConfigError, to_dict
from icrl.data import in_memory, make_sampler, training_obs, training_rewards
from icrl.steps import DataError
from icrl.evaluation import check_model_fits, probe
from icrl.lock import folder_lock
from icrl.methods import make_model as build_model
from icrl.methods import method_loss, method_of
from icrl.models import check_batch
from icrl.models.config import ModelConfig
from icrl.plots import plot_training
from icrl.precision import autocast as precision_context, resolve_precision
from icrl.runs import save_config
from icrl.spaces import EnvSpec, space_to_dict
from icrl.tracking import Tracker

_TRAIN = 3  # spawn key of the training data stream (collection uses 0..2, LHF 4)
_OBS_STATS = 5  # spawn key of the stream batches that give Box observations their statistics
_REWARD_STATS = 6  # spawn key of the stream batches that give DICP's regressed rewards their statistics
_PRECISION = 8  # spawn key of the batch that train.precision=auto times (the training stream stays as it was)
_SELECT_BY = "probe/mean_over_curve"  # the probe figure that chooses RUN/checkpoint-best
_SELECT_SEED = 7919  # offset of the probe's eval seed on families without a training split


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA device is available")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def lr_at(step: int, cfg: Config) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def model_config(cfg: Config, spec: EnvSpec, length: int) -> ModelConfig:
    m = cfg.model
    block = m.block_size or length
    if length > block:
        raise ConfigError(f"model.block_size: {block} is shorter than the training context of {length} steps")
    try:
        mcfg = ModelConfig(kind=m.kind, obs_space=space_to_dict(spec.observation_space),
                           action_space=space_to_dict(spec.action_space), head=m.head, backbone=m.backbone,
                           n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd, dropout=m.dropout, block_size=block,
                           window=m.window or None, rope=m.rope, state_size=m.state_size,
                           n_token_experts=m.n_token_experts, n_task_experts=m.n_task_experts,
                           experts_per_token=m.experts_per_token, balance_weight=m.balance_weight,
                           contrast_weight=m.contrast_weight, router_tau=m.router_tau, world_model=m.world_model,
                           world_model_coef=m.world_model_coef, reward_values=list(m.reward_values))
    except ValueError as e:  # "ModelConfig.<field> ..." names the config key model.<field>
        msg = str(e).splitlines()[0]
        raise ConfigError(f"model.{msg[len('ModelConfig.'):]}" if msg.startswith("ModelConfig.") else f"model: {msg}") from None
    if mcfg.memory_bytes() > max_model_bytes():  # a model its own checkpoint could not be loaded as
        raise ConfigError(f"model: about {mcfg.memory_bytes() / 2**30:.1f} GiB for one sequence, over the "
                          f"{max_model_bytes() / 2**30:.1f} GiB bound (raise it with ICRL_MAX_MODEL_BYTES)")
    return mcfg


def check_trainable(cfg: Config, spec: EnvSpec) -> None:
    """ConfigError before any work when the method cannot learn on this env (DPT needs an oracle)
    or the model's attention window is longer than the windows it would be trained on."""
    method, d = method_of(cfg.model.kind), cfg.data
    if method.needs_oracle and not spec.has_oracle:
        raise ConfigError(f"model.kind: {method.name.upper()} learns the oracle's action, and {cfg.env.id} has no "
                          f"oracle_action")
    length = method.length(d, spec.horizon, spec.horizon * (cfg.collect.episodes // d.episode_stride))
    if paired_batches(cfg.model) and cfg.train.batch_size % 2:
        raise ConfigError(f"train.batch_size: t2mir's contrastive loss pairs two segments per task, so the batch "
                          f"size must be even, got {cfg.train.batch_size} (or set model.contrast_weight=0)")
    if cfg.model.window > length:
        raise ConfigError(f"model.window: {cfg.model.window} steps is longer than the {length}-step windows the "
                          f"model trains on (data.{method.length_key}); it would attend over spans it never saw")


def selection_config(cfg: Config) -> Config:
    """The probe's config: as many rollouts as ``icrl eval`` runs, on tasks it never evaluates on,
    so that choosing the best checkpoint by it does not peek at the held-out ones: a finite
    family's training tasks (one rollout each), or fresh draws of another eval seed."""
    import dataclasses

    from icrl import envs

    split = envs.task_distribution(cfg.env.id, **cfg.eval_env_kwargs()).split()
    if split is None:
        ev = dataclasses.replace(cfg.eval, seed=cfg.eval.seed + _SELECT_SEED)
    else:
        ev = dataclasses.replace(cfg.eval, split="train", rollouts=1, n_tasks=len(split[1]) * cfg.eval.rollouts)
    return dataclasses.replace(cfg, eval=ev)


def better(score: float, best: float | None, lower_is_better: bool) -> bool:
    return best is None or (score < best if lower_is_better else score > best)


def loss_of(model: torch.nn.Module, kind: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The method's weighted loss on one batch (:func:`icrl.methods.method_loss`) and the backbone's
    auxiliary loss of the same pass (T2MIR's balance and contrastive terms; None for a backbone
    without one). :func:`loss_parts` gives DICP's terms apart."""
    return loss_parts(model, kind, batch)[:2]


def loss_parts(model: torch.nn.Module, kind: str, batch: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
    """:func:`loss_of` and the detached terms of a DICP loss (``loss_policy``, ``loss_reward``,
    ``loss_next_obs``; empty without a world model)."""
    total, parts = method_loss(model, kind, batch)
    return total, getattr(model, "module", model).aux_loss(), parts


def paired_batches(model: Any) -> bool:
    """Whether training batches pair two segments per task (T2MIR's contrastive loss), for a
    ``ModelConfig`` or the config's ``model`` section."""
    return model.backbone == "t2mir" and model.contrast_weight > 0


class Distributed:
    """DDP under ``torchrun`` (RANK/WORLD_SIZE set): gloo on CPU, nccl on GPU; a no-op otherwise.

    Rank 0 logs and checkpoints; every rank draws its own batches from a generator seeded by
    (seed, rank), so weighted sampling stays weighted (a distributed sampler with replacement).
    """

    def __init__(self) -> None:
        self.rank, self.world, self.local_rank = 0, 1, 0
        if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch.distributed as dist

            self.dist = dist
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def master(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        """Mean of a scalar over ranks."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        self.dist.all_reduce(t)
        return float(t.item()) / self.world

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (a stop request reaches all of them together)."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)])
        self.dist.all_reduce(t)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            self.dist.destroy_process_group()


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and stops."""

    def __init__(self) -> None:
        self.requested = False
        self.signal = 0
        main = threading.current_thread() is threading.main_thread()  # handlers only install there
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested, self.signal = True, signum

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint; the message says how to resume."""


def make_optimizer(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on biases and LayerNorm gains), as in nanoGPT,
    and not on what the backbone keeps out of it (S5's Lambda, B and step sizes)."""
    kept = model.no_weight_decay()
    decay = [p for p in model.parameters() if p.dim() >= 2 and p not in kept]
    no_decay = [p for p in model.parameters() if p.dim() < 2 or p in kept]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.train.lr,
                             betas=(0.9, 0.95), fused=device.type == "cuda")


def train(cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True,
          weights: np.ndarray | None = None, weighting: str = "none") -> Path:
    """Train the model of ``cfg`` into ``run_dir/checkpoint`` and return that folder.

    Under ``torchrun`` each of the W processes draws ``train.batch_size`` samples per step (a
    global batch of W x batch_size) and gradients are averaged by DDP.

    Args:
        cfg: the experiment config (``model``, ``data``, ``train`` sections).
        run_dir: the run folder; the dataset is ``data.dataset`` or ``run_dir/data``.
        resume: continue from ``run_dir/checkpoint``.
        progress: show a tqdm bar.
        weights: per-history weights (LHF), one per history of the dataset.
        weighting: how ``weights`` act: "sample" (draw probability), "loss" (weighted CE) or "none".

    The run folder's lock is held throughout; its resolved config goes to ``RUN/config.json`` and
    into every checkpoint. With ``train.eval_every``, ``RUN/checkpoint-best`` keeps the model of
    the best probe (:func:`selection_config`: never the held-out tasks) beside the last one.

    Raises:
        FloatingPointError: a non-finite loss; the message names the step and the last checkpoint.
        TrainingInterrupted: SIGINT/SIGTERM, after a checkpoint of the last finished step.
    """
    run_dir = Path(run_dir)
    with folder_lock(run_dir, "train"):
        return _train(cfg, run_dir, resume, progress, weights, weighting)


def _train(cfg: Config, run_dir: Path, resume: bool, progress: bool, weights: np.ndarray | None,
           weighting: str) -> Path:
    ckpt, best_ckpt = run_dir / "checkpoint", run_dir / "checkpoint-best"
    ddp = Distributed()
    device = pick_device(cfg.train.device)
    if device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    spec = EnvSpec.for_env(cfg.env.id, cfg.env.kwargs)
    check_trainable(cfg, spec)
    sampler, length = make_sampler(cfg, run_dir, spec, weights, weighting, (ddp.rank, ddp.world))
    mcfg = model_config(cfg, spec, length)
    arrays = in_memory(sampler)
    if arrays is not None:  # a dataset in memory: its obs/actions must fit the model (a stream checks its reads)
        try:
            check_batch(mcfg, arrays["obs"], arrays["action"])
        except ValueError as e:
            raise ConfigError(f"data.dataset: {str(e).splitlines()[0]}") from None
        if mcfg.reward_values:  # DICP's reward classes must cover every reward it learns from
            other = np.setdiff1d(arrays["reward"], np.asarray(mcfg.reward_values, dtype=np.float32))
            if len(other):
                raise ConfigError(f"model.reward_values: the dataset has rewards outside {mcfg.reward_values}, e.g. "
                                  f"{float(other[0])}; list every reward value, or leave it empty to regress rewards")
    # rank 0 keeps the single-process stream, so a 1-process run and rank 0 of a DDP run draw alike
    key = (_TRAIN,) if ddp.rank == 0 else (_TRAIN, ddp.rank)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=key))
    torch.manual_seed(cfg.seed + ddp.rank)
    step, best = 0, None
    if resume:
        model, saved = load_model(ckpt, device)
        if saved != mcfg:
            raise ConfigError(f"--resume: {ckpt} holds a model {saved.to_dict()} but the config builds {mcfg.to_dict()}")
    else:
        model = build_model(mcfg, torch.Generator().manual_seed(cfg.seed))
        if not spec.discrete_obs:  # Box observations: normalised by the training data's statistics
            stats_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_OBS_STATS,)))
            model.obs_enc.set_stats(training_obs(sampler, stats_rng, cfg.train.batch_size))
        if mcfg.world_model and not mcfg.reward_values:  # DICP regresses rewards in normalised units
            stats_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_REWARD_STATS,)))
            model.world.set_reward_stats(training_rewards(sampler, stats_rng, cfg.train.batch_size))
        model = model.to(device)
    optimizer = make_optimizer(model, cfg, device)
    if resume:
        state, optim_state = load_training_state(ckpt, optimizer, ddp.world)
        optimizer.load_state_dict(optim_state)
        step, best = state["step"], state.get("best")
        rng.bit_generator.state = state["numpy_rng"][ddp.rank]
        torch.set_rng_state(torch.tensor(state["torch_rng"][ddp.rank], dtype=torch.uint8))
    if cfg.train.eval_every:  # fail now, not at the first probe
        check_model_fits(cfg, mcfg)
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model
    requested = cfg.train.precision
    if resume and requested == "auto":  # the run's own choice; a run from before the key had fp32 on CPU
        requested = state.get("precision", "fp32" if device.type == "cpu" else "auto")

    def precision_batch() -> dict[str, torch.Tensor]:  # its own stream: the training batches stay as they were
        precision_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_PRECISION,)))
        sample = sampler.sample(precision_rng, cfg.train.batch_size, paired=paired_batches(mcfg))
        return {k: v.to(device) for k, v in sample.items()}

    def step_loss(m: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:  # what a step backpropagates
        action_loss, aux = loss_of(m, mcfg.kind, b)
        return action_loss if aux is None else action_loss + aux

    precision, timing = resolve_precision(requested, device, model, precision_batch, step_loss)
    precision = ddp.gather(precision)[0]  # every rank runs as rank 0 measured
    autocast = precision_context(device, precision)
    if ddp.master:
        save_config(run_dir, to_dict(cfg))
    tracker = Tracker(run_dir, cfg, "train", enabled=ddp.master)
    precision_log = {"time/precision_bf16": int(precision == "bf16")}  # goes into the first metric row
    if timing["measured"]:
        precision_log.update({"time/bf16_speedup": timing["speedup"], "time/fp32_step_ms": timing["fp32_ms"],
                              "time/bf16_step_ms": timing["bf16_ms"]})
    if progress and ddp.master:
        print(f"precision: {precision}" + (f" (bf16 ran {timing['speedup']:.2f}x as fast as fp32)"
                                           if timing["measured"] else ""))
    select_cfg, lower_is_better = selection_config(cfg), spec.reports_regret
    tokens_per_sample = method_of(mcfg.kind).sample_tokens(length, cfg.data.readouts)
    if mcfg.world_model:  # DICP's query-action readouts
        tokens_per_sample += cfg.data.readouts if 0 < cfg.data.readouts < length else length
    bar = tqdm(total=cfg.train.steps, initial=step, desc="train", unit="step", disable=not progress or not ddp.master)
    model.train()
    stop = StopRequest()
    t0, window_t, window_loss, window_aux, last_good = time.perf_counter(), time.perf_counter(), [], [], None
    window_parts: dict[str, list[torch.Tensor]] = {}
    paired = paired_batches(mcfg)

    def checkpoint() -> None:
        nonlocal last_good
        rngs = ddp.gather((rng.bit_generator.state, torch.get_rng_state().tolist()))
        if ddp.master:
            save_checkpoint(ckpt, model, mcfg, optimizer, {"step": step, "numpy_rng": [r[0] for r in rngs],
                                                           "torch_rng": [r[1] for r in rngs], "best": best,
                                                           "precision": precision},
                            spec, to_dict(cfg))
        last_good = step

    try:
        while step < cfg.train.steps:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                sample = sampler.sample(rng, cfg.train.batch_size, paired=paired)
            except DataError as e:  # a corrupted chunk met mid-run: the last checkpoint stands
                where = f"the last checkpoint is step {last_good} in {ckpt}" if last_good is not None else "no checkpoint yet"
                raise ConfigError(f"data.dataset: {e} ({where})") from None
            batch = {k: v.to(device, non_blocking=True) for k, v in sample.items()}
            with autocast:
                action_loss, aux, parts = loss_parts(net, mcfg.kind, batch)
                loss = action_loss if aux is None else action_loss + aux
            if not torch.isfinite(loss):
                where = (f"the last good checkpoint is step {last_good} in {ckpt}" if last_good is not None
                         else "no checkpoint was written yet")
                raise FloatingPointError(f"loss is {loss.item()} at step {step}; {where}. "
                                         "Lower train.lr or raise train.warmup_steps")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or float("inf"))
            optimizer.step()
            model.after_step()
            step += 1
            window_loss.append(action_loss.detach())
            if aux is not None:
                window_aux.append(aux.detach())
            for name, value in parts.items():
                window_parts.setdefault(name, []).append(value)
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                now = time.perf_counter()
                mean_loss = ddp.mean(torch.stack(window_loss).mean().item())
                dt = (now - window_t) / len(window_loss)
                aux_log = {"train/aux_loss": ddp.mean(torch.stack(window_aux).mean().item())} if window_aux else {}
                aux_log.update({f"train/{name}": ddp.mean(torch.stack(v).mean().item()) for name, v in window_parts.items()})
                tracker.log({"train/step": step, "train/loss": mean_loss, **aux_log, "train/lr": lr,
                             "train/grad_norm": float(grad_norm), "time/step_ms": 1000 * dt,
                             "time/tokens_per_s": tokens_per_sample * cfg.train.batch_size * ddp.world / dt,
                             "time/elapsed_s": now - t0, **precision_log})
                precision_log = {}
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                window_t, window_loss, window_aux, window_parts = now, [], [], {}
            if cfg.train.eval_every and (step % cfg.train.eval_every == 0 or step == cfg.train.steps) and ddp.master:
                t_probe = time.perf_counter()
                scores = probe(select_cfg, model, precision)
                tracker.log({"train/step": step, **scores, "time/train_s": t_probe - t0})
                score = scores[_SELECT_BY]
                if better(score, None if best is None else best["score"], lower_is_better):
                    best = {"step": step, "score": score}
                    save_checkpoint(best_ckpt, model, mcfg, optimizer, {"step": step, "best": best}, spec, to_dict(cfg))
                spent = time.perf_counter() - t_probe  # the training clock excludes the probes
                t0, window_t = t0 + spent, window_t + spent
            stopping = ddp.any(stop.requested)
            if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps or stopping:
                checkpoint()
            if stopping:
                ddp.barrier()  # rank 0 finishes the checkpoint before any rank leaves
                raise TrainingInterrupted(f"stopped by signal {stop.signal or 'on another rank'} after step {step}; "
                                          f"checkpoint written to {ckpt}; continue with --resume")
        ddp.barrier()  # no rank leaves the group while rank 0 still writes the last checkpoint
    finally:
        stop.restore()
        bar.close()
        tracker.close()
        ddp.close()
    if ddp.master:
        plot_training(run_dir / "metrics.jsonl", run_dir / "training.png")  # loss and probes against steps
    return ckpt
