"""Streaming per-latent statistics of SAE codes: a pure, jittable state update per batch.

Everything is kept on device in memory that does not grow with the number of tokens:

* firing count, sum and maximum of each latent's activation over counted tokens;
* the top ``A`` non-overlapping peaks (SAEBench's ``get_k_largest_indices(no_overlap=True)``):
  scanning all positions in descending order, a position is taken unless it lies within
  ``buffer`` tokens of an already taken peak of the same context. Each peak keeps its window of
  activations (peak ± ``buffer``);
* an importance-weighted (IW) reservoir: a Gumbel-top-R sample of positions with weight
  ``act²`` (SAEBench's ``get_iw_sample_indices(use_squared_values=True)``), with windows;
* the activation windows at ``n_random`` fixed random positions per latent.

Positions are global ints ``context * T + t``. Peaks and IW draws only come from the window
region ``buffer <= t < T - buffer`` of counted (non-special) tokens, so windows never leave
their context. Excluded tokens read as activation 0 everywhere (SAEBench masks BOS/PAD/EOS so).

Why the streaming top-A is exact: conflicts only arise within one context, so the global
greedy scan equals "per context, its own greedy peaks; globally, the A largest of all of
those". Each step takes the first A greedy peaks of every context of the batch and merges them
with the running A by ``lax.top_k``.

Why the IW reservoir is exact: SAEBench draws ``n_iw`` positions without replacement with
probability ∝ act² among positions whose activation is below θ = the smallest of the A top
peaks (the final θ is only known at the end). Drawing without replacement ∝ w is the same as
taking the ``n_iw`` largest ``log w + Gumbel`` keys (Gumbel-top-k). Every position with
activation ≥ θ lies within ``buffer`` of one of the final A peaks, so at most ``A·(2·buffer+1)``
of them exist; a reservoir of the ``R = n_iw + A·(2·buffer+1)`` largest keys over *all* positions
therefore always holds the ``n_iw`` largest keys among positions below θ (ties aside).
:func:`finalize_iw` filters and cuts it once θ is known.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """Static sizes of the statistics (hashable: a static jit argument)."""

    context_len: int
    """T, tokens per context."""
    n_top: int = 12
    """A, top peaks kept per latent (SAEBench: 10 for explanation + 2 for scoring)."""
    buffer: int = 10
    """Window half-width: a window is ``buffer`` tokens either side of its centre."""
    n_iw: int = 7
    """Importance-weighted draws per latent (SAEBench: 5 for explanation + 2 for scoring)."""
    n_random: int = 10
    """Random windows per latent (SAEBench: 10 for scoring)."""

    @property
    def window(self) -> int:
        """W = 2·buffer + 1 tokens per window."""
        return 2 * self.buffer + 1

    @property
    def reservoir(self) -> int:
        """R = n_iw + A·W, the IW reservoir size that makes the final draw exact."""
        return self.n_iw + self.n_top * self.window

    def __post_init__(self):
        if self.context_len <= 2 * self.buffer:
            raise ValueError(f"context_len {self.context_len} leaves no window region for buffer {self.buffer}")


class StatsState(NamedTuple):
    """Running statistics for F latents (A = n_top, R = reservoir, W = window)."""

    n_counted: jax.Array  # i32[]: tokens counted so far (non-special, real contexts)
    count: jax.Array  # i32[F]: tokens where the latent is > 0
    sum_act: jax.Array  # f32[F]: sum of activations
    max_act: jax.Array  # f32[F]: maximum activation over counted tokens (m_f)
    top_val: jax.Array  # f32[F, A]: peak activations, descending; -inf for missing peaks
    top_pos: jax.Array  # i32[F, A]: global positions of the peaks (-1 for missing)
    top_win: jax.Array  # f32[F, A, W]: activations in each peak's window
    iw_key: jax.Array  # f32[F, R]: log(act²) + Gumbel, descending; -inf for empty slots
    iw_val: jax.Array  # f32[F, R]: activation at the drawn position
    iw_pos: jax.Array  # i32[F, R]
    iw_win: jax.Array  # f32[F, R, W]
    rand_pos: jax.Array  # i32[F, n_random]: fixed random positions (window centres)
    rand_win: jax.Array  # f32[F, n_random, W]: their activation windows (filled as the stream passes)


def random_positions(rng: np.random.Generator, n_contexts: int, spec: StreamSpec, d_sae: int) -> np.ndarray:
    """i32[F, n_random]: per latent, ``n_random`` uniform (context, t) with t in the window region,
    drawn with replacement as SAEBench's ``torch.randint`` does."""
    b, T = spec.buffer, spec.context_len
    n = rng.integers(0, n_contexts, size=(d_sae, spec.n_random))
    t = rng.integers(b, T - b, size=(d_sae, spec.n_random))
    return (n * T + t).astype(np.int32)


