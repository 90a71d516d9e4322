"""Learning History Filtering, LHF (Chen, Zhang, Subramanian, Paternain 2025;
docs/architecture.md#learning-history-filtering-lhf).

Every learning history of a task gets a score U from its curve of returns R_1..R_E; a min-max
step within the task turns U into a keep probability P; the paper's Algorithm 1 resamples the
task's histories with those probabilities before supervised pretraining:

- Improvement = (mean(R) + (max(R) - min(R))) / (2 R_max)
- Stability   = 1 + mean(negative R_{k+1} - R_k) / R_max
- U           = Improvement + lam * Stability
- P           = (U - min U) / (max U - min U), or the same step after U <- softmax(U / alpha)

The paper gives formulas, not code; the choices it leaves open, made here:

1. Stability averages only the drops (the negative consecutive differences), over the number of
   drops; a curve without a drop, and a single-episode history (no differences), gets 1.
2. Tasks whose histories all have the same U (within 1e-12 relative) get P = 1 for every history
   (uniform: each is kept once by Algorithm 1) instead of 0/0; so does a single-history task.
3. softmax(U / alpha) is computed with the max subtracted. Min-max of the softmax equals min-max of
   exp(U / alpha), so the softmax's normaliser does not matter; it only sharpens the linear P.
4. Algorithm 1 visits the task's histories in dataset order, pass after pass, accepting history i
   with probability P_i, until the task again holds as many histories as before (duplicates
   allowed; the last pass stops mid-way). An empty pass changes nothing, so each pass is drawn
   conditioned on accepting at least one history (its first acceptance j has probability
   proportional to P_j prod_{i<j} (1 - P_i), the later ones are Algorithm 1's coin flips): the
   same distribution of multiplicities, and at most n passes whatever P. All-zero P is uniform.
5. Resampling draws from ``SeedSequence(cfg.seed, spawn_key=(4, task))``, one stream per task
   index (collection uses keys 0..2, training 3): the same seed gives the same multiplicities,
   whatever the number or order of the other tasks.
6. Histories are grouped by their stored task index; all histories of one index must share their
   task parameters, which give R_max (``task_dist.max_return``).
7. Bandits have no episodes: the returns are sums over consecutive windows of W =
   ``filter.window`` pulls of the whole history, across episode boundaries when ``episodes > 1``;
   a ragged tail shorter than W is dropped, a history shorter than W is an error. R_max =
   W max_a mu_a.
8. Negative returns (continuous-control families such as Point-Robot, where the reward is minus
   a distance, so every return and R_max itself are negative): the formulas assume returns in
   [0, R_max]. For a task where some episode return is negative, every return and R_max are
   shifted by the lowest return b of the task's histories, R' = R - b and R'_max = R_max - b, so
   the worst episode of the task scores 0 and the oracle R'_max; Improvement then keeps its
   meaning, and Stability's drops R_{k+1} - R_k do not change under a shift (only their scale
   1/R'_max does). Tasks whose returns are all >= 0 are scored exactly as before.
   After the shift, a task whose R_max is still not positive (a linear bandit whose means are all
   <= 0, a goal out of reach within the horizon) is scored with R_max = the largest |return| of
   its histories, or 1 if they are all 0 (every U is then lam and P uniform). ``r_max`` records the
   value used, ``shift`` the b subtracted (0 without a shift). U - lam is proportional to
   1 / R_max, so the linear P does not depend on this scale.
9. What training gets (``weights``, ``weighting_of``): resample -> the multiplicities as sampling
   weights ("sample"), i.e. drawing from the resampled dataset without copying it; sample -> P as
   sampling weights; loss -> P as cross-entropy weights ("loss"). P is not renormalised across
   tasks: with "sample" a task's share of the draws grows with the sum of its P, while resampling
   keeps every task's number of histories.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from icrl import envs
from icrl.config import Config, to_dict
from icrl.store import HistoryStore

__all__ = ["lhf_scores", "task_scores", "lhf_probabilities", "resample_counts", "bandit_window_returns", "score_store",
           "weighting_of", "filter_dataset", "load_weights", "plot_best_worst"]

DERIVED_NAME = "lhf"  # DIR/lhf.h5, listed in the manifest's "derived"
_LHF = 4  # spawn key under cfg.seed (collection uses 0..2, training 3)
_N_EXTREMES = 3  # best and worst histories reported and plotted
_RANK_WAIT_S = 3600  # how long a torchrun rank waits for rank 0's weights


def _finite_1d(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} holds NaN or inf; drop or repair those histories before filtering")
    return arr


# ----------------------------------------------------------------------------- scores
def lhf_scores(returns: Sequence[np.ndarray], r_max: float, lam: float = 1.0) -> np.ndarray:
    """LHF score U of every history of one task (Chen et al. 2025).

    Args:
        returns: One 1-D array of episodic (or windowed) returns per history, in order.
        r_max: The task's optimal return per episode (or window), > 0.
        lam: Weight lambda of Stability in U = Improvement + lambda * Stability, >= 0.

    Returns:
        ``(n_histories,)`` float64 scores U.

    Raises:
        ValueError: No histories, an empty or non-finite history, r_max <= 0 or lam < 0.
    """
    if not (np.isfinite(r_max) and r_max > 0):
        raise ValueError(f"r_max must be a finite positive return, got {r_max}; pass the task's "
                         f"optimal return (task_dist.max_return)")
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0 (filter.lam), got {lam}")
    if len(returns) == 0:
        raise ValueError("returns is empty; pass one array of returns per history of the task")
    scores = np.empty(len(returns))
    for i, r in enumerate(returns):
        r = _finite_1d(r, f"returns[{i}]")
        improvement = (r.mean() + (r.max() - r.min())) / (2.0 * r_max)
        diffs = np.diff(r)  # (E - 1,) R_{k+1} - R_k
        drops = diffs[diffs < 0]
        mean_drop = drops.mean() if drops.size else 0.0  # only the drops are averaged
        scores[i] = improvement + lam * (1.0 + mean_drop / r_max)
    return scores


def task_scores(returns: Sequence[np.ndarray], r_max: float, lam: float = 1.0) -> tuple[np.ndarray, float, float]:
    """LHF scores of one task's histories, with the module docstring's choice 8 for returns below
    zero or a task with nothing to earn.

    Args:
        returns: One 1-D array of episodic (or windowed) returns per history, in order.
        r_max: The task's optimal return per episode (``max_return``); may be <= 0.
        lam: Weight lambda of Stability.

    Returns:
        ``(U, r_max_used, shift)``: the scores, the R_max they were computed with (after the shift),
        and the shift b subtracted from every return (0 when all returns are >= 0).
    """
    finite = [np.asarray(c, dtype=np.float64) for c in returns]
    lowest = min((float(np.min(c)) for c in finite if c.size), default=0.0)
    shift = lowest if lowest < 0 else 0.0  # negative returns: the task's worst episode scores 0
    if shift:
        finite = [c - shift for c in finite]
        r_max -= shift
    if not r_max > 0:  # nothing to earn: scale by the largest |return| (or 1)
        scale = np.abs(np.concatenate(finite)) if finite else np.zeros(0)
        r_max = float(scale.max()) if scale.size and scale.max() > 0 else 1.0
    return lhf_scores(finite, r_max, lam), float(r_max), float(shift)


def lhf_probabilities(scores: np.ndarray, mode: str = "linear", alpha: float = 0.25) -> np.ndarray:
    """Keep probabilities P of one task's histories from their scores U.

    Args:
        scores: ``(n,)`` scores U of the task's histories.
        mode: "linear": min-max of U; "softmax": min-max of softmax(U / alpha).
        alpha: Softmax temperature, > 0.

    Returns:
        ``(n,)`` float64 P in [0, 1]: the lowest U gets 0, the highest 1. When every U is equal
        (or n = 1) all P are 1 (uniform), not 0/0.
    """
    u = _finite_1d(scores, "scores")
    if mode == "softmax":
        if not (np.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be finite and > 0 (filter.alpha), got {alpha}")
        e = np.exp((u - u.max()) / alpha)  # stable softmax numerator, max 1
        u = e / e.sum()
    elif mode != "linear":
        raise ValueError(f"mode must be 'linear' or 'softmax' (filter.mode), got {mode!r}")
    lo, hi = u.min(), u.max()
    if hi - lo <= 1e-12 * max(1.0, float(np.abs(u).max())):
        return np.ones_like(u)  # all equal: uniform
    return (u - lo) / (hi - lo)


def resample_counts(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's Algorithm 1 for one task: how often each history is kept.

    Passes over the histories in order accept history i with probability ``p[i]`` until as many
    are accepted as the task has histories (see choice 4 of the module docstring).

    Args:
        p: ``(n,)`` keep probabilities in [0, 1]; all zero is treated as uniform.
        rng: The only source of randomness.

    Returns:
        ``(n,)`` int64 multiplicities summing to n; ``p[i] == 0`` implies 0.
    """
    p = _finite_1d(p, "p")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p must lie in [0, 1]; pass lhf_probabilities' output")
    n = len(p)
    if not np.any(p > 0):
        p = np.ones(n)  # nothing to prefer: keep every history once
    # First acceptance of a non-empty pass: P(j) ∝ p_j * prod_{i<j} (1 - p_i).
    first = p * np.concatenate([[1.0], np.cumprod(1.0 - p)[:-1]])  # (n,)
    first /= first.sum()
    counts, need = np.zeros(n, dtype=np.int64), n
    while need > 0:
        j = int(rng.choice(n, p=first))
        accept = np.zeros(n, dtype=bool)
        accept[j] = True
        accept[j + 1:] = rng.random(n - j - 1) < p[j + 1:]  # Algorithm 1's coin flips after j
        hits = np.flatnonzero(accept)[:need]  # the pass stops once the task is full again
        counts[hits] += 1
        need -= len(hits)
    return counts


