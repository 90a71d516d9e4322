"""Markdown tables of committed results: every method's mean over the curve and final value (± the
stderr over tasks, and over training seeds where there are several), and, for runs over several
training seeds, each seed's model and its probes against training time.

    python scripts/results_table.py docs/results/darkroom_ad.json [more.json ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def normalised(r: dict, value: float, key: str) -> float | None:
    """(R - R_random) / (R_oracle - R_random) of a return, with random's and the oracle's ``key``
    ("final" or "mean_over_curve") of the same run; None without both or for regret."""
    s = r["summary"]
    if r["metric"] != "episode_return" or "random" not in s or "oracle" not in s:
        return None
    return (value - s["random"][key]) / (s["oracle"][key] - s["random"][key])


def pm(s: dict) -> str:
    """``± stderr`` over tasks; ``(± n/a†)`` where only a row-level stderr was kept (``stderr_over``
    on the method); ``, seeds ± x`` where the stderr over training seeds is known."""
    out = "(± n/a†)" if "stderr_over" in s else f"± {s['final_stderr']:.2f}"
    if "final_stderr_seeds" in s:
        out += f" (seeds ± {s['final_stderr_seeds']:.2f})"
    return out


def method_table(r: dict) -> list[str]:
    """One row per method, best first (highest return or lowest regret); with random and the oracle,
    the normalised score of the final return too; with a success rate, its final value."""
    regret = r["metric"] == "cumulative_regret"
    rows = sorted(r["summary"].items(), key=lambda kv: kv[1]["final"], reverse=not regret)
    head = "final regret" if regret else "final return"
    norm = normalised(r, 0.0, "final") is not None
    success = r.get("other_metrics", {}).get("success_rate", {}).get("summary")
    cols = ["method", "mean over the curve", head] + (["normalised final"] if norm else []) \
        + (["success, final episode"] if success else [])
    out = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    footnotes: list[str] = []
    for m, s in rows:
        bold = "**" if m in ("ad", "dpt") else ""
        cells = [f"{bold}{m}{bold}", f"{s['mean_over_curve']:.2f}", f"{bold}{s['final']:.2f}{bold} {pm(s)}"]
        if norm:
            cells.append(f"{normalised(r, s['final'], 'final'):.3f}")
        if success:
            cells.append(f"{success[m]['final']:.3f} ± {success[m]['final_stderr']:.3f}" if m in success else "")
        if "stderr_over" in s:
            footnotes.append(f"† {m}: {s['stderr_over']}; committed row-level ± {s['final_stderr']:.2f}")
        out.append("| " + " | ".join(cells) + " |")
    return out + ([""] + footnotes if footnotes else [])


def seed_table(r: dict) -> list[str]:
    """Each seed's model (mean, final, wall) and its probes: (training minutes, mean / final)."""
    model = next(m for m in r["summary"] if m in ("ad", "dpt"))
    out = ["| seed | mean | final | wall (collect + train + eval) | probes during training: minutes → mean / final |",
           "| --- | --- | --- | --- | --- |"]
    for seed, p in r["per_seed"].items():
        s = p["summary"][model]
        probes = ", ".join(f"{q['train_s'] / 60:.1f} → {q['mean_over_curve']:.1f} / {q['final']:.1f}" for q in p["probes"])
        out.append(f"| {seed} | {s['mean_over_curve']:.2f} | {s['final']:.2f} | {p['wall_seconds'] / 60:.1f} min | {probes} |")
    return out


def main(paths: list[str]) -> None:
    for path in paths:
        r = json.loads(Path(path).read_text())
        tasks = f"{r['n_tasks']} {r['task_split']} tasks x {r.get('n_rollouts_per_task', 1)} rollouts"
        # over seeds, wall_seconds sums the whole runs; a single run's is its evaluation alone
        wall = f"seeds {r['seeds']}, wall of all runs" if "seeds" in r else "evaluation wall"
        print(f"{Path(path).stem}: {r['env']}, {tasks}, {wall} {r['wall_seconds'] / 60:.1f} min; "
              f"± stderr over {r.get('stderr_over', 'task x rollout rows')}\n")
        print("\n".join(method_table(r)))
        if "per_seed" in r:
            print()
            print("\n".join(seed_table(r)))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
