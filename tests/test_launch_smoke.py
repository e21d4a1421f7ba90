"""The smoke sweep end to end through `python -m jaxsae.launch`: well-formed outputs, cached stages,
a deleted output redoes only its stage, --redo cascades downstream, a killed run resumes to the same
results, and a changed config is refused instead of mixing results. The launcher runs in this
process (tests/launcher.py) except in the kill test, which kills a real `python -m jaxsae.launch`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jaxsae.sae as S
from launcher import NO_AXBENCH, STAGES, in_a_fresh_interpreter, ran, smoke, smoke_ok as launch

ROOT = Path(__file__).resolve().parents[1]
STABLE = ("model", "layer", "architecture", "level", "l0", "fvu", "ce_loss_score", "mu", "g", "g_output", "g_dtc")


def env():
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), TQDM_DISABLE="1")


def records(out: Path) -> list[dict]:
    return [{k: r[k] for k in STABLE} for r in json.loads((out / "results.json").read_text())["records"]]


@pytest.fixture(scope="module")
def run_dir(smoke_run):
    """The session's smoke run (conftest.py), read-only: see :func:`copy`."""
    return smoke_run


def copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the smoke run to change."""
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return out


def test_outputs_are_well_formed(run_dir):
    res = json.loads((run_dir / "results.json").read_text())
    assert res["sweep"] == "smoke" and len(res["records"]) == 4  # 2 archs x 2 levels
    assert {r["architecture"] for r in res["records"]} == {"topk", "relu"}
    for r in res["records"]:
        assert 0 < r["l0"] < 128 and 0 <= r["fvu"] < 2
        assert 0 <= r["mu"] <= 1 and 0 <= r["g"] <= 2 and 0 <= r["g_dtc"] <= 2 and 0 <= r["g_output"] <= 2
        sae = S.load(run_dir / r["sae_dir"])
        assert sae.cfg["d_sae"] == 128
        cfg = json.loads((run_dir / r["sae_dir"] / "cfg.json").read_text())
        assert int(cfg["metadata"]["sae_lens_version"].split(".")[0]) >= 6
    assert res["tau"]["overall"]["status"] == "ok" and -1 <= res["tau"]["overall"]["tau_b"] <= 1
    for r in res["records"]:  # n and SE of µ (CONCEPT latents' scores) and g (steered concepts' test scores)
        ai = json.loads((run_dir / r["sae_dir"] / "autointerp.json").read_text())
        mu = [x["score"] for x in ai["latents"] if x["in_concept100"] and x["score"] is not None]
        util = json.loads((run_dir / r["sae_dir"] / "steering" / "utility.json").read_text())
        g = [c["test_score"] for c in util["concepts"]]
        assert r["mu_n"] == ai["summary"]["n_concept"] == len(mu) == 2 and r["g_n"] == util["n_concepts"] == len(g) == 2
        assert r["mu"] == pytest.approx(np.mean(mu)) and r["g"] == pytest.approx(np.mean(g))
        assert r["mu_se"] == pytest.approx(np.std(mu, ddof=1) / np.sqrt(2))
        assert r["g_se"] == pytest.approx(np.std(g, ddof=1) / np.sqrt(2))
    assert set(res["selection_lift"]) == {"output", "dtc"} and res["selection_lift"]["dtc"]["n"] == 4
    assert set(res["selection"]["average"]["mean"]) == {"none", "output", "dtc"}
    for n in STAGES:
        m = json.loads((run_dir / "manifests" / f"{n}.json").read_text())
        assert m["stage"] == n and m["outputs"] and all((run_dir / o).exists() for o in m["outputs"])
        assert not (run_dir / "manifests" / f"{n}.started.json").exists()
    report = (run_dir / "report.md").read_text()
    assert "tau" in report.lower() and list((run_dir / "plots").glob("*.png"))
    # the protocol choices are recorded (ΔTC reading, window labels, level grouping) and compared
    assert res["select"]["reading"] == "B" and res["select"]["positions"] == "last"
    assert res["random_labels"] == "negative" and res["level_grouping"] == "grid"
    assert res["dtc_readings"]["readings"] == ["A", "B", "B'"] and res["dtc_readings"]["used"] == "B"
    r0 = res["records"][0]
    assert r0["dtc_reading"] == "B" and r0["random_labels"] == "negative" and set(r0["g_dtc_by_reading"]) == {"A", "B", "B'"}
    with np.load(run_dir / r0["sae_dir"] / "dtc.npz") as z:
        assert str(z["reading"]) == "B" and np.array_equal(z["delta_tc"], z["delta_tc_B"])
    assert "ΔTC reading **B" in report and "### ΔTC readings" in report and "labelled **negative**" in report
    # the features page: written by the report stage, recorded in its manifest, linked from report.md
    from test_report_features import _Table

    assert "report/features.html" in json.loads((run_dir / "manifests" / "report.json").read_text())["outputs"]
    assert "[report/features.html](report/features.html)" in report
    page = _Table()
    page.feed((run_dir / "report" / "features.html").read_text())
    for r in res["records"]:  # every SAE's CONCEPT latents are rows of the page
        concept = json.loads((run_dir / r["sae_dir"] / "autointerp.json").read_text())["concept100"]
        assert concept and {lat for sae, lat, _ in page.rows if sae == r["sae_dir"]} >= set(concept)


def test_rerun_skips_everything(run_dir, tmp_path):
    stdout = launch(copy(run_dir, tmp_path))
    assert ran(stdout) == []
    # the run's last lines: the headline table read from results.json
    lines = stdout.strip().splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["statistic", "value"])
    assert head > next(i for i, ln in enumerate(lines) if ln.startswith("run folder:"))
    assert lines[head + 2].startswith("τ_b(µ, g) pooled") and "too few (n = 4)" in lines[head + 2]  # 4 SAEs
    assert lines[head + 3].startswith("Ψ") and any(ln.startswith("lift of ΔTC selection") for ln in lines[head:])
    assert lines[-1].startswith("judge") and "judge validity" not in "".join(lines[:head])


def test_deleted_output_redoes_only_its_stage(run_dir, tmp_path):
    out = copy(run_dir, tmp_path)
    victim = out / json.loads((out / "results.json").read_text())["records"][0]["sae_dir"] / "dtc.npz"
    old = np.load(victim)["delta_tc"]
    victim.unlink()
    assert ran(launch(out)) == ["select"]
    np.testing.assert_allclose(np.load(victim)["delta_tc"], old, rtol=1e-5, atol=1e-6)
    assert records(out) == records(run_dir)


def test_redo_cascades_downstream(run_dir, tmp_path):
    assert ran(launch(copy(run_dir, tmp_path), "--redo", "steer_selected")) == ["steer_selected", "analysis", "report"]


def test_changed_config_is_refused(run_dir, tmp_path):
    r = smoke(copy(run_dir, tmp_path), "--steer.max-new-tokens", "7")
    assert r.returncode == 2 and "different configuration" in r.stderr and "--redo steer" in r.stderr


def test_redo_train_after_a_config_change_starts_afresh(run_dir, tmp_path):
    out = tmp_path / "redo"
    shutil.copytree(run_dir, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    r = smoke(out, "--train.d-sae", "32", "--redo", "train")
    assert r.returncode == 2 and "must be between 1 and d_sae = 32" in r.stderr  # a bad redo leaves the run intact
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    # another seed (same shapes, so the programs compiled for the first run are reused): new SAEs
    stdout = launch(out, "--train.seed", "1", "--redo", "train")
    assert ran(stdout) == STAGES
    res = json.loads((out / "results.json").read_text())
    assert len(res["records"]) == 4
    sweep = json.loads((out / "tiny-random-llama" / "sweep" / "sweep.json").read_text())
    assert sweep["settings"]["seed"] == 1
    for r in res["records"]:
        new, old = S.load(out / r["sae_dir"]), S.load(run_dir / r["sae_dir"])
        assert not np.allclose(np.asarray(new.params["W_enc"]), np.asarray(old.params["W_enc"])), r["sae_dir"]
    assert records(out) != records(run_dir)
    assert not list(out.rglob("checkpoints"))
    shutil.rmtree(out)


def test_killed_run_resumes_to_the_same_results(run_dir, tmp_path):
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "jaxsae.launch", "--sweep", "smoke", "--out", str(out), *NO_AXBENCH],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env(),
                         start_new_session=True)
    seen = []
    deadline = time.time() + 300
    for line in p.stdout:  # kill as soon as the autointerp stage has started
        seen.append(line)
        if line.startswith("[3/9] autointerp:") or time.time() > deadline:
            time.sleep(2.0)
            os.killpg(p.pid, signal.SIGKILL)
            break
    p.wait(timeout=60)
    assert any(ln.startswith("[2/9] metrics: finished") for ln in seen), "".join(seen)
    assert not (out / "manifests" / "autointerp.json").exists()
    stdout = launch(out)
    assert ran(stdout) == STAGES[2:]
    assert "train: done" in stdout and "metrics: done" in stdout
    assert records(out) == records(run_dir)
    shutil.rmtree(out)


def launch_fails(out: Path, *args: str, real: bool = False) -> str:
    """The one stderr line of a smoke launch that must stop with exit 2 (``real``: in a fresh
    interpreter, where XLA's own output to stderr would show too)."""
    r = (in_a_fresh_interpreter("jaxsae.launch", "--sweep", "smoke", "--out", out, *NO_AXBENCH, *args) if real
         else smoke(out, *args))
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def test_redo_of_one_stage_then_a_plain_run_never_mixes(run_dir, tmp_path):
    out = tmp_path / "redo-one"
    shutil.copytree(run_dir, out)
    before = records(out)
    assert ran(launch(out, "--redo", "autointerp", "--stages", "autointerp")) == ["autointerp"]
    status = launch(out, "--status")
    # the same seed gives the same autointerp.json, so nothing downstream went stale; a changed one would
    assert "autointerp      done" in status
    ai = out / json.loads((out / "results.json").read_text())["records"][0]["sae_dir"] / "autointerp.json"
    data = json.loads(ai.read_text())
    data["summary"]["note"] = "another configuration's result"
    ai.write_text(json.dumps(data))  # as if the redone stage had produced something else ...
    manifest = out / "manifests" / "autointerp.json"
    m = json.loads(manifest.read_text())
    from jaxsae.launch.integrity import Hasher, file_records

    m["files"] = file_records(out, m["outputs"], Hasher())  # ... and recorded it
    manifest.write_text(json.dumps(m))
    assert "steer           stale" in launch(out, "--status")
    assert ran(launch(out)) == STAGES[3:]  # everything downstream of autointerp, nothing mixed
    assert records(out) == before
    shutil.rmtree(out)


def test_damaged_outputs_are_redone_or_named(run_dir, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(run_dir, out)
    before = records(out)
    first = out / json.loads((out / "results.json").read_text())["records"][0]["sae_dir"]
    (first / "autointerp.json").write_text('{"summary": ')  # corrupted
    text = (out / "results.json").read_text()
    (out / "results.json").write_text(text[: len(text) // 2])  # truncated
    status = launch(out, "--status")
    assert "autointerp      damaged" in status and "analysis        damaged" in status
    assert "damaged" in [ln for ln in status.splitlines() if ln.startswith(str(first.relative_to(out)))][0]
    stdout = launch(out)
    assert ran(stdout)[:1] == ["autointerp"] and "analysis" in ran(stdout)
    assert records(out) == before
    weights = first / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # training is hours: named, not silently redone
    msg = launch_fails(out, real=True)
    assert "sae_weights.safetensors is damaged" in msg and "--redo train" in msg
    shutil.rmtree(out)


def test_one_damaged_output_of_every_stage_is_restored(run_dir, tmp_path):
    """Every stage after train with one of its recorded files truncated, all at once: a plain re-run
    redoes exactly those stages and gives the same results (a damaged output of train stops the run
    with one line instead: test_damaged_outputs_are_redone_or_named)."""
    out = tmp_path / "every-stage"
    shutil.copytree(run_dir, out)
    before = records(out)
    for n in STAGES[1:]:
        files = json.loads((out / "manifests" / f"{n}.json").read_text())["files"]
        victim = out / sorted(files)[0]
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    status = launch(out, "--status")
    assert all(f"{n:15s} damaged" in status for n in STAGES[1:]), status
    assert ran(launch(out)) == STAGES[1:]
    assert records(out) == before
    status = launch(out, "--status")
    assert all(f"{n:15s} done" in status for n in STAGES), status
    shutil.rmtree(out)


def test_replaced_cached_activations_are_refused(run_dir, tmp_path):
    (model,) = [p for p in run_dir.iterdir() if (p / "activations.npy").exists()]
    out = tmp_path / "replaced"
    (out / model.name).mkdir(parents=True)
    np.save(out / model.name / "activations.npy", np.ones((300, np.load(model / "activations.npy").shape[1]), np.float32))
    assert "have no record of what they were harvested from" in launch_fails(out)
    shutil.copy(model / "activations.npy.json", out / model.name / "activations.npy.json")
    msg = launch_fails(out)
    assert "hold 300 x" in msg and "--redo train" in msg
    assert not (out / model.name / "sweep").exists()


def test_validity_stage(run_dir, tmp_path):
    """The judge's validity on labelled AxBench data: measured before steering, cached per judge,
    in results.json and at the top of the report; skippable; missing data is one line."""
    from conftest import require_axbench

    from jaxsae.judge.validate import verdict

    require_axbench()
    res = json.loads((run_dir / "results.json").read_text())
    v = res["judge_validity"]
    assert v == json.loads((run_dir / "validity.json").read_text()) and v["measured"] is True
    assert set(v["criteria"]) == {"concept", "instruction", "fluency"}
    for r in [*v["criteria"].values(), v["detector"]]:
        assert r["ci_low"] <= r["auroc"] <= r["ci_high"] and 0 <= r["auroc"] <= 1
    assert all(r["n_pos"] == r["n_neg"] == 4 for r in v["criteria"].values())  # smoke: validity.n_per_class = 4
    assert v["detector"]["n_latents"] == 2 and v["detector"]["sae"] == res["records"][0]["sae_dir"]
    assert v["verdict"] == verdict(v) and v["verdict"]  # the tiny random judge tells nothing apart
    report = (run_dir / "report.md").read_text()
    top = report.split("## 1. SAEs")[0]
    assert f"**Warning: {v['verdict'][:40]}" in top and "| criterion | AUROC | 95% CI |" in top
    assert "| detector |" in top
    # cached per judge: a redo reads the cache file of its key instead of rating again
    out = tmp_path / "validity"
    shutil.copytree(run_dir, out)
    cache = out / "judge_validity" / f"{v['cache_key']}.json"
    cached = json.loads(cache.read_text())
    cached["seconds"] = -1.0
    cache.write_text(json.dumps(cached))
    assert ran(launch(out, "--redo", "validity", "--stages", "validity")) == ["validity"]
    assert json.loads((out / "validity.json").read_text())["seconds"] == -1.0
    # skipped by its setting: the report says so
    assert ran(launch(out, "--validity.skip", "--redo", "validity")) == ["validity", "analysis", "report"]
    assert json.loads((out / "results.json").read_text())["judge_validity"]["measured"] is False
    assert "**Judge validity not measured** (validity.skip = true)" in (out / "report.md").read_text()
    # no AxBench data: one line naming the fix, nothing redone
    msg = launch_fails(out, "--validity.axbench-dir", str(tmp_path / "nowhere"), "--redo", "validity")
    assert "validity" in msg and "--validity.skip" in msg
    shutil.rmtree(out)
    # a fresh run without the data stops before training, not at the validity stage
    fresh = tmp_path / "fresh"
    assert "--validity.skip" in launch_fails(fresh, "--validity.axbench-dir", str(tmp_path / "nowhere"))
    assert not (fresh / "manifests" / "train.json").exists() and not (fresh / "tiny-random-llama").exists()
