"""Batched generation: one jitted prefill plus a KV-cache decode loop (``lax.while_loop``).

Prompts are left-padded; the loop stops when every sequence has produced an end token or after
``max_new`` tokens. Greedy when ``greedy`` (temperature 0), else plain temperature sampling (no
top-k/top-p; :func:`sample_rows`), from one key per row (``key`` of shape [B]: then a row's
tokens depend only on its own key and prompt, not on which rows share its batch) or from one key
for the batch (split into one per row). A steering :class:`~jaxsae.models.decoder.Edit` applies at every prompt
position and at every decode step. Rows whose prompts repeat run the blocks below the edit once per
distinct prompt (``rows_b``); rows that all continue one prompt prefix can take its keys/values,
computed once, instead of running it (``prefix``, no edit then).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxsae.models.config import ModelConfig
from jaxsae.models.decoder import Edit, KVCache, forward, init_cache, prefill_shared


def prefix_fits_windows(cfg: ModelConfig, slots: int) -> bool:
    """Whether every layer's attention window spans ``slots`` cache slots (then the padding slots
    between a shared prefix and a row's tokens cannot push a key out of a sliding window)."""
    return min(cfg.windows) >= slots


def _mix32(x):
    """lowbias32 (C. Wellons' hash-prospector): a bijective uint32 -> uint32 hash whose output
    bits each flip with probability ≈ 1/2 when any input bit flips."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def unit_interval(h):
    """f32 in (0, 1) from uint32 ``h``: its top 23 bits k give (k + 1/2) / 2^23, exactly (so
    never 0 or 1: 2^-24 ≤ u ≤ 1 − 2^-24)."""
    return ((h >> 9).astype(jnp.float32) + 0.5) * jnp.float32(2.0**-23)


def row_uniforms(key_b, n: int):
    """f32[B, n] in (0, 1): row b's uniforms from its own key ``key_b[b]`` (a [B] key array):
    64 bits (a, b) drawn from the key by threefry, then a keyed hash of each index,
    mix32(mix32(i ^ a) ^ b), through :func:`unit_interval`. One threefry draw per row instead of
    one per element: on a CPU, threefry over a 64 × 49,152 vocabulary costs about a tenth of a
    second per decode step, this hash about a hundredth."""
    ab = jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32))(key_b)  # [B, 2]
    i = jnp.arange(n, dtype=jnp.uint32)
    return unit_interval(_mix32(_mix32(i[None, :] ^ ab[:, :1]) ^ ab[:, 1:]))


def sample_rows(key_b, logits_bv):
    """int32[B]: one token per row drawn from softmax(``logits_bv``) with the row's own key
    (``key_b``, [B] keys), by the exponential race: argmax_v p_v / E_v with p = exp(logits − max)
    and E_v = −log u_v ~ Exp(1) (> 0) from :func:`row_uniforms`. That is the Gumbel-max trick
    (log(p_v / E_v) = logit_v − max − log E_v, and −log E_v is Gumbel) with one exp and one log per
    entry instead of two logs. A row's draw changes only when rounding moves its two best scores
    past each other, so the same row in a batch of another size (whose logits differ in the last
    bits) almost always draws the same token; inverting the CDF with one uniform per row is
    cheaper still, but every one of the vocabulary's boundaries moves with that rounding, and
    128-token samples of a 64-row batch then diverged from the same rows generated 4 at a time in
    25 of 32 concepts."""
    logits_bv = logits_bv.astype(jnp.float32)
    p_bv = jnp.exp(logits_bv - jnp.max(logits_bv, axis=-1, keepdims=True))
    e_bv = -jnp.log(row_uniforms(key_b, logits_bv.shape[-1]))
    return jnp.argmax(p_bv / e_bv, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new", "greedy"))
def generate_tokens(
    params,
    cfg: ModelConfig,
    tokens_bt,
    mask_bt,
    key,
    temperature,
    *,
    max_new: int,
    greedy: bool,
    edit: Edit | None = None,
    rows_b=None,
    prefix: KVCache | None = None,
):
    """New tokens int32[B, max_new] (``cfg.pad_id`` after a sequence's end token) and the number
    of new positions filled before every sequence ended (at most ``max_new``).

    ``rows_b`` (int32[B], optional): row b continues prompt ``rows_b[b]`` of ``tokens_bt`` /
    ``mask_bt`` (then the U distinct prompts [U, T]); the blocks up to the edit's layer then run
    once per distinct prompt (:func:`~jaxsae.models.decoder.prefill_shared`), e.g. for one
    instruction steered by many vectors or factors.

    ``prefix`` (a batch-1 :class:`~jaxsae.models.decoder.KVCache` of P slots, e.g. from
    :func:`~jaxsae.models.score.prefix_cache`; no ``edit`` or ``rows_b`` with it): every row
    continues these prompt tokens, whose keys/values were computed once; they fill each row's cache
    slots [0, P) and ``tokens_bt`` holds only what follows them (positions count on from the
    prefix's real tokens). Slots then run [prefix | row padding | row tokens | new tokens], so a
    sliding-window layer needs P + T + max_new slots within its window
    (:func:`prefix_fits_windows`).

    The prefill unembeds only the last prompt position and yields the first new token; each decode
    forward then yields one more, so ``max_new - 1`` decode forwards run unless all sequences end
    early."""
    T = tokens_bt.shape[1]
    B = tokens_bt.shape[0] if rows_b is None else rows_b.shape[0]
    if max_new == 0:
        return jnp.zeros((B, 0), jnp.int32), jnp.int32(0)
    dtype = params["embed_vd"].dtype
    P = 0 if prefix is None else prefix.valid_bs.shape[1]
    cache = init_cache(cfg, B, P + T + max_new, dtype)
    if prefix is not None:
        if edit is not None or rows_b is not None:
            raise ValueError("a shared prefix's keys/values are computed without an edit, for plain rows only")
        k, v = (jnp.broadcast_to(a.astype(dtype), a.shape[:1] + (B,) + a.shape[2:]) for a in (prefix.k_lbksh, prefix.v_lbksh))
        zero = jnp.int32(0)
        cache = KVCache(jax.lax.dynamic_update_slice(cache.k_lbksh, k, (zero,) * 5),
                        jax.lax.dynamic_update_slice(cache.v_lbksh, v, (zero,) * 5),
                        cache.valid_bs.at[:, :P].set(jnp.broadcast_to(prefix.valid_bs, (B, P))))
        logits, cache = forward(params, cfg, tokens_bt, mask_bt, cache=cache, write_at=P, last_only=True)
    elif rows_b is None:
        logits, cache = forward(params, cfg, tokens_bt, mask_bt, edit=edit, cache=cache, write_at=0, cache_empty=True,
                                last_only=True)
    else:
        logits, cache = prefill_shared(params, cfg, tokens_bt, mask_bt, rows_b, cache, edit)
    eos = jnp.asarray(cfg.eos_ids or (-1,), jnp.int32)

    if key.ndim == 0:  # one key for the batch: a key per row from it
        key = jax.random.split(key, B)

    def split(key_b):
        k2 = jax.vmap(jax.random.split)(key_b)  # [B, 2]
        return k2[:, 0], k2[:, 1]

    def pick(key_b, logits_bv):
        if greedy:
            return jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
        return sample_rows(key_b, logits_bv / temperature)

    key, sub = split(key)
    tok = pick(sub, logits[:, -1])
    out = jnp.full((B, max_new), cfg.pad_id, jnp.int32).at[:, 0].set(tok)

    def cond(state):
        i, _, _, _, _, done = state
        return (i < max_new) & ~jnp.all(done)

    def body(state):
        i, key, tok, cache, out, done = state  # tok: new token i - 1 (pad where its row has ended)
        logits, cache = forward(
            params, cfg, tok[:, None], jnp.ones((B, 1), bool), edit=edit, cache=cache, write_at=P + T + i - 1
        )
        key, sub = split(key)
        tok = jnp.where(done, cfg.pad_id, pick(sub, logits[:, -1]))
        out = out.at[:, i].set(tok)
        return i + 1, key, tok, cache, out, done | jnp.isin(tok, eos)

    state = (jnp.int32(1), key, tok, cache, out, jnp.isin(tok, eos))
    steps, _, _, _, out, _ = jax.lax.while_loop(cond, body, state)
    return out, steps
