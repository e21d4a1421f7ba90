"""The AxBench steering-utility protocol end to end on the tiny Llama with scripted judges: factor
choice on dev, score on test, the zero-guarded harmonic mean, expected and argmax scores with every
raw rating saved, judge failure counts in utility.json, the m_f fallback of latents that never
fired, and resumable runs (reused only under the same settings, judge and model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxsae.chat import ClientStats
from jaxsae.judge import APIJudge, Judge, Rating, harmonic_mean
from jaxsae.steer import (DEFAULT_FACTORS, Concept, SteerSettings, choose_factor, draw_instructions, feature_edit,
                          model_description, row_seed, run_utility, steer_concept, steering_scales)
from jaxsae.steer.concepts import BUNDLED_INSTRUCTIONS
from jaxsae.steer.utility import hard_failures

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

    def __init__(self, fail_on: str | None = None, fail_at_call: int | None = None):
        self.calls = 0
        self.fail_on, self.fail_at_call = fail_on, fail_at_call
        self.requests = []

    def rate(self, items):
        self.calls += 1
        if self.fail_on is not None and any(r.concept == self.fail_on for r in items):
            raise RuntimeError("judge crashed")
        if self.calls == self.fail_at_call:
            raise RuntimeError("judge crashed")
        self.requests += list(items)
        out = []
        for r in items:
            s = {"concept": len(r.fragment) % 3, "instruction": 1 + len(r.instruction) % 2,
                 "fluency": 2 - len(r.fragment.split()) % 2}[r.criterion]
            out.append(Rating(score=float(s), argmax=float(s), ok=True))
        return out


class ProbJudge(Judge):
    """Local-judge-like ratings: 0/1/2 probabilities picked by the fragment's length, so that the
    expected score and the argmax differ."""

    PROBS = ((0.6, 0.3, 0.1), (0.1, 0.5, 0.4), (0.05, 0.15, 0.8))

    def rate(self, items):
        out = []
        for r in items:
            k = (len(r.fragment) + len(r.criterion)) % 3
            p = self.PROBS[k]
            out.append(Rating(score=float(np.dot(p, [0, 1, 2])), argmax=float(np.argmax(p)), ok=True, probs=p,
                              digit_mass=0.9 - 0.2 * k))
        return out


class ScriptedClient:
    """A ChatClient stand-in for APIJudge: valid answers, unparseable ones (every 5th) and failed
    requests (every 7th), in request order."""

    url, model = "http://judge.test/v1/chat/completions", "scripted"

    def __init__(self):
        self.stats, self.n = ClientStats(), 0

    def chat_many(self, message_lists, **kw):
        out = []
        for _ in message_lists:
            self.n += 1
            self.stats.requests += 1
            out.append(None if self.n % 7 == 0 else "Hmm. Rating: [[x]]" if self.n % 5 == 0
                       else f"Fine. Rating: [[{1 + self.n % 2}]]")
        return out


class AnsweringClient(ScriptedClient):
    """The scripted client with every request answered."""

    def chat_many(self, message_lists, **kw):
        self.stats.requests += len(message_lists)
        return ["Fine. Rating: [[2]]" for _ in message_lists]


class CountingLM:
    """The tiny LM, counting generate calls (``source`` overrides its model identity)."""

    def __init__(self, lm, source: str | None = None):
        self.lm, self.calls = lm, 0
        self.source = lm.source if source is None else source
        self.params = lm.params

    def generate(self, *a, **kw):
        self.calls += 1
        return self.lm.generate(*a, **kw)

    def __getattr__(self, name):  # token_ids, ...
        return getattr(self.lm, name)


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
    # test generations are the model's, steered at α* with the protocol's per-row seeds
    want = tiny_llama.generate(test, max_new_tokens=8, temperature=1.0,
                               seed=[row_seed(ST.seed, c.feature, "test", j) for j in range(2)],
                               steer=feature_edit(LAYER, sae, [5], MAX_ACTS, [1.0, 1.0]))
    assert [g["output"] for g in gens[6:]] == want
    # dev rows are steered by their own factor: a strong factor changes the text
    assert [g["output"] for g in gens[4:6]] != [g["output"] for g in gens[0:2]]
    assert list(rec["settings"]["factors"]) == [0.0, 1.0, 8.0] and rec["settings"]["seed"] == 3
    # every raw rating is kept; a scripted judge's argmax is its score
    assert gens[0]["ratings"] == {"concept": {"score": 2.0, "argmax": 2.0, "ok": True, "text": None},
                                  "instruction": {"score": 2.0, "argmax": 2.0, "ok": True, "text": None},
                                  "fluency": {"score": 2.0, "argmax": 2.0, "ok": True, "text": None}}
    assert [g["hm_argmax"] for g in gens] == [g["hm"] for g in gens]
    assert rec["test_score_argmax"] == rec["test_score"] and rec["factor_argmax"] == 1.0
    assert rec["m_f"] == rec["m_f_measured"] == pytest.approx(MAX_ACTS[5]) and rec["m_f_fallback"] is False


def test_expected_and_argmax_scores_are_both_kept(tiny_llama, sae, tmp_path):
    s = run_utility(tiny_llama, ProbJudge(), sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, tmp_path, progress=False)
    recs = [json.loads(x) for x in read_lines(tmp_path / "concepts.jsonl")]
    for rec in recs:
        for g in rec["generations"]:
            rs = g["ratings"]
            assert set(rs) == {"concept", "instruction", "fluency"}
            for crit, r in rs.items():
                assert r["ok"] and tuple(r["probs"]) in ProbJudge.PROBS and 0.5 <= r["digit_mass"] <= 0.9
                assert r["score"] == pytest.approx(np.dot(r["probs"], [0, 1, 2])) and r["argmax"] == np.argmax(r["probs"])
                assert "text" not in r
            assert g["concept_score"] == rs["concept"]["score"] and g["fluency_score"] == rs["fluency"]["score"]
            assert g["hm"] == pytest.approx(harmonic_mean(*(rs[c]["score"] for c in ("concept", "instruction", "fluency"))))
            assert g["hm_argmax"] == pytest.approx(harmonic_mean(*(rs[c]["argmax"] for c in ("concept", "instruction", "fluency"))))
        dev = [g for g in rec["generations"] if g["split"] == "dev"]
        test = [g for g in rec["generations"] if g["split"] == "test"]
        means_argmax = [np.mean([g["hm_argmax"] for g in dev if g["factor"] == f]) for f in ST.factors]
        assert rec["dev_means_argmax"] == pytest.approx(dict(zip(map(str, ST.factors), means_argmax)))
        assert rec["factor_argmax"] == ST.factors[int(np.argmax(means_argmax))]
        # both scores come from the same test generations, at the factor chosen with expected scores
        assert {g["factor"] for g in test} == {rec["factor"]}
        assert rec["test_score"] == pytest.approx(np.mean([g["hm"] for g in test]))
        assert rec["test_score_argmax"] == pytest.approx(np.mean([g["hm_argmax"] for g in test]))
    assert s["g"] == pytest.approx(np.mean([r["test_score"] for r in recs]))
    assert s["g_argmax"] == pytest.approx(np.mean([r["test_score_argmax"] for r in recs]))
    assert s["g_argmax"] != pytest.approx(s["g"])
    masses = [r["digit_mass"] for rec in recs for g in rec["generations"] for r in g["ratings"].values()]
    assert s["judge_stats"]["ratings"] == len(masses) == 2 * 3 * (3 * 2 + 2)
    assert s["judge_stats"]["failed"] == 0
    assert s["judge_stats"]["mean_digit_mass"] == pytest.approx(np.mean(masses))
    assert s["judge_stats"]["min_digit_mass"] == pytest.approx(min(masses))
    assert s["judge"] == "ProbJudge" and s["model"] == model_description(tiny_llama)
    assert [c["test_score_argmax"] for c in s["concepts"]] == [r["test_score_argmax"] for r in recs]


def test_api_judge_failures_are_saved_in_utility_json(tiny_llama, sae, tmp_path):
    judge = APIJudge(ScriptedClient())
    s = run_utility(tiny_llama, judge, sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, tmp_path, progress=False)
    rs = [r for line in read_lines(tmp_path / "concepts.jsonl") for g in json.loads(line)["generations"]
          for r in g["ratings"].values()]
    hard = [r for r in rs if r["text"] is None]
    unparsed = [r for r in rs if r["text"] == "Hmm. Rating: [[x]]"]
    assert hard and unparsed and all(not r["ok"] and r["score"] == 0.0 for r in hard + unparsed)
    assert all(r["ok"] and r["score"] in (1.0, 2.0) for r in rs if r not in hard + unparsed)
    st = judge.stats()
    assert (st["parse_failures"], st["hard_failures"]) == (len(unparsed), len(hard))
    assert s["judge_stats"] == {"ratings": len(rs), "failed": len(hard) + len(unparsed), "parse_failures": len(unparsed),
                                "hard_failures": len(hard), "this_run": {**st, "client": st["client"]}}
    assert s["judge"].startswith("api:http://judge.test/v1/chat/completions:scripted:temperature=0:")
    assert json.loads((tmp_path / "utility.json").read_text())["judge_stats"] == s["judge_stats"]
    # a re-run keeps the concepts whose every request was answered; a concept holding a request
    # that failed for good (not a result) is redone: only its ratings are asked again
    recs = {json.loads(x)["feature"]: json.loads(x) for x in read_lines(tmp_path / "concepts.jsonl")}
    failed = {f: r for f, r in recs.items() if hard_failures(r)}
    assert failed
    n_redo = sum(len(g["ratings"]) for r in failed.values() for g in r["generations"])
    again = run_utility(tiny_llama, judge, sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, tmp_path, progress=False)
    assert again["judge_stats"]["this_run"]["ratings"] == n_redo
    after = {json.loads(x)["feature"]: json.loads(x) for x in read_lines(tmp_path / "concepts.jsonl")}
    assert set(after) == set(recs) and all(after[f] == recs[f] for f in recs if f not in failed)
    # the same judge recovered: a re-run with every request answered redoes what still failed, then nothing
    judge = APIJudge(AnsweringClient())
    run_utility(tiny_llama, judge, sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, tmp_path, progress=False)
    final = run_utility(tiny_llama, judge, sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, tmp_path, progress=False)
    assert final["judge_stats"]["hard_failures"] == 0 and final["judge_stats"]["this_run"]["ratings"] == 0


def test_a_latent_that_never_fired_is_steered_with_the_fallback(tiny_llama, sae, tmp_path):
    m, dead = steering_scales(np.array([0.0, 2.5, -1.0, np.nan, np.inf]), 1.0)
    assert m.tolist()[:3] == [1.0, 2.5, 1.0] and m[3] == 1.0 and m[4] == 1.0
    assert dead.tolist() == [True, False, True, True, True]
    acts = MAX_ACTS.copy()
    acts[3] = 0.0
    lm = CountingLM(tiny_llama)
    s = run_utility(lm, TextJudge(), sae, LAYER, CONCEPTS[:2], acts, POOL, ST, tmp_path, progress=False)
    recs = [json.loads(x) for x in read_lines(tmp_path / "concepts.jsonl")]
    assert (recs[0]["m_f"], recs[0]["m_f_measured"], recs[0]["m_f_fallback"]) == (1.0, 0.0, True)
    assert recs[1]["m_f_fallback"] is False and recs[1]["m_f"] == pytest.approx(acts[8])
    assert s["m_f_fallback"] == [3] and [c["m_f_fallback"] for c in s["concepts"]] == [True, False]
    # the test generations are steered with m_f = 1.0 (not 0, which would be no steering at all)
    test = [g for g in recs[0]["generations"] if g["split"] == "test"]
    ones = acts.copy()
    ones[3] = 1.0
    want = tiny_llama.generate([g["instruction"] for g in test], max_new_tokens=8, temperature=1.0,
                               seed=[row_seed(ST.seed, 3, "test", j) for j in range(len(test))],
                               steer=feature_edit(LAYER, sae, [3], ones, [recs[0]["factor"]] * len(test)))
    assert [g["output"] for g in test] == want
    # the same measured m_f again: reused
    calls = lm.calls
    run_utility(lm, TextJudge(), sae, LAYER, CONCEPTS[:2], acts, POOL, ST, tmp_path, progress=False)
    assert lm.calls == calls
    # the fallback value is a setting: another one recomputes
    st2 = SteerSettings(**{**ST.__dict__, "dead_m_f": 2.0})
    run_utility(lm, TextJudge(), sae, LAYER, CONCEPTS[:1], acts, POOL, st2, tmp_path, progress=False)
    assert lm.calls == calls + 2 and json.loads(read_lines(tmp_path / "concepts.jsonl")[0])["m_f"] == 2.0


# ------------------------------------------------------------------------- whole SAE, resume

CONCEPTS = [Concept(3, "cats", 0), Concept(8, "numbers", 1), Concept(12, "rain", 2)]


def read_lines(path):
    return path.read_text().splitlines()


def test_run_utility_resumes_without_regenerating(tiny_llama, sae, tmp_path):
    lm, judge = CountingLM(tiny_llama), TextJudge()
    a = tmp_path / "a"
    s2 = run_utility(lm, judge, sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, a, progress=False)
    assert lm.calls == 2 and s2["n_concepts"] == 2  # one dev batch, one test batch
    first = read_lines(a / "concepts.jsonl")
    assert [json.loads(x)["feature"] for x in first] == [3, 8]

    # one more concept: only it is generated; the finished lines stay as they were, the new one is appended
    s3 = run_utility(lm, judge, sae, LAYER, CONCEPTS, MAX_ACTS, POOL, ST, a, progress=False)
    assert lm.calls == 4
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
    # batches of 6 rows: two dev batches (12 rows), then one test batch (4 rows), whose judging fails
    with pytest.raises(RuntimeError, match="judge crashed"):
        run_utility(lm, TextJudge(fail_at_call=3), sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, d, batch=6,
                    progress=False)
    assert lm.calls == 3 and not (d / "concepts.jsonl").exists() and not (d / "utility.json").exists()
    assert [json.loads(x)["feature"] for x in read_lines(d / "dev.jsonl")] in ([3, 8], [8, 3])
    # the re-run reuses both dev phases: only the test rows are generated and judged
    calls, judge = lm.calls, TextJudge()
    s = run_utility(lm, judge, sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, d, batch=6, progress=False)
    assert lm.calls == calls + 1 and s["n_concepts"] == 2 and judge.calls == 1 and len(judge.requests) == 3 * 4
    assert not (d / "dev.jsonl").exists()  # every concept finished: its dev phase is in concepts.jsonl
    fresh = run_utility(tiny_llama, TextJudge(), sae, LAYER, CONCEPTS[:2], MAX_ACTS, POOL, ST, tmp_path / "fresh",
                        progress=False)
    assert {k: v for k, v in s.items() if k != "judge_stats"} == {k: v for k, v in fresh.items() if k != "judge_stats"}

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


class OtherJudge(TextJudge):
    """The same ratings under another description (e.g. another judge model)."""

    def describe(self):
        return "local:another-model:float32:prompt=0"


def test_another_judge_or_model_recomputes(tiny_llama, sae, tmp_path):
    lm = CountingLM(tiny_llama)
    run_utility(lm, TextJudge(), sae, LAYER, CONCEPTS[:1], MAX_ACTS, POOL, ST, tmp_path, progress=False)
    rec = json.loads(read_lines(tmp_path / "concepts.jsonl")[0])
    assert rec["judge"] == "TextJudge" and rec["model"] == model_description(tiny_llama)
    assert model_description(tiny_llama) == f"{tiny_llama.source} (float32)"
    calls = lm.calls
    for _ in range(2):  # another judge: recomputed once, then reused
        s = run_utility(lm, OtherJudge(), sae, LAYER, CONCEPTS[:1], MAX_ACTS, POOL, ST, tmp_path, progress=False)
        assert lm.calls == calls + 2 and s["judge"] == "local:another-model:float32:prompt=0"
    other = CountingLM(tiny_llama, source="another-checkpoint")
    for _ in range(2):  # another steered model: recomputed once, then reused
        s = run_utility(other, OtherJudge(), sae, LAYER, CONCEPTS[:1], MAX_ACTS, POOL, ST, tmp_path, progress=False)
        assert other.calls == 2 and s["model"] == "another-checkpoint (float32)"
    assert len(read_lines(tmp_path / "concepts.jsonl")) == 1
