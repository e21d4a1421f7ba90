"""Next-token scores: the log-probabilities of a few candidate tokens at one position of each row,
and the keys/values of a prompt prefix shared by many rows, computed once.

Both local judges read their verdict this way (the AxBench rating judge: the digits "0"/"1"/"2"
after ``Rating: [[``; the AutoInterp detector: "yes"/"no"), and ΔTC runs its interventions on top
of a prefix's keys/values. :meth:`jaxsae.models.LM.next_token_logprobs` and
:meth:`jaxsae.models.LM.prefix` batch these kernels.

Rows are right-padded: row b's real tokens are ``tokens_bt[b, :n_b]`` and ``last_b[b] = n_b - 1``.
Only those B positions go through the final norm and the unembedding (no [B, T, V] logits).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxsae.models.config import ModelConfig
from jaxsae.models.decoder import KVCache, _Ctx, embed, forward, init_cache, run_layers, unembed


def _logprobs_at(params, cfg: ModelConfig, x_btd, last_b, cand_c):
    """f32[B, C]: log-softmax over the vocabulary at position ``last_b`` of each row, at ``cand_c``."""
    x_b1d = jnp.take_along_axis(x_btd, last_b[:, None, None], axis=1)
    x_b1d = x_b1d.astype(params["embed_vd"].dtype)  # back to the activation dtype, as lm.logits
    logp_bv = jax.nn.log_softmax(unembed(params, cfg, x_b1d)[:, 0, :], axis=-1)
    return jnp.take(logp_bv, cand_c, axis=1)


@functools.partial(jax.jit, static_argnames=("cfg",))
def logprobs_plain(params, cfg: ModelConfig, tokens_bt, mask_bt, last_b, cand_c):
    """f32[B, C]: log p(``cand_c``) of the token after position ``last_b`` of each right-padded row
    (one forward through every block)."""
    x_btd, _ = forward(params, cfg, tokens_bt, mask_bt, stop_layer=cfg.n_layers - 1)
    return _logprobs_at(params, cfg, x_btd, last_b, cand_c)


@functools.partial(jax.jit, static_argnames=("cfg", "slots"))
def prefix_cache(params, cfg: ModelConfig, prefix_1p, mask_1p=None, slots: int | None = None) -> KVCache:
    """Keys/values of a prompt prefix int32[1, P] (``mask_1p`` marks real tokens; left padding
    allowed): a :class:`KVCache` of batch 1 with ``slots`` slots (default P; more leave room for
    tokens written after the prefix)."""
    P = prefix_1p.shape[1]
    cache = init_cache(cfg, 1, P if slots is None else slots, params["embed_vd"].dtype)
    if P == 0:
        return cache
    _, cache = forward(params, cfg, prefix_1p, mask_1p, cache=cache, write_at=0, stop_layer=cfg.n_layers - 1,
                       cache_empty=True)
    return cache


@functools.partial(jax.jit, static_argnames=("cfg",))
def logprobs_prefixed(params, cfg: ModelConfig, prefix_kv: KVCache, tokens_bt, mask_bt, last_b, cand_c):
    """As :func:`logprobs_plain` for rows that continue a shared prefix (``prefix_kv`` from
    :func:`prefix_cache`, every slot of it used): only the right-padded continuations run through
    the model, attending to the prefix's keys/values passed once as a batch-1 key set (broadcast
    inside attention, never copied per row)."""
    B, T = tokens_bt.shape
    P = prefix_kv.valid_bs.shape[1]
    before = jnp.sum(prefix_kv.valid_bs.astype(jnp.int32), axis=1, keepdims=True)  # [1, 1] real prefix tokens
    ctx = _Ctx(positions_bt=jnp.maximum(before + jnp.cumsum(mask_bt.astype(jnp.int32), axis=1) - 1, 0),
               q_slot_bt=jnp.broadcast_to(P + jnp.arange(T, dtype=jnp.int32), (B, T)), new_valid_bt=mask_bt,
               cache_slot_bs=jnp.arange(P, dtype=jnp.int32)[None, :], cache_valid_bs=prefix_kv.valid_bs)
    x_btd, _ = run_layers(params, cfg, embed(params, cfg, tokens_bt), ctx, 0, cfg.n_layers, prefix_kv, P,
                          update_cache=False)
    return _logprobs_at(params, cfg, x_btd.astype(jnp.float32), last_b, cand_c)
