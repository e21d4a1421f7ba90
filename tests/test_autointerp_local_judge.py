"""The local AutoInterp judge against the model's own entry points (tiny random Llama with
SmolLM2's tokenizer): log P(yes-tokens) / log P(no-tokens) are those of ``lm.logits`` at the last
position of each prompt run alone, whatever the batching, left padding and batch padding; and a
greedy explanation is ``lm.generate(..., temperature=0)`` of the same prompt."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.autointerp import AutoInterpConfig, LocalJudge
from jaxsae.autointerp import prompts as P
from jaxsae.autointerp.judges import _yes_no_logprob

CFG = AutoInterpConfig()
WINDOWS = ["the cat sat on the mat", "def f(x): return x", "Paris is the capital of France, and Rome of Italy"]
QUESTIONS = [P.yes_no_prompt("the names of cities", w) for w in WINDOWS]


def reference(lm, ids: list[int], yes: list[int], no: list[int]) -> tuple[float, float]:
    """log P(yes-tokens), log P(no-tokens) of the next token, from lm.logits of the prompt alone."""
    logits_v = np.asarray(lm.logits(np.asarray([ids], np.int32)))[0, -1].astype(np.float64)
    lp_v = logits_v - np.logaddexp.reduce(logits_v)
    return float(np.logaddexp.reduce(lp_v[yes])), float(np.logaddexp.reduce(lp_v[no]))


@pytest.fixture(scope="module")
def judge(tiny_llama):
    return LocalJudge(tiny_llama, CFG)


def test_yes_no_logprob_is_the_last_position_of_each_unpadded_prompt(tiny_llama, judge):
    lm = tiny_llama
    yes, no = judge.yes_ids, judge.no_ids
    ids = [lm.token_ids(q, chat=True) for q in QUESTIONS]
    assert len({len(x) for x in ids}) == 3
    want = np.array([reference(lm, x, yes, no) for x in ids])  # [3, (yes, no)]
    assert np.all(want < 0) and np.all(np.logaddexp(want[:, 0], want[:, 1]) <= 1e-9)

    def logprob(tokens, mask):
        ly, ln = _yes_no_logprob(lm.params, lm.config, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(yes), jnp.asarray(no))
        return np.stack([np.asarray(ly), np.asarray(ln)], axis=1)

    for x, w in zip(ids, want):  # alone, unpadded
        np.testing.assert_allclose(logprob([x], np.ones((1, len(x)), bool))[0], w, atol=1e-4)
    tokens, mask = judge._pad(ids, 4, 16)  # together: left padding, and a 4th row repeating the last
    assert tokens.shape[1] % 16 == 0 and not mask.all()
    got = logprob(tokens, mask)
    np.testing.assert_allclose(got[:3], want, atol=1e-4)
    np.testing.assert_allclose(got[3], want[2], atol=1e-4)

    p_want = 1.0 / (1.0 + np.exp(want[:, 1] - want[:, 0]))
    for batch in (1, 2, 28):  # one per forward, a padded last batch, all in one
        j = LocalJudge(lm, dataclasses.replace(CFG, detect_batch=batch))
        np.testing.assert_allclose(j.p_yes(QUESTIONS), p_want, atol=1e-5)
        np.testing.assert_allclose(j.p_yes(QUESTIONS[::-1]), p_want[::-1], atol=1e-5)


def test_greedy_explanation_is_generate_at_temperature_zero(tiny_llama):
    lm = tiny_llama
    cfg = dataclasses.replace(CFG, max_explanation_tokens=12, explain_batch=2)  # 3 prompts: 2 batches, one padded
    messages = [P.explanation_messages([P.render_window(w.split(), np.arange(len(w.split())), 2.5)], use_demos=False)
                for w in WINDOWS]
    got = LocalJudge(lm, cfg).explain(messages)
    want = [lm.generate([P.flatten(m)], max_new_tokens=12, temperature=0.0)[0] for m in messages]
    assert got == want
    assert any(g.strip() for g in got)  # not all an immediate end token
