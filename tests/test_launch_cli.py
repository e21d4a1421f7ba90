"""`python -m jaxsae.launch` bad input: one-line errors, exit code 2, nothing half-written. The
launcher runs in this process (tests/launcher.py) except in test_unknown_sweep, which checks that a
real interpreter gives the same exit status and line."""

from __future__ import annotations



import typing

import pytest

import jaxsae.launch.__main__
from launcher import in_a_fresh_interpreter, launch
from jaxsae.errors import UserError
from jaxsae.judge.config import JudgeConfig
from jaxsae.launch.config import SweepConfig, load_config
from jaxsae.sae import ARCHS
from jaxsae.select.config import SelectConfig
from jaxsae.steer import SteerSettings
from jaxsae.train.spec import Arch, TrainSettings



def one_line_error(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def test_every_shipped_sweep_parses():
    for name in ("full", "cpu-study", "debug", "demo", "smoke"):
        cfg = load_config(name)
        assert isinstance(cfg, SweepConfig) and cfg.name == name and cfg.models
    study = load_config("cpu-study")  # 30 SAEs: the pooled tau_b's bootstrap CI about +-0.27 with no relation
    assert len(study.train.archs) * len(study.train.levels) == 30 and study.steer.n_concepts <= study.autointerp.n_concepts
    full = load_config("full")
    assert [m.layer for m in full.models] == [12, 17, 20]
    assert full.train.d_sae == 16384 and full.train.levels == (0, 1, 2, 3, 4, 5) and len(full.train.archs) == 5
    assert full.autointerp.n_latents == 1000 and full.autointerp.n_concepts == 100
    assert full.steer.n_instructions == 10 and len(full.steer.factors) == 6


def test_unknown_sweep(tmp_path):
    """In a real interpreter: the exit status and stderr of ``python -m jaxsae.launch`` itself."""
    r = in_a_fresh_interpreter("jaxsae.launch", "--sweep", "nope", "--out", tmp_path / "o")
    assert "unknown sweep" in one_line_error(r) and r.stdout == ""
    assert not (tmp_path / "o").exists()
    assert one_line_error(launch("--sweep", "nope", "--out", str(tmp_path / "o"))) == one_line_error(r)


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


@pytest.mark.parametrize("toml, message", [
    ('[train]\nd_sae = "big"', "train.d_sae = 'big' must be an integer"),
    ("[train]\nlevels = 1", "train.levels = 1 must be a list"),
    ('[train]\narchs = ["topk", "relux"]', "train.archs[1] = 'relux' must be one of 'relu', 'topk'"),
    ("[train]\nd_sae = 0", "train.d_sae must be a positive number, got 0"),
    ("[train]\nbatch = -8", "train.batch must be a positive number, got -8"),
    ("[[models]]\nlayer = 1.5", "models[0].layer = 1.5 must be an integer"),
    ('[[models]]\ndtype = "float16"', "models[0].dtype = 'float16' must be one of 'float32', 'bfloat16'"),
    ('[steer]\nposition = "middle"', "steer.position = 'middle' must be one of 'all', 'last'"),
    ('[judge]\nkind = "remote"', "judge.kind = 'remote' must be one of 'local', 'api'"),
    ('[judge]\ndtype = "float16"', "judge.dtype = 'float16' must be one of 'auto', 'float32', 'bfloat16'"),
    ("[steer]\nbatch = -1", "steer.batch must be 0 (the default, 256 rows) or a positive number of rows, got -1"),
    ('[select]\ntier_choice = "best"', "select.tier_choice = 'best' must be one of 'dev', 'eval'"),
    ("[autointerp]\nuse_demos = 1", "autointerp.use_demos = 1 must be true or false"),
    ("[analysis]\nseeed = 1", "unknown key(s) seeed in [analysis]"),
    ("train = 3", "train must be a table"),
])
def test_config_values_of_the_wrong_type(tmp_path, toml, message):
    path = tmp_path / "sweep.toml"
    path.write_text(f"name = 'x'\n{toml}\n")
    with pytest.raises(UserError) as e:
        load_config(str(path))
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_toml_values_take_the_sections_types(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text("name = 'x'\n[steer]\nfactors = [1, 2.5]\n[train]\narchs = ['topk']\nlevels = [0, 2]\n")
    cfg = load_config(str(path))
    assert cfg.steer.factors == (1.0, 2.5) and all(type(f) is float for f in cfg.steer.factors)
    assert cfg.train.archs == ("topk",) and cfg.train.levels == (0, 2)
    assert isinstance(cfg.train, TrainSettings) and isinstance(cfg.steer, SteerSettings)  # the library's own
    assert cfg.judge == JudgeConfig() and cfg.select == SelectConfig()  # omitted sections: the library's defaults


def test_unhashed_settings_leave_the_stage_hash(tmp_path):
    """steer.batch (``metadata={"hashed": False}``: results do not depend on it) changes neither the
    steer stage's hash nor a record's settings; a hashed steer or judge setting changes the hash."""
    import dataclasses

    from jaxsae.launch.runner import Run
    from jaxsae.launch.stages import STAGES

    def steer_hash(cfg):
        return Run(tmp_path, cfg, STAGES).stage_hash("steer")

    base = SweepConfig()
    batched = dataclasses.replace(base, steer=dataclasses.replace(base.steer, batch=32))
    assert steer_hash(batched) == steer_hash(base) and batched.steer.protocol() == base.steer.protocol()
    assert "batch" not in base.steer.protocol()
    for cfg in (dataclasses.replace(base, steer=dataclasses.replace(base.steer, seed=1)),
                dataclasses.replace(base, judge=dataclasses.replace(base.judge, dtype="bfloat16"))):
        assert steer_hash(cfg) != steer_hash(base)


def test_train_arch_choices_are_the_library_architectures():
    assert set(typing.get_args(Arch)) == set(ARCHS)


def test_bad_override(tmp_path):
    # tyro's report, flattened to one line
    msg = one_line_error(launch("--sweep", "smoke", "--train.tokens", "many", "--out", str(tmp_path / "o")))
    assert "--train.tokens" in msg and "'many'" in msg and "--help" in msg
    msg = one_line_error(launch("--sweep", "smoke", "--train.tokenz", "5", "--out", str(tmp_path / "o")))
    assert "--train.tokenz" in msg and "did you mean --train.tokens?" in msg  # and its suggestion
    msg = one_line_error(launch("--sweep", "smoke", "--judge.kind", "remote", "--out", str(tmp_path / "o")))
    assert "'remote'" in msg and "'local', 'api'" in msg
    msg = one_line_error(launch("--sweep", "smoke", "--train.levels", "--out", str(tmp_path / "o")))
    assert "train.levels is empty" in msg
    msg = one_line_error(launch("--sweep", "smoke", "--train.d-sae", "0", "--out", str(tmp_path / "o")))
    assert "train.d_sae must be a positive number" in msg
    assert not (tmp_path / "o").exists()


def test_documented_override_examples_are_real_options(tmp_path):
    r = launch("--sweep", "smoke", "--train.tokens", "50000", "--train.steps", "200", "--steer.factors", "0.5", "1.0",
               "--status", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "--train.steps" in jaxsae.launch.__main__.__doc__


def test_stage_whose_upstream_has_not_run(tmp_path):
    msg = one_line_error(launch("--sweep", "smoke", "--stages", "analysis", "--out", str(tmp_path / "o")))
    assert "reads the results of 'train'" in msg and "has not run" in msg and "--stages train,analysis" in msg
    assert not (tmp_path / "o" / "manifests").exists()


def test_help_lists_stages_and_options():
    r = launch("--sweep", "demo", "--help")
    assert r.returncode == 0, r.stderr
    for word in ("--stages", "--redo", "--compile-cache", "autointerp", "train.d-sae", "steer.factors", "judge.kind"):
        assert word in r.stdout, word


def test_missing_validity_data_stops_the_run_or_is_recorded_when_not_required(tmp_path):
    import dataclasses
    import json

    from jaxsae.errors import UserError
    from jaxsae.launch.config import load_config
    from jaxsae.launch.runner import Run
    from jaxsae.launch.stages import STAGES, check_validity, stage_validity

    cfg = load_config("smoke")
    missing = dataclasses.replace(cfg.validity, axbench_dir=str(tmp_path / "no-such-folder"))
    with pytest.raises(UserError) as e:
        check_validity(Run(tmp_path / "a", dataclasses.replace(cfg, validity=missing), STAGES))
    assert "\n" not in str(e.value) and "--validity.skip" in str(e.value)
    optional = dataclasses.replace(missing, required=False)
    run = Run(tmp_path / "b", dataclasses.replace(cfg, validity=optional), STAGES)
    check_validity(run)  # the demo's setting: no error before the run
    (tmp_path / "b").mkdir()
    assert stage_validity(run) == ["validity.json"]
    v = json.loads((tmp_path / "b" / "validity.json").read_text())
    assert v["measured"] is False and "no-such-folder" in v["reason"] and "validity.required = false" in v["reason"]