def bandit_window_returns(rewards: np.ndarray, window: int) -> np.ndarray:
    """Returns of a bandit history over consecutive windows of ``window`` pulls.

    Args:
        rewards: ``(L,)`` rewards of one history, in pull order.
        window: Pulls per window W (``filter.window``).

    Returns:
        ``(L // W,)`` float64 window sums; the last ``L % W`` pulls are dropped.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"rewards must be 1-D (one history), got shape {r.shape}")
    if int(window) < 1:
        raise ValueError(f"window must be >= 1 (filter.window), got {window}")
    n = len(r) // int(window)
    if n == 0:
        raise ValueError(f"a history of {len(r)} pulls is shorter than filter.window={window}; "
                         f"lower filter.window")
    return r[: n * window].reshape(n, window).sum(axis=1)  # (L // W,)


# ----------------------------------------------------------------------------- datasets
def weighting_of(cfg: Config) -> str:
    """How the LHF weights act in training: "loss" for ``filter.use=loss``, else "sample"."""
    return "loss" if cfg.filter.use == "loss" else "sample"


def _history_rewards(store: HistoryStore) -> list[np.ndarray]:
    """Every history's ``steps/reward``, read shard by shard (no other step field is read)."""
    out: list[np.ndarray] = []
    for entry in store.manifest["shards"]:
        with h5py.File(store.directory / entry["file"], "r") as f:
            reward = f["steps/reward"][()]
            out += [reward[a:a + n] for a, n in zip(f["histories/offset"][()], f["histories/length"][()])]
    return out


