"""The functional decoder core: pure functions over a params pytree, one implementation for
Gemma-2, Qwen-2.5 and Llama, faithful to transformers' eager implementation.

Params pytree (layer tensors stacked on a leading axis L so the blocks run under ``lax.scan``;
suffixes name the axes in the letters of the :mod:`jaxsae` shape table: v vocabulary, d model width,
q query heads, k key/value heads, h head dim, m MLP hidden width):

    embed_vd, final_norm_d, [unembed_dv]
    layers: attn_norm_ld, q_ldqh, k_ldkh, v_ldkh, o_lqhd, mlp_norm_ld, gate_ldm, up_ldm, down_lmd,
            [q_bias_lqh, k_bias_lkh, v_bias_lkh]            (Qwen-2)
            [post_attn_norm_ld, post_mlp_norm_ld]          (Gemma-2 sandwich norms)

Dtype policy: activations run in the params' dtype; norms, softmax, soft-caps and logits in float32;
residuals handed to edits and returned to callers are float32.

An :class:`Edit` changes the residual stream at the output of one block (steering, SAE splicing,
ablation). A :class:`KVCache` holds keys/values for incremental decoding.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.models.config import ModelConfig

UNROLL = 1
EditFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Edit:
    """A change of the residual stream at the output of block ``layer``.

    ``fn(args, resid_btd, positions_bt) -> resid_btd`` sees float32 residuals [B, T, D] and the
    token positions int32 [B, T]. ``layer`` and ``fn`` are static (part of the jit cache key), so
    ``fn`` should be a module-level function; ``args`` is a pytree of arrays that is traced, so
    changing only ``args`` never recompiles.
    """

    layer: int = dataclasses.field(metadata=dict(static=True))
    fn: EditFn = dataclasses.field(metadata=dict(static=True))
    args: Any = None

    def __call__(self, resid_btd, positions_bt):
        return self.fn(self.args, resid_btd, positions_bt)


class KVCache(NamedTuple):
    """Keys and values of every layer for slots [0, S), and which slots hold real tokens.

    Layout [L, B, K, S, H] keeps each (batch, kv-head) block contiguous, so attention is a plain
    batched matmul with no transposes of the cache."""

    k_lbksh: jax.Array
    v_lbksh: jax.Array
    valid_bs: jax.Array  # bool[B, S]


def init_cache(cfg: ModelConfig, batch: int, slots: int, dtype) -> KVCache:
    shape = (cfg.n_layers, batch, cfg.n_kv_heads, slots, cfg.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, slots), bool))


# ----------------------------------------------------------------------------------- primitives


def rms_norm(x, w, cfg: ModelConfig):
    """RMSNorm in float32. Gemma-2: x_hat * (1 + w) in f32, then cast; Llama/Qwen: cast, then * w."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.rms_eps)
    if cfg.norm_plus_one:
        return (normed * (1.0 + w.astype(jnp.float32))).astype(x.dtype)
    return normed.astype(x.dtype) * w


