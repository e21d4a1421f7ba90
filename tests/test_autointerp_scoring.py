"""AutoInterp scoring arithmetic on constructed cases: hand-built statistics where each latent
fires only on its own marker token (so an exactly right explanation exists), a scripted judge
behind the judge interface, and the whole of ``run_autointerp`` in between.

Checked: a perfect predictor scores 1, an always-"no" one the negatives' share (10/14 when the
random windows are silent), a window's label is its maximum activation above τ (off-centre
activations count), failures are left out, µ is the mean over CONCEPT100, mean / std / SE over
all scored latents, CONCEPT100 is a fixed-seed draw from the scored latents."""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import re
import warnings

import numpy as np
import pytest

from jaxsae.autointerp import AutoInterpConfig, Detection, accuracy, latent_examples, run_autointerp, save_results, summarize
from jaxsae.autointerp.scoring import SmallConceptWarning
from jaxsae.features import FeatureStatsConfig, stats_from_codes
from jaxsae.features.stream import random_positions

N, T, F, B = 40, 64, 6, 10
PEAKS = 24  # contexts where a latent peaks: 12 top windows + 12 lesser peaks for the IW draw
MARK = 900  # latent f fires exactly on token MARK + f (rendered " Mf")
CFG = AutoInterpConfig(random_labels="activation")  # the constructed case checks labels by activation


def token_text(ids):
    return [f" M{i - MARK}" if i >= MARK else f" w{i}" for i in ids]


