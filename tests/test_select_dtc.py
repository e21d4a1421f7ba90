"""ΔTC and the output score: the batched kernel equals a naive two-forward reference that applies
Arad et al.'s hook literally (encode, amplify, decode, add the error back)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae.sae as S
from jaxsae.errors import UserError
from jaxsae.models import Edit
from jaxsae.select.dtc import DEFAULT_PREFIX, delta_token_confidence, feature_scores


def random_sae(d_in: int, d_sae: int, seed: int = 0, arch: str = "jumprelu") -> S.SAE:
    r = np.random.RandomState(seed)
    w_dec = r.randn(d_sae, d_in).astype(np.float32)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    params = {
        "W_enc": jnp.asarray(r.randn(d_in, d_sae).astype(np.float32) / np.sqrt(d_in)),
        "b_enc": jnp.asarray(r.randn(d_sae).astype(np.float32) * 0.1),
        "W_dec": jnp.asarray(w_dec * r.uniform(0.5, 1.5, size=(d_sae, 1)).astype(np.float32)),
        "b_dec": jnp.asarray(r.randn(d_in).astype(np.float32) * 0.1),
        "threshold": jnp.asarray(np.full(d_sae, 0.05, np.float32)),
    }
    cfg = S.make_cfg(arch, d_in, d_sae, apply_b_dec_to_input=False, metadata={"hook_layer": 1})
    return S.SAE(cfg=cfg, params=params)


def naive_scores(lm, sae, layer, features, *, alpha=10.0, k=1, mode="additive", max_acts=None, reading="A",
                 positions="last", rank_factors=None):
    """Two full forwards per feature, with the intervention written out as the hook does it:
    encode, change the codes as the reading says, decode, add the SAE error back. The output score
    always comes from reading A (Arad's hook); ``rank_factors``: a list that receives each
    feature's (1 − best rank / |V|)."""
    enc, dec = S.encode_fn(sae), S.decode_fn(sae)
    ids = np.asarray([lm.token_ids(DEFAULT_PREFIX)])
    at = slice(None) if positions == "all" else slice(-1, None)

    def hook_for(rd):
        def hook(args, resid, positions_bt):
            acts = enc(args["params"], resid)
            err = resid - dec(args["params"], acts)
            f, a = args["f"], args["alpha"]
            if rd == "A" and mode == "decoder":
                v = args["params"]["W_dec"][f]
                return resid.at[:, at].add(a * args["m"] * v / jnp.linalg.norm(v))
            if rd == "A":  # a_f += alpha * max_j a_j, at each intervened position
                bumped = acts.at[:, at, f].add(a * jnp.max(acts[:, at], axis=-1))
            elif rd == "B":  # amplify f's own code by alpha, everything else kept
                bumped = acts.at[:, at, f].multiply(a)
            else:  # B': f's code times alpha added on its own (the other codes at zero)
                only = jnp.zeros_like(acts).at[:, at, f].set(a * acts[:, at, f])
                return resid + dec(args["params"], only) - dec(args["params"], jnp.zeros_like(acts))
            return dec(args["params"], bumped) + err
        return hook

    base = jax.nn.log_softmax(np.asarray(lm.logits(ids))[0, -1])
    c_base = -np.mean(np.sort(np.asarray(base))[::-1][:k])
    dtc, out = [], []
    from jaxsae.models.decoder import unembed

    hooks = {rd: hook_for(rd) for rd in {reading, "A"}}  # one function each: traced once, not per feature

    def logp_for(rd, args):
        return np.asarray(jax.nn.log_softmax(lm.logits(ids, edit=Edit(layer, hooks[rd], args))[0, -1]))

    for f in features:
        args = {"params": sae.params, "f": jnp.int32(f), "alpha": jnp.float32(alpha),
                "m": jnp.float32(0.0 if max_acts is None else max_acts[f])}
        logp = logp_for(reading, args)
        dtc.append(-np.mean(np.sort(logp)[::-1][:k]) - c_base)
        logp = logp_for("A", args)
        lens_logits = np.asarray(unembed(lm.params, lm.config, jnp.asarray(sae.params["W_dec"][f])[None, None]))[0, 0]
        lens = np.argsort(-lens_logits)[:20]
        p = np.exp(logp)
        best_rank = min(int(np.sum(p > p[t])) for t in lens)
        out.append((1 - best_rank / len(p)) * p[lens].max())
        if rank_factors is not None:
            rank_factors.append(1 - best_rank / len(p))
    return np.array(dtc), np.array(out)


@pytest.mark.parametrize("k", [1, 3])
def test_batched_dtc_equals_naive_on_tiny_model(tiny_llama, k):
    sae = random_sae(tiny_llama.config.d_model, 48)
    feats = np.array([0, 5, 17, 33, 47])
    got = feature_scores(tiny_llama, sae, 1, k=k, features=feats, batch_size=4, reading="A")
    want_dtc, want_out = naive_scores(tiny_llama, sae, 1, feats, k=k)
    np.testing.assert_allclose(got["delta_tc"], want_dtc, rtol=1e-4, atol=1e-5)
    # the output scores are ~3e-4 (p ~ 1/|V| on a random model): compared relatively
    np.testing.assert_allclose(got["output_score"], want_out, rtol=1e-5)
    # ΔTC alone (no logit-lens pass) is the same ΔC_k
    alone = delta_token_confidence(tiny_llama, sae, 1, k=k, features=feats, batch_size=4, reading="A")
    np.testing.assert_allclose(alone, want_dtc, rtol=1e-4, atol=1e-5)
    assert set(feature_scores(tiny_llama, sae, 1, k=k, features=feats, output_score=False)) == {"features", "delta_tc"}


def test_decoder_mode_equals_naive(tiny_llama):
    sae = random_sae(tiny_llama.config.d_model, 32, seed=3)
    m = np.random.RandomState(0).uniform(1, 5, 32).astype(np.float32)
    feats = np.array([1, 2, 30])
    got = feature_scores(tiny_llama, sae, 2, features=feats, mode="decoder", max_acts=m, reading="A")
    want_dtc, want_out = naive_scores(tiny_llama, sae, 2, feats, mode="decoder", max_acts=m)
    np.testing.assert_allclose(got["delta_tc"], want_dtc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["output_score"], want_out, rtol=1e-5)


def test_output_score_rank_factor_against_naive(tiny_llama):
    """A weak push (α = 0.5) leaves the lens tokens far down the distribution, so the output score's
    (1 − best rank / |V|) factor is 0.88…0.997 here: the score must match the naive one to 1e-5 relative."""
    sae = random_sae(tiny_llama.config.d_model, 48)
    feats = np.array([0, 5, 17, 33, 47])
    factors = []
    got = feature_scores(tiny_llama, sae, 1, alpha=0.5, features=feats, batch_size=4, reading="A")
    want_dtc, want_out = naive_scores(tiny_llama, sae, 1, feats, alpha=0.5, rank_factors=factors)
    assert min(factors) < 0.95  # the factor matters by far more than the tolerance
    np.testing.assert_allclose(got["output_score"], want_out, rtol=1e-5)
    np.testing.assert_allclose(got["delta_tc"], want_dtc, rtol=1e-4, atol=1e-5)


def test_alpha_zero_gives_zero(tiny_llama):
    sae = random_sae(tiny_llama.config.d_model, 16)
    for reading, alpha in (("A", 0.0), ("B'", 0.0), ("B", 1.0)):  # B scales a_f by alpha: 1 is no change
        got = feature_scores(tiny_llama, sae, 1, alpha=alpha, reading=reading)
        np.testing.assert_allclose(got["delta_tc"], 0.0, atol=1e-5)
        assert got["delta_tc"].shape == (16,)


def test_every_latent_scored_and_matches_naive_sample_on_smollm2(smollm2):
    sae = random_sae(smollm2.config.d_model, 256, seed=1)
    got = feature_scores(smollm2, sae, 15, batch_size=128, reading="A")
    assert got["delta_tc"].shape == (256,) and np.isfinite(got["delta_tc"]).all()
    assert np.abs(got["delta_tc"]).max() > 1e-3  # amplifying features does move the distribution
    sample = np.array([0, 100, 255])
    want_dtc, want_out = naive_scores(smollm2, sae, 15, sample)
    np.testing.assert_allclose(got["delta_tc"][sample], want_dtc, atol=1e-4)
    np.testing.assert_allclose(got["output_score"][sample], want_out, atol=1e-4)


def test_bad_input(tiny_llama):
    sae = random_sae(tiny_llama.config.d_model, 8)
    with pytest.raises(UserError, match="mode"):
        feature_scores(tiny_llama, sae, 1, mode="nope")
    with pytest.raises(UserError, match="reading"):
        feature_scores(tiny_llama, sae, 1, reading="C")
    with pytest.raises(UserError, match="positions"):
        feature_scores(tiny_llama, sae, 1, positions="first")
    with pytest.raises(UserError, match="max_acts"):
        feature_scores(tiny_llama, sae, 1, mode="decoder", reading="A")
    with pytest.raises(UserError, match="d_in"):
        feature_scores(tiny_llama, random_sae(10, 8), 1)
    with pytest.raises(UserError, match="out of range"):
        feature_scores(tiny_llama, sae, 99)


@pytest.mark.parametrize("reading", ["A", "B", "B'"])
@pytest.mark.parametrize("positions", ["last", "all"])
def test_every_reading_equals_naive(tiny_llama, reading, positions):
    """Each reading at the last prefix position or at every position equals the naive two-forward
    hook; the output score stays Arad's (reading A) whatever the ΔTC reading."""
    sae = random_sae(tiny_llama.config.d_model, 24, seed=5)
    feats = np.arange(24)
    got = feature_scores(tiny_llama, sae, 1, features=feats, batch_size=16, reading=reading, positions=positions)
    want_dtc, want_out = naive_scores(tiny_llama, sae, 1, feats, reading=reading, positions=positions)
    np.testing.assert_allclose(got["delta_tc"], want_dtc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["output_score"], want_out, rtol=1e-5)  # ~3e-4 on a random model: relative
    assert np.abs(want_dtc).max() > 1e-3
    if reading != "A":  # the output score's pass (Arad's hook) also gives reading A's ΔC
        a = feature_scores(tiny_llama, sae, 1, features=feats, batch_size=16, reading="A", positions=positions,
                           output_score=False)["delta_tc"]
        np.testing.assert_allclose(got["delta_tc_A"], a, atol=1e-6)


def test_default_reading_scales_the_own_code(tiny_llama):
    """The default is reading B (the paper's text) at the last position: a latent silent on the
    prefix gets ΔC = 0 exactly, one that fires moves the distribution."""
    sae = random_sae(tiny_llama.config.d_model, 40, seed=5)
    codes = np.asarray(sae.encode(np.asarray(tiny_llama_prefix_resid(tiny_llama, 1))))
    got = delta_token_confidence(tiny_llama, sae, 1)
    silent, firing = codes == 0, codes > 0
    assert silent.any() and firing.any()
    sample = np.concatenate([np.flatnonzero(silent)[:2], np.flatnonzero(firing)[:3]])
    want, _ = naive_scores(tiny_llama, sae, 1, sample, reading="B")
    np.testing.assert_allclose(got[sample], want, atol=1e-4)
    assert np.all(got[silent] == 0.0) and np.abs(got[firing]).max() > 1e-3


def tiny_llama_prefix_resid(lm, layer):
    """The prefix's residual after ``layer`` at its last position, f32[D]."""
    from jaxsae.select.dtc import prefix_state

    ids = jnp.asarray(np.asarray([lm.token_ids(DEFAULT_PREFIX)], np.int32))
    return prefix_state(lm.params, lm.config, ids, layer)[1]
