"""Supervised pretraining of AD and DPT (DESIGN §8): ``learn -> sample batch -> step``.

AdamW with linear warm-up and cosine decay, global-norm gradient clipping, weighted
cross-entropy; bf16 autocast and SDPA flash kernels on CUDA. A run folder holds
``checkpoint/``, ``metrics.jsonl`` and the data. ``resume=True`` restores weights, optimizer,
step and every RNG state, so the continued run equals the uninterrupted one.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from icrl.checkpoint import load_model, load_training_state, save_checkpoint
from icrl.config import Config, ConfigError
from icrl.data import EnvSpec, HistorySampler, StreamSampler
from icrl.histories import HistoryStore
from icrl.models import make_model as build_model
from icrl.models.losses import ad_loss, dpt_loss
from icrl.models.transformer import ModelConfig
from icrl.tracking import Tracker

_TRAIN = 3  # spawn key of the training data stream (collection uses 0..2)


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


def make_sampler(cfg: Config, run_dir: Path, spec: EnvSpec, weights: np.ndarray | None = None) -> tuple[Any, int]:
    """The batch sampler of ``cfg.data`` and the sequence length it produces (AD: T; DPT: n)."""
    d, kind = cfg.data, cfg.model.kind
    if d.source == "stream":
        steps = spec.horizon * cfg.collect.episodes
        n = (d.seq_len if kind == "ad" else d.context_len) or steps
        if n > steps:
            raise ConfigError(f"data: a {n}-step {'window' if kind == 'ad' else 'context'} is longer than the "
                              f"{steps}-step histories of the stream (env horizon x collect.episodes)")
        try:
            return StreamSampler(kind, cfg.env.id, cfg.env.kwargs, n, cfg.collect.algorithms, cfg.collect.fractions,
                                 cfg.collect.algorithm_params(), cfg.collect.episodes, d.readouts), n
        except ValueError as e:
            raise ConfigError(f"data.source: {e}") from None
    path = Path(d.dataset) if d.dataset else run_dir / "data"
    try:
        store = HistoryStore(path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data.dataset: {str(e).splitlines()[0]}") from None
    with store:
        if store.env_id != cfg.env.id:
            raise ConfigError(f"data.dataset: {path} holds {store.env_id} histories but env.id is {cfg.env.id}")
        batch = store.load()
    length = (d.seq_len if kind == "ad" else d.context_len) or int(batch.lengths.min() if kind == "ad" else spec.horizon)
    try:
        return HistorySampler(batch, kind, length, weights, d.weighting, d.readouts), length
    except ValueError as e:
        raise ConfigError(f"data: {e}") from None


def model_config(cfg: Config, spec: EnvSpec, length: int) -> ModelConfig:
    m = cfg.model
    block = m.block_size or length
    if length > block:
        raise ConfigError(f"model.block_size: {block} is shorter than the training context of {length} steps")
    return ModelConfig(kind=m.kind, obs_sizes=spec.obs_sizes, n_actions=spec.n_actions, n_layer=m.n_layer,
                       n_head=m.n_head, n_embd=m.n_embd, dropout=m.dropout, block_size=block,
                       window=(m.window or None) if m.kind == "ad" else None, rope=m.rope)


def loss_of(model: torch.nn.Module, kind: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Weighted cross-entropy of one batch (AD: every position; DPT: every prefix 0..n)."""
    if kind == "ad":
        logits = model(batch["obs"], batch["prev_action"], batch["prev_reward"])  # (B, T, A)
        return ad_loss(logits, batch["target"], batch["weights"])
    logits = model(batch["ctx_obs"], batch["ctx_action"], batch["ctx_reward"], batch["ctx_next_obs"],
                   batch["query_obs"], batch.get("prefixes"))  # (B, J, A)
    return dpt_loss(logits, batch["target"], batch["weights"])


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def train(cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True,
          weights: np.ndarray | None = None) -> Path:
    """Train the model of ``cfg`` into ``run_dir/checkpoint`` and return that folder.

    Args:
        cfg: the experiment config (``model``, ``data``, ``train`` sections).
        run_dir: the run folder; the dataset is ``data.dataset`` or ``run_dir/data``.
        resume: continue from ``run_dir/checkpoint``.
        progress: show a tqdm bar.
        weights: per-history weights (LHF) for ``data.weighting``.
    """
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint"
    device = pick_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    spec = EnvSpec.of(cfg.env.id, cfg.env.kwargs)
    sampler, length = make_sampler(cfg, run_dir, spec, weights)
    mcfg = model_config(cfg, spec, length)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_TRAIN,)))
    torch.manual_seed(cfg.seed)
    step = 0
    if resume:
        model, saved = load_model(ckpt, device)
        if saved != mcfg:
            raise ConfigError(f"--resume: {ckpt} holds a model {saved.to_dict()} but the config builds {mcfg.to_dict()}")
    else:
        model = build_model(mcfg, torch.Generator().manual_seed(cfg.seed)).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.train.lr,
                                  betas=(0.9, 0.95), fused=device.type == "cuda")
    if resume:
        state, optim_state = load_training_state(ckpt)
        optimizer.load_state_dict(optim_state)
        step = state["step"]
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext())
    tracker = Tracker(run_dir, cfg, "train")
    tokens_per_sample = length if mcfg.kind == "ad" else length + (cfg.data.readouts or length + 1)
    bar = tqdm(total=cfg.train.steps, initial=step, desc="train", unit="step", disable=not progress)
    model.train()
    t0, window_t, window_loss, last_good = time.perf_counter(), time.perf_counter(), [], None

    def checkpoint() -> None:
        nonlocal last_good
        save_checkpoint(ckpt, model, mcfg, optimizer, {"step": step, "numpy_rng": _rng_state(rng),
                                                       "torch_rng": torch.get_rng_state().tolist()})
        last_good = step

    while step < cfg.train.steps:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device, non_blocking=True) for k, v in sampler.sample(rng, cfg.train.batch_size).items()}
        with autocast:
            loss = loss_of(model, mcfg.kind, batch)
        if not torch.isfinite(loss):
            where = f"the last good checkpoint is step {last_good} in {ckpt}" if last_good is not None else "no checkpoint was written yet"
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; {where}. Lower train.lr or raise train.warmup_steps")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or float("inf"))
        optimizer.step()
        step += 1
        window_loss.append(loss.detach())
        bar.update(1)
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            now = time.perf_counter()
            mean_loss = torch.stack(window_loss).mean().item()
            dt = (now - window_t) / len(window_loss)
            tracker.log({"train/step": step, "train/loss": mean_loss, "train/lr": lr, "train/grad_norm": float(grad_norm),
                         "time/step_ms": 1000 * dt, "time/tokens_per_s": tokens_per_sample * cfg.train.batch_size / dt,
                         "time/elapsed_s": now - t0})
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            window_t, window_loss = now, []
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
            checkpoint()
    bar.close()
    tracker.close()
    return ckpt
