"""TopK (Gao et al. 2024), BatchTopK (Bussmann et al. 2024) and Matryoshka BatchTopK SAEs,
as dictionary_learning's ``TopKTrainer`` / ``BatchTopKTrainer`` / ``MatryoshkaBatchTopKTrainer``.

  pre   = ReLU((x - b_dec) W_enc + b_enc)                                   f32[B, F]
  f     = pre * mask;  TopK: the k largest per token;  BatchTopK: the k*B largest of the batch
  x_hat = f W_dec + b_dec
  loss  = mean_b ||x - x_hat||^2 + alpha * AuxK                              (alpha = 1/32)
  AuxK  = mean_b ||e - a W_dec||^2 / mean_b ||e - mean_b e||^2,  e = stop_grad(x - x_hat),
          a = pre restricted to the top-k_aux *dead* latents per token, k_aux = min(D/2, #dead),
          0 when no latent is dead (dead = no firing in ``dead_tokens`` tokens, counted after
          this batch, as in dictionary_learning).
  Matryoshka: loss = mean_g w_g ||x - x_hat_{<=g}||^2 + alpha * AuxK, with x_hat_{<=g} the
          reconstruction from the latents of groups 1..g (cumulative) and AuxK on the full residual.

Unit-norm decoder rows: the gradient component along each row is removed, gradients clipped to
global norm 1, Adam(0.9, 0.999), rows renormalised after the step. Init: W_dec rows uniform random
directions, W_enc = W_dec^T, b_enc = 0, b_dec = geometric median of the first batch.

Inference threshold: an EMA (beta 0.999, updated on steps > 1000) of the smallest positive top-k
activation -- per token then averaged over tokens (TopK; tokens without a positive code are left out
of the average instead of making it +inf) or the batch minimum (BatchTopK, Matryoshka). BatchTopK and
Matryoshka export as JumpReLU SAEs with that threshold on every latent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsae.sae import ops
from jaxsae.sae.arch import Arch, centred_matmul, fold_scale, matmul, mse, update_since_fired


def init(key, d_in: int, d_sae: int, cfg) -> dict:
    w_fd = jax.random.uniform(key, (d_sae, d_in), jnp.float32, -1.0, 1.0)
    w_fd = ops.unit_norm_rows(w_fd, eps=float(jnp.finfo(jnp.float32).eps))
    return {
        "W_enc": w_fd.T,
        "b_enc": jnp.zeros((d_sae,), jnp.float32),
        "W_dec": w_fd,
        "b_dec": jnp.zeros((d_in,), jnp.float32),
    }


def pre_acts(params, x_bd, cfg=None):
    """f32[B, F] post-ReLU encoder pre-activations (before any top-k selection)."""
    return jax.nn.relu(centred_matmul(x_bd, params["b_dec"], params["W_enc"], cfg) + params["b_enc"])


def _k(sparsity):
    return jnp.maximum(jnp.round(sparsity).astype(jnp.int32), 1)


def select_topk(pre_bf, sparsity):
    return pre_bf * jax.lax.stop_gradient(ops.topk_mask(pre_bf, _k(sparsity)))


def select_batch_topk(pre_bf, sparsity):
    return pre_bf * jax.lax.stop_gradient(ops.batch_topk_mask(pre_bf, _k(sparsity) * pre_bf.shape[0]))


def auxk_loss(params, pre_bf, resid_bd, dead_f, d_in: int, cfg=None):
    """The normalised AuxK term (f32[]) for a detached residual ``resid_bd``."""
    e = jax.lax.stop_gradient(resid_bd)
    n_dead = jnp.sum(dead_f.astype(jnp.int32))
    k_aux = jnp.maximum(jnp.minimum(d_in // 2, n_dead), 1)
    mask = jax.lax.stop_gradient(ops.masked_topk_mask(pre_bf, dead_f, k_aux))
    recon = matmul(pre_bf * mask, params["W_dec"], cfg)
    l2 = mse(e, recon)
    denom = jnp.mean(jnp.sum(jnp.square(e - jnp.mean(e, axis=0, keepdims=True)), axis=-1))
    return jnp.where(n_dead > 0, jnp.nan_to_num(l2 / denom, nan=0.0, posinf=0.0, neginf=0.0), 0.0)


def _update_threshold_rows(thr, f_bf, ctx, cfg):
    """TopK: mean over tokens of each token's smallest positive code."""
    pos = f_bf > 0
    row_min = jnp.min(jnp.where(pos, f_bf, jnp.inf), axis=-1)
    has = jnp.any(pos, axis=-1)
    n = jnp.sum(has)
    value = jnp.sum(jnp.where(has, row_min, 0.0)) / jnp.maximum(n, 1)
    return _ema(thr, value, (n > 0) & (ctx["step"] > cfg.threshold_start_step), cfg)


def _update_threshold_batch(thr, f_bf, ctx, cfg):
    """BatchTopK / Matryoshka: the batch's smallest positive code (0 if none)."""
    pos = f_bf > 0
    value = jnp.where(jnp.any(pos), jnp.min(jnp.where(pos, f_bf, jnp.inf)), 0.0)
    return _ema(thr, value, ctx["step"] > cfg.threshold_start_step, cfg)


def _ema(thr, value, active, cfg):
    b = cfg.threshold_beta
    new = jnp.where(thr < 0, value, b * thr + (1.0 - b) * value)
    return jnp.where(active, new, thr).astype(jnp.float32)


