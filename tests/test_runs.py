"""Run folders: a finished or running run is never silently reused, --resume continues whichever
stage was interrupted, a checkpoint knows its world, and the best checkpoint is chosen off the
held-out tasks."""
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from safetensors.torch import load_file

from icrl.cli import main
from icrl.config import load_config
from icrl.lock import FolderBusy, folder_lock
from icrl.training import selection_config

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16"]
STREAM = ["env.kwargs.n_arms=3", "env.kwargs.horizon=10", "data.source=stream", "collect.algorithms=dpt_random",
          *TINY, "train.batch_size=4", "train.warmup_steps=1", "train.checkpoint_every=3", "eval.n_tasks=4",
          "eval.baselines=random"]
AD = ["env.kwargs.n_arms=3", "env.kwargs.horizon=10", "model.kind=ad", "collect.n_tasks=6",
      "collect.histories_per_shard=2", "collect.algorithms=thompson,random", *TINY, "train.steps=3",
      "train.batch_size=4", "train.warmup_steps=1", "eval.n_tasks=4", "eval.baselines=random"]


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def _mtimes(folder):  # of what a run wrote (the lock file records its latest holder)
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != ".icrl.lock"}


def _losses(run):
    return [r["train/loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r]


def _weights(path):
    return load_file(str(path / "checkpoint" / "model.safetensors"))


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    return set(wa) == set(wb) and all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_finished_run_is_refused_resumed_as_finished_or_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(run), *STREAM, "train.steps=2"]) == 0
    before = _mtimes(run)
    metrics = _losses(run)
    capsys.readouterr()
    assert main(["run", "--quiet", "--out", str(run), *STREAM, "train.steps=2"]) == 2
    err = _err(capsys)
    assert "finished run" in err and "--resume" in err and "--overwrite" in err
    assert main(["train", "--quiet", "--out", str(run), *STREAM, "train.steps=2"]) == 2
    assert "--resume" in _err(capsys)
    assert main(["run", "--quiet", "--out", str(run), *STREAM, "train.steps=2", "--resume"]) == 0
    assert "finished already" in capsys.readouterr().out
    assert _mtimes(run) == before  # nothing touched
    assert main(["run", "--quiet", "--out", str(run), *STREAM, "train.steps=2", "--resume", "--overwrite"]) == 2
    assert main(["run", "--quiet", "--out", str(run), *STREAM, "train.steps=2", "--overwrite"]) == 0
    assert _losses(run) == metrics  # started again, not appended to


def test_a_folder_held_by_another_process_is_refused_naming_it_and_free_after_a_kill(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from icrl.lock import folder_lock\n"
                               f"with folder_lock({str(run)!r}, 'run'):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for cmd in (["run", "--quiet", "--out", str(run), *STREAM, "train.steps=2"],
                    ["train", "--quiet", "--out", str(run), *STREAM, "train.steps=2"],
                    ["eval", "--quiet", "--out", str(run), *STREAM]):
            assert main(cmd) == 2
            err = _err(capsys)
            assert f"pid {holder.pid}" in err and "in use" in err
        assert not (run / "checkpoint").exists() and not (run / "results.json").exists()
        with pytest.raises(FolderBusy):
            with folder_lock(run, "test"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(["run", "--quiet", "--out", str(run), *STREAM, "train.steps=2"]) == 0  # the kernel dropped the lock


def test_lock_is_reentrant_in_one_process(tmp_path):
    with folder_lock(tmp_path, "run"):
        with folder_lock(tmp_path, "train"):
            pass
        with folder_lock(tmp_path, "eval"):  # still held by the outer one
            pass
    probe = subprocess.run([sys.executable, "-c", f"from icrl.lock import folder_lock\nwith folder_lock({str(tmp_path)!r}, 'x'): pass"])
    assert probe.returncode == 0  # released on leaving


def test_resume_continues_each_stage(tmp_path, capsys):
    ref = tmp_path / "ref"
    assert main(["run", "--quiet", "--out", str(ref), *AD, "filter.enabled=true", "filter.window=5"]) == 0
    summary = json.loads((ref / "results.json").read_text())["summary"]
    run = tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(run), *AD, "filter.enabled=true", "filter.window=5"]) == 0

    def cut(stage):  # what a kill during `stage` leaves behind
        for name in ("results.json", "curves.npz", "return.png", "regret.png"):
            (run / name).unlink(missing_ok=True)
        if stage in ("collect", "filter", "train"):
            ckpt = json.loads((run / "checkpoint" / "trainer.json").read_text())
            assert ckpt["step"] == 3
        if stage in ("collect", "filter"):
            import shutil

            shutil.rmtree(run / "checkpoint")
            (run / "metrics.jsonl").unlink()
            manifest = json.loads((run / "data" / "manifest.json").read_text())
            (run / "data" / "lhf.h5").unlink()
            if stage == "collect":
                (run / "data" / "manifest.json").unlink()
                (run / "data" / "shard-00002.h5").unlink()
            else:
                manifest["derived"] = []
                (run / "data" / "manifest.json").write_text(json.dumps(manifest))

    for stage in ("collect", "filter", "eval"):
        cut(stage)
        ckpt_mtime = (run / "checkpoint" / "model.safetensors").stat().st_mtime_ns if stage == "eval" else None
        capsys.readouterr()
        assert main(["run", "--quiet", "--out", str(run), *AD, "filter.enabled=true", "filter.window=5"]) == 2
        assert "unfinished run" in _err(capsys)
        assert main(["run", "--quiet", "--out", str(run), *AD, "filter.enabled=true", "filter.window=5", "--resume"]) == 0
        assert json.loads((run / "results.json").read_text())["summary"] == summary, stage
        assert _same_weights(run, ref)
        if ckpt_mtime is not None:  # eval only: the model was not trained again
            assert (run / "checkpoint" / "model.safetensors").stat().st_mtime_ns == ckpt_mtime


