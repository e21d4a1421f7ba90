"""Shared SAE math: exact top-k masks by a radix search, decoder-norm constraints, geometric median.

Letters: B tokens in a batch, D the model width (d_in), F the dictionary width (d_sae).

Top-k selection is done by an exact radix search (4 bits per pass, 8 passes, on GPU/TPU; the 31-step
bisection on CPU) on the bit pattern of non-negative float32 values (their int32 bit patterns are
ordered like the floats). It finds the exact k-th largest value as a threshold, so ``k`` may be a
traced per-SAE array (one compiled step serves a whole sweep of k's) and the batch axis may be
sharded across devices (the counts become all-reduces). Ties at the threshold are all kept; with
continuous activations ties are measure-zero. Entries equal to zero may be "selected" when fewer
than k entries are positive, exactly as ``torch.topk`` would pick zeros; they contribute nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_N_BITS = 31  # non-negative float32 bit patterns live in [0, 2**31)


def _nonneg_bits(v, valid=None):
    """int32 bit patterns of ``v`` (assumed >= 0; -0.0 maps to 0); invalid entries map to -1."""
    bits = jnp.maximum(jax.lax.bitcast_convert_type(v.astype(jnp.float32), jnp.int32), 0)
    if valid is not None:
        bits = jnp.where(valid, bits, -1)
    return bits


DIGIT_BITS: int | None = None
"""Bits decided per pass of :func:`kth_largest_bits`: None picks 4 on GPU/TPU (8 passes over the
data) and 1 on CPU (31 passes in a while loop: a CPU's compiler writes the 4-bit pass's [digits, B, F]
compare out, which is 7x slower there). benchmarks/scale.py sets 4 to compile what an accelerator runs."""


def _digit_bits() -> int:
    if DIGIT_BITS is not None:
        return DIGIT_BITS
    return 1 if jax.default_backend() == "cpu" else 4


def kth_largest_bits(bits, k, axis):
    """Largest int t with count(bits >= t) >= k along ``axis`` (the k-th largest pattern).

    A radix search: t is built from the top bit down, w = :data:`DIGIT_BITS` bits per pass (the
    first pass takes the remainder of the 31). Each pass counts, in one read of ``bits``, the
    entries at or above every candidate digit (t | j << shift, j = 1 .. 2**w - 1) and keeps the
    largest candidate whose count is >= k; counts fall with j, so every w gives the bit-by-bit
    bisection's exact answer (w = 1 is that bisection), in ceil(31 / w) passes over the data.

    Args:
      bits: int32 array of non-negative float bit patterns (-1 marks excluded entries).
      k: int (array broadcastable to the reduced shape) of entries to keep, >= 1.
      axis: axis or tuple of axes to count over.
    Returns:
      int32 array of the reduced shape (keepdims), the threshold pattern.
    """
    axes = tuple(a % bits.ndim for a in ((axis,) if isinstance(axis, int) else axis))
    shape = tuple(1 if i in axes else n for i, n in enumerate(bits.shape))
    k = jnp.asarray(k, jnp.int32)
    w_bits = _digit_bits()
    if w_bits == 1:  # the plain bisection, as a loop (no unrolled passes for the compiler)
        def body(i, t):
            cand = t | jnp.left_shift(jnp.int32(1), _N_BITS - 1 - i)
            count = jnp.sum((bits >= cand).astype(jnp.int32), axis=axes, keepdims=True)
            return jnp.where(count >= k, cand, t)

        return jax.lax.fori_loop(0, _N_BITS, body, jnp.zeros(shape, jnp.int32))
    t = jnp.zeros(shape, jnp.int32)
    hi = _N_BITS
    while hi > 0:
        w = hi % w_bits or w_bits
        shift = hi - w
        j = jnp.arange(1, 1 << w, dtype=jnp.int32).reshape((-1,) + (1,) * bits.ndim)  # candidate digits [digits, 1, ...]
        cand = t[None] | jnp.left_shift(j, shift)  # [digits, *shape]
        count = jnp.sum((bits[None] >= cand).astype(jnp.int32), axis=tuple(a + 1 for a in axes), keepdims=True)
        n_ok = jnp.sum((count >= k).astype(jnp.int32), axis=0)  # the largest digit whose count reaches k
        t = t | jnp.left_shift(n_ok, shift)
        hi = shift
    return t


def topk_mask(v_bf, k):
    """bool[B, F]: the k largest entries of each row of the non-negative ``v_bf`` (k may be traced)."""
    bits = _nonneg_bits(v_bf)
    return bits >= kth_largest_bits(bits, k, axis=-1)


def batch_topk_mask(v_bf, k_total):
    """bool[B, F]: the ``k_total`` largest entries of the whole non-negative batch ``v_bf``."""
    bits = _nonneg_bits(v_bf)
    return bits >= kth_largest_bits(bits, k_total, axis=(0, 1))


def masked_topk_mask(v_bf, valid_f, k):
    """bool[B, F]: per row, the k largest entries among the columns where ``valid_f`` (bool[F])."""
    bits = _nonneg_bits(v_bf, valid_f[None, :])
    return (bits >= kth_largest_bits(bits, k, axis=-1)) & valid_f[None, :]


def unit_norm_rows(w_fd, eps=None):
    """Scale each latent's decoder row of W_dec f32[F, D] to unit L2 norm.

    ``eps`` None divides by the bare norm (dictionary_learning's ConstrainedAdam); a float adds it
    to the norm (``set_decoder_norm_to_unit_norm`` uses float32 machine epsilon).
    """
    n = jnp.linalg.norm(w_fd, axis=-1, keepdims=True)
    return w_fd / (n if eps is None else n + eps)


def remove_parallel_grad(w_fd, g_fd, eps=1e-6):
    """Remove from the decoder gradient g_fd f32[F, D] its component along each decoder row."""
    normed = w_fd / (jnp.linalg.norm(w_fd, axis=-1, keepdims=True) + eps)
    par_f = jnp.sum(g_fd * normed, axis=-1, keepdims=True)
    return g_fd - par_f * normed


def geometric_median(points_nd, max_iter=100, tol=1e-5):
    """Weiszfeld iteration for the geometric median of f32[N, D] (dictionary_learning's b_dec init).

    Starts at the mean, re-weights by 1/distance, stops after ``max_iter`` or when the step < tol.
    """
    points_nd = points_nd.astype(jnp.float32)

    def cond(c):
        i, guess, prev = c
        return (i < max_iter) & ((i == 0) | (jnp.linalg.norm(guess - prev) >= tol))

    def body(c):
        i, guess, _ = c
        w = 1.0 / jnp.linalg.norm(points_nd - guess, axis=-1)
        w = w / jnp.sum(w)
        return i + 1, jnp.sum(w[:, None] * points_nd, axis=0), guess

    mean = jnp.mean(points_nd, axis=0)
    _, guess, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), mean, mean))
    return guess


def global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))
