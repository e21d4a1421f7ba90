"""The steer / select settings of the smoke sweep through `python -m jaxsae.launch`: what
utility.json, selected.json, results.json and the report record (judge failure counts, g_argmax,
the tier choice), concepts from a file (steer.concepts), the latents ΔTC scores (select.pool),
and one-line errors for a missing, malformed or too-wide concept file. The launcher runs in this
process (tests/launcher.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import in_ci, require_axbench
from launcher import ROOT, ran, smoke, smoke_ok as launch

AXBENCH = ROOT.parent / "shared" / "axbench" / "concept10" / "prod_2b_l20_v1"


def fail(out: Path, *args: str) -> str:
    """stderr of a launch that must stop with a one-line UserError (exit 2)."""
    r = smoke(out, *args)
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, r.stderr[-2000:]
    return lines[0]


def sae_dirs(out: Path) -> list[Path]:
    return [out / r["sae_dir"] for r in json.loads((out / "results.json").read_text())["records"]]


def steered(d: Path) -> list[int]:
    return [json.loads(ln)["feature"] for ln in (d / "steering" / "concepts.jsonl").read_text().splitlines()]


def concept_file(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps({"feature": f, "concept": c}) + "\n" for f, c in pairs))
    return path


@pytest.fixture(scope="module")
def run_dir(smoke_run):
    """The session's smoke run (conftest.py), read here and copied before any change."""
    return smoke_run


def test_steering_outputs_record_judge_argmax_and_tier_choice(run_dir):
    records = json.loads((run_dir / "results.json").read_text())["records"]
    for r, d in zip(records, sae_dirs(run_dir)):
        util = json.loads((d / "steering" / "utility.json").read_text())
        js = util["judge_stats"]
        assert js["ratings"] == 2 * 3 * (2 * 1 + 1)  # 2 concepts x 3 criteria x (2 factors x 1 dev + 1 test)
        assert js["failed"] == js["parse_failures"] == js["hard_failures"] == 0 and 0 < js["min_digit_mass"] <= 1
        # the SAEs of a model are steered in shared batches: this_run counts the judge over all of them
        assert js["this_run"]["ratings"] == js["ratings"] * len(records)
        assert util["judge"].startswith("local:") and "tiny-random-llama" in util["model"]
        assert 0 <= util["g_argmax"] <= 2 and util["m_f_fallback"] == []
        gen = json.loads((d / "steering" / "concepts.jsonl").read_text().splitlines()[0])["generations"][0]
        assert len(gen["ratings"]["concept"]["probs"]) == 3 and "hm_argmax" in gen
        sel = json.loads((d / "steering" / "selected.json").read_text())
        assert sel["tier_choice"] == "dev" and "chosen on dev" in sel["tier_choice_label"]
        assert sel["quantile_reference"] == "ΔTC of the 128 scored latents (select.pool = 'all')"
        with np.load(d / "dtc.npz") as z:
            assert z["features"].tolist() == list(range(128))  # select.pool = "all": every latent
        assert r["g"] == util["g"] and r["g_argmax"] == util["g_argmax"] and r["tier_choice"] == "dev"
        assert r["judge_stats"] == {k: v for k, v in js.items() if k != "this_run"} and r["m_f_fallbacks"] == 0
    report = (run_dir / "report.md").read_text()
    assert "| g (argmax) |" in report and "| tier chosen |" in report and "| on dev |" in report
    assert "> Steering judge local:" in report and "0 without a valid rating" in report


def test_concepts_from_a_file_and_the_concepts_pool(run_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    mine = concept_file(tmp_path / "mine.jsonl", [(5, "numbers"), (17, "the sea"), (40, "cats")])
    # the first steer.n_concepts = 2 of the file are steered by every SAE; ΔTC still scores every latent
    assert ran(launch(out, "--steer.concepts", str(mine), "--redo", "steer")) == ["steer", "select", "steer_selected",
                                                                                  "analysis", "report"]
    for d in sae_dirs(out):
        assert steered(d) == [5, 17]
        assert [c["concept"] for c in json.loads((d / "steering" / "utility.json").read_text())["concepts"]] == [
            "numbers", "the sea"]
        assert json.loads((d / "steering" / "selected.json").read_text())["pool"] == [5, 17]

    # select.pool = "concepts": only the steered concepts are scored, the tiers' quantiles come from them
    assert ran(launch(out, "--steer.concepts", str(mine), "--select.pool", "concepts", "--redo", "select")) == [
        "select", "steer_selected", "analysis", "report"]
    for d in sae_dirs(out):
        with np.load(d / "dtc.npz") as z:
            assert z["features"].tolist() == [5, 17] and np.all(np.isfinite(z["delta_tc"]))
        sel = json.loads((d / "steering" / "selected.json").read_text())
        assert sel["quantile_reference"] == "ΔTC of the 2 scored latents (select.pool = 'concepts')"

    # other concepts: select is downstream of steer, so the scores follow the steered concepts
    other = concept_file(tmp_path / "other.jsonl", [(5, "numbers"), (33, "rain")])
    args = ("--steer.concepts", str(other), "--select.pool", "concepts")
    assert ran(launch(out, *args, "--redo", "steer")) == ["steer", "select", "steer_selected", "analysis", "report"]
    for d in sae_dirs(out):
        assert steered(d) == [5, 33]
        with np.load(d / "dtc.npz") as z:
            assert z["features"].tolist() == [5, 33]


def test_bad_concept_files_and_settings_are_one_line_errors(run_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    msg = fail(out, "--steer.concepts", str(tmp_path / "missing.jsonl"), "--redo", "steer")
    assert "missing.jsonl does not exist" in msg
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"feature": 1, "concept": "a"}\n{"feature": 2\n')
    assert f"{bad}:2 is not a concept record" in fail(out, "--steer.concepts", str(bad), "--redo", "steer")
    wide = concept_file(tmp_path / "wide.jsonl", [(3, "ok"), (500, "too wide")])
    msg = fail(out, "--steer.concepts", str(wide), "--redo", "steer")
    assert "names latent 500 but the SAE" in msg and "has 128 latents" in msg
    if AXBENCH.is_dir() or in_ci():  # a real AxBench set names Gemma Scope 16k latents: too wide for the smoke SAEs
        require_axbench()  # under CI=true the data must be there (a loud failure, not a silent pass)
        msg = fail(out, "--steer.concepts", str(AXBENCH / "latent_eval_data.parquet"), "--redo", "steer")
        assert "names latent 16038 but the SAE" in msg
    out = tmp_path / "select"  # a stage that failed keeps its configuration: a fresh copy for the select settings
    shutil.copytree(run_dir, out)
    for flag, value, choices in (("--select.tier-choice", "test", ("'dev'", "'eval'")),
                                 ("--select.pool", "some", ("'all'", "'concepts'"))):  # Literal choices: tyro's report
        r = smoke(out, flag, value, "--redo", "select")
        assert r.returncode == 2 and flag in r.stderr and value in r.stderr, r.stderr
        assert all(c in r.stderr for c in choices), r.stderr
    # settings are checked before a stage's finished outputs are touched: its manifest survives
    assert (out / "manifests" / "steer_selected.json").exists() and (out / "manifests" / "select.json").exists()
