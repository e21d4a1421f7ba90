"""Steering edits on the tiny Llama: α = 0 is a no-op, a large α moves the next-token distribution
toward the feature's logit-lens tokens, the last-position variant touches only the last position,
and several features at once add up."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae.sae as S
from jaxsae.models.decoder import unembed
from jaxsae.models.lm import _forward
from jaxsae.steer import feature_edit, steering_edit, unit_directions

LAYER = 1
PREFIX = "From my experience,"


def random_sae(d_in: int, d_sae: int = 16, seed: int = 0) -> S.SAE:
    r = np.random.RandomState(seed)
    params = {
        "W_enc": jnp.asarray(r.randn(d_in, d_sae).astype(np.float32) / np.sqrt(d_in)),
        "b_enc": jnp.zeros(d_sae, jnp.float32),
        "W_dec": jnp.asarray(r.randn(d_sae, d_in).astype(np.float32) * r.uniform(0.2, 3.0, (d_sae, 1)).astype(np.float32)),
        "b_dec": jnp.zeros(d_in, jnp.float32),
        "threshold": jnp.full(d_sae, 0.05, jnp.float32),
    }
    cfg = S.make_cfg("jumprelu", d_in, d_sae, apply_b_dec_to_input=False, metadata={"hook_layer": LAYER})
    return S.SAE(cfg=cfg, params=params)


@pytest.fixture(scope="module")
def sae(tiny_llama):
    return random_sae(tiny_llama.config.d_model)


@pytest.fixture(scope="module")
def max_acts():
    return np.linspace(1.0, 4.0, 16).astype(np.float32)


def test_unit_directions(sae):
    v = unit_directions(sae, [3, 0, 3])
    w = np.asarray(sae.params["W_dec"])
    assert v.shape == (3, w.shape[1]) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(v[0] * np.linalg.norm(w[3]), w[3], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(v[0], v[2])


def test_alpha_zero_reproduces_unsteered_generation(tiny_llama, sae, max_acts):
    prompts = ["Explain how a rainbow forms.", "Write a poem about the morning."]
    base = tiny_llama.generate_ids(prompts, max_new_tokens=8)
    assert len(base[0]) > 0
    edit = feature_edit(LAYER, sae, [5], max_acts, [0.0, 0.0])
    assert tiny_llama.generate_ids(prompts, max_new_tokens=8, steer=edit) == base
    # a strong factor does change the greedy continuation (the edit is really applied while decoding)
    strong = feature_edit(LAYER, sae, [5], max_acts, [50.0, 50.0])
    assert tiny_llama.generate_ids(prompts, max_new_tokens=8, steer=strong) != base


def lens_mass(lm, sae, f, edit):
    """Probability mass of f's top-20 logit-lens tokens at the prefix's next token."""
    ids = np.asarray([lm.token_ids(PREFIX)])
    v = unit_directions(sae, [f])[0]
    lens = np.argsort(-np.asarray(unembed(lm.params, lm.config, jnp.asarray(v)[None, None]))[0, 0])[:20]
    p = np.asarray(jax.nn.softmax(lm.logits(ids, edit=edit)[0, -1]))
    return float(p[lens].sum())


@pytest.mark.parametrize("all_positions", [True, False])
def test_large_alpha_shifts_toward_logit_lens_tokens(tiny_llama, sae, max_acts, all_positions):
    f = 7
    base = lens_mass(tiny_llama, sae, f, None)
    masses = [lens_mass(tiny_llama, sae, f, feature_edit(LAYER, sae, [f], max_acts, [a], all_positions=all_positions))
              for a in (0.0, 2.0, 20.0)]
    assert masses[0] == pytest.approx(base, rel=1e-6)
    assert masses[1] > base and masses[2] > masses[1]
    assert masses[2] > 5 * base  # steering toward f concentrates mass on f's own output tokens
    # steering toward another feature does not
    other = lens_mass(tiny_llama, sae, f, feature_edit(LAYER, sae, [2], max_acts, [20.0], all_positions=all_positions))
    assert other < masses[2] / 3


def residual_diff(lm, edit, batch=2):
    ids = np.asarray([lm.token_ids(PREFIX)] * batch)
    return np.asarray(lm.residual(ids, LAYER, edit=edit)) - np.asarray(lm.residual(ids, LAYER))


def test_all_positions_adds_everywhere_last_position_only_last(tiny_llama, sae, max_acts):
    f, a = 4, 1.5
    want = a * max_acts[f] * unit_directions(sae, [f])[0]
    d_all = residual_diff(tiny_llama, feature_edit(LAYER, sae, [f], max_acts, [a, a]))
    np.testing.assert_allclose(d_all[0], np.broadcast_to(want, d_all[0].shape), atol=1e-5)
    d_last = residual_diff(tiny_llama, feature_edit(LAYER, sae, [f], max_acts, [a, a], all_positions=False))
    np.testing.assert_array_equal(d_last[0, :-1], 0.0)
    np.testing.assert_allclose(d_last[0, -1], want, atol=1e-5)
    # downstream of the edit, earlier positions are untouched too (causal), the last one is not
    ids = np.asarray([tiny_llama.token_ids(PREFIX)])
    edit = feature_edit(LAYER, sae, [f], max_acts, [a], all_positions=False)  # shapes as in lens_mass
    lo, lb = np.asarray(tiny_llama.logits(ids, edit=edit)), np.asarray(tiny_llama.logits(ids))
    np.testing.assert_allclose(lo[0, :-1], lb[0, :-1], atol=1e-5)
    assert np.abs(lo[0, -1] - lb[0, -1]).max() > 1e-2


def test_several_features_sum_their_directions(tiny_llama, sae, max_acts):
    feats, alphas = [1, 6, 11], [0.5, 2.0]
    v = unit_directions(sae, feats)
    d = residual_diff(tiny_llama, feature_edit(LAYER, sae, feats, max_acts, alphas))
    for b, a in enumerate(alphas):  # row b steered by α_b · Σ_f m_f · v_f
        want = a * (max_acts[feats][:, None] * v).sum(0)
        np.testing.assert_allclose(d[b], np.broadcast_to(want, d[b].shape), atol=1e-5)
    # equal to one edit along the summed direction, and to applying the features one after another
    summed = (max_acts[feats][:, None] * v).sum(0, keepdims=True)
    one = residual_diff(tiny_llama, steering_edit(LAYER, summed, np.array([[0.5], [2.0]])))
    np.testing.assert_allclose(d, one, atol=1e-5)
    singles = sum(residual_diff(tiny_llama, feature_edit(LAYER, sae, [f], max_acts, alphas)) for f in feats)
    np.testing.assert_allclose(d, singles, atol=1e-4)
    # the last-position variant sums the same way
    d_last = residual_diff(tiny_llama, feature_edit(LAYER, sae, feats, max_acts, alphas, all_positions=False))
    np.testing.assert_allclose(d_last[:, -1], d[:, -1], atol=1e-5)
    np.testing.assert_array_equal(d_last[:, :-1], 0.0)


def test_new_factors_or_features_do_not_recompile(tiny_llama, sae, max_acts):
    ids = np.asarray([tiny_llama.token_ids(PREFIX)])
    tiny_llama.logits(ids, edit=feature_edit(LAYER, sae, [1], max_acts, [1.0]))
    n = _forward._cache_size()
    for f, a in ((2, 0.3), (9, 7.0)):
        tiny_llama.logits(ids, edit=feature_edit(LAYER, sae, [f], max_acts, [a]))
    assert _forward._cache_size() == n
