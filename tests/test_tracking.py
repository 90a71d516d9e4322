"""Metrics go to metrics.jsonl always and to wandb when enabled; the mode is passed only if set."""
import json

import pytest

from icrl.config import load_config
from icrl.tracking import Tracker

RESULTS = {"x": "step", "metric": "cumulative_regret", "curves": {"dpt": {"mean": [1.0, 2.0], "stderr": [0.1, 0.2]}},
           "summary": {"dpt": {"final": 2.0, "final_stderr": 0.2, "mean_over_curve": 1.5}}}


def test_jsonl_rows_without_wandb(tmp_path):
    t = Tracker(tmp_path, load_config(), "train")
    t.log({"train/step": 1, "train/loss": 0.5})
    t.log_eval(RESULTS, None)
    t.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"train/step": 1, "train/loss": 0.5}, {"eval/dpt/final": 2.0}]
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_wandb_offline_run_is_written(tmp_path):
    t = Tracker(tmp_path, load_config(None, ["wandb.enabled=true", "wandb.mode=offline"]), "train")
    t.log({"train/step": 1, "train/loss": 0.5})
    t.log_eval(RESULTS, None)
    t.close()
    assert any(p.name.startswith("offline-run-") for p in (tmp_path / "wandb").iterdir())


def test_mode_is_passed_only_when_the_config_sets_it(tmp_path, monkeypatch):
    import wandb

    seen = []

    class Run:
        def define_metric(self, *a, **k):
            pass

        def finish(self):
            pass

    monkeypatch.setattr(wandb, "init", lambda **kw: seen.append(kw) or Run())
    Tracker(tmp_path, load_config(None, ["wandb.enabled=true"]), "train").close()
    Tracker(tmp_path, load_config(None, ["wandb.enabled=true", "wandb.mode=disabled"]), "eval").close()
    assert "mode" not in seen[0] and seen[1]["mode"] == "disabled"


def test_a_half_written_row_of_a_killed_run_is_dropped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"train/step": 1}\n{"train/st')
    t = Tracker(tmp_path, load_config(), "train")
    t.log({"train/step": 2})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"train/step": 1}, {"train/step": 2}]
