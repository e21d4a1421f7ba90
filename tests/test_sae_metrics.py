"""Core metrics against a naive reference: full forwards with the SAE reconstruction (or zeros)
written into the residual stream by an Edit, cross-entropy and KL computed in numpy, with
SAEBench's rules: the SAE replaces counted positions only, the zero-ablation floor zeroes every
position, CE is averaged over predictions made from counted positions and KL over counted positions."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae.sae as S
from jaxsae.models import Edit
from jaxsae.models.decoder import forward_from
from jaxsae.metrics import _ce_sum, core_metrics, core_metrics_many
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


def _planted_sae(x_nd: np.ndarray, fires: list[int], seed: int = 0, tiny: int | None = None) -> S.SAE:
    """A ReLU ("standard") SAE whose latents fire on a chosen number of the held-out tokens:
    latent j fires where the projection x · W_enc[:, j] clears a cut placed between two sorted
    projections (so batching cannot flip a token), and decodes with a random dictionary around
    0.7 · mean(x) (x̂ near x, not equal: cosine and norm ratio away from 1)."""
    r = np.random.RandomState(seed)
    d_sae = len(fires)
    w_df = r.randn(x_nd.shape[1], d_sae).astype(np.float32)
    proj = np.sort(x_nd @ w_df, axis=0)[::-1]  # descending per latent
    cuts = [proj[0, j] + 1.0 if n == 0 else 0.5 * (proj[n - 1, j] + proj[n, j]) for j, n in enumerate(fires)]
    b_f = -np.asarray(cuts, np.float32)
    if tiny is not None:  # latent ``tiny`` fires on the same tokens with codes ~1e-5 (still non-zero)
        w_df[:, tiny] *= 1e-5
        b_f[tiny] *= 1e-5
    w_dec_fd = (r.randn(d_sae, x_nd.shape[1]) * 0.1 * x_nd.std()).astype(np.float32)
    b_dec_d = (0.7 * x_nd.mean(0) + r.randn(x_nd.shape[1]) * 0.1 * x_nd.std()).astype(np.float32)
    params = {"W_enc": jnp.asarray(w_df), "b_enc": jnp.asarray(b_f), "W_dec": jnp.asarray(w_dec_fd),
              "b_dec": jnp.asarray(b_dec_d)}
    cfg = S.make_cfg("standard", x_nd.shape[1], d_sae, apply_b_dec_to_input=False, metadata={"hook_layer": LAYER})
    return S.SAE(cfg=cfg, params=params)


def test_reconstruction_and_frequency_metrics_equal_numpy(tiny_llama, data):
    """mse, cossim, l2_ratio, l0, dead_frac and dense_frac (> 10% of tokens) against their numpy
    definitions, on an SAE with latents that never fire, fire on 1–5% of tokens (dense only under
    a wrong threshold) and on 30–60% of tokens."""
    tokens, counted = data
    x = np.asarray(tiny_llama.residual(tokens, LAYER))[counted].astype(np.float64)
    fires = [0, 1, 3, 20, 40, 0]
    sae = _planted_sae(x.astype(np.float32), fires, tiny=2)
    got = core_metrics(tiny_llama, sae, LAYER, tokens, counted, batch=4)
    p = {k: np.asarray(v, np.float64) for k, v in sae.params.items()}
    f = np.maximum(x @ p["W_enc"] + p["b_enc"], 0.0)  # in float64
    assert [int(v) for v in (f > 0).sum(0)] == fires
    assert 0 < f[:, 2].max() < 1e-3  # small codes still count as firing (L0, dead)
    x_hat = f @ p["W_dec"] + p["b_dec"]
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


# ------------------------------------------- the previous host-side implementation, as a reference
# (boolean indexing, numpy sums per batch): the device version must give the same values


@functools.partial(jax.jit, static_argnames=("cfg", "layer"))
def _clean(params, cfg, layer, resid_btd, tokens_bt, valid_bt):
    """(log-probs f32[B, T, V] of the clean model, sum CE, CE count, KL count) (see :func:`_ce_sum`)."""
    logits, _ = forward_from(params, cfg, resid_btd, layer)
    lp = jax.nn.log_softmax(logits, axis=-1)
    return lp, _ce_sum(lp, tokens_bt, valid_bt), jnp.sum(valid_bt[:, :-1]), jnp.sum(valid_bt)


@functools.partial(jax.jit, static_argnames=("cfg", "layer"))
def _variant(params, cfg, layer, lp_clean, variant_btd, tokens_bt, valid_bt):
    """(sum CE, sum KL(clean || variant) over counted positions) with ``variant_btd`` spliced in at ``layer``."""
    logits, _ = forward_from(params, cfg, variant_btd, layer)
    lp = jax.nn.log_softmax(logits, axis=-1)
    kl = jnp.sum(jnp.exp(lp_clean) * (lp_clean - lp), axis=-1)
    return _ce_sum(lp, tokens_bt, valid_bt), jnp.sum(kl * valid_bt.astype(jnp.float32))


class _Sums:
    """Running sums of one SAE's metrics."""

    def __init__(self, d_sae: int):
        self.n_tok = 0
        self.l0 = self.err = self.cos = self.ratio = self.sum_x2 = 0.0
        self.sum_x = 0.0
        self.fired = np.zeros(d_sae, np.int64)
        self.ce_sae = self.kl_sae = 0.0

    def add(self, x: np.ndarray, f: np.ndarray, x_hat: np.ndarray) -> None:
        self.n_tok += len(x)
        self.l0 += float(np.sum(f != 0))
        self.fired += np.sum(f != 0, axis=0)
        self.err += float(np.sum((x - x_hat) ** 2))
        self.sum_x = self.sum_x + x.sum(0)
        self.sum_x2 += float(np.sum(x**2))
        nx, nh = np.linalg.norm(x, axis=-1), np.linalg.norm(x_hat, axis=-1)
        self.cos += float(np.sum(np.sum(x * x_hat, -1) / np.maximum(nx * nh, 1e-12)))
        self.ratio += float(np.sum(nh / np.maximum(nx, 1e-12)))

    def result(self, ce_clean: float, ce_zero: float, kl_zero: float, n_ce: float, n_kl: float) -> dict:
        n = self.n_tok
        total_var = self.sum_x2 - float(np.sum(np.asarray(self.sum_x) ** 2)) / n
        ev = 1.0 - self.err / total_var
        ce_sae, kl_sae = self.ce_sae / max(n_ce, 1.0), self.kl_sae / max(n_kl, 1.0)
        freq = self.fired / n
        return {
            "n_tokens": n,
            "l0": self.l0 / n,
            "explained_variance": ev,
            "fvu": 1.0 - ev,
            "mse": self.err / n,
            "cossim": self.cos / n,
            "l2_ratio": self.ratio / n,
            "dead_frac": float(np.mean(self.fired == 0)),
            "dense_frac": float(np.mean(freq > 0.1)),
            "ce_clean": ce_clean,
            "ce_sae": ce_sae,
            "ce_zero": ce_zero,
            "ce_loss_score": (ce_zero - ce_sae) / (ce_zero - ce_clean) if ce_zero != ce_clean else None,
            "kl_sae": kl_sae,
            "kl_zero": kl_zero,
            "kl_score": (kl_zero - kl_sae) / kl_zero if kl_zero > 0 else None,
        }


