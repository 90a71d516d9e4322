"""Every bad input is a one-line error with exit code 2 and nothing written; garbage configs never
raise a traceback; a full disk leaves the earlier data intact."""
import errno

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icrl import histories
from icrl.cli import main
from icrl.config import ConfigError, load_config
from icrl.integrity import complete_shards, verify

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16"]


def _one_line_error(capsys, code, needle):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and needle in err, err


def test_unknown_env_and_unfit_collector(tmp_path, capsys):
    _one_line_error(capsys, main(["collect", "--out", str(tmp_path / "a"), "env.id=icrl/NoSuchEnv-v0"]), "env.id")
    _one_line_error(capsys, main(["collect", "--out", str(tmp_path / "b"), "collect.algorithms=linucb"]),
                    "collect.algorithms.0: linucb does not fit")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_output_folder_that_cannot_be_created(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(capsys, main(["collect", "--out", str(blocker / "data"), "collect.n_tasks=2"]), "--out: cannot create")


def test_empty_missing_and_corrupted_datasets(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (empty, tmp_path / "missing"):
        _one_line_error(capsys, main(["train", "--out", str(tmp_path / "run"), f"data.dataset={path}", *TINY]),
                        "data.dataset:")
    data = tmp_path / "data"
    assert main(["collect", "--quiet", "--out", str(data), "env.kwargs.horizon=10", "collect.n_tasks=4",
                 "collect.histories_per_shard=2"]) == 0
    capsys.readouterr()
    _one_line_error(capsys, main(["train", "--out", str(tmp_path / "run"), f"data.dataset={data}", "env.kwargs.horizon=10",
                                  "model.kind=ad", "data.episode_stride=2", *TINY]), "fewer than 2 episodes")
    shard = data / "shard-00001.h5"
    shard.write_bytes(shard.read_bytes()[:-200])  # truncated
    _one_line_error(capsys, main(["train", "--out", str(tmp_path / "run"), f"data.dataset={data}",
                                  "env.kwargs.horizon=10", "model.kind=ad", *TINY]), "shard-00001.h5")


def test_checkpoint_of_another_architecture_and_eval_beyond_block_size(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["env.kwargs.n_arms=3", "env.kwargs.horizon=10", "data.source=stream", "collect.algorithms=dpt_random", *TINY]
    assert main(["train", "--quiet", "--out", str(run), *common, "train.steps=1"]) == 0
    capsys.readouterr()
    cfg_json = run / "checkpoint/model.json"
    cfg_json.write_text(cfg_json.read_text().replace('"n_layer": 1', '"n_layer": 2'))
    _one_line_error(capsys, main(["eval", "--checkpoint", str(run / "checkpoint"), *common]), "another architecture")
    cfg_json.write_text(cfg_json.read_text().replace('"n_layer": 2', '"n_layer": 1'))
    _one_line_error(capsys, main(["eval", "--checkpoint", str(run / "checkpoint"), *common,
                                  "eval.env_kwargs.horizon=11"]), "block_size")
    _one_line_error(capsys, main(["train", "--out", str(tmp_path / "run2"), *common, "data.episode_stride=2"]),
                    "data.episode_stride")


def test_disk_full_during_collection_keeps_earlier_shards(tmp_path, capsys, monkeypatch):
    real, calls = histories._fill_shard, []

    def fill_until_full(f, batch):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, batch)

    monkeypatch.setattr(histories, "_fill_shard", fill_until_full)
    args = ["collect", "--quiet", "--out", str(tmp_path), "env.kwargs.horizon=10", "collect.n_tasks=10",
            "collect.histories_per_shard=2"]
    _one_line_error(capsys, main(args), "disk full")
    assert sorted(complete_shards(tmp_path)) == [0, 1] and not list(tmp_path.glob("*.tmp-*"))
    monkeypatch.setattr(histories, "_fill_shard", real)
    assert main(args) == 0 and verify(tmp_path) == []


keys = st.sampled_from(["seed", "name", "collect.n_tasks", "collect.algorithms", "collect.fractions", "env.id",
                        "env.kwargs.sigma", "env.kwargs.n_arms", "model.kind", "model.n_embd", "train.lr",
                        "eval.env_kwargs.horizon", "wandb.mode", "data.source", "nope", "collect", "a.b.c"])
values = st.one_of(st.text(max_size=12), st.integers(-5, 10**6).map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["true", "[1, 2", "{a: 1}", "ucb,thompson", "", "null", "-1e309"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(keys, values), max_size=4))
def test_garbage_overrides_never_raise_a_traceback(pairs):
    try:
        load_config(None, [f"{k}={v}" for k, v in pairs])
    except ConfigError as e:
        assert "\n" not in str(e)


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=8), c, max_size=3)),
                    max_leaves=8))
def test_garbage_yaml_documents_never_raise_a_traceback(tmp_path_factory, doc):
    import yaml

    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump({"collect": doc, "env": doc} if isinstance(doc, dict) else doc))
    try:
        load_config(path)
    except ConfigError as e:
        assert "\n" not in str(e)


