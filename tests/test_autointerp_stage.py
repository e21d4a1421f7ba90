"""The whole AutoInterp stage on the real SmolLM2-135M-Instruct (statistics pass of a small
random SAE at layer 15, then explanations and detection by SmolLM2 itself as local judge), and
the command line: a sweep folder of two SAEs scored end to end (held-out text tokenised and its
residuals computed once for both), --help, and bad input exiting 2 with a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxsae.sae as S
from jaxsae import features
from jaxsae.autointerp import AutoInterpConfig, LocalJudge, TokenText, run_autointerp, save_results, stats_for_sae
from jaxsae.autointerp.__main__ import main
from jaxsae.autointerp.run import RESULTS_FILE, STATS_DIR
from jaxsae.features import compute
from jaxsae.features.compute import HeldOutShortWarning
from jaxsae.sae.random import calibrated_sae


ROOT = Path(__file__).resolve().parents[1]
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
    result = run_autointerp(stats, LocalJudge(lm, cfg), cfg, TokenText(lm.tokenizer))
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


# ----------------------------------------------------------------------------------- the CLI

def cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "jaxsae.autointerp", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=180)


def one_line_error(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_cli_scores_a_sweep_folder(tiny_dirs, tmp_path, monkeypatch, capsys):
    from jaxsae.models import load_model

    model = tiny_dirs("llama", max_position_embeddings=1024)  # room for the explanation prompt
    lm = load_model(str(model))
    text = tmp_path / "held_out.txt"
    text.write_text("\n\n".join(features.corpus.pydoc_texts())[:12_000])
    scfg = features.FeatureStatsConfig(context_len=64, total_tokens=4096, batch_size=8)
    with pytest.warns(HeldOutShortWarning):
        tokens, _ = features.held_out_tokens(lm, scfg, [text.read_text()])
    assert 30 <= len(tokens) < 64  # shorter than asked for
    dirs = [S.save(calibrated_sae(lm, 1, 32, tokens[:4], fire=0.05, seed=i), tmp_path / "sweep" / name)
            for i, name in enumerate(("a", "b"))]

    calls = dict(held_out_tokens=0, residuals=0, passes_with_residuals=0, passes=0)

    def counting(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            if name == "passes":
                calls["passes_with_residuals"] += k.get("resid_ntd") is not None
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(features, "held_out_tokens", counting("held_out_tokens", features.held_out_tokens))
    monkeypatch.setattr(compute, "residuals", counting("residuals", compute.residuals))
    monkeypatch.setattr(features, "compute_feature_stats", counting("passes", features.compute_feature_stats))
    argv = ["--sae", tmp_path / "sweep", "--model", model, "--judge", "local:", "--text", text, "--no-progress",
            "--stats.context-len", 64, "--stats.total-tokens", 4096, "--stats.batch-size", 8,
            "--autointerp.n-latents", 2, "--autointerp.n-concept", 2]
    with pytest.warns(HeldOutShortWarning, match=f"gave only {tokens.size:,} held-out tokens of the 4,096"):
        assert main([str(a) for a in argv]) == 0
    assert calls == dict(held_out_tokens=1, residuals=1, passes_with_residuals=2, passes=2)  # shared by both SAEs
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2

    for d, line in zip(dirs, printed):
        assert sorted(p.name for p in d.iterdir()) == [RESULTS_FILE, "cfg.json", STATS_DIR, "sae_weights.safetensors"]
        assert line.startswith(f"{d}: mu(CONCEPT") and line.endswith(str(d / RESULTS_FILE))
        st = features.load(d / STATS_DIR)
        assert st.d_sae == 32 and st.meta["layer"] == 1 and st.meta["sae"] == str(d)
        np.testing.assert_array_equal(st.tokens, tokens)
        assert st.meta["n_tokens"] == tokens.size and st.max_act.shape == (32,) and np.all(st.max_act >= 0)
        res = json.loads((d / RESULTS_FILE).read_text())
        s = res["summary"]
        assert res["sae"] == str(d) and s["judge"].startswith("local:") and s["d_sae"] == 32
        assert s["held_out_tokens"] == tokens.size and s["held_out_tokens_requested"] == 4096
        assert s["n_scored"] + s["n_failed"] == 2 and s["n_concept_requested"] == 2 and s["n_concept"] <= 2
        assert res["stats"]["fingerprint"] == st.meta["fingerprint"]
        assert len(res["latents"]) == 2 and set(res["concept100"]) == {r["latent"] for r in res["latents"]}
        for r in res["latents"]:
            assert st.count[r["latent"]] >= 15 and r["max_act"] == pytest.approx(float(st.max_act[r["latent"]]))
            assert len(r["generation"]) == 15 and len(r["scoring"]) == 14
            if r["score"] is not None:
                assert 0 <= r["score"] <= 1 and len(r["predictions"]) == 4
                assert all(0 <= w["p_yes"] <= 1 for w in r["scoring"])

    # a re-run reuses both SAEs' statistics: no pass, no residuals
    calls.update(held_out_tokens=0, residuals=0, passes=0, passes_with_residuals=0)
    with pytest.warns(HeldOutShortWarning):
        assert main([str(a) for a in argv]) == 0
    assert calls == dict(held_out_tokens=1, residuals=0, passes_with_residuals=0, passes=0)


def test_cli_help():
    r = cli("--help")
    assert r.returncode == 0, r.stderr
    for opt in ("--sae", "--model", "--judge", "--layer", "--autointerp.n-latents", "--stats.total-tokens"):
        assert opt in r.stdout


def test_cli_missing_sae_folder(tmp_path):
    r = cli("--sae", tmp_path / "nothing", "--model", "smollm2-135m-instruct", "--judge", "local:")
    assert "holds no SAE folder" in one_line_error(r)
    assert not (tmp_path / "nothing").exists()


def test_cli_layer_out_of_range(tiny_dirs, tiny_llama, tmp_path):
    D = tiny_llama.config.d_model
    cfg = S.make_cfg("standard", D, 16, apply_b_dec_to_input=False, metadata=dict(hook_layer=1))
    rng = np.random.default_rng(0)
    params = dict(W_enc=rng.normal(size=(D, 16)).astype(np.float32), b_enc=np.zeros(16, np.float32),
                  W_dec=rng.normal(size=(16, D)).astype(np.float32), b_dec=np.zeros(D, np.float32))
    sae_dir = S.save(S.SAE(cfg=cfg, params=params), tmp_path / "sae")
    n = tiny_llama.config.n_layers
    r = cli("--sae", sae_dir, "--model", tiny_dirs("llama"), "--judge", "local:", "--layer", n + 5,
            "--stats.context-len", 64, "--stats.total-tokens", 512, "--no-progress")
    err = one_line_error(r)
    assert f"layer {n + 5} is out of range" in err and f"0..{n - 1}" in err
    assert sorted(p.name for p in sae_dir.iterdir()) == ["cfg.json", "sae_weights.safetensors"]  # nothing written
