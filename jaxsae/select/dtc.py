"""Delta Token Confidence (ΔTC) and the output score, for every latent of an SAE, batched.

For a neutral prefix s ("From my experience,") and a feature f, both scores read the next-token
distribution after s when f is amplified at the SAE's layer, at the last prefix position:

- ``mode="additive"`` (default; Arad et al.'s hook): encode the block output x with the SAE, add
  α · max_j a_j (the largest activation at that position) to a_f, decode, and add back the SAE
  error x − x̂. For a linear decoder this is x + α · max_j a_j · d_f, with d_f = decode(e_f) − decode(0)
  (the raw decoder row).
- ``mode="decoder"``: x + α · m_f · v_f with v_f the unit decoder direction and m_f the feature's
  maximum activation over harvested tokens (``max_acts``).

ΔC_k(f) = C_k(p_int) − C_k(p_base), C_k(p) = −(1/k) Σ log p_(i) over the k largest probabilities.
Output score (Arad et al.): with T_f the top-20 logit-lens tokens of f's decoder direction
(final norm + unembedding), (1 − best rank of T_f under p_int / |V|) · max_{t ∈ T_f} p_int(t).

The kernel runs the prefix once: keys/values of the first P−1 tokens for every layer are cached,
the last token is run through blocks 0..L once, and then only that single position goes through
blocks L+1..N−1 for a batch of features at a time (attending to the shared cache), jitted.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.select.config import SelectConfig
from jaxsae.errors import UserError
from jaxsae.models.decoder import forward, forward_from, init_cache, unembed

DEFAULT_PREFIX = SelectConfig.prefix
MODES = ("additive", "decoder")


@functools.partial(jax.jit, static_argnames=("cfg", "layer"))
def prefix_state(params, cfg, prefix_1p, layer: int):
    """(KV cache of the first P−1 prefix tokens [1 x P slots], residual of the last token after
    block ``layer`` f32[D], base logits at the last position f32[V])."""
    P = prefix_1p.shape[1]
    cache = init_cache(cfg, 1, P, params["embed_vd"].dtype)
    if P > 1:
        _, cache = forward(params, cfg, prefix_1p[:, :-1], cache=cache, write_at=0, cache_empty=True)
    last = prefix_1p[:, -1:]
    x_l, _ = forward(params, cfg, last, cache=cache, write_at=P - 1, stop_layer=layer, update_cache=False)
    base, _ = forward_from(params, cfg, x_l, layer, cache=cache, write_at=P - 1, update_cache=False)
    return cache, x_l[0, 0], base[0, 0]


def confidence(logits_bv, k: int):
    """C_k = −(1/k) Σ of the k largest log-probabilities, per row, from logits: log p = z − lse(z),
    so C_k = lse(z) − mean of the k largest z (no [B, V] log-softmax is materialised)."""
    return _confidence(logits_bv, jax.nn.logsumexp(logits_bv, axis=-1), k)


def _confidence(logits_bv, lse_b, k: int):
    top = jnp.max(logits_bv, axis=-1) if k == 1 else jnp.mean(jax.lax.top_k(logits_bv, k)[0], axis=-1)
    return lse_b - top


@functools.partial(jax.jit, static_argnames=("cfg", "layer", "k"))
def score_batch(params, cfg, layer: int, cache, x_d, delta_fd, lens_tokens_ft, base_logits_v, k: int):
    """ΔC_k and output score for a batch of interventions x + delta_f at the prefix's last position.

    ``lens_tokens_ft``: int32[F, 20] logit-lens tokens of each feature for the output score (None:
    ΔC_k only, and the second result is None)
    Ranks and probabilities are read from the logits (a softmax shifts a row by one constant)."""
    P = cache.valid_bs.shape[1]
    x = (x_d[None, :] + delta_fd)[:, None, :]  # [F, 1, D]
    logits, _ = forward_from(params, cfg, x, layer, cache=cache, write_at=P - 1, update_cache=False)
    z = logits[:, 0]  # [F, V]
    lse = jax.nn.logsumexp(z, axis=-1)
    dc = _confidence(z, lse, k) - confidence(base_logits_v[None], k)
    if lens_tokens_ft is None:  # ΔTC alone
        return dc, None
    z_best = jnp.max(jnp.take_along_axis(z, lens_tokens_ft, axis=1), axis=1)  # best of the 20 lens tokens
    rank = jnp.sum(z > z_best[:, None], axis=1)  # 0 = the most likely token
    p_best = jnp.exp(z_best - lse)
    out = (1.0 - rank / z.shape[-1]) * p_best
    return dc, out


@functools.partial(jax.jit, static_argnames=("cfg", "n"))
def logit_lens_tokens(params, cfg, dirs_fd, n: int = 20):
    """int32[F, n]: the top-n tokens of softmax(unembed(final_norm(d_f))) per direction."""
    logits = unembed(params, cfg, dirs_fd[:, None, :].astype(params["embed_vd"].dtype))[:, 0]
    return jax.lax.top_k(logits, n)[1].astype(jnp.int32)


def decoder_rows(sae, features: np.ndarray) -> jax.Array:
    """d_f = decode(e_f) − decode(0): the feature's contribution per unit activation, f32[F, D]
    (a gather of decoder rows; no decode of one-hot codes)."""
    from jaxsae.sae.inference import decoder_rows as rows

    return rows(sae.params, jnp.asarray(features), sae.static)


def _batch_size(cfg, requested: int | None, n: int) -> int:
    """Features per batch: at most ``requested`` (default: logits of one batch <= 256 MB, and at
    most 1024), spread evenly over the batches (a multiple of 8) so the last is not mostly padding."""
    cap = int(requested) if requested else int(max(8, min(1024, (1 << 26) // cfg.vocab_size)))
    n_batches = -(-max(n, 1) // cap)
    even = -(-max(n, 1) // n_batches)
    return cap if requested else min(cap, -(-even // 8) * 8)


def feature_scores(
    lm,
    sae,
    layer: int,
    *,
    prefix: str = DEFAULT_PREFIX,
    alpha: float = 10.0,
    k: int = 1,
    features: Sequence[int] | None = None,
    mode: str = "additive",
    max_acts: np.ndarray | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    output_score: bool = True,
) -> dict[str, np.ndarray]:
    """ΔC_k and output score of each feature (all latents when ``features`` is None).

    Returns {"features": int[F], "delta_tc": f32[F], "output_score": f32[F]} (without
    "output_score", and without its logit-lens pass, when ``output_score`` is False)."""
    if mode not in MODES:
        raise UserError(f"unknown ΔTC mode {mode!r}; use one of {', '.join(MODES)}")
    if sae.d_in != lm.config.d_model:
        raise UserError(
            f"the SAE reads d_in={sae.d_in} but the model's residual is d_model={lm.config.d_model}; "
            "use the SAE trained on this model"
        )
    layer = lm._check_layer(layer)
    if k < 1:
        raise UserError("k must be >= 1 (the number of top probabilities in C_k)")
    feats = np.arange(sae.d_sae) if features is None else np.asarray(features, dtype=np.int64)
    if feats.size and (feats.min() < 0 or feats.max() >= sae.d_sae):
        raise UserError(f"feature ids must lie in [0, {sae.d_sae}); got {feats.min()}..{feats.max()}")
    if mode == "decoder":
        if max_acts is None:
            raise UserError("mode='decoder' needs max_acts (per-feature maximum activations from the statistics pass)")
        max_acts = np.asarray(max_acts, np.float32)
        if max_acts.shape != (sae.d_sae,):
            raise UserError(f"max_acts must have shape ({sae.d_sae},), got {max_acts.shape}")
    cfg, params = lm.config, lm.params
    prefix_ids = np.asarray([lm.token_ids(prefix)], np.int32)
    cache, x_d, base = prefix_state(params, cfg, jnp.asarray(prefix_ids), layer)
    amax = float(jnp.max(sae.encode(x_d[None])[0]))
    bs = _batch_size(cfg, batch_size, len(feats))
    dtc = np.zeros(len(feats), np.float32)
    out = np.zeros(len(feats), np.float32)
    batches = range(0, len(feats), bs)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="ΔTC", unit="batch", leave=False)
    for s in batches:
        idx = feats[s : s + bs]
        n = len(idx)
        padded = np.concatenate([idx, np.full(bs - n, idx[0])]) if n < bs else idx  # one compiled shape
        rows = decoder_rows(sae, padded)
        if mode == "additive":
            delta = alpha * amax * rows
        else:
            unit = rows / jnp.maximum(jnp.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
            delta = alpha * jnp.asarray(max_acts[padded])[:, None] * unit
        lens = logit_lens_tokens(params, cfg, rows) if output_score else None
        d, o = score_batch(params, cfg, layer, cache, x_d, delta, lens, base, k)
        dtc[s : s + n] = np.asarray(d)[:n]
        if output_score:
            out[s : s + n] = np.asarray(o)[:n]
    bad = ~(np.isfinite(dtc) & np.isfinite(out))
    if bad.any():
        raise UserError(f"ΔTC: {int(bad.sum())} of {len(feats)} features score NaN or inf (first: latent "
                        f"{int(feats[bad][0])}); the SAE's decoder rows or the model's logits are not finite "
                        "(re-export the SAE, or load the model in float32)")
    result = {"features": feats, "delta_tc": dtc}
    return {**result, "output_score": out} if output_score else result


def delta_token_confidence(
    lm, sae, layer: int, *, prefix: str = DEFAULT_PREFIX, alpha: float = 10.0, k: int = 1,
    features: Sequence[int] | None = None, mode: str = "additive", max_acts: np.ndarray | None = None,
    batch_size: int | None = None, progress: bool = False,
) -> np.ndarray:
    """ΔC_k per feature, float32[n_features] (see the module docstring); the output score's
    logit-lens pass is skipped."""
    return feature_scores(
        lm, sae, layer, prefix=prefix, alpha=alpha, k=k, features=features, mode=mode, max_acts=max_acts,
        batch_size=batch_size, progress=progress, output_score=False,
    )["delta_tc"]
