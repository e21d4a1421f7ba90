"""ReLU SAE, Anthropic April-2024 update (dictionary_learning ``StandardTrainerAprilUpdate``).

  f     = ReLU((x - b_dec) W_enc + b_enc)                       f32[B, F]
  x_hat = f W_dec + b_dec                                       f32[B, D]
  loss  = mean_b ||x - x_hat||^2 + lambda * warm(t) * mean_b sum_i f_i ||W_dec,i||

No decoder-norm constraint; gradients clipped to global norm 1; Adam(0.9, 0.999).
Init: W_dec rows random Gaussian directions of norm 0.1, W_enc = W_dec^T, b_dec = 0, and b_enc
keeps torch ``nn.Linear``'s default U(-1/sqrt(D), 1/sqrt(D)) (dictionary_learning never zeroes it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsae.sae.arch import Arch, centred_matmul, fold_scale, matmul, mse, update_since_fired


def init(key, d_in: int, d_sae: int, cfg) -> dict:
    k_w, k_b = jax.random.split(key)
    w_df = jax.random.normal(k_w, (d_in, d_sae), jnp.float32)
    w_df = w_df / jnp.linalg.norm(w_df, axis=0, keepdims=True) * 0.1
    bound = 1.0 / jnp.sqrt(d_in)
    return {
        "W_enc": w_df,
        "b_enc": jax.random.uniform(k_b, (d_sae,), jnp.float32, -bound, bound),
        "W_dec": w_df.T,
        "b_dec": jnp.zeros((d_in,), jnp.float32),
    }


def encode(params, x_bd, cfg=None):
    return jax.nn.relu(centred_matmul(x_bd, params["b_dec"], params["W_enc"], cfg) + params["b_enc"])


def infer(params, aux, x_bd, sparsity, cfg):
    """Inference codes (SAELens "standard")."""
    return encode(params, x_bd)


def loss(params, aux, x_bd, sparsity, ctx, cfg, with_auxk=False):
    f_bf = encode(params, x_bd, cfg)
    x_hat = matmul(f_bf, params["W_dec"], cfg) + params["b_dec"]
    recon = mse(x_bd, x_hat)
    dec_norm_f = jnp.linalg.norm(params["W_dec"], axis=-1)
    l1 = jnp.mean(jnp.sum(f_bf * dec_norm_f, axis=-1))
    total = recon + sparsity * ctx["sparsity_scale"] * l1
    new_aux = {"since_fired": update_since_fired(aux["since_fired"], jnp.any(f_bf > 0, axis=0), x_bd.shape[0])}
    return total, ({"mse": recon, "l1": l1}, new_aux, f_bf)


def export(params, aux, sparsity, cfg, scale):
    tensors = fold_scale(params, ("b_enc", "b_dec"), scale)
    return "standard", tensors, {"apply_b_dec_to_input": True}


ARCH = Arch(
    name="relu", init=init, loss=loss, export=export, encode=infer, betas=(0.9, 0.999), clip_norm=1.0,
    decoder="free", sparsity_kind="l1",
)
