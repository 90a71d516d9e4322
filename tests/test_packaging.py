"""The wheel installs envs/ as icrl.envs and nothing as a top-level envs package."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_wheel_maps_envs_to_icrl_envs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("icrl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"icrl/envs/" + p.relative_to(ROOT / "envs").as_posix() for p in (ROOT / "envs").rglob("*.py")}
    assert expected and expected <= names
    assert not any(n.startswith("envs/") for n in names)
    assert "icrl/py.typed" in names and "icrl/results.schema.json" in names
