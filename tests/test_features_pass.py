"""The statistics pass on a real (tiny) model: equals brute force over materialised activations;
held-out text packing, special-token exclusion, save/load."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae import features
from jaxsae.errors import UserError
from jaxsae import text as corpus
from jaxsae.features.compute import special_ids
from jaxsae.sae.random import calibrated_sae

from test_features_stream import brute_top


@pytest.fixture(scope="module")
def tiny_case(tiny_llama):
    lm = tiny_llama
    cfg = features.FeatureStatsConfig(context_len=48, total_tokens=14 * 48, batch_size=4, n_top=4, buffer=3, n_iw=3, n_random=5)
    tokens, has_bos = features.held_out_tokens(lm, cfg)
    sae = calibrated_sae(lm, 2, 24, tokens[:4], fire=0.05)
    stats = features.compute_feature_stats(lm, 2, *features.sae_encoder(sae), cfg, meta=dict(note="t"))
    return lm, cfg, sae, tokens, has_bos, stats


def test_calibrated_sae_fires_on_the_asked_fraction(tiny_case):
    lm, _, sae, tokens, _, _ = tiny_case
    x_nd = np.asarray(lm.residual(tokens[:4], 2)).reshape(-1, lm.config.d_model)
    rate_f = (np.asarray(sae.encode(x_nd)) > 0).mean(0)  # on its calibration tokens
    np.testing.assert_allclose(rate_f, 0.05, atol=1.0 / len(x_nd) + 1e-6)


def test_held_out_tokens_pack_pydoc(tiny_llama):
    cfg = features.FeatureStatsConfig(context_len=64, total_tokens=10 * 64)
    tokens, has_bos = features.held_out_tokens(tiny_llama, cfg)
    assert tokens.shape == (10, 64) and tokens.dtype == np.int32
    assert not has_bos  # SmolLM2's tokenizer adds no BOS
    docs = corpus.pydoc_texts()
    first = tiny_llama.tokenizer(docs[0], add_special_tokens=False)["input_ids"]
    np.testing.assert_array_equal(tokens.ravel()[: min(len(first), 640)], first[:640])


def test_pack_contexts_with_bos_and_separator(tiny_llama):
    tok = tiny_llama.tokenizer
    texts = ["alpha beta gamma", "delta epsilon", "zeta eta theta iota"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    stream = [i for x in ids for i in x + [2]]
    ctx = corpus.pack_contexts(texts, tok, context_len=4, max_tokens=100, bos_id=1, sep_id=2)
    n = len(stream) // 3
    assert ctx.shape == (n, 4)
    np.testing.assert_array_equal(ctx[:, 0], 1)
    np.testing.assert_array_equal(ctx[:, 1:].ravel(), stream[: 3 * n])
    counted = corpus.counted_mask(ctx, [1, 2], mask_first=False)
    np.testing.assert_array_equal(counted, ~np.isin(ctx, [1, 2]))
    with pytest.raises(UserError):
        corpus.pack_contexts(["a"], tok, context_len=64, max_tokens=100, bos_id=None, sep_id=None)


def test_pass_equals_brute_force(tiny_case):
    lm, cfg, sae, tokens, has_bos, st = tiny_case
    N, T = tokens.shape
    acts = np.asarray(sae.encode(lm.residual(tokens, 2)))  # [N, T, F] all materialised
    counted = corpus.counted_mask(tokens, special_ids(lm), mask_first=not has_bos)
    assert not counted[:, 0].any()  # no BOS: position 0 (attention sink) excluded
    np.testing.assert_array_equal(st.counted, counted)
    a = np.where(counted[..., None], acts, 0.0)
    assert st.n_counted == counted.sum() and st.meta["n_contexts"] == N
    assert np.abs(st.count - (a > 0).sum((0, 1))).max() <= 1  # fused vs unfused: last-ulp differences at 0
    np.testing.assert_allclose(st.max_act, a.max((0, 1)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(st.frequency, (a > 0).sum((0, 1)) / counted.sum(), atol=2 / counted.sum())
    assert (st.count > 0).sum() > 10
    for f in range(sae.d_sae):
        ref = brute_top(acts[..., f], counted, cfg.n_top, cfg.buffer)
        got = [(int(p) // T, int(p) % T) for p in st.top_pos[f] if p >= 0]
        assert got == ref, f
        for j, (n, t) in enumerate(ref):
            np.testing.assert_array_equal(st.window_tokens(st.top_pos[f, j]), tokens[n, t - cfg.buffer : t + cfg.buffer + 1])
            np.testing.assert_allclose(st.top_win[f, j], a[n, t - cfg.buffer : t + cfg.buffer + 1, f], rtol=1e-4, atol=1e-5)
        # IW draws lie below the A-th peak, in the window region, with matching windows
        theta = st.top_val[f, -1]
        for j, p in enumerate(st.iw_pos[f]):
            if p < 0:
                continue
            n, t = divmod(int(p), T)
            assert cfg.buffer <= t < T - cfg.buffer and 0 < a[n, t, f] < theta
            np.testing.assert_allclose(st.iw_win[f, j], a[n, t - cfg.buffer : t + cfg.buffer + 1, f], rtol=1e-4, atol=1e-5)
        for j, p in enumerate(st.rand_pos[f]):
            n, t = divmod(int(p), T)
            np.testing.assert_allclose(st.rand_win[f, j], a[n, t - cfg.buffer : t + cfg.buffer + 1, f], rtol=1e-4, atol=1e-5)


def test_save_load_roundtrip(tiny_case, tmp_path):
    *_, st = tiny_case
    features.save(st, tmp_path / "fs")
    back = features.load(tmp_path / "fs")
    for name in ("tokens", "counted", "count", "max_act", "top_val", "top_pos", "top_win", "iw_pos", "iw_win", "rand_pos", "rand_win"):
        np.testing.assert_array_equal(getattr(back, name), getattr(st, name))
    assert back.meta["note"] == "t" and back.meta["layer"] == 2 and back.d_sae == 24
    features.save(st, tmp_path / "fs")  # replaces atomically
    assert sorted(p.name for p in (tmp_path / "fs").iterdir()) == ["stats.json", "stats.safetensors"]
    with pytest.raises(UserError):
        features.load(tmp_path / "nothing")


def test_pass_rejects_bad_inputs(tiny_llama):
    enc = lambda p, x: jax.nn.relu(x @ p)  # noqa: E731
    with pytest.raises(UserError):
        features.compute_feature_stats(tiny_llama, 9, enc, jnp.zeros((64, 8)))
    with pytest.raises(UserError):
        features.compute_feature_stats(tiny_llama, 1, enc, jnp.zeros((65, 8)), tokens=np.zeros((2, 128), np.int32))
    with pytest.raises(UserError):
        features.compute_feature_stats(tiny_llama, 1, enc, jnp.zeros((64, 8)), tokens=np.zeros((2, 7), np.int32))


def test_shared_residuals_give_the_same_statistics(tiny_case, tiny_llama):
    lm, cfg, sae, tokens, _, stats = tiny_case
    from jaxsae.features.compute import residuals

    resid = residuals(lm, 2, tokens, batch=5)
    again = features.compute_feature_stats(lm, 2, *features.sae_encoder(sae), cfg, tokens=tokens, resid_ntd=resid)
    for name in ("count", "max_act", "sum_act", "top_val", "top_pos", "iw_val", "iw_pos", "rand_pos"):
        np.testing.assert_allclose(getattr(again, name), getattr(stats, name), rtol=1e-5, atol=1e-6, err_msg=name)
    with pytest.raises(UserError, match="cached residuals"):
        features.compute_feature_stats(lm, 2, *features.sae_encoder(sae), cfg, tokens=tokens, resid_ntd=resid[:, :5])


_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **_: _COMPILES.append(event) if event == "/jax/core/compile/backend_compile_duration" else None)


def test_one_pass_for_several_saes_equals_a_pass_each_and_compiles_once(tiny_case):
    from jaxsae.features.compute import compute_feature_stats_many

    lm, cfg, sae, tokens, _, stats = tiny_case
    other = calibrated_sae(lm, 2, 40, tokens[:4], fire=0.1, seed=1)  # another width
    args = ([features.sae_encoder(sae), features.sae_encoder(other)], cfg)
    many = compute_feature_stats_many(lm, 2, *args, tokens=tokens, metas=[dict(note="t"), {}])
    each = [stats, features.compute_feature_stats(lm, 2, *features.sae_encoder(other), cfg, tokens=tokens)]
    for a, b in zip(many, each):
        assert a.d_sae == b.d_sae and a.meta["n_counted"] == b.meta["n_counted"]
        for name in ("count", "sum_act", "max_act", "top_val", "top_pos", "top_win", "iw_val", "iw_pos", "iw_win",
                     "rand_pos", "rand_win", "tokens", "counted"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert many[0].meta["note"] == "t" and many[0].meta["saes_in_pass"] == 2
    # the step is compiled once: a second pass with the same model, layer, SAE configs and shapes reuses it
    _COMPILES.clear()
    compute_feature_stats_many(lm, 2, *args, tokens=tokens)
    assert _COMPILES == []


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_residuals_on_disk_are_the_forwards_own_values(tiny_dirs, tmp_path, dtype):
    from jaxsae.features.compute import residuals_on_disk
    from jaxsae.models import load_model

    lm = load_model(str(tiny_dirs("llama")), dtype=dtype)
    tokens = np.random.default_rng(0).integers(5, 200, size=(7, 16)).astype(np.int32)
    disk = residuals_on_disk(lm, 1, tokens, tmp_path / "r.bin", batch=3)
    assert isinstance(disk, np.memmap) and not disk.flags.writeable and disk.shape == (7, 16, lm.config.d_model)
    assert disk.dtype == jnp.dtype(dtype)  # bfloat16 for a bfloat16 model: nothing rounded, half the disk
    want = np.concatenate([np.asarray(lm.residual(tokens[s : s + 3], 1)) for s in range(0, 7, 3)])
    np.testing.assert_array_equal(np.asarray(disk, np.float32), want.astype(np.float32))


def test_residuals_that_do_not_fit_on_disk_are_a_one_line_error_writing_nothing(tiny_llama, tmp_path, monkeypatch):
    import shutil

    from jaxsae.features.compute import residuals_on_disk

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(UserError, match=r"need 0\.0 GB on disk .* free space there or lower eval\.stats_tokens") as e:
        residuals_on_disk(tiny_llama, 1, np.zeros((4, 16), np.int32), tmp_path / "r.bin")
    assert "\n" not in str(e.value) and not (tmp_path / "r.bin").exists()


def test_several_passes_run_the_model_once_and_read_its_residuals_from_disk(tiny_case, tmp_path, monkeypatch):
    """The autointerp stage's statistics for more SAEs than one pass holds: the held-out residuals
    are computed once into the run folder, every pass reads them (no pass runs the model), the
    statistics equal a pass that runs it, and the file goes when the stage leaves (also one a kill
    left behind)."""
    import types

    import jaxsae.features.compute as C
    import jaxsae.sae as S
    from jaxsae.autointerp.run import stats_for_saes
    from jaxsae.launch.stages import residuals_for_passes

    lm, cfg, _, tokens, _, _ = tiny_case
    dirs = [tmp_path / f"sae{i}" for i in range(3)]
    for i, d in enumerate(dirs):
        S.save(calibrated_sae(lm, 2, 16 + 8 * i, tokens[:4], fire=0.05, seed=i), d)
    run = types.SimpleNamespace(out=tmp_path / "run", process_index=0)
    left = run.out / ".residuals-0"
    left.mkdir(parents=True)
    (left / "layer2.bin").write_bytes(b"torn")
    forwards, passes = [], []
    monkeypatch.setattr(lm, "residual", lambda *a, **k: forwards.append(a) or type(lm).residual(lm, *a, **k))
    many = C.compute_feature_stats_many
    monkeypatch.setattr(C, "compute_feature_stats_many", lambda *a, **k: passes.append(k["resid_ntd"]) or many(*a, **k))

    with residuals_for_passes(run, lm, 2, tokens, passes=1) as resid:
        assert resid is None and not left.exists()  # one pass runs the model itself
    with residuals_for_passes(run, lm, 2, tokens, passes=3) as resid:
        got = [stats_for_saes([d], None, lm, 2, cfg, tokens=tokens, resid_ntd=resid)[0] for d in dirs]
        assert (left / "layer2.bin").stat().st_size == tokens.size * lm.config.d_model * 4
    assert not left.exists()
    assert len(forwards) == -(-len(tokens) // 16) and len(passes) == 3
    assert all(isinstance(p, np.memmap) for p in passes)
    for d, g in zip(dirs, got):
        want = features.compute_feature_stats(lm, 2, *features.sae_encoder(S.load(d)), cfg, tokens=tokens)
        for name in ("count", "max_act", "sum_act", "top_val", "top_pos", "iw_val", "iw_pos", "rand_pos"):
            np.testing.assert_allclose(getattr(g, name), getattr(want, name), rtol=1e-5, atol=1e-6, err_msg=name)
    # statistics already made are read back without asking for residuals
    again = stats_for_saes(dirs, None, lm, 2, cfg, tokens=tokens, resid_ntd=lambda: pytest.fail("residuals made again"))
    assert [a.meta["fingerprint"] for a in again] == [g.meta["fingerprint"] for g in got]
