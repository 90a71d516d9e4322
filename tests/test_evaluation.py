"""Online evaluation: sampling, shared random numbers, curves and summaries."""
import json

import numpy as np
import pytest
import torch

from icrl.config import load_config
from icrl.evaluation import evaluate
from icrl.results import aggregate_seeds, format_table, per_task, stderr_over, summarise
from icrl.models.encoders import softmax_sample


def test_softmax_sample_matches_probabilities_and_greedy_is_argmax():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]])).repeat(20000, 1)
    a = softmax_sample(logits, np.random.default_rng(0), greedy=False)
    assert np.bincount(a, minlength=3) / 20000 == pytest.approx([0.1, 0.6, 0.3], abs=0.015)
    assert np.all(softmax_sample(logits, np.random.default_rng(0), greedy=True) == 1)
    # temperature 0.5 squares the probabilities before normalising: (0.01, 0.36, 0.09) / 0.46
    a = softmax_sample(logits, np.random.default_rng(1), greedy=False, temperature=0.5)
    assert np.bincount(a, minlength=3) / 20000 == pytest.approx([0.01 / 0.46, 0.36 / 0.46, 0.09 / 0.46], abs=0.015)


def test_summary_is_mean_and_stderr_over_tasks():
    curves = {"x": np.array([[1.0, 2.0], [3.0, 6.0]])}
    mean, summary = summarise(curves)
    assert mean["x"]["mean"] == [2.0, 4.0]
    assert mean["x"]["stderr"] == pytest.approx([np.std([1, 3], ddof=1) / np.sqrt(2), np.std([2, 6], ddof=1) / np.sqrt(2)])
    assert summary["x"] == {"final": 4.0, "final_stderr": pytest.approx(2.0), "mean_over_curve": 3.0}


def test_rollouts_of_a_task_are_averaged_before_the_stderr_over_tasks():
    """3 tasks x 2 rollouts, one-step curves: per-task means 1, 3, 8; mean 4; the stderr over the 3
    tasks is sqrt(((1-4)^2 + (3-4)^2 + (8-4)^2) / 2 / 3) = sqrt(13 / 3), not the one over 6 rows."""
    c = np.array([[0.0], [2.0], [3.0], [3.0], [6.0], [10.0]])  # rows: task 0, 0, 1, 1, 2, 2
    mean, summary = summarise({"m": c}, n_tasks=3, rollouts=2)
    assert summary["m"]["final"] == 4.0 and summary["m"]["final_stderr"] == pytest.approx(np.sqrt(13 / 3))
    assert summary["m"]["final_stderr"] != pytest.approx(c[:, 0].std(ddof=1) / np.sqrt(6))
    # two seeds stacked (seed, task, rollout): each task's mean averages both seeds' rollouts
    seeds = np.concatenate([c, c + np.array([[2.0], [2.0], [0.0], [0.0], [-2.0], [-2.0]])])
    assert per_task(seeds, 3, 2)[:, 0].tolist() == [2.0, 3.0, 7.0]
    with pytest.raises(ValueError, match="3 tasks x 4 rollouts"):
        per_task(c, 3, 4)
    assert stderr_over(10, 16, 3) == "tasks (n=10; 16 rollouts and 3 training seeds averaged per task)"
    assert stderr_over(200, 1) == "tasks (n=200)"


def test_baselines_share_tasks_and_random_numbers(tmp_path):
    """Two runs of one method give the same curve; emp and random differ but see the same tasks."""
    cfg = load_config(None, ["env.kwargs.horizon=40", "eval.n_tasks=30", "eval.baselines=ucb,ucb,random,oracle"])
    r = evaluate(cfg, None, tmp_path, progress=False)
    assert r["task_split"] == "sampled" and r["n_tasks"] == 30
    assert r["curves"]["oracle"]["mean"][-1] == 0.0
    assert r["summary"]["random"]["final"] > r["summary"]["ucb"]["final"]
    again = evaluate(cfg, None, tmp_path, progress=False)
    assert again["curves"] == r["curves"]
    assert "ucb" in format_table(r)


def test_eval_split_picks_the_held_out_or_the_training_tasks_of_a_finite_family(tmp_path):
    """Dark Room: 8 held-out goals by default, the 73 training goals with eval.split=train; a bandit
    family (tasks drawn from a prior) has no training split to evaluate on."""
    from icrl import envs
    from icrl.config import ConfigError

    common = ["env.id=icrl/DarkRoom-v0", "collect.algorithms=random", "eval.episodes=2", "eval.baselines=oracle"]
    dist = envs.task_distribution("icrl/DarkRoom-v0")
    train, test = dist.split()
    for split, goals in (("test", test), ("train", train)):
        r = evaluate(load_config(None, [*common, f"eval.split={split}"]), None, tmp_path, progress=False)
        assert (r["task_split"], r["n_tasks"]) == (split, len(goals))
        assert r["summary"]["oracle"]["final"] == pytest.approx(dist.max_return(goals).mean())
    assert len(test) == 8 and len(train) == 73
    with pytest.raises(ConfigError, match="eval.split"):
        evaluate(load_config(None, ["eval.split=train"]), None, tmp_path, progress=False)


