"""Re-derive the ± of committed results over the right unit: the eval task (icrl.results.summarise).

Results written before the fix took the stderr over task x rollout (x seed) rows. For each
``results.json`` given, every method's per-rollout curves are looked for, in this order:

1. a run folder's ``curves.npz`` (``--runs``, default ``runs/``) whose per-method means equal the
   committed ones: everything is recomputed (curves, summary, other metrics, per-seed summaries,
   ``final_stderr_seeds``);
2. for the baselines (``random``, ``oracle``, ``source``, …), a fresh evaluation without the model
   from the committed config: baselines draw the same tasks and random numbers whatever the model,
   and a curve is used only if its mean equals the committed one exactly;
3. otherwise the result keeps its number, and its summary says what it was computed over
   (``stderr_over``), unless it already was over tasks (one rollout per task, one seed).

A multi-seed model always gets ``final_stderr_seeds`` from the committed per-seed finals. The
files are rewritten in place and a line per file says what was re-derived.

    python scripts/rederive_stderr.py docs/results/*.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from icrl.config import load_config
from icrl.evaluation import evaluate
from icrl.results import stderr_over, summarise, summarise_all

MODELS = ("ad", "dpt")
ROWS = "task x rollout{} rows (per-rollout curves not kept): not re-derivable over tasks"


def matches(r: dict, curves: dict[str, np.ndarray]) -> bool:
    """The curves reproduce every committed mean curve."""
    n, k = r["n_tasks"], r.get("n_rollouts_per_task", 1)
    summary = summarise_all(curves, n, k)
    return set(summary["curves"]) == set(r["curves"]) and all(
        np.allclose(summary["curves"][m]["mean"], r["curves"][m]["mean"], rtol=0, atol=1e-9) for m in r["curves"])


def find_run(r: dict, runs: Path) -> dict[str, np.ndarray] | None:
    """The per-rollout curves of a run folder that reproduce ``r``, if any."""
    for path in sorted(runs.glob("*/curves.npz")):
        curves = dict(np.load(path))
        try:
            if matches(r, curves):
                return curves
        except ValueError:  # another number of tasks or rollouts
            continue
    return None


_BASELINES: dict[str, dict[str, np.ndarray]] = {}


def rerun_baselines(r: dict, methods: list[str]) -> dict[str, np.ndarray]:
    """Per-rollout curves of ``methods`` evaluated afresh at the committed config (cached by config)."""
    config = {k: v for k, v in r["config"].items() if k != "seeds"}
    key = json.dumps([config.get(k) for k in ("env", "collect", "eval")] + [methods], sort_keys=True)
    if key not in _BASELINES:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "cfg.yaml").write_text(yaml.safe_dump(config))
            cfg = load_config(Path(tmp) / "cfg.yaml", [f"eval.baselines={','.join(methods)}", "seeds=[]"])
            evaluate(cfg, None, tmp, progress=False)
            _BASELINES[key] = dict(np.load(Path(tmp) / "curves.npz"))
    return _BASELINES[key]


def seed_stderr(finals: list[float]) -> float:
    return float(np.std(finals, ddof=1) / np.sqrt(len(finals)))


def rederive(path: Path, runs: Path, rerun: bool) -> str:
    r = json.loads(path.read_text())
    n, k = r["n_tasks"], r.get("n_rollouts_per_task", 1)
    seeds = r.get("seeds") or [r.get("seed", 0)]
    model = next((m for m in r["summary"] if m in MODELS), None)
    curves = find_run(r, runs)
    if curves is not None:
        r.update(summarise_all(curves, n, k, len(seeds)))
        if len(seeds) > 1:
            for key, c in curves.items():
                if len(c) == len(seeds) * n * k:  # a method that differs by seed: rows seed-major
                    name, m = key.split(".", 1) if "." in key else (None, key)
                    per_seed = c.reshape(len(seeds), n * k, -1)
                    summary = r["summary"] if name is None else r["other_metrics"][name]["summary"]
                    summary[m]["final_stderr_seeds"] = seed_stderr(per_seed[:, :, -1].mean(1).tolist())
                    for i, s in enumerate(seeds):
                        if name is None and str(s) in r.get("per_seed", {}):
                            one = {m: c[i * n * k:(i + 1) * n * k]} | {b: v for b, v in curves.items()
                                                                        if "." not in b and len(v) == n * k}
                            r["per_seed"][str(s)]["summary"] = summarise(one, n, k)[1]
        path.write_text(json.dumps(r, indent=1))
        return f"{path}: all re-derived from a run's curves.npz"
    r["stderr_over"] = stderr_over(n, k, len(seeds))
    done = []
    if k == 1 and len(seeds) == 1:
        path.write_text(json.dumps(r, indent=1))
        return f"{path}: one rollout per task and one seed: the stderr already was over tasks"
    baselines = [m for m in r["summary"] if m not in MODELS]
    if rerun and baselines:
        fresh = rerun_baselines(r, baselines)
        mean, summary = summarise({m: fresh[m] for m in baselines}, n, k)
        for m in baselines:
            if np.allclose(mean[m]["mean"], r["curves"][m]["mean"], rtol=0, atol=1e-9):
                r["curves"][m], r["summary"][m] = mean[m], summary[m]
                done.append(m)
    for m in r["summary"]:
        if m not in done:
            r["summary"][m]["stderr_over"] = ROWS.format(" x seed" if len(seeds) > 1 and m == model else "")
    if model is not None and len(seeds) > 1 and "per_seed" in r:
        r["summary"][model]["final_stderr_seeds"] = seed_stderr(
            [r["per_seed"][str(s)]["summary"][model]["final"] for s in seeds])
    path.write_text(json.dumps(r, indent=1))
    kept = [m for m in r["summary"] if m not in done]
    return f"{path}: re-derived {', '.join(done) or 'nothing'}; kept the row-level stderr of {', '.join(kept)}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run folders holding curves.npz")
    p.add_argument("--no-rerun", action="store_true", help="do not evaluate the baselines afresh")
    args = p.parse_args(argv)
    for path in args.results:
        print(rederive(path, args.runs, not args.no_rerun), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
