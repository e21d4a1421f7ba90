"""Streaming activations: the same tokens as a plain harvest, exact random access (resume), the
trainer runs on it and resumes exactly, and running out of text is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

import jaxsae.sae as S

from jaxsae.errors import UserError
from jaxsae.text import pack_contexts
from jaxsae.train import SAESpec, TrainSettings, train_sweep
from jaxsae.train.data import stdlib_docstrings
from jaxsae.train.stream import ActivationStream, context_stream

LAYER = 1


def texts():
    return stdlib_docstrings(max_chars=60_000)


def stream(lm, steps=12, batch=64, seed=0):
    return ActivationStream(lm, LAYER, texts, batch, steps, context=32, llm_batch=4, chunk_contexts=10, seed=seed)


def test_context_stream_equals_packing(tiny_llama):
    tok = tiny_llama.tokenizer
    ref = pack_contexts(texts(), tok, context_len=32, max_tokens=10**9, bos_id=1, sep_id=2)
    got = np.stack(list(context_stream(texts(), tok, context_len=32, bos_id=1, sep_id=2, docs_per_call=7)))
    np.testing.assert_array_equal(got, ref[: len(got)])
    assert len(ref) - len(got) <= 1


def test_chunk_batches_are_a_shuffle_of_the_harvested_tokens(tiny_llama):
    s = stream(tiny_llama)
    assert s._locate(0) == (0, 0)
    n0 = s._counts[0]
    got = np.concatenate([s.batch_at(i) for i in range(n0)])
    tokens, counted = s._chunk_tokens(0)
    ref = np.asarray(tiny_llama.residual(tokens, LAYER))[counted]
    assert len(got) == n0 * 64 <= len(ref) < (n0 + 1) * 64
    # every batch row is one of the chunk's residuals, none twice
    d = ((got[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    match = d.argmin(1)
    assert np.allclose(d.min(1), 0, atol=1e-8) and len(set(match.tolist())) == len(got)
    assert not np.array_equal(match, np.sort(match))  # shuffled


def test_batches_are_mixed_on_the_device_as_the_host_mixing_would(tiny_llama):
    """The residuals never go to the host: the harvest runs with device-to-host transfers
    disallowed and returns device arrays, and the batches equal the host-side mixing (numpy,
    as before the mixing moved to the device) bit for bit, so runs and their resumes see the same
    data as before."""
    import jax

    s = stream(tiny_llama)
    with jax.transfer_guard_device_to_host("disallow"):
        s._locate(0)
        got = [s.batch_at(i) for i in range(s._counts[0])]
    assert all(isinstance(g, jax.Array) for g in got)
    tokens, counted = s._chunk_tokens(0)
    x = np.concatenate([np.asarray(tiny_llama.residual(tokens[i : i + 4], LAYER))[counted[i : i + 4]]
                        for i in range(0, len(tokens), 4)])  # the stream's llm_batch
    perm = np.random.default_rng([0, 0, 0]).permutation(len(x))[: s._counts[0] * 64]
    np.testing.assert_array_equal(np.concatenate([np.asarray(g) for g in got]), x[perm])


def test_random_access_equals_sequential(tiny_llama):
    seq = stream(tiny_llama)
    ref = [seq.batch_at(i) for i in range(12)]
    jump = stream(tiny_llama)
    for i in (9, 3, 11, 0, 5):  # forwards and backwards across chunks
        np.testing.assert_array_equal(jump.batch_at(i), ref[i])
    np.testing.assert_array_equal(jump.batch_at(5, slice(8, 16)), ref[5][8:16])
    other = stream(tiny_llama, seed=1).batch_at(0)
    assert not np.array_equal(other, ref[0])


def test_text_running_out_is_a_clear_error(tiny_llama):
    s = ActivationStream(tiny_llama, LAYER, lambda: stdlib_docstrings(max_chars=3000), 64, 1000, context=32,
                         llm_batch=4, chunk_contexts=10)
    with pytest.raises(UserError, match="ran out.*lower train.tokens"):
        s.batch_at(999)


def test_trainer_on_a_stream_resumes_exactly(tiny_llama, tmp_path):
    specs = [SAESpec("topk", 0, 8.0), SAESpec("relu", 0, 0.05)]
    st = TrainSettings(d_sae=48, batch=64, steps=12, lr=1e-3, warmup_steps=2, sparsity_warmup_steps=4,
                       checkpoint_every=4)
    full = train_sweep(specs, stream(tiny_llama), st, tmp_path / "a", progress=False)
    train_sweep(specs, stream(tiny_llama), st, tmp_path / "b", progress=False, stop_after=6)
    resumed = train_sweep(specs, stream(tiny_llama), st, tmp_path / "b", progress=False)
    for ea, eb in zip(full["saes"], resumed["saes"]):
        wa, wb = S.load(tmp_path / "a" / ea["dir"]).params, S.load(tmp_path / "b" / eb["dir"]).params
        for k in wa:
            np.testing.assert_array_equal(np.asarray(wa[k]), np.asarray(wb[k]), err_msg=k)
        assert ea["l0"] == eb["l0"] and ea["fvu"] == eb["fvu"]


class CountingLM:
    """The model with a count of the contexts it harvested."""

    def __init__(self, lm):
        self.lm, self.contexts = lm, 0

    def __getattr__(self, name):
        return getattr(self.lm, name)

    def residual(self, tokens, layer):
        self.contexts += len(tokens)
        return self.lm.residual(tokens, layer)


def test_row_blocks_harvest_only_their_contexts(tiny_llama):
    lm = CountingLM(tiny_llama)
    s = ActivationStream(lm, LAYER, texts, 64, 12, context=32, llm_batch=4, chunk_contexts=12, seed=0, shards=4)
    whole = stream(tiny_llama)  # shards change the data order, not the token budget per chunk
    part = s.batch_at(0, slice(16, 32))  # exactly row block 1
    assert lm.contexts == 3  # contexts 1, 5, 9 of the chunk's 12
    full = s.batch_at(0)
    assert lm.contexts == 12
    np.testing.assert_array_equal(part, full[16:32])
    np.testing.assert_array_equal(s.batch_at(0, slice(10, 40)), full[10:40])  # across blocks
    # block h's rows are residuals of contexts h, h + 4, h + 8 only
    tokens, counted = s._chunk_tokens(0)
    for h in range(4):
        ref = np.asarray(tiny_llama.residual(tokens[h::4], LAYER))[counted[h::4]]
        d = ((full[16 * h : 16 * (h + 1), None, :] - ref[None]) ** 2).sum(-1)
        assert np.allclose(d.min(1), 0, atol=1e-8), h
    assert whole.batch_at(0).shape == full.shape
    with pytest.raises(UserError, match="multiple of the harvest shards"):
        ActivationStream(tiny_llama, LAYER, texts, 60, 12, context=32, shards=8)