def test_eval_prior_is_configured_apart_from_training(tmp_path):
    cfg = load_config(None, ["env.kwargs.horizon=20", "eval.n_tasks=50", "eval.baselines=random",
                             "eval.env_kwargs.prior=beta", "eval.env_kwargs.prior_alpha=1.0", "eval.env_kwargs.prior_beta=9.0"])
    r = evaluate(cfg, None, tmp_path, progress=False)
    assert r["env_kwargs"]["prior"] == "beta"
    # means ~ Beta(1, 9) are small and close together: far less regret than under U[0, 1]
    base = evaluate(load_config(None, ["env.kwargs.horizon=20", "eval.n_tasks=50", "eval.baselines=random"]),
                    None, tmp_path, progress=False)
    assert r["summary"]["random"]["final"] < 0.6 * base["summary"]["random"]["final"]


def test_offline_baseline_choices_on_a_hand_built_table():
    from icrl.offline import offline_choices

    cfg = load_config(None, ["collect.ucb_c=1.0"])
    counts = np.array([[1.0, 16.0, 0.0]])
    sums = np.array([[0.9, 16 * 0.7, 0.0]])
    # emp: 0.9 > 0.7; lcb: 0.9 - 1 = -0.1 < 0.7 - 0.25 = 0.45; the unpulled arm is never chosen
    c = offline_choices(counts, sums, cfg, sigma=0.3, rng=np.random.default_rng(0))
    assert c["emp"].tolist() == [0] and c["lcb"].tolist() == [1]
    assert c["thompson"][0] in (0, 1, 2)


def test_rollouts_repeat_each_held_out_task(tmp_path):
    cfg = load_config(None, ["env.id=icrl/DarkRoom-v0", "collect.algorithms=random", "eval.episodes=2", "eval.rollouts=3", "eval.baselines=random,oracle"])
    r = evaluate(cfg, None, tmp_path, progress=False)
    assert (r["task_split"], r["n_tasks"], r["n_rollouts_per_task"], r["x"]) == ("test", 8, 3, "episode")
    curves = np.load(tmp_path / "curves.npz")
    assert curves["random"].shape == (24, 2)  # 8 held-out goals x 3 rollouts, 2 episodes
    assert r["summary"]["oracle"]["final"] == pytest.approx(17.25)  # the published held-out oracle mean
    per_goal = curves["random"].reshape(8, 3, 2)  # np.repeat keeps a goal's rollouts together
    assert any(len({tuple(r) for r in g}) > 1 for g in per_goal)  # rollouts of one goal draw other actions


def test_aggregate_seeds_averages_seeds_per_task_and_counts_identical_baselines_once(tmp_path):
    """2 seeds x 2 tasks x 1 rollout: per-task means (1 + 5) / 2 = 3 and (3 + 7) / 2 = 5 at step 1,
    stderr over the 2 tasks |5 - 3| / 2 = 1; per-seed finals 3 and 7: stderr over seeds 2."""
    base = {"schema": "icrl.results/v1", "metric": "episode_return", "x": "episode", "config": {"seed": 0}, "seed": 0,
            "n_tasks": 2, "n_rollouts_per_task": 1}
    model = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[5.0, 6.0], [7.0, 8.0]])]
    oracle = np.array([[9.0, 9.0], [9.0, 9.0]])
    for s, m in zip((0, 1), model):
        d = tmp_path / f"seed-{s}"
        d.mkdir()
        np.savez(d / "curves.npz", ad=m, oracle=oracle)
        (d / "results.json").write_text(json.dumps({**base, "summary": summarise({"ad": m})[1]}))
        (d / "metrics.jsonl").write_text(json.dumps({"train/step": 5, "time/train_s": 1.0, "eval/final": 0.5,
                                                     "eval/mean_over_curve": 0.25}) + "\n"
                                         + json.dumps({"train/step": 10, "time/train_s": 2.0, "probe/final": 1.5,
                                                       "probe/mean_over_curve": 1.25}) + "\n")
    r = aggregate_seeds([tmp_path / "seed-0", tmp_path / "seed-1"], [0, 1], [10.0, 20.0], tmp_path)
    assert r["curves"]["ad"]["mean"] == [4.0, 5.0]
    assert r["curves"]["ad"]["stderr"] == pytest.approx([1.0, 1.0])
    assert r["summary"]["ad"]["final_stderr_seeds"] == pytest.approx(2.0)  # finals 3 and 7
    assert r["stderr_over"] == "tasks (n=2; 2 training seeds averaged per task)"
    assert r["curves"]["oracle"]["stderr"] == [0.0, 0.0] and np.load(tmp_path / "curves.npz")["oracle"].shape == (2, 2)
    assert "final_stderr_seeds" not in r["summary"]["oracle"]
    assert r["seeds"] == [0, 1] and r["wall_seconds"] == 30.0
    assert r["per_seed"]["1"]["summary"]["ad"]["final"] == 7.0 and r["per_seed"]["1"]["wall_seconds"] == 20.0
    # probes of old runs (eval/…) and new ones (probe/…) read alike
    assert [p["final"] for p in r["per_seed"]["0"]["probes"]] == [0.5, 1.5]


