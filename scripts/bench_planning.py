"""DICP planning cost per online step: the beam search on forks of the incremental state that share
the rollout's context, on forks that copy it (``state.index``) and re-encoding every node's whole
context with the full pass (the DICP reference code's way).

All three planners run on the same model and the same rollout context and choose the same actions
(checked here on the first repeat; tests/test_dicp.py checks actions, paths and scores on every
backbone); the table gives the median milliseconds per online step (one search for all rollouts,
the planners taking turns) and the ratios to the shared forks, measured side by side in one run.

    python scripts/bench_planning.py --threads 1                  # DICP-AD on Dark Room, 16 and 128 rollouts
    python scripts/bench_planning.py --kind dpt --rollouts 32 --steps 100
"""
from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

from icrl.methods import make_model
from icrl.models import ModelConfig
from icrl.models.encoders import first_action
from icrl.planning import CachedImaginer, ReencodeImaginer, beam_search
from icrl.spaces import space_to_dict

PLANNERS = ("re-encode every node", "copied forks (index)", "shared forks (fork)")


def rollout(model: torch.nn.Module, kind: str, steps: int, n: int, seed: int = 0) -> list:
    """A random Dark Room-like rollout of ``steps`` steps: its root nodes for the three planners."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 9, (n, steps + 1, 2), generator=g)  # (n, T+1, 2)
    act = torch.randint(0, 5, (n, steps), generator=g)  # (n, T)
    rew = (torch.rand(n, steps, generator=g) < 0.1).float()  # (n, T)
    cache, tokens, out = model.new_cache(n), [], None
    with torch.no_grad():
        if kind == "ad":
            pa, pr = first_action(model.config.action, n), torch.zeros(n)
            for t in range(steps):
                out = model.step(cache, obs[:, t], pa, pr)  # (n, A)
                tokens.append(model.embed_tokens(obs[:, t, None], pa[:, None], pr[:, None]))  # (n, 1, C)
                pa, pr = act[:, t], rew[:, t]
            last = obs[:, steps - 1]  # (n, 2)
        else:
            for t in range(steps):
                model.append(cache, obs[:, t], act[:, t], rew[:, t], obs[:, t + 1])
                tokens.append(model.transition_token(obs[:, t], act[:, t], rew[:, t], obs[:, t + 1]))  # (n, 1, C)
            last = obs[:, steps]  # (n, 2)
    return [ReencodeImaginer(model, torch.cat(tokens, 1), last), CachedImaginer(model, cache, last, out, share=False),
            CachedImaginer(model, cache, last, out)]


def time_searches(roots: list, depth: torch.Tensor, beam: int, repeats: list[int]) -> list[tuple[float, torch.Tensor]]:
    """Median milliseconds of one search per root, and the actions of its first (generator seed 0).

    The planners take turns, one search each per round (root i in the first ``repeats[i]`` rounds),
    so a change in the machine's load falls on all of them alike.
    """
    times, actions = [[] for _ in roots], [None] * len(roots)
    for r in range(max(repeats)):
        for i, root in enumerate(roots):
            if r >= repeats[i]:
                continue
            t0 = time.perf_counter()
            a = beam_search(root, 5, depth, beam, np.random.default_rng(r), temperature=1.0).action  # (N,)
            times[i].append(1000 * (time.perf_counter() - t0))
            actions[i] = a if r == 0 else actions[i]
    return [(float(np.median(t)), a) for t, a in zip(times, actions)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", default="ad", choices=["ad", "dpt"])
    p.add_argument("--backbone", default="transformer", choices=["transformer", "t2mir", "s5"])
    p.add_argument("--rollouts", type=int, nargs="+", default=[16, 128],
                   help="rollouts planned for at once (eval: tasks x rollouts), one row each")
    p.add_argument("--steps", type=int, default=100, help="rollout steps before the search (window: context full)")
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="searches timed per planner (re-encoding: half as many)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    window = None if args.backbone == "s5" else args.window
    cfg = ModelConfig(kind=args.kind, obs_space=space_to_dict(gym.spaces.MultiDiscrete([9, 9])),
                      action_space=space_to_dict(gym.spaces.Discrete(5)), backbone=args.backbone, n_layer=4, n_head=4,
                      n_embd=64, block_size=max(200, args.steps), window=window, world_model=True, reward_values=[0, 1])
    torch.manual_seed(0)
    model = make_model(cfg, torch.Generator().manual_seed(0)).eval()
    print(f"DICP-{args.kind.upper()} on {args.backbone} (4 layers, 64 wide, window {window}), {args.steps}-step "
          f"context, beam {args.beam}, depth {args.depth}, {torch.get_num_threads()} threads; ms per online step")
    print(f"{'rollouts':>8} " + " ".join(f"{name:>21}" for name in PLANNERS)
          + f" {'copied/shared':>14} {'re-encode/shared':>17} {'same actions':>13}")
    for n in args.rollouts:
        roots = rollout(model, args.kind, args.steps, n)
        depth = torch.full((n,), args.depth)
        time_searches(roots[1:], depth, args.beam, [1, 1])  # warm-up
        repeats = [max(1, args.repeats // 2), args.repeats, args.repeats]
        (ms_a, a), (ms_b, b), (ms_c, c) = time_searches(roots, depth, args.beam, repeats)
        same = torch.equal(a, c) and torch.equal(b, c)
        print(f"{n:>8} {ms_a:>21.1f} {ms_b:>21.1f} {ms_c:>21.1f} {ms_b / ms_c:>14.1f} {ms_a / ms_c:>17.1f} {str(same):>13}",
              flush=True)


if __name__ == "__main__":
    main()
