"""Loading: the stored-shape table agrees with the layout rules, and weights go from the memory
map to the devices one leaf at a time (host memory never holds the whole model)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from jaxsae.models import load_model, weights
from jaxsae.models.hub import smollm2_tokenizer
from jaxsae.models.random import write_random_llama


@pytest.mark.parametrize("family", ["gemma2", "qwen2", "llama"])
def test_stored_shapes_agree_with_the_layout_rules(tiny_dirs, family):
    cfg = load_model(str(tiny_dirs(family))).config
    stored, leaves = weights.hf_shapes(cfg), weights.param_shapes(cfg)["layers"]
    rules = weights.layer_rules(cfg)
    assert set(rules) <= set(stored) and {leaf for leaf, _ in rules.values()} == set(leaves)
    for key, (leaf, transform) in rules.items():
        assert transform(np.zeros(stored[key]), cfg).shape == leaves[leaf][1:], key



def iter_leaves(params):
    """(name, array) of every leaf of a params pytree (nested dicts)."""
    for k, v in params.items():
        yield from (iter_leaves(v) if isinstance(v, dict) else [(k, v)])

def test_host_memory_peaks_at_one_leaf_not_the_model(tmp_path):
    path = write_random_llama(tmp_path / "m", smollm2_tokenizer(), config=dict(
        vocab_size=512, hidden_size=256, intermediate_size=1024, num_hidden_layers=6, head_dim=64))
    lm = load_model(str(path))  # warm: tokenizer, jax
    total = sum(a.nbytes for _, a in iter_leaves(lm.params))
    largest = max(a.nbytes for _, a in iter_leaves(lm.params))
    tensors = weights.hf_tensors(path)
    tracemalloc.start()
    try:
        params = weights.build_params(tensors, lm.config, np.float32)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # on the CPU backend a placed leaf may alias its host buffer (device memory is host memory):
    # what matters is the transient host memory above the placed params
    assert largest < total / 3
    assert peak - kept < 1.5 * largest, (peak, kept, largest, total)
    for (k, a), (_, b) in zip(iter_leaves(params), iter_leaves(lm.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=k)
