"""Activations on disk as a folder of .npy shards: exact random access (the rows of the one array
they were cut from), harvesting into shards equals harvesting into one .npy, records of what a
harvest came from, and training from shards equals training from the .npy."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxsae.sae as S
from jaxsae.errors import UserError
from jaxsae.train import ActivationArray, SAESpec, TrainSettings, harvest, load_activations, train_sweep
from jaxsae.train.data import stdlib_docstrings
from jaxsae.train.shards import ShardedActivations, read_record, save_shards, shard_sizes


def test_shard_sizes():
    assert shard_sizes(10, 4) == [4, 4, 2]
    assert shard_sizes(8, 4) == [4, 4]
    assert shard_sizes(3, 4) == [3]
    assert shard_sizes(0, 4) == [0]
    with pytest.raises(UserError, match="at least one token"):
        shard_sizes(10, 0)


def test_shards_read_exactly_as_the_array(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1003, 8)).astype(np.float32)
    save_shards(x, tmp_path / "acts", 100, source={"hook_layer": 3})
    acts = load_activations(tmp_path / "acts")
    assert isinstance(acts, ShardedActivations)
    assert acts.shape == x.shape and len(acts) == 1003 and acts.dtype == np.float32 and acts.ndim == 2
    assert len(list((tmp_path / "acts").glob("shard-*.npy"))) == 11
    for idx in (np.sort(rng.choice(1003, 300, replace=False)), rng.permutation(1003)[:50], [0, 99, 100, 1002],
                np.array([5, 5, 999, -1]), slice(95, 305, 3), 7, -2):
        np.testing.assert_array_equal(acts[idx], x[idx])
    np.testing.assert_array_equal(acts[[1, 2], 3], x[[1, 2], 3])
    np.testing.assert_array_equal(np.asarray(acts), x)
    with pytest.raises(IndexError):
        acts[[1003]]
    rec = read_record(tmp_path / "acts")
    assert rec["shape"] == [1003, 8] and rec["shard_tokens"] == 100 and rec["source"]["hook_layer"] == 3
    # batches (any rows of them) are those of the single array: training reads exactly the same data
    a, b = ActivationArray(x, 64, seed=3), ActivationArray(acts, 64, seed=3)
    for step in (0, 5, 15, 16, 40):
        np.testing.assert_array_equal(a.batch_at(step), b.batch_at(step))
    np.testing.assert_array_equal(a.batch_at(7, slice(16, 48)), b.batch_at(7, slice(16, 48)))
    assert a.fingerprint() == b.fingerprint() and a.n_tokens == b.n_tokens == 1003


def test_a_broken_shard_folder_is_refused(tmp_path):
    x = np.zeros((50, 4), np.float32)
    save_shards(x, tmp_path / "acts", 20)
    (tmp_path / "acts" / "shard-00001.npy").unlink()
    with pytest.raises(UserError, match="shard-00001.npy is missing"):
        load_activations(tmp_path / "acts")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an activation shard folder"):
        load_activations(tmp_path / "empty")


def test_harvest_into_shards_equals_one_npy_and_trains_the_same(tiny_llama, tmp_path):
    texts = stdlib_docstrings(max_chars=40_000)
    one = harvest(tiny_llama, 1, texts, 700, tmp_path / "acts.npy", context=32, llm_batch=4, progress=False, text="embedded")
    sharded = harvest(tiny_llama, 1, texts, 700, tmp_path / "acts", context=32, llm_batch=4, progress=False,
                      text="embedded", shard_tokens=256)
    assert isinstance(one, np.ndarray) and isinstance(sharded, ShardedActivations)
    np.testing.assert_array_equal(np.asarray(sharded), one)
    assert [len(a) for a in sharded.shards] == [256, 256, 188]
    assert not list(tmp_path.glob("*.partial*")) and not list(tmp_path.glob(".acts*"))  # nothing half-written left
    for path in (tmp_path / "acts.npy", tmp_path / "acts"):  # both carry the same record of their source
        rec = read_record(path)
        assert rec["shape"] == [700, tiny_llama.config.d_model]
        assert rec["source"] == {"model_name": tiny_llama.config.name or tiny_llama.source, "model_source": tiny_llama.source,
                                 "hook_layer": 1, "dataset_path": "embedded", "context_size": 32, "tokens_requested": 700}
    assert json.loads((tmp_path / "acts.npy.json").read_text())["format"] == "jaxsae-activations"
    specs = [SAESpec("topk", 0, 4.0), SAESpec("relu", 0, 0.05)]
    st = TrainSettings(d_sae=48, batch=64, steps=12, lr=1e-3, warmup_steps=2, sparsity_warmup_steps=4, checkpoint_every=0)
    ra = train_sweep(specs, ActivationArray(one, 64), st, tmp_path / "a", progress=False)
    rb = train_sweep(specs, ActivationArray(load_activations(tmp_path / "acts"), 64), st, tmp_path / "b", progress=False)
    assert ra["signature"] == rb["signature"]
    for e in ra["saes"]:
        wa, wb = S.load(tmp_path / "a" / e["dir"]).params, S.load(tmp_path / "b" / e["dir"]).params
        for k in wa:
            np.testing.assert_array_equal(np.asarray(wa[k]), np.asarray(wb[k]), err_msg=k)