def test_nan_loss_stops_training_naming_step_and_checkpoint(tmp_path, capsys):
    code = main(["train", "--quiet", "--out", str(tmp_path), "env.kwargs.n_arms=3", "env.kwargs.horizon=10",
                 "data.source=stream", "collect.algorithms=dpt_random", *TINY, "train.steps=200", "train.lr=1e30",
                 "train.warmup_steps=0", "train.grad_clip=0", "train.checkpoint_every=1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0
    assert "at step" in err and "last good checkpoint is step" in err


# ---------------------------------------------------------------- the space contract


def _family(env_id: str, obs_sp, act_sp, nan_at: int | None = None):
    """Register a tiny user family with the given spaces; its env returns NaN observations from
    step ``nan_at`` of every episode on. Returns the id (unregistered by the fixture)."""
    import gymnasium
    import numpy as np
    from gymnasium.vector import AutoresetMode, VectorEnv
    from gymnasium.vector.utils import batch_space

    from icrl import envs

    class Tasks(envs.TaskDistribution):
        task_shape = (1,)
        observation_space, action_space, horizon = obs_sp, act_sp, 5

        def sample(self, n, rng):
            return rng.uniform(-1, 1, (n, 1))

    class Env(gymnasium.Env):
        def __init__(self):
            self.observation_space, self.action_space, self.horizon = obs_sp, act_sp, 5

    class Vec(VectorEnv):
        metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

        def __init__(self, num_envs=1):
            self.num_envs = num_envs
            self.single_observation_space, self.single_action_space = obs_sp, act_sp
            self.observation_space = batch_space(obs_sp, num_envs)
            self.action_space = batch_space(act_sp, num_envs)

        def reset(self, *, seed=None, options=None):
            self.t = np.zeros(self.num_envs, np.int64)
            return np.zeros((self.num_envs, 1), np.float32), {}

        def step(self, actions):
            self.t += 1
            obs = np.full((self.num_envs, 1), np.nan if nan_at is not None and self.t[0] >= nan_at else 0.0, np.float32)
            trunc = self.t >= 5
            self.t[trunc] = 0
            info = {"final_obs": np.array([o for o in obs] + [None])[:-1], "_final_obs": trunc} if trunc.any() else {}
            return obs, np.zeros(self.num_envs), np.zeros(self.num_envs, bool), trunc, info

    envs.register_family(env_id, Env, Vec, Tasks)
    return env_id


@pytest.fixture
def user_families():
    import gymnasium

    from icrl.envs import tasks as registry

    ids = []
    yield ids
    for env_id in ids:
        registry._FAMILIES.pop(env_id, None)
        gymnasium.registry.pop(env_id, None)


def test_spaces_outside_the_contract_are_one_line_errors_with_nothing_written(tmp_path, capsys, user_families):
    import numpy as np
    from gymnasium import spaces

    box = spaces.Box(-1.0, 1.0, (1,), np.float32)
    cases = [
        (spaces.Dict({"pos": box}), box, "observation space Dict"),
        (box, spaces.Box(-np.inf, np.inf, (1,), np.float32), "unbounded"),
        (box, spaces.MultiBinary(2), "action space MultiBinary"),
    ]
    for i, (obs_space, action_space, needle) in enumerate(cases):
        env_id = _family(f"bad/Space{i}-v0", obs_space, action_space)
        user_families.append(env_id)
        for cmd in (["collect", "--out", str(tmp_path / f"d{i}")], ["run", "--out", str(tmp_path / f"r{i}")]):
            _one_line_error(capsys, main([*cmd, f"env.id={env_id}", "collect.algorithms=random"]), needle)
    assert not list(tmp_path.iterdir())


def test_nan_observation_of_a_user_env_names_step_and_task_and_writes_nothing(tmp_path, capsys, user_families):
    import numpy as np
    from gymnasium import spaces

    box = spaces.Box(-1.0, 1.0, (1,), np.float32)
    user_families.append(_family("bad/NanObs-v0", box, box, nan_at=3))
    out = tmp_path / "data"
    _one_line_error(capsys, main(["collect", "--quiet", "--out", str(out), "env.id=bad/NanObs-v0",
                                  "collect.algorithms=random", "collect.n_tasks=4"]),
                    "bad/NanObs-v0 returned a non-finite observation at step 2 of task 0")
    assert not out.exists()


def test_a_discrete_models_checkpoint_on_a_box_env_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["env.kwargs.n_arms=3", "env.kwargs.horizon=10", "data.source=stream", "collect.algorithms=dpt_random", *TINY]
    assert main(["train", "--quiet", "--out", str(run), *common, "train.steps=1"]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in run.iterdir())
    _one_line_error(capsys, main(["eval", "--checkpoint", str(run / "checkpoint"), "eval.env_id=icrl/PointRobot-v0",
                                  "collect.algorithms=random", *TINY]), "the model was trained on obs Discrete(1) and actions Discrete(3)")
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_dataset_collected_in_other_spaces_is_refused_before_training(tmp_path, capsys):
    data = tmp_path / "data"
    common = ["env.id=icrl/PointRobot-v0", "collect.algorithms=[random]", "collect.n_tasks=2", "collect.episodes=2"]
    assert main(["collect", "--quiet", "--out", str(data), *common]) == 0
    capsys.readouterr()
    # the point robot's observation box grows with the horizon: a model of horizon 50 would see other inputs
    _one_line_error(capsys, main(["train", "--out", str(tmp_path / "run"), *common, f"data.dataset={data}",
                                  "env.kwargs.horizon=50", "model.kind=ad", *TINY]),
                    "was collected with obs Box(-3.0, 3.0, (2,), float32)")
    assert not (tmp_path / "run").exists()
