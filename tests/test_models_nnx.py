"""The Flax NNX module is the functional core: same params layout, logits and residuals, and it
works under nnx.jit and nnx.split / nnx.merge."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsae.models import DecoderLM, Edit, load_model


def _add(args, resid, positions):
    return resid + args["vec"]


@pytest.mark.parametrize("family", ["gemma2", "qwen2"])
def test_nnx_module_equals_functional_core(tiny_dirs, family):
    lm = load_model(str(tiny_dirs(family)))
    model = DecoderLM.from_lm(lm)
    params = model.params()
    assert jax.tree.structure(params) == jax.tree.structure(lm.params)
    assert all(a is b for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(lm.params)))  # shared, not copied
    assert len(jax.tree.leaves(nnx.state(model, nnx.Param))) == len(jax.tree.leaves(lm.params))
    tokens, mask = lm.pad([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]], multiple=1)
    np.testing.assert_allclose(np.asarray(model(tokens, mask)), np.asarray(lm.logits(tokens, mask)), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(model(tokens, mask, stop_layer=1)), np.asarray(lm.residual(tokens, 1, mask)),
                               atol=1e-5, rtol=0)

    step = nnx.jit(DecoderLM.__call__, static_argnames="stop_layer")
    edit = Edit(1, _add, {"vec": jnp.full(lm.config.d_model, 0.5)})
    np.testing.assert_allclose(np.asarray(step(model, tokens, mask)), np.asarray(lm.logits(tokens, mask)), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(step(model, tokens, mask, edit, 2)), np.asarray(lm.residual(tokens, 2, mask, edit)),
                               atol=1e-5, rtol=0)

    graphdef, state = nnx.split(model)
    again = nnx.merge(graphdef, state)
    assert again.config == lm.config
    np.testing.assert_array_equal(np.asarray(step(again, tokens, mask)), np.asarray(step(model, tokens, mask)))
