"""Config loading: presets, overrides, and the one-line errors for every bad input."""
from pathlib import Path

import pytest

from icrl.cli import main
from icrl.config import Config, ConfigError, describe, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_preset_loads_and_sets_no_wandb_mode(path):
    cfg = load_config(path)
    assert cfg.wandb.mode == ""  # presets never set a wandb mode (docs/architecture.md#training)


def test_a_preset_extends_its_base(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nseed: 4\ncollect: {n_tasks: 9, algorithms: [ucb]}\n"
                                      "env: {kwargs: {n_arms: 3, horizon: 7}}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\ncollect: {algorithms: [thompson]}\n"
                                      "env: {kwargs: {horizon: 11}}\n")
    cfg = load_config(tmp_path / "b.yaml", ["collect.n_tasks=5"])
    assert (cfg.name, cfg.seed, cfg.collect.algorithms, cfg.collect.n_tasks) == ("b", 4, ["thompson"], 5)
    assert cfg.env.kwargs == {"n_arms": 3, "horizon": 11}  # mappings merge key by key
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="its own base"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "e.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="cannot read .*missing.yaml"):
        load_config(tmp_path / "e.yaml")


def test_darkroom_variants_change_only_what_they_name():
    root = Path(__file__).parent.parent / "configs"
    clean, noisy, lhf = (load_config(root / f"darkroom_ad{s}.yaml") for s in ("", "_noisy", "_noisy_lhf"))
    assert noisy.collect.fractions == [0.7, 0.3] and noisy.collect.algorithms == ["ppo", "random"]
    assert lhf.filter.enabled and not noisy.filter.enabled
    assert (clean.model, clean.train, clean.eval) == (lhf.model, lhf.train, lhf.eval)


def test_overrides_convert_to_field_types():
    cfg = load_config(None, ["collect.n_tasks=7", "collect.ucb_c=2e-1", "env.kwargs.sigma=0.5",
                             "collect.algorithms=ucb,thompson", "wandb.enabled=true", "seed=3"])
    assert cfg.collect.n_tasks == 7 and cfg.collect.ucb_c == pytest.approx(0.2)
    assert cfg.env.kwargs["sigma"] == 0.5 and cfg.collect.algorithms == ["ucb", "thompson"]
    assert cfg.wandb.enabled is True and cfg.seed == 3


def test_defaults_are_a_config():
    assert isinstance(load_config(), Config)