def test_visit_map_counts_every_step_of_every_rollout(tmp_path, capsys, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    from icrl.checkpoint import save_checkpoint
    from icrl.methods import make_model
    from icrl.models.config import ModelConfig

    root = Path(__file__).parent.parent
    spec = importlib.util.spec_from_file_location("visit_map", root / "scripts/visit_map.py")
    visit_map = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(visit_map)
    mcfg = ModelConfig.from_dict(dict(kind="dpt", obs_sizes=[9, 9], n_actions=5, n_layer=1, n_head=2, n_embd=16, block_size=40,
                                      window=40))
    model = make_model(mcfg, torch.Generator().manual_seed(0))
    save_checkpoint(tmp_path / "ckpt", model, mcfg, torch.optim.AdamW(model.parameters()), {"step": 0})
    monkeypatch.setattr(sys, "argv", ["visit_map", "--config", str(root / "configs/darkroom_dpt.yaml"),
                                      "--checkpoint", str(tmp_path / "ckpt"), "--task", "6,8", "--episodes", "3",
                                      "--rollouts", "4"])
    visit_map.main()
    rows = capsys.readouterr().out.splitlines()[1:10]  # y = 8 .. 0
    counts = [0 if c in (".", "G") else int(c) for r in rows for c in r.split()[1:]]
    assert len(counts) == 81 and sum(counts) == 4 * 3 * 20  # one cell per step: rollouts x episodes x H 20


def test_episode_success_marks_episodes_with_a_success_step():
    from icrl.evaluation import episode_success
    from icrl.histories import HistoryBatch

    # two histories of 2 episodes; episode lengths 3+2 and 2+3; success at steps as marked
    ends = np.array([0, 0, 1, 0, 1, 0, 1, 0, 0, 1], bool)
    success = np.array([0, 1, 0, 0, 0, 0, 0, 0, 0, 1], bool)
    batch = HistoryBatch(steps={"obs": np.zeros(10), "action": np.zeros(10, np.int64), "reward": np.zeros(10),
                                "terminated": np.zeros(10, bool), "truncated": ends, "success": success},
                         lengths=np.array([5, 5]), task=np.arange(2), task_params=np.zeros((2, 1)), run=np.zeros(2, np.int64),
                         source=np.zeros(2, np.int64), episode_returns=[np.zeros(2), np.zeros(2)])
    assert episode_success(batch, 2).tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_plots_name_their_settings_the_source_and_identical_curves(tmp_path):
    from icrl.plots import identical_to, plot_results, plot_training, settings_line, source_label

    config = {"collect": {"algorithms": ["ppo", "random"], "fractions": [0.7, 0.3]},
              "train": {"steps": 2000}, "eval": {"greedy": False, "temperature": 0.5}}
    assert source_label(config) == "source (ppo 70%, random 30%)"
    assert source_label({"collect": {"algorithms": ["ppo"], "fractions": []}}) == "source (ppo)"
    curve = {"mean": [1.0, 2.0], "stderr": [0.1, 0.1]}
    results = {"env": "icrl/DarkRoom-v0", "metric": "episode_return", "x": "episode", "n_tasks": 8,
               "task_split": "test", "n_rollouts_per_task": 16, "seeds": [0, 1, 2], "config": config,
               "stderr_over": "tasks (n=8; 16 rollouts and 3 training seeds averaged per task)",
               "curves": {"ad": {"mean": [0.5, 1.5], "stderr": [0.2, 0.2]}, "source": curve, "ppo": dict(curve)}}
    assert identical_to(results["curves"]) == {"ppo": "source"}
    line = settings_line(results)
    assert "AD after 2,000 training steps, temperature 0.5" in line and "3 training seeds" in line
    assert "8 test tasks x 16 rollouts" in line and "stderr over tasks (n=8" in line
    assert plot_results(results, tmp_path / "return.png").stat().st_size > 1000
    rows = [{"train/step": 10, "train/loss": 1.0}, {"train/step": 20, "train/loss": 0.5},
            {"train/step": 20, "probe/final": 3.0, "probe/mean_over_curve": 2.0, "time/train_s": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plot_training(tmp_path / "metrics.jsonl", tmp_path / "training.png").stat().st_size > 1000
    (tmp_path / "metrics.jsonl").write_text("")
    assert plot_training(tmp_path / "metrics.jsonl", tmp_path / "none.png") is None
