"""Decoding and edits: KV cache == recompute, zero edit == identity, left padding is inert,
and 8 fake CPU devices give the same numbers as one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.models import Edit, forward, init_cache, load_model
from jaxsae.models.decoder import prefill_shared
from jaxsae.models.generate import generate_tokens
from conftest import fake_devices_flags


def _add(args, resid, positions):
    return resid + args["scale"] * args["vec"]


def _add_last(args, resid, positions):
    return resid.at[:, -1].add(args["vec"])


def test_kv_cache_decoding_equals_full_recompute(tiny_dirs):
    lm = load_model(str(tiny_dirs("gemma2")))  # window 4 < sequence: exercises sliding layers
    cfg, p = lm.config, lm.params
    tokens = np.random.RandomState(0).randint(3, cfg.vocab_size, size=(2, 10))
    full, _ = forward(p, cfg, jnp.asarray(tokens))
    cache = init_cache(cfg, 2, 10, jnp.float32)
    out, cache = forward(p, cfg, jnp.asarray(tokens[:, :6]), cache=cache, write_at=0)
    steps = [out]
    for t in range(6, 10):
        out, cache = forward(p, cfg, jnp.asarray(tokens[:, t : t + 1]), cache=cache, write_at=t)
        steps.append(out)
    np.testing.assert_allclose(np.concatenate([np.asarray(s) for s in steps], axis=1), np.asarray(full), atol=1e-5)


def test_generation_equals_greedy_recompute(tiny_llama):
    lm = tiny_llama
    prompt = "Hello there, how"
    new = lm.generate_ids([prompt], max_new_tokens=8, chat=False)[0]
    ids = lm.token_ids(prompt)
    for t in new:  # each generated token is the argmax of a full recompute over the prefix
        assert int(np.argmax(np.asarray(lm.logits(np.array([ids])))[0, -1])) == t
        ids.append(t)


FORWARDS = []


def _count_forwards(args, resid, positions):  # an identity edit that records each forward's length
    jax.debug.callback(lambda r: FORWARDS.append(r.shape[1]), resid)
    return resid


def test_prefill_unembeds_last_position_and_decode_runs_max_new_minus_one_forwards(tiny_llama):
    lm = tiny_llama
    tokens, mask = lm.encode(["Hello there, how", "Hi"], multiple=1)
    full, _ = forward(lm.params, lm.config, jnp.asarray(tokens), jnp.asarray(mask))
    last, _ = forward(lm.params, lm.config, jnp.asarray(tokens), jnp.asarray(mask), last_only=True)
    assert last.shape == (2, 1, lm.config.vocab_size)
    np.testing.assert_allclose(np.asarray(last), np.asarray(full)[:, -1:], atol=1e-5, rtol=0)
    no_eos = dataclasses.replace(lm.config, eos_ids=())
    FORWARDS.clear()
    out, steps = generate_tokens(lm.params, no_eos, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(0),
                                 jnp.float32(1.0), max_new=6, greedy=True, edit=Edit(1, _count_forwards))
    jax.effects_barrier()
    assert FORWARDS == [tokens.shape[1]] + [1] * 5 and int(steps) == 6
    plain, _ = generate_tokens(lm.params, no_eos, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(0),
                               jnp.float32(1.0), max_new=6, greedy=True)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(plain))


def test_generation_stops_at_generation_config_and_tokenizer_end_tokens(tiny_dirs, tiny_llama, tmp_path):
    prompt = "Hello there, how"
    free = tiny_llama.generate_ids([prompt], max_new_tokens=8, chat=False)[0]
    k = next(i for i in range(1, len(free)) if free[i] not in free[:i])  # a token first produced at step k
    path = tmp_path / "m"
    shutil.copytree(tiny_dirs("llama"), path)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, free[k]]}))  # as Gemma-2-it: [1, 107]
    lm = load_model(str(path))
    assert lm.config.eos_ids == (2, free[k])
    assert lm.generate_ids([prompt], max_new_tokens=8, chat=False)[0] == free[:k]
    tc = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps(tc | {"eos_token": "<|endoftext|>"}))  # id 0
    assert load_model(str(path)).config.eos_ids == (2, free[k], 0)


def test_zero_edit_is_identity(tiny_dirs):
    lm = load_model(str(tiny_dirs("qwen2")))
    tokens = np.arange(3, 15)[None]
    zero = Edit(1, _add, {"scale": jnp.float32(0.0), "vec": jnp.ones(lm.config.d_model)})
    np.testing.assert_array_equal(np.asarray(lm.logits(tokens, edit=zero)), np.asarray(lm.logits(tokens)))
    np.testing.assert_array_equal(np.asarray(lm.residual(tokens, 2, edit=zero)), np.asarray(lm.residual(tokens, 2)))


def test_edit_changes_only_downstream(tiny_dirs):
    lm = load_model(str(tiny_dirs("qwen2")))
    tokens = np.arange(3, 15)[None]
    e = Edit(1, _add_last, {"vec": jnp.ones(lm.config.d_model)})
    base, edited = np.asarray(lm.residual(tokens, 1)), np.asarray(lm.residual(tokens, 1, edit=e))
    np.testing.assert_allclose(edited - base, np.broadcast_to(np.eye(12)[-1][:, None], base[0].shape)[None], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(lm.residual(tokens, 0, edit=e)), np.asarray(lm.residual(tokens, 0)))
    # causal: earlier positions of the logits are unchanged, the last one changes
    lb, le = np.asarray(lm.logits(tokens)), np.asarray(lm.logits(tokens, edit=e))
    np.testing.assert_allclose(lb[:, :-1], le[:, :-1], atol=1e-6, rtol=0)
    assert np.abs(lb[:, -1] - le[:, -1]).max() > 1e-3


def test_edit_args_do_not_recompile(tiny_dirs):
    lm = load_model(str(tiny_dirs("qwen2")))
    tokens = np.arange(3, 9)[None]
    from jaxsae.models.lm import _forward

    lm.logits(tokens, edit=Edit(1, _add, {"scale": jnp.float32(1.0), "vec": jnp.ones(lm.config.d_model)}))
    before = _forward._cache_size()
    for s in (2.0, 3.0):
        lm.logits(tokens, edit=Edit(1, _add, {"scale": jnp.float32(s), "vec": jnp.ones(lm.config.d_model)}))
    assert _forward._cache_size() == before


def test_left_padding_does_not_change_results(tiny_dirs):
    lm = load_model(str(tiny_dirs("gemma2")))
    a = np.random.RandomState(2).randint(3, lm.config.vocab_size, size=9)
    b = np.random.RandomState(3).randint(3, lm.config.vocab_size, size=5)
    tokens, mask = lm.pad([a.tolist(), b.tolist()], multiple=1)
    batch = np.asarray(lm.logits(tokens, mask))
    np.testing.assert_allclose(batch[0], np.asarray(lm.logits(a[None]))[0], atol=1e-5)
    np.testing.assert_allclose(batch[1, -5:], np.asarray(lm.logits(b[None]))[0], atol=1e-5)
    rb = np.asarray(lm.residual(tokens, 2, mask))
    np.testing.assert_allclose(rb[1, -5:], np.asarray(lm.residual(b[None], 2))[0], atol=1e-5)


def test_generation_with_zero_steer_equals_unsteered(tiny_llama):
    zero = Edit(1, _add, {"scale": jnp.float32(0.0), "vec": jnp.ones(tiny_llama.config.d_model)})
    prompts = ["Tell me about cats", "Hi"]
    assert tiny_llama.generate(prompts, max_new_tokens=8, steer=zero) == tiny_llama.generate(prompts, max_new_tokens=8)


_SHARDED = textwrap.dedent(
    """
    import sys, numpy as np, jax, jax.numpy as jnp
    jax.config.update("jax_default_matmul_precision", "float32")
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jaxsae.models import load_model
    assert jax.device_count() == 8
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    one = load_model(sys.argv[1])
    many = load_model(sys.argv[1], mesh=mesh)
    split = [k for k, v in many.params["layers"].items() if not v.sharding.is_fully_replicated]
    assert split, "no weight was split over the model axis"
    tokens = np.random.RandomState(0).randint(3, one.config.vocab_size, size=(4, 10))
    t = jax.device_put(jnp.asarray(tokens), NamedSharding(mesh, P("data")))
    np.testing.assert_allclose(np.asarray(many.logits(t)), np.asarray(one.logits(tokens)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(many.residual(t, 1)), np.asarray(one.residual(tokens, 1)), atol=1e-5)
    print("OK", len(split))
    """
)


def test_sharded_on_8_fake_devices_equals_unsharded(tiny_dirs):
    env = dict(os.environ, XLA_FLAGS=fake_devices_flags(8), JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", _SHARDED, str(tiny_dirs("gemma2"))], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def _add_rows(args, resid, positions):
    return resid + args["delta_bd"][:, None, :]


@pytest.mark.parametrize("family", ["gemma2", "qwen2"])
def test_shared_prompt_prefill_equals_the_prefill_of_every_row(tiny_dirs, family):
    """8 rows of 3 distinct left-padded prompts, each row steered by its own vector after block 1
    (and unsteered): ``prefill_shared`` (blocks up to the edit once per distinct prompt) gives the
    last-position logits and the whole KV cache of the plain prefill of all 8 rows."""
    lm = load_model(str(tiny_dirs(family)))  # gemma2: soft-caps and a sliding window shorter than the prompt
    cfg, p = lm.config, lm.params
    rng = np.random.RandomState(0)
    B, T = 8, 9
    tokens_u = rng.randint(3, cfg.vocab_size, size=(3, T)).astype(np.int32)
    mask_u = np.ones((3, T), bool)
    mask_u[1, :4] = mask_u[2, :2] = False
    tokens_u[~mask_u] = cfg.pad_id
    rows = np.array([0, 1, 2, 1, 0, 2, 2, 1], np.int32)
    steer = Edit(1, _add_rows, {"delta_bd": jnp.asarray(rng.normal(size=(B, cfg.d_model)) * 3, jnp.float32)})
    got = {}
    for name, edit in (("plain", None), ("steered", steer)):
        want, want_cache = forward(p, cfg, jnp.asarray(tokens_u[rows]), jnp.asarray(mask_u[rows]), edit=edit,
                                   cache=init_cache(cfg, B, T + 3, jnp.float32), write_at=0, cache_empty=True, last_only=True)
        got[name], cache = prefill_shared(p, cfg, jnp.asarray(tokens_u), jnp.asarray(mask_u), jnp.asarray(rows),
                                          init_cache(cfg, B, T + 3, jnp.float32), edit)
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want), rtol=1e-5, atol=1e-5, err_msg=name)
        for a, b in zip(cache, want_cache):  # keys, values of every layer, valid slots
            np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-5, atol=1e-5, err_msg=name)
    assert not np.allclose(np.asarray(got["plain"]), np.asarray(got["steered"]), atol=1e-3)  # the edit acted


def test_repeated_prompts_are_prefilled_once_and_generate_the_same(tiny_llama, monkeypatch):
    """lm.generate on 8 rows of 2 instructions, each row steered by its own vector: the distinct
    prompts are found (2, padded to a power of two) and the generations are those of the plain
    path, greedy and sampled with a seed per row."""
    import jaxsae.models.lm as lm_module
    from jaxsae.steer.edits import row_edit

    lm = tiny_llama
    prompts = ["Tell me a story.", "Why is the sky blue?"] * 4
    tokens, mask = lm.encode(prompts, chat=True)
    tokens_u, mask_u, rows = lm_module.distinct_prompts(tokens, mask)
    assert len(tokens_u) == 2 and np.array_equal(tokens_u[rows], tokens) and np.array_equal(mask_u[rows], mask)
    assert lm_module.distinct_prompts(tokens[:3], mask[:3]) is None  # 2 distinct of 3 rows: not worth it
    t5 = np.concatenate([tokens, tokens[:1] + 1]), np.concatenate([mask, mask[:1]])
    assert len(lm_module.distinct_prompts(*t5)[0]) == 4  # 3 distinct of 9 rows, padded to 4

    edit = row_edit(1, np.random.RandomState(1).normal(size=(8, lm.config.d_model)).astype(np.float32) * 2)
    for temperature in (0.0, 1.0):
        kw = dict(max_new_tokens=6, temperature=temperature, steer=edit, seed=list(range(8)))
        shared = lm.generate_ids(prompts, **kw)
        with monkeypatch.context() as m:
            m.setattr(lm_module, "distinct_prompts", lambda tokens, mask: None)
            plain = lm.generate_ids(prompts, **kw)
        assert shared == plain, temperature
        assert len({tuple(x) for x in shared}) > 2  # the rows' own vectors (and seeds) made them differ


def test_each_row_samples_the_softmax_with_its_own_key():
    """sample_rows draws token v with probability softmax(logits)[v]: 40,000 rows, each with its
    own key, over a 7-token vocabulary match the probabilities (within 4.5 standard errors), and
    tokens of zero probability (-inf logits, first and last included) are never drawn."""
    from jaxsae.models.generate import sample_rows

    logits = np.array([-np.inf, 0.0, 1.0, -np.inf, 2.5, -1.0, -np.inf], np.float32)
    p = np.exp(logits - logits[np.isfinite(logits)].max())
    p /= p.sum()
    n = 40_000
    keys = jax.random.split(jax.random.key(0), n)
    draws = np.asarray(jax.jit(sample_rows)(keys, jnp.broadcast_to(jnp.asarray(logits), (n, 7))))
    freq = np.bincount(draws, minlength=7) / n
    assert np.all(freq[p == 0] == 0)
    np.testing.assert_array_less(np.abs(freq - p), 4.5 * np.sqrt(p * (1 - p) / n) + 1e-12)


def test_row_uniforms_are_uniform_and_independent():
    """The hashed uniforms behind sampling: 64 rows (split keys, as generation gives them) over
    SmolLM2's 49,152-token vocabulary are uniform on (0, 1) (Kolmogorov-Smirnov on each row and on
    all of them), uncorrelated between neighbouring tokens, between rows and between a row's
    successive keys (decode steps), and a flat distribution's 4,096 draws fall evenly over the
    vocabulary (chi-square over 48 blocks of 1,024 token ids). The map from hash to uniform
    stays inside (0, 1) at the hash's extremes (a 1 would make E = 0)."""
    from scipy import stats

    from jaxsae.models.generate import row_uniforms, sample_rows, unit_interval

    ends = np.asarray(unit_interval(jnp.asarray([0, 0xFFFFFFFF], jnp.uint32)))
    assert ends[0] == 2.0**-24 and ends[1] == 1 - 2.0**-24

    V = 49_152
    keys = jax.random.split(jax.random.key(3), 64)
    u = np.asarray(row_uniforms(keys, V), np.float64)
    assert u.min() > 0 and u.max() < 1
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    assert min(stats.kstest(row, "uniform").pvalue for row in u) > 1e-4
    bound = 5 / np.sqrt(u.size)  # correlations of independent uniforms are ≈ N(0, 1/n)
    z = u - 0.5
    assert abs(np.mean(z[:, 1:] * z[:, :-1]) * 12) < bound  # neighbouring tokens
    assert abs(np.mean(z[1:] * z[:-1]) * 12) < bound  # neighbouring rows
    k2 = jax.vmap(jax.random.split)(keys)  # as generation splits each row's key at every step
    now, nxt = (np.asarray(row_uniforms(k, V), np.float64) - 0.5 for k in (k2[:, 1], jax.vmap(jax.random.split)(k2[:, 0])[:, 1]))
    assert abs(np.mean(now * nxt) * 12) < bound  # one step's draw and the next step's
    draws = np.asarray(jax.jit(sample_rows)(jax.random.split(jax.random.key(4), 4096), jnp.zeros((4096, V))))
    assert stats.chisquare(np.bincount(draws // 1024, minlength=48)).pvalue > 1e-4


def test_a_rows_sample_survives_rounding_of_its_logits():
    """Logits that differ in their last bits (as the same row's do in batches of other sizes)
    give the same draw for nearly every row: 2,000 rows over SmolLM2's 49,152-token vocabulary,
    relative noise of 1e-6 on every logit: none of the draws changed when written, at most 0.5%
    may (inverting the CDF, whose every boundary the noise moves, changed 1.35% of them)."""
    from jaxsae.models.generate import sample_rows

    r = np.random.default_rng(0)
    logits = r.normal(size=(2000, 49_152)).astype(np.float32) * 3
    noisy = logits * (1 + 1e-6 * r.standard_normal(logits.shape)).astype(np.float32)
    keys = jax.random.split(jax.random.key(1), 2000)
    draw = jax.jit(sample_rows)
    changed = np.mean(np.asarray(draw(keys, jnp.asarray(logits))) != np.asarray(draw(keys, jnp.asarray(noisy))))
    assert changed <= 0.005, changed


def test_sampling_at_a_low_temperature_is_greedy(tiny_llama):
    """Sampled generation divides the logits by the temperature: at 1e-4 every row's sample is the
    greedy continuation, at 1 (a tiny random model's flat distribution) the rows wander off it."""
    prompts = ["Tell me a story.", "Why is the sky blue?", "Name a colour.", "Count to three."]
    greedy = tiny_llama.generate_ids(prompts, max_new_tokens=8, temperature=0.0)
    assert tiny_llama.generate_ids(prompts, max_new_tokens=8, temperature=1e-4, seed=list(range(4))) == greedy
    assert tiny_llama.generate_ids(prompts, max_new_tokens=8, temperature=1.0, seed=list(range(4))) != greedy
