"""The streaming statistics equal brute force over all activations (numpy transcription of
SAEBench's get_k_largest_indices / get_iw_sample_indices with the same Gumbel noise)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.features.stream import StreamSpec, _context_peaks, _row_peaks, finalize_iw, init_state, max_peaks, random_positions, update


def make_acts(rng, N, T, F):
    """Sparse non-negative activations with bursts (runs of high values) and some dead latents."""
    a = rng.exponential(1.0, (N, T, F)).astype(np.float32) * (rng.random((N, T, F)) < 0.15)
    # bursts: a latent that fires strongly over long runs (many positions above the A-th peak)
    a[:, 5:60, 0] = 5.0 + rng.random((N, 55)).astype(np.float32)
    a[0, 5:60, 0] = np.linspace(60.0, 50.0, 55)  # slowly decaying runs: many positions above θ
    a[1, 5:60, 0] = np.linspace(60.05, 50.05, 55)
    a[::3, :, 1] = 0.0  # latent 1 silent in every third context
    a[:, :, 2] = 0.0  # latent 2 dead ...
    a[4, 40, 2] = 3.0  # ... but for a single spike
    return a


def brute_top(x_nt, counted_nt, k, b):
    """SAEBench get_k_largest_indices(no_overlap=True) on one latent, restricted to positive values."""
    N, T = x_nt.shape
    x = np.where(counted_nt, x_nt, 0.0)
    region = x[:, b : T - b]
    order = np.argsort(-region.ravel(), kind="stable")
    seen, out = set(), []
    for flat in order:
        n, t = divmod(int(flat), region.shape[1])
        t += b
        if region[n, t - b] <= 0 or len(out) == k:
            break
        if (n, t) in seen:
            continue
        out.append((n, t))
        seen.update((n, t + o) for o in range(-b, b + 1))
    return out


def run_stream(acts, counted, spec, batch, seed=0):
    N, T, F = acts.shape
    rand = random_positions(np.random.default_rng(seed), N, spec, F)
    step = jax.jit(functools.partial(update, spec=spec))
    state = init_state(spec, rand)
    base_key = jax.random.key(seed)
    keys = []
    for i, s in enumerate(range(0, N, batch)):
        a = np.zeros((batch, T, F), np.float32)
        c = np.zeros((batch, T), bool)
        a[: min(batch, N - s)] = acts[s : s + batch]
        c[: min(batch, N - s)] = counted[s : s + batch]
        k = jax.random.fold_in(base_key, i)
        keys.append(k)
        state = step(state, jnp.asarray(a), jnp.asarray(c), jnp.int32(s), k)
    return jax.tree.map(np.asarray, state), keys


@pytest.fixture(scope="module", params=[4, 10], ids=["batch4", "batch10"])
def case(request):
    """Batches of 4 contexts (every context scanned for peaks) or one of 10 (more than the 5 top
    peaks: only the contexts with the 5 largest first peaks are)."""
    rng = np.random.default_rng(0)
    N, T, F = 10, 64, 6
    acts = make_acts(rng, N, T, F)
    counted = np.ones((N, T), bool)
    counted[:, 0] = False  # BOS
    counted[3, 20:30] = False  # some special tokens
    acts[:, 0, :] = 100.0  # huge BOS activations must be ignored everywhere
    spec = StreamSpec(context_len=T, n_top=5, buffer=4, n_iw=3, n_random=4)
    state, keys = run_stream(acts, counted, spec, batch=request.param)
    return acts, counted, spec, state, keys


def test_counts_max_sum(case):
    acts, counted, spec, st, _ = case
    a = np.where(counted[..., None], acts, 0.0)
    assert int(st.n_counted) == counted.sum()
    np.testing.assert_array_equal(st.count, (a > 0).sum((0, 1)))
    np.testing.assert_allclose(st.max_act, a.max((0, 1)))
    np.testing.assert_allclose(st.sum_act, a.sum((0, 1)), rtol=1e-5)
    assert st.max_act.max() < 100.0  # BOS excluded


def test_top_k_equals_brute_force(case):
    acts, counted, spec, st, _ = case
    N, T, F = acts.shape
    a = np.where(counted[..., None], acts, 0.0)
    for f in range(F):
        ref = brute_top(acts[..., f], counted, spec.n_top, spec.buffer)
        got = [(int(p) // T, int(p) % T) for p in st.top_pos[f] if p >= 0]
        assert got == ref, f
        for j, (n, t) in enumerate(ref):
            np.testing.assert_allclose(st.top_val[f, j], a[n, t, f])
            np.testing.assert_allclose(st.top_win[f, j], a[n, t - spec.buffer : t + spec.buffer + 1, f])
        assert np.all(np.isneginf(st.top_val[f, len(ref) :]))
    # non-overlap within a context
    for f in range(F):
        pos = [int(p) for p in st.top_pos[f] if p >= 0]
        for i, p in enumerate(pos):
            for q in pos[:i]:
                assert p // T != q // T or abs(p - q) > spec.buffer


def test_iw_reservoir_equals_brute_force(case):
    """The final IW draw equals Gumbel-top-n_iw over all positions below θ, with the same noise."""
    acts, counted, spec, st, keys = case
    N, T, F = acts.shape
    b, B = spec.buffer, -(-N // len(keys))  # the batch size
    a = np.where(counted[..., None], acts, 0.0)
    g = np.concatenate([np.asarray(jax.random.gumbel(k, (B, T, F), jnp.float32)) for k in keys])[:N]
    val, pos, win = finalize_iw(st.iw_key, st.iw_val, st.iw_pos, st.iw_win, st.top_val, spec.n_iw)
    region = np.zeros((N, T), bool)
    region[:, b : T - b] = True
    region &= counted
    for f in range(F):
        theta = st.top_val[f, -1]
        x = a[..., f]
        ok = region & (x > 0) & (x < theta)
        score = np.where(ok, 2 * np.log(np.where(ok, x, 1.0)) + g[..., f], -np.inf).ravel()
        ref = [int(i) for i in np.argsort(-score, kind="stable")[: spec.n_iw] if np.isfinite(score[i])]
        got = [int(p) for p in pos[f] if p >= 0]
        assert got == ref, f
        for j, p in enumerate(ref):
            n, t = divmod(p, T)
            assert val[f, j] == x[n, t] and 0 < val[f, j] < theta
            np.testing.assert_allclose(win[f, j], x[n, t - b : t + b + 1])
    # the burst latent has many positions at or above θ: the reservoir bound is what makes it exact
    assert (np.where(region, a[..., 0], 0) >= st.top_val[0, -1]).sum() > spec.n_top
    # latent 2 (one spike) has fewer than A peaks: no θ, so no IW draw
    assert np.all(pos[2] == -1)


def test_random_windows(case):
    acts, counted, spec, st, _ = case
    N, T, F = acts.shape
    b = spec.buffer
    a = np.where(counted[..., None], acts, 0.0)
    n, t = st.rand_pos // T, st.rand_pos % T
    assert np.all((t >= b) & (t < T - b)) and np.all(n < N)
    for f in range(F):
        for j in range(spec.n_random):
            np.testing.assert_array_equal(st.rand_win[f, j], a[n[f, j], t[f, j] - b : t[f, j] + b + 1, f])


def test_batching_does_not_change_top(case):
    acts, counted, spec, st, _ = case
    st1, _ = run_stream(acts, counted, spec, batch=1)
    np.testing.assert_array_equal(st1.top_pos, st.top_pos)
    np.testing.assert_array_equal(st1.top_win, st.top_win)
    np.testing.assert_array_equal(st1.count, st.count)


def test_contexts_holding_fewer_peaks_than_kept():
    """T = 24, buffer 4: a context holds at most 4 non-overlapping peaks, fewer than the 5 kept,
    so the scan stops after 4 steps; the top windows still equal brute force."""
    rng = np.random.default_rng(3)
    N, T, F = 16, 24, 5
    spec = StreamSpec(context_len=T, n_top=5, buffer=4, n_iw=2, n_random=2)
    assert max_peaks(T, spec.buffer) == 4
    acts = rng.exponential(1.0, (N, T, F)).astype(np.float32) * (rng.random((N, T, F)) < 0.6)
    acts[3, [4, 9, 14, 19], 0] = [10.0, 9.0, 8.0, 7.0]  # one context holds 4 of latent 0's 5 top peaks
    counted = np.ones((N, T), bool)
    for batch in (1, 8):
        st, _ = run_stream(acts, counted, spec, batch=batch)
        for f in range(F):
            ref = brute_top(acts[..., f], counted, spec.n_top, spec.buffer)
            assert [(int(p) // T, int(p) % T) for p in st.top_pos[f] if p >= 0] == ref, (batch, f)
        assert [int(p) // T for p in st.top_pos[0]].count(3) == 4


def test_scanning_only_the_contexts_with_the_largest_first_peaks_is_exact_with_ties():
    """Activations in {1, 2, 3} (ties everywhere): the A largest peaks found by scanning only the
    A contexts with the largest first peaks are those of the scan over all contexts, in the same
    order (value, then step, then context) and with the same positions."""
    rng = np.random.default_rng(4)
    B, T, F, A, b = 24, 40, 64, 5, 3
    acts = rng.integers(1, 4, (B, T, F)).astype(np.float32) * (rng.random((B, T, F)) < 0.1)
    acts[:, :, 0] = 0.0  # a dead latent
    acts[:3, 10, 1] = 7.0  # three contexts tie on their first peak
    # latent 2: the 5th largest peak is a tie between the second peaks of contexts 6 and 7, where
    # the context with the smaller first peak (6) comes first: the scan keeps context order
    acts[:, :, 2] = 0.0
    acts[6, [5, 20], 2], acts[7, [5, 20], 2] = [3.0, 2.0], [4.0, 2.0]
    acts[8, 5, 2] = acts[9, 5, 2] = 5.0
    acts[10, 5, 2] = 1.0
    cand = jnp.asarray(np.where(acts > 0, acts, -np.inf))

    def k_largest(v, t, ctx_bf):
        flat = lambda x: x.transpose(2, 0, 1).reshape(F, -1)  # noqa: E731
        c = jnp.broadcast_to(ctx_bf[None], v.shape)
        val, i = jax.lax.top_k(flat(v), A)
        return np.asarray(val), np.asarray(jnp.take_along_axis(flat(t), i, 1)), np.asarray(jnp.take_along_axis(flat(c), i, 1))

    got = k_largest(*_context_peaks(cand, A, b))
    v, t = _row_peaks(cand, A, b)
    want = k_largest(v, t, jnp.broadcast_to(jnp.arange(B, dtype=jnp.int32)[:, None], (B, F)))
    np.testing.assert_array_equal(got[0], want[0])
    found = np.isfinite(want[0])
    assert found.sum() > F and not found[0].any() and np.all(found[1:])
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_array_equal(np.where(found, g, -1), np.where(found, w, -1))
    assert want[2][2].tolist() == [8, 9, 7, 6, 6] and want[1][2].tolist() == [5, 5, 5, 5, 20]


def test_iw_first_draw_is_proportional_to_squared_activation():
    """Gumbel-top-k is a weighted draw: the first IW pick hits position i with probability ∝ a_i²."""
    T, b = 12, 2
    spec = StreamSpec(context_len=T, n_top=1, buffer=b, n_iw=1, n_random=1)
    x = np.zeros((1, T, 1), np.float32)
    x[0, 2:10, 0] = [1.0, 2.0, 0.5, 3.0, 9.0, 1.5, 0.0, 2.5]  # peak 9.0 (θ): excluded from IW
    counted = np.ones((1, T), bool)
    state0 = init_state(spec, np.full((1, 1), b, np.int32))

    @jax.jit
    @jax.vmap
    def first_pick(key):
        st = update(state0, jnp.asarray(x), jnp.asarray(counted), jnp.int32(0), key, spec)
        cand = jnp.where(st.iw_val < st.top_val[:, -1:], st.iw_key, -jnp.inf)
        return st.iw_pos[0, jnp.argmax(cand[0])]

    n = 20000
    picks = np.asarray(first_pick(jax.random.split(jax.random.key(1), n)))
    w = np.where(x[0, :, 0] < 9.0, x[0, :, 0] ** 2, 0.0)
    w[:b] = w[T - b :] = 0
    p = w / w.sum()
    freq = np.bincount(picks, minlength=T) / n
    np.testing.assert_allclose(freq, p, atol=0.015)
