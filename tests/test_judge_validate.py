"""Judge validity: AUROC (ties half) against hand-computed cases and scipy's Mann–Whitney U, the
stratified bootstrap CI, the labelled AxBench examples, fake judges with known ratings, the
AutoInterp detector check, the cache, the verdict line, the CLI, and end to end with the embedded
SmolLM2 judge and the tests' local HTTP judge."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from jaxsae.autointerp import AutoInterpConfig, latent_examples, select_latents
from jaxsae.autointerp import prompts as P
from jaxsae.autointerp.roles import Detection
from jaxsae.autointerp.validate import DetectorCheck, validate_detector
from jaxsae.errors import UserError
from jaxsae.features import FeatureStatsConfig, stats_from_codes
from jaxsae.judge import Judge, Rating
from jaxsae.judge.validate import (ValiditySettings, auroc, bootstrap_ci, cache_key, data_hash, labelled_examples,
                                   repeated_words, validate_cached, validate_judge, verdict)

AXBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "axbench"
needs_axbench = pytest.mark.skipif(not AXBENCH.is_dir(), reason=f"AxBench data not found at {AXBENCH}")
FAST = ValiditySettings(axbench_dir=str(AXBENCH), n_per_class=8, n_boot=300)


# ------------------------------------------------------------------------------ AUROC and CI

def test_auroc_hand_computed():
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1], [1]) == 0.5  # a tie counts half
    # pairs (2>1) (2=2) (2<3) (3>1) (3>2) (3=3): (1 + .5 + 0 + 1 + 1 + .5) / 6
    assert auroc([2, 3], [1, 2, 3]) == pytest.approx(4.0 / 6.0)
    assert math.isnan(auroc([], [1.0]))


def test_auroc_is_mann_whitney_u():
    rng = np.random.default_rng(1)
    for _ in range(20):
        p = rng.integers(0, 3, rng.integers(2, 30)).astype(float)  # many ties, as 0/1/2 ratings
        n = rng.integers(0, 3, rng.integers(2, 30)).astype(float)
        u = mannwhitneyu(p, n, alternative="two-sided", method="asymptotic").statistic
        assert auroc(p, n) == pytest.approx(u / (len(p) * len(n)), abs=1e-12)


def test_bootstrap_ci():
    assert bootstrap_ci([2, 2, 2], [0, 0, 0]) == (1.0, 1.0)  # perfect in every resample
    assert bootstrap_ci([1, 1, 1], [1, 1, 1]) == (0.5, 0.5)
    assert all(math.isnan(v) for v in bootstrap_ci([1.0], [0.0, 1.0]))
    rng = np.random.default_rng(0)
    p, n = rng.normal(1.0, 1.0, 40), rng.normal(0.0, 1.0, 40)
    lo, hi = bootstrap_ci(p, n, seed=3)
    assert lo < auroc(p, n) < hi and (lo, hi) == bootstrap_ci(p, n, seed=3)
    lo90, hi90 = bootstrap_ci(p, n, seed=3, level=0.9)
    assert lo <= lo90 and hi90 <= hi  # a lower level gives a narrower interval
    lo_small, hi_small = bootstrap_ci(p[:10], n[:10], seed=3)
    assert hi_small - lo_small > hi - lo  # fewer examples, wider interval


# ------------------------------------------------------------------------------ labelled data

@needs_axbench
def test_labelled_examples():
    ex = labelled_examples(AXBENCH, n_per_class=8, seed=0)
    assert list(ex) == ["concept", "instruction", "fluency"]
    for crit, items in ex.items():
        assert all(e.request.criterion == crit for e in items)
        c = Counter(e.label for e in items)
        assert c[True] == 8 and c[False] == 8, crit
    kinds = Counter(e.kind for e in ex["concept"] if not e.label)
    assert kinds == {"hard negative": 4, "negative": 4}
    assert all(e.request.concept for e in ex["concept"])
    pos_instr = {e.request.fragment: e.request.instruction for e in ex["instruction"] if e.label}
    neg = [e for e in ex["instruction"] if not e.label]
    own = {e.request.fragment: e.request.instruction for e in neg}
    assert not set(pos_instr) & set(own)  # different responses in the two classes
    from jaxsae.judge.validate import axbench_rows

    truth = {r["output"]: r["input"] for r in axbench_rows(AXBENCH)}
    assert all(truth[f] == i for f, i in pos_instr.items())
    assert all(truth[e.request.fragment] != e.request.instruction for e in neg)  # never its own instruction
    real = [e.request.fragment for e in ex["fluency"] if e.label]
    broken = [e for e in ex["fluency"] if not e.label]
    assert Counter(e.kind for e in broken) == {"shuffled": 4, "repeated": 4}
    assert all(f in truth for f in real)
    for e in broken:
        assert e.request.fragment not in truth
        if e.kind == "shuffled":  # the same words in another order
            orig = next(o for o in truth if sorted(o.split()) == sorted(e.request.fragment.split()))
            assert orig.split() != e.request.fragment.split()
    assert repeated_words("a b c d e f g h i j k l m n o p") == "a b a b a b a b a b a b a b a b"
    again = labelled_examples(AXBENCH, n_per_class=8, seed=0)
    assert data_hash(again) == data_hash(ex) != data_hash(labelled_examples(AXBENCH, n_per_class=8, seed=1))


def test_labelled_examples_bad_folder(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        labelled_examples(tmp_path / "missing")
    with pytest.raises(UserError, match="no train_data.parquet"):
        labelled_examples(tmp_path)


# ------------------------------------------------------------------------------ fake judges

class KnownJudge(Judge):
    """Rates from a table: ``table[(criterion, instruction, fragment)] -> Rating``, else ``default``."""

    def __init__(self, fn, name="known"):
        self.fn, self.name, self.calls = fn, name, 0

    def rate(self, items):
        self.calls += 1
        return [self.fn(r) for r in items]

    def describe(self):
        return f"fake:{self.name}"


def _labels(examples):
    return {(e.request.criterion, e.request.instruction, e.request.fragment): e.label
            for items in examples.values() for e in items}


@needs_axbench
def test_perfect_and_constant_and_random_judges():
    ex = labelled_examples(AXBENCH, n_per_class=8, seed=0)
    lab = _labels(ex)
    key = lambda r: (r.criterion, r.instruction, r.fragment)  # noqa: E731

    def digits(p):
        p = np.asarray(p, float)
        return Rating(score=float(p @ [0, 1, 2]), argmax=float(np.argmax(p)), ok=True, probs=tuple(p), digit_mass=0.9)

    perfect = validate_judge(KnownJudge(lambda r: digits([0.1, 0.2, 0.7] if lab[key(r)] else [0.8, 0.15, 0.05])),
                             ex, settings=FAST)
    for crit, r in perfect["criteria"].items():
        assert (r["auroc"], r["ci_low"], r["ci_high"], r["n_pos"], r["n_neg"]) == (1.0, 1.0, 1.0, 8, 8), crit
        assert r["auroc_argmax"] == 1.0 and r["digit_mass"] == pytest.approx(0.9) and r["agreement"] == 1.0
    assert verdict(perfect) is None
    json.dumps(perfect)  # JSON-able

    # expected 1.1 rounds to 1 but the argmax is 2: agreement 0; a constant judge separates nothing
    const = validate_judge(KnownJudge(lambda r: digits([0.35, 0.2, 0.45])), ex, settings=FAST)
    for r in const["criteria"].values():
        assert (r["auroc"], r["ci_low"], r["ci_high"], r["agreement"]) == (0.5, 0.5, 0.5, 0.0)

    rng = np.random.default_rng(7)
    rand = validate_judge(KnownJudge(lambda r: digits(rng.dirichlet([1, 1, 1]))), ex,
                          settings=ValiditySettings(n_per_class=8, n_boot=300))
    for r in rand["criteria"].values():
        assert r["ci_low"] < 0.5 < r["ci_high"]
    assert verdict(rand).startswith("the judge cannot tell concept present from absent (AUROC ")
    assert verdict(rand).endswith("; g is not interpretable")

    # an inverted judge is no judge either, and a low digit mass is flagged on its own
    inv = validate_judge(KnownJudge(lambda r: digits([0.8, 0.15, 0.05] if lab[key(r)] else [0.1, 0.2, 0.7])), ex,
                         settings=FAST)
    assert all(r["auroc"] == 0.0 for r in inv["criteria"].values()) and verdict(inv) is not None

    def low_mass(r):
        x = digits([0.1, 0.2, 0.7] if lab[key(r)] else [0.8, 0.15, 0.05])
        return Rating(x.score, x.argmax, True, x.probs, 0.24)

    v = verdict(validate_judge(KnownJudge(low_mass), ex, settings=FAST))
    assert v == "the judge puts only 0.24 of its probability on the ratings 0/1/2 (below 0.5); g is not interpretable"


def test_verdict_line():
    res = {"criteria": {"concept": {"auroc": 0.52, "ci_low": 0.41, "ci_high": 0.63, "ci_level": 0.95,
                                    "n_pos": 24, "n_neg": 24},
                        "fluency": {"auroc": 0.9, "ci_low": 0.8, "ci_high": 0.97, "ci_level": 0.95,
                                    "n_pos": 24, "n_neg": 24}}}
    assert verdict(res) == ("the judge cannot tell concept present from absent (AUROC 0.52, 95% CI 0.41–0.63, "
                            "n = 24/24); g is not interpretable")
    res["criteria"]["concept"].update(ci_low=0.51)
    assert verdict(res) is None
    res["detector"] = {"auroc": None, "ci_low": None, "ci_high": None, "n_pos": 0, "n_neg": 0}
    assert verdict(res) == ("the judge cannot tell a latent's activating windows from random ones (AUROC n/a, "
                            "95% CI n/a–n/a, n = 0/0); µ is not interpretable")


@needs_axbench
def test_cache_per_judge(tmp_path):
    ex = labelled_examples(AXBENCH, n_per_class=8, seed=0)
    lab = _labels(ex)
    j = KnownJudge(lambda r: Rating(2.0 * lab[(r.criterion, r.instruction, r.fragment)], 0.0, True))
    a = validate_cached(j, FAST, tmp_path)
    b = validate_cached(j, FAST, tmp_path)
    assert j.calls == 1 and a == b and (tmp_path / f"{a['cache_key']}.json").is_file()
    other = KnownJudge(j.fn, name="other")
    c = validate_cached(other, FAST, tmp_path)
    assert other.calls == 1 and c["cache_key"] != a["cache_key"]
    sizes = {"n_per_class": 8}
    assert cache_key("x", "d", sizes) != cache_key("x", "d", {"n_per_class": 9}) != cache_key("x", "e", sizes)
    assert a["cache_key"] == cache_key("fake:known", data_hash(ex), {"n_per_class": 8, "n_boot": 300,
                                                                      "ci_level": 0.95, "seed": 0})


# ------------------------------------------------------------------------------ AutoInterp detector

@pytest.fixture(scope="module")
def stats():
    rng = np.random.default_rng(0)
    N, T, F = 40, 64, 6
    acts = rng.exponential(1.0, (N, T, F)).astype(np.float32) * (rng.random((N, T, F)) < 0.1)
    tokens = rng.integers(3, 1000, (N, T)).astype(np.int32)
    counted = np.ones((N, T), bool)
    return stats_from_codes(acts, tokens, counted, FeatureStatsConfig(context_len=T, batch_size=8))


def token_text(ids):
    return [f" t{int(i)}" for i in ids]


class FakeDetector:
    """An AutoInterp judge knowing the true label of every scoring window text (``truth``: per
    latent, in the order the latents are asked, window text -> label; per latent, because the same
    text can be one latent's top window and another's random, negative, one)."""

    def __init__(self, truth, mode):
        self.truth, self.mode, self.name = truth, mode, f"fake:{mode}"
        self.rng = np.random.default_rng(5)

    def explain(self, messages):
        return ["This neuron activates on test tokens."] * len(messages)

    def detect(self, explanations, window_texts, examples):
        out = []
        for i, ws in enumerate(window_texts):
            if self.mode == "random":
                out.append(Detection(predicted=None, p_yes=list(self.rng.random(len(ws)))))
                continue
            y = [self.truth[i].get(w, False) for w in ws]
            if self.mode == "p_yes":
                out.append(Detection(predicted=None, p_yes=[0.9 if v else 0.2 for v in y]))
            else:
                out.append(Detection(predicted=[j + 1 for j, v in enumerate(y) if v], raw=""))
        return out


def test_detector(stats):
    cfg = AutoInterpConfig(n_latents=4)
    s = ValiditySettings(detector_latents=4, n_boot=300)
    sel = select_latents(stats, AutoInterpConfig(n_latents=4, n_concepts=4))
    truth, n_pos = [], 0
    for f in sel.scored:
        ex = latent_examples(stats, f, cfg)
        truth.append({P.render_window(token_text(w.tokens)): bool(lab) for w, lab in zip(ex.scoring, ex.labels)})
        n_pos += sum(map(bool, ex.labels))
    for mode in ("p_yes", "list"):
        fake = FakeDetector(truth, mode)
        r = validate_detector(fake, fake, stats, token_text, cfg, settings=s)
        assert (r["auroc"], r["ci_low"], r["ci_high"]) == (1.0, 1.0, 1.0)
        assert r["n_latents"] == r["n_explained"] == 4 and r["n_pos"] + r["n_neg"] == 4 * cfg.n_scoring
        assert r["n_pos"] == n_pos and r["score"] == ("p_yes" if mode == "p_yes" else "predicted")
        assert set(r["by_negative_kind"]) <= {"random", "top", "iw"}
    fake = FakeDetector(truth, "random")
    r = validate_detector(fake, fake, stats, token_text, cfg, settings=s)
    assert r["ci_low"] < 0.5 < r["ci_high"]
    assert "µ is not interpretable" in verdict({"criteria": {}, "detector": r})


# ------------------------------------------------------------------------------ CLI and real judges

def test_cli_help_and_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "jaxsae.judge", "validate", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for opt in ("--axbench", "--judge", "--model", "--dtype", "--batch-size", "--base-url", "--api-key-env",
                "--max-concurrency", "--cache-dir", "--n-per-class", "--criteria", "--n-boot", "--ci-level",
                "--seed", "--min-digit-mass", "--out"):
        assert opt in r.stdout, opt
    r = subprocess.run([sys.executable, "-m", "jaxsae.judge", "validate", "--axbench", str(tmp_path / "no")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not a folder" in r.stderr


@needs_axbench
def test_api_judge_end_to_end(tmp_path, capsys):
    from test_judge_api import FakeChatServer

    ex = labelled_examples(AXBENCH, n_per_class=3, seed=0)
    lab = {e.request.fragment: e.label for items in ex.values() for e in items}

    def answer(body):  # rates by the known label; one in 4 answers is unparseable
        content = body["messages"][-1]["content"]
        frag = content.split("[Sentence Fragment Start]\n", 1)[1].rsplit("\n[Sentence Fragment End]", 1)[0]
        return f"Because.\nRating: [[{2 if lab[frag] else 0}]]"

    server = FakeChatServer(answer=answer)
    try:
        from jaxsae.judge.__main__ import main

        out = tmp_path / "v.json"
        rc = main(["validate", "--axbench", str(AXBENCH), "--judge", "api", "--base-url", server.url, "--model", "m",
                   "--api-key-env", "", "--n-per-class", "3", "--n-boot", "200", "--out", str(out)])
    finally:
        server.close()
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["judge"].startswith(f"api:{server.url}/chat/completions:m:")
    for r in res["criteria"].values():
        assert (r["auroc"], r["ci_low"], r["n_pos"], r["n_neg"], r["ok_fraction"]) == (1.0, 1.0, 3, 3, 1.0)
        assert r["digit_mass"] is None and r["agreement"] is None
    assert len(server.calls) == 18 and (tmp_path / "judge_cache").is_dir()
    assert "the judge separates every measured criterion" in capsys.readouterr().out


@needs_axbench
def test_smollm2_end_to_end(smollm2):
    from jaxsae.judge import LocalJudge

    ex = labelled_examples(AXBENCH, n_per_class=2, seed=0)
    res = validate_judge(LocalJudge(smollm2), ex, settings=ValiditySettings(n_per_class=2, n_boot=200))
    json.dumps(res)
    assert res["judge"].startswith("local:") and set(res["criteria"]) == {"concept", "instruction", "fluency"}
    for r in res["criteria"].values():
        assert r["n_pos"] == r["n_neg"] == 2 and 0.0 <= r["auroc"] <= 1.0
        assert 0.0 < r["digit_mass"] <= 1.0 and 0.0 <= r["agreement"] <= 1.0 and r["ok_fraction"] == 1.0
        assert r["ci_low"] <= r["auroc"] <= r["ci_high"]


@needs_axbench
def test_cli_detector_with_api_judge(stats, tiny_dirs, tmp_path):
    """--feature-stats: the AutoInterp detector measured through the local HTTP judge, which
    answers every detection with the true activating windows (known from the statistics)."""
    from test_judge_api import FakeChatServer

    from jaxsae.features import save
    from jaxsae.judge.__main__ import main
    from jaxsae.models import load_model

    text_model = str(tiny_dirs("llama"))
    tt = P.TokenText(load_model(text_model).tokenizer)
    cfg = AutoInterpConfig()
    truth = {}
    for f in select_latents(stats, AutoInterpConfig(n_latents=3, n_concepts=3)).scored:
        ex = latent_examples(stats, f, cfg)
        for w, lab in zip(ex.scoring, ex.labels):
            truth[P.render_window(tt(w.tokens))] = bool(lab)

    def answer(body):
        content = body["messages"][-1]["content"]
        if "Passages:" not in content:
            if "[Sentence Fragment Start]" in content:
                return "Rating: [[1]]"
            return "This neuron activates on code."
        lines = content.split("Passages:\n\n", 1)[1].split("\n")  # windows hold no newline (shown as ↵)
        hits = [ln.split(". ", 1)[0] for ln in lines if truth[ln.split(". ", 1)[1]]]
        return ", ".join(hits) or "None"

    save(stats, tmp_path / "sae" / "feature_stats")
    server = FakeChatServer(answer=answer)
    try:
        out = tmp_path / "v.json"
        rc = main(["validate", "--axbench", str(AXBENCH), "--judge", "api", "--base-url", server.url, "--model", "m",
                   "--api-key-env", "", "--n-per-class", "2", "--n-boot", "100", "--feature-stats",
                   str(tmp_path / "sae"), "--text-model", text_model, "--detector-latents", "3", "--out", str(out)])
    finally:
        server.close()
    assert rc == 0
    det = json.loads(out.read_text())["detector"]
    assert (det["auroc"], det["ci_low"], det["n_latents"], det["n_explained"], det["score"]) == (1.0, 1.0, 3, 3,
                                                                                                "predicted")
    assert det["n_pos"] + det["n_neg"] == 3 * cfg.n_scoring
    assert main(["validate", "--axbench", str(AXBENCH), "--feature-stats", str(tmp_path)]) == 2  # no stats.json


@needs_axbench
def test_cache_with_detector(stats, tmp_path):
    ex = labelled_examples(AXBENCH, n_per_class=8, seed=0)
    lab = _labels(ex)
    j = KnownJudge(lambda r: Rating(2.0 * lab[(r.criterion, r.instruction, r.fragment)], 0.0, True))
    cfg = AutoInterpConfig()
    s = ValiditySettings(axbench_dir=str(AXBENCH), n_per_class=8, n_boot=100, detector_latents=2)
    det = FakeDetector({}, "random")
    a = validate_cached(j, s, tmp_path, detector=DetectorCheck(det, det, stats, token_text, cfg, s))
    assert a["detector"]["n_latents"] == 2 and (tmp_path / f"{a['cache_key']}.json").is_file()
    b = validate_cached(j, s, tmp_path, detector=DetectorCheck(det, det, stats, token_text, cfg, s))
    assert a == b and j.calls == 1
    c = validate_cached(j, s, tmp_path)  # without the detector: another result
    assert c["cache_key"] != a["cache_key"] and "detector" not in c and j.calls == 2


@needs_axbench
def test_criteria_subset_draws_the_same():
    full = labelled_examples(AXBENCH, n_per_class=4, seed=2)
    only = labelled_examples(AXBENCH, n_per_class=4, seed=2, criteria=("fluency",))
    assert list(only) == ["fluency"] and only["fluency"] == full["fluency"]
    with pytest.raises(UserError, match="unknown criteria"):
        labelled_examples(AXBENCH, criteria=("style",))


def test_markdown_table():
    from jaxsae.judge.validate import markdown_table

    res = {"criteria": {"concept": {"auroc": 0.52, "ci_low": 0.41, "ci_high": 0.63, "ci_level": 0.95, "n_pos": 24,
                                    "n_neg": 24, "digit_mass": 0.24, "agreement": 0.5}},
           "detector": {"auroc": 0.8, "ci_low": 0.7, "ci_high": 0.9, "ci_level": 0.95, "n_pos": 20, "n_neg": 36}}
    assert markdown_table(res) == [
        "| criterion | AUROC | 95% CI | n (pos/neg) | digit mass | argmax agreement |",
        "|---|---:|---:|---:|---:|---:|",
        "| concept | 0.52 | 0.41–0.63 | 24/24 | 0.24 | 0.50 |",
        "| detector | 0.80 | 0.70–0.90 | 20/36 | – | – |"]


def test_detector_with_local_autointerp_judge(stats, tiny_dirs):
    """The local AutoInterp roles end to end (a tiny random model: the numbers mean nothing, the
    path does): its own explanations, then P(yes) per scoring window as the score."""
    from jaxsae.autointerp import local_roles
    from jaxsae.models import load_model

    tiny_llama = load_model(str(tiny_dirs("llama", max_position_embeddings=2048)))

    cfg = AutoInterpConfig(max_explanation_tokens=4)
    r = validate_detector(*local_roles(tiny_llama, cfg), stats, P.TokenText(tiny_llama.tokenizer), cfg,
                          settings=ValiditySettings(detector_latents=2, n_boot=100))
    assert r["score"] == "p_yes" and r["n_latents"] == 2 and r["n_pos"] + r["n_neg"] == r["n_explained"] * 14
    assert r["n_explained"] == 0 or 0.0 <= r["auroc"] <= 1.0
    json.dumps(r)
