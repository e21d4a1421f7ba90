"""Window sampling on hand-built activations: counts, non-overlap, highlighting, labels, the IW
draw, exclusion of dead latents, fixed-seed CONCEPT100."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxsae.autointerp import AutoInterpConfig, latent_examples, select_latents
from jaxsae.autointerp.prompts import render_window
from jaxsae.errors import UserError
from jaxsae.features import FeatureStatsConfig, stats_from_codes

N, T, F = 40, 64, 10
CFG = AutoInterpConfig()


@pytest.fixture(scope="module")
def stats():
    rng = np.random.default_rng(0)
    acts = rng.exponential(1.0, (N, T, F)).astype(np.float32) * (rng.random((N, T, F)) < 0.1)
    acts[:, :, 3] = 0.0
    acts[5, 30, 3] = 2.0
    acts[9, 31, 3] = 1.0  # 2 firings: dead (< 15)
    acts[:, :, 4] = 0.0
    acts[:14, 32, 4] = 1.0 + np.arange(14, dtype=np.float32)  # 14 firings: dead by one
    acts[:, :, 5] = 0.0
    acts[:16, 32, 5] = 1.0 + np.arange(16, dtype=np.float32)  # 16 firings, 16 peaks, no tail below θ beyond 4
    acts[:, :, 6] = 0.0
    acts[0, 15:50, 6] = 7.0  # 35 firings in one context: alive but only 2 non-overlapping peaks
    acts[:, :, 7] *= 0.001  # scale must not matter
    acts[3, 20, 8] = 500.0  # latent 8 has one huge peak: τ = 5, most of its other activity is below τ
    tokens = rng.integers(3, 1000, (N, T)).astype(np.int32)
    counted = np.ones((N, T), bool)
    counted[:, 0] = False
    cfg = FeatureStatsConfig(context_len=T, batch_size=8)
    return stats_from_codes(acts, tokens, counted, cfg), acts


def test_selection_excludes_dead_and_windowless(stats):
    st, acts = stats
    sel = select_latents(st, CFG)
    counts = (acts[:, 1:] > 0).sum((0, 1))
    np.testing.assert_array_equal(st.count, counts)
    np.testing.assert_array_equal(sel.alive, counts >= 15)
    assert not sel.alive[3] and not sel.alive[4] and sel.alive[5] and sel.alive[6]
    assert not sel.eligible[6]  # fewer than 12 non-overlapping peaks
    assert sel.eligible[5] == bool(np.all(st.iw_pos[5] >= 0))  # needs 7 draws below the 12th peak
    for f in (0, 1, 2, 7, 8, 9):
        assert sel.eligible[f]
    np.testing.assert_array_equal(sel.scored, np.flatnonzero(sel.eligible))  # n_latents > eligible: all of them
    assert set(sel.concept) == set(sel.scored)  # fewer than 100: CONCEPT100 is all of them


def test_draws_are_seeded(stats):
    st, _ = stats
    cfg = dataclasses.replace(CFG, n_latents=5, n_concepts=3)
    a, b = select_latents(st, cfg), select_latents(st, cfg)
    np.testing.assert_array_equal(a.scored, b.scored)
    np.testing.assert_array_equal(a.concept, b.concept)
    assert len(a.scored) == 5 and len(a.concept) == 3 and set(a.concept) <= set(a.scored)
    assert all(a.eligible[f] for f in a.scored)
    draws = {tuple(select_latents(st, dataclasses.replace(cfg, concept_seed=s)).concept) for s in range(8)}
    assert len(draws) > 1  # the seed matters
    forced = select_latents(st, dataclasses.replace(CFG, latents=(8, 0)))
    np.testing.assert_array_equal(forced.scored, [0, 8])
    with pytest.raises(UserError):
        select_latents(st, dataclasses.replace(CFG, latents=(3,)))  # dead


def test_window_sets(stats):
    st, acts = stats
    a = np.where(st.counted[..., None], acts, 0.0)
    for f in (0, 1, 7, 8):
        ex = latent_examples(st, f, CFG)
        kinds = lambda ws: sorted(w.kind for w in ws)  # noqa: E731
        assert kinds(ex.generation) == ["iw"] * 5 + ["top"] * 10
        assert kinds(ex.scoring) == ["iw"] * 2 + ["random"] * 10 + ["top"] * 2
        # top and IW windows are the statistics' (12 top split 10/2, 7 IW split 5/2), no repeats
        top = [w.pos for w in ex.generation + ex.scoring if w.kind == "top"]
        iw = [w.pos for w in ex.generation + ex.scoring if w.kind == "iw"]
        assert sorted(top) == sorted(st.top_pos[f, :12].tolist())
        assert sorted(iw) == sorted(st.iw_pos[f, :7].tolist())
        for i, p in enumerate(top):  # non-overlapping within a context
            for q in top[:i]:
                assert p // T != q // T or abs(p - q) > st.buffer
        theta = st.top_val[f, 11]
        for w in ex.generation + ex.scoring:
            n, t = divmod(w.pos, T)
            np.testing.assert_array_equal(w.tokens, st.tokens[n, t - 10 : t + 11])
            np.testing.assert_allclose(w.acts, a[n, t - 10 : t + 11, f])
            if w.kind == "iw":
                assert 0 < a[n, t, f] < theta
        # generation strongest first; τ = 1% of the largest top-window activation
        mx = [w.max_act for w in ex.generation]
        assert mx == sorted(mx, reverse=True)
        assert ex.threshold == pytest.approx(0.01 * max(np.max(st.top_win[f, :12]), 0))
        # labels: window max above τ, random windows included
        np.testing.assert_array_equal(ex.labels, [w.max_act > ex.threshold and w.kind != "random" for w in ex.scoring])
        if f != 8:  # (latent 8's lesser peaks can be below its τ = 5: negative top windows)
            assert all(ex.labels[i] for i, w in enumerate(ex.scoring) if w.kind == "top")
        # deterministic per latent
        again = latent_examples(st, f, CFG)
        assert [w.pos for w in again.scoring] == [w.pos for w in ex.scoring]


def test_random_labels_follow_activations_or_saebench(stats):
    st, _ = stats
    # latent 0 fires on ~10% of tokens: random windows often hit
    ex = latent_examples(st, 0, dataclasses.replace(CFG, random_labels="activation"))
    rand = [lab for lab, w in zip(ex.labels, ex.scoring) if w.kind == "random"]
    assert any(rand)
    assert CFG.random_labels == "negative"  # SAEBench's labels by default
    neg = latent_examples(st, 0, CFG)
    assert not any(lab for lab, w in zip(neg.labels, neg.scoring) if w.kind == "random")
    assert [w.pos for w in neg.scoring] == [w.pos for w in ex.scoring]
    # latent 8: one huge peak sets τ = 5, so its ordinary activity is mostly below τ
    ex8 = latent_examples(st, 8, CFG)
    assert ex8.threshold == pytest.approx(5.0)
    iw8 = [lab for lab, w in zip(ex8.labels, ex8.scoring) if w.kind == "iw"]
    assert not all(iw8)  # an IW window can be negative: its activity stays below τ


def test_highlighting():
    pieces = ["The", " cat", "\n", " sat", "\ufffd"]
    acts = np.array([0.0, 0.5, 0.02, 0.011, 3.0])
    assert render_window(pieces, acts, threshold=0.01) == "The<< cat>><<↵>><< sat>><<>>"
    assert render_window(pieces, acts, threshold=0.02) == "The<< cat>>↵ sat<<>>"
    assert render_window(pieces) == "The cat↵ sat"


def test_protocol_needs_enough_windows(stats):
    st, _ = stats
    with pytest.raises(UserError):
        latent_examples(st, 0, dataclasses.replace(CFG, n_top_gen=11))
