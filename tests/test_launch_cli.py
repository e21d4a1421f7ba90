"""`python -m jaxsae.launch` bad input: one-line errors, exit code 2, nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from jaxsae.launch.config import SweepConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def launch(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "jaxsae.launch", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=120)


def one_line_error(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def test_every_shipped_sweep_parses():
    for name in ("full", "debug", "demo", "smoke"):
        cfg = load_config(name)
        assert isinstance(cfg, SweepConfig) and cfg.name == name and cfg.models
    full = load_config("full")
    assert [m.layer for m in full.models] == [12, 17, 20]
    assert full.train.d_sae == 16384 and full.train.levels == (0, 1, 2, 3, 4, 5) and len(full.train.archs) == 5
    assert full.autointerp.n_latents == 1000 and full.autointerp.n_concepts == 100
    assert full.steer.n_instructions == 10 and len(full.steer.factors) == 6


def test_unknown_sweep(tmp_path):
    assert "unknown sweep" in one_line_error(launch("--sweep", "nope", "--out", str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_unknown_stage(tmp_path):
    assert "unknown stage" in one_line_error(launch("--sweep", "smoke", "--stages", "train,bogus", "--out", str(tmp_path / "o")))


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "output folder" in one_line_error(launch("--sweep", "smoke", "--out", str(blocker / "run")))


def test_config_that_does_not_parse(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[train\narchs = 3\n")
    assert "does not parse" in one_line_error(launch("--sweep", str(bad), "--out", str(tmp_path / "o")))
    typo = tmp_path / "typo.toml"
    typo.write_text("name = 'x'\n[train]\narchz = ['topk']\n")
    assert "unknown key" in one_line_error(launch("--sweep", str(typo), "--out", str(tmp_path / "o")))


def test_bad_override(tmp_path):
    msg = one_line_error(launch("--sweep", "smoke", "--train.tokens", "many", "--out", str(tmp_path / "o")))
    assert "override" in msg and "--train.tokens" in msg and "'many'" in msg
    msg = one_line_error(launch("--sweep", "smoke", "--train.tokenz", "5", "--out", str(tmp_path / "o")))
    assert "--train.tokenz" in msg and "did you mean --train.tokens?" in msg
    assert not (tmp_path / "o").exists()


def test_stage_whose_upstream_has_not_run(tmp_path):
    msg = one_line_error(launch("--sweep", "smoke", "--stages", "analysis", "--out", str(tmp_path / "o")))
    assert "reads the results of 'train'" in msg and "has not run" in msg and "--stages train,analysis" in msg
    assert not (tmp_path / "o" / "manifests").exists()


def test_help_lists_stages_and_options():
    r = launch("--sweep", "demo", "--help")
    assert r.returncode == 0, r.stderr
    for word in ("--stages", "--redo", "autointerp", "train.d-sae", "steer.factors", "judge.kind"):
        assert word in r.stdout, word
