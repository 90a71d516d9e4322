"""Where a pretrained model goes on a grid world: the cells its online rollouts visit on one task.

Runs the checkpoint's model (sampling, as in `icrl eval`) for E in-context episodes on R rollouts
of the given task of a grid env whose observation starts with (x, y), and prints the visit counts
as a grid (y up, x right; `G` marks the goal, `.` a cell never visited) with the return of the
last 5 episodes. Used to see why a model fails on a held-out Dark Room goal.

    python scripts/visit_map.py --config configs/darkroom_dpt.yaml \
        --checkpoint runs/darkroom_dpt/seed-0/checkpoint --task 6,8 --episodes 30 --rollouts 16
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from icrl.checkpoint import load_model
from icrl.collectors import run_policy
from icrl.config import load_config
from icrl.policies import ModelPolicy


class VisitCounter(ModelPolicy):
    """The model's policy, counting the (x, y) cell of every state it moves into."""

    def __init__(self, *args, size: tuple[int, int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.visits = np.zeros(size, dtype=np.int64)  # (X, Y)

    def update(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        xy = np.asarray(next_obs)[:, :2].astype(np.int64)  # (N, 2)
        np.add.at(self.visits, (xy[:, 0], xy[:, 1]), 1)
        super().update(obs, actions, rewards, next_obs, terminated, truncated)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--task", required=True, help="the task's parameters, comma-separated (Dark Room: x,y of the goal)")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--rollouts", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. eval.temperature=1")
    args = ap.parse_args()

    cfg = load_config(args.config, args.overrides)
    model, _ = load_model(args.checkpoint, torch.device("cpu"))
    model.eval()
    task = [float(v) for v in args.task.split(",")]
    tasks = np.array([task] * args.rollouts)  # (R, P)
    sizes = model.config.obs_sizes[:2]
    policy = VisitCounter(model, args.rollouts, np.random.default_rng(args.seed), temperature=cfg.eval.temperature,
                          size=tuple(sizes))
    batch = run_policy(cfg.env.id, cfg.eval_env_kwargs(), policy, tasks, np.random.SeedSequence(args.seed),
                       episodes=args.episodes)
    last = np.mean([r[-5:].mean() for r in batch.episode_returns])
    v = policy.visits
    print(f"task {args.task}: {args.rollouts} rollouts x {args.episodes} episodes, return of the last 5 episodes "
          f"{last:.2f}; visits per cell (y up):")
    goal = tuple(int(t) for t in task[:2])
    for y in reversed(range(sizes[1])):
        cells = ["G" if (x, y) == goal and v[x, y] == 0 else ("." if v[x, y] == 0 else str(v[x, y]))
                 for x in range(sizes[0])]
        print(f"{y} " + " ".join(f"{c:>5}" for c in cells))
    print("  " + " ".join(f"{x:>5}" for x in range(sizes[0])))


if __name__ == "__main__":
    main()
