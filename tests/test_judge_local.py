"""LocalJudge: the rating read from the next-token distribution over "0", "1", "2"."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.errors import UserError
from jaxsae.judge import RATING_PREFIX, RatingRequest, generation_requests, prompt_digest
from jaxsae.judge.local import LocalJudge, _digit_ids

REQS = generation_requests(
    ["cats", "the French revolution", "volcanoes"],
    ["Write about pets.", "Tell me a joke.", "Explain photosynthesis in detail, step by step."],
    ["Cats purr loudly.", "zx qq", "Plants turn light into sugar. " * 12],
)


def _reference_probs(lm, judge, req):
    """Unbatched, unpadded full forward with lm.logits; softmax at the last position."""
    ids = judge.token_ids(req)
    logits_v = lm.logits(jnp.asarray([ids], jnp.int32))[0, -1]
    return np.asarray(jax.nn.softmax(logits_v)[jnp.asarray(judge.digit_ids)])


def test_tiny_llama_structure_and_exactness(tiny_llama):
    lm = tiny_llama
    shared = LocalJudge(lm, batch_size=4)
    plain = LocalJudge(lm, batch_size=4, share_prefix=False)
    ratings = shared.rate(REQS)
    assert len(ratings) == len(REQS)
    for r in ratings:
        p = np.array(r.probs)
        assert r.ok and p.shape == (3,) and np.all(p >= 0)
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        assert 0.0 <= r.score <= 2.0 and r.score == pytest.approx(p @ [0, 1, 2])
        assert r.argmax == float(np.argmax(p))
        assert 0.0 < r.digit_mass <= 1.0
    # both batched paths equal an unbatched lm.logits forward at the last position
    ref = np.stack([_reference_probs(lm, shared, q) for q in REQS])
    np.testing.assert_allclose(shared.slot_probs(REQS), ref, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(plain.slot_probs(REQS), ref, rtol=1e-4, atol=1e-9)
    assert shared.stats()["ratings"] == len(REQS)
    assert shared.describe() == f"local:{lm.source}:float32:prompt={prompt_digest(explain=False)}"
    # rating one request alone gives what it got inside the batch
    alone = shared.rate([REQS[4]])[0]
    assert alone.probs == pytest.approx(ratings[4].probs, rel=1e-4)


def test_prompt_and_shared_prefix(tiny_llama):
    judge = LocalJudge(tiny_llama)
    text = judge.prompt_text(REQS[0])
    assert text.endswith("<|im_start|>assistant\n" + RATING_PREFIX)
    assert "[Concept Start]\ncats\n[Concept End]" in text and "score only" in text
    for req in REQS:
        pre = judge.shared_prefix(req.criterion)
        ids = judge.token_ids(req)
        assert len(pre) > 100 and ids[: len(pre)] == pre
    # the three digits are single tokens right after the prefix
    tok = tiny_llama.tokenizer
    assert [tok.decode([i]) for i in judge.digit_ids] == ["0", "1", "2"]


def test_tokenizer_that_merges_digits_is_a_user_error():
    class Merging:
        """'Rating: [[' -> [1, 2]; a digit after it merges into one new token with the brackets."""

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1, 2] if text == RATING_PREFIX else [1, 3 + ord(text[-1])]}

    with pytest.raises(UserError, match="token of its own"):
        _digit_ids(Merging())


def test_judge_needs_a_tokenizer(tiny_llama):
    import dataclasses

    with pytest.raises(UserError, match="tokenizer"):
        LocalJudge(dataclasses.replace(tiny_llama, tokenizer=None))


FLUENT = [
    "The weather was lovely today, so we went for a long walk in the park.",
    "She opened the letter slowly and smiled when she read the first line.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "After dinner, the children played board games with their grandparents.",
    "The library closes at eight, but you can return books through the slot outside.",
    "He fixed the bicycle chain and rode to school just before the bell rang.",
    "Our team finished the project early and celebrated with pizza.",
    "Plants need sunlight, water and good soil to grow strong and healthy.",
    "The museum has a new exhibition about ancient Egyptian art.",
    "I usually drink a cup of tea in the morning while reading the news.",
    "The train was delayed by twenty minutes because of the snow.",
    "My grandmother taught me how to bake bread when I was seven.",
]


def test_smollm2_rates_fluent_text_above_random_tokens(smollm2):
    """SmolLM2-135M is a weak judge: its fluency distribution is close to uniform and single pairs
    are not reliably ordered, but on average over 12 vs 12 fluent sentences score higher than
    strings of 16 random tokens (means about 1.05 vs 0.98; the comparison is deterministic)."""
    rng = np.random.default_rng(0)
    random_text = [smollm2.tokenizer.decode(rng.integers(1000, 40000, 16).tolist()) for _ in range(12)]
    judge = LocalJudge(smollm2, batch_size=12)
    ratings = judge.rate([RatingRequest("fluency", "", "", s) for s in FLUENT + random_text])
    scores = np.array([r.score for r in ratings])
    for r in ratings:
        assert r.ok and sum(r.probs) == pytest.approx(1.0) and 0 <= r.score <= 2
        assert r.digit_mass > 0.05  # the model does answer with a digit at the slot
    assert scores[:12].mean() > scores[12:].mean()


def test_a_rating_without_digit_mass_fails_and_scores_zero(tiny_llama, monkeypatch):
    """NaN or zero probability on the three digits is a failed rating: it scores 0 (as the API
    judge's failures and the README say), not the 1.0 of a uniform guess; valid rows are untouched."""
    judge = LocalJudge(tiny_llama, batch_size=4)
    rows = np.array([[0.1, 0.2, 0.5], [np.nan, np.nan, np.nan], [0.0, 0.0, 0.0], [0.3, np.nan, 0.1]], np.float32)
    monkeypatch.setattr(judge, "slot_probs", lambda items: rows[: len(items)])
    good, nan, zero, partial = judge.rate(REQS[:4])
    assert good.ok and good.score == pytest.approx((0.2 + 2 * 0.5) / 0.8, rel=1e-6) and good.argmax == 2.0
    for r in (nan, zero, partial):
        assert not r.ok and r.score == 0.0 and r.argmax == 0.0
        assert np.all(np.isfinite(r.probs)) and np.isfinite(r.digit_mass)
    assert judge.stats()["ratings"] == 4


def test_bf16_judge_rates_within_0_02_of_f32(smollm2):
    """The judge at accelerator precision (bf16 weights and activations, as judge.dtype = "auto"
    loads it on GPU / TPU) gives the float32 judge's expected scores to within 0.02 on demo-like
    steered generations (16 new tokens, some on topic, some drifting, some broken): on average
    over the ratings and for the mean score of each criterion (what g averages); single ratings
    within 0.05 (measured: at most 0.024, mean 0.01)."""
    import jax.numpy as jnp

    from jaxsae.judge.base import RatingRequest
    from jaxsae.models import load_model

    bf16 = load_model("smollm2-135m-instruct", dtype=jnp.bfloat16)
    gens = [("the ocean", "Write a short poem about the morning.", "The waves roll in as the sun rises over the sea"),
            ("cooking", "Explain how a rainbow forms.", "Light bends through the raindrops, like stirring a soup"),
            ("music", "Give three tips for staying healthy.", "1. Eat well. 2. Sleep. 3. Listen to music daily"),
            ("numbers", "Describe your favourite city.", "city city the the 42 42 42 of of"),
            ("rain", "What is the capital of France?", "Paris is the capital of France, where it often rains"),
            ("cats", "How do I bake bread?", "Mix flour, water and yeast, then let the dough rest")]
    reqs = [RatingRequest(crit, c, i, o) for c, i, o in gens for crit in ("concept", "instruction", "fluency")]
    f32 = [r.score for r in LocalJudge(smollm2).rate(reqs)]
    half = LocalJudge(bf16).rate(reqs)
    assert "bfloat16" in LocalJudge(bf16).describe()
    assert all(r.ok for r in half)
    got, want = np.array([r.score for r in half]).reshape(-1, 3), np.array(f32).reshape(-1, 3)
    diff = np.abs(got - want)
    assert diff.mean() <= 0.02 and diff.max() <= 0.05, diff
    assert np.all(np.abs(got.mean(0) - want.mean(0)) <= 0.02)
