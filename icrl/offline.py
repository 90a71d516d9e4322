"""Offline evaluation of DPT on bandits (Lee et al. 2023, §5.1, "offline"): read a fixed dataset
of n transitions of an unseen task, then choose one arm; report the suboptimality mu* - mu_chosen.

The datasets are the random contexts of the pretraining distribution (``dpt_random``) on the eval
tasks. DPT takes the argmax of its readout after n transitions (all sizes in one pass); the
baselines choose from the same data: Emp (argmax empirical mean over pulled arms), LCB (pessimism,
argmax mu_hat - c/sqrt(n_a)) and Thompson (argmax of one Gaussian posterior sample).
Written to ``results_offline.json`` next to ``results.json``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icrl import envs
from icrl.checkpoint import load_model
from icrl.collectors import child_seed_sequence, collect_block
from icrl.collectors.bandit import empirical_means, gaussian_posterior
from icrl.config import Config, ConfigError
from icrl.evaluation import eval_tasks

_OFFLINE = 3  # spawn key under eval.seed


def offline_choices(counts: np.ndarray, sums: np.ndarray, cfg: Config, sigma: float,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each baseline's chosen arm from per-arm (N, K) pull counts and reward sums."""
    c = cfg.collect
    pulled = counts > 0
    emp = np.where(pulled, empirical_means(sums, counts), -np.inf)
    lcb = np.where(pulled, emp - c.ucb_c / np.sqrt(np.maximum(counts, 1)), -np.inf)
    mean, std = gaussian_posterior(sums, counts, c.thompson_prior_mean, c.thompson_prior_std, sigma)
    return {"emp": emp.argmax(1), "lcb": lcb.argmax(1), "thompson": (mean + std * rng.normal(size=mean.shape)).argmax(1)}


def evaluate_offline(cfg: Config, checkpoint: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Suboptimality of DPT and the offline baselines after datasets of ``eval.offline_sizes``."""
    start = time.perf_counter()
    sizes = sorted({int(s) for s in cfg.eval.offline_sizes})
    model, mcfg = load_model(checkpoint)
    model.eval()
    if mcfg.kind != "dpt":
        raise ConfigError("eval.offline_sizes: offline evaluation is DPT's mode; this checkpoint is AD")
    if sizes[-1] > mcfg.block_size or sizes[0] < 0:
        raise ConfigError(f"eval.offline_sizes: sizes must lie in [0, block_size={mcfg.block_size}], got {sizes}")
    tasks, split = eval_tasks(cfg)
    n_tasks = len(tasks)
    env_kwargs = {**cfg.eval_env_kwargs(), "horizon": max(sizes[-1], 1)}
    seq = np.random.SeedSequence(cfg.eval.seed, spawn_key=(_OFFLINE,))
    data = collect_block(cfg.env.id, env_kwargs, "dpt_random", {}, tasks=tasks, task_index=np.arange(n_tasks),
                         run_index=np.zeros(n_tasks, np.int64), source_index=0, seed_seq=seq)
    dist = envs.task_distribution(cfg.env.id, **env_kwargs)
    means = dist.means(tasks)  # (N, K)
    gap = means.max(1, keepdims=True) - means  # (N, K) suboptimality of each arm
    n, K = sizes[-1], means.shape[1]
    obs = data.steps["obs"].reshape(n_tasks, -1, 1)[:, :n]  # (N, n, 1)
    actions = data.steps["action"].reshape(n_tasks, -1)[:, :n]  # (N, n)
    rewards = data.steps["reward"].reshape(n_tasks, -1)[:, :n]  # (N, n)
    next_obs = data.steps["next_obs"].reshape(n_tasks, -1, 1)[:, :n]  # (N, n, 1)
    with torch.no_grad():
        logits = model(torch.as_tensor(obs), torch.as_tensor(actions), torch.as_tensor(rewards, dtype=torch.float32),
                       torch.as_tensor(next_obs), torch.as_tensor(obs[:, 0] if n else np.zeros((n_tasks, 1), np.int64)),
                       torch.as_tensor(sizes))  # (N, J, K)
    choices = {"dpt": logits.argmax(-1).numpy()}  # (N, J)
    rng = np.random.default_rng(child_seed_sequence(seq, 1))
    sigma = float(getattr(dist, "sigma", 0.5))
    onehot = np.eye(K)[actions]  # (N, n, K)
    counts = np.concatenate([np.zeros((n_tasks, 1, K)), np.cumsum(onehot, 1)], 1)  # (N, n+1, K) after j pulls
    sums = np.concatenate([np.zeros((n_tasks, 1, K)), np.cumsum(onehot * rewards[..., None], 1)], 1)
    per_size = [offline_choices(counts[:, j], sums[:, j], cfg, sigma, rng) for j in sizes]
    for m in per_size[0]:
        choices[m] = np.stack([p[m] for p in per_size], 1)  # (N, J)
    curves = {}
    for m, a in choices.items():
        sub = np.take_along_axis(gap, a, 1)  # (N, J) suboptimality of the chosen arm
        curves[m] = {"mean": sub.mean(0).tolist(), "stderr": (sub.std(0, ddof=1) / np.sqrt(n_tasks)).tolist()}
    results = {"schema": "icrl.results_offline/v1", "env": cfg.env.id, "env_kwargs": cfg.eval_env_kwargs(),
               "task_split": split, "n_tasks": n_tasks, "metric": "suboptimality", "x": "dataset_size",
               "sizes": sizes, "curves": curves, "checkpoint": str(checkpoint), "seed": cfg.seed,
               "wall_seconds": time.perf_counter() - start}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results_offline.json").write_text(json.dumps(results, indent=1))
    return results
