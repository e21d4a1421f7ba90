"""Core metrics (SAEBench definitions) of an SAE on held-out tokens, through the LLM (the SAE
package itself knows nothing of LLMs).

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
from jaxsae.models import forward, forward_from


def _ce_sum(lp_btv, tokens_bt, valid_bt):
    """Sum of next-token CE over the predictions made from counted positions (t -> t + 1)."""
    ce = -jnp.take_along_axis(lp_btv[:, :-1], tokens_bt[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(ce * valid_bt[:, :-1].astype(jnp.float32))


def _variant_sums(params, cfg, layer, lp_clean, variant_btd, tokens_bt, valid_bt):
    """(sum CE, sum KL(clean || variant) over counted positions) with ``variant_btd`` spliced in at ``layer``."""
    logits, _ = forward_from(params, cfg, variant_btd, layer)
    lp = jax.nn.log_softmax(logits, axis=-1)
    kl = jnp.sum(jnp.exp(lp_clean) * (lp_clean - lp), axis=-1)
    return _ce_sum(lp, tokens_bt, valid_bt), jnp.sum(kl * valid_bt.astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("cfg", "layer", "codecs"))
def _batch_sums(params, cfg, layer, codecs, sae_params, tokens_bt, valid_bt):
    """One batch of contexts: the model's shared sums and every SAE's, all on the device.

    Masks, not boolean indexing: every batch has the same shapes (rows past the data are all
    invalid), so this compiles once per (model, layer, SAE configs, batch shape). Returns
    ``(shared f32[6]: CE clean, CE zero, KL zero, CE count, KL count, non-finite residual entries at
    counted positions; per SAE a dict of sums, ``bad``: its non-finite codes and reconstruction
    entries at counted positions)``."""
    resid = forward(params, cfg, tokens_bt, None, stop_layer=layer)[0]  # f32[B, T, D]
    v_bt = valid_bt.astype(jnp.float32)
    logits, _ = forward_from(params, cfg, resid, layer)
    lp_clean = jax.nn.log_softmax(logits, axis=-1)
    ce_zero, kl_zero = _variant_sums(params, cfg, layer, lp_clean, jnp.zeros_like(resid), tokens_bt, valid_bt)
    v_bt1 = valid_bt[..., None]

    def bad(a):  # non-finite entries of a [B, T, *] array at counted positions
        return jnp.sum(~jnp.isfinite(a) & v_bt1, dtype=jnp.int32)

    shared = jnp.stack([_ce_sum(lp_clean, tokens_bt, valid_bt), ce_zero, kl_zero, jnp.sum(v_bt[:, :-1]), jnp.sum(v_bt),
                        bad(resid).astype(jnp.float32)])
    per_sae = []
    for (encode, decode), p in zip(codecs, sae_params):
        f = encode(p, resid)  # f32[B, T, F]; row-wise, so invalid rows do not change valid ones
        x_hat = decode(p, f)
        fires = (f != 0) & valid_bt[..., None]
        nx, nh = jnp.linalg.norm(resid, axis=-1), jnp.linalg.norm(x_hat, axis=-1)
        ce_sae, kl_sae = _variant_sums(params, cfg, layer, lp_clean, jnp.where(valid_bt[..., None], x_hat, resid),
                                       tokens_bt, valid_bt)
        per_sae.append({
            "fired": jnp.sum(fires, axis=(0, 1), dtype=jnp.int32),
            "scalars": jnp.stack([
                jnp.sum(jnp.sum((resid - x_hat) ** 2, -1) * v_bt),  # err
                jnp.sum(jnp.sum(resid**2, -1) * v_bt),  # sum_x2
                jnp.sum(jnp.sum(resid * x_hat, -1) / jnp.maximum(nx * nh, 1e-12) * v_bt),  # cos
                jnp.sum(nh / jnp.maximum(nx, 1e-12) * v_bt),  # ratio
                ce_sae, kl_sae]),
            "sum_x": jnp.sum(resid * v_bt[..., None], axis=(0, 1)),
            "bad": bad(f) + bad(x_hat),
        })
    return shared, per_sae


def _result(n: float, fired: np.ndarray, sc: np.ndarray, sum_x: np.ndarray, ce_clean: float, ce_zero: float,
            kl_zero: float, n_ce: float, n_kl: float) -> dict:
    """The metrics of one SAE from its summed counts (``fired``: per latent; ``sc``: err, sum_x2,
    cos, ratio, CE, KL)."""
    err, sum_x2, cos, ratio, ce_s, kl_s = (float(v) for v in sc)
    l0 = float(np.sum(fired))
    total_var = sum_x2 - float(np.sum(np.asarray(sum_x, np.float64) ** 2)) / n
    ev = 1.0 - err / total_var
    ce_sae, kl_sae = ce_s / max(n_ce, 1.0), kl_s / max(n_kl, 1.0)
    freq = fired / n
    return {
        "n_tokens": int(n),
        "l0": l0 / n,
        "explained_variance": ev,
        "fvu": 1.0 - ev,
        "mse": err / n,
        "cossim": cos / n,
        "l2_ratio": ratio / n,
        "dead_frac": float(np.mean(fired == 0)),
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
    are SAEBench's, see the module docstring). Per batch one jitted step on the device runs the
    model to ``layer``, the clean and zero-ablated upper layers once, and every SAE's encode,
    decode and spliced upper layers; the per-batch sums stay on the device (a short last batch is
    padded with invalid rows, so one program serves every batch) and come to the host once at
    the end, where they are added up in float64. ``progress(n)`` is called per batch."""
    import jaxsae.sae as S

    tokens_nt, counted_nt = np.asarray(tokens_nt, np.int32), np.asarray(counted_nt, bool)
    N, T = tokens_nt.shape
    B = min(batch, N)
    codecs = tuple((S.encode_fn(s), S.decode_fn(s)) for s in saes)
    params = tuple(s.params for s in saes)
    parts = []
    for s in range(0, N, B):
        n = min(B, N - s)
        tb = np.full((B, T), lm.config.pad_id, np.int32)
        vb = np.zeros((B, T), bool)
        tb[:n], vb[:n] = tokens_nt[s : s + n], counted_nt[s : s + n]
        parts.append(_batch_sums(lm.params, lm.config, int(layer), codecs, params, tb, vb))
        if progress is not None:
            progress(n)
    parts = jax.device_get(parts)  # the one transfer
    shared = np.sum([np.asarray(p[0], np.float64) for p in parts], axis=0)
    ce_clean, ce_zero, kl_zero, n_ce, n_kl, bad_resid = (float(v) for v in shared)
    if bad_resid:
        raise UserError(f"core metrics: the model's residuals at layer {layer} hold NaN or inf on the held-out "
                        "text; load the model in float32 (a low-precision model can overflow)")
    for i, sae in enumerate(saes):
        if sum(int(p[1][i]["bad"]) for p in parts):
            raise UserError(f"core metrics: SAE {i} of {len(saes)} (d_sae={sae.d_sae}) gives NaN or "
                            "inf codes or reconstructions; its weights are not finite: retrain or re-export it")
    m, mk = max(n_ce, 1.0), max(n_kl, 1.0)
    out = []
    for k in range(len(saes)):
        fired = np.sum([p[1][k]["fired"] for p in parts], axis=0, dtype=np.int64)
        sc = np.sum([np.asarray(p[1][k]["scalars"], np.float64) for p in parts], axis=0)
        sum_x = np.sum([np.asarray(p[1][k]["sum_x"], np.float64) for p in parts], axis=0)
        out.append(_result(n_kl, fired, sc, sum_x, ce_clean / m, ce_zero / m, kl_zero / mk, n_ce, n_kl))
    return out


def core_metrics(lm, sae, layer: int, tokens_nt: np.ndarray, counted_nt: np.ndarray, *, batch: int = 8) -> dict:
    """All core metrics of one SAE (see :func:`core_metrics_many`)."""
    return core_metrics_many(lm, [sae], layer, tokens_nt, counted_nt, batch=batch)[0]