def rope(x, positions_bt, theta: float):
    """Rotary embedding of queries [B, T, Q, H] or keys [B, T, K, H], rotate-half layout; cos/sin
    computed in f32 and cast to x's dtype."""
    h = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
    ang = positions_bt.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
    ang = jnp.concatenate([ang, ang], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(ang).astype(x.dtype), jnp.sin(ang).astype(x.dtype)
    x1, x2 = x[..., : h // 2], x[..., h // 2 :]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return x * cos + rotated * sin


def _softcap(x, cap):
    return x if cap is None else cap * jnp.tanh(x / cap)


class KeySet(NamedTuple):
    """A block of keys/values that queries may attend to, with their slots and validity."""

    k_bksh: jax.Array
    v_bksh: jax.Array
    slot_bs: jax.Array  # int32[B, S]
    valid_bs: jax.Array  # bool[B, S]


def attention(lp, x_btd, positions_bt, q_slot_bt, keysets: tuple[KeySet, ...], window, cfg):
    """Grouped-query attention of queries from ``x`` over one or more key blocks.

    A key is visible iff it is valid, not in the future (slot <= query slot) and inside the window
    (query slot - key slot < window). Scores of all blocks share one softmax (in float32), so
    attending to [cache, new tokens] as two blocks equals attending to their concatenation without
    copying the cache. Returns the attention output [B, T, D] before the residual add.
    """
    q = jnp.einsum("btd,dqh->btqh", x_btd, lp["q_ldqh"])
    if cfg.qkv_bias:
        q = q + lp["q_bias_lqh"]
    q = rope(q, positions_bt, cfg.rope_theta)
    B, T, Q, H = q.shape
    if len(keysets) == 1 and cfg.attn_softcap is None and keysets[0].k_bksh.shape[0] == B:
        # one key block and no soft-cap (everything but Gemma-2, and no cache read): the fused
        # kernel (cuDNN flash attention on GPU in bf16/fp16, XLA's same math elsewhere)
        ks = keysets[0]
        delta = q_slot_bt[:, :, None] - ks.slot_bs[:, None, :]
        visible = ks.valid_bs[:, None, :] & (delta >= 0) & (delta < window)
        out = jax.nn.dot_product_attention(q, ks.k_bksh.transpose(0, 2, 1, 3), ks.v_bksh.transpose(0, 2, 1, 3),
                                           mask=visible[:, None], scale=float(cfg.query_scale))
        return jnp.einsum("btqh,qhd->btd", out.astype(x_btd.dtype), lp["o_lqhd"])
    q = q.reshape(B, T, cfg.n_kv_heads, cfg.n_groups, H).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
    scale = jnp.asarray(cfg.query_scale, q.dtype)
    scores = []
    # a batch-1 key block (a shared prefix cache) is broadcast over the queries' batch, not copied
    shared = [ks.k_bksh.shape[0] == 1 and B > 1 for ks in keysets]
    for ks, one in zip(keysets, shared):
        if one:
            s_ = jnp.einsum("bkgth,ksh->bkgts", q, ks.k_bksh[0]) * scale
        else:
            s_ = jnp.einsum("bkgth,bksh->bkgts", q, ks.k_bksh) * scale
        s_ = _softcap(s_.astype(jnp.float32), cfg.attn_softcap)
        delta = q_slot_bt[:, :, None] - ks.slot_bs[:, None, :]  # [B, T, S]
        visible = ks.valid_bs[:, None, :] & (delta >= 0) & (delta < window)
        scores.append(jnp.where(visible[:, None, None], s_, jnp.finfo(jnp.float32).min))
    probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1).astype(x_btd.dtype)
    out, start = 0.0, 0
    for ks, one in zip(keysets, shared):
        size = ks.k_bksh.shape[2]
        p_ = probs[..., start : start + size]
        out = out + (jnp.einsum("bkgts,ksh->bkgth", p_, ks.v_bksh[0]) if one else jnp.einsum("bkgts,bksh->bkgth", p_, ks.v_bksh))
        start += size
    return jnp.einsum("bkgth,kghd->btd", out, lp["o_lqhd"].reshape(cfg.n_kv_heads, cfg.n_groups, H, -1))


def project_kv(lp, x_btd, positions_bt, cfg):
    """Keys (with RoPE) and values of the normed input: two [B, K, T, H] arrays."""
    k = jnp.einsum("btd,dkh->btkh", x_btd, lp["k_ldkh"])
    v = jnp.einsum("btd,dkh->btkh", x_btd, lp["v_ldkh"])
    if cfg.qkv_bias:
        k, v = k + lp["k_bias_lkh"], v + lp["v_bias_lkh"]
    return rope(k, positions_bt, cfg.rope_theta).transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)


def mlp(lp, x_btd, cfg):
    gate = jnp.einsum("btd,dm->btm", x_btd, lp["gate_ldm"])
    up = jnp.einsum("btd,dm->btm", x_btd, lp["up_ldm"])
    act = jax.nn.gelu(gate, approximate=True) if cfg.activation == "gelu_tanh" else jax.nn.silu(gate)
    return jnp.einsum("btm,md->btd", act * up, lp["down_lmd"])


# ---------------------------------------------------------------------------------- the stack


class _Ctx(NamedTuple):
    """Per-call tensors shared by every layer."""

    positions_bt: jax.Array
    q_slot_bt: jax.Array  # slots of the new tokens
    new_valid_bt: jax.Array  # which new tokens are real (left padding)
    cache_slot_bs: jax.Array | None  # slots of the cache (None: no cache)
    cache_valid_bs: jax.Array | None  # which cache slots held real tokens before this call


