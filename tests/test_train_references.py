"""Training formulas against independent references: the geometric median that initialises b_dec
(scipy's minimisation of the summed distances) and Adam's update of one step from a fresh state
(a numpy transcription of Kingma & Ba with eps = 1e-8, on gradients small enough that eps shows)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize

from jaxsae.sae import ARCHS, ArchConfig, ops
from jaxsae.train import SAESpec, TrainSettings
from jaxsae.train.trainer import init_state, make_step


def _skewed_points(seed=0, n=300, d=8):
    """A Gaussian cloud plus a far cluster of 20% outliers: mean and geometric median differ a lot."""
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, d))
    x[: n // 5] += 40.0 * r.normal(size=d) / np.sqrt(d) + 25.0
    return x.astype(np.float32)


def _median_ref(x):
    """argmin_c sum_i ||x_i - c|| by BFGS in float64 from the coordinate-wise median."""
    x = x.astype(np.float64)

    def fun(c):
        r = x - c
        n = np.linalg.norm(r, axis=1)
        return n.sum(), -(r / n[:, None]).sum(0)

    res = scipy.optimize.minimize(fun, np.median(x, 0), jac=True, method="BFGS", options={"gtol": 1e-10})
    return res.x


def test_geometric_median_minimises_the_summed_distances():
    x = _skewed_points()
    want = _median_ref(x)
    got = np.asarray(ops.geometric_median(x), np.float64)
    gap = np.linalg.norm(x.mean(0) - want)
    assert gap > 5.0  # the mean is far from the median here
    assert np.linalg.norm(got - want) < 1e-3 * gap
    total = lambda c: np.linalg.norm(x - c, axis=1).sum()  # noqa: E731
    assert total(got) == pytest.approx(total(want), rel=1e-7)


def test_the_topk_family_starts_b_dec_at_the_geometric_median_of_the_first_batch():
    x = _skewed_points(seed=1, d=16)
    st = TrainSettings(d_sae=32, batch=len(x), steps=10, lr=1e-3, checkpoint_every=0)
    state = init_state([SAESpec("topk", 0, 4.0), SAESpec("relu", 0, 1.0)], x.shape[1], st, x, ArchConfig())
    want = _median_ref(x)
    gap = np.linalg.norm(x.mean(0) - want)
    got = np.asarray(state["groups"]["topk"]["params"]["b_dec"][0], np.float64)
    assert np.linalg.norm(got - want) < 1e-3 * gap
    assert not np.any(np.asarray(state["groups"]["relu"]["params"]["b_dec"]))  # relu keeps b_dec = 0


def _adam_ref(p, g, m, v, t, lr, b1, b2, eps=1e-8):
    """One Adam step in float64 (Kingma & Ba, bias-corrected; b1 = 0 has no first-moment correction)."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1**t) if b1 > 0 else m
    return p - lr * m_hat / (np.sqrt(v / (1 - b2**t)) + eps), m, v


@pytest.mark.parametrize("arch,sparsity", [("relu", 1e-6), ("gated", 1e-6)])
def test_two_adam_steps_from_a_fresh_state_equal_numpy(arch, sparsity):
    """Two sweep steps of one SAE from a fresh state against the numpy Adam above, fed the gradient
    of the architecture's loss at the parameters the trainer had before each step. Inputs are tiny
    (gradients 1e-10…1e-6), so the update g / (|g| + eps) shows eps: eps = 1e-6 instead of 1e-8
    changes many entries tenfold; the second step shows the betas."""
    import jax
    import jax.numpy as jnp

    r = np.random.default_rng(3)
    x = (1e-4 * r.normal(size=(64, 16))).astype(np.float32)
    st = TrainSettings(d_sae=32, batch=64, steps=100, lr=1e-2, warmup_steps=0, sparsity_warmup_steps=0,
                       checkpoint_every=0)
    cfg, spec = ArchConfig(), SAESpec(arch, 0, sparsity)
    a = ARCHS[arch]
    state = init_state([spec], x.shape[1], st, x, cfg)
    step = make_step([spec], st, cfg)
    grad = jax.grad(lambda q: a.loss(q, jax.tree.map(lambda t: t[0], state["groups"][arch]["aux"]), jnp.asarray(x),
                                     jnp.float32(sparsity), {"step": 0, "sparsity_scale": 1.0}, cfg, False)[0])
    p = {k: np.asarray(v[0], np.float64) for k, v in state["groups"][arch]["params"].items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    compared = [k for k in p if k != "W_dec"]  # the decoder constraint also moves W_dec (tested elsewhere)
    small = 0
    for t in (1, 2):
        g = {k: np.asarray(val, np.float64) for k, val in grad({k: jnp.asarray(val, jnp.float32) for k, val in p.items()}).items()}
        assert np.sqrt(sum(np.sum(val**2) for val in g.values())) < 1.0  # no clipping on this step
        small += sum(int(np.sum((np.abs(g[k]) > 1e-10) & (np.abs(g[k]) < 1e-7))) for k in compared)
        state, _ = step(state, jnp.asarray(x))
        got = {k: np.asarray(val[0], np.float64) for k, val in state["groups"][arch]["params"].items()}
        for k in compared:
            want, m[k], v2[k] = _adam_ref(p[k], g[k], m[k], v2[k], t, st.lr, *a.betas)
            np.testing.assert_allclose(got[k] - p[k], want - p[k], rtol=1e-4, atol=st.lr * 1e-5, err_msg=f"{k} step {t}")
        p = got
    assert small > 20  # entries where eps matters