def _finish(params, aux, x_bd, pre_bf, f_bf, x_hat, total, terms, ctx, cfg, with_auxk,
            update_threshold):
    since = update_since_fired(aux["since_fired"], jnp.any(f_bf > 0, axis=0), x_bd.shape[0])
    if with_auxk:
        aux_term = auxk_loss(params, pre_bf, x_bd - x_hat, since >= cfg.dead_tokens, x_bd.shape[1], cfg)
        terms["auxk"] = aux_term
        total = total + cfg.auxk_alpha * aux_term
    else:
        terms["auxk"] = jnp.float32(0.0)
    thr = update_threshold(aux["threshold"], jax.lax.stop_gradient(f_bf), ctx, cfg)
    return total, terms, {"since_fired": since, "threshold": thr}


def loss_topk(params, aux, x_bd, sparsity, ctx, cfg, with_auxk=True):
    pre = pre_acts(params, x_bd, cfg)
    f = select_topk(pre, sparsity)
    x_hat = matmul(f, params["W_dec"], cfg) + params["b_dec"]
    recon = mse(x_bd, x_hat)
    total, terms, new_aux = _finish(params, aux, x_bd, pre, f, x_hat, recon, {"mse": recon}, ctx, cfg,
                                    with_auxk, _update_threshold_rows)
    return total, (terms, new_aux, f)


def loss_batchtopk(params, aux, x_bd, sparsity, ctx, cfg, with_auxk=True):
    pre = pre_acts(params, x_bd, cfg)
    f = select_batch_topk(pre, sparsity)
    x_hat = matmul(f, params["W_dec"], cfg) + params["b_dec"]
    recon = mse(x_bd, x_hat)
    total, terms, new_aux = _finish(params, aux, x_bd, pre, f, x_hat, recon, {"mse": recon}, ctx, cfg,
                                    with_auxk, _update_threshold_batch)
    return total, (terms, new_aux, f)


def matryoshka_groups(d_sae: int, cfg) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Group sizes (int(frac * d_sae), remainder last) and weights (default 1/n each)."""
    fr = cfg.matryoshka_fractions
    sizes = [int(f * d_sae) for f in fr[:-1]]
    sizes.append(d_sae - sum(sizes))
    weights = cfg.matryoshka_weights or tuple(1.0 / len(sizes) for _ in sizes)
    return tuple(sizes), tuple(weights)


def loss_matryoshka(params, aux, x_bd, sparsity, ctx, cfg, with_auxk=True):
    pre = pre_acts(params, x_bd, cfg)
    f = select_batch_topk(pre, sparsity)
    sizes, weights = matryoshka_groups(f.shape[-1], cfg)
    x_hat = jnp.broadcast_to(params["b_dec"], x_bd.shape)
    group_losses = []
    start = 0
    for size, w in zip(sizes, weights):
        x_hat = x_hat + matmul(f[:, start:start + size], params["W_dec"][start:start + size], cfg)
        group_losses.append(mse(x_bd, x_hat) * w)
        start += size
    recon = jnp.mean(jnp.stack(group_losses))
    terms = {"mse": mse(x_bd, x_hat), "mse_groups": recon}
    total, terms, new_aux = _finish(params, aux, x_bd, pre, f, x_hat, recon, terms, ctx, cfg,
                                    with_auxk, _update_threshold_batch)
    return total, (terms, new_aux, f)


def infer_topk(params, aux, x_bd, sparsity, cfg):
    """Inference codes of TopK: the k largest per token (SAELens "topk"; the threshold is not used)."""
    return select_topk(pre_acts(params, x_bd), sparsity)


def infer_threshold(params, aux, x_bd, sparsity, cfg):
    """Inference codes of BatchTopK / Matryoshka: pre-activations above the learned global threshold
    (0 before it was first set), as the exported JumpReLU SAE computes them."""
    pre = pre_acts(params, x_bd)
    return jnp.where(pre > jnp.maximum(aux["threshold"], 0.0), pre, 0.0)


def export_topk(params, aux, sparsity, cfg, scale):
    tensors = fold_scale(params, ("b_enc", "b_dec"), scale)
    thr = float(aux["threshold"])
    extra = {"apply_b_dec_to_input": True, "k": int(round(float(sparsity))),
             "rescale_acts_by_decoder_norm": False,
             "_threshold": thr * scale if thr >= 0 else None}
    return "topk", tensors, extra


def export_as_jumprelu(params, aux, sparsity, cfg, scale):
    tensors = fold_scale(params, ("b_enc", "b_dec"), scale)
    thr = max(float(aux["threshold"]), 0.0) * scale
    tensors["threshold"] = jnp.full(params["b_enc"].shape, thr, jnp.float32)
    return "jumprelu", tensors, {"apply_b_dec_to_input": True, "_threshold": thr,
                                 "_k": int(round(float(sparsity)))}


_COMMON = dict(betas=(0.9, 0.999), clip_norm=1.0, decoder="unit", sparsity_kind="k", gm_init=True,
               has_threshold_ema=True, has_auxk=True)
TOPK = Arch(name="topk", init=init, loss=loss_topk, export=export_topk, encode=infer_topk, **_COMMON)
BATCHTOPK = Arch(name="batchtopk", init=init, loss=loss_batchtopk, export=export_as_jumprelu, encode=infer_threshold,
                 **_COMMON)
MATRYOSHKA = Arch(name="matryoshka", init=init, loss=loss_matryoshka, export=export_as_jumprelu,
                  encode=infer_threshold, **_COMMON)
