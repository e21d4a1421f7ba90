"""Core metrics (SAEBench definitions) of an SAE on held-out tokens.

- L0: mean number of non-zero latents per token.
- Explained variance: 1 − E‖x − x̂‖² / E‖x − E[x]‖² (pooled over tokens); FVU = 1 − that.
- Cosine similarity between x and x̂; L2 ratio ‖x̂‖ / ‖x‖ (token means).
- Dead / dense latent fractions: never firing / firing on more than 10% of tokens.
- CE-loss score (CE_zero − CE_sae) / (CE_zero − CE_clean) and KL score (KL_zero − KL_sae) / KL_zero,
  splicing the reconstruction (or zeros, the floor) into the residual stream at the SAE's layer
  through the model's upper layers; special/BOS positions keep their original residual.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.models.decoder import forward_from


@functools.partial(jax.jit, static_argnames=("cfg", "layer"))
def _ce_kl(params, cfg, layer, resid_btd, variant_btd, tokens_bt, valid_bt):
    """(sum CE, sum KL(clean || variant), count) over next-token targets of valid positions."""
    clean, _ = forward_from(params, cfg, resid_btd, layer)
    other, _ = forward_from(params, cfg, variant_btd, layer)
    lp_c = jax.nn.log_softmax(clean[:, :-1], axis=-1)
    lp_o = jax.nn.log_softmax(other[:, :-1], axis=-1)
    tgt = tokens_bt[:, 1:]
    w = (valid_bt[:, :-1] & valid_bt[:, 1:]).astype(jnp.float32)
    ce_c = -jnp.take_along_axis(lp_c, tgt[..., None], axis=-1)[..., 0]
    ce_o = -jnp.take_along_axis(lp_o, tgt[..., None], axis=-1)[..., 0]
    kl = jnp.sum(jnp.exp(lp_c) * (lp_c - lp_o), axis=-1)
    return jnp.sum(ce_c * w), jnp.sum(ce_o * w), jnp.sum(kl * w), jnp.sum(w)


def core_metrics(lm, sae, layer: int, tokens_nt: np.ndarray, counted_nt: np.ndarray, *, batch: int = 8) -> dict:
    """All core metrics of ``sae`` on the held-out contexts ``tokens_nt`` (``counted_nt``: which
    positions are real, non-special tokens)."""
    n_tok = 0
    l0 = err = cos = ratio = 0.0
    sum_x = sum_x2 = 0.0
    fired = np.zeros(sae.d_sae, np.int64)
    ce_clean = ce_sae = ce_zero = kl_sae = kl_zero = n_ce = 0.0
    for s in range(0, len(tokens_nt), batch):
        toks = tokens_nt[s : s + batch]
        valid = counted_nt[s : s + batch]
        resid = lm.residual(toks, layer)
        x = np.asarray(resid)[valid]
        f = np.asarray(sae.encode(x))
        x_hat = np.asarray(sae.decode(f))
        n_tok += len(x)
        l0 += float(np.sum(f != 0))
        fired += np.sum(f != 0, axis=0)
        err += float(np.sum((x - x_hat) ** 2))
        sum_x = sum_x + x.sum(0)
        sum_x2 += float(np.sum(x**2))
        nx, nh = np.linalg.norm(x, axis=-1), np.linalg.norm(x_hat, axis=-1)
        cos += float(np.sum(np.sum(x * x_hat, -1) / np.maximum(nx * nh, 1e-12)))
        ratio += float(np.sum(nh / np.maximum(nx, 1e-12)))
        spliced = np.array(resid)
        spliced[valid] = x_hat
        zero = np.array(resid)
        zero[valid] = 0.0
        vj = jnp.asarray(valid)
        c0, c1, k1, n = _ce_kl(lm.params, lm.config, layer, resid, jnp.asarray(spliced), jnp.asarray(toks), vj)
        _, c2, k2, _ = _ce_kl(lm.params, lm.config, layer, resid, jnp.asarray(zero), jnp.asarray(toks), vj)
        ce_clean += float(c0)
        ce_sae += float(c1)
        ce_zero += float(c2)
        kl_sae += float(k1)
        kl_zero += float(k2)
        n_ce += float(n)
    total_var = sum_x2 - float(np.sum(np.asarray(sum_x) ** 2)) / n_tok
    ev = 1.0 - err / total_var
    ce = {k: v / max(n_ce, 1.0) for k, v in dict(clean=ce_clean, sae=ce_sae, zero=ce_zero, kl_sae=kl_sae, kl_zero=kl_zero).items()}
    freq = fired / n_tok
    return {
        "n_tokens": n_tok,
        "l0": l0 / n_tok,
        "explained_variance": ev,
        "fvu": 1.0 - ev,
        "mse": err / n_tok,
        "cossim": cos / n_tok,
        "l2_ratio": ratio / n_tok,
        "dead_frac": float(np.mean(fired == 0)),
        "dense_frac": float(np.mean(freq > 0.1)),
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "ce_loss_score": (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]) if ce["zero"] != ce["clean"] else None,
        "kl_sae": ce["kl_sae"],
        "kl_zero": ce["kl_zero"],
        "kl_score": (ce["kl_zero"] - ce["kl_sae"]) / ce["kl_zero"] if ce["kl_zero"] > 0 else None,
    }