def _task_dist(store: HistoryStore, task_dist: Any) -> Any:
    if task_dist is None:
        return envs.task_distribution(store.env_id, **store.env_kwargs)
    if getattr(task_dist, "env_id", "") and task_dist.env_id != store.env_id:
        raise ValueError(f"task_dist is for {task_dist.env_id} but {store.directory} holds {store.env_id} "
                         f"histories; pass envs.task_distribution(store.env_id, **store.env_kwargs)")
    return task_dist


def score_store(store: HistoryStore, cfg: Config, task_dist: Any = None) -> dict[str, np.ndarray]:
    """LHF arrays of every history of a dataset, task by task.

    Args:
        store: The dataset.
        cfg: Its config; uses ``filter`` and ``seed``.
        task_dist: The family's task distribution (``envs.task_distribution``); None builds it
            from the manifest. Bandit families (with ``means``) use windowed returns.

    Returns:
        ``{"U", "P", "r_max", "shift", "weights"}`` float64 and ``"counts"`` int64, each ``(n_histories,)``;
        ``weights`` is what ``train(..., weights, weighting_of(cfg))`` takes.
    """
    f, dist = cfg.filter, _task_dist(store, task_dist)
    bandit = isinstance(dist, envs.BanditTaskDistribution)
    curves = ([bandit_window_returns(r, f.window) for r in _history_rewards(store)] if bandit
              else store.episode_returns)
    if not bandit and not dist.has_max_return:
        raise ValueError(f"{store.env_id} gives no max_return, the R_max LHF scores against; turn filter.enabled off "
                         f"or give the family's TaskDistribution a max_return")
    n = store.n_histories
    out = {"U": np.empty(n), "P": np.empty(n), "r_max": np.empty(n), "shift": np.zeros(n),
           "counts": np.zeros(n, np.int64)}
    for t in np.unique(store.task):
        idx = np.flatnonzero(store.task == t)  # dataset order = Algorithm 1's visiting order
        params = store.task_params[idx]
        if np.any(params != params[0]):
            raise ValueError(f"histories {idx.tolist()} share task index {t} but not their task parameters; "
                             f"the dataset mixes tasks under one index: recollect it")
        task = params[:1].reshape(1, *dist.task_shape)
        r_max = float(f.window * dist.means(task)[0].max() if bandit else dist.max_return(task)[0])
        try:
            u, r_max, shift = task_scores([curves[i] for i in idx], r_max, f.lam)
        except ValueError as exc:  # name the dataset's histories, not the task-local index
            raise ValueError(f"task {t} (histories {idx.tolist()}): {exc}") from exc
        p = lhf_probabilities(u, f.mode, f.alpha)
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_LHF, int(t))))
        out["U"][idx], out["P"][idx], out["r_max"][idx], out["shift"][idx] = u, p, r_max, shift
        out["counts"][idx] = resample_counts(p, rng)
    out["weights"] = out["counts"].astype(np.float64) if f.use == "resample" else out["P"].copy()
    return out


