"""Inference-time encode/decode of SAELens-v6 SAEs ("standard", "topk", "jumprelu", "gated").

These follow SAELens's own forward passes, so an SAE behaves identically here and there:

  sae_in = x - b_dec (when apply_b_dec_to_input) else x
  standard: f = ReLU(sae_in W_enc + b_enc)
  topk:     h = sae_in W_enc + b_enc (times ||W_dec,i|| when rescale_acts_by_decoder_norm);
            f = ReLU of the k largest entries of h per token, 0 elsewhere
  jumprelu: h = sae_in W_enc + b_enc; f = ReLU(h) * 1[h > threshold]
  gated:    u = sae_in W_enc; f = 1[u + b_gate > 0] * ReLU(exp(r_mag) * u + b_mag)
  decode:   x_hat = f W_dec + b_dec (topk with rescaling divides f by ||W_dec,i|| first)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class EncodeStatic:
    """The compile-time part of an SAE's forward pass."""

    arch: str  # an SAELens architecture: standard, topk, jumprelu or gated
    apply_b_dec_to_input: bool = True
    k: int = 0  # topk only
    rescale_acts_by_decoder_norm: bool = False  # topk only


def _sae_in(params, x, s: EncodeStatic):
    return x - params["b_dec"] if s.apply_b_dec_to_input else x


def encode(params, x_nd, s: EncodeStatic):
    """f32[N, F] codes of f32[N, D] inputs."""
    x_nd = x_nd.astype(jnp.float32)
    sae_in = _sae_in(params, x_nd, s)
    if s.arch == "gated":
        u = sae_in @ params["W_enc"]
        gate = (u + params["b_gate"]) > 0
        return gate.astype(u.dtype) * jax.nn.relu(jnp.exp(params["r_mag"]) * u + params["b_mag"])
    h = sae_in @ params["W_enc"] + params["b_enc"]
    if s.arch == "standard":
        return jax.nn.relu(h)
    if s.arch == "jumprelu":
        return jax.nn.relu(h) * (h > params["threshold"]).astype(h.dtype)
    if s.arch == "topk":
        if s.rescale_acts_by_decoder_norm:
            h = h * jnp.linalg.norm(params["W_dec"], axis=-1)
        vals, idx = jax.lax.top_k(h, s.k)
        out = jnp.zeros_like(h)
        rows = jnp.arange(h.shape[0])[:, None]
        return out.at[rows, idx].set(jax.nn.relu(vals))
    raise ValueError(f"unknown SAE architecture {s.arch!r}")


def decode(params, f_nf, s: EncodeStatic):
    """f32[N, D] reconstruction of f32[N, F] codes."""
    if s.arch == "topk" and s.rescale_acts_by_decoder_norm:
        f_nf = f_nf / jnp.linalg.norm(params["W_dec"], axis=-1)
    return f_nf @ params["W_dec"] + params["b_dec"]


def decoder_rows(params, features_f, s: EncodeStatic):
    """f32[F, D]: what one unit of each feature adds to the reconstruction, decode(e_f) − decode(0)
    (the decoder is affine): its W_dec row, divided by the row's norm for rescaling TopK SAEs."""
    rows = jnp.take(params["W_dec"], features_f, axis=0)
    if s.arch == "topk" and s.rescale_acts_by_decoder_norm:
        rows = rows / jnp.linalg.norm(rows, axis=-1, keepdims=True)
    return rows


@functools.lru_cache(maxsize=None)
def encode_for(s: EncodeStatic):
    """A pure ``(params, x) -> f`` for this static config; the same object for equal configs."""

    def fn(params, x):
        lead = x.shape[:-1]
        return encode(params, x.reshape(-1, x.shape[-1]), s).reshape(*lead, -1)

    return fn


@functools.lru_cache(maxsize=None)
def decode_for(s: EncodeStatic):
    """A pure ``(params, f) -> x_hat`` for this static config; the same object for equal configs."""

    def fn(params, f):
        lead = f.shape[:-1]
        return decode(params, f.reshape(-1, f.shape[-1]), s).reshape(*lead, -1)

    return fn


@functools.lru_cache(maxsize=None)
def jitted(s: EncodeStatic):
    """(jit(encode), jit(decode)) for this static config."""
    return jax.jit(encode_for(s)), jax.jit(decode_for(s))