def _block(lp, x, window, ctx: _Ctx, cfg: ModelConfig, cache_kv=None):
    """One decoder block over new tokens ``x`` [B, T, D], attending to the (read-only) cache
    ``cache_kv`` ([B,K,S,H] pair) and to themselves. Returns (x, (k, v) of the new tokens)."""
    h = rms_norm(x, lp["attn_norm_ld"], cfg)
    k, v = project_kv(lp, h, ctx.positions_bt, cfg)
    keysets = (KeySet(k, v, ctx.q_slot_bt, ctx.new_valid_bt),)
    if cache_kv is not None:
        keysets = (KeySet(cache_kv[0], cache_kv[1], ctx.cache_slot_bs, ctx.cache_valid_bs),) + keysets
    a = attention(lp, h, ctx.positions_bt, ctx.q_slot_bt, keysets, window, cfg)
    if cfg.sandwich_norms:
        a = rms_norm(a, lp["post_attn_norm_ld"], cfg)
    x = x + a
    m = mlp(lp, rms_norm(x, lp["mlp_norm_ld"], cfg), cfg)
    if cfg.sandwich_norms:
        m = rms_norm(m, lp["post_mlp_norm_ld"], cfg)
    return x + m, (k, v)


def _apply_edit(x, i, edit: Edit | None, ctx: _Ctx):
    """``x`` after block ``i``, edited when ``i`` is the edit's layer (a cond: other layers, and a
    program without an edit, run exactly the same arithmetic)."""
    if edit is None:
        return x
    return jax.lax.cond(i == edit.layer, lambda x: _edited(x, edit, ctx), lambda x: x, x)


def _edited(x, edit: Edit, ctx: _Ctx):
    """``x`` changed by ``edit`` (which sees float32 residuals), in ``x``'s dtype."""
    return edit(x.astype(jnp.float32), ctx.positions_bt).astype(x.dtype)


def run_layers(params, cfg: ModelConfig, x_btd, ctx: _Ctx, lo: int, hi: int, cache: KVCache | None = None, write_at=None,
               update_cache: bool = True, cache_empty: bool = False, edit: Edit | None = None):
    """Run blocks [lo, hi) with ``lax.scan``; returns (x, cache). ``edit`` changes the output of
    its layer (when that layer is in [lo, hi)).

    ``cache_empty`` (a prefill into a fresh cache): the cache is written but not read, so no
    attention to its empty slots is computed (and XLA has no all-masked constant block to fold).

    With a cache, every block attends to the cache's layer slice (read, not copied) plus the new
    tokens, and the new keys/values of all blocks are written into the cache at ``write_at`` in one
    update afterwards (in place when the cache is a loop carry or donated)."""
    if hi <= lo:
        return x_btd, cache
    if edit is not None and not lo <= edit.layer < hi:
        edit = None
    layers = jax.tree.map(lambda a: a[lo:hi], params["layers"])
    windows = jnp.asarray(cfg.windows[lo:hi], jnp.int32)
    idx = jnp.arange(lo, hi, dtype=jnp.int32)
    if cache is None:

        def body(x, xs):
            lp, w, i = xs
            x, _ = _block(lp, x, w, ctx, cfg)
            return _apply_edit(x, i, edit, ctx), None

        x_btd, _ = jax.lax.scan(body, x_btd, (layers, windows, idx), unroll=UNROLL)
        return x_btd, None

    def body_c(x, xs):
        lp, w, i = xs
        if cache_empty:
            x, kv = _block(lp, x, w, ctx, cfg)
        else:
            kv = (jax.lax.dynamic_index_in_dim(cache.k_lbksh, i, keepdims=False),
                  jax.lax.dynamic_index_in_dim(cache.v_lbksh, i, keepdims=False))
            x, kv = _block(lp, x, w, ctx, cfg, kv)
        return _apply_edit(x, i, edit, ctx), kv

    x_btd, (k_new, v_new) = jax.lax.scan(body_c, x_btd, (layers, windows, idx), unroll=UNROLL)
    if not update_cache:
        return x_btd, cache
    zero = jnp.int32(0)
    at = (jnp.int32(lo), zero, zero, jnp.asarray(write_at, jnp.int32), zero)
    ks = jax.lax.dynamic_update_slice(cache.k_lbksh, k_new.astype(cache.k_lbksh.dtype), at)
    vs = jax.lax.dynamic_update_slice(cache.v_lbksh, v_new.astype(cache.v_lbksh.dtype), at)
    return x_btd, cache._replace(k_lbksh=ks, v_lbksh=vs)