def test_resume_continues_training_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    from icrl import training

    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["run", "--quiet", "--out", str(full), *STREAM, "train.steps=6"]) == 0
    real = training.save_checkpoint

    def killed_after_step_3(directory, *args, **kwargs):  # as a kill right after the step-3 checkpoint
        real(directory, *args, **kwargs)
        if args[3]["step"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", killed_after_step_3)
    assert main(["run", "--quiet", "--out", str(part), *STREAM, "train.steps=6"]) == 130
    monkeypatch.setattr(training, "save_checkpoint", real)
    assert not (part / "results.json").exists()
    assert main(["run", "--quiet", "--out", str(part), *STREAM, "train.steps=6", "--resume"]) == 0
    assert _same_weights(full, part)
    assert json.loads((full / "results.json").read_text())["summary"] == \
        json.loads((part / "results.json").read_text())["summary"]


def test_eval_needs_no_config_and_refuses_another_env_unless_asked(tmp_path, capsys):
    run = tmp_path / "run"
    dark = ["env.id=icrl/DarkRoom-v0", "env.kwargs.size=5", "env.kwargs.horizon=10", "collect.algorithms=random",
            "collect.n_tasks=4", "collect.histories_per_shard=4", "collect.episodes=2", "model.kind=ad", *TINY,
            "train.steps=2", "train.batch_size=2", "train.warmup_steps=1", "eval.baselines=random", "eval.episodes=2"]
    assert main(["run", "--quiet", "--out", str(run), *dark]) == 0
    stored = json.loads((run / "checkpoint" / "config.json").read_text())
    assert stored["env"]["id"] == "icrl/DarkRoom-v0" and (run / "config.json").is_file()
    again = tmp_path / "again"
    assert main(["eval", "--quiet", "--checkpoint", str(run / "checkpoint"), "--out", str(again)]) == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (run, again))
    assert a["summary"] == b["summary"] and b["trained_on"]["env_id"] == "icrl/DarkRoom-v0"
    assert b["distribution_shift"] is False
    capsys.readouterr()
    assert main(["eval", "--quiet", "--checkpoint", str(run / "checkpoint"), "--out", str(tmp_path / "x"),
                 *dark, "env.id=icrl/DarkRoomPermuted-v0"]) == 2
    err = _err(capsys)
    assert "trained on icrl/DarkRoom-v0" in err and "eval.env_id" in err
    assert not (tmp_path / "x").exists()
    shifted = tmp_path / "shifted"
    assert main(["eval", "--quiet", "--checkpoint", str(run / "checkpoint"), "--out", str(shifted),
                 "eval.env_id=icrl/DarkRoomPermuted-v0", "eval.env_kwargs.size=5", "eval.env_kwargs.horizon=10"]) == 0
    c = json.loads((shifted / "results.json").read_text())
    assert c["env"] == "icrl/DarkRoomPermuted-v0" and c["distribution_shift"] is True
    (tmp_path / "old").mkdir()  # a checkpoint written before configs were stored with it
    assert main(["eval", "--quiet", "--checkpoint", str(tmp_path / "old")]) == 2
    assert "--config" in _err(capsys)


