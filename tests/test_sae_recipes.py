"""Every training architecture's loss and gradients against a direct float64 numpy transcription of
its recipe (shared/reference/sae_recipes.md, A1/A2; dictionary_learning is the paper's training code).

For each of relu, topk, batchtopk, matryoshka, jumprelu and gated, on small random inputs
(B=16 tokens, D=8, F=24; F=64 for Matryoshka so its default 1/32 group is non-empty):

* the total loss and every named term equal the numpy formula;
* the gradient of every parameter equals a hand-derived numpy gradient, and that hand gradient is
  itself checked against central finite differences of the numpy loss -- except the JumpReLU
  threshold, whose gradient is by definition the rectangle-kernel *pseudo*-gradient (finite
  differences see 0 there); it is written out in closed form for both the reconstruction path
  (through JumpReLU) and the L0 path (through Step);
* AuxK (TopK family) is checked by hand with latents marked dead through ``aux["since_fired"]``:
  top-k_aux of the dead latents' post-ReLU pre-activations, k_aux = min(D/2, #dead), decoder without
  bias, reconstructing the *detached* residual, divided by the residual's variance, coefficient 1/32;
* the unit-norm decoder constraints (parallel-gradient removal, row renormalisation) and one whole
  optimiser step of the trainer are checked against numpy transcriptions.

Inputs are drawn away from every kink (ReLU at 0, the top-k boundary, the JumpReLU jump and the
kernel edges), so the piecewise formulas are smooth at them.
"""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxsae.sae import ARCHS, ArchConfig, gated, jumprelu, ops, relu, topk
from jaxsae.sae.arch import PAPER_L1

B, D, F = 16, 8, 24
F_MAT = 64
LAM = 0.04  # L1 coefficient (relu, gated)
SCALE = 0.7  # sparsity warm-up factor in ctx
K = 4  # topk family
MARGIN = 2e-3  # distance kept from every kink

CTX = {"step": jnp.int32(5), "sparsity_scale": jnp.float32(SCALE)}


# ----------------------------------------------------------------------------------- helpers


def _f32(p):
    """Round a float64 param dict to float32 values (kept as float64 for the reference)."""
    return {k: np.asarray(v, np.float32).astype(np.float64) for k, v in p.items()}


def _unit_rows(w):
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def _run_jax(loss_fn, p64, aux, x64, sparsity, cfg, with_auxk):
    params = {k: jnp.asarray(v, jnp.float32) for k, v in p64.items()}
    x = jnp.asarray(x64, jnp.float32)

    @jax.jit
    def f(params, aux, x, sparsity, ctx):
        return jax.value_and_grad(
            lambda p: loss_fn(p, aux, x, sparsity, ctx, cfg, with_auxk), has_aux=True)(params)

    (total, (terms, new_aux, codes)), grads = f(params, aux, x, jnp.float32(sparsity), CTX)
    as_np = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float64), t)  # noqa: E731
    return float(total), as_np(terms), as_np(new_aux), np.asarray(codes, np.float64), as_np(grads)


def _close(got, want, what, rtol=2e-5):
    """float32 jax vs float64 numpy: relative to the entry, with an absolute floor relative to the
    array's scale (entries that are ~0 by cancellation)."""
    want = np.asarray(want, np.float64)
    got = np.asarray(got, np.float64)
    atol = rtol * max(float(np.max(np.abs(want))), 1e-12)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def _check_values(what, got, ref_total, ref_terms, ref_codes, ref_since):
    """The loss total, each named term, the codes and the since-fired counters of a ``_run_jax``
    result ``got`` against the float64 reference."""
    total, terms, new_aux, codes, _ = got
    _close(total, ref_total, f"{what} total")
    assert set(terms) == set(ref_terms)
    for name in ref_terms:
        _close(terms[name], ref_terms[name], f"{what} {name}")
    _close(codes, ref_codes, f"{what} codes")
    np.testing.assert_array_equal(new_aux["since_fired"], ref_since)


def _check_grads(got, want, what):
    assert set(got) == set(want), (what, sorted(got), sorted(want))
    for k in want:
        _close(got[k], want[k], f"{what}: d/d{k}")


def _fd_grads(loss64, p, skip=(), h=1e-6):
    """Central finite differences of a float64 numpy loss w.r.t. every entry of every param."""
    out = {}
    for name, v in p.items():
        if name in skip:
            continue
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            hi = {**p, name: v.copy()}
            lo = {**p, name: v.copy()}
            hi[name][idx] += h
            lo[name][idx] -= h
            g[idx] = (loss64(hi) - loss64(lo)) / (2 * h)
        out[name] = g
    return out


def _check_fd(hand, loss64, p, what, skip=()):
    fd = _fd_grads(loss64, p, skip)
    for k, g in fd.items():
        scale = max(float(np.max(np.abs(hand[k]))), 1e-12)
        np.testing.assert_allclose(hand[k], g, rtol=1e-5, atol=1e-6 * scale,
                                   err_msg=f"{what}: hand gradient d/d{k} vs finite differences")


def _away(v, at, margin=MARGIN):
    return bool(np.all(np.abs(v - at) > margin))


# ----------------------------------------------------------------------------- ReLU (April)
# f = ReLU((x - b_dec) W_enc + b_enc); x_hat = f W_dec + b_dec;
# loss = mean_b ||x - x_hat||^2 + lambda * s * mean_b sum_i f_i ||W_dec,i||


def _relu_ref(p, x, lam, s):
    z = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    f = np.maximum(z, 0.0)
    xh = f @ p["W_dec"] + p["b_dec"]
    mse = np.mean(np.sum((x - xh) ** 2, axis=-1))
    n = np.linalg.norm(p["W_dec"], axis=1)
    l1 = np.mean(np.sum(f * n, axis=-1))
    return mse + lam * s * l1, {"mse": mse, "l1": l1}, z, f, xh


def _relu_grads(p, x, lam, s):
    _, _, z, f, xh = _relu_ref(p, x, lam, s)
    n = np.linalg.norm(p["W_dec"], axis=1)
    g_xh = 2 * (xh - x) / B
    g_f = g_xh @ p["W_dec"].T + lam * s / B * n
    g_z = g_f * (z > 0)
    return {
        "W_enc": (x - p["b_dec"]).T @ g_z,
        "b_enc": g_z.sum(0),
        "W_dec": f.T @ g_xh + (lam * s / B) * f.sum(0)[:, None] * p["W_dec"] / n[:, None],
        "b_dec": g_xh.sum(0) - g_z.sum(0) @ p["W_enc"].T,
    }