def embed(params, cfg: ModelConfig, tokens_bt):
    table = params["embed_vd"]
    x = jnp.take(table, tokens_bt, axis=0)
    if cfg.embed_scale:  # HF rounds sqrt(D) to the activation dtype before multiplying
        x = x * jnp.asarray(np.sqrt(cfg.d_model), dtype=x.dtype)
    return x


def unembed(params, cfg: ModelConfig, x_btd):
    """Final norm and logits in float32 (with the final soft-cap where the model has one)."""
    h = rms_norm(x_btd, params["final_norm_d"], cfg)
    if cfg.tie_embeddings:
        logits = jnp.einsum("btd,vd->btv", h, params["embed_vd"], preferred_element_type=jnp.float32)
    else:
        logits = jnp.einsum("btd,dv->btv", h, params["unembed_dv"], preferred_element_type=jnp.float32)
    return _softcap(logits.astype(jnp.float32), cfg.final_softcap)


def make_ctx(mask_bt, cache: KVCache | None, write_at=None) -> tuple[_Ctx, KVCache | None]:
    """Positions and visibility for new tokens ``mask_bt`` (bool[B, T], left padding allowed).

    Without a cache, keys are the new tokens themselves. With one, the new tokens occupy slots
    [write_at, write_at + T) and their positions continue from the cache's valid tokens; the
    returned cache has those slots marked valid.
    """
    B, T = mask_bt.shape
    m = mask_bt.astype(jnp.int32)
    if cache is None:
        positions = jnp.maximum(jnp.cumsum(m, axis=1) - 1, 0)
        slots = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        return _Ctx(positions, slots, mask_bt, None, None), None
    S = cache.valid_bs.shape[1]
    write_at = jnp.asarray(write_at, jnp.int32)
    before = jnp.sum(cache.valid_bs.astype(jnp.int32), axis=1, keepdims=True)
    positions = jnp.maximum(before + jnp.cumsum(m, axis=1) - 1, 0)
    q_slots = jnp.broadcast_to(write_at + jnp.arange(T, dtype=jnp.int32), (B, T))
    k_slots = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
    # cache slots at or after write_at are being (re)written now: only the new-token block counts
    old_valid = cache.valid_bs & (k_slots < write_at)
    valid = jax.lax.dynamic_update_slice_in_dim(cache.valid_bs, mask_bt, write_at, axis=1)
    return _Ctx(positions, q_slots, mask_bt, k_slots, old_valid), cache._replace(valid_bs=valid)


def forward(
    params,
    cfg: ModelConfig,
    tokens_bt,
    mask_bt=None,
    *,
    edit: Edit | None = None,
    stop_layer: int | None = None,
    cache: KVCache | None = None,
    write_at=0,
    update_cache: bool = True,
    cache_empty: bool = False,
    last_only: bool = False,
):
    """The whole model, or its first ``stop_layer + 1`` blocks (early exit).

    Returns (out, cache): ``out`` is the float32 residual [B, T, D] after block ``stop_layer``
    (after the edit, if the edit is at that layer) when ``stop_layer`` is given, otherwise float32
    logits [B, T, V]. ``cache`` is the updated KV cache (None when no cache was passed; unchanged
    when ``update_cache`` is False, which lets a query attend to a cache without writing to it).
    ``cache_empty`` (static): the cache holds no tokens yet (a prefill): it is written, not read.
    ``last_only`` (static): return only the last position ([B, 1, V] or [B, 1, D]); the final norm
    and unembedding then run on that position alone (a prefill needs no other logits).
    """
    if mask_bt is None:
        mask_bt = jnp.ones(tokens_bt.shape, bool)
    last = cfg.n_layers - 1 if stop_layer is None else stop_layer
    if not 0 <= last < cfg.n_layers:
        raise ValueError(f"layer {last} out of range [0, {cfg.n_layers})")
    ctx, new_cache = make_ctx(mask_bt, cache, write_at)
    cache = new_cache if update_cache else cache
    x = embed(params, cfg, tokens_bt)
    x, cache = run_layers(params, cfg, x, ctx, 0, last + 1, cache, write_at, update_cache, cache_empty, edit=edit)
    if last_only:
        x = x[:, -1:]
    if stop_layer is not None:
        return x.astype(jnp.float32), cache
    return unembed(params, cfg, x), cache