@pytest.fixture(scope="module")
def case():
    """Statistics of F latents over N×T tokens. Latent f peaks (20 + k) at t = 20 + 3f in PEAKS
    contexts that hold none of its random windows, so its random windows are silent; latent 5
    also has, inside two of its random windows and off their centres, one activation above τ
    (0.6, marked) and one below (0.3, unmarked)."""
    scfg = FeatureStatsConfig(context_len=T, batch_size=8)
    spec = scfg.spec()
    rand = random_positions(np.random.default_rng([scfg.seed, 1]), N, spec, F)  # depends on no activation
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 800, (N, T)).astype(np.int32)
    acts = np.zeros((N, T, F), np.float32)
    fired: dict[tuple[int, int], int] = {}

    def fire(f, n, t, v, mark=True):
        assert fired.setdefault((n, t), f) == f, "two latents on one token"
        acts[n, t, f] = v
        if mark:
            tokens[n, t] = MARK + f

    for f in range(F):
        busy = [n for n in range(N) if n not in set(rand[f] // T)][:PEAKS]
        assert len(busy) == PEAKS
        for k, n in enumerate(busy):
            fire(f, n, 20 + 3 * f, 20.0 + k)
    taken = []
    for p in rand[5]:  # two random windows of latent 5 get an off-centre activation each
        n, t = divmod(int(p), T)
        dt = 7 if not taken else -5
        if (n, t + dt) in fired or any(n == m for m, _ in taken):
            continue
        fire(5, n, t + dt, 0.6 if not taken else 0.3, mark=not taken)
        taken.append((n, t + dt))
        if len(taken) == 2:
            break
    assert len(taken) == 2
    counted = np.ones((N, T), bool)
    counted[:, 0] = False
    st = stats_from_codes(acts, tokens, counted, scfg, meta=dict(note="constructed"))
    np.testing.assert_array_equal(st.rand_pos, rand)
    return st, taken


class ScriptedJudge:
    """The judge interface (``explain`` / ``detect``) with scripted behaviour per latent.

    It explains a latent by the marker token it finds highlighted, and detects by looking for that
    marker in each window; ``modes[f]`` then decides what it answers: "perfect", "no" (nothing
    fires), "yes" (everything fires), "flip" (perfect but wrong on window 1), "unparseable"
    (no usable reply), "no-explanation" (the explanation request failed), "empty" (the reply is
    empty, as an immediate end token gives) or "lead-in-only" ("This neuron activates on.")."""

    name = "scripted"
    rule = "scripted"
    EMPTY = {"empty": "", "lead-in-only": "This neuron activates on."}  # replies with no explanation in them

    def __init__(self, modes):
        self.modes = modes
        self.explain_calls, self.detect_calls = [], []

    def explain(self, messages):
        self.explain_calls.append(messages)
        out = []
        for m in messages:
            marks = collections.Counter(re.findall(r"<< M(\d+)>>", m[-1]["content"]))
            f = int(marks.most_common(1)[0][0])
            mode = self.modes[f]
            if mode == "no-explanation":
                out.append(None)
            elif mode in self.EMPTY:
                out.append(self.EMPTY[mode])
            else:
                out.append(f"This neuron activates on the token M{f}.")
        return out

    def detect(self, explanations, window_texts, examples):
        self.detect_calls.append((explanations, window_texts, examples))
        out = []
        for e, ws in zip(explanations, window_texts):
            f = int(re.fullmatch(r"the token M(\d+)", e).group(1))
            truth = [i + 1 for i, w in enumerate(ws) if f"M{f}" in w]
            mode = self.modes[f]
            if mode == "perfect":
                out.append(Detection(predicted=truth))
            elif mode == "no":
                out.append(Detection(predicted=[], raw="None"))
            elif mode == "yes":
                out.append(Detection(predicted=list(range(1, len(ws) + 1))))
            elif mode == "flip":
                out.append(Detection(predicted=sorted(set(truth) ^ {1})))
            elif mode == "unparseable":
                out.append(Detection(predicted=None, raw="I am not sure."))
            else:
                raise AssertionError(mode)
        return out


def run(stats, modes, cfg=CFG):
    judge = ScriptedJudge(modes)
    return run_autointerp(stats, judge, judge, cfg, token_text), judge


def by_latent(result):
    return {r["latent"]: r for r in result["latents"]}


def test_constructed_windows(case):
    st, (above, below) = case
    for f in range(F):
        ex = latent_examples(st, f, CFG)
        assert ex.threshold == pytest.approx(0.01 * (20 + PEAKS - 1))  # τ = 1% of the largest top peak
        # label = the window's maximum activation above τ, wherever it is in the window
        np.testing.assert_array_equal(ex.labels, [w.acts.max() > ex.threshold for w in ex.scoring])
        for w, lab in zip(ex.scoring, ex.labels):
            if w.kind != "random":
                assert lab  # top and IW windows are centred on a firing above τ
            elif f != 5:
                assert not lab and not w.acts.any()  # silent by construction
    ex = latent_examples(st, 5, CFG)
    rand = [(w, lab) for w, lab in zip(ex.scoring, ex.labels) if w.kind == "random"]
    hit_above = [lab for w, lab in rand if _covers(st, w.pos, above)]
    hit_below = [lab for w, lab in rand if _covers(st, w.pos, below) and not _covers(st, w.pos, above)]
    assert hit_above and all(hit_above)  # 0.6 > τ = 0.43 off the centre: positive
    assert hit_below and not any(hit_below)  # 0.3 < τ: negative although the latent fires in it
    for w, _ in rand:
        assert w.acts[B] == 0.0  # the centre of every random window is silent


def _covers(st, pos, nt):
    n, t = divmod(int(pos), T)
    return n == nt[0] and abs(t - nt[1]) <= st.buffer


def test_perfect_predictor_scores_one(case):
    st, _ = case
    res, judge = run(st, {f: "perfect" for f in range(F)})
    assert [r["score"] for r in res["latents"]] == [1.0] * F
    s = res["summary"]
    assert s["mu"] == 1.0 and s["mean_all"] == 1.0 and s["std_all"] == 0.0 and s["se_all"] == 0.0
    assert s["n_scored"] == F and s["n_failed"] == 0 and s["n_concept"] == F
    assert s["judge"] == "scripted" and s["detection"] == "scripted" and s["d_sae"] == F
    # what the judge was shown: 15 highlighted windows (only the latent's own token), then 14 plain
    (messages,) = judge.explain_calls
    assert len(messages) == F
    for f, m in enumerate(messages):
        user = m[-1]["content"]
        assert len(re.findall(r"^\d+\. ", user, re.M)) == CFG.n_top_gen + CFG.n_iw_gen
        assert set(re.findall(r"<<(.*?)>>", user)) == {f" M{f}"}
        assert "Good answers look like" in m[0]["content"]  # use_demos
    ((expl, texts, examples),) = judge.detect_calls
    assert expl == [f"the token M{f}" for f in range(F)]  # parsed: after "activates on", no full stop
    for ws, ex in zip(texts, examples):
        assert len(ws) == CFG.n_scoring and not any("<<" in w for w in ws)
        assert len(ex) == CFG.n_expected_positive and ex == sorted(ex) and all(1 <= i <= CFG.n_scoring for i in ex)


def test_always_no_scores_the_negatives_share(case):
    st, _ = case
    res, _ = run(st, {f: "no" for f in range(F)})
    rec = by_latent(res)
    assert res["summary"]["random_labels"] == "activation"
    for f in range(5):
        assert rec[f]["score"] == pytest.approx(10 / 14)  # 10 silent random windows of 14
        assert len(rec[f]["labels"]) == 4
    # latent 5: its random window with an off-centre activation above τ is a fifth positive
    assert len(rec[5]["labels"]) >= 5
    assert rec[5]["score"] == pytest.approx(1 - len(rec[5]["labels"]) / 14)
    # SAEBench's labelling (random windows always negative, the default) brings it back to 10/14
    neg, _ = run(st, {f: "no" for f in range(F)}, AutoInterpConfig())
    assert neg["summary"]["random_labels"] == neg["config"]["random_labels"] == "negative"
    assert [r["score"] for r in neg["latents"]] == pytest.approx([10 / 14] * F)
    everything, _ = run(st, {f: "yes" for f in range(F)}, AutoInterpConfig())
    assert [r["score"] for r in everything["latents"]] == pytest.approx([4 / 14] * F)


def test_mixed_judge_summary_and_records(case, tmp_path):
    st, _ = case
    modes = {0: "perfect", 1: "no", 2: "yes", 3: "flip", 4: "unparseable", 5: "no-explanation"}
    cfg = dataclasses.replace(CFG, n_concepts=4, concept_seed=3)
    res, judge = run(st, modes, cfg)
    rec = by_latent(res)
    want = {0: 1.0, 1: 10 / 14, 2: 4 / 14, 3: 13 / 14, 4: None, 5: None}
    for f, w in want.items():
        assert rec[f]["score"] == (None if w is None else pytest.approx(w)), f
    # failed explanations are not sent to detection; unparseable replies are kept, not scored
    assert judge.detect_calls[0][0] == [f"the token M{f}" for f in range(5)]
    assert rec[5]["explanation"] is None and rec[5]["predictions"] is None
    assert rec[4]["explanation"] == "the token M4" and rec[4]["predictions"] is None
    assert rec[4]["detection_raw"] == "I am not sure."
    ok = np.array([w for w in want.values() if w is not None])
    s = res["summary"]
    assert s["n_scored"] == 4 and s["n_failed"] == 2
    assert s["mean_all"] == pytest.approx(41 / 56)
    assert s["std_all"] == pytest.approx(np.std(ok, ddof=1))
    assert s["se_all"] == pytest.approx(np.std(ok, ddof=1) / 2)
    concept = res["concept100"]
    assert len(concept) == 4 and set(concept) <= set(rec)
    got = [want[f] for f in concept if want[f] is not None]
    assert s["n_concept"] == len(got) and s["mu"] == pytest.approx(np.mean(got))
    assert s["n_concept"] < len(concept) and s["mu"] != pytest.approx(s["mean_all"])  # the case tells them apart
    assert [f for f in rec if rec[f]["in_concept100"]] == concept
    # per window: label, prediction and text saved, consistent with the per-latent lists
    for f in range(4):
        r = rec[f]
        assert len(r["scoring"]) == 14 and len(r["generation"]) == 15
        assert [i + 1 for i, w in enumerate(r["scoring"]) if w["label"]] == r["labels"]
        assert [i + 1 for i, w in enumerate(r["scoring"]) if w["predicted"]] == sorted(r["predictions"])
        assert r["score"] == pytest.approx(np.mean([w["label"] == w["predicted"] for w in r["scoring"]]))
        assert all(f"M{f}" in w["text"] for w in r["scoring"] if w["label"])
        assert r["threshold"] == pytest.approx(0.43) and r["max_act"] == pytest.approx(43.0)
    # saved JSON: NaN-free, round-trips
    path = save_results(res, tmp_path / "autointerp.json")
    back = json.loads(path.read_text())
    assert back["summary"]["n_failed"] == 2 and back["concept100"] == concept


def test_an_empty_explanation_is_a_failed_latent(case):
    st, _ = case
    modes = {0: "perfect", 1: "empty", 2: "lead-in-only", 3: "perfect", 4: "perfect", 5: "perfect"}
    res, judge = run(st, modes, dataclasses.replace(CFG, n_concepts=F))
    rec = by_latent(res)
    assert judge.detect_calls[0][0] == [f"the token M{f}" for f in (0, 3, 4, 5)]  # not sent to detection
    for f in (1, 2):
        assert rec[f]["explanation"] is None and rec[f]["explanation_raw"] == ScriptedJudge.EMPTY[modes[f]]
        assert rec[f]["score"] is None and rec[f]["predictions"] is None
    s = res["summary"]
    assert s["n_failed"] == 2 and s["n_scored"] == 4 and s["n_concept"] == 4 and s["mu"] == 1.0


def test_mu_on_fewer_concept_latents_than_asked_warns(case):
    st, _ = case
    perfect = {f: "perfect" for f in range(F)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallConceptWarning)
        full, _ = run(st, perfect, dataclasses.replace(CFG, n_concepts=F))
    assert full["summary"]["n_concept"] == full["summary"]["n_concept_requested"] == F
    with pytest.warns(SmallConceptWarning, match=f"µ rests on 5 CONCEPT latents, not the {F} asked for \\({F} drawn, 1 failed\\)"):
        res, _ = run(st, {**perfect, 4: "unparseable"}, dataclasses.replace(CFG, n_concepts=F))
    assert res["summary"]["n_concept"] == 5 and res["summary"]["n_concept_requested"] == F
    with pytest.warns(SmallConceptWarning, match=f"µ rests on {F} CONCEPT latents, not the 100 asked for"):
        few, _ = run(st, perfect)  # only F latents to draw CONCEPT100 from
    assert few["summary"]["n_concept"] == F and few["summary"]["n_concept_requested"] == 100


def test_concept100_is_a_seeded_draw_from_the_scored_latents(case):
    st, _ = case
    modes = {0: "perfect", 1: "no", 2: "yes", 3: "flip", 4: "perfect", 5: "no"}
    cfg = dataclasses.replace(CFG, n_latents=5, n_concepts=3)
    a, _ = run(st, modes, cfg)
    b, _ = run(st, modes, cfg)
    scored = [r["latent"] for r in a["latents"]]
    assert len(scored) == 5 and scored == [r["latent"] for r in b["latents"]]
    assert a["concept100"] == b["concept100"] and set(a["concept100"]) <= set(scored)
    assert a["summary"]["mu"] == b["summary"]["mu"]
    draws = {}
    for seed in range(8):
        r, _ = run(st, modes, dataclasses.replace(cfg, concept_seed=seed))
        assert [x["latent"] for x in r["latents"]] == scored  # the scored latents do not move
        assert len(r["concept100"]) == 3 and set(r["concept100"]) <= set(scored)
        sc = by_latent(r)
        assert r["summary"]["mu"] == pytest.approx(np.mean([sc[f]["score"] for f in r["concept100"]]))
        assert r["summary"]["mean_all"] == pytest.approx(a["summary"]["mean_all"])
        draws[seed] = tuple(r["concept100"])
    assert draws[0] == tuple(a["concept100"])  # concept_seed 0 is the default
    assert len(set(draws.values())) > 1  # another seed, another CONCEPT100


def test_accuracy_and_summary_arithmetic():
    labels = np.array([1, 0, 0, 1, 0], bool)
    assert accuracy([1, 4], labels) == 1.0
    assert accuracy([], labels) == 0.6
    assert accuracy([1, 2, 3, 4, 5], labels) == 0.4
    assert accuracy([1, 4, 4, 1], labels) == 1.0  # repeats count once
    assert accuracy([0, 6, 99, -1], labels) == 0.6  # numbers outside 1..N predict nothing
    assert accuracy([2], labels) == 0.4  # one false alarm, one miss
    s = summarize({7: 1.0, 3: 0.5, 9: None, 4: 0.75}, concept=[7, 9, 11])
    assert s["mu"] == 1.0 and s["n_concept"] == 1  # 9 failed, 11 was not scored
    assert s["mean_all"] == 0.75 and s["n_scored"] == 3 and s["n_failed"] == 1
    assert s["std_all"] == pytest.approx(0.25) and s["se_all"] == pytest.approx(0.25 / math.sqrt(3))
    one = summarize({1: 0.5}, concept=[1])
    assert one["mu"] == 0.5 and one["mean_all"] == 0.5 and math.isnan(one["std_all"]) and math.isnan(one["se_all"])
    none = summarize({1: None}, concept=[1])
    assert math.isnan(none["mu"]) and math.isnan(none["mean_all"]) and none["n_failed"] == 1
    with pytest.warns(SmallConceptWarning, match="µ rests on 1 CONCEPT latents, not the 3 asked for"):
        short = summarize({7: 1.0, 3: 0.5, 9: None}, concept=[7, 9, 11], n_requested=3)
    assert short["n_concept"] == 1 and short["n_concept_requested"] == 3
