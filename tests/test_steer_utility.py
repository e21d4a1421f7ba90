"""The AxBench steering-utility protocol end to end on the tiny Llama with scripted judges: factor
choice on dev, score on test, the zero-guarded harmonic mean, and resumable runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxsae.judge import Judge, Rating, harmonic_mean
from jaxsae.steer import (DEFAULT_FACTORS, Concept, SteerSettings, choose_factor, draw_instructions, feature_edit,
                          run_utility, steer_concept)
from jaxsae.steer.concepts import BUNDLED_INSTRUCTIONS

from test_steer_edits import random_sae

LAYER = 1
POOL = list(BUNDLED_INSTRUCTIONS)
# 3 factors x 2 dev instructions: one generate call of 6 rows, then 2 test rows (shared by every test)
ST = SteerSettings(factors=(0.0, 1.0, 8.0), n_instructions=4, max_new_tokens=8, temperature=1.0, seed=3)


@pytest.fixture(scope="module")
def sae(tiny_llama):
    return random_sae(tiny_llama.config.d_model)


MAX_ACTS = np.linspace(1.0, 4.0, 16).astype(np.float32)


class TableJudge(Judge):
    """Returns scripted (C, I, F) rows, one table per rate_generations call, in call order."""

    def __init__(self, tables):
        self.tables = [np.asarray(t, np.float64) for t in tables]
        self.requests = []

    def rate(self, items):
        t = self.tables[len(self.requests)]
        self.requests.append(list(items))
        assert len(items) == 3 * len(t)
        # requests come as all concept ratings, then instruction, then fluency
        return [Rating(score=float(s), argmax=float(s), ok=True) for s in t.T.reshape(-1)]


class TextJudge(Judge):
    """Deterministic ratings computed from the request's text (so equal generations rate equally)."""

    def __init__(self, fail_on: str | None = None):
        self.calls = 0
        self.fail_on = fail_on

    def rate(self, items):
        self.calls += 1
        if self.fail_on is not None and any(r.concept == self.fail_on for r in items):
            raise RuntimeError("judge crashed")
        out = []
        for r in items:
            s = {"concept": len(r.fragment) % 3, "instruction": 1 + len(r.instruction) % 2,
                 "fluency": 2 - len(r.fragment.split()) % 2}[r.criterion]
            out.append(Rating(score=float(s), argmax=float(s), ok=True))
        return out


class CountingLM:
    """The tiny LM, counting generate calls."""

    def __init__(self, lm):
        self.lm, self.calls = lm, 0

    def generate(self, *a, **kw):
        self.calls += 1
        return self.lm.generate(*a, **kw)


# ------------------------------------------------------------------------------ pure pieces

def test_default_grid_has_six_factors():
    assert len(DEFAULT_FACTORS) == 6 and list(DEFAULT_FACTORS) == sorted(DEFAULT_FACTORS)
    assert SteerSettings().n_instructions == 10 and SteerSettings().max_new_tokens == 128
    assert SteerSettings().temperature == 1.0 and SteerSettings().all_positions


def test_choose_factor_on_hand_made_tables():
    factors = (0.4, 0.8, 1.2)
    hm = [harmonic_mean(*np.array(t, float).T) for t in (
        [(2, 2, 2), (0, 2, 2)],  # 2, 0 -> mean 1.0 (zero guard)
        [(1, 2, 2), (2, 1, 2)],  # 1.5, 1.5 -> 1.5
        [(2, 2, 0), (1, 1, 1)],  # 0, 1 -> 0.5
    )]
    best, means = choose_factor(factors, hm)
    assert best == 1 and means == pytest.approx([1.0, 1.5, 0.5])
    # ties: the first (smallest) factor; an empty row counts as 0
    assert choose_factor(factors, [[1.0, 0.0], [0.5, 0.5], []]) == (0, [0.5, 0.5, 0.0])
    assert choose_factor((1.0, 2.0), [[0.0], [0.0]])[0] == 0


