"""What every training architecture provides, and the static hyperparameters they share.

An architecture is a set of pure functions over one SAE's parameter pytree (the trainer vmaps them
over a stack of SAEs). Parameters use the SAELens layout from the start (W_enc f32[D, F],
W_dec f32[F, D], ...), so export only folds the activation scale back in.

Inference (what the exported SAELens SAE computes, in training units): ``encode(params, aux, x_bd,
sparsity, cfg) -> f_bf`` and the shared :func:`decode`.

Loss signature (one SAE, one batch)::

    loss(params, aux, x_bd, sparsity, ctx, cfg, with_auxk) -> (total, (terms, new_aux, f_bf))

  params     dict of arrays (see each module's ``init``)
  aux        non-trained state: ``since_fired`` int32[F] (tokens since each latent last fired) and,
             for the TopK family, the inference ``threshold`` f32[] EMA
  x_bd       f32[B, D] normalised activations
  sparsity   f32[] this SAE's sparsity setting: L1 coefficient (relu, gated), k (topk family) or
             target L0 (jumprelu)
  ctx        dict of traced scalars: ``step`` int32, ``sparsity_scale`` f32 (coefficient warm-up)
  with_auxk  static bool; False lets the trainer skip the AuxK matmuls when no latent can be dead
  terms      dict of named f32[] loss terms (logged), new_aux the updated aux, f_bf the codes.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

# The paper's six sparsity levels (Wang et al. 2025, App. A; SAEBench demo config for the L1 grids),
# ordered sparse -> dense: level i holds the i-th sparsest SAE of every architecture ("matched
# sparsity ranks"), so the L1 grids run in *descending* order (a larger L1 coefficient is sparser).
PAPER_L0 = (50, 80, 160, 320, 520, 820)
PAPER_L1 = {
    "relu": (0.06, 0.04, 0.03, 0.02, 0.015, 0.012),
    "gated": (0.08, 0.06, 0.04, 0.024, 0.018, 0.012),
}


@dataclass(frozen=True)
class ArchConfig:
    """Static (compile-time) hyperparameters shared by all SAEs of one architecture in a sweep."""

    dead_tokens: int = 10_000_000
    """A latent is dead when it has not fired for this many tokens (AuxK target set, dead fraction)."""
    auxk_alpha: float = 1 / 32
    """AuxK loss coefficient (TopK family)."""
    threshold_beta: float = 0.999
    """EMA decay of the TopK-family inference threshold."""
    threshold_start_step: int = 1000
    """The threshold EMA is updated on steps > this one."""
    jumprelu_bandwidth: float = 0.001
    """Rectangle-kernel width epsilon of the JumpReLU pseudo-gradients."""
    jumprelu_theta_init: float = 0.001
    """Initial JumpReLU threshold (dictionary_learning, 'Appendix I')."""
    jumprelu_sparsity_coef: float = 1.0
    """Coefficient of the target-L0 penalty (L0/target - 1)^2."""
    matryoshka_fractions: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2 + 1 / 32)
    """Matryoshka group fractions of d_sae (the last group takes the remainder)."""
    matryoshka_weights: tuple[float, ...] | None = None
    """Per-group loss weights; None = 1/n_groups each (dictionary_learning default)."""
    matmul_dtype: str = "float32"
    """Operand dtype of the training encoder / decoder matmuls ("float32" | "bfloat16"): bf16
    operands with f32 accumulation and f32 results, forward and backward (see :func:`matmul`);
    parameters, optimiser state and every other operation stay f32."""

    def replace(self, **kw) -> "ArchConfig":
        return dataclasses.replace(self, **kw)


@dataclass(frozen=True)
class Arch:
    """One training architecture: pure functions plus its optimiser recipe."""

    name: str
    init: Callable  # (key, d_in, d_sae, cfg) -> params
    loss: Callable  # see module docstring
    export: Callable  # (params, aux, sparsity, cfg, scale) -> (sae_lens_arch, tensors, cfg_extra)
    encode: Callable  # (params, aux, x_bd, sparsity, cfg) -> f_bf: the codes the exported SAE computes,
    #                   in training units (exported encode(x) == encode(x / scale) * scale)
    betas: tuple[float, float]  # Adam (beta1, beta2)
    clip_norm: float | None  # global gradient-norm clip, None = no clipping
    decoder: str  # "free" | "unit" (set_decoder_norm_to_unit_norm, eps) | "unit_bare" (ConstrainedAdam)
    sparsity_kind: str  # "l1" | "k" | "target_l0"
    gm_init: bool = False  # b_dec <- geometric median of the first batch
    has_threshold_ema: bool = False  # aux carries an inference threshold EMA
    has_auxk: bool = False  # loss has an AuxK term the trainer may skip when nothing can be dead


def init_aux(arch: Arch, d_sae: int) -> dict:
    """Fresh non-trained state of one SAE."""
    aux = {"since_fired": jnp.zeros((d_sae,), jnp.int32)}
    if arch.has_threshold_ema:
        aux["threshold"] = jnp.float32(-1.0)
    return aux


_SATURATE = 1 << 30


def update_since_fired(since_f, fired_f, n_tokens: int):
    """Tokens since each latent last fired: reset where it fired this batch, else add the batch."""
    grown = jnp.minimum(since_f + n_tokens, _SATURATE)
    return jnp.where(fired_f, 0, grown).astype(jnp.int32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _low_matmul(a, b, dtype):
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def _low_matmul_fwd(a, b, dtype):
    a_low, b_low = a.astype(dtype), b.astype(dtype)
    return jnp.matmul(a_low, b_low, preferred_element_type=jnp.float32), (a_low, b_low)


def _low_matmul_bwd(dtype, res, g):
    a_low, b_low = res
    g_low = g.astype(dtype)
    da = jnp.matmul(g_low, b_low.T, preferred_element_type=jnp.float32)
    db = jnp.matmul(a_low.T, g_low, preferred_element_type=jnp.float32)
    return da, db


_low_matmul.defvjp(_low_matmul_fwd, _low_matmul_bwd)


def matmul(a, b, cfg=None):
    """f32[rows, out] = a [rows, in] @ b [in, out] in ``cfg.matmul_dtype`` (f32 without a cfg). For
    "bfloat16" both operands are rounded to bf16 and the product accumulates in f32
    (``preferred_element_type``); the backward matmuls (da = g b^T, db = a^T g) take bf16 operands
    too and also return f32, so weight gradients are f32 sums over the batch."""
    dtype = getattr(cfg, "matmul_dtype", "float32")
    if dtype == "float32":
        return a @ b
    return _low_matmul(a, b, jnp.dtype(dtype))


_ROWS: contextvars.ContextVar = contextvars.ContextVar("jaxsae_decoded_rows", default=None)


@contextlib.contextmanager
def decoded_rows(sharding):
    """While tracing a training step over a mesh: lay every reconstruction [B, D] out as
    ``sharding`` where :func:`mse` takes its error (the batch's rows split over
    the devices that hold the latent shards, see :func:`jaxsae.train.trainer.make_step`). Each
    device then holds the sum of the shards' partial reconstructions for its rows only (a
    reduce-scatter, which libtpu runs as a ring of collective-permutes, instead of an all-reduce),
    and the elementwise error, loss and their gradient run on those rows, not on the whole batch
    on every device."""
    token = _ROWS.set(sharding)
    try:
        yield
    finally:
        _ROWS.reset(token)


def rows_laid_out(x_bd):
    """``x_bd`` under the layout of :func:`decoded_rows` (unchanged outside it)."""
    sharding = _ROWS.get()
    return x_bd if sharding is None else jax.lax.with_sharding_constraint(x_bd, sharding)


def centred_matmul(x_bd, b_dec_d, w_df, cfg=None):
    """f32[B, F] = (x - b_dec) W_enc, the encoder of the architectures that centre their input.

    The same numbers as ``matmul(x_bd - b_dec_d, w_df, cfg)``; only b_dec's gradient is taken
    another way. Autodiff of that product gives b_dec's gradient as -Σ_b (g_b W_enc^T): a [B, D]
    product first, which on a mesh whose devices hold slices of F is a [B, D] all-reduce before
    the sum over b. Here it is -(Σ_b g_b) W_enc^T, an [F] @ [F, D] product: b_dec enters the
    value through ``stop_gradient`` and the gradient through a second product of an exactly zero
    row, (b_dec - stop_gradient(b_dec)) W_enc, which adds +0 to the value."""
    fixed = jax.lax.stop_gradient(b_dec_d)
    return matmul(x_bd - fixed, w_df, cfg) - matmul((b_dec_d - fixed)[None, :], w_df, cfg)


def decode(params, f_bf):
    """x_hat f32[B, D] = f W_dec + b_dec (every architecture; exported decode(f) == decode(f / scale) * scale)."""
    return f_bf @ params["W_dec"] + params["b_dec"]


def mse(x_bd, x_hat_bd):
    """Mean over tokens of the squared error summed over the model width (the reconstruction
    ``x_hat_bd`` laid out by :func:`rows_laid_out`: every recipe's decoder output meets its
    error here)."""
    return jnp.mean(jnp.sum(jnp.square(x_bd - rows_laid_out(x_hat_bd)), axis=-1))


def fold_scale(tensors: dict, names, scale: float) -> dict:
    """Multiply the named bias/threshold tensors by the activation scale (dictionary_learning's
    ``scale_biases``): an SAE trained on x / scale then reads raw x and returns raw x-hat."""
    out = dict(tensors)
    for n in names:
        out[n] = out[n] * scale
    return out


_FOLD_ENCODER_SIDE = {
    # SAELens architecture -> the [F] tensors that scale with the codes (besides W_enc's columns)
    "standard": ("b_enc",),
    "jumprelu": ("b_enc", "threshold"),
    "gated": ("b_gate", "b_mag"),  # gate: 1[y + b_gate > 0] keeps its sign; r_mag is a log-gain, unchanged
}


def fold_decoder_norms(sae_arch: str, tensors: dict) -> tuple[dict, np.ndarray]:
    """Unit decoder rows without changing the SAE's function (dictionary_learning's
    ``normalize_decoder``, SAEBench's ReLU loader, the paper's Eq. 1): with n_f = ||W_dec[f]||,
    W_dec[f] /= n_f and W_enc[:, f], the encoder biases and the JumpReLU threshold *= n_f, so every
    code becomes n_f · f (ReLU, JumpReLU and the gate are positively homogeneous) and f W_dec is
    unchanged. A zero row (n_f = 0) is left as it is.

    ``tensors``: SAELens-layout arrays of ``sae_arch`` ("standard", "jumprelu", "gated"; "topk" is
    returned unchanged: its rows are unit by the training constraint, and scaling pre-activations
    per latent would change which k are kept). Returns (folded tensors, n_f f32[F] before folding)."""
    w_dec = np.asarray(tensors["W_dec"], np.float32)
    n_f = np.linalg.norm(w_dec.astype(np.float64), axis=1).astype(np.float32)
    if sae_arch not in _FOLD_ENCODER_SIDE:
        return dict(tensors), n_f
    safe = np.where(n_f > 0, n_f, 1.0).astype(np.float32)
    out = dict(tensors)
    out["W_dec"] = jnp.asarray(w_dec / safe[:, None])
    out["W_enc"] = jnp.asarray(np.asarray(tensors["W_enc"], np.float32) * safe[None, :])
    for name in _FOLD_ENCODER_SIDE[sae_arch]:
        out[name] = jnp.asarray(np.asarray(tensors[name], np.float32) * safe)
    return out, n_f