def test_relu_loss_and_grads():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = _f32({
            "W_enc": rng.normal(size=(D, F)) * 0.5,
            "b_enc": rng.normal(size=F) * 0.2,
            # free decoder (April update): rows of different norms
            "W_dec": _unit_rows(rng.normal(size=(F, D))) * rng.uniform(0.3, 1.5, size=(F, 1)),
            "b_dec": rng.normal(size=D) * 0.1,
        })
        x = _f32({"x": rng.normal(size=(B, D))})["x"]
        if _away(_relu_ref(p, x, LAM, SCALE)[2], 0.0):
            break
    else:
        pytest.fail("no input away from the ReLU kink")
    aux = {"since_fired": jnp.zeros((F,), jnp.int32)}
    got = _run_jax(relu.loss, p, aux, x, LAM, ArchConfig(), False)
    ref_total, ref_terms, _, f, _ = _relu_ref(p, x, LAM, SCALE)
    _check_values("relu", got, ref_total, ref_terms, f, np.where(f.max(0) > 0, 0, B))
    grads = got[-1]
    hand = _relu_grads(p, x, LAM, SCALE)
    _check_fd(hand, lambda q: _relu_ref(q, x, LAM, SCALE)[0], p, "relu")
    _check_grads(grads, hand, "relu")


# ------------------------------------------------------------------ TopK family (+ AuxK)
# pre = ReLU((x - b_dec) W_enc + b_enc); f = pre * mask (top-k per token | top k*B of the batch);
# Matryoshka: x_hat_g = b_dec + sum_{groups <= g} f_h W_dec,h, recon = mean_g w_g ||x - x_hat_g||^2
# (TopK/BatchTopK: one group, w = 1). AuxK: e = sg(x - x_hat), dead = no firing in dead_tokens
# tokens counted after this batch, a = pre on the top-k_aux dead latents per token
# (k_aux = min(D // 2, #dead)), auxk = mean_b ||e - a W_dec||^2 / mean_b ||e - mean_b e||^2,
# loss = recon + alpha * auxk (alpha = 1/32).


def _rows_topk_mask(v, k):
    kth = -np.sort(-v, axis=1)[:, k - 1:k]
    return v >= kth


def _batch_topk_mask(v, k_total):
    kth = -np.sort(-v.ravel())[k_total - 1]
    return v >= kth


def _groups(kind, f_width, cfg):
    if kind != "matryoshka":
        return [(0, f_width, 1.0)]
    fr = cfg.matryoshka_fractions
    sizes = [int(q * f_width) for q in fr[:-1]]
    sizes.append(f_width - sum(sizes))
    w = cfg.matryoshka_weights or [1.0 / len(sizes)] * len(sizes)
    out, start = [], 0
    for s_, w_ in zip(sizes, w):
        out.append((start, start + s_, w_))
        start += s_
    return out


def _topk_fwd(p, x, k, kind, cfg):
    z = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    pre = np.maximum(z, 0.0)
    mask = _rows_topk_mask(pre, k) if kind == "topk" else _batch_topk_mask(pre, k * x.shape[0])
    f = pre * mask
    xh = np.broadcast_to(p["b_dec"], x.shape).copy()
    recons, mses = [], []
    for a, b, w in _groups(kind, pre.shape[1], cfg):
        xh = xh + f[:, a:b] @ p["W_dec"][a:b]
        recons.append(xh)
        mses.append(w * np.mean(np.sum((x - xh) ** 2, axis=-1)))
    return z, pre, mask, f, recons, float(np.mean(mses))


def _dead(f, since, n_tok, cfg):
    fired = f.max(0) > 0
    new_since = np.where(fired, 0, since + n_tok)
    return new_since, new_since >= cfg.dead_tokens


