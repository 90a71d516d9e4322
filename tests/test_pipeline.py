"""Every command end to end on a tiny budget; results validate; resume equals the uninterrupted run."""
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from safetensors.torch import load_file

from icrl.cli import main

ROOT = Path(__file__).parent.parent
SCHEMA = json.loads((ROOT / "icrl" / "results.schema.json").read_text())
TINY_MODEL = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16"]
BANDIT = ["env.kwargs.n_arms=3", "env.kwargs.horizon=12"]


def test_dpt_stream_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--quiet", "--config", str(ROOT / "configs/quickstart.yaml"), "--out", str(out), *BANDIT,
                 *TINY_MODEL, "train.steps=6", "train.batch_size=4", "train.warmup_steps=2", "eval.n_tasks=5",
                 "eval.offline_sizes=0,3,12"])
    assert code == 0
    text = capsys.readouterr().out
    assert "dpt" in text and "thompson" in text and "regret.png" in text
    results = json.loads((out / "results.json").read_text())
    jsonschema.validate(results, SCHEMA)
    assert set(results["curves"]) == {"dpt", "random", "emp", "ucb", "ucb1", "thompson", "oracle"}
    assert all(len(c["mean"]) == 12 for c in results["curves"].values())
    assert set(results["summary"]) == set(results["curves"])
    assert results["summary"]["oracle"]["final"] == 0.0
    assert (out / "regret.png").stat().st_size > 1000
    assert (out / "checkpoint" / "model.safetensors").exists() and (out / "metrics.jsonl").exists()
    offline = json.loads((out / "results_offline.json").read_text())
    assert offline["sizes"] == [0, 3, 12] and set(offline["curves"]) == {"dpt", "emp", "lcb", "thompson"}
    assert all(len(c["mean"]) == 3 and min(c["mean"]) >= 0 for c in offline["curves"].values())