def forward_from(
    params,
    cfg: ModelConfig,
    resid_btd,
    from_layer: int,
    mask_bt=None,
    *,
    cache: KVCache | None = None,
    write_at=0,
    update_cache: bool = True,
    last_only: bool = False,
):
    """Logits from a residual: run blocks (from_layer, L) on ``resid_btd`` (the output of block
    ``from_layer``) and unembed. With a ``cache`` of batch 1 and many residual rows, the rows
    share that cache (e.g. one prompt prefix, many interventions at its last position).
    ``last_only`` (static): unembed the last position alone.

    Returns (float32 logits [B, T, V] ([B, 1, V] with ``last_only``), cache)."""
    B, T, _ = resid_btd.shape
    if mask_bt is None:
        mask_bt = jnp.ones((B, T), bool)
    if cache is not None and cache.valid_bs.shape[0] == 1 and B > 1:
        if update_cache:
            raise ValueError("a shared (batch-1) cache cannot be updated by a batch of rows; pass update_cache=False")
        ctx, _ = make_ctx(mask_bt[:1], cache, write_at)
        ctx = ctx._replace(
            positions_bt=jnp.broadcast_to(ctx.positions_bt, (B, T)),
            q_slot_bt=jnp.broadcast_to(ctx.q_slot_bt, (B, T)),
            new_valid_bt=mask_bt,
        )
    else:
        ctx, new_cache = make_ctx(mask_bt, cache, write_at)
        cache = new_cache if update_cache else cache
    x = resid_btd.astype(params["embed_vd"].dtype)
    x, cache = run_layers(params, cfg, x, ctx, from_layer + 1, cfg.n_layers, cache, write_at, update_cache)
    return unembed(params, cfg, x[:, -1:] if last_only else x), cache


def prefill_shared(params, cfg: ModelConfig, tokens_ut, mask_ut, rows_b, cache: KVCache, edit: Edit | None = None):
    """The prefill of B rows whose prompts repeat: row b's prompt is row ``rows_b[b]`` of the U
    unique prompts ``tokens_ut`` / ``mask_ut`` [U, T]. Nothing differs between rows of one prompt
    before the edit (each row has its own ``edit`` args), so blocks [0, edit.layer] run once per
    unique prompt (every block when there is no edit); their outputs and keys/values are copied to
    the rows, the edit applies, and the later blocks run per row. ``cache`` is a fresh [L, B, K, S, H]
    cache (S >= T). Returns (float32 logits of the last position [B, 1, V], cache with the
    prompt in slots [0, T)): what ``forward(..., cache_empty=True, last_only=True)`` of the B
    prompts returns, up to the rounding of a different batch size."""
    if edit is not None and not 0 <= edit.layer < cfg.n_layers:
        raise ValueError(f"edit layer {edit.layer} out of range [0, {cfg.n_layers})")
    U, T = tokens_ut.shape
    shared = cfg.n_layers if edit is None else edit.layer + 1
    kv = (shared, U, cfg.n_kv_heads, T, cfg.head_dim)
    dtype = cache.k_lbksh.dtype
    ctx_u, cache_u = make_ctx(mask_ut, KVCache(jnp.zeros(kv, dtype), jnp.zeros(kv, dtype), jnp.zeros((U, T), bool)), 0)
    x_u, cache_u = run_layers(params, cfg, embed(params, cfg, tokens_ut), ctx_u, 0, shared, cache_u, 0, cache_empty=True)
    ctx, cache = make_ctx(mask_ut[rows_b], cache, 0)
    x = x_u[rows_b]
    if edit is not None:
        x = _edited(x, edit, ctx)
    zero = jnp.int32(0)
    cache = cache._replace(k_lbksh=jax.lax.dynamic_update_slice(cache.k_lbksh, cache_u.k_lbksh[:, rows_b], (zero,) * 5),
                           v_lbksh=jax.lax.dynamic_update_slice(cache.v_lbksh, cache_u.v_lbksh[:, rows_b], (zero,) * 5))
    x, cache = run_layers(params, cfg, x, ctx, shared, cfg.n_layers, cache, 0, cache_empty=True)
    return unembed(params, cfg, x[:, -1:]), cache
