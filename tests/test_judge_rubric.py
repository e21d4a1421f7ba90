"""Judge prompts, AxBench rating parsing, the zero-guarded harmonic mean, and request folding."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsae.judge import (
    CRITERIA, Judge, Rating, RatingRequest, combine, generation_requests, harmonic_mean, judge_messages,
    judge_prompt, parse_rating, prompt_digest, rating_record,
)
import jaxsae.judge.rubric as R


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The concept is clearly there.\nRating: [[2]]", (2.0, True)),
        ("Rating: [[0]]", (0.0, True)),  # a genuine 0 is ok
        ("blah blah Rating: 1", (1.0, True)),
        ("Rating: [[1.5]].", (1.5, True)),
        ("**Rating: [[2]]**", (2.0, True)),
        ('Rating: "1"', (1.0, True)),
        ("Rating:\n[[2]]\nThanks", (2.0, True)),  # first line after stripping
        ("Rating: [[0]] at first, but on reflection Rating: [[2]]", (2.0, True)),  # the last one wins
        ("Rating: [[2]]\nmore text", (2.0, True)),
        ("Rating: [[3]]", (0.0, False)),  # out of range
        ("Rating: [[-1]]", (0.0, False)),
        ("Rating: [[nan]]", (0.0, False)),
        ("Rating: [[inf]]", (0.0, False)),
        ("Rating: [[two]]", (0.0, False)),
        ("Rating: [[2]] because it is fluent", (0.0, False)),  # AxBench reads the whole line
        ("Rating: [[2]]/2", (0.0, False)),
        ("I would give it a 2.", (0.0, False)),  # no "Rating:"
        ("rating: [[2]]", (0.0, False)),  # case-sensitive, as AxBench
        ("", (0.0, False)),
        (None, (0.0, False)),
    ],
)
def test_parse_rating(text, expected):
    assert parse_rating(text) == expected


def test_harmonic_mean_and_zero_guard():
    assert harmonic_mean(2, 2, 2) == pytest.approx(2.0)
    assert harmonic_mean(1, 2, 2) == pytest.approx(3 / (1 + 0.5 + 0.5))
    assert harmonic_mean(0.5, 1.0, 2.0) == pytest.approx(3 / (2 + 1 + 0.5))
    assert harmonic_mean(0, 2, 2) == 0.0 and harmonic_mean(2, 2, -0.1) == 0.0
    assert isinstance(harmonic_mean(1, 1, 1), float)
    c = np.array([2.0, 0.0, 1.0, 1e-9])
    i = np.array([2.0, 2.0, 1.0, 2.0])
    out = harmonic_mean(c, i, 2.0)  # broadcasting a scalar
    ref = [3 / (1 / cc + 1 / ii + 1 / 2) if min(cc, ii) > 0 else 0.0 for cc, ii in zip(c, i)]
    assert out.shape == (4,) and np.allclose(out, ref)
    with np.errstate(all="raise"):  # no division warnings from the guarded entries
        harmonic_mean(np.zeros(3), np.ones(3), np.ones(3))


def test_prompts_have_the_rubric_blocks_and_answer_form():
    c = judge_prompt("concept", concept="volcanoes", instruction="IGNORED", fragment="Lava flows.")
    assert "[Concept Start]\nvolcanoes\n[Concept End]" in c
    assert "[Sentence Fragment Start]\nLava flows.\n[Sentence Fragment End]" in c
    assert "IGNORED" not in c and "[Instruction Start]" not in c
    i = judge_prompt("instruction", concept="IGNORED", instruction="Write a poem.", fragment="Roses.")
    assert "[Instruction Start]\nWrite a poem.\n[Instruction End]" in i and "IGNORED" not in i
    f = judge_prompt("fluency", concept="IGNORED", instruction="IGNORED", fragment="Roses.")
    assert "IGNORED" not in f and f.rstrip().endswith("[Sentence Fragment End]")
    for p in (c, i, f):
        assert p.startswith("[System]") and "Rating: [[score]]" in p
        assert "0:" in p and "1:" in p and "2:" in p  # three-level rubric
        assert "justification" in p
    short = judge_prompt("fluency", fragment="x", explain=False)
    assert "justification" not in short and "score only" in short
    assert judge_messages("fluency", fragment="x") == [{"role": "user", "content": judge_prompt("fluency", fragment="x")}]
    with pytest.raises(ValueError):
        judge_prompt("style", fragment="x")
    with pytest.raises(ValueError):
        RatingRequest("style", "", "", "x")


def test_generation_requests_and_combine():
    reqs = generation_requests(["c1", "c2"], ["i1", "i2"], ["o1", "o2"])
    assert [r.criterion for r in reqs] == ["concept"] * 2 + ["instruction"] * 2 + ["fluency"] * 2
    assert reqs[3] == RatingRequest("instruction", "c2", "i2", "o2")
    scores = [2, 1, 1, 0.5, 2, 2]  # C = (2, 1), I = (1, 0.5), F = (2, 2)
    ratings = [Rating(score=s, argmax=round(s), ok=True) for s in scores]
    C, I, F, HM = combine(ratings, 2)
    assert C.tolist() == [2, 1] and I.tolist() == [1, 0.5] and F.tolist() == [2, 2]
    assert HM == pytest.approx([harmonic_mean(2, 1, 2), harmonic_mean(1, 0.5, 2)])
    C, I, F, HM = combine(ratings, 2, use="argmax")
    assert I.tolist() == [1, 0]  # round(0.5) == 0 -> zero guard
    assert HM[1] == 0.0
    with pytest.raises(ValueError):
        generation_requests(["c"], ["i", "j"], ["o"])
    assert CRITERIA == ("concept", "instruction", "fluency")


class HalfJudge(Judge):
    """Expected score = request index / 4 (capped at 2), argmax its rounding; probabilities given."""

    def rate(self, items):
        out = []
        for k, _ in enumerate(items):
            s = min(2.0, k / 4)
            out.append(Rating(score=s, argmax=float(round(s)), ok=True, probs=(0.2, 0.3, 0.5), digit_mass=0.75))
        return out


def test_rate_generations_full_keeps_raw_ratings_and_both_folds():
    rated = HalfJudge().rate_generations_full(["c1", "c2"], ["i1", "i2"], ["o1", "o2"])
    assert len(rated.ratings) == 6
    assert rated.expected.concept.tolist() == [0.0, 0.25] and rated.argmax.fluency.tolist() == [1.0, 1.0]
    assert rated.expected.hm.tolist() == [0.0, pytest.approx(harmonic_mean(0.25, 0.75, 1.25))]
    assert rated.argmax.hm.tolist() == [0.0, 0.0]  # round(0.25) == 0 -> zero guard
    assert rated.per_generation(1) == {"concept": rated.ratings[1], "instruction": rated.ratings[3],
                                       "fluency": rated.ratings[5]}
    assert HalfJudge().describe() == "HalfJudge"


def test_rating_record():
    local = Rating(score=1.25, argmax=2.0, ok=True, probs=(0.25, 0.25, 0.5), digit_mass=0.9)
    assert rating_record(local) == {"score": 1.25, "argmax": 2.0, "ok": True, "probs": [0.25, 0.25, 0.5],
                                    "digit_mass": 0.9}
    api = Rating(score=0.0, argmax=0.0, ok=False, text="no rating here")
    assert rating_record(api) == {"score": 0.0, "argmax": 0.0, "ok": False, "text": "no rating here"}
    assert rating_record(Rating(score=0.0, argmax=0.0, ok=False, text=None))["text"] is None  # a failed request


def test_prompt_digest_follows_the_wording(monkeypatch):
    a, b = prompt_digest(explain=True), prompt_digest(explain=False)
    assert a != b and len(a) == 12 and a == prompt_digest(explain=True)
    monkeypatch.setitem(R._BODY, "fluency", R._BODY["fluency"] + "Be strict.\n")
    assert prompt_digest(explain=True) != a