# --------------------------------------------------------------------------- one concept

def test_steer_concept_end_to_end(tiny_llama, sae):
    c = Concept(5, "the ocean", 0)
    dev_table = [(2, 2, 2), (0, 2, 2),  # α = 0: HM 2, 0 -> 1.0
                 (1, 2, 2), (2, 1, 2),  # α = 1: 1.5, 1.5 -> 1.5 (best)
                 (2, 0, 2), (2, 2, 0)]  # α = 8: 0, 0 -> 0
    test_table = [(2, 2, 1), (1, 1, 1)]  # HM 1.5, 1.0 -> 1.25
    judge = TableJudge([dev_table, test_table])
    rec = steer_concept(tiny_llama, judge, sae, LAYER, c, MAX_ACTS, POOL, ST)

    dev, test = draw_instructions(POOL, 4, seed=ST.seed * 1_000_003 + c.feature)
    assert rec["feature"] == 5 and rec["concept"] == "the ocean" and rec["m_f"] == pytest.approx(MAX_ACTS[5])
    assert rec["dev_means"] == pytest.approx({"0.0": 1.0, "1.0": 1.5, "8.0": 0.0})
    assert rec["factor"] == 1.0 and rec["dev_score"] == pytest.approx(1.5) and rec["test_score"] == pytest.approx(1.25)
    gens = rec["generations"]
    assert [g["split"] for g in gens] == ["dev"] * 6 + ["test"] * 2
    assert [g["factor"] for g in gens] == [0.0, 0.0, 1.0, 1.0, 8.0, 8.0, 1.0, 1.0]
    assert [g["instruction"] for g in gens] == dev * 3 + test
    assert [g["hm"] for g in gens] == pytest.approx([2, 0, 1.5, 1.5, 0, 0, 1.5, 1.0])
    assert [g["concept_score"] for g in gens[:2]] == [2.0, 0.0]
    # the judge saw the concept, the instructions and the generated text
    reqs = judge.requests[0]
    assert {r.concept for r in reqs} == {"the ocean"} and [r.criterion for r in reqs[::6]] == ["concept", "instruction", "fluency"]
    assert [r.instruction for r in reqs[:6]] == dev * 3 and [r.fragment for r in reqs[:6]] == [g["output"] for g in gens[:6]]
    # test generations are the model's, steered at α* with the protocol's seed
    want = tiny_llama.generate(test, max_new_tokens=8, temperature=1.0, seed=ST.seed * 7919 + c.feature + 1,
                               steer=feature_edit(LAYER, sae, [5], MAX_ACTS, [1.0, 1.0]))
    assert [g["output"] for g in gens[6:]] == want
    # dev rows are steered by their own factor: a strong factor changes the text
    assert [g["output"] for g in gens[4:6]] != [g["output"] for g in gens[0:2]]
    assert list(rec["settings"]["factors"]) == [0.0, 1.0, 8.0] and rec["settings"]["seed"] == 3


# ------------------------------------------------------------------------- whole SAE, resume

CONCEPTS = [Concept(3, "cats", 0), Concept(8, "numbers", 1), Concept(12, "rain", 2)]


def read_lines(path):
    return path.read_text().splitlines()


