"""The sweep trainer: planted-feature recovery, vmapped == alone, 8 devices == 1, exact resume,
export round trip and normalisation folding, NaN stops, recorded settings, the data a sweep came
from, and bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import launcher

import jaxsae.sae as S
from jaxsae.errors import UserError
from jaxsae.train import ActivationArray, SAESpec, TrainSettings, train_sweep
from conftest import fake_devices_flags

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
    from jaxsae.sae import ArchConfig

    x, dirs = planted(f=32, p=0.09)  # 32 planted directions, 2.88 active per token
    specs = [SAESpec("topk", 0, 3.0), SAESpec("batchtopk", 0, 3.0), SAESpec("jumprelu", 0, 3.0),
             SAESpec("matryoshka", 0, 3.0), SAESpec("relu", 0, 0.3), SAESpec("gated", 0, 0.3)]
    st = TrainSettings(d_sae=64, batch=256, steps=1200, lr=5e-3, checkpoint_every=0)
    # Matryoshka in two halves: the recipe's first groups (2, 4, 8 latents) are smaller than the 32
    # independent planted features, so their nested reconstructions must mix them; a 32-latent
    # prefix keeps the whole recipe (nested losses, BatchTopK, AuxK, threshold) on a solvable problem.
    cfg = ArchConfig(matryoshka_fractions=(0.5, 0.5))
    res = train_sweep(specs, ActivationArray(x, 256), st, tmp_path / "s", arch_cfg=cfg, progress=False)
    by = {e["architecture"]: e for e in res["saes"]}
    for arch, e in by.items():  # L1 recipes (relu, gated) near the planted L0, the others near k / target
        target = 0.09 * 32 if arch in ("relu", "gated") else 3.0
        assert abs(e["l0"] - target) < 1.2 and e["fvu"] < 0.1, (arch, e)
        assert recovered(S.load(tmp_path / "s" / e["dir"]), dirs) > 0.75, arch
    sweep = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert {e["name"] for e in sweep["saes"]} == {s.name for s in specs}
    rows = [json.loads(ln) for ln in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "mse", "l0", "fvu", "dead_frac", "lr", "sae", "step"} <= set(rows[-1])
    assert not any(k.startswith("_") for k in rows[-1])


SPECS = [SAESpec("topk", 0, 4.0), SAESpec("jumprelu", 1, 4.0), SAESpec("relu", 0, 0.03), SAESpec("gated", 0, 0.03),
         SAESpec("batchtopk", 0, 4.0), SAESpec("matryoshka", 0, 4.0), SAESpec("topk", 1, 6.0)]
SMALL = TrainSettings(d_sae=64, batch=128, steps=40, lr=1e-3, checkpoint_every=0, warmup_steps=5, sparsity_warmup_steps=10)


PAIRS = [SAESpec("batchtopk", 1, 6.0), SAESpec("matryoshka", 1, 6.0)]  # 2 SAEs in each of these groups


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> Path:
    """SPECS + PAIRS trained as one sweep on one device (planted seed 1, SMALL): the reference of
    training each SAE alone and of 8 fake devices."""
    out = tmp_path_factory.mktemp("one_device")
    train_sweep(SPECS + PAIRS, ActivationArray(planted(n=4000, seed=1)[0], 128), SMALL, out, progress=False)
    return out


def test_vmapped_sweep_equals_training_each_alone(tmp_path, one_device):
    x, _ = planted(n=4000, seed=1)
    for spec in SPECS[:5] + SPECS[-1:] + PAIRS[1:]:
        train_sweep([spec], ActivationArray(x, 128), SMALL, tmp_path / spec.name, progress=False)
        a, b = weights(one_device, spec.name), weights(tmp_path / spec.name, spec.name)
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
            p, a, o, mets[arch] = jax.vmap(fn, in_axes=(0, 0, 0, 0, None, None))(
                s["params"], s["aux"], s["opt"], s["sparsity"], x_bd, state["step"])
            new["groups"][arch] = {"params": p, "aux": a, "opt": o, "sparsity": s["sparsity"]}
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


RESUMED = TrainSettings(d_sae=64, batch=128, steps=40, lr=1e-3, checkpoint_every=10, warmup_steps=5, sparsity_warmup_steps=10)
"""The settings of the kill / resume tests (a checkpoint every 10 steps)."""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The sweep of RESUMED trained without a stop on planted(n=4000, seed=2): what every
    interrupted and resumed run must equal exactly (trained once for the module's tests)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "once"
    train_sweep(SPECS, ActivationArray(planted(n=4000, seed=2)[0], 128), RESUMED, out, progress=False)
    return out


def test_kill_and_resume_equals_uninterrupted(tmp_path, uninterrupted):
    x, _ = planted(n=4000, seed=2)
    st = RESUMED
    assert train_sweep(SPECS, ActivationArray(x, 128), st, tmp_path / "twice", progress=False, stop_after=23) == {}
    assert (tmp_path / "twice" / "checkpoints").exists() and not (tmp_path / "twice" / "sweep.json").exists()
    train_sweep(SPECS, ActivationArray(x, 128), st, tmp_path / "twice", progress=False)
    for spec in SPECS:
        a, b = weights(uninterrupted, spec.name), weights(tmp_path / "twice", spec.name)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{spec.name}.{k}")
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "twice" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # no duplicated rows after the resume


def test_export_load_round_trip_is_exact(tmp_path):
    x, _ = planted(n=2000, seed=3)
    train_sweep(SPECS, ActivationArray(x, 128), SMALL, tmp_path / "s", progress=False)
    kinds = set()
    for spec in SPECS:  # every architecture: gated, batchtopk and matryoshka (as jumprelu) included
        sae = S.load(tmp_path / "s" / spec.name)
        S.save(sae, tmp_path / "copy" / spec.name)
        again = S.load(tmp_path / "copy" / spec.name)
        assert again.cfg == sae.cfg
        assert sae.params.keys() == again.params.keys()
        for k in sae.params:
            np.testing.assert_array_equal(np.asarray(sae.params[k]), np.asarray(again.params[k]))
        np.testing.assert_array_equal(np.asarray(sae.encode(x[:64])), np.asarray(again.encode(x[:64])))
        np.testing.assert_array_equal(np.asarray(sae(x[:64])), np.asarray(again(x[:64])))
        assert int(sae.cfg["metadata"]["sae_lens_version"].split(".")[0]) >= 6
        kinds.add(sae.arch)
    assert kinds == {"standard", "topk", "jumprelu", "gated"}


def test_export_folds_the_normalisation_exactly(tmp_path):
    """exported encode(x) == trained encode(x / s) * s * n_f (n_f: the trained decoder row norms,
    folded into the encoder so exported rows are unit) and the exported reconstruction equals the
    trained one, for every architecture, from the trainer's own state after a few steps."""
    import jax
    import jax.numpy as jnp

    from jaxsae.sae import ARCHS, ArchConfig
    from jaxsae.sae.arch import decode
    from jaxsae.train.run import export_sweep
    from jaxsae.train.trainer import groups_of, init_state, make_step

    x, _ = planted(n=1280, seed=6)
    scale = 2.5
    xs = (x / scale).astype(np.float32)
    cfg = ArchConfig(threshold_start_step=2, dead_tokens=256)
    state = init_state(SPECS, x.shape[1], SMALL, xs[:128], cfg)
    step = make_step(SPECS, SMALL, cfg)
    for i in range(10):
        state, _ = step(state, jnp.asarray(xs[128 * i:128 * (i + 1)]))
    host = jax.device_get(state)
    export_sweep(host, SPECS, SMALL, scale, x.shape[1], tmp_path, {}, cfg)
    raw = x[:256]
    for g in groups_of(SPECS):
        arch = ARCHS[g.arch]
        for i, name in enumerate(g.names):
            p = jax.tree.map(lambda a: jnp.asarray(a[i]), host["groups"][g.arch]["params"])
            aux = jax.tree.map(lambda a: jnp.asarray(a[i]), host["groups"][g.arch]["aux"])
            if arch.has_threshold_ema:
                assert float(aux["threshold"]) > 0, name  # the exported threshold is a learned one
            sae = S.load(tmp_path / name)
            f_train = np.asarray(arch.encode(p, aux, jnp.asarray(raw / scale), g.sparsity[i], cfg))
            n_f = np.linalg.norm(np.asarray(p["W_dec"]), axis=1) if sae.arch != "topk" else np.ones(f_train.shape[1])
            f_want = f_train * scale * n_f
            f_got = np.asarray(sae.encode(raw))
            assert (f_got != 0).sum() > 0, name
            np.testing.assert_array_equal(f_got != 0, f_want != 0, err_msg=name)
            np.testing.assert_allclose(f_got, f_want, rtol=1e-5, atol=1e-5 * scale, err_msg=name)
            np.testing.assert_allclose(np.linalg.norm(np.asarray(sae.params["W_dec"]), axis=1), 1.0, atol=1e-5, err_msg=name)
            x_want = np.asarray(decode(p, jnp.asarray(f_train))) * scale
            np.testing.assert_allclose(np.asarray(sae(raw)), x_want, rtol=1e-4, atol=1e-4 * scale, err_msg=name)


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


