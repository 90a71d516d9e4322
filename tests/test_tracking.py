"""Metrics go to metrics.jsonl always and to wandb when enabled; the mode is passed only if set;
one wandb run per run folder (train and eval resume it), probes against train/step."""
import json
import struct
from pathlib import Path

import pytest

from icrl.config import ConfigError, load_config
from icrl.tracking import RUN_ID_FILE, Tracker, check_wandb

RESULTS = {"x": "step", "metric": "cumulative_regret", "curves": {"dpt": {"mean": [1.0, 2.0], "stderr": [0.1, 0.2]}},
           "summary": {"dpt": {"final": 2.0, "final_stderr": 0.2, "mean_over_curve": 1.5}},
           "stderr_over": "tasks (n=2)"}


def wandb_records(run_file: Path) -> list:
    """The records of an offline ``run-<id>.wandb`` file (wandb's LevelDB-style log: a 7-byte file
    header ``:W&B``, 0xBEE1, version; 32 KiB blocks of chunks, each a 7-byte header crc32, length,
    type (1 full, 2 first, 3 middle, 4 last) and a piece of a serialised ``Record`` protobuf)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    block, pos, chunk, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


def offline_runs(run_dir: Path) -> list[dict]:
    """Per ``run-*.wandb`` file under ``run_dir``: the run's id, group, name, job type, the history
    rows (key -> value), the step metric of every ``define_metric`` glob and the artifacts.

    wandb's service may still be writing a file after ``finish()`` returns: wait (up to 20 s)
    until every file holds its run record."""
    import time

    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(
            any(r.WhichOneof("record_type") == "run" for r in wandb_records(f)) for f in files):
        time.sleep(0.2)
    runs = []
    for f in files:
        run, rows, steps, artifacts = None, [], {}, []
        for r in wandb_records(f):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run = r.run
            elif kind == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
            elif kind == "metric" and r.metric.glob_name:
                steps[r.metric.glob_name] = r.metric.step_metric
            elif kind == "artifact":
                artifacts.append((r.artifact.name, r.artifact.type))
        runs.append({"id": run.run_id, "group": run.run_group, "name": run.display_name, "job": run.job_type,
                     "rows": rows, "steps": steps, "artifacts": artifacts})
    return runs


def test_jsonl_rows_without_wandb(tmp_path):
    t = Tracker(tmp_path, load_config(), "train")
    t.log({"train/step": 1, "train/loss": 0.5})
    t.log_eval(RESULTS, None)
    t.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"train/step": 1, "train/loss": 0.5},
                    {"eval/dpt/final": 2.0, "eval/dpt/final_stderr": 0.2, "eval/dpt/mean_over_curve": 1.5}]
    assert not (tmp_path / "wandb").exists() and not (tmp_path / RUN_ID_FILE).exists()


def test_collection_summary_goes_to_jsonl(tmp_path):
    t = Tracker(tmp_path, load_config(), "collect")
    t.log_collection({"n_histories": 4, "n_steps": 40, "seconds": 1.5,
                      "per_source": {"ucb": {"histories": 4, "final_regret": 3.0}}}, {"ucb": [1.0, 2.0]})
    t.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row == {"collect/n_histories": 4, "collect/n_steps": 40, "collect/seconds": 1.5,
                   "collect/ucb/histories": 4, "collect/ucb/final_regret": 3.0}


def test_one_wandb_run_per_run_folder_with_probes_against_train_steps(tmp_path):
    """Train and eval of one seed's folder write one run (same id, group = config name, name with
    the seed); another seed's folder is another run of the group; probe rows are plotted against
    train/step (a step metric of their own would collapse the curve)."""
    cfg = load_config(None, ["name=tiny", "seed=3", "wandb.enabled=true", "wandb.mode=offline"])
    seed3, seed4 = tmp_path / "seed-3", tmp_path / "seed-4"
    t = Tracker(seed3, cfg, "train")
    t.log({"train/step": 1, "train/loss": 0.5})
    t.log({"train/step": 2, "probe/final": 1.0, "probe/mean_over_curve": 0.5, "time/train_s": 0.1})
    t.log({"train/step": 4, "probe/final": 3.0, "probe/mean_over_curve": 2.0, "time/train_s": 0.2})
    t.close()
    cfg.wandb.artifacts = True  # the config flag wandb.artifacts
    (seed3 / "results.json").write_text(json.dumps(RESULTS))
    (seed3 / "checkpoint").mkdir()
    (seed3 / "checkpoint" / "model.json").write_text("{}")
    t = Tracker(seed3, cfg, "eval")
    t.log_eval({**RESULTS, "checkpoint": str(seed3 / "checkpoint")}, None, seed3 / "results.json")
    t.close()
    Tracker(seed4, load_config(None, ["name=tiny", "seed=4", "wandb.enabled=true", "wandb.mode=offline"]),
            "train").close()
    train, ev = offline_runs(seed3)
    other, = offline_runs(seed4)
    assert train["id"] == ev["id"] == (seed3 / RUN_ID_FILE).read_text().strip() != other["id"]
    assert (train["group"], train["name"], train["job"], ev["job"]) == ("tiny", "tiny-seed3", "train", "eval")
    assert (other["group"], other["name"]) == ("tiny", "tiny-seed4")
    assert train["steps"]["probe/*"] == "train/step" and train["steps"]["train/*"] == "train/step"
    probes = [(r["train/step"], r["probe/final"]) for r in train["rows"] if "probe/final" in r]
    assert probes == [(2, 1.0), (4, 3.0)]
    assert any(r.get("eval/dpt/final") == 2.0 for r in ev["rows"])
    assert {("tiny-seed3-model", "model"), ("tiny-seed3-results", "results")} <= set(ev["artifacts"])


def test_mode_is_passed_only_when_the_config_sets_it(tmp_path, monkeypatch):
    import wandb

    seen = []

    class Run:
        summary: dict = {}

        def define_metric(self, *a, **k):
            pass

        def finish(self):
            pass

    monkeypatch.setattr(wandb, "init", lambda **kw: seen.append(kw) or Run())
    Tracker(tmp_path, load_config(None, ["wandb.enabled=true"]), "train").close()
    Tracker(tmp_path, load_config(None, ["wandb.enabled=true", "wandb.mode=disabled"]), "eval").close()
    assert "mode" not in seen[0] and seen[1]["mode"] == "disabled"
    assert seen[0]["id"] == seen[1]["id"] and seen[0]["resume"] == "allow"


def test_check_wandb_needs_a_login_only_online(tmp_path, monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    check_wandb(load_config())  # wandb off: nothing to check
    check_wandb(load_config(None, ["wandb.enabled=true", "wandb.mode=offline"]))
    with pytest.raises(ConfigError, match="wandb login.*wandb.mode=offline") as e:
        check_wandb(load_config(None, ["wandb.enabled=true"]))
    assert "\n" not in str(e.value)
    monkeypatch.setenv("WANDB_MODE", "offline")  # the environment's mode counts when the config sets none
    check_wandb(load_config(None, ["wandb.enabled=true"]))
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
    check_wandb(load_config(None, ["wandb.enabled=true", "wandb.mode=online"]))


def test_a_half_written_row_of_a_killed_run_is_dropped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"train/step": 1}\n{"train/st')
    t = Tracker(tmp_path, load_config(), "train")
    t.log({"train/step": 2})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"train/step": 1}, {"train/step": 2}]
