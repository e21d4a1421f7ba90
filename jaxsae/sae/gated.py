"""Gated SAE (Rajamanoharan et al. 2024a) as dictionary_learning's ``GatedSAETrainer``.

  u       = (x - b_dec) W_enc                                                   f32[B, F]
  pi_gate = u + b_gate;   pi_mag = exp(r_mag) * u + b_mag
  f       = 1[pi_gate > 0] * ReLU(pi_mag);   x_hat = f W_dec + b_dec
  loss    = mean_b ||x - x_hat||^2 + lambda * warm(t) * mean_b ||ReLU(pi_gate)||_1
            + mean_b ||x - (ReLU(pi_gate) sg(W_dec) + sg(b_dec))||^2            (sg = stop-gradient)

ConstrainedAdam: the gradient component along each decoder row is removed before Adam(0, 0.999)
and rows are renormalised after it; no gradient clipping. Init: W_dec rows random Gaussian unit
directions, W_enc = W_dec^T, all biases and r_mag zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsae.sae.arch import Arch, centred_matmul, fold_scale, matmul, mse, update_since_fired


def init(key, d_in: int, d_sae: int, cfg) -> dict:
    w_fd = jax.random.normal(key, (d_sae, d_in), jnp.float32)
    w_fd = w_fd / jnp.linalg.norm(w_fd, axis=-1, keepdims=True)
    zeros_f = jnp.zeros((d_sae,), jnp.float32)
    return {
        "W_enc": w_fd.T,
        "b_gate": zeros_f,
        "b_mag": zeros_f,
        "r_mag": zeros_f,
        "W_dec": w_fd,
        "b_dec": jnp.zeros((d_in,), jnp.float32),
    }


def gate_and_codes(params, x_bd, cfg=None):
    """(pi_gate f32[B, F], f f32[B, F])."""
    u = centred_matmul(x_bd, params["b_dec"], params["W_enc"], cfg)
    pi_gate = u + params["b_gate"]
    pi_mag = jnp.exp(params["r_mag"]) * u + params["b_mag"]
    f = (pi_gate > 0).astype(u.dtype) * jax.nn.relu(pi_mag)
    return pi_gate, f


def infer(params, aux, x_bd, sparsity, cfg):
    """Inference codes (SAELens "gated")."""
    return gate_and_codes(params, x_bd)[1]


def loss(params, aux, x_bd, sparsity, ctx, cfg, with_auxk=False):
    pi_gate, f = gate_and_codes(params, x_bd, cfg)
    x_hat = matmul(f, params["W_dec"], cfg) + params["b_dec"]
    recon = mse(x_bd, x_hat)
    gate_acts = jax.nn.relu(pi_gate)
    l1 = jnp.mean(jnp.sum(jnp.abs(gate_acts), axis=-1))
    x_hat_gate = matmul(gate_acts, jax.lax.stop_gradient(params["W_dec"]), cfg) + jax.lax.stop_gradient(params["b_dec"])
    aux_recon = mse(x_bd, x_hat_gate)
    total = recon + sparsity * ctx["sparsity_scale"] * l1 + aux_recon
    new_aux = {"since_fired": update_since_fired(aux["since_fired"], jnp.any(f > 0, axis=0), x_bd.shape[0])}
    return total, ({"mse": recon, "l1": l1, "aux": aux_recon}, new_aux, f)


def export(params, aux, sparsity, cfg, scale):
    tensors = fold_scale(params, ("b_gate", "b_mag", "b_dec"), scale)
    return "gated", tensors, {"apply_b_dec_to_input": True}


ARCH = Arch(
    name="gated", init=init, loss=loss, export=export, encode=infer, betas=(0.0, 0.999), clip_norm=None,
    decoder="unit_bare", sparsity_kind="l1",
)
