"""The sweep trainer: planted-feature recovery, vmapped == alone, 8 devices == 1, exact resume,
export round trip, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jaxsae.sae as S
from jaxsae.errors import UserError
from jaxsae.train import ActivationArray, SAESpec, TrainSettings, train_sweep

ROOT = Path(__file__).resolve().parents[1]


def planted(n=12000, d=32, f=48, p=0.06, seed=0):
    """x = sparse codes · D + noise, with unit-norm planted directions D f32[f, d]."""
    r = np.random.RandomState(seed)
    dirs = r.randn(f, d).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    codes = (r.rand(n, f) < p) * r.exponential(1.0, (n, f))
    return (codes @ dirs + 0.01 * r.randn(n, d)).astype(np.float32), dirs


def recovered(sae, dirs) -> float:
    w = np.asarray(sae.params["W_dec"])
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return float((np.abs(dirs @ w.T).max(axis=1) > 0.9).mean())


def weights(out: Path, name: str) -> dict:
    return {k: np.asarray(v) for k, v in S.load(out / name).params.items()}


def test_planted_features_recovered_near_target_l0(tmp_path):
    x, dirs = planted()
    specs = [SAESpec("topk", 0, 3.0), SAESpec("batchtopk", 0, 3.0), SAESpec("jumprelu", 0, 3.0),
             SAESpec("relu", 0, 0.3), SAESpec("gated", 0, 0.3)]
    st = TrainSettings(d_sae=96, batch=256, steps=2500, lr=3e-3, checkpoint_every=0)
    res = train_sweep(specs, ActivationArray(x, 256), st, tmp_path / "s", progress=False)
    by = {e["architecture"]: e for e in res["saes"]}
    for arch in ("topk", "batchtopk", "jumprelu"):
        assert abs(by[arch]["l0"] - 3.0) < 1.2, (arch, by[arch]["l0"])
        assert recovered(S.load(tmp_path / "s" / by[arch]["dir"]), dirs) > 0.8, arch
    for arch in ("relu", "gated"):  # L1 recipes: sparse, good reconstructions, planted directions found
        assert by[arch]["fvu"] < 0.15 and by[arch]["l0"] < 30, (arch, by[arch])
        assert recovered(S.load(tmp_path / "s" / by[arch]["dir"]), dirs) > 0.5, arch
    sweep = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert {e["name"] for e in sweep["saes"]} == {s.name for s in specs}
    rows = [json.loads(ln) for ln in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "mse", "l0", "fvu", "dead_frac", "lr", "sae", "step"} <= set(rows[-1])


SPECS = [SAESpec("topk", 0, 4.0), SAESpec("jumprelu", 1, 4.0), SAESpec("relu", 0, 0.03), SAESpec("gated", 0, 0.03),
         SAESpec("batchtopk", 0, 4.0), SAESpec("matryoshka", 0, 4.0), SAESpec("topk", 1, 6.0)]
SMALL = TrainSettings(d_sae=64, batch=128, steps=40, lr=1e-3, checkpoint_every=0, warmup_steps=5, sparsity_warmup_steps=10)


def test_vmapped_sweep_equals_training_each_alone(tmp_path):
    x, _ = planted(n=4000, seed=1)
    train_sweep(SPECS, ActivationArray(x, 128), SMALL, tmp_path / "all", progress=False)
    for spec in SPECS[:4] + SPECS[-1:]:
        train_sweep([spec], ActivationArray(x, 128), SMALL, tmp_path / spec.name, progress=False)
        a, b = weights(tmp_path / "all", spec.name), weights(tmp_path / spec.name, spec.name)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=2e-5, rtol=1e-4, err_msg=f"{spec.name}.{k}")


@pytest.mark.parametrize("dead_tokens", [10**6, 128])  # no latent can be dead / dead after one batch
def test_auxk_is_skipped_only_while_no_latent_can_be_dead(dead_tokens):
    import functools

    import jax
    import jax.numpy as jnp

    from jaxsae.sae import ARCHS, ArchConfig
    from jaxsae.train.trainer import _one_sae, init_state, make_step

    x, _ = planted(n=512, seed=5)
    specs = [SAESpec("topk", 0, 4.0), SAESpec("batchtopk", 0, 4.0), SAESpec("topk", 1, 2.0)]
    cfg = ArchConfig(dead_tokens=dead_tokens)
    state = init_state(specs, x.shape[1], SMALL, x[:128], cfg)

    def always_auxk(state, x_bd):  # the reference: AuxK computed on every step
        new = {"step": state["step"] + 1, "groups": {}}
        mets = {}
        for arch, s in state["groups"].items():
            fn = functools.partial(_one_sae, ARCHS[arch], cfg, SMALL, with_auxk=True)
            p, a, m, v, mets[arch] = jax.vmap(fn, in_axes=(0, 0, 0, 0, 0, None, None))(
                s["params"], s["aux"], s["m"], s["v"], s["sparsity"], x_bd, state["step"])
            new["groups"][arch] = {"params": p, "aux": a, "m": m, "v": v, "sparsity": s["sparsity"]}
        return new, mets

    got, want = jax.tree.map(jnp.array, state), jax.tree.map(jnp.array, state)
    step, ref = make_step(specs, SMALL, cfg), jax.jit(always_auxk)
    for i in range(4):
        got, m_got = step(got, jnp.asarray(x[128 * i:128 * (i + 1)]))
        want, m_want = ref(want, jnp.asarray(x[128 * i:128 * (i + 1)]))
    auxk = np.asarray(m_want["topk"]["auxk"])
    assert (auxk > 0).all() if dead_tokens == 128 else (auxk == 0).all()
    np.testing.assert_allclose(np.asarray(m_got["topk"]["auxk"]), auxk, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
                 got, want)


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    x, _ = planted(n=4000, seed=2)
    st = TrainSettings(d_sae=64, batch=128, steps=40, lr=1e-3, checkpoint_every=10, warmup_steps=5, sparsity_warmup_steps=10)
    train_sweep(SPECS, ActivationArray(x, 128), st, tmp_path / "once", progress=False)
    assert train_sweep(SPECS, ActivationArray(x, 128), st, tmp_path / "twice", progress=False, stop_after=23) == {}
    assert (tmp_path / "twice" / "checkpoints").exists() and not (tmp_path / "twice" / "sweep.json").exists()
    train_sweep(SPECS, ActivationArray(x, 128), st, tmp_path / "twice", progress=False)
    for spec in SPECS:
        a, b = weights(tmp_path / "once", spec.name), weights(tmp_path / "twice", spec.name)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{spec.name}.{k}")
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "twice" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # no duplicated rows after the resume


def test_export_load_round_trip_is_exact(tmp_path):
    x, _ = planted(n=2000, seed=3)
    train_sweep(SPECS[:3], ActivationArray(x, 128), SMALL, tmp_path / "s", progress=False)
    for spec in SPECS[:3]:
        sae = S.load(tmp_path / "s" / spec.name)
        S.save(sae, tmp_path / "copy" / spec.name)
        again = S.load(tmp_path / "copy" / spec.name)
        assert again.cfg == sae.cfg
        for k in sae.params:
            np.testing.assert_array_equal(np.asarray(sae.params[k]), np.asarray(again.params[k]))
        np.testing.assert_array_equal(np.asarray(sae.encode(x[:64])), np.asarray(again.encode(x[:64])))
        assert int(sae.cfg["metadata"]["sae_lens_version"].split(".")[0]) >= 6


_DEVICES = textwrap.dedent(
    """
    import sys, numpy as np, jax
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_train_sweep import SPECS, SMALL, planted
    from jaxsae.train import ActivationArray, train_sweep, make_mesh
    assert jax.device_count() == 8
    x, _ = planted(n=4000, seed=1)
    train_sweep(SPECS, ActivationArray(x, 128), SMALL, Path(sys.argv[1]), mesh=make_mesh(2, 4), progress=False)
    print("OK")
    """
)


def test_8_fake_devices_equal_1_device(tmp_path):
    x, _ = planted(n=4000, seed=1)
    train_sweep(SPECS, ActivationArray(x, 128), SMALL, tmp_path / "one", progress=False)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", _DEVICES, str(tmp_path / "eight"), str(Path(__file__).parent)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
    for spec in SPECS:
        a, b = weights(tmp_path / "one", spec.name), weights(tmp_path / "eight", spec.name)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-4, rtol=1e-3, err_msg=f"{spec.name}.{k}")


def test_nan_stops_with_the_sae_and_step_named(tmp_path):
    x, _ = planted(n=2000, seed=4)
    x[300] = np.nan  # a poisoned activation
    with pytest.raises(UserError, match=r"non-finite loss at step \d+"):
        train_sweep(SPECS[:2], ActivationArray(x, 128), SMALL, tmp_path / "s", progress=False)


def test_bad_input(tmp_path):
    x, _ = planted(n=2000)
    with pytest.raises(UserError, match="unknown architecture"):
        from jaxsae.train import sweep_from_l0

        sweep_from_l0(["topk", "nope"], [8])
    with pytest.raises(UserError, match="between 1 and d_sae"):
        train_sweep([SAESpec("topk", 0, 100.0)], ActivationArray(x, 128), SMALL, tmp_path / "k", progress=False)
    train_sweep(SPECS[:1], ActivationArray(x, 128), SMALL, tmp_path / "s", progress=False)
    with pytest.raises(UserError, match="different sweep"):
        train_sweep(SPECS[1:2], ActivationArray(x, 128), SMALL, tmp_path / "s", progress=False)
    with pytest.raises(UserError, match="different sweep"):  # activations of another width
        train_sweep(SPECS[:1], ActivationArray(x[:, :16].copy(), 128), SMALL, tmp_path / "s", progress=False)


def _cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "jaxsae.train", *args, "--no-progress"], capture_output=True,
                          text=True, env=env, timeout=300)


def test_cli_on_npy_and_errors(tmp_path):
    x, _ = planted(n=3000)
    np.save(tmp_path / "acts.npy", x)
    r = _cli("--activations", str(tmp_path / "acts.npy"), "--archs", "relu,topk", "--l0", "4,6", "--d-sae", "64",
             "--batch", "128", "--steps", "20", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-2000:]
    sweep = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert len(sweep["saes"]) == 4 and all("l0" in e and "fvu" in e for e in sweep["saes"])
    bad = _cli("--activations", str(tmp_path / "acts.npy"), "--archs", "topk,wat", "--out", str(tmp_path / "o2"))
    assert bad.returncode == 2 and "unknown architecture" in bad.stderr
    missing = _cli("--activations", str(tmp_path / "none.npy"), "--out", str(tmp_path / "o3"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_cli_harvest_layer_out_of_range(tmp_path):
    r = _cli("--model", "tiny-random-llama", "--layer", "9", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "out of range" in r.stderr