def test_8_fake_devices_equal_1_device(tmp_path, one_device):
    """SPECS on a (sweep 2, feat 4) mesh of 8 fake devices: each SAE as in the one-device sweep
    (which also holds PAIRS: each SAE trains as if alone, test_vmapped_sweep_equals_training_each_alone)."""
    env = dict(os.environ, XLA_FLAGS=fake_devices_flags(8), JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", _DEVICES, str(tmp_path / "eight"), str(Path(__file__).parent)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
    for spec in SPECS:
        a, b = weights(one_device, spec.name), weights(tmp_path / "eight", spec.name)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-4, rtol=1e-3, err_msg=f"{spec.name}.{k}")


class PoisonedAt(ActivationArray):
    """Activations whose batch at one step holds a NaN (after the batches the scale is estimated on)."""

    def __init__(self, acts, batch, step):
        super().__init__(acts, batch)
        self.bad_step = step

    def batch_at(self, step, rows=None):
        out = super().batch_at(step, rows)
        if step == self.bad_step:
            out[3] = np.nan
        return out


def test_nan_stops_with_the_sae_and_step_named_keeping_the_last_good_checkpoint(tmp_path):
    import dataclasses

    x, _ = planted(n=2000, seed=4)
    st = dataclasses.replace(SMALL, checkpoint_every=10)
    with pytest.raises(UserError) as e:
        train_sweep(SPECS[:2], PoisonedAt(x, 128, 25), st, tmp_path / "s", progress=False)
    msg = str(e.value)
    assert f"SAE {SPECS[0].name} has a non-finite loss at step 25" in msg and "checkpoint (step 20)" in msg, msg
    assert "\n" not in msg
    assert (tmp_path / "s" / "checkpoints" / "20").is_dir() and not (tmp_path / "s" / "checkpoints" / "30").exists()
    # the kept checkpoint is the good one: resuming on clean data gives the uninterrupted run
    train_sweep(SPECS[:2], ActivationArray(x, 128), st, tmp_path / "s", progress=False)
    train_sweep(SPECS[:2], ActivationArray(x, 128), st, tmp_path / "once", progress=False)
    for spec in SPECS[:2]:
        a, b = weights(tmp_path / "once", spec.name), weights(tmp_path / "s", spec.name)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{spec.name}.{k}")


