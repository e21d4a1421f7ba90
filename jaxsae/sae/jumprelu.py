"""JumpReLU SAE (Rajamanoharan et al. 2024b) as dictionary_learning's ``JumpReluTrainer``.

  z     = x W_enc + b_enc                      (no b_dec subtraction)            f32[B, F]
  f     = JumpReLU_theta(z) = z * H(z - theta)
  x_hat = f W_dec + b_dec
  L0    = mean_b sum_i Step_theta(f_i) = mean_b sum_i H(f_i - theta_i)
  loss  = mean_b ||x - x_hat||^2 + c * warm(t) * (L0 / target_L0 - 1)^2         (c = 1)

Pseudo-gradients with the rectangle kernel K(u) = 1[-1/2 < u < 1/2] and bandwidth eps:
  JumpReLU:  df/dz = H(z - theta);   df/dtheta = -(theta / eps) K((z - theta) / eps)
  Step:      dStep/df = 0;          dStep/dtheta = -(1 / eps) K((f - theta) / eps)
(dictionary_learning applies Step to f, not z; we follow it.) Threshold gradients are summed over
the batch. theta is stored directly (not log theta), initialised to 0.001; eps = 0.001.
Unit-norm decoder rows (parallel-gradient removal, renormalisation), gradient clip 1, Adam(0, 0.999).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsae.sae.arch import Arch, fold_scale, matmul, mse, update_since_fired


def rectangle(u):
    return ((u > -0.5) & (u < 0.5)).astype(u.dtype)


def _theta_grad(theta_f, coef_bf):
    """0 in value, ``coef_bf`` (treated as a constant) as its gradient with respect to theta."""
    return jax.lax.stop_gradient(coef_bf) * (theta_f - jax.lax.stop_gradient(theta_f))


# The pseudo-gradients are written with stop_gradient rather than a custom_vjp: the same
# arithmetic, but it stays one fusion under the trainer's vmap (a vmapped custom_vjp cost 2x here).


def jump_relu(z_bf, theta_f, eps):
    """z * H(z - theta); gradient H(z - theta) for z and the rectangle-kernel pseudo-gradient for theta."""
    gate = jax.lax.stop_gradient((z_bf > theta_f).astype(z_bf.dtype))
    coef = -(theta_f / eps) * rectangle((z_bf - theta_f) / eps)
    return z_bf * gate + _theta_grad(theta_f, coef)


def step(v_bf, theta_f, eps):
    """H(v - theta) with zero gradient for v and the rectangle-kernel pseudo-gradient for theta."""
    v_bf = jax.lax.stop_gradient(v_bf)
    coef = -(1.0 / eps) * rectangle((v_bf - theta_f) / eps)
    return (v_bf > theta_f).astype(v_bf.dtype) + _theta_grad(theta_f, coef)


def init(key, d_in: int, d_sae: int, cfg) -> dict:
    w_fd = jax.random.uniform(key, (d_sae, d_in), jnp.float32, -1.0, 1.0)
    w_fd = w_fd / jnp.linalg.norm(w_fd, axis=-1, keepdims=True)
    return {
        "W_enc": w_fd.T,
        "b_enc": jnp.zeros((d_sae,), jnp.float32),
        "W_dec": w_fd,
        "b_dec": jnp.zeros((d_in,), jnp.float32),
        "threshold": jnp.full((d_sae,), cfg.jumprelu_theta_init, jnp.float32),
    }


def infer(params, aux, x_bd, sparsity, cfg):
    """Inference codes ReLU(z) * H(z - theta) (SAELens "jumprelu" without b_dec subtraction, and
    dictionary_learning's encode): the ReLU matters once a raw threshold has gone negative."""
    z = x_bd @ params["W_enc"] + params["b_enc"]
    return jnp.where(z > params["threshold"], jax.nn.relu(z), 0.0)


def loss(params, aux, x_bd, sparsity, ctx, cfg, with_auxk=False):
    eps = cfg.jumprelu_bandwidth
    z = matmul(x_bd, params["W_enc"], cfg) + params["b_enc"]
    f = jump_relu(z, params["threshold"], eps)
    x_hat = matmul(f, params["W_dec"], cfg) + params["b_dec"]
    recon = mse(x_bd, x_hat)
    l0 = jnp.mean(jnp.sum(step(f, params["threshold"], eps), axis=-1))
    penalty = cfg.jumprelu_sparsity_coef * jnp.square(l0 / sparsity - 1.0)
    total = recon + penalty * ctx["sparsity_scale"]
    new_aux = {"since_fired": update_since_fired(aux["since_fired"], jnp.any(f > 0, axis=0), x_bd.shape[0])}
    return total, ({"mse": recon, "l0_penalty": penalty}, new_aux, f)


def export(params, aux, sparsity, cfg, scale):
    tensors = fold_scale(params, ("b_enc", "b_dec", "threshold"), scale)
    return "jumprelu", tensors, {"apply_b_dec_to_input": False}


ARCH = Arch(
    name="jumprelu", init=init, loss=loss, export=export, encode=infer, betas=(0.0, 0.999), clip_norm=1.0,
    decoder="unit", sparsity_kind="target_l0",
)