def test_run_utility_resumes_without_regenerating(tiny_llama, sae, tmp_path):
    lm, judge = CountingLM(tiny_llama), TextJudge()
    a = tmp_path / "a"
    s2 = run_utility(lm, judge, sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, a, progress=False)
    assert lm.calls == 4 and s2["n_concepts"] == 2
    first = read_lines(a / "concepts.jsonl")
    assert [json.loads(x)["feature"] for x in first] == [3, 8]

    # one more concept: only it is generated; the finished lines stay as they were, the new one is appended
    s3 = run_utility(lm, judge, sae, LAYER, CONCEPTS, MAX_ACTS, POOL, ST, a, progress=False)
    assert lm.calls == 6
    lines = read_lines(a / "concepts.jsonl")
    assert lines[:2] == first and len(lines) == 3
    recs = [json.loads(x) for x in lines]
    assert s3["g"] == pytest.approx(np.mean([r["test_score"] for r in recs]))
    assert [c["feature"] for c in s3["concepts"]] == [3, 8, 12]
    assert json.loads((a / "utility.json").read_text()) == s3
    assert s3["settings"]["factors"] == [0.0, 1.0, 8.0]

    # the same settings again: nothing is generated or rated, the result is the same
    calls, judged = lm.calls, judge.calls
    assert run_utility(lm, judge, sae, LAYER, CONCEPTS, MAX_ACTS, POOL, ST, a, progress=False) == s3
    assert (lm.calls, judge.calls) == (calls, judged)

    # a fresh run elsewhere gives identical records (seeded draws and sampling)
    b = tmp_path / "b"
    assert run_utility(lm, TextJudge(), sae, LAYER, CONCEPTS, MAX_ACTS, POOL, ST, b, progress=False) == s3
    assert read_lines(b / "concepts.jsonl") == lines

    # a torn last line (crash while writing) is recomputed, to the same record
    (a / "concepts.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    calls = lm.calls
    assert run_utility(lm, judge, sae, LAYER, CONCEPTS, MAX_ACTS, POOL, ST, a, progress=False) == s3
    assert lm.calls == calls + 2 and read_lines(a / "concepts.jsonl") == lines


def test_run_utility_after_a_crash_and_with_changed_settings(tiny_llama, sae, tmp_path):
    lm = CountingLM(tiny_llama)
    d = tmp_path / "run"
    with pytest.raises(RuntimeError, match="judge crashed"):
        run_utility(lm, TextJudge(fail_on="numbers"), sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, d, progress=False)
    assert [json.loads(x)["feature"] for x in read_lines(d / "concepts.jsonl")] == [3]
    assert not (d / "utility.json").exists()
    calls = lm.calls
    s = run_utility(lm, TextJudge(), sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, d, progress=False)
    assert lm.calls == calls + 2 and s["n_concepts"] == 2  # only the concept that crashed

    # other settings (another factor grid, same shapes): finished concepts are not reused
    st2 = SteerSettings(factors=(0.0, 2.0, 4.0), n_instructions=4, max_new_tokens=8, temperature=1.0, seed=3)
    calls = lm.calls
    s2 = run_utility(lm, TextJudge(), sae, LAYER, CONCEPTS[:1], MAX_ACTS, POOL, st2, d, progress=False)
    assert lm.calls == calls + 2
    rec = json.loads(read_lines(d / "concepts.jsonl")[0])
    assert set(rec["dev_means"]) == {"0.0", "2.0", "4.0"} and s2["settings"]["factors"] == [0.0, 2.0, 4.0]
    assert len(read_lines(d / "concepts.jsonl")) == 1  # the stale records were dropped

    # another m_f for the feature, or another concept text: recomputed too (once)
    m2 = MAX_ACTS.copy()
    m2[3] = 9.0
    calls = lm.calls
    run_utility(lm, TextJudge(), sae, LAYER, CONCEPTS[:1], m2, POOL, st2, d, progress=False)
    assert lm.calls == calls + 2
    assert json.loads(read_lines(d / "concepts.jsonl")[0])["m_f"] == 9.0
    for _ in range(2):
        run_utility(lm, TextJudge(), sae, LAYER, [Concept(3, "dogs", 0)], m2, POOL, st2, d, progress=False)
        assert lm.calls == calls + 4
    # another instruction pool (e.g. AlpacaEval reachable this time): recomputed (once)
    for _ in range(2):
        run_utility(lm, TextJudge(), sae, LAYER, [Concept(3, "dogs", 0)], m2, POOL[::-1], st2, d, progress=False)
        assert lm.calls == calls + 6