def test_non_finite_parameters_stop_training_without_checkpoints(tmp_path):
    """An infinite LR: the loss of the first step is finite, the parameters after it are not; with
    checkpoint_every=0 nothing was saved."""
    import dataclasses

    x, _ = planted(n=2000, seed=4)
    st = dataclasses.replace(SMALL, lr=float("inf"), checkpoint_every=0)
    with pytest.raises(UserError, match=rf"SAE {SPECS[0].name} has non-finite parameters after the update at step 0; "
                                        "no checkpoint was saved"):
        train_sweep(SPECS[:2], ActivationArray(x, 128), st, tmp_path / "s", progress=False)
    assert not list((tmp_path / "s" / "checkpoints").glob("*"))


def test_first_bad_names_the_sae_and_what_is_not_finite():
    from jaxsae.train.trainer import first_bad

    specs = [SAESpec("topk", 0, 4.0), SAESpec("topk", 1, 6.0), SAESpec("relu", 0, 0.1)]
    ok = {"topk": {"loss": np.ones(2, np.float32), "_params_finite": np.ones(2, bool)},
          "relu": {"loss": np.ones(1, np.float32), "_params_finite": np.ones(1, bool)}}
    assert first_bad(ok, specs) is None
    params = {**ok, "topk": {**ok["topk"], "_params_finite": np.array([True, False])}}
    assert first_bad(params, specs) == ("topk-k6", "parameters")
    loss = {**params, "relu": {**ok["relu"], "loss": np.array([np.inf], np.float32)}}
    assert first_bad(loss, specs) == ("topk-k6", "parameters")  # the first SAE in sweep order
    loss["topk"] = ok["topk"]
    assert first_bad(loss, specs) == ("relu-l10.1", "loss")