def init_state(spec: StreamSpec, rand_pos) -> StatsState:
    """Empty statistics for ``F = rand_pos.shape[0]`` latents (``rand_pos``: i32[F, n_random], from
    :func:`random_positions`)."""
    rand_pos = jnp.asarray(rand_pos, jnp.int32)
    F = rand_pos.shape[0]
    A, R, W = spec.n_top, spec.reservoir, spec.window
    f32 = jnp.float32
    return StatsState(
        n_counted=jnp.zeros((), jnp.int32),
        count=jnp.zeros((F,), jnp.int32),
        sum_act=jnp.zeros((F,), f32),
        max_act=jnp.zeros((F,), f32),
        top_val=jnp.full((F, A), -jnp.inf, f32),
        top_pos=jnp.full((F, A), -1, jnp.int32),
        top_win=jnp.zeros((F, A, W), f32),
        iw_key=jnp.full((F, R), -jnp.inf, f32),
        iw_val=jnp.zeros((F, R), f32),
        iw_pos=jnp.full((F, R), -1, jnp.int32),
        iw_win=jnp.zeros((F, R, W), f32),
        rand_pos=rand_pos,
        rand_win=jnp.zeros((F, spec.n_random, W), f32),
    )


def _windows(acts_btf, b_fn, t_fn, buffer: int):
    """f32[F, N, W]: acts[b, t - buffer : t + buffer + 1, f] for each (f, n) of N windows per latent
    (clipped at the edges)."""
    B, T, F = acts_btf.shape
    t = jnp.clip(t_fn[..., None] + jnp.arange(-buffer, buffer + 1), 0, T - 1)
    b = jnp.broadcast_to(jnp.clip(b_fn, 0, B - 1)[..., None], t.shape)
    f = jnp.broadcast_to(jnp.arange(F)[:, None, None], t.shape)
    return acts_btf[b, t, f]


def _row_peaks(cand_btf, k: int, buffer: int):
    """Greedy non-overlapping peaks of every context: (values f32[k, B, F], t i32[k, B, F]);
    value -inf once a context has no eligible position left."""
    T = cand_btf.shape[1]
    t_ar = jnp.arange(T, dtype=jnp.int32)[None, :, None]

    def body(x, _):
        v = jnp.max(x, axis=1)  # [B, F]
        # argmax as the first position holding the max: two plain reductions (XLA's CPU argmax is ~4x slower)
        t = jnp.min(jnp.where(x == v[:, None, :], t_ar, T), axis=1)
        x = jnp.where(jnp.abs(t_ar - t[:, None, :]) <= buffer, -jnp.inf, x)
        return x, (v, t)

    _, (v, t) = jax.lax.scan(body, cand_btf, None, length=k)
    return v, t


def max_peaks(context_len: int, buffer: int) -> int:
    """The most non-overlapping peaks (more than ``buffer`` apart) one context's window region
    ``buffer <= t < context_len - buffer`` holds: the greedy scan finds no more."""
    return (context_len - 2 * buffer - 1) // (buffer + 1) + 1


def _context_peaks(cand_btf, k: int, buffer: int):
    """The greedy peaks of the batch's contexts that can be among its k largest, per latent:
    (values f32[k', rows, F], t i32[k', rows, F], context i32[rows, F]), k' = min(k, max peaks of
    a context), over ``rows = min(k, B)`` of the batch's B contexts, in ascending order.

    Only the ``rows`` contexts with the largest first peak (ties: the lower index) matter: each
    holds a peak at least the rows-th largest first peak, and every peak of another context is at
    most that and, when equal, comes later in the (step, context) order ``lax.top_k`` breaks ties
    by. So the k largest of these candidates are exactly the k largest of all contexts' peaks,
    found by a scan over ``rows`` of the B contexts."""
    B, T, F = cand_btf.shape
    steps, rows = min(k, max_peaks(T, buffer)), min(k, B)
    if rows < B:
        _, ctx_fb = jax.lax.top_k(jnp.max(cand_btf, axis=1).T, rows)  # by first peak
        ctx_bf = jnp.sort(ctx_fb, axis=1).T.astype(jnp.int32)
        cand_btf = jnp.take_along_axis(cand_btf, ctx_bf[:, None, :], axis=0)  # [rows, T, F]
    else:
        ctx_bf = jnp.broadcast_to(jnp.arange(B, dtype=jnp.int32)[:, None], (B, F))
    v, t = _row_peaks(cand_btf, steps, buffer)
    return v, t, ctx_bf


def _merge(old_key, new_key, olds, news, k: int):
    """Keep the k largest keys of old ∪ new (dim 1), carrying the companion arrays along."""
    key = jnp.concatenate([old_key, new_key], axis=1)
    top, idx = jax.lax.top_k(key, k)
    out = []
    for o, n in zip(olds, news):
        cat = jnp.concatenate([o, n], axis=1)
        i = idx.reshape(idx.shape + (1,) * (cat.ndim - 2))
        out.append(jnp.take_along_axis(cat, i, axis=1))
    return top, out


