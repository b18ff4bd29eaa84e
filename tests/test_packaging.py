"""The package installs as a wheel in a fresh virtual environment and ships its configs."""

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_name_maps_onto_src():
    import qmixlab.learners

    assert Path(qmixlab.learners.__file__).resolve().parent == ROOT / "src" / "learners"


@pytest.mark.slow
def test_wheel_installs_in_fresh_venv_and_loads_a_shipped_config(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    wheels = list(dist.glob("qmixlab-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp_path / "venv"
    # The fresh environment sees the already installed heavy dependencies (torch, sacred) but
    # not the editable qmixlab: the import below must resolve to the wheel.
    venv.EnvBuilder(with_pip=True, system_site_packages=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])],
                   check=True, capture_output=True, text=True)
    probe = (
        "import importlib.resources as r, yaml, qmixlab;"
        "print(qmixlab.__file__);"
        "cfg = yaml.safe_load((r.files('qmixlab.config') / 'default.yaml').read_text());"
        "print(sorted(cfg)[:3])"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    assert "site-packages" in result.stdout.splitlines()[0]
    assert str(ROOT / "src") not in result.stdout