def test_a_nan_in_the_scale_batches_is_refused(tmp_path):
    x, _ = planted(n=2000, seed=4)
    x[300] = np.nan
    with pytest.raises(UserError, match="NaN or inf values"):
        train_sweep(SPECS[:1], ActivationArray(x, 128), SMALL, tmp_path / "s", progress=False)


def test_short_runs_record_and_print_the_scaled_down_recipe(tmp_path, capsys):
    import dataclasses

    from jaxsae.sae import ArchConfig

    x, _ = planted(n=2000, seed=5)
    res = train_sweep(SPECS[:1], ActivationArray(x, 128), SMALL, tmp_path / "s", progress=False)
    scaled = {"warmup_steps": [5, 4], "sparsity_warmup_steps": [10, 8], "dead_tokens": [10_000_000, 2560],
              "threshold_start_step": [1000, 8]}
    assert res["scaled_down"] == scaled
    assert {k: res["settings"][k] for k in scaled} == {k: v[1] for k, v in scaled.items()}
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["scaled_down"] == scaled
    md = S.load(tmp_path / "s" / SPECS[0].name).metadata["jaxsae"]
    assert md["scaled_down"] == scaled and md["settings"] == res["settings"]
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "scaled down" in ln]
    assert len(lines) == 1 and all(w in lines[0] for w in ("LR warmup 5 -> 4", "sparsity warmup 10 -> 8",
                                                            "dead window 10,000,000 -> 2,560", "threshold EMA start 1000 -> 8"))
    fits = dataclasses.replace(SMALL, warmup_steps=2, sparsity_warmup_steps=4, dead_tokens=1000)
    res = train_sweep(SPECS[:1], ActivationArray(x, 128), fits, tmp_path / "t", arch_cfg=ArchConfig(threshold_start_step=5),
                      progress=False)
    assert res["scaled_down"] == {} and "scaled down" not in capsys.readouterr().out
    assert res["settings"]["warmup_steps"] == 2 and res["settings"]["threshold_start_step"] == 5