def test_best_checkpoint_is_chosen_by_probes_off_the_held_out_tasks(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(run), *STREAM, "train.steps=6", "train.eval_every=2"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    probes = {r["train/step"]: r["probe/mean_over_curve"] for r in rows if "probe/mean_over_curve" in r}
    best_step = min(probes, key=lambda s: (probes[s], s))  # regret: lower is better, the first of equals
    best = json.loads((run / "checkpoint-best" / "trainer.json").read_text())
    assert best["step"] == best_step and best["best"]["score"] == probes[best_step]
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["best"]["step"] == best_step
    from icrl.evaluation import eval_tasks

    cfg = load_config(None, ["env.id=icrl/DarkRoom-v0", "collect.algorithms=random", "eval.rollouts=4"])
    probe_tasks, split = eval_tasks(selection_config(cfg))  # a finite family: its training goals, one
    held_out, _ = eval_tasks(cfg)                          # rollout each, as many as eval runs
    assert split == "train" and len(probe_tasks) == len(held_out) == 4 * 8
    assert not {tuple(t) for t in probe_tasks} & {tuple(t) for t in held_out}
    cfg = load_config(None, [])
    assert selection_config(cfg).eval.seed != cfg.eval.seed  # a prior: other tasks than the held-out draws


def test_window_longer_than_training_windows_and_other_horizon_refused_before_work(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(run), *STREAM, "model.window=12"]) == 2
    assert "model.window" in _err(capsys) and not run.exists()
    data = tmp_path / "data"
    assert main(["collect", "--quiet", "--out", str(data), *AD]) == 0
    capsys.readouterr()
    assert main(["run", "--quiet", "--out", str(run), *AD, f"data.dataset={data}", "env.kwargs.horizon=12"]) == 2
    assert "10-step episodes" in _err(capsys)


def test_a_killed_eval_leaves_no_results_and_the_rerun_equals_an_uninterrupted_one(tmp_path):
    """SIGKILL once the eval's progress bar shows a drawn number of methods done (not a wall time),
    then the same command again: the results of an uninterrupted eval, and nothing partial between."""
    import random
    import re
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(run), *STREAM, "train.steps=2"]) == 0
    common = ["eval", "--checkpoint", str(run / "checkpoint"), "eval.n_tasks=3000", "eval.baselines=[]"]
    assert main([*common, "--quiet", "--out", str(tmp_path / "ref")]) == 0
    n_methods = len(json.loads((tmp_path / "ref" / "results.json").read_text())["curves"])
    target = random.Random().randint(1, n_methods - 1)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "icrl.cli", *common, "--out", str(out)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    seen = b""
    while proc.poll() is None:
        seen += proc.stderr.read(1)
        done = [int(d) for d in re.findall(rb"eval: +\d+%\|[^|]*\| (\d+)/", seen)]
        if done and done[-1] >= target:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the eval finished before the kill"
    assert not (out / "results.json").exists() and not list(out.glob("*.tmp-*"))
    assert main([*common, "--quiet", "--out", str(out)]) == 0  # the lock died with the process
    a, b = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "ref", out))
    assert a["summary"] == b["summary"] and a["curves"] == b["curves"]


def test_a_config_that_spells_out_the_defaults_is_the_same_world(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(run), *STREAM, "train.steps=1"]) == 0
    assert main(["eval", "--quiet", "--checkpoint", str(run / "checkpoint"), *STREAM, "env.kwargs.sigma=0.3",
                 "eval.n_tasks=2", "--out", str(tmp_path / "ev")]) == 0  # sigma 0.3 is the default
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["distribution_shift"] is False
    capsys.readouterr()
    assert main(["eval", "--quiet", "--checkpoint", str(run / "checkpoint"), *STREAM, "env.kwargs.sigma=0.5",
                 "eval.n_tasks=2"]) == 2
    assert "eval.env_id" in _err(capsys)