def update(state: StatsState, acts_btf, counted_bt, start_context, key, spec: StreamSpec) -> StatsState:
    """Fold one batch of SAE codes into the statistics.

    Args:
      acts_btf: f32[B, T, F] SAE activations (non-negative) of contexts
        ``start_context .. start_context + B - 1``.
      counted_bt: bool[B, T], False for tokens to exclude (BOS/EOS/PAD/special, padding contexts).
      start_context: i32[], global index of the batch's first context.
      key: PRNG key for this batch's Gumbel noise (fold in the batch index).
    """
    B, T, F = acts_btf.shape
    b, A, R = spec.buffer, spec.n_top, spec.reservoir
    a = jnp.where(counted_bt[..., None], acts_btf.astype(jnp.float32), 0.0)
    base = jnp.asarray(start_context, jnp.int32) * T

    n_counted = state.n_counted + jnp.sum(counted_bt, dtype=jnp.int32)
    count = state.count + jnp.sum(a > 0, axis=(0, 1), dtype=jnp.int32)
    sum_act = state.sum_act + jnp.sum(a, axis=(0, 1))
    max_act = jnp.maximum(state.max_act, jnp.max(a, axis=(0, 1)))

    t_bt = jnp.arange(T)[None, :]
    region = counted_bt & (t_bt >= b) & (t_bt < T - b)
    cand = jnp.where(region[..., None] & (a > 0), a, -jnp.inf)  # [B, T, F]

    # --- top peaks: the first greedy peaks of the contexts that can hold one, then the A largest
    pv, pt, pc = _context_peaks(cand, A, b)  # [k', rows, F], context [rows, F]: rows = min(A, B)
    pb = jnp.broadcast_to(pc[None], pv.shape)
    pv, pt, pb = (x.transpose(2, 0, 1).reshape(F, -1) for x in (pv, pt, pb))
    bv, bi = jax.lax.top_k(pv, min(A, pv.shape[1]))
    bt, bb = jnp.take_along_axis(pt, bi, 1), jnp.take_along_axis(pb, bi, 1)
    bpos = jnp.where(jnp.isfinite(bv), base + bb * T + bt, -1)
    bwin = _windows(a, bb, bt, b)
    top_val, (top_pos, top_win) = _merge(state.top_val, bv, (state.top_pos, state.top_win), (bpos, bwin), A)

    # --- importance-weighted reservoir: largest log(a²) + Gumbel keys
    g = jax.random.gumbel(key, a.shape, jnp.float32)
    score = jnp.where(cand > 0, 2.0 * jnp.log(jnp.where(cand > 0, cand, 1.0)) + g, -jnp.inf)
    score = score.transpose(2, 0, 1).reshape(F, B * T)
    rr = min(R, B * T)
    sk, si = jax.lax.top_k(score, rr)
    sb, st = si // T, si % T
    sval = jnp.where(jnp.isfinite(sk), a[sb, st, jnp.arange(F)[:, None]], 0.0)
    spos = jnp.where(jnp.isfinite(sk), base + si, -1).astype(jnp.int32)
    swin = _windows(a, sb, st, b)
    iw_key, (iw_val, iw_pos, iw_win) = _merge(
        state.iw_key, sk, (state.iw_val, state.iw_pos, state.iw_win), (sval, spos, swin), R
    )

    # --- random windows whose centre falls in this batch
    local = state.rand_pos - base
    inside = (local >= 0) & (local < B * T)
    lc = jnp.clip(local, 0, B * T - 1)
    rwin = _windows(a, lc // T, lc % T, b)
    rand_win = jnp.where(inside[..., None], rwin, state.rand_win)

    return StatsState(
        n_counted, count, sum_act, max_act, top_val, top_pos, top_win,
        iw_key, iw_val, iw_pos, iw_win, state.rand_pos, rand_win,
    )


def finalize_iw(iw_key, iw_val, iw_pos, iw_win, top_val, n_iw: int):
    """The final IW draw from the reservoir (numpy arrays in, numpy out).

    θ = the A-th peak activation (the smallest of the top windows' peaks; -inf when a latent has
    fewer than A peaks, so it gets no IW draw, as in SAEBench where such latents are skipped).
    Keeps, per latent, the first ``n_iw`` reservoir entries (in key order, i.e. the order of a
    successive weighted draw) whose activation is below θ.

    Returns (val f32[F, n_iw], pos i32[F, n_iw] (-1 where missing), win f32[F, n_iw, W]).
    """
    theta = np.asarray(top_val)[:, -1]
    ok = np.isfinite(iw_key) & (np.asarray(iw_val) < theta[:, None])
    rank = np.cumsum(ok, axis=1)
    take = ok & (rank <= n_iw)
    F, W = iw_win.shape[0], iw_win.shape[2]
    val = np.zeros((F, n_iw), np.float32)
    pos = np.full((F, n_iw), -1, np.int32)
    win = np.zeros((F, n_iw, W), np.float32)
    f_idx, r_idx = np.nonzero(take)
    slot = rank[f_idx, r_idx] - 1
    val[f_idx, slot] = iw_val[f_idx, r_idx]
    pos[f_idx, slot] = iw_pos[f_idx, r_idx]
    win[f_idx, slot] = iw_win[f_idx, r_idx]
    return val, pos, win