def _summary(arrays: dict[str, np.ndarray], store: HistoryStore) -> dict[str, dict[str, Any]]:
    per_source = {}
    for k, name in enumerate(store.sources):
        m = store.source == k
        if not m.any():
            continue
        u = arrays["U"][m]
        q25, q50, q75 = np.quantile(u, [0.25, 0.5, 0.75])
        kept = int(np.count_nonzero(arrays["weights"][m] > 0))
        per_source[name] = {
            "histories": int(m.sum()), "kept": kept, "dropped": int(m.sum()) - kept,
            "copies": int(arrays["counts"][m].sum()), "P_mean": float(arrays["P"][m].mean()),
            "U": {"mean": float(u.mean()), "std": float(u.std()), "min": float(u.min()), "q25": float(q25),
                  "median": float(q50), "q75": float(q75), "max": float(u.max())}}
    return per_source


def filter_dataset(cfg: Config, directory: str | os.PathLike, task_dist: Any = None) -> dict[str, Any]:
    """Score a dataset, write ``DIR/lhf.h5`` (shards untouched) and return a report.

    Args:
        cfg: The experiment config (``filter``, ``seed``).
        directory: The dataset folder.
        task_dist: As for :func:`score_store`.

    Returns:
        ``{"n_histories", "n_tasks", "use", "weighting", "returns", "window", "per_source", "best",
        "worst", "best_U", "worst_U"}``: ``per_source[name]`` holds ``histories``, ``kept`` and
        ``dropped`` (weight > 0, i.e. counts > 0 for resample, P > 0 otherwise), ``copies`` (sum of
        the multiplicities), ``P_mean`` and the distribution of ``U`` (mean, std, min, q25,
        median, q75, max); ``best``/``worst`` are the indices of the highest/lowest U.
    """
    with HistoryStore(directory) as store:
        dist = _task_dist(store, task_dist)
        arrays = score_store(store, cfg, dist)
        bandit = isinstance(dist, envs.BanditTaskDistribution)
        order = np.argsort(arrays["U"], kind="stable")
        k = min(_N_EXTREMES, store.n_histories)
        best, worst = order[::-1][:k], order[:k]
        report = {"n_histories": store.n_histories, "n_tasks": int(len(np.unique(store.task))),
                  "use": cfg.filter.use, "weighting": weighting_of(cfg),
                  "returns": "windows" if bandit else "episodes", "window": cfg.filter.window if bandit else None,
                  "per_source": _summary(arrays, store),
                  "best": best.tolist(), "worst": worst.tolist(),
                  "best_U": arrays["U"][best].tolist(), "worst_U": arrays["U"][worst].tolist()}
        meta = {"filter": to_dict(cfg.filter), "seed": cfg.seed, "weighting": report["weighting"],
                "returns": report["returns"], "per_source": report["per_source"], "data": data_fingerprint(store)}
        store.write_derived(DERIVED_NAME, arrays, meta)
    return report