@pytest.mark.parametrize("overrides, needle", [
    (["collect.n_taks=5"], "collect.n_taks: unknown key (did you mean collect.n_tasks?)"),
    (["colect.n_tasks=5"], "colect: unknown key (did you mean collect?)"),
    (["collect.n_tasks=abc"], "collect.n_tasks: expected an integer"),
    (["collect.n_tasks=1.5"], "collect.n_tasks: expected an integer"),
    (["collect.n_tasks=0"], "collect.n_tasks: must be >= 1"),
    (["collect.ucb_c=-1"], "collect.ucb_c: must be >= 0"),
    (["collect.ucb_c=nan"], "collect.ucb_c: expected a finite number"),
    (["collect.backend=gpu"], "collect.backend: must be one of"),
    (["wandb.enabled=maybe"], "wandb.enabled: expected true or false"),
    (["collect.algorithms=thompsn"], "collect.algorithms.0: unknown algorithm 'thompsn' (did you mean thompson?)"),
    (["env.id=icrl/GausianBandit-v0"], "env.id: unknown env"),
    (["env.kwargs.sigmaa=0.1"], "env.kwargs.sigmaa: unknown kwarg"),
    (["env.kwargs.sigma=-1"], "env.kwargs.sigma:"),
    (["env.kwargs.n_arms=x"], "env.kwargs.n_arms: expected int"),
    (["collect"], "overrides are key.sub=value"),
])
def test_bad_inputs_name_the_key(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("collect: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="not a config \\(top level is not a mapping\\)"):
        load_config(bad)


BOMB = "".join(f"{x}: &{x} [{', '.join([f'*{p}' if p else 'lol'] * 9)}]\n"
               for p, x in zip(["", *"abcdefgh"], "abcdefghi"))  # 9**9 values once expanded, in < 400 bytes


@pytest.mark.parametrize("content, needle", [
    (b"aws_secret_access_key = AKIAVERYSECRET\n", "not a config (top level is not a mapping)"),
    (b"just some notes\nAKIAVERYSECRET on the second line\n", "not a config (top level is not a mapping)"),
    (b"[AKIAVERYSECRET, 2]", "not a config (top level is not a mapping)"),
    (b"0", "not a config (top level is not a mapping)"),
    (b"\x89PNG\r\n\x1a\n\xff\xd8AKIAVERYSECRET", "not a config (not UTF-8 text"),
    (b"a: 1\x00AKIAVERYSECRET", "not valid YAML"),
    (b"key: AKIAVERYSECRET: [unclosed", "not valid YAML: mapping values are not allowed here (line 1"),
    (BOMB.encode(), "not a config (its aliases expand to more than 100000 values)"),
    (b"a: &a [1, *a]\n", "not a config (a YAML alias refers to itself)"),
    (b"[" * 50_000, "not a config (nested too deeply)"),
    (b"seed: " + b"9" * 5000, "holds a value Python cannot read"),
    (b"# AKIAVERYSECRET\n" * 70_000, "larger than 1048576 bytes"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_a_file_that_is_not_a_config_is_refused_without_quoting_it(tmp_path, content, needle):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert needle in message and str(path) in message
    assert "AKIAVERYSECRET" not in message and "lol" not in message and "\n" not in message
    assert len(message) < 200 + len(str(path))


def test_the_alias_bomb_is_small_and_refused_at_once(tmp_path, capsys):
    import time

    assert len(BOMB) < 400
    (tmp_path / "bomb.yaml").write_text(BOMB)
    t = time.perf_counter()
    code = main(["collect", "--out", str(tmp_path / "out"), "--config", str(tmp_path / "bomb.yaml")])
    assert time.perf_counter() - t < 2.0
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and len(err) < 300 and "aliases expand" in err
    (tmp_path / "ok.yaml").write_text("env: {kwargs: &k {n_arms: 3}}\neval: {env_kwargs: *k}\n")  # modest aliases load
    assert load_config(tmp_path / "ok.yaml").eval.env_kwargs == {"n_arms": 3}


@pytest.mark.parametrize("overrides", [
    ["collect.n_tasks=" + "9x" * 5000],
    ["collect." + "k" * 10_000 + "=1"],
    ["seed=" + "9" * 5000],
    ["env.kwargs.n_arms=" + "[" + "1, " * 5000 + "1]"],
    ["collect.algorithms=" + "u" * 10_000],
    ["env.id=" + "x" * 10_000],
], ids=range(6))
def test_messages_quote_at_most_80_characters_of_a_key_or_value(overrides):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    message = str(e.value)
    assert "..." in message and "\n" not in message and len(message) < 600, message


def test_long_keys_and_values_in_a_yaml_file_are_truncated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"collect:\n  {'q' * 900}: 1\n")  # YAML caps a plain key at 1024 characters
    with pytest.raises(ConfigError, match=r"collect\.q+\.\.\.: unknown key") as e:
        load_config(path)
    assert len(str(e.value)) < 800
    path.write_text(f"collect: {{n_tasks: [{', '.join(['7'] * 3000)}]}}\n")
    with pytest.raises(ConfigError, match="collect.n_tasks: expected an integer") as e:
        load_config(path)
    assert len(str(e.value)) < 200


def test_cli_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "data"
    code = main(["collect", "--out", str(out), "--config", str(CONFIGS[0]), "collect.n_tasks=-3"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "collect.n_tasks" in err
    assert not out.exists()


def test_help_documents_every_field():
    text = "\n".join(describe())
    for key in ("collect.n_tasks", "collect.histories_per_shard", "env.kwargs", "wandb.mode", "seed"):
        assert key in text
    assert all(":" in line for line in describe() if line.startswith("  "))


def test_env_module_is_imported_before_the_env_id_is_checked(tmp_path, monkeypatch):
    (tmp_path / "my_family.py").write_text(
        "from icrl.envs import register_family\n"
        "from icrl.envs.bandits import GaussianBanditEnv, GaussianBanditVectorEnv, GaussianBanditTaskDistribution\n"
        "register_family('mine/Bandit-v0', GaussianBanditEnv, GaussianBanditVectorEnv, GaussianBanditTaskDistribution)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(None, ["env.module=my_family", "env.id=mine/Bandit-v0"])
    assert cfg.env.id == "mine/Bandit-v0"
    with pytest.raises(ConfigError, match="env.module: cannot import 'no_such_module'"):
        load_config(None, ["env.module=no_such_module"])


@pytest.mark.parametrize("source, needle", [
    ("def broken(:\n", "raised SyntaxError: invalid syntax"),
    ("raise RuntimeError('no GPU here' * 40)\n", "raised RuntimeError: no GPU hereno GPU here"),
    ("import sys\nsys.exit(0)\n", "raised SystemExit: 0"),
    ("import sys\nsys.exit()\n", "raised SystemExit; fix the module"),
    ("import a_dependency_that_is_not_installed\n", "raised ModuleNotFoundError: No module named"),
    ("x = 1 / 0\n", "raised ZeroDivisionError: division by zero"),
])
def test_env_module_that_fails_to_import_is_one_line(tmp_path, monkeypatch, capsys, source, needle):
    name = f"user_family_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"env.module={name}"])
    message = str(e.value)
    assert message.startswith(f"env.module: importing '{name}' raised") and needle in message, message
    assert "\n" not in message and len(message) < 300
    code = main(["collect", "--out", str(tmp_path / "out"), f"env.module={name}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and needle in err and "Traceback" not in err


def test_env_module_relative_name_is_refused_and_ctrl_c_is_not_swallowed(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="env.module: '.mine' is a relative module name"):
        load_config(None, ["env.module=.mine"])
    (tmp_path / "interrupts_import.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        load_config(None, ["env.module=interrupts_import"])
