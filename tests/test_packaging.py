"""The package as a user installs it: a wheel (not the editable checkout) built from the tracked
sources, installed into a fresh virtual environment (its dependencies taken from this venv's
site-packages, so nothing is downloaded), runs the bundled smoke sweep from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory) -> Path:
    """The python of a fresh venv holding only the jaxsae wheel (+ a path to this venv's deps)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: the build writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "jaxsae", src / "jaxsae", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(dist), str(src)], check=True, capture_output=True, text=True)
    (whl,) = dist.glob("jaxsae-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert {f"jaxsae/configs/{s}.toml" for s in ("demo", "smoke", "debug", "full", "cpu-study")} <= set(names)

    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(whl)], check=True, capture_output=True, text=True)
    # this venv's packages for the dependencies; a plain path line, so its editable jaxsae is not seen
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.slow
def test_wheel_runs_the_bundled_smoke_sweep(wheel_python, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    where = subprocess.run([str(wheel_python), "-c", "import jaxsae; print(jaxsae.__file__)"], cwd=tmp_path, env=env,
                           check=True, capture_output=True, text=True).stdout
    assert str(wheel_python.parents[1]) in where and str(ROOT) not in where  # the installed copy, not the checkout
    # the smoke sweep's validity.axbench_dir is relative to the working directory (here tmp_path)
    axbench = ROOT.parent / "shared" / "axbench"
    validity = ("--validity.axbench-dir", str(axbench)) if axbench.is_dir() else ("--validity.skip",)
    r = subprocess.run([str(wheel_python), "-m", "jaxsae.launch", "--sweep", "smoke", "--out", "run", *validity],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["sweep"] == "smoke" and len(results["records"]) == 4
    assert (tmp_path / "run" / "report.md").is_file()
    r = subprocess.run([str(wheel_python), "-m", "jaxsae.launch", "--sweep", "nope"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "cpu-study, debug, demo, full, smoke" in r.stderr  # the bundled sweeps are listed
