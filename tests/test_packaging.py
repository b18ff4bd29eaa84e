"""The package installs as a wheel in a fresh virtual environment and ships its configs."""

import os
import site
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
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # The dependencies (torch, sacred, PyYAML) come from this interpreter's site-packages through a
    # plain path entry; the editable install there stays inactive (.pth hooks only run in real
    # site directories), so ``import qmixlab`` must resolve to the wheel.
    venv_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip()
    parents = [p for p in site.getsitepackages() + [site.getusersitepackages()] if Path(p).is_dir()]
    (Path(venv_site) / "qmixlab_test_dependencies.pth").write_text("\n".join(parents) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])],
                   check=True, capture_output=True, text=True)
    probe = (
        "import qmixlab, qmixlab.learners, qmixlab.envs.smacsim.env, qmixlab.ablations;"
        "from qmixlab.settings import compose_config, validate_config, available;"
        "run = validate_config(dict(compose_config('qmix', 'smacsim'), seed=0));"
        "print(qmixlab.__file__); print(run.mixer.name, run.env_args['map_name'], available('ablations')[:2])"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    location, loaded = result.stdout.splitlines()[:2]
    assert Path(location).resolve().is_relative_to(Path(venv_site).resolve()), location
    assert loaded.startswith("qmix 3m ["), loaded