def test_the_signature_holds_what_the_activations_came_from(tmp_path):
    x, _ = planted(n=2000, seed=7)
    md = {"model_name": "m", "hook_layer": 3, "dataset_path": "embedded", "context_size": 128}
    res = train_sweep(SPECS[:1], ActivationArray(x, 128), SMALL, tmp_path / "s", metadata=md, progress=False)
    data = res["signature"]["data"]
    assert {k: data[k] for k in md} == md and data["n_tokens"] == 2000 and data["fingerprint"]
    assert train_sweep(SPECS[:1], ActivationArray(x, 128), SMALL, tmp_path / "s", metadata=md, progress=False) == res
    for change in ({"hook_layer": 4}, {"model_name": "other"}, {"dataset_path": "hf:x"}):
        with pytest.raises(UserError, match=rf"different sweep \(data\.{list(change)[0]}: .* there, .* here\)"):
            train_sweep(SPECS[:1], ActivationArray(x, 128), SMALL, tmp_path / "s", metadata={**md, **change},
                        progress=False)
    with pytest.raises(UserError, match=r"data\.n_tokens: 2000 there, 1900 here"):  # fewer tokens
        train_sweep(SPECS[:1], ActivationArray(x[:1900], 128), SMALL, tmp_path / "s", metadata=md, progress=False)
    other = x.copy()
    other[0] += 1.0
    with pytest.raises(UserError, match=r"data\.fingerprint"):  # same shape, other values
        train_sweep(SPECS[:1], ActivationArray(other, 128), SMALL, tmp_path / "s", metadata=md, progress=False)


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


def _cli(*args, module="jaxsae.train"):
    """``python -m module *args`` (in this process: tests/launcher.py)."""
    return launcher.python_m(module, *args)


SMALL_SWEEP = ("--sweep", "smoke", "--train.archs", "topk", "relu", "--train.levels", "0", "--train.d-sae", "64",
               "--train.tokens", "2560", "--train.steps", "6")


def test_cli_is_the_launchers_train_stage(tmp_path):
    out = tmp_path / "run"
    r = _cli(*SMALL_SWEEP, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    sweep = json.loads((out / "tiny-random-llama" / "sweep" / "sweep.json").read_text())
    assert [e["name"] for e in sweep["saes"]] == ["topk-k50", "relu-l10.06"]  # --train.archs x --train.levels 0 (the sparsest)
    assert sweep["settings"]["steps"] == 6 and sweep["settings"]["d_sae"] == 64  # --train.steps is a real option
    assert (out / "tiny-random-llama" / "activations.npy").is_file()
    assert sorted(p.name for p in (out / "manifests").glob("*.json")) == ["train.json"]  # the train stage alone
    md = S.load(out / "tiny-random-llama" / "sweep" / sweep["saes"][0]["dir"]).metadata
    assert md["hook_layer"] == 1 and md["model_name"] == "tiny-random-llama"
    again = _cli(*SMALL_SWEEP, "--out", out)  # the launcher's resume: nothing recomputed
    assert again.returncode == 0 and "train: done" in again.stdout and "skipped" in again.stdout, again.stdout
    changed = _cli(*SMALL_SWEEP, "--train.d-sae", "32", "--out", out)  # another sweep in the same folder: refused
    assert changed.returncode == 2 and "train" in changed.stderr and len(changed.stderr.strip().splitlines()) == 1


def test_cli_errors(tmp_path):
    r = _cli("--sweep", "smoke", "--stages", "metrics", "--out", tmp_path / "o")
    assert r.returncode == 2 and "train stage only" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("--sweep", "smoke", "--train.archs", "topk", "wat", "--out", tmp_path / "o")
    assert r.returncode == 2 and "wat" in r.stderr  # not one of the architectures (tyro's report)
    deep = tmp_path / "deep.toml"
    deep.write_text('name = "deep"\n[[models]]\nname = "t"\nsource = "tiny-random-llama"\nlayer = 9\n'
                    '[train]\narchs = ["topk"]\nlevels = [0]\nd_sae = 64\n')
    r = _cli("--sweep", deep, "--out", tmp_path / "o")
    assert r.returncode == 2 and "out of range" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o" / "t").exists()


def test_cli_help_lists_the_train_options():
    r = _cli("--sweep", "smoke", "--help")
    assert r.returncode == 0, r.stderr
    for opt in ("python -m jaxsae.train", "--train.archs", "--train.levels", "--train.steps", "--data.source"):
        assert opt in r.stdout, opt


def test_a_torn_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, uninterrupted):
    x, _ = planted(n=4000, seed=2)
    st = RESUMED
    assert train_sweep(SPECS, ActivationArray(x, 128), st, tmp_path / "torn", progress=False, stop_after=30) == {}
    ckpts = tmp_path / "torn" / "checkpoints"
    assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [20, 30]
    for f in (ckpts / "30").rglob("*"):  # as a kill in the middle of writing it would leave it
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
    train_sweep(SPECS, ActivationArray(x, 128), st, tmp_path / "torn", progress=False)
    assert "checkpoint of step 30" in capsys.readouterr().out
    for spec in SPECS:  # resumed from step 20: the same SAEs as the uninterrupted run
        a, b = weights(uninterrupted, spec.name), weights(tmp_path / "torn", spec.name)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{spec.name}.{k}")


