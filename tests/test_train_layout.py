"""The sweep's device layout: the launcher's rule, refusals, and sharded == unsharded (8 fake CPU
devices, every architecture, F-only / 2-D padded / data layouts, and a sharded kill-and-resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jaxsae.errors import UserError
from jaxsae.train.layout import Layout, choose_layout, feat_axis, padded
from conftest import fake_devices_flags

PAPER_GROUPS = [6] * 5  # 5 architectures x 6 levels


def test_the_rule_on_the_paper_sweep():
    assert choose_layout(8, PAPER_GROUPS, 16384, 2048) == Layout(sweep=2, feat=4, data=1)
    assert choose_layout(64, PAPER_GROUPS, 16384, 2048) == Layout(sweep=2, feat=32, data=1)
    assert choose_layout(1, PAPER_GROUPS, 16384, 2048) == Layout()
    assert choose_layout(6, PAPER_GROUPS, 16384, 2048) == Layout(sweep=6, feat=1, data=1)


def test_the_rule_leaves_thin_latent_shards_to_the_data_axis():
    # width 512: at most 2 shards of >= 256 latents; groups of 1 and 2 -> sweep 1
    assert choose_layout(8, [1, 2], 512, 128) == Layout(sweep=1, feat=2, data=4)
    assert choose_layout(8, [2, 2], 64, 128) == Layout(sweep=2, feat=1, data=4)


def test_fixed_axes_are_kept_and_the_rest_chosen():
    assert choose_layout(8, PAPER_GROUPS, 16384, 2048, feat=8) == Layout(sweep=1, feat=8, data=1)
    assert choose_layout(8, PAPER_GROUPS, 16384, 2048, sweep=4) == Layout(sweep=4, feat=2, data=1)
    assert choose_layout(8, PAPER_GROUPS, 16384, 2048, data=2) == Layout(sweep=2, feat=2, data=2)
    assert padded(6, 4) == 8 and padded(6, 2) == 6 and padded(1, 8) == 8


@pytest.mark.parametrize("kw, match", [
    (dict(feat=3), "does not divide the 8 devices"),
    (dict(sweep=2, feat=2, data=1), "uses 4 devices but there are 8"),
    (dict(feat=8, d_sae=100), "feat_shards = 8 does not divide d_sae = 100"),
    (dict(data=8, batch=100), "data_shards = 8 does not divide the batch of 100"),
])
def test_a_layout_that_cannot_shard_is_refused_in_one_line(kw, match):
    d_sae, batch = kw.pop("d_sae", 16384), kw.pop("batch", 2048)
    with pytest.raises(UserError, match=match) as e:
        choose_layout(8, PAPER_GROUPS, d_sae, batch, **kw)
    assert "\n" not in str(e.value)


def test_the_latent_axis_of_every_state_leaf():
    assert feat_axis("W_enc", 3) == 2 and feat_axis("W_dec", 3) == 1 and feat_axis("b_dec", 2) is None
    for k in ("b_enc", "threshold", "b_gate", "b_mag", "r_mag", "since_fired"):
        assert feat_axis(k, 2) == 1
    assert feat_axis("threshold", 1) is None  # the TopK family's per-SAE inference threshold


_SHARDED = textwrap.dedent(
    """
    import itertools, json, sys, dataclasses, numpy as np, jax
    from pathlib import Path
    from jax.sharding import NamedSharding, PartitionSpec as P
    sys.path.insert(0, sys.argv[2])
    from test_train_sweep import planted
    from jaxsae.sae import ArchConfig
    from jaxsae.train import ActivationArray, SAESpec, TrainSettings, train_sweep, make_mesh
    from jaxsae.train.layout import Layout, mesh_of
    from jaxsae.train.trainer import init_state_sharded, make_step, state_shardings
    from jaxsae.errors import UserError
    assert jax.device_count() == 8
    out = Path(sys.argv[1])
    specs = [SAESpec("topk", 0, 4.0), SAESpec("topk", 1, 6.0), SAESpec("batchtopk", 0, 4.0),
             SAESpec("matryoshka", 0, 4.0), SAESpec("jumprelu", 0, 4.0), SAESpec("jumprelu", 1, 6.0),
             SAESpec("relu", 0, 0.03), SAESpec("gated", 0, 0.03)]
    st = TrainSettings(d_sae=64, batch=128, steps=40, lr=1e-3, warmup_steps=2, sparsity_warmup_steps=4,
                       dead_tokens=256).effective()
    cfg = ArchConfig(dead_tokens=256, threshold_start_step=1)  # AuxK and the threshold EMA both active
    x, _ = planted(n=1280, seed=3)
    x = x / np.sqrt(np.mean(np.sum(x ** 2, -1)))

    def run(lay, split=True):
        mesh = None if lay is None else mesh_of(Layout(*lay))
        state = init_state_sharded(specs, x.shape[1], st, x[:128], cfg, mesh)
        # the optax state as born (init compiled with out_shardings), named by its path
        opt_kinds = {"/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path):
                     list(v.sharding.spec) for path, v in
                     jax.tree_util.tree_leaves_with_path(state["groups"]["topk"]["opt"])} if mesh else {}
        sh = state_shardings(state, mesh)
        step = make_step(specs, st, cfg, sh, split_rows=split)  # True: as on accelerators (off on XLA:CPU by default)
        xs = None if mesh is None else NamedSharding(mesh, P("data"))
        # the reconstructions' rows split over the devices: f32[128 / (feat x data), D] arrays in the
        # compiled step (XLA:CPU has no reduce-scatter; it slices each device's rows of the all-reduce)
        rows = 0
        if mesh is not None:
            hlo = step.lower(state, jax.device_put(x[:128], xs)).compile().as_text()
            rows = sum(hlo.count(f"{c}{128 // (lay[1] * lay[2])},{x.shape[1]}]") for c in ("[", ","))
        for i in range(8):
            b = x[128 * i:128 * (i + 1)]
            state, met = step(state, b if xs is None else jax.device_put(b, xs))
        host = jax.device_get(state)
        kinds = {k: list(v.sharding.spec) for k, v in state["groups"]["topk"]["params"].items()} if mesh else {}
        n_pad = {a: int(g["sparsity"].shape[0]) for a, g in host["groups"].items()}
        return host, jax.device_get(met), kinds, n_pad, opt_kinds, rows

    ref, ref_met, _, _, _, _ = run(None)
    report = {}
    for (name, lay), split in itertools.product(
            {"feat": (1, 8, 1), "sweep_feat_padded": (4, 2, 1), "data_feat": (1, 2, 4)}.items(), (True, False)):
        got, met, kinds, n_pad, opt_kinds, rows = run(lay, split)
        name = name if split else name + "_unsplit"
        worst = 0.0
        for a, g in ref["groups"].items():
            n = g["sparsity"].shape[0]
            for part in ("params", "aux", "opt"):  # opt: the optax state (Adam's count, mu, nu; the schedule's count)
                leaves = jax.tree.leaves(got["groups"][a][part])
                assert len(leaves) == len(jax.tree.leaves(g[part]))
                for have, want in zip(leaves, jax.tree.leaves(g[part])):
                    have = np.asarray(have, np.float64)[:n]
                    want = np.asarray(want, np.float64)
                    err = np.max(np.abs(have - want) / (1e-5 + 1e-5 * np.abs(want)))
                    worst = max(worst, float(err))
            for k, want in ref_met[a].items():
                have, want = np.asarray(met[a][k], np.float64)[:n], np.asarray(want, np.float64)
                worst = max(worst, float(np.nanmax(np.abs(have - want) / (1e-5 + 1e-5 * np.abs(want)))))
        report[name] = {"worst": worst, "kinds": kinds, "n_pad": n_pad, "opt_kinds": opt_kinds, "row_shards": rows}

    from jaxsae.train.trainer import decoded_rows_sharding
    report["rows_spec"] = {str(lay): [str(getattr(decoded_rows_sharding(mesh_of(Layout(*lay)), split), "spec", None))
                                       for split in (None, True)]
                           for lay in ((1, 8, 1), (1, 2, 4), (8, 1, 1))}

    # sharded kill-and-resume (2-D padded layout) equals the uninterrupted sharded run, bit for bit
    acts = ActivationArray(x, 128)
    st2 = TrainSettings(d_sae=64, batch=128, steps=12, lr=1e-3, checkpoint_every=5, warmup_steps=2, sparsity_warmup_steps=4)
    mesh = make_mesh(sweep=4, feat=2, data=1)
    train_sweep(specs, acts, st2, out / "once", mesh=mesh, progress=False)
    assert train_sweep(specs, acts, st2, out / "twice", mesh=mesh, progress=False, stop_after=7) == {}
    try:  # another padding cannot restore this checkpoint
        train_sweep(specs, acts, st2, out / "twice", mesh=make_mesh(sweep=8), progress=False)
        report["relayout"] = "accepted"
    except UserError as e:
        report["relayout"] = str(e)
    train_sweep(specs, acts, st2, out / "twice", mesh=mesh, progress=False)
    print("REPORT" + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("layout")
    env = dict(os.environ, XLA_FLAGS=fake_devices_flags(8), JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", _SHARDED, str(out), str(Path(__file__).parent)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("REPORT")][-1]
    return out, json.loads(line[len("REPORT"):])


@pytest.mark.parametrize("layout", ["feat", "sweep_feat_padded", "data_feat", "feat_unsplit", "sweep_feat_padded_unsplit",
                                    "data_feat_unsplit"])
def test_sharded_steps_equal_unsharded_for_every_architecture(sharded, layout):
    """8 steps (AuxK, the threshold EMA, Matryoshka's groups, JumpReLU and Gated terms all live):
    every state leaf and metric within 1e-5 (relative and absolute) of one device. Layouts: F over
    8; sweep 4 (groups of 1-2 padded to 4) x F over 2; batch over 4 x F over 2; each with the
    reconstructions' rows split over the devices (as on accelerators) and without (the default on
    a CPU)."""
    _, report = sharded
    assert report[layout]["worst"] <= 1.0, report[layout]


@pytest.mark.parametrize("layout", ["feat", "sweep_feat_padded", "data_feat"])
def test_reconstructions_are_summed_into_row_shards(sharded, layout):
    """Each device sums the latent shards' partial reconstructions for its own rows only (on a TPU
    a reduce-scatter; an all-reduce would leave the whole [B, D] error, loss and gradient to every
    device: the bulk of a full-scale step's memory traffic, ``benchmarks/scale.py``). The
    compiled step holds many more arrays of B / (feat x data) rows than the step without the split
    (where a Matryoshka group of that size may also hold a few)."""
    _, report = sharded
    split, unsplit = report[layout]["row_shards"], report[layout + "_unsplit"]["row_shards"]
    assert split >= unsplit + 8 * 4, (split, unsplit)


def test_rows_are_split_over_the_latent_and_data_shards_on_accelerators_only(sharded):
    _, report = sharded
    assert report["rows_spec"] == {"(1, 8, 1)": ["None", "P('feat', None)"], "(1, 2, 4)": ["None", "P(('data', 'feat'), None)"],
                                   "(8, 1, 1)": ["None", "None"]}


def test_the_state_is_laid_out_as_asked(sharded):
    _, report = sharded
    assert report["feat"]["kinds"] == {"W_enc": [None, None, "feat"], "W_dec": [None, "feat", None],
                                       "b_enc": [None, "feat"], "b_dec": [None, None]}
    assert report["sweep_feat_padded"]["kinds"]["W_dec"] == ["sweep", "feat", None]
    assert report["sweep_feat_padded"]["n_pad"] == {a: 4 for a in ("topk", "batchtopk", "matryoshka", "jumprelu", "relu", "gated")}
    assert report["feat"]["n_pad"]["topk"] == 2
    # the optax state is born sharded like the params: Adam's moments follow their parameter, the
    # per-SAE update counts (Adam's, the LR schedule's) are split over "sweep" like the SAEs
    opt = report["sweep_feat_padded"]["opt_kinds"]
    assert opt["2/mu/W_dec"] == opt["2/nu/W_dec"] == ["sweep", "feat", None], opt
    assert opt["2/mu/W_enc"] == ["sweep", None, "feat"] and opt["2/mu/b_dec"] == ["sweep", None], opt
    assert opt["2/count"] == opt["3/count"] == ["sweep"], opt
    assert report["feat"]["opt_kinds"]["2/mu/b_enc"] == [None, "feat"]


def test_sharded_resume_equals_uninterrupted_and_padding_is_never_exported(sharded):
    from safetensors.numpy import load_file

    out, report = sharded
    once = json.loads((out / "once" / "sweep.json").read_text())
    assert len(once["saes"]) == 8 and not any("#" in e["name"] for e in once["saes"])
    assert sorted(p.name for p in (out / "once").iterdir() if p.is_dir()) == sorted(e["name"] for e in once["saes"])
    for e in once["saes"]:
        a = load_file(out / "once" / e["name"] / "sae_weights.safetensors")
        b = load_file(out / "twice" / e["name"] / "sae_weights.safetensors")
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{e['name']}.{k}")
    rows = [json.loads(ln) for ln in (out / "once" / "metrics.jsonl").read_text().splitlines()]
    assert not any("#pad" in r["sae"] for r in rows)


def test_resuming_under_another_padding_is_refused(sharded):
    _, report = sharded
    assert "saved with another layout" in report["relayout"] and "\n" not in report["relayout"], report["relayout"]