def load_weights(directory: str | os.PathLike | HistoryStore, cfg: Config | None = None) -> tuple[np.ndarray, str] | None:
    """The training weights written by :func:`filter_dataset`, and how they act.

    Args:
        directory: The dataset folder, or its store already open (left open).
        cfg: If given, weights computed with another ``filter`` section or seed count as absent.

    Returns:
        ``(weights (n_histories,), weighting)``, or None when the dataset has no (matching)
        LHF file, or its histories changed since it was written (a file written before the data
        were fingerprinted is checked by its length only).
    """
    opened = directory if isinstance(directory, HistoryStore) else None
    with contextlib.nullcontext(opened) if opened else HistoryStore(directory, check="index") as store:
        entry = next((d for d in store.manifest["derived"] if d.get("name") == DERIVED_NAME), None)
        if entry is None:
            return None
        meta = entry["meta"]
        if cfg is not None and (_scoring(meta.get("filter")) != _scoring(to_dict(cfg.filter)) or meta.get("seed") != cfg.seed):
            return None
        if meta.get("data", data_fingerprint(store)) != data_fingerprint(store):
            return None
        weights = store.read_derived(DERIVED_NAME)["weights"]
        return (weights, str(meta["weighting"])) if len(weights) == store.n_histories else None


def _scoring(section: Any) -> Any:
    """A filter section as it decides the weights: ``enabled`` only says whether training uses them."""
    return {k: v for k, v in section.items() if k != "enabled"} if isinstance(section, dict) else section


def data_fingerprint(store: HistoryStore) -> str:
    """The dataset's histories as the manifest lists them (every shard's sha256, in order): weights
    written for other data are stale."""
    return hashlib.sha256(" ".join(e["sha256"] for e in store.manifest["shards"]).encode()).hexdigest()


def filter_stage(cfg: Config, directory: str | os.PathLike, refresh: bool = True) -> dict[str, Any] | None:
    """The filter stage (``icrl filter``, and ``icrl run`` before training): score the dataset,
    write ``DIR/lhf.h5`` and the best/worst plot under the dataset's lock, and return the report.
    ``refresh=False`` keeps current weights (returns None). Under torchrun only rank 0 writes; the
    other ranks wait for its weights."""
    from icrl.lock import folder_lock

    if not refresh and load_weights(directory, cfg) is not None:
        return None
    if os.environ.get("RANK", "0") not in ("", "0"):
        deadline = time.monotonic() + _RANK_WAIT_S
        while load_weights(directory, cfg) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {os.environ['RANK']}: rank 0 wrote no LHF weights into {directory} "
                                   f"within {_RANK_WAIT_S} s")
            time.sleep(1.0)
        return None
    with folder_lock(directory, "filter"):
        report = filter_dataset(cfg, directory)
        with HistoryStore(directory, check="index") as store:
            report["plot"] = str(plot_best_worst(store, report, Path(directory) / "lhf_best_worst.png"))
    return report


def plot_best_worst(store: HistoryStore, report: dict[str, Any], path: str | os.PathLike) -> Path:
    """PNG of the return curves of the best and worst histories of a :func:`filter_dataset` report."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    window = report.get("window")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for key, color in (("best", "tab:green"), ("worst", "tab:red")):
        for rank, (i, u) in enumerate(zip(report[key], report[f"{key}_U"])):
            curve = (bandit_window_returns(store.history(i)["reward"], window) if window
                     else store.episode_returns[i])
            ax.plot(np.arange(1, len(curve) + 1), curve, color=color, alpha=1.0 - 0.25 * rank, lw=1.3,
                    label=f"{key} #{i} ({store.sources[store.source[i]]}, U={u:.2f})")
    ax.set_xlabel(f"window of {window} pulls" if window else "episode")
    ax.set_ylabel("return")
    ax.set_title("LHF: best and worst learning histories")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
