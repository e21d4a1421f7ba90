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


class _PlantedSAE:
    """A stand-in SAE whose latents fire on a chosen number of the held-out tokens: latent j fires
    where the projection x · w_j clears a cut placed between two sorted projections (so batching
    cannot flip a token), and decodes with a random dictionary around 0.7 · mean(x) (x̂ near x,
    not equal: cosine and norm ratio away from 1)."""

    def __init__(self, x_nd: np.ndarray, fires: list[int], seed: int = 0, tiny: int | None = None):
        r = np.random.RandomState(seed)
        self.d_sae = len(fires)
        self.w_df = r.randn(x_nd.shape[1], self.d_sae).astype(np.float32)
        proj = np.sort(x_nd @ self.w_df, axis=0)[::-1]  # descending per latent
        cuts = []
        for j, n in enumerate(fires):
            cuts.append(proj[0, j] + 1.0 if n == 0 else 0.5 * (proj[n - 1, j] + proj[n, j]))
        self.b_f = -np.asarray(cuts, np.float32)
        if tiny is not None:  # latent ``tiny`` fires on the same tokens with codes ~1e-5 (still non-zero)
            self.w_df[:, tiny] *= 1e-5
            self.b_f[tiny] *= 1e-5
        self.w_dec_fd = (r.randn(self.d_sae, x_nd.shape[1]) * 0.1 * x_nd.std()).astype(np.float32)
        self.b_dec_d = (0.7 * x_nd.mean(0) + r.randn(x_nd.shape[1]) * 0.1 * x_nd.std()).astype(np.float32)

    def encode(self, x_nd):
        return np.maximum(np.asarray(x_nd) @ self.w_df + self.b_f, 0.0)

    def decode(self, f_nf):
        return np.asarray(f_nf) @ self.w_dec_fd + self.b_dec_d


def test_reconstruction_and_frequency_metrics_equal_numpy(tiny_llama, data):
    """mse, cossim, l2_ratio, l0, dead_frac and dense_frac (> 10% of tokens) against their numpy
    definitions, on an SAE with latents that never fire, fire on 1–5% of tokens (dense only under
    a wrong threshold) and on 30–60% of tokens."""
    tokens, counted = data
    x = np.asarray(tiny_llama.residual(tokens, LAYER))[counted].astype(np.float64)
    fires = [0, 1, 3, 20, 40, 0]
    sae = _PlantedSAE(x.astype(np.float32), fires, tiny=2)
    got = core_metrics(tiny_llama, sae, LAYER, tokens, counted, batch=4)
    f = sae.encode(x)
    assert [int(v) for v in (f > 0).sum(0)] == fires
    assert 0 < f[:, 2].max() < 1e-3  # small codes still count as firing (L0, dead)
    x_hat = sae.decode(f)
    nx, nh = np.linalg.norm(x, axis=1), np.linalg.norm(x_hat, axis=1)
    want = {
        "mse": float(np.mean(np.sum((x - x_hat) ** 2, axis=1))),
        "cossim": float(np.mean(np.sum(x * x_hat, axis=1) / (nx * nh))),
        "l2_ratio": float(np.mean(nh / nx)),
        "l0": float(np.mean((f > 0).sum(1))),
        "dead_frac": 2 / 6,
        "dense_frac": float(np.mean((f > 0).mean(0) > 0.1)),
        "fvu": float(np.sum((x - x_hat) ** 2) / np.sum((x - x.mean(0)) ** 2)),
    }
    assert want["dense_frac"] == 2 / 6 and 0.1 < want["cossim"] < 0.95 and abs(want["l2_ratio"] - 1) > 0.1
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-5), k
    assert got["explained_variance"] == pytest.approx(1 - want["fvu"], rel=1e-5)
