"""How far a trained DPT is from the Bayes-optimal posterior P(a* | D) that its loss targets.

Draws contexts from the config's training distribution (its stream or dataset), or with
``--contexts own`` from the model's own online rollouts (sampling at ``eval.temperature`` on fresh
tasks, the contexts it meets when deployed), reads the model out after every prefix j = 0..n and
compares it with the exact posterior under the env family's prior (icrl/posterior.py). Per range
of j it prints, in nats: the Bayes loss E[H(P)], the model's loss against the posterior
E[-sum_a P(a) log q(a)], their difference E[KL(P || q)], and the model's loss on the sampled
labels (an unbiased but noisier estimate of the second column).
Bandit families with a known prior only: Gaussian, Bernoulli and linear bandits.

    python scripts/posterior_gap.py --config configs/dpt_linear_bandit.yaml \
        --checkpoint runs/dpt_linear_bandit/checkpoint [--contexts own] [--batches 8] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from icrl import envs
from icrl.checkpoint import load_model
from icrl.collectors import run_policy
from icrl.config import load_config
from icrl.data import HistorySampler
from icrl.policies import ModelPolicy
from icrl.posterior import arm_posterior_probs, cross_entropy, entropy, linear_posterior_probs
from icrl.spaces import EnvSpec
from icrl.data import make_sampler


def prefix_sums(x: np.ndarray) -> np.ndarray:
    """Sums over the first j steps for j = 0..n: (B, n, ...) -> (B, n+1, ...)."""
    return np.concatenate((np.zeros_like(x[:, :1], dtype=np.float64), np.cumsum(x, axis=1)), axis=1)


def posterior(dist, actions: np.ndarray, rewards: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """P(a* | first j transitions) for every prefix: actions, rewards (B, n) -> (B, n+1, K)."""
    if isinstance(dist, envs.LinearBanditTaskDistribution):
        x = dist.features[actions]  # (B, n, d)
        xtx = prefix_sums(x[..., :, None] * x[..., None, :])  # (B, n+1, d, d)
        xtr = prefix_sums(x * rewards[..., None])  # (B, n+1, d)
        return linear_posterior_probs(xtx, xtr, dist.features, dist.sigma, rng)
    onehot = actions[..., None] == np.arange(dist.n_arms)  # (B, n, K)
    counts, sums = prefix_sums(onehot), prefix_sums(onehot * rewards[..., None])  # (B, n+1, K) each
    return arm_posterior_probs(counts, sums, sigma=getattr(dist, "sigma", None), prior=dist.prior,
                               alpha=dist.prior_alpha, beta=dist.prior_beta)


class OwnRollouts:
    """Batches of the model's own online contexts, in the layout of the training samplers."""

    def __init__(self, model: torch.nn.Module, cfg, dist, n: int) -> None:
        self.model, self.cfg, self.dist, self.n = model, cfg, dist, n

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        policy = ModelPolicy(self.model, batch_size, rng, temperature=self.cfg.eval.temperature)
        histories = run_policy(self.cfg.env.id, self.cfg.env.kwargs, policy, self.dist.sample(batch_size, rng),
                               np.random.SeedSequence(rng.integers(2**63)))
        return HistorySampler(histories, "dpt", self.n).sample(rng, batch_size, h=np.arange(batch_size))


def ranges(n: int) -> list[tuple[int, int]]:
    """Prefix ranges [lo, hi) covering 0..n, finer where the posterior moves fastest."""
    edges = [e for e in (0, 1, 5, 20, 50, 100, 200, 300, 500, 1000) if e <= n] + [n + 1]
    return list(zip(edges[:-1], edges[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--contexts", choices=["train", "own"], default="train",
                    help="the training distribution's contexts, or the model's own online rollouts")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the table here")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    args = ap.parse_args()

    cfg = load_config(args.config, [*args.overrides, "data.readouts=0"])  # read out after every prefix
    if cfg.model.kind != "dpt":
        raise SystemExit("posterior_gap: the model must be a DPT (its loss targets P(a* | D))")
    dist = envs.task_distribution(cfg.env.id, **cfg.env.kwargs)
    if not isinstance(dist, envs.BanditTaskDistribution):
        raise SystemExit(f"posterior_gap: {cfg.env.id} has no known-prior posterior; use a bandit family")
    model, _ = load_model(args.checkpoint, torch.device("cpu"))
    model.eval()
    sampler, n = make_sampler(cfg, Path(args.checkpoint).parent, EnvSpec.for_env(cfg.env.id, cfg.env.kwargs))
    if args.contexts == "own":
        sampler = OwnRollouts(model, cfg, dist, n)
    rng = np.random.default_rng(args.seed)
    bayes, model_ce, label_ce = [], [], []
    for _ in range(args.batches):
        b = sampler.sample(rng, args.batch_size)
        with torch.no_grad():
            logits = model(b["ctx_obs"], b["ctx_action"], b["ctx_reward"], b["ctx_next_obs"], b["query_obs"])
        log_q = torch.log_softmax(logits.double(), dim=-1).numpy()  # (B, n+1, K)
        p = posterior(dist, b["ctx_action"].numpy(), b["ctx_reward"].numpy().astype(np.float64), rng)  # (B, n+1, K)
        bayes.append(entropy(p))
        model_ce.append(cross_entropy(p, log_q))
        label_ce.append(-np.take_along_axis(log_q, b["target"].numpy()[:, None, None], axis=-1)[..., 0])
    bayes, model_ce, label_ce = (np.concatenate(v) for v in (bayes, model_ce, label_ce))  # (N, n+1) each
    rows = []
    for lo, hi in [*ranges(n), (0, n + 1)]:
        h, m, lab = bayes[:, lo:hi].mean(), model_ce[:, lo:hi].mean(), label_ce[:, lo:hi].mean()
        rows.append({"prefix": [lo, hi - 1], "bayes": h, "model": m, "kl": m - h, "model_on_labels": lab})
    own = f"the model's own at T {cfg.eval.temperature}"
    source = own if args.contexts == "own" else ", ".join(cfg.collect.algorithms)
    print(f"{cfg.env.id}, {len(bayes)} contexts of {n} transitions ({source}), "
          f"checkpoint {args.checkpoint}; nats per readout")
    print(f"{'prefix j':>12} {'Bayes H(P)':>11} {'model CE':>9} {'KL(P||q)':>9} {'CE labels':>10}")
    for r in rows:
        label = "all" if r is rows[-1] else f"{r['prefix'][0]}-{r['prefix'][1]}"
        print(f"{label:>12} {r['bayes']:11.4f} {r['model']:9.4f} {r['kl']:9.4f} {r['model_on_labels']:10.4f}")
    if args.json:
        out = {"config": args.config, "checkpoint": args.checkpoint, "contexts": args.contexts,
               "n_contexts": len(bayes), "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