def _auxk(p, pre, e, dead):
    n_dead = int(dead.sum())
    if n_dead == 0:
        return 0.0, np.zeros_like(pre, bool), 0.0
    k_aux = min(p["W_dec"].shape[1] // 2, n_dead)
    masked = np.where(dead[None, :], pre, -np.inf)
    amask = _rows_topk_mask(masked, k_aux) & dead[None, :]
    a = pre * amask
    l2 = np.mean(np.sum((e - a @ p["W_dec"]) ** 2, axis=-1))
    denom = np.mean(np.sum((e - e.mean(0)) ** 2, axis=-1))
    return l2 / denom, amask, denom


def _topk_ref(p, x, k, kind, cfg, since, with_auxk, e_fixed=None):
    """(total, terms, dead, f); e_fixed: the detached residual (for finite differences)."""
    z, pre, mask, f, recons, recon = _topk_fwd(p, x, k, kind, cfg)
    _, dead = _dead(f, since, x.shape[0], cfg)
    e = (x - recons[-1]) if e_fixed is None else e_fixed
    auxk = _auxk(p, pre, e, dead)[0] if with_auxk else 0.0
    terms = {"mse": np.mean(np.sum((x - recons[-1]) ** 2, axis=-1)), "auxk": auxk}
    if kind == "matryoshka":
        terms["mse_groups"] = recon
    return recon + cfg.auxk_alpha * auxk, terms, dead, f


def _topk_grads(p, x, k, kind, cfg, since, with_auxk):
    z, pre, mask, f, recons, _ = _topk_fwd(p, x, k, kind, cfg)
    groups = _groups(kind, pre.shape[1], cfg)
    n_g = len(groups)
    gs = [w / n_g * 2 * (xh - x) / B for (_, _, w), xh in zip(groups, recons)]  # dL/dx_hat_g
    g_f = np.zeros_like(f)
    g_wdec = np.zeros_like(p["W_dec"])
    for h, (a, b, _) in enumerate(groups):
        c = sum(gs[h:])  # latents of group h feed every reconstruction from group h on
        g_f[:, a:b] = c @ p["W_dec"][a:b].T
        g_wdec[a:b] = f[:, a:b].T @ c
    g_pre = g_f * mask
    _, dead = _dead(f, since, B, cfg)
    if with_auxk and dead.any():
        e = x - recons[-1]  # detached: no gradient flows through it
        _, amask, denom = _auxk(p, pre, e, dead)
        a_ = pre * amask
        g_arec = cfg.auxk_alpha * 2 * (a_ @ p["W_dec"] - e) / (B * denom)
        g_pre = g_pre + (g_arec @ p["W_dec"].T) * amask
        g_wdec = g_wdec + a_.T @ g_arec
    g_z = g_pre * (z > 0)
    return {
        "W_enc": (x - p["b_dec"]).T @ g_z,
        "b_enc": g_z.sum(0),
        "W_dec": g_wdec,
        "b_dec": sum(gs).sum(0) - g_z.sum(0) @ p["W_enc"].T,
    }


def _topk_inputs(kind, f_width, dead_idx, cfg, seed):
    """Params/x with margins at the ReLU kink, the top-k boundary and the AuxK top-k_aux boundary;
    the latents ``dead_idx`` are weak (small positive pre-activations) so they stay out of the
    top-k but feed AuxK."""
    rng = np.random.default_rng(seed)
    since = np.zeros(f_width, np.int64)
    since[dead_idx] = cfg.dead_tokens - B  # dead after this batch unless they fire in it
    for _ in range(200):
        w_enc = rng.normal(size=(D, f_width)) * 0.6
        b_enc = rng.normal(size=f_width) * 0.2
        w_enc[:, dead_idx] *= 0.15
        b_enc[dead_idx] = rng.uniform(0.02, 0.1, size=len(dead_idx))
        p = _f32({"W_enc": w_enc, "b_enc": b_enc, "W_dec": _unit_rows(rng.normal(size=(f_width, D))),
                  "b_dec": rng.normal(size=D) * 0.1})
        x = _f32({"x": rng.normal(size=(B, D))})["x"]
        z, pre, mask, f, _, _ = _topk_fwd(p, x, K, kind, cfg)
        if not _away(z, 0.0):
            continue
        vals = -np.sort(-pre, axis=1) if kind == "topk" else -np.sort(-pre.ravel())[None, :]
        kk = K if kind == "topk" else K * B
        if np.any(vals[:, kk - 1] - vals[:, kk] < MARGIN) or np.any(vals[:, kk - 1] <= 0):
            continue
        _, dead = _dead(f, since, B, cfg)
        if sorted(np.flatnonzero(dead)) != sorted(dead_idx):
            continue
        if dead.any():
            k_aux = min(D // 2, int(dead.sum()))
            dv = -np.sort(-pre[:, dead], axis=1)
            if k_aux < dead.sum():
                # a gap at the k_aux boundary unless both sides are 0 (then nothing is taken)
                gap = dv[:, k_aux - 1] - dv[:, k_aux]
                if np.any((gap < MARGIN) & (dv[:, k_aux - 1] > 0)):
                    continue
            if (dv[:, 0] > 0).mean() < 0.5:  # AuxK must see real activations
                continue
        return p, x, since
    pytest.fail(f"no {kind} input away from the kinks")


TOPK_CASES = [
    # (kind, F, dead latents)
    ("topk", F, [3, 7, 11, 15, 19, 20, 22, 23]),  # 8 dead: k_aux = D/2 = 4 of them
    ("topk", F, [5, 17]),  # 2 dead: k_aux = #dead
    ("topk", F, []),  # none dead: AuxK = 0
    ("batchtopk", F, [1, 4, 9, 13, 18, 21]),
    ("batchtopk", F, [12]),
    ("matryoshka", F_MAT, [0, 3, 10, 20, 33, 40, 50, 63]),  # dead latents in several groups
]
LOSS_FN = {"topk": topk.loss_topk, "batchtopk": topk.loss_batchtopk,
           "matryoshka": topk.loss_matryoshka}


@pytest.mark.parametrize("kind,f_width,dead_idx", TOPK_CASES,
                         ids=[f"{c[0]}-{len(c[2])}dead" for c in TOPK_CASES])
def test_topk_family_loss_grads_and_auxk(kind, f_width, dead_idx):
    cfg = ArchConfig(dead_tokens=1000)
    p, x, since = _topk_inputs(kind, f_width, dead_idx, cfg, seed=len(dead_idx) + 7 * f_width)
    aux = {"since_fired": jnp.asarray(since, jnp.int32), "threshold": jnp.float32(-1.0)}
    got = _run_jax(LOSS_FN[kind], p, aux, x, K, cfg, True)

    ref_total, ref_terms, dead, f = _topk_ref(p, x, K, kind, cfg, since, True)
    assert int(dead.sum()) == len(dead_idx)
    assert (ref_terms["auxk"] > 0) == bool(dead_idx)
    _check_values(kind, got, ref_total, ref_terms, f, _dead(f, since, B, cfg)[0])
    grads = got[-1]

    hand = _topk_grads(p, x, K, kind, cfg, since, True)
    e_fixed = x - _topk_fwd(p, x, K, kind, cfg)[4][-1]
    _check_fd(hand, lambda q: _topk_ref(q, x, K, kind, cfg, since, True, e_fixed)[0], p, kind)
    _check_grads(grads, hand, kind)

    # with_auxk=False (the trainer's skip) drops the term and its gradient exactly
    total0, terms0, _, _, grads0 = _run_jax(LOSS_FN[kind], p, aux, x, K, cfg, False)
    _close(total0, _topk_ref(p, x, K, kind, cfg, since, False)[0], f"{kind} total without AuxK")
    assert terms0["auxk"] == 0.0
    _check_grads(grads0, _topk_grads(p, x, K, kind, cfg, since, False), f"{kind} without AuxK")


def test_auxk_hand_example():
    """AuxK on a case small enough to write out: D=2 (k_aux = 1), F=3, latent 2 dead."""
    w_dec = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    p = {"W_enc": w_dec.T.copy(), "b_enc": np.array([0.0, 0.0, -0.5]), "W_dec": w_dec,
         "b_dec": np.zeros(2)}
    x = np.array([[3.0, 1.0], [1.0, 2.0]])
    # pre = ReLU(x W_dec^T + b_enc): token 0 [3, 1, 2.1], token 1 [1, 2, 1.7]; k=1 keeps latent 0
    # then latent 1; latent 2 never fires and is dead, so a = its pre-activation on both tokens
    cfg = ArchConfig(dead_tokens=10)
    since = np.array([0, 0, 8])
    e = np.array([[0.0, 1.0], [1.0, 0.0]])  # x - x_hat
    a = np.array([2.1, 1.7])
    l2 = np.mean(np.sum((e - a[:, None] * w_dec[2]) ** 2, axis=-1))
    var = np.mean(np.sum((e - e.mean(0)) ** 2, axis=-1))  # = 0.5
    want = l2 / var
    assert abs(want - 3.9) < 1e-12  # (1.26^2 + 0.68^2 + 0.02^2 + 1.36^2) / 2 / 0.5
    aux = {"since_fired": jnp.asarray(since, jnp.int32), "threshold": jnp.float32(-1.0)}
    total, terms, _, _, g = _run_jax(topk.loss_topk, p, aux, x, 1.0, cfg, True)
    _close(terms["auxk"], want, "hand AuxK")
    _close(terms["mse"], 1.0, "hand mse")
    _close(total, 1.0 + want / 32, "hand total")
    # d auxk / d W_dec[2] = sum_b a_b * 2 (a_b W_dec[2] - e_b) / (B var), times alpha
    want_g = sum(a[b] * 2 * (a[b] * w_dec[2] - e[b]) for b in range(2)) / (2 * var) / 32
    _close(g["W_dec"][2], want_g, "hand AuxK d/dW_dec[dead]")


def test_threshold_ema_recipe():
    """Inference threshold: EMA (beta 0.999, on steps > 1000) of the batch-mean of each token's
    smallest positive top-k code (TopK) or of the batch's smallest positive code (BatchTopK)."""
    cfg = ArchConfig(dead_tokens=1000)
    p, x, since = _topk_inputs("topk", F, [], cfg, seed=1)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
    for kind, fn in (("topk", topk.loss_topk), ("batchtopk", topk.loss_batchtopk)):
        fn = jax.jit(fn, static_argnums=(5, 6))
        f = _topk_fwd(p, x, K, kind, cfg)[3]
        pos = np.where(f > 0, f, np.inf)
        v = pos.min(1).mean() if kind == "topk" else pos.min()
        for step, thr, want in ((1000, -1.0, -1.0), (1001, -1.0, v), (1001, 0.5, 0.999 * 0.5 + 0.001 * v)):
            aux = {"since_fired": jnp.zeros((F,), jnp.int32), "threshold": jnp.float32(thr)}
            ctx = {"step": jnp.int32(step), "sparsity_scale": jnp.float32(1.0)}
            _, (_, new_aux, _) = fn(params, aux, jnp.asarray(x, jnp.float32), jnp.float32(K), ctx, cfg, False)
            _close(new_aux["threshold"], want, f"{kind} threshold at step {step} from {thr}", rtol=1e-6)


# -------------------------------------------------------------------------------- JumpReLU
# z = x W_enc + b_enc (no b_dec subtraction); f = z H(z - theta); x_hat = f W_dec + b_dec;
# L0 = mean_b sum_i Step(f_i, theta_i); loss = mse + c * s * (L0 / target - 1)^2.
# Pseudo-gradients, K(u) = 1[-1/2 < u < 1/2]:
#   d f / d z = H(z - theta);  d f / d theta = -(theta / eps) K((z - theta) / eps)
#   d Step(v, theta) / d v = 0; d Step / d theta = -(1 / eps) K((v - theta) / eps)
# threshold gradients summed over the batch. Step's argument: dictionary_learning's JumpReluTrainer
# applies it to f (``StepFunction.apply(f, threshold, bandwidth)``), SAELens to z; they differ only
# for entries below the threshold (f = 0), which reach the kernel iff theta < eps / 2. We follow the
# paper's training code (f) and cover both regimes.

EPS = 0.3
COEF = 0.5
TARGET = 5.0


def _rect(u):
    return ((u > -0.5) & (u < 0.5)).astype(np.float64)


def _jr_fwd(p, x):
    z = x @ p["W_enc"] + p["b_enc"]
    f = z * (z > p["threshold"])
    xh = f @ p["W_dec"] + p["b_dec"]
    return z, f, xh


def _jr_ref(p, x, target, s, coef):
    z, f, xh = _jr_fwd(p, x)
    mse = np.mean(np.sum((x - xh) ** 2, axis=-1))
    l0 = np.mean(np.sum(f > p["threshold"], axis=-1))
    pen = coef * (l0 / target - 1.0) ** 2
    return mse + pen * s, {"mse": mse, "l0_penalty": pen}, l0


def _jr_grads(p, x, target, s, coef, eps):
    z, f, xh = _jr_fwd(p, x)
    th = p["threshold"]
    _, _, l0 = _jr_ref(p, x, target, s, coef)
    g_xh = 2 * (xh - x) / B
    g_f = g_xh @ p["W_dec"].T
    g_z = g_f * (z > th)
    # reconstruction path, through JumpReLU's threshold pseudo-gradient
    g_th_recon = np.sum(-(th / eps) * _rect((z - th) / eps) * g_f, axis=0)
    # L0 path, through Step's threshold pseudo-gradient (d pen / d L0 times d L0 / d Step = 1/B)
    g_l0 = coef * s * 2 * (l0 / target - 1.0) / target
    g_th_l0 = np.sum(-(1.0 / eps) * _rect((f - th) / eps) * (g_l0 / B), axis=0)
    return {
        "W_enc": x.T @ g_z,
        "b_enc": g_z.sum(0),
        "W_dec": f.T @ g_xh,
        "b_dec": g_xh.sum(0),
        "threshold": g_th_recon + g_th_l0,
    }, g_th_recon, g_th_l0


def _jr_inputs(seed):
    rng = np.random.default_rng(seed)
    for _ in range(500):
        th = rng.uniform(0.2, 0.6, size=F)
        th[:4] = rng.uniform(0.03, 0.12, size=4)  # theta < eps/2: f = 0 entries hit the L0 kernel
        p = _f32({"W_enc": rng.normal(size=(D, F)) * 0.3, "b_enc": rng.normal(size=F) * 0.1 + 0.3,
                  "W_dec": _unit_rows(rng.normal(size=(F, D))), "b_dec": rng.normal(size=D) * 0.1,
                  "threshold": th})
        x = _f32({"x": rng.normal(size=(B, D))})["x"]
        z, f, _ = _jr_fwd(p, x)
        t = p["threshold"]
        # away from the jump and from every kernel edge, for both z and f
        if not (_away(z, t) and _away(np.abs(z - t), EPS / 2) and _away(np.abs(f - t), EPS / 2)):
            continue
        if not _away(np.mean(np.sum(z > t, -1)), TARGET, 0.5):
            continue
        return p, x
    pytest.fail("no JumpReLU input away from the jump and kernel edges")


def test_jumprelu_loss_grads_and_pseudo_gradients():
    cfg = ArchConfig(jumprelu_bandwidth=EPS, jumprelu_sparsity_coef=COEF)
    p, x = _jr_inputs(3)
    z, f, _ = _jr_fwd(p, x)
    t = p["threshold"]
    u = (z - t) / EPS
    # the inputs exercise every piece of the kernels
    assert np.any((u > 0) & (u < 0.5)), "entries just above the threshold"
    assert np.any((u > -0.5) & (u < 0)), "entries just below the threshold (recon path only)"
    assert np.any(_rect((f - t) / EPS) * (f == 0)), "f = 0 entries inside the Step kernel"

    aux = {"since_fired": jnp.zeros((F,), jnp.int32)}
    got = _run_jax(jumprelu.loss, p, aux, x, TARGET, cfg, False)
    ref_total, ref_terms, _ = _jr_ref(p, x, TARGET, SCALE, COEF)
    _check_values("jumprelu", got, ref_total, ref_terms, f, np.where(f.max(0) > 0, 0, B))
    grads = got[-1]

    hand, g_recon, g_l0 = _jr_grads(p, x, TARGET, SCALE, COEF, EPS)
    assert np.any(g_recon != 0) and np.any(g_l0 != 0)
    # every parameter but the threshold has a true gradient: finite differences agree
    _check_fd(hand, lambda q: _jr_ref(q, x, TARGET, SCALE, COEF)[0], p, "jumprelu", skip=("threshold",))
    _check_grads(grads, hand, "jumprelu")

    # each threshold path on its own: zero the other one
    _, _, _, _, g_no_pen = _run_jax(jumprelu.loss, p, aux, x, TARGET,
                                    cfg.replace(jumprelu_sparsity_coef=0.0), False)
    _close(g_no_pen["threshold"], g_recon, "jumprelu d/dtheta, reconstruction path only")
    _close(grads["threshold"] - g_no_pen["threshold"], g_l0, "jumprelu d/dtheta, L0 path only")


def test_jumprelu_primitives():
    """jump_relu / step VJPs element by element, at the recipe's default eps = 0.001."""
    eps = ArchConfig().jumprelu_bandwidth
    assert eps == 0.001 and ArchConfig().jumprelu_theta_init == 0.001
    theta = np.array([0.001, 0.002, 0.0004])
    # columns: inside (above), inside (below), outside, far below, for each threshold
    z = np.stack([theta + 0.0003, theta - 0.0003, theta + 0.0007, theta - 0.01, np.zeros(3)])
    g = np.arange(1.0, 16.0).reshape(5, 3) / 7
    zj, tj, gj = (jnp.asarray(a, jnp.float32) for a in (z, theta, g))
    out, vjp = jax.vjp(lambda zz, tt: jumprelu.jump_relu(zz, tt, eps), zj, tj)
    dz, dth = vjp(gj)
    _close(out, z * (z > theta), "jump_relu forward")
    _close(dz, (z > theta) * g, "jump_relu dz")
    _close(dth, np.sum(-(theta / eps) * _rect((z - theta) / eps) * g, 0), "jump_relu dtheta")
    out, vjp = jax.vjp(lambda zz, tt: jumprelu.step(zz, tt, eps), zj, tj)
    dv, dth = vjp(gj)
    np.testing.assert_array_equal(np.asarray(out), (z > theta).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(dv), 0.0)
    want = np.sum(-(1.0 / eps) * _rect((z - theta) / eps) * g, 0)
    _close(dth, want, "step dtheta")
    # the zero row reaches the kernel only for theta = 0.0004 < eps/2
    assert _rect((0 - theta) / eps).tolist() == [0.0, 0.0, 1.0]


def test_jumprelu_inference_codes_are_relu_gated_like_the_export():
    """ARCHS["jumprelu"].encode is what the exported SAE computes (sae_recipes.md §2.5, §4:
    f = ReLU(z) * 1[z > theta]): theta is raw and unconstrained, so it can go negative in training,
    and a pre-activation between a negative theta and 0 must give code 0 (dictionary_learning's
    ``JumpReluAutoEncoder.encode`` and SAELens apply the ReLU too), not a negative code."""
    from jaxsae.sae import inference

    r = np.random.default_rng(3)
    p = {"W_enc": r.normal(size=(D, F)), "b_enc": r.normal(size=F) * 0.1, "W_dec": r.normal(size=(F, D)),
         "b_dec": r.normal(size=D), "threshold": np.where(np.arange(F) % 2 == 0, -0.5, 0.2)}
    p = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
    x = r.normal(size=(B, D)).astype(np.float32)
    z = x @ np.asarray(p["W_enc"], np.float64) + np.asarray(p["b_enc"])
    want = np.maximum(z, 0.0) * (z > np.asarray(p["threshold"]))
    assert ((z < 0) & (z > np.asarray(p["threshold"]))).sum() > 5  # codes the ReLU zeroes
    got = np.asarray(ARCHS["jumprelu"].encode(p, None, jnp.asarray(x), jnp.float32(8), ArchConfig()))
    _close(got, want, "jumprelu inference codes")
    s = inference.EncodeStatic("jumprelu", apply_b_dec_to_input=False)
    _close(got, inference.encode(p, jnp.asarray(x), s), "jumprelu codes = the exported SAE's")


# ----------------------------------------------------------------------------------- Gated
# u = (x - b_dec) W_enc; pi_gate = u + b_gate; pi_mag = exp(r_mag) u + b_mag;
# f = 1[pi_gate > 0] ReLU(pi_mag); x_hat = f W_dec + b_dec;
# loss = mse + lambda * s * mean_b ||ReLU(pi_gate)||_1 + mean_b ||x - (ReLU(pi_gate) sg(W_dec) + sg(b_dec))||^2


def _gated_ref(p, x, lam, s, sg=None):
    """sg: the detached (W_dec, b_dec) of the aux reconstruction (for finite differences)."""
    w_sg, b_sg = sg if sg is not None else (p["W_dec"], p["b_dec"])
    u = (x - p["b_dec"]) @ p["W_enc"]
    pg = u + p["b_gate"]
    pm = np.exp(p["r_mag"]) * u + p["b_mag"]
    f = (pg > 0) * np.maximum(pm, 0.0)
    xh = f @ p["W_dec"] + p["b_dec"]
    mse = np.mean(np.sum((x - xh) ** 2, axis=-1))
    ga = np.maximum(pg, 0.0)
    l1 = np.mean(np.sum(np.abs(ga), axis=-1))
    xg = ga @ w_sg + b_sg
    aux = np.mean(np.sum((x - xg) ** 2, axis=-1))
    return mse + lam * s * l1 + aux, {"mse": mse, "l1": l1, "aux": aux}, (u, pg, pm, f, xh, ga, xg)


def _gated_grads(p, x, lam, s):
    _, _, (u, pg, pm, f, xh, ga, xg) = _gated_ref(p, x, lam, s)
    g_xh = 2 * (xh - x) / B
    g_xg = 2 * (xg - x) / B
    g_f = g_xh @ p["W_dec"].T
    g_pm = g_f * (pg > 0) * (pm > 0)
    g_pg = (lam * s / B + g_xg @ p["W_dec"].T) * (pg > 0)  # the gate's step itself has no gradient
    er = np.exp(p["r_mag"])
    g_u = g_pm * er + g_pg
    return {
        "W_enc": (x - p["b_dec"]).T @ g_u,
        "b_gate": g_pg.sum(0),
        "b_mag": g_pm.sum(0),
        "r_mag": np.sum(g_pm * u, axis=0) * er,
        "W_dec": f.T @ g_xh,  # the aux reconstruction's decoder is detached
        "b_dec": g_xh.sum(0) - g_u.sum(0) @ p["W_enc"].T,
    }


def _gated_inputs(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        p = _f32({"W_enc": rng.normal(size=(D, F)) * 0.5, "b_gate": rng.normal(size=F) * 0.3,
                  "b_mag": rng.normal(size=F) * 0.3, "r_mag": rng.normal(size=F) * 0.3,
                  "W_dec": _unit_rows(rng.normal(size=(F, D))), "b_dec": rng.normal(size=D) * 0.1})
        x = _f32({"x": rng.normal(size=(B, D))})["x"]
        _, _, (u, pg, pm, *_) = _gated_ref(p, x, LAM, SCALE)
        if _away(pg, 0.0) and _away(pm, 0.0):
            return p, x
    pytest.fail("no gated input away from the kinks")


def test_gated_loss_and_grads():
    p, x = _gated_inputs(4)
    _, _, (u, pg, pm, f, *_) = _gated_ref(p, x, LAM, SCALE)
    assert np.any((pg > 0) & (pm < 0)) and np.any((pg < 0) & (pm > 0)), "gate and magnitude disagree somewhere"
    aux = {"since_fired": jnp.zeros((F,), jnp.int32)}
    got = _run_jax(gated.loss, p, aux, x, LAM, ArchConfig(), False)
    ref_total, ref_terms, _ = _gated_ref(p, x, LAM, SCALE)
    _check_values("gated", got, ref_total, ref_terms, f, np.where(f.max(0) > 0, 0, B))
    grads = got[-1]
    hand = _gated_grads(p, x, LAM, SCALE)
    sg = (p["W_dec"].copy(), p["b_dec"].copy())
    _check_fd(hand, lambda q: _gated_ref(q, x, LAM, SCALE, sg)[0], p, "gated")
    _check_grads(grads, hand, "gated")


# ------------------------------------------------------------------ decoder constraints


def test_decoder_constraint_functions():
    rng = np.random.default_rng(5)
    w = _f32({"w": rng.normal(size=(F, D)) * rng.uniform(0.5, 2.0, size=(F, 1))})["w"]
    g = _f32({"g": rng.normal(size=(F, D))})["g"]
    wj, gj = jnp.asarray(w, jnp.float32), jnp.asarray(g, jnp.float32)
    n = np.linalg.norm(w, axis=1, keepdims=True)
    # dictionary_learning remove_gradient_parallel_to_decoder_directions: W / (||W|| + 1e-6)
    normed = w / (n + 1e-6)
    want = g - np.sum(g * normed, axis=1, keepdims=True) * normed
    _close(ops.remove_parallel_grad(wj, gj), want, "remove_parallel_grad (+1e-6)")
    # ConstrainedAdam (gated): bare norm
    normed = w / n
    want_bare = g - np.sum(g * normed, axis=1, keepdims=True) * normed
    got = ops.remove_parallel_grad(wj, gj, eps=0.0)
    _close(got, want_bare, "remove_parallel_grad (bare)")
    assert np.max(np.abs(np.sum(np.asarray(got, np.float64) * w, axis=1))) < 1e-5
    # set_decoder_norm_to_unit_norm: W / (||W|| + float32 eps); ConstrainedAdam: W / ||W||
    eps32 = float(np.finfo(np.float32).eps)
    _close(ops.unit_norm_rows(wj, eps=eps32), w / (n + eps32), "unit_norm_rows (+eps)")
    _close(ops.unit_norm_rows(wj), w / n, "unit_norm_rows (bare)")


def test_recipe_constants():
    """The per-architecture recipe of sae_recipes.md A2 (dictionary_learning)."""
    cfg = ArchConfig()
    assert cfg.auxk_alpha == 1 / 32 and cfg.dead_tokens == 10_000_000
    assert cfg.threshold_beta == 0.999 and cfg.threshold_start_step == 1000
    assert cfg.matryoshka_fractions == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2 + 1 / 32)
    assert topk.matryoshka_groups(F_MAT, cfg) == ((2, 4, 8, 16, 34), (0.2,) * 5)
    want = {  # decoder constraint, Adam betas, grad-norm clip, b_dec geometric-median init
        "relu": ("free", (0.9, 0.999), 1.0, False),
        "topk": ("unit", (0.9, 0.999), 1.0, True),
        "batchtopk": ("unit", (0.9, 0.999), 1.0, True),
        "matryoshka": ("unit", (0.9, 0.999), 1.0, True),
        "jumprelu": ("unit", (0.0, 0.999), 1.0, False),
        "gated": ("unit_bare", (0.0, 0.999), None, False),
    }
    for name, (dec, betas, clip, gm) in want.items():
        a = ARCHS[name]
        assert (a.decoder, a.betas, a.clip_norm, a.gm_init) == (dec, betas, clip, gm), name
    assert PAPER_L1["relu"] == (0.06, 0.04, 0.03, 0.02, 0.015, 0.012)  # protocol §3, sparse -> dense
    assert PAPER_L1["gated"] == (0.08, 0.06, 0.04, 0.024, 0.018, 0.012)


@pytest.mark.parametrize("arch_name", ["topk", "gated"])
def test_one_trainer_step_applies_the_constraints(arch_name):
    """One Adam step of the trainer against numpy: hand gradient, parallel-gradient removal
    (+1e-6 for the TopK family, bare for gated's ConstrainedAdam), global-norm clip 1 (TopK only),
    Adam with the recipe's betas, then decoder rows renormalised (+eps32 / bare)."""
    import optax

    from jaxsae.train.spec import TrainSettings
    from jaxsae.train.trainer import _one_sae, optimizer

    arch = ARCHS[arch_name]
    step, lr = 10, 1e-3
    st = TrainSettings(d_sae=F, batch=B, steps=1000, lr=lr, warmup_steps=1, decay_start=1.0,
                       sparsity_warmup_steps=20)
    s = step / 20
    if arch_name == "topk":
        cfg = ArchConfig(dead_tokens=1000)
        p, x, since = _topk_inputs("topk", F, [3, 7, 11, 15, 19], cfg, seed=11)
        aux = {"since_fired": jnp.asarray(since, jnp.int32), "threshold": jnp.float32(-1.0)}
        sparsity, eps_proj, eps_norm = K, 1e-6, float(np.finfo(np.float32).eps)
    else:
        cfg = ArchConfig()
        p, x = _gated_inputs(4)
        aux = {"since_fired": jnp.zeros((F,), jnp.int32)}
        sparsity, eps_proj, eps_norm = LAM, 0.0, 0.0
    # Rows are unit-norm in training, where the two projection eps differ by ~1e-6 relative; rows of
    # norm 1e-3 make the choice visible (1e-3 relative), so this pins down which one each arch uses.
    p["W_dec"] = _f32({"w": _unit_rows(p["W_dec"]) * 1e-3})["w"]
    g = (_topk_grads(p, x, K, "topk", cfg, since, True) if arch_name == "topk"
         else _gated_grads(p, x, LAM, s))
    rng = np.random.default_rng(6)
    m = {k: _f32({"m": rng.normal(size=v.shape) * 0.01})["m"] for k, v in p.items()}
    v = {k: _f32({"v": rng.uniform(1e-5, 1e-4, size=val.shape)})["v"] for k, val in p.items()}

    w = p["W_dec"]
    normed = w / (np.linalg.norm(w, axis=1, keepdims=True) + eps_proj)
    g["W_dec"] = g["W_dec"] - np.sum(g["W_dec"] * normed, axis=1, keepdims=True) * normed
    if arch.clip_norm is not None:
        norm = np.sqrt(sum(np.sum(a ** 2) for a in g.values()))
        g = {k: a * min(1.0, arch.clip_norm / (norm + 1e-6)) for k, a in g.items()}
    b1, b2 = arch.betas
    t = step + 1
    c1 = 1 - b1 ** t if b1 > 0 else 1.0
    c2 = 1 - b2 ** t
    want = {}
    for k in p:
        m_ = b1 * m[k] + (1 - b1) * g[k]
        v_ = b2 * v[k] + (1 - b2) * g[k] ** 2
        want[k] = p[k] - lr * (m_ / c1) / (np.sqrt(v_ / c2) + 1e-8)
    want["W_dec"] = want["W_dec"] / (np.linalg.norm(want["W_dec"], axis=1, keepdims=True) + eps_norm)

    j = lambda d: {k: jnp.asarray(a, jnp.float32) for k, a in d.items()}  # noqa: E731
    # the optax state after `step` updates, holding these moments (Adam's and the schedule's count)
    opt = optax.tree_utils.tree_set(optimizer(arch, st).init(j(p)), mu=j(m), nu=j(v), count=jnp.int32(step))
    params, _, _, _ = jax.jit(
        lambda *a: _one_sae(arch, cfg, st, *a, with_auxk=arch.has_auxk)
    )(j(p), aux, opt, jnp.float32(sparsity), jnp.asarray(x, jnp.float32), jnp.int32(step))
    for k in p:
        # compare the step taken (~lr), allowing for float32 rounding of the parameters themselves
        got_step, want_step = np.asarray(params[k], np.float64) - p[k], want[k] - p[k]
        atol = max(1e-4 * np.max(np.abs(want_step)), 4 * np.finfo(np.float32).eps * np.max(np.abs(want[k])))
        np.testing.assert_allclose(got_step, want_step, rtol=1e-4, atol=atol, err_msg=f"{arch_name} step {k}")
    if eps_proj == 0.0:
        assert np.max(np.abs(np.sum(g["W_dec"] * p["W_dec"], axis=1))) < 1e-12  # exactly tangent


@pytest.mark.parametrize("digit_bits", [1, 2, 4])
def test_radix_topk_threshold_is_the_exact_kth_largest(digit_bits, monkeypatch):
    """The radix search (1 bit per pass: the CPU's bisection; 4: the accelerators') returns
    lax.top_k's k-th largest value (per row, over the whole batch and among valid columns) for
    every k, with zeros, ties, denormals and huge values present."""
    import jax
    import jax.numpy as jnp

    from jaxsae.sae import ops

    monkeypatch.setattr(ops, "DIGIT_BITS", digit_bits)

    r = np.random.RandomState(0)
    v = np.abs(r.randn(6, 40)).astype(np.float32)
    v[0, :30] = 0.0  # fewer positives than k
    v[1, 5:15] = 1.5  # ties at the threshold
    v[2, :3] = [1e-40, 3e38, np.float32(2.0) ** -126]
    for k in (1, 2, 7, 10, 11, 40):
        want = np.asarray(jax.lax.top_k(jnp.asarray(v), k)[0])[:, -1]
        got = np.asarray(ops.topk_mask(jnp.asarray(v), k))
        np.testing.assert_array_equal(got, v >= want[:, None], err_msg=f"k={k}")
        flat = np.sort(v.ravel())[::-1][k * 3 - 1]
        np.testing.assert_array_equal(np.asarray(ops.batch_topk_mask(jnp.asarray(v), k * 3)), v >= flat)
    valid = r.rand(40) < 0.5
    want = np.asarray(jax.lax.top_k(jnp.asarray(np.where(valid, v, -1.0)), 5)[0])[:, -1]
    np.testing.assert_array_equal(np.asarray(ops.masked_topk_mask(jnp.asarray(v), jnp.asarray(valid), 5)),
                                  (v >= want[:, None]) & valid)
    k_rows = jnp.asarray([[1], [3], [5], [8], [13], [40]])  # a per-row k
    got = np.asarray(ops.topk_mask(jnp.asarray(v), k_rows))
    for i, k in enumerate(np.asarray(k_rows)[:, 0]):
        np.testing.assert_array_equal(got[i], v[i] >= np.sort(v[i])[::-1][k - 1])


@pytest.mark.parametrize("arch_name", ["relu", "topk", "jumprelu", "gated"])
def test_optimizer_chain_equals_torch_adam_over_several_steps(arch_name):
    """The trainer's optax chain plus the decoder renormalisation, 8 updates through the LR warmup,
    plateau and decay, against torch doing what dictionary_learning's trainers do: the parallel
    gradient removed from W_dec (rows / (norm + 1e-6); bare norm for Gated's ConstrainedAdam),
    ``clip_grad_norm_``, ``torch.optim.Adam`` with the recipe's betas at the schedule's LR, rows
    renormalised (+eps32; bare for Gated). Some gradients are tiny (1e-7) so that Adam's eps is
    visible in the step (an eps of 1e-6 instead of 1e-8 changes those entries' steps ~10x)."""
    torch = pytest.importorskip("torch")
    import optax

    from jaxsae.train.spec import TrainSettings
    from jaxsae.train.trainer import constrain_decoder, optimizer

    arch = ARCHS[arch_name]
    st = TrainSettings(d_sae=F, batch=B, steps=10, lr=1e-2, warmup_steps=3, decay_start=0.5)
    rng = np.random.default_rng(3)
    w_fd = _unit_rows(rng.normal(size=(F, D)))
    p0 = _f32({"W_enc": rng.normal(size=(D, F)) * 0.3, "b_enc": rng.normal(size=F) * 0.1, "W_dec": w_fd,
               "b_dec": rng.normal(size=D) * 0.1})
    grad_scale = {"W_enc": 0.05, "b_enc": 1e-7, "W_dec": 0.05, "b_dec": 3.0}  # clipped (norm > 1) and tiny
    grads = [{k: rng.normal(size=v.shape) * grad_scale[k] for k, v in p0.items()} for _ in range(8)]

    opt = optimizer(arch, st)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in p0.items()}
    state = opt.init(params)

    @jax.jit
    def jax_step(params, state, g):
        updates, state = opt.update(g, state, params)
        return constrain_decoder(arch, optax.apply_updates(params, updates)), state

    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in p0.items()}
    b1, b2 = arch.betas
    adam = torch.optim.Adam(list(tp.values()), lr=st.lr, betas=(b1, b2))
    decay = int(st.decay_start * st.steps)
    for step, g in enumerate(grads):
        params, state = jax_step(params, state, {k: jnp.asarray(v, jnp.float32) for k, v in g.items()})
        with torch.no_grad():
            for k, t in tp.items():
                t.grad = torch.tensor(np.asarray(g[k], np.float32), dtype=torch.float64)
            if arch.decoder != "free":
                w = tp["W_dec"]
                normed = w / (w.norm(dim=1, keepdim=True) + (1e-6 if arch.decoder == "unit" else 0.0))
                w.grad -= (w.grad * normed).sum(dim=1, keepdim=True) * normed
        if arch.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(tp.values()), arch.clip_norm)
        lr_scale = step / st.warmup_steps if step < st.warmup_steps else (
            (st.steps - step) / (st.steps - decay) if step >= decay else 1.0)
        adam.param_groups[0]["lr"] = st.lr * lr_scale
        adam.step()
        with torch.no_grad():
            w = tp["W_dec"]
            if arch.decoder == "unit":
                w /= w.norm(dim=1, keepdim=True) + float(np.finfo(np.float32).eps)
            elif arch.decoder == "unit_bare":
                w /= w.norm(dim=1, keepdim=True)
    for k in p0:
        got = np.asarray(params[k], np.float64) - p0[k]
        want = tp[k].detach().numpy() - p0[k]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=4 * np.finfo(np.float32).eps * np.max(np.abs(p0[k])),
                                   err_msg=f"{arch_name} {k} after 8 steps")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_centred_encoder_takes_b_decs_gradient_the_short_way(dtype):
    """centred_matmul gives (x - b_dec) W_enc bit for bit, and the gradients of plain autodiff of
    that product: b_dec's as -(Σ_b g_b) W_enc^T, the same sum in another order (f32: to 1e-5; bf16
    matmuls: the sum is rounded to bf16 once instead of each g_b, both within bf16's 2^-8 of the
    f32 gradient)."""
    from jaxsae.sae.arch import ArchConfig, centred_matmul, matmul

    cfg = ArchConfig(matmul_dtype=dtype)
    r = np.random.default_rng(0)
    x, b, w = (jnp.asarray(r.normal(size=s), jnp.float32) for s in ((16, 8), (8,), (8, 24)))
    g = jnp.asarray(r.normal(size=(16, 24)), jnp.float32)
    short = lambda x, b, w: centred_matmul(x, b, w, cfg)  # noqa: E731
    assert np.array_equal(np.asarray(short(x, b, w)), np.asarray(matmul(x - b, w, cfg)))
    exact = jax.vjp(lambda x, b, w: (x - b) @ w, x, b, w)[1](g)  # f32
    got = jax.vjp(short, x, b, w)[1](g)
    tol = 1e-5 if dtype == "float32" else 2.0 ** -8
    for name, a, e in zip(("x", "b_dec", "W_enc"), got, exact):
        a, e = np.asarray(a), np.asarray(e)
        assert np.linalg.norm(a - e) <= tol * np.linalg.norm(e), name
    assert np.abs(np.asarray(got[1])).max() > 1.0  # b_dec does get a gradient
