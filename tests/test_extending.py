"""docs/extending.md runs as written: its Python blocks, in order, in one namespace, tiny budgets."""
import json
import re
from pathlib import Path

import gymnasium
import jsonschema
import numpy as np
import pytest
import torch

import icrl.envs
from icrl.envs import tasks as registry

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "extending.md"
SCHEMA = json.loads((ROOT / "icrl" / "results.schema.json").read_text())
ENV_ID = "my/Corridor-v0"
# The budget constants of the doc's first block, lowered (the doc says the test does this).
TINY = {"N_TASKS": 6, "EPISODES": 8, "STEPS": 4, "EVAL_EPISODES": 3}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture
def clean_registry():
    """Leave icrl's and gymnasium's registries as they were: the doc registers my/Corridor-v0."""
    assert ENV_ID not in icrl.envs.family_ids()
    yield
    for env_id in (ENV_ID, "my/Beacon-v0"):
        registry._FAMILIES.pop(env_id, None)
        gymnasium.registry.pop(env_id, None)


@pytest.fixture
def one_thread():
    """One torch thread: the tiny model is far slower with two threads on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_extending_doc_runs(tmp_path, monkeypatch, clean_registry, one_thread):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 4
    assert set(TINY) <= set(re.findall(r"^([A-Z_]+) =", blocks[0], flags=re.M)), "budget names moved"
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__main__"}  # as a script: classes defined here are passed to gymnasium as objects
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name}[python block {i + 1}]", "exec"), ns)
        if i == 0:
            ns.update(TINY)

    run_dir = tmp_path / ns["RUN_DIR"]
    results = json.loads((run_dir / "results.json").read_text())
    jsonschema.validate(results, SCHEMA)
    assert results["env"] == ENV_ID and results["task_split"] == "test"
    assert results["metric"] == "episode_return" and results["x"] == "episode"
    assert {"ad", "source", "random", "oracle"} <= set(results["curves"])
    assert set(results["summary"]) == set(results["curves"])
    for curve in results["curves"].values():
        assert len(curve["mean"]) == TINY["EVAL_EPISODES"]
    assert (run_dir / "return.png").stat().st_size > 1000
    assert (run_dir / "checkpoint" / "model.safetensors").exists()

    # The continuous family of section 6: Box observations and actions, a Gaussian head, sampled tasks.
    beacon = json.loads((tmp_path / ns["BEACON_DIR"] / "results.json").read_text())
    jsonschema.validate(beacon, SCHEMA)
    assert beacon["env"] == "my/Beacon-v0" and beacon["task_split"] == "sampled" and beacon["n_tasks"] == 20
    assert {"ad", "source", "random", "oracle"} <= set(beacon["curves"])
    assert beacon["spec"]["action_space"]["type"] == "Box" and beacon["config"]["model"]["head"] == "gaussian"
    model_json = json.loads((tmp_path / ns["BEACON_DIR"] / "checkpoint" / "model.json").read_text())
    assert model_json["obs_space"]["type"] == "Box" and model_json["head"] == "gaussian"
    assert beacon["summary"]["oracle"]["final"] > beacon["summary"]["random"]["final"]

    # The oracle baseline earns exactly the family's max_return on every held-out goal.
    dist = icrl.envs.task_distribution(ENV_ID, **results["env_kwargs"])
    test_goals = dist.split()[1]
    assert results["n_tasks"] == len(test_goals)
    oracle = results["curves"]["oracle"]
    np.testing.assert_allclose(oracle["mean"], dist.max_return(test_goals).mean())
    assert results["summary"]["oracle"]["final"] == pytest.approx(dist.max_return(test_goals).mean())


def cli_commands(text: str) -> list[list[str]]:
    """The ``icrl ...`` commands of the doc's "From the command line" section, as argv lists."""
    import shlex

    section = text[text.index("## From the command line"):]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    return [shlex.split(b.replace("\\\n", " "))[1:] for b in blocks]


def test_extending_doc_command_lines_run_as_written(tmp_path, monkeypatch, clean_registry, one_thread, capsys):
    """Each command of the doc, with only its budgets lowered by overrides appended after it."""
    from icrl.cli import main

    commands = cli_commands(DOC.read_text())
    assert len(commands) == 2 and all(c[0] == "run" for c in commands)
    (tmp_path / "corridor.py").write_text(python_blocks(DOC.read_text())[1])  # the module of section 2
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    tiny = ["collect.n_tasks=6", "train.steps=3", "train.batch_size=4", "train.warmup_steps=1", "eval.episodes=3",
            "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "--quiet"]
    try:
        for argv in commands:
            assert main([*argv, *tiny]) == 0, capsys.readouterr().err
            out = tmp_path / argv[argv.index("--out") + 1]
            assert json.loads((out / "results.json").read_text())["env"] == ENV_ID
        # the checkpoint carries its config: eval needs none
        assert main(["eval", "--quiet", "--checkpoint", str(out / "checkpoint"), "--out", str(tmp_path / "again")]) == 0
    finally:
        import sys

        sys.modules.pop("corridor", None)
