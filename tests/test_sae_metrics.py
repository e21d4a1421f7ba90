"""Core metrics against a naive reference: full forwards with the SAE reconstruction (or zeros)
written into the residual stream by an Edit, cross-entropy and KL computed in numpy, with
SAEBench's rules: the SAE replaces counted positions only, the zero-ablation floor zeroes every
position, CE is averaged over predictions made from counted positions and KL over counted positions."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsae.models import Edit
from jaxsae.sae.metrics import core_metrics, core_metrics_many
from test_select_dtc import random_sae

LAYER = 1


def _replace(args, resid_btd, positions_bt):
    import jax.numpy as jnp

    return jnp.where(args["mask"][..., None], args["new"], resid_btd)


def naive(lm, sae, tokens, counted):
    def logp(edit=None):
        z = np.asarray(lm.logits(tokens, edit=edit), np.float64)
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    resid = np.asarray(lm.residual(tokens, LAYER))
    x = resid[counted]
    f = np.asarray(sae.encode(x))
    x_hat = np.asarray(sae.decode(f))
    spliced = resid.copy()
    spliced[counted] = x_hat
    everywhere = np.ones_like(counted)
    w_ce = counted[:, :-1].astype(np.float64)  # prediction t -> t + 1 made from a counted position t
    w_kl = counted.astype(np.float64)  # every counted position, the last one included
    tgt = tokens[:, 1:]
    lp_c = logp()

    def ce(lp):
        return float((-np.take_along_axis(lp[:, :-1], tgt[..., None], -1)[..., 0] * w_ce).sum() / w_ce.sum())

    out = {"l0": float((f != 0).sum(1).mean()), "fvu": float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())}
    for name, mask, new in (("sae", counted, spliced), ("zero", everywhere, np.zeros_like(resid))):
        lp = logp(Edit(LAYER, _replace, {"mask": mask, "new": new}))
        out[f"ce_{name}"] = ce(lp)
        out[f"kl_{name}"] = float(((np.exp(lp_c) * (lp_c - lp)).sum(-1) * w_kl).sum() / w_kl.sum())
    out["ce_clean"] = ce(lp_c)
    out["ce_loss_score"] = (out["ce_zero"] - out["ce_sae"]) / (out["ce_zero"] - out["ce_clean"])
    out["kl_score"] = (out["kl_zero"] - out["kl_sae"]) / out["kl_zero"]
    return out


@pytest.fixture(scope="module")
def data(tiny_llama):
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, tiny_llama.config.vocab_size, (6, 12)).astype(np.int32)
    counted = np.ones(tokens.shape, bool)
    counted[:, 0] = False  # BOS-like first position keeps its residual
    counted[2, 5] = False
    return tokens, counted


@pytest.mark.parametrize("arch", ["jumprelu", "topk"])
def test_core_metrics_equal_naive_reference(tiny_llama, data, arch):
    tokens, counted = data
    sae = random_sae(tiny_llama.config.d_model, 48, seed=1, arch=arch)
    got = core_metrics(tiny_llama, sae, LAYER, tokens, counted, batch=4)  # 2 batches, the last one short
    ref = naive(tiny_llama, sae, tokens, counted)
    assert got["n_tokens"] == counted.sum()
    for k, v in ref.items():  # the scores are ratios of small differences on a random model: looser
        assert got[k] == pytest.approx(v, rel=2e-3 if k.endswith("score") else 2e-4, abs=2e-5), k
    assert got["ce_loss_score"] == pytest.approx((got["ce_zero"] - got["ce_sae"]) / (got["ce_zero"] - got["ce_clean"]))


def test_many_saes_at_once_equal_one_at_a_time(tiny_llama, data):
    tokens, counted = data
    saes = [random_sae(tiny_llama.config.d_model, 32, seed=s, arch=a) for s, a in ((2, "jumprelu"), (3, "topk"))]
    many = core_metrics_many(tiny_llama, saes, LAYER, tokens, counted, batch=3)
    for sae, m in zip(saes, many):
        one = core_metrics(tiny_llama, sae, LAYER, tokens, counted, batch=3)
        assert m == pytest.approx(one, rel=1e-6)