def test_no_readable_checkpoint_is_a_one_line_error(tmp_path):
    x, _ = planted(n=4000, seed=2)
    st = TrainSettings(d_sae=64, batch=128, steps=40, lr=1e-3, checkpoint_every=10, warmup_steps=5, sparsity_warmup_steps=10)
    assert train_sweep(SPECS, ActivationArray(x, 128), st, tmp_path / "t", progress=False, stop_after=20) == {}
    for f in (tmp_path / "t" / "checkpoints").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    with pytest.raises(UserError, match="no checkpoint .* can be read .*--redo train"):
        train_sweep(SPECS, ActivationArray(x, 128), st, tmp_path / "t", progress=False)


_KILLED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_train_sweep import SPECS, planted
    from jaxsae.train import ActivationArray, TrainSettings, train_sweep
    x, _ = planted(n=4000, seed=2)
    st = TrainSettings(d_sae=64, batch=128, steps=40, lr=1e-3, checkpoint_every=2, warmup_steps=5, sparsity_warmup_steps=10)
    train_sweep(SPECS, ActivationArray(x, 128), st, Path(sys.argv[1]), progress=False)
    """
)


def kill_while_writing(out: Path) -> bool:
    """Run _KILLED into ``out`` and SIGKILL it once a checkpoint is finished and another is being
    written; whether that happened."""
    import signal
    import time

    p = subprocess.Popen([sys.executable, "-c", _KILLED, str(out), str(Path(__file__).parent)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    caught = False
    t0 = time.monotonic()
    while p.poll() is None and time.monotonic() - t0 < 300:
        ckpt = out / "checkpoints"
        names = [d.name for d in ckpt.iterdir()] if ckpt.is_dir() else []
        if any(n.isdigit() for n in names) and any("tmp" in n for n in names):
            p.send_signal(signal.SIGKILL)
            caught = True
            break
        time.sleep(0.002)
    p.communicate(timeout=60)
    return caught and p.returncode == -signal.SIGKILL


def test_sigkill_while_a_checkpoint_is_written_resumes_to_the_same_saes(tmp_path, uninterrupted):
    """Training in a subprocess, a checkpoint every 2 steps (written asynchronously), killed with
    SIGKILL the moment a checkpoint is being written (its temporary folder exists): the resumed
    run gives the SAEs of an uninterrupted one exactly."""
    x, _ = planted(n=4000, seed=2)
    st = dataclasses.replace(RESUMED, checkpoint_every=2)  # the reference checkpoints every 10: no effect on the SAEs
    for attempt in range(3):  # the kill must land while a checkpoint is written: retried if it did not
        out = tmp_path / f"killed-{attempt}"
        if kill_while_writing(out):
            break
    else:
        pytest.skip("three runs finished before a checkpoint write could be caught (nothing was killed)")
    assert not (out / "sweep.json").exists()
    train_sweep(SPECS, ActivationArray(x, 128), st, out, progress=False)  # resumes
    for spec in SPECS:
        a, b = weights(uninterrupted, spec.name), weights(out, spec.name)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{spec.name}.{k}")
