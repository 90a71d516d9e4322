"""What each backbone costs, side by side in one run: training tokens/s against sequence length, and
online steps/s and state memory against the number of steps already in context.

Backbones: the full-context transformer, the windowed transformer (a ring cache of ``--window``
steps), S5 and T2MIR (windowed, as the transformer); all as an AD model on Dark Room's spaces (obs
two 9-way coordinates, 5 actions), width 64, 4 layers, one CPU thread each unless ``--threads``.

- Training: one forward + backward + AdamW step on B windows of T steps, B = max(1, 4096 // T), so
  every step sees at least 4,096 tokens; tokens/s = B T / seconds per step (median of ``--repeats``).
- Online: ``--rollouts`` rollouts step one token each, with N steps already in their context. The
  state is filled to N directly (random keys and values for a KV cache: the cost of attention does
  not depend on their values; an S5 state has one size whatever N), then ``--steps`` steps are
  timed. Memory is the bytes of the state (KV cache, ring, or S5 state) for all rollouts.

Run: ``python scripts/bench_backbones.py`` (about 5 minutes on one core).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from icrl.models import ADModel, ModelConfig

OBS, ACT = {"type": "MultiDiscrete", "nvec": [9, 9]}, {"type": "Discrete", "n": 5}


def model(backbone: str, window: int | None, block: int) -> ADModel:
    cfg = ModelConfig(kind="ad", obs_space=OBS, action_space=ACT, backbone=backbone, n_layer=4, n_head=4, n_embd=64,
                      block_size=block, window=window)
    return ADModel(cfg, torch.Generator().manual_seed(0))


def inputs(B: int, T: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    pa = torch.randint(0, 5, (B, T), generator=g)  # (B, T)
    pa[:, 0] = -1
    return torch.randint(0, 9, (B, T, 2), generator=g), pa, torch.rand(B, T, generator=g)


def train_tokens_per_s(m: ADModel, T: int, repeats: int) -> float:
    B = max(1, 4096 // T)
    obs, pa, pr = inputs(B, T)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        loss = m(obs, pa, pr).logsumexp(-1).mean()  # any scalar of every output: the cost is the same
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    return B * T / statistics.median(times)


def state_bytes(state: object) -> int:
    return sum(t.nelement() * t.element_size() for t in vars(state).values() if torch.is_tensor(t))


@torch.no_grad()
def online(m: ADModel, n_context: int, rollouts: int, steps: int) -> tuple[float, int]:
    """Steps/s of ``rollouts`` rollouts with ``n_context`` steps already in context, and the state's bytes."""
    m.eval()
    state = m.new_cache(rollouts)
    if hasattr(state, "k"):  # a KV cache: fill its slots as N steps would have
        state.k.normal_()
        state.v.normal_()
    state.pos = n_context
    obs, pa, pr = inputs(rollouts, 1)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        m.step(state, obs[:, 0], pa[:, 0].clamp(min=0), pr[:, 0])
        if i >= 3:
            times.append(time.perf_counter() - t0)
        if hasattr(state, "k") and not state.ring:
            state.pos = n_context  # a linear cache stays at N (it would fill up otherwise)
    return 1.0 / statistics.median(times), state_bytes(state)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    p.add_argument("--contexts", type=int, nargs="+", default=[1000, 10_000, 100_000])
    p.add_argument("--window", type=int, default=256, help="the windowed transformer's window K")
    p.add_argument("--windowed-max", type=int, default=4096,
                   help="longest training length for the windowed transformers (a banded mask is (T, T))")
    p.add_argument("--rollouts", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    K = args.window
    kinds = {"transformer (full)": ("transformer", None), f"transformer (window {K})": ("transformer", K),
             f"t2mir (window {K})": ("t2mir", K), "s5": ("s5", None)}

    print(f"## Training tokens/s (B x T >= 4,096 tokens per step, {args.threads} thread)\n")
    print("| T | " + " | ".join(kinds) + " | s5 / full transformer |")
    print("| --- " * (len(kinds) + 2) + "|")
    for T in args.lengths:
        row = {}
        for name, (bb, w) in kinds.items():
            row[name] = (train_tokens_per_s(model(bb, w, T), T, args.repeats)
                         if w is None or T <= args.windowed_max else float("nan"))
        ratio = row["s5"] / row["transformer (full)"]
        print(f"| {T:,} | " + " | ".join("n/a" if v != v else f"{v:,.0f}" for v in row.values()) + f" | {ratio:.2f}x |",
              flush=True)

    print(f"\n## Online steps/s and state memory ({args.rollouts} rollouts, N steps in context)\n")
    print("| N | " + " | ".join(f"{k} steps/s | KiB" for k in kinds) + " | s5 / full transformer |")
    print("| --- " * (2 * len(kinds) + 2) + "|")
    for N in args.contexts:
        cells, rates = [], {}
        for name, (bb, w) in kinds.items():
            rate, nbytes = online(model(bb, w, N + 1 if w is None else K), N, args.rollouts, args.steps)
            rates[name] = rate
            cells.append(f"{rate:,.0f} | {nbytes / 2**10:,.0f}")
        print(f"| {N:,} | " + " | ".join(cells) + f" | {rates['s5'] / rates['transformer (full)']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
