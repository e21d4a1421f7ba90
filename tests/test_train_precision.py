"""Mixed precision (``train.matmul_dtype``): the bf16 matmul against numpy on bf16-rounded operands
(forward and both gradients, f32 accumulation), the "auto" rule, and bf16 sweep training on planted
data reaching the FVU and L0 of f32 training: within 3% for TopK, BatchTopK, ReLU and Gated; within
3% of the range of five f32 runs on bf16-sized perturbations of the data for JumpReLU, whose FVU
moves by several percent under such a perturbation in f32 alone."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxsae.errors import UserError
from jaxsae.sae import ArchConfig
from jaxsae.sae.arch import matmul
from jaxsae.train import ActivationArray, SAESpec, TrainSettings, train_sweep
from jaxsae.train.spec import resolve_matmul_dtype


def _bf16(a):
    """float64 values of ``a`` rounded to bfloat16 (round to nearest even)."""
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def test_bf16_matmul_rounds_the_operands_and_accumulates_in_f32():
    rng = np.random.default_rng(0)
    a, b, g = rng.normal(size=(64, 48)), rng.normal(size=(48, 40)), rng.normal(size=(64, 40))
    cfg = ArchConfig(matmul_dtype="bfloat16")
    f32 = lambda t: jnp.asarray(t, jnp.float32)  # noqa: E731
    out, vjp = jax.vjp(lambda x, y: matmul(x, y, cfg), f32(a), f32(b))
    da, db = vjp(f32(g))
    assert out.dtype == da.dtype == db.dtype == jnp.float32
    a16, b16, g16 = _bf16(a), _bf16(b), _bf16(g)
    # f32 accumulation of exact bf16 products: within f32 rounding of the float64 sums
    np.testing.assert_allclose(np.asarray(out), a16 @ b16, rtol=0, atol=1e-5 * np.abs(a16 @ b16).max())
    np.testing.assert_allclose(np.asarray(da), g16 @ b16.T, rtol=0, atol=1e-5 * np.abs(g16 @ b16.T).max())
    np.testing.assert_allclose(np.asarray(db), a16.T @ g16, rtol=0, atol=1e-5 * np.abs(a16.T @ g16).max())
    # the rounding is real (bf16 keeps 8 bits): the f32 product differs by far more than that
    assert np.abs(np.asarray(out) - a @ b).max() > 1e-3
    f32_out = matmul(f32(a), f32(b), ArchConfig())
    np.testing.assert_allclose(np.asarray(f32_out), a @ b, rtol=1e-5, atol=1e-5)


def test_auto_is_bf16_on_accelerators_and_f32_on_cpu():
    assert resolve_matmul_dtype("auto", "cpu") == "float32"
    assert resolve_matmul_dtype("auto", "gpu") == "bfloat16" == resolve_matmul_dtype("auto", "tpu")
    assert resolve_matmul_dtype("float32", "tpu") == "float32"
    with pytest.raises(UserError, match="matmul_dtype 'fp16' is not one of auto, float32, bfloat16"):
        resolve_matmul_dtype("fp16")


def planted(n=12000, d=32, f=32, p=0.09, seed=0):
    r = np.random.RandomState(seed)
    dirs = r.randn(f, d).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    codes = (r.rand(n, f) < p) * r.exponential(1.0, (n, f))
    return (codes @ dirs + 0.01 * r.randn(n, d)).astype(np.float32)


def test_bf16_training_reaches_the_fvu_and_l0_of_f32(tmp_path):
    x = planted()
    specs = [SAESpec("topk", 0, 3.0), SAESpec("batchtopk", 0, 3.0), SAESpec("jumprelu", 0, 3.0),
             SAESpec("relu", 0, 0.3), SAESpec("gated", 0, 0.3)]
    got = {}
    for dtype in ("float32", "bfloat16"):
        st = TrainSettings(d_sae=64, batch=256, steps=600, lr=5e-3, checkpoint_every=0, matmul_dtype=dtype)
        res = train_sweep(specs, ActivationArray(x, 256), st, tmp_path / dtype, progress=False)
        assert res["settings"]["matmul_dtype"] == dtype
        assert json.loads((tmp_path / dtype / "sweep.json").read_text())["settings"]["matmul_dtype"] == dtype
        got[dtype] = {e["name"]: e for e in res["saes"]}
    # JumpReLU's thresholds amplify rounding: f32 runs on this data perturbed at bf16's precision
    # moved its FVU by -4.2% .. +1.3% (a 1e-6 perturbation by -2.2%), where the other architectures
    # agree within 1%. One f32 run is then no yardstick within 3% (on an AVX2 CPU bf16 gave -5.7%
    # against it): JumpReLU's bf16 run is held to within 3% of the range of five f32 runs, on the
    # data as is, rounded to bf16, and with three draws of relative noise 2^-9.
    jump = [SAESpec("jumprelu", 0, 3.0)]
    envelope = [got["float32"]["jumprelu-l03"]]
    copies = [x.astype(ml_dtypes.bfloat16).astype(np.float32)]
    copies += [(x * (1 + 2.0**-9 * np.random.RandomState(seed).randn(*x.shape))).astype(np.float32) for seed in range(1, 4)]
    for k, data in enumerate(copies):
        st = TrainSettings(d_sae=64, batch=256, steps=600, lr=5e-3, checkpoint_every=0, matmul_dtype="float32")
        envelope.append(train_sweep(jump, ActivationArray(data, 256), st, tmp_path / f"f32-{k}", progress=False)["saes"][0])
    for name, f32 in got["float32"].items():
        bf16 = got["bfloat16"][name]
        assert f32["fvu"] < 0.1, (name, f32)
        for key in ("fvu", "l0"):
            if name == "jumprelu-l03":
                lo, hi = min(e[key] for e in envelope), max(e[key] for e in envelope)
                assert 0.97 * lo <= bf16[key] <= 1.03 * hi, (name, key, [e[key] for e in envelope], bf16[key])
                assert hi / lo < 1.15, (name, key, [e[key] for e in envelope])  # the f32 runs agree among themselves
            else:
                assert bf16[key] == pytest.approx(f32[key], rel=0.03), (name, f32, bf16)
        assert (bf16["fvu"], bf16["l0"]) != (f32["fvu"], f32["l0"])  # bf16 really ran
