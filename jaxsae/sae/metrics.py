"""Core metrics (SAEBench definitions) of an SAE on held-out tokens.

- L0: mean number of non-zero latents per token.
- Explained variance: 1 − E‖x − x̂‖² / E‖x − E[x]‖² (pooled over tokens); FVU = 1 − that.
- Cosine similarity between x and x̂; L2 ratio ‖x̂‖ / ‖x‖ (token means).
- Dead / dense latent fractions: never firing / firing on more than 10% of tokens.
- CE-loss score (CE_zero − CE_sae) / (CE_zero − CE_clean) and KL score (KL_zero − KL_sae) / KL_zero,
  splicing the reconstruction (or zeros, the floor) into the residual stream at the SAE's layer
  through the model's upper layers. As SAEBench's core evaluation (``get_recons_loss`` with
  ``exclude_special_tokens_from_reconstruction``, the paper's setting):
  * the SAE splice replaces counted positions only (special/BOS positions keep their residual);
  * the zero-ablation floor zeroes the residual at *every* position, special ones included;
  * CE is averaged over the next-token predictions made *from* counted positions (position t
    predicts token t+1; the target itself may be special), and KL(clean ‖ variant) over every
    counted position, the last one included.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import UserError
from jaxsae.models.decoder import forward_from


def _ce_sum(lp_btv, tokens_bt, valid_bt):
    """Sum of next-token CE over the predictions made from counted positions (t -> t + 1)."""
    ce = -jnp.take_along_axis(lp_btv[:, :-1], tokens_bt[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(ce * valid_bt[:, :-1].astype(jnp.float32))


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


def core_metrics_many(lm, saes, layer: int, tokens_nt: np.ndarray, counted_nt: np.ndarray, *, batch: int = 8,
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
        if not np.isfinite(x).all():
            raise UserError(f"core metrics: the model's residuals at layer {layer} hold NaN or inf on the held-out "
                            "text; load the model in float32 (a low-precision model can overflow)")
        for i, (sae, acc) in enumerate(zip(saes, sums)):
            f = np.asarray(sae.encode(x))
            x_hat = np.asarray(sae.decode(f))
            if not (np.isfinite(f).all() and np.isfinite(x_hat).all()):
                raise UserError(f"core metrics: SAE {i} of {len(saes)} (d_sae={sae.d_sae}) gives NaN or "
                                "inf codes or reconstructions; its weights are not finite: retrain or re-export it")
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


def core_metrics(lm, sae, layer: int, tokens_nt: np.ndarray, counted_nt: np.ndarray, *, batch: int = 8) -> dict:
    """All core metrics of one SAE (see :func:`core_metrics_many`)."""
    return core_metrics_many(lm, [sae], layer, tokens_nt, counted_nt, batch=batch)[0]
