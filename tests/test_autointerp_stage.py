"""The whole AutoInterp stage on the real SmolLM2-135M-Instruct (statistics pass of a small
random SAE at layer 15, then explanations and detection by SmolLM2 itself as local judge), and
the command line: a sweep folder of two SAEs scored end to end (held-out text tokenised and its
residuals computed once for both), --help, and bad input exiting 2 with a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest

import launcher

import jaxsae.sae as S
from jaxsae import features
from jaxsae.autointerp import AutoInterpConfig, TokenText, local_roles, run_autointerp, save_results, stats_for_sae
from jaxsae.autointerp.run import RESULTS_FILE, STATS_DIR
from jaxsae.features import compute
from jaxsae.sae.random import calibrated_sae


LAYER = 15


def test_stage_on_smollm2(smollm2, tmp_path, monkeypatch):
    lm = smollm2
    scfg = features.FeatureStatsConfig(context_len=128, total_tokens=16 * 128, batch_size=8)
    tokens, _ = features.held_out_tokens(lm, scfg)
    assert tokens.shape == (16, 128)
    sae = calibrated_sae(lm, LAYER, 256, tokens[:4], fire=0.02)
    sae_dir = S.save(sae, tmp_path / "sae")

    stats = stats_for_sae(sae_dir, sae, lm, LAYER, scfg)
    assert stats.d_sae == 256 and stats.meta["layer"] == LAYER and (sae_dir / STATS_DIR / "stats.json").is_file()
    assert 0.005 < np.median(stats.frequency) < 0.08  # calibrated to fire ~2%
    cfg = AutoInterpConfig(n_latents=2, n_concepts=2)
    result = run_autointerp(stats, *local_roles(lm, cfg), cfg, TokenText(lm.tokenizer))
    result["sae"] = str(sae_dir)
    path = save_results(result, sae_dir / RESULTS_FILE)
    res = json.loads(path.read_text())  # what is saved, as read back

    s = res["summary"]
    assert s["judge"].startswith("local:") and s["detection"] == "rank"
    assert s["n_scored"] == 2 and s["n_failed"] == 0 and s["n_concept"] == 2 and s["d_sae"] == 256
    assert s["n_eligible"] >= 2 and s["n_alive"] >= s["n_eligible"]
    assert 0 <= s["mu"] <= 1 and s["mu"] == pytest.approx(s["mean_all"])  # CONCEPT100 = both latents
    assert len(res["latents"]) == 2 and res["concept100"] == [r["latent"] for r in res["latents"]]
    assert res["config"]["n_latents"] == 2 and res["stats"]["layer"] == LAYER
    for r in res["latents"]:
        assert isinstance(r["explanation"], str) and r["explanation"].strip()
        assert isinstance(r["explanation_raw"], str) and r["explanation_raw"].strip()
        assert 0.0 <= r["score"] <= 1.0 and round(r["score"] * 14, 6) == round(r["score"] * 14)
        assert len(r["generation"]) == 15 and len(r["scoring"]) == 14
        assert any("<<" in w["text"] for w in r["generation"])  # highlighted
        assert not any("<<" in w["text"] for w in r["scoring"])
        assert sorted(w["kind"] for w in r["scoring"]) == ["iw"] * 2 + ["random"] * 10 + ["top"] * 2
        # predictions per window: P(yes) saved, the 4 most likely predicted (rank rule)
        assert len(r["predictions"]) == cfg.n_expected_positive
        p = np.array([w["p_yes"] for w in r["scoring"]])
        assert np.all((p >= 0) & (p <= 1))
        flagged = [i + 1 for i, w in enumerate(r["scoring"]) if w["predicted"]]
        assert flagged == r["predictions"]
        assert min(p[np.array(flagged) - 1]) >= max(np.delete(p, np.array(flagged) - 1))
        assert r["score"] == pytest.approx(np.mean([w["label"] == w["predicted"] for w in r["scoring"]]))
        top = [w["max_act"] for w in r["generation"] + r["scoring"] if w["kind"] == "top"]
        assert len(top) == 12 and r["threshold"] == pytest.approx(0.01 * max(top))

    # the saved statistics are reused by the next run (same model, layer, config, text, weights)
    def no_pass(*a, **k):
        raise AssertionError("statistics recomputed")

    monkeypatch.setattr(features, "compute_feature_stats", no_pass)
    again = stats_for_sae(sae_dir, sae, lm, LAYER, scfg)
    assert again.meta["fingerprint"] == stats.meta["fingerprint"]
    np.testing.assert_array_equal(again.top_pos, stats.top_pos)


# ---------------------------------------------------------------------- the entry point

def cli(*args, module="jaxsae.autointerp"):
    """``python -m module *args`` (in this process: tests/launcher.py)."""
    return launcher.python_m(module, *args)


def one_line_error(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


SWEEP = ("--sweep", "smoke", "--train.archs", "topk", "--train.levels", "0", "1", "--train.d-sae", "96",
         "--train.tokens", "2560", "--eval.stats-tokens", "2048", "--autointerp.n-latents", "2",
         "--autointerp.n-concepts", "2")


def test_cli_is_the_launchers_autointerp_stage(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    r = cli(*SWEEP, "--out", out)
    assert "reads the results of 'train'" in one_line_error(r)  # nothing trained yet
    r = cli(*SWEEP, "--out", out, module="jaxsae.train")
    assert r.returncode == 0, r.stderr[-2000:]

    calls = dict(held_out_tokens=0, passes=0, saes_in_passes=0, single_passes=0)

    def counting(module, name, key):
        fn = getattr(module, name)

        def wrapped(*a, **k):
            calls[key] += 1
            if key == "passes":
                calls["saes_in_passes"] += len(a[2])  # (lm, layer, encoders, ...)
            return fn(*a, **k)
        monkeypatch.setattr(module, name, wrapped)

    counting(features, "held_out_tokens", "held_out_tokens")
    counting(compute, "compute_feature_stats_many", "passes")
    counting(features, "compute_feature_stats", "single_passes")
    from jaxsae.launch.__main__ import run_stage

    run_stage("autointerp", "python -m jaxsae.autointerp", "", argv=[*SWEEP, "--out", str(out)])  # in process
    # the held-out text tokenised once, and one statistics pass for both SAEs of the model
    assert calls == dict(held_out_tokens=1, passes=1, saes_in_passes=2, single_passes=0)
    assert sorted(p.name for p in (out / "manifests").glob("*.json")) == ["autointerp.json", "train.json"]
    sweep = out / "tiny-random-llama" / "sweep"
    for entry in json.loads((sweep / "sweep.json").read_text())["saes"]:
        d = sweep / entry["dir"]
        st = features.load(d / STATS_DIR)
        assert st.d_sae == 96 and st.meta["layer"] == 1 and st.max_act.shape == (96,) and np.all(st.max_act >= 0)
        res = json.loads((d / RESULTS_FILE).read_text())
        s = res["summary"]
        assert s["judge"].startswith("local:") and s["d_sae"] == 96 and s["n_concept_requested"] == 2
        assert s["n_scored"] + s["n_failed"] == 2 and res["stats"]["fingerprint"] == st.meta["fingerprint"]
        assert set(res["concept100"]) <= {r["latent"] for r in res["latents"]}
    r = cli(*SWEEP, "--out", out)  # done: skipped by the launcher
    assert r.returncode == 0 and "autointerp: done" in r.stdout, r.stdout


def test_cli_help_and_errors(tmp_path):
    r = cli("--sweep", "smoke", "--help")
    assert r.returncode == 0, r.stderr
    for opt in ("python -m jaxsae.autointerp", "--autointerp.n-latents", "--autointerp.n-concepts", "--judge.kind",
                "--eval.stats-tokens"):
        assert opt in r.stdout, opt
    assert "autointerp stage only" in one_line_error(cli("--sweep", "smoke", "--stages", "train", "--out", tmp_path))
    r = cli("--sweep", "smoke", "--judge.kind", "remote", "--out", tmp_path / "o")
    assert r.returncode == 2 and "remote" in r.stderr  # not a judge kind (tyro's report)