def previous_core_metrics_many(lm, saes, layer: int, tokens_nt: np.ndarray, counted_nt: np.ndarray, *, batch: int = 8,
                      progress=None) -> list[dict]:
    """Core metrics of every SAE in ``saes`` (all at ``layer``) on the held-out contexts
    ``tokens_nt`` (``counted_nt``: which positions are real, non-special tokens; the masking rules
    are SAEBench's, see the module docstring). The residuals, the clean log-probs and the
    zero-ablation floor are computed once per batch and shared by the SAEs: per SAE only the
    spliced upper layers run. ``progress(n)`` is called per batch."""
    sums = [_Sums(sae.d_sae) for sae in saes]
    ce_clean = ce_zero = kl_zero = n_ce = n_kl = 0.0
    for s in range(0, len(tokens_nt), batch):
        toks = jnp.asarray(tokens_nt[s : s + batch])
        valid = counted_nt[s : s + batch]
        vj = jnp.asarray(valid)
        resid = lm.residual(toks, layer)
        lp_clean, c0, n, nk = _clean(lm.params, lm.config, layer, resid, toks, vj)
        c2, k2 = _variant(lm.params, lm.config, layer, lp_clean, jnp.zeros_like(resid), toks, vj)  # every position
        ce_clean += float(c0)
        ce_zero += float(c2)
        kl_zero += float(k2)
        n_ce += float(n)
        n_kl += float(nk)
        x = np.asarray(resid)[valid]
        for sae, acc in zip(saes, sums):
            f = np.asarray(sae.encode(x))
            x_hat = np.asarray(sae.decode(f))
            acc.add(x, f, x_hat)
            spliced = np.array(resid)
            spliced[valid] = x_hat
            c1, k1 = _variant(lm.params, lm.config, layer, lp_clean, jnp.asarray(spliced), toks, vj)
            acc.ce_sae += float(c1)
            acc.kl_sae += float(k1)
        if progress is not None:
            progress(len(toks))
    m, mk = max(n_ce, 1.0), max(n_kl, 1.0)
    return [acc.result(ce_clean / m, ce_zero / m, kl_zero / mk, n_ce, n_kl) for acc in sums]


_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **_: _COMPILES.append(event) if event == "/jax/core/compile/backend_compile_duration" else None)


def test_device_metrics_equal_the_previous_values_and_compile_once(tiny_llama):
    rng = np.random.default_rng(1)
    tokens = rng.integers(1, tiny_llama.config.vocab_size, (11, 16)).astype(np.int32)
    counted = rng.random(tokens.shape) > 0.2  # a different count of valid rows in every batch
    counted[:, 0] = False
    saes = [random_sae(tiny_llama.config.d_model, 32, seed=s, arch=a) for s, a in ((4, "jumprelu"), (5, "topk"))]
    want = previous_core_metrics_many(tiny_llama, saes, LAYER, tokens, counted, batch=3)
    core_metrics_many(tiny_llama, saes, LAYER, tokens[:3], counted[:3], batch=3)  # compiles the batch shape
    _COMPILES.clear()
    got = core_metrics_many(tiny_llama, saes, LAYER, tokens, counted, batch=3)  # 4 batches, the last one short
    assert _COMPILES == []  # the same program for every batch, whatever its count of valid rows
    for g, w in zip(got, want):
        assert set(g) == set(w) and g["n_tokens"] == w["n_tokens"] == int(counted.sum())
        for k, v in w.items():
            assert g[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