def test_ad_collect_train_eval_commands(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    common = ["env.kwargs.n_arms=3", "env.kwargs.horizon=10", "model.kind=ad", *TINY_MODEL]
    assert main(["collect", "--quiet", "--out", str(data), *common, "collect.n_tasks=8",
                 "collect.histories_per_shard=3", "collect.algorithms=thompson,ucb"]) == 0
    assert main(["verify", str(data)]) == 0
    assert main(["train", "--quiet", "--out", str(run), *common, f"data.dataset={data}", "train.steps=5",
                 "train.batch_size=4", "train.warmup_steps=1"]) == 0
    assert main(["eval", "--quiet", "--checkpoint", str(run / "checkpoint"), *common, "eval.n_tasks=4"]) == 0
    results = json.loads((run / "results.json").read_text())
    jsonschema.validate(results, SCHEMA)
    assert "ad" in results["curves"]
    # `run` over seeds on a given dataset: every seed trains on it in a folder of its own
    seeds = tmp_path / "seeds"
    assert main(["run", "--quiet", "--out", str(seeds), *common, f"data.dataset={data}", "train.steps=2",
                 "train.batch_size=4", "train.warmup_steps=1", "eval.n_tasks=4", "seeds=0,1"]) == 0
    assert all((seeds / f"seed-{s}" / "checkpoint" / "model.safetensors").exists() for s in (0, 1))
    assert not (seeds / "seed-0" / "data").exists()


def test_windowed_dpt_on_dark_room_over_seeds(tmp_path, capsys):
    """DPT with a sliding window runs 4 Dark Room episodes (80 steps) on a 16-transition context,
    probes itself during training, and two training seeds aggregate into one results.json."""
    out = tmp_path / "run"
    code = main(["run", "--quiet", "--out", str(out), "env.id=icrl/DarkRoom-v0", "collect.algorithms=ppo",
                 "collect.n_tasks=4", "collect.episodes=3", "collect.histories_per_shard=4", *TINY_MODEL,
                 "model.kind=dpt", "model.window=8", "data.context_len=16", "data.readouts=4", "train.steps=4",
                 "train.batch_size=4", "train.warmup_steps=1", "train.eval_every=2", "eval.episodes=4",
                 "eval.rollouts=2", "eval.baselines=random,oracle", "seeds=0,1"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    jsonschema.validate(results, SCHEMA)
    assert results["seeds"] == [0, 1] and set(results["per_seed"]) == {"0", "1"}
    assert (results["task_split"], results["x"], results["n_tasks"], results["n_rollouts_per_task"]) == ("test", "episode", 8, 2)
    assert all(len(c["mean"]) == 4 for c in results["curves"].values())
    curves = np.load(out / "curves.npz")
    assert curves["dpt"].shape == (2 * 16, 4) and curves["oracle"].shape == (16, 4)
    assert (out / "return.png").exists()
    for s in (0, 1):
        assert (out / f"seed-{s}" / "checkpoint" / "model.safetensors").exists()
        rows = [json.loads(line) for line in (out / f"seed-{s}" / "metrics.jsonl").read_text().splitlines()]
        probes = [r for r in rows if "probe/final" in r]
        assert [r["train/step"] for r in probes] == [2, 4] and all(r["time/train_s"] > 0 for r in probes)
    a, b = (json.loads((out / f"seed-{s}" / "results.json").read_text())["summary"]["dpt"] for s in (0, 1))
    assert a != b  # other data, other weights
    # `eval` over the same seeds re-evaluates every seed's model at other eval settings and aggregates
    again = tmp_path / "again"
    common = ["eval", "--quiet", "--checkpoint", str(out), "--out", str(again), "env.id=icrl/DarkRoom-v0",
              "collect.algorithms=ppo", *TINY_MODEL, "model.kind=dpt", "model.window=8", "data.context_len=16",
              "eval.episodes=4", "eval.rollouts=2", "eval.baselines=random,oracle"]
    assert main([*common, "eval.temperature=3", "seeds=0,1"]) == 0
    re = json.loads((again / "results.json").read_text())
    jsonschema.validate(re, SCHEMA)
    assert re["seeds"] == [0, 1] and re["summary"]["oracle"] == results["summary"]["oracle"]
    assert re["summary"]["dpt"] != results["summary"]["dpt"]  # other temperature, other rollouts
    for s in ("0", "1"):  # what the models cost and their training probes are the run's
        assert re["per_seed"][s]["wall_seconds"] == results["per_seed"][s]["wall_seconds"]
        assert re["per_seed"][s]["probes"] == results["per_seed"][s]["probes"]
    capsys.readouterr()
    assert main([*common, "seeds=0,2"]) == 2 and "seed-2" in capsys.readouterr().err


def _train(out, steps, extra=()):
    return main(["train", "--quiet", "--out", str(out), *BANDIT, *TINY_MODEL, "data.source=stream",
                 f"train.steps={steps}", "train.batch_size=4", "train.warmup_steps=2", "train.checkpoint_every=3",
                 *extra])


def test_resume_equals_uninterrupted_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert _train(full, 6) == 0
    assert _train(part, 3) == 0  # stops at step 3, then continues to 6
    assert _train(part, 6, ["--resume"]) == 0
    a = load_file(str(full / "checkpoint/model.safetensors"))
    b = load_file(str(part / "checkpoint/model.safetensors"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_eval_rejects_mismatched_env_and_corrupt_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, 2) == 0
    capsys.readouterr()
    code = main(["eval", "--quiet", "--checkpoint", str(run / "checkpoint"), "env.kwargs.n_arms=4",
                 "env.kwargs.horizon=12", "eval.n_tasks=2"])
    assert code == 2 and "actions" in capsys.readouterr().err
    (run / "checkpoint/model.safetensors").write_bytes(b"garbage")
    code = main(["eval", "--quiet", "--checkpoint", str(run / "checkpoint"), *BANDIT, "eval.n_tasks=2"])
    err = capsys.readouterr().err
    assert code == 2 and "model.safetensors" in err and err.count("\n") == 1


def test_train_rejects_a_dataset_that_does_not_fit(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["collect", "--quiet", "--out", str(data), "env.kwargs.n_arms=5", "env.kwargs.horizon=10",
                 "collect.n_tasks=4"]) == 0
    capsys.readouterr()
    common = ["train", "--quiet", "--out", str(tmp_path / "run"), f"data.dataset={data}", *TINY_MODEL, "train.steps=2"]
    assert main([*common, "env.kwargs.n_arms=3", "env.kwargs.horizon=10"]) == 2  # actions 3, 4 do not exist
    assert "data.dataset" in capsys.readouterr().err
    assert main([*common, "env.id=icrl/BernoulliBandit-v0", "env.kwargs.horizon=10"]) == 2
    assert "holds icrl/GaussianBandit-v0 histories" in capsys.readouterr().err
    assert main([*common[:4], f"data.dataset={tmp_path / 'nope'}", "env.kwargs.horizon=10"]) == 2
    assert "data.dataset" in capsys.readouterr().err


@pytest.mark.parametrize("kind, source", [("ad", "dataset"), ("dpt", "stream")])
def test_training_loss_falls(tmp_path, kind, source):
    data = tmp_path / "data"
    common = ["env.kwargs.n_arms=3", "env.kwargs.horizon=20", f"model.kind={kind}", "model.n_layer=1",
              "model.n_embd=32", "collect.algorithms=ucb"]
    if source == "dataset":
        assert main(["collect", "--quiet", "--out", str(data), *common, "collect.n_tasks=64"]) == 0
    assert main(["train", "--quiet", "--out", str(tmp_path / "run"), *common, f"data.source={source}",
                 f"data.dataset={data}" if source == "dataset" else "data.dataset=", "train.steps=150",
                 "train.batch_size=16", "train.lr=3e-3", "train.warmup_steps=10", "train.log_every=25"]) == 0
    losses = [json.loads(l)["train/loss"] for l in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.8 * losses[0]


def test_filter_command_and_lhf_weighted_training(tmp_path, capsys):
    data = tmp_path / "data"
    common = ["env.kwargs.n_arms=3", "env.kwargs.horizon=40", "collect.algorithms=thompson,random",
              "collect.runs_per_task=4", "filter.window=10", *TINY_MODEL, "model.kind=ad"]
    assert main(["collect", "--quiet", "--out", str(data), *common, "collect.n_tasks=6"]) == 0
    assert main(["filter", "--data", str(data), *common, "filter.use=loss"]) == 0
    text = capsys.readouterr().out
    assert "thompson" in text and "random" in text and (data / "lhf_best_worst.png").exists()
    assert main(["verify", str(data)]) == 0
    train = ["train", "--quiet", "--out", str(tmp_path / "run"), *common, f"data.dataset={data}", "filter.enabled=true",
             "train.steps=3", "train.batch_size=4"]
    assert main([*train, "filter.use=loss"]) == 0
    assert main([*train, "filter.use=sample", "--overwrite"]) == 2  # weights of another filter section: stale
    assert "`icrl filter --config CONFIG --data" in capsys.readouterr().err


def test_point_robot_dpt_and_ad_end_to_end_with_success_rate(tmp_path, capsys):
    """Continuous observations and actions through collect -> train -> eval, for both methods and
    both heads; the spec travels into the manifest and the checkpoint; success is reported."""
    data = tmp_path / "data"
    common = ["env.id=icrl/SparsePointRobot-v0", *TINY_MODEL, "train.steps=4", "train.batch_size=4",
              "train.warmup_steps=1", "eval.episodes=3", "eval.rollouts=2"]
    assert main(["collect", "--quiet", "--out", str(data), *common, "collect.algorithms=[psrl,noise_distill]",
                 "collect.n_tasks=6", "collect.episodes=3", "collect.histories_per_shard=3"]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["spec"]["action_space"]["type"] == "Box" and manifest["spec"]["has_reward_model"]
    for kind, head in (("dpt", "gaussian"), ("ad", "tanh")):
        run = tmp_path / kind
        assert main(["run", "--quiet", "--out", str(run), *common, f"data.dataset={data}", f"model.kind={kind}",
                     f"model.head={head}", "model.window=20", "data.context_len=20", "data.seq_len=20",
                     "collect.algorithms=[psrl,noise_distill]"]) == 0
        results = json.loads((run / "results.json").read_text())
        jsonschema.validate(results, SCHEMA)
        assert {kind, "random", "oracle", "psrl", "source"} <= set(results["curves"])
        success = results["other_metrics"]["success_rate"]
        assert set(success["curves"]) == set(results["curves"]) and len(success["curves"][kind]["mean"]) == 3
        assert success["summary"]["oracle"]["final"] == 1.0 and results["n_tasks"] == 5
        spec = json.loads((run / "checkpoint" / "spec.json").read_text())
        model = json.loads((run / "checkpoint" / "model.json").read_text())
        assert spec["env_id"] == "icrl/SparsePointRobot-v0" and model["head"] == head
        weights = load_file(str(run / "checkpoint" / "model.safetensors"))
        assert {"obs_enc.mean", "obs_enc.std"} <= set(weights) and weights["obs_enc.std"].min() > 0
    capsys.readouterr()
