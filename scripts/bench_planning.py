"""DICP planning cost per online step: the beam search on a forked incremental state against
re-encoding every node's whole context with the full pass (the DICP reference code's way).

Both planners run on the same model and the same rollout context and choose the same actions
(checked here; tests/test_dicp.py checks it on every backbone); the table gives milliseconds per
online step (one search for all rollouts) and the ratio, measured side by side in one run.

    python scripts/bench_planning.py                       # DICP-AD on Dark Room, darkroom_dicp_ad's model
    python scripts/bench_planning.py --kind dpt --rollouts 32 --steps 100
"""
from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

from icrl.models import ModelConfig, make_model
from icrl.models.encoders import first_action
from icrl.planning import CachedImaginer, ReencodeImaginer, beam_search
from icrl.spaces import space_to_dict


def rollout(model: torch.nn.Module, kind: str, steps: int, n: int, seed: int = 0):
    """A random Dark Room-like rollout of ``steps`` steps: (forked-state root, re-encoding root)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 9, (n, steps + 1, 2), generator=g)  # (n, T+1, 2)
    act = torch.randint(0, 5, (n, steps), generator=g)  # (n, T)
    rew = (torch.rand(n, steps, generator=g) < 0.1).float()  # (n, T)
    cache, tokens = model.new_cache(n), []
    with torch.no_grad():
        if kind == "ad":
            pa, pr = first_action(model.config.action, n), torch.zeros(n)
            for t in range(steps):
                out = model.step(cache, obs[:, t], pa, pr)  # (n, A)
                tokens.append(model.embed_tokens(obs[:, t, None], pa[:, None], pr[:, None]))  # (n, 1, C)
                pa, pr = act[:, t], rew[:, t]
            last = obs[:, steps - 1]
            return CachedImaginer(model, cache, last, out), ReencodeImaginer(model, torch.cat(tokens, 1), last)
        for t in range(steps):
            model.append(cache, obs[:, t], act[:, t], rew[:, t], obs[:, t + 1])
            tokens.append(model.transition_token(obs[:, t], act[:, t], rew[:, t], obs[:, t + 1]))  # (n, 1, C)
        last = obs[:, steps]
        return CachedImaginer(model, cache, last), ReencodeImaginer(model, torch.cat(tokens, 1), last)


def time_search(root, depth: torch.Tensor, beam: int, repeats: int) -> tuple[float, torch.Tensor]:
    """Median milliseconds of one search, and the actions of the first (generator seed 0)."""
    times, actions = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        actions.append(beam_search(root, 5, depth, beam, np.random.default_rng(r), temperature=1.0).action)
        times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times)), actions[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", default="ad", choices=["ad", "dpt"])
    p.add_argument("--backbone", default="transformer", choices=["transformer", "t2mir", "s5"])
    p.add_argument("--rollouts", type=int, default=16, help="rollouts planned for at once (eval: tasks x rollouts)")
    p.add_argument("--steps", type=int, default=100, help="rollout steps before the search (window: context full)")
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
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
    forked, naive = rollout(model, args.kind, args.steps, args.rollouts)
    depth = torch.full((args.rollouts,), args.depth)
    time_search(forked, depth, args.beam, 1)  # warm-up
    ms_fork, a_fork = time_search(forked, depth, args.beam, args.repeats)
    ms_naive, a_naive = time_search(naive, depth, args.beam, max(1, args.repeats // 2))
    print(f"DICP-{args.kind.upper()} on {args.backbone} (4 layers, 64 wide, window {window}), {args.rollouts} rollouts, "
          f"{args.steps}-step context, beam {args.beam}, depth {args.depth}, {torch.get_num_threads()} threads")
    print(f"{'planner':<28} {'ms / online step':>17} {'ratio':>7}")
    print(f"{'re-encode every node':<28} {ms_naive:>17.1f} {1.0:>7.1f}")
    print(f"{'forked incremental state':<28} {ms_fork:>17.1f} {ms_naive / ms_fork:>7.1f}")
    print(f"same actions: {bool(torch.equal(a_fork, a_naive))} (repeat 0)")


if __name__ == "__main__":
    main()
