"""The local AutoInterp roles and the model entry point under them (tiny random Llama with
SmolLM2's tokenizer): ``LM.next_token_logprobs`` is ``lm.logits`` at the last position of each
prompt run alone, whatever the batching, padding and order, with or without a shared prefix's
keys/values; the detector's P(yes) follows from it; a greedy explanation is
``lm.generate(..., temperature=0)`` of the same prompt."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxsae.autointerp import AutoInterpConfig, LocalDetector, LocalExplainer
from jaxsae.autointerp import prompts as P
from jaxsae.models.lm import MIN_SHARED, shared_length

CFG = AutoInterpConfig()
WINDOWS = ["the cat sat on the mat", "def f(x): return x", "Paris is the capital of France, and Rome of Italy"]
QUESTIONS = [P.yes_no_prompt("the names of cities", w) for w in WINDOWS]


def reference(lm, ids: list[int], cands: list[int]) -> np.ndarray:
    """f64[C]: log p(cands) of the next token, from lm.logits of the prompt alone."""
    logits_v = np.asarray(lm.logits(np.asarray([ids], np.int32)))[0, -1].astype(np.float64)
    return (logits_v - np.logaddexp.reduce(logits_v))[cands]


def test_next_token_logprobs_is_the_last_position_of_each_prompt_alone(tiny_llama):
    lm = tiny_llama
    det = LocalDetector(lm, CFG)
    cands = det.yes_ids + det.no_ids
    ids = [lm.token_ids(q, chat=True) for q in QUESTIONS]
    assert len({len(x) for x in ids}) == 3
    want = np.array([reference(lm, x, cands) for x in ids])  # [3, C]
    for batch in (1, 2, 4, 28):  # one per forward, a padded last batch, all in one
        for order in (slice(None), slice(None, None, -1)):
            got = lm.next_token_logprobs(ids[order], cands, batch=batch, multiple=16)
            np.testing.assert_allclose(got, want[order], atol=1e-4)
    # rows continuing a shared prefix whose keys/values are computed once
    n = next(i for i in range(min(map(len, ids))) if len({x[i] for x in ids}) > 1)
    assert n > 8
    prefix = lm.prefix(ids[0][: n - 1], multiple=64)
    got = lm.next_token_logprobs([x[n - 1 :] for x in ids], cands, prefix=prefix, batch=2, multiple=16)
    np.testing.assert_allclose(got, want, atol=1e-4)

    ly = np.logaddexp.reduce(want[:, : len(det.yes_ids)], axis=1)
    ln = np.logaddexp.reduce(want[:, len(det.yes_ids) :], axis=1)
    p_want = 1.0 / (1.0 + np.exp(ln - ly))
    assert shared_length(ids) >= MIN_SHARED  # the detector's questions take the prefix path
    for batch in (1, 28):
        for share in (True, False):
            j = LocalDetector(lm, dataclasses.replace(CFG, detect_batch=batch), share_prefix=share)
            np.testing.assert_allclose(j.p_yes(QUESTIONS), p_want, atol=1e-5)
            np.testing.assert_allclose(j.p_yes(QUESTIONS[::-1]), p_want[::-1], atol=1e-5)


def test_shared_length_leaves_every_row_a_token():
    assert shared_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows keep their last token
    assert shared_length([[1, 2, 3, 4], [1, 2]]) == 1  # a row that is the others' prefix
    assert shared_length([[7, 1], [8, 1]]) == 0 and shared_length([[5]]) == 0 and shared_length([]) == 0


def test_greedy_explanation_is_generate_at_temperature_zero(tiny_llama):
    lm = tiny_llama
    cfg = dataclasses.replace(CFG, max_explanation_tokens=12, explain_batch=2)  # 3 prompts: 2 batches, one padded
    messages = [P.explanation_messages([P.render_window(w.split(), np.arange(len(w.split())), 2.5)], use_demos=False)
                for w in WINDOWS]
    got = LocalExplainer(lm, cfg).explain(messages)
    want = [lm.generate([P.flatten(m)], max_new_tokens=12, temperature=0.0)[0] for m in messages]
    assert got == want
    assert any(g.strip() for g in got)  # not all an immediate end token


def _prefix_spy(lm, monkeypatch) -> list[int]:
    """Records the length of every prefix ``lm`` computes."""
    seen: list[int] = []
    make = lm.prefix
    monkeypatch.setattr(lm, "prefix", lambda ids, **kw: seen.append(len(ids)) or make(ids, **kw))
    return seen


def test_greedy_completions_after_a_shared_prefix_equal_the_whole_prompts(tiny_llama, monkeypatch):
    """The explainer's path: the prompts' common tokens run once as a batch-1 prefix, each batch
    continues its keys/values; the new tokens are those of the whole prompts run alone, also for
    rows of different lengths (left padding between prefix and row) and a padded batch."""
    lm = tiny_llama
    head = lm.token_ids(P.flatten(P.explanation_messages([WINDOWS[0]], use_demos=False)), chat=True)[:40]
    ids = [head + lm.token_ids(w, chat=False) for w in WINDOWS + ["a b c d e f g h i j k l m n o p"]]
    assert shared_length(ids) >= MIN_SHARED
    want = [lm.complete_ids([x], max_new_tokens=10, batch=1)[0] for x in ids]
    seen = _prefix_spy(lm, monkeypatch)
    assert lm.complete_ids(ids, max_new_tokens=10, batch=3, share_prefix=True) == want
    assert seen == [shared_length(ids)] and any(want)  # the prefix ran once, and the path was taken
    # a sliding window narrower than prefix + padding + continuation: the prompts run whole instead
    narrow = dataclasses.replace(lm, config=dataclasses.replace(lm.config, windows=(32,) * lm.config.n_layers))
    whole = [narrow.complete_ids([x], max_new_tokens=10, batch=1)[0] for x in ids]
    seen = _prefix_spy(narrow, monkeypatch)
    assert narrow.complete_ids(ids, max_new_tokens=10, batch=3, share_prefix=True) == whole and seen == []


def test_too_short_a_shared_prefix_is_not_counted_against_the_context(tiny_llama):
    """Fewer than MIN_SHARED common tokens: the prompts run whole, and the context check counts
    each token once."""
    lm = tiny_llama
    ids = [[5] * 10 + [7 + i] * 50 for i in range(3)]  # 10 common tokens, 60 per prompt
    need = 64 + 8  # the prompts padded to 64, plus the new tokens
    fits = dataclasses.replace(lm, config=dataclasses.replace(lm.config, max_positions=need))
    assert len(fits.complete_ids(ids, max_new_tokens=8, batch=3, share_prefix=True)) == 3


def test_an_saes_prompts_run_in_equal_batches_without_rows_of_repeats():
    from jaxsae.models.lm import even_batch

    assert [even_batch(n, 8) for n in (1, 5, 8, 9, 14, 20, 50)] == [1, 5, 8, 5, 7, 7, 8]
    assert even_batch(14, 28) == 14  # a latent's 14 detection windows: one batch of 14, not 16
    for n in range(1, 70):
        for size in range(1, 30):
            b = even_batch(n, size)
            k = -(-n // b)
            assert b <= size and k == -(-n // size) and k * b - n < k  # fewest batches, < 1 repeat each


def test_the_explainer_runs_five_latents_as_one_batch_of_five(tiny_llama, monkeypatch):
    lm = tiny_llama
    seen = []
    complete = lm.complete_ids
    monkeypatch.setattr(lm, "complete_ids", lambda ids, **kw: seen.append(kw["batch"]) or complete(ids, **kw))
    cfg = dataclasses.replace(CFG, max_explanation_tokens=2, explain_batch=8)
    messages = [P.explanation_messages([P.render_window(w.split(), np.arange(len(w.split())), 2.5)], use_demos=False)
                for w in (WINDOWS * 2)[:5]]
    assert len(LocalExplainer(lm, cfg).explain(messages)) == 5 and seen == [5]


def test_context_check_counts_the_prefixs_real_tokens_not_its_padding(tiny_llama):
    import pytest

    from jaxsae.errors import UserError

    ids = [tiny_llama.token_ids(q, chat=True) for q in QUESTIONS]
    n = 10
    prefix = tiny_llama.prefix(ids[0][:n], multiple=64)  # 10 real tokens in 64 slots
    rows = [x[n:] for x in ids]
    need = n + max(map(len, rows))
    fits = dataclasses.replace(tiny_llama, config=dataclasses.replace(tiny_llama.config, max_positions=need))
    assert fits.next_token_logprobs(rows, [1, 2], prefix=prefix).shape == (3, 2)
    short = dataclasses.replace(tiny_llama, config=dataclasses.replace(tiny_llama.config, max_positions=need - 1))
    with pytest.raises(UserError, match=f"a prompt of {need} tokens exceeds the model's context of {need - 1}"):
        short.next_token_logprobs(rows, [1, 2], prefix=prefix)


def test_a_latents_14_windows_run_as_one_batch_of_14(tiny_llama, monkeypatch):
    lm = tiny_llama
    seen = []
    score = lm.next_token_logprobs
    monkeypatch.setattr(lm, "next_token_logprobs", lambda ids, c, **kw: seen.append(kw["batch"]) or score(ids, c, **kw))
    LocalDetector(lm, CFG).p_yes([P.yes_no_prompt("cities", f"window {i} " + WINDOWS[i % 3]) for i in range(14)])
    assert seen == [14]


def test_detect_scores_each_latents_windows_after_its_own_explanation(tiny_llama):
    """detect on three latents (one with no windows): each latent's P(yes) are those of its own
    questions, asked alone; a latent without windows predicts nothing."""
    det = LocalDetector(tiny_llama, CFG)
    expl = ["the names of cities", "code", "French words"]
    windows = [WINDOWS, [], WINDOWS[::-1]]
    got = det.detect(expl, windows)
    assert got[1].predicted == [] and got[1].p_yes == []
    for d, e, ws in zip(got[::2], expl[::2], windows[::2]):
        want = LocalDetector(tiny_llama, CFG, share_prefix=False).p_yes([P.yes_no_prompt(e, w) for w in ws])
        np.testing.assert_allclose(d.p_yes, want, atol=1e-5)
        assert d.predicted == sorted(int(i) + 1 for i in np.argsort(-want, kind="stable")[: CFG.n_expected_positive])
