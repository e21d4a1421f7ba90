"""A thin Flax NNX face of the functional decoder.

:class:`DecoderLM` holds the params pytree of :mod:`jaxsae.models.decoder` as ``nnx.Param``
leaves, with the same names and nesting (``embed_vd``, ``final_norm_d``, ``[unembed_dv]``,
``layers.{q_ldqh, ...}`` stacked over layers), and its ``__call__`` is the functional
:func:`~jaxsae.models.decoder.forward`; nothing is implemented twice.

    model = DecoderLM.from_lm(load_model("smollm2-135m-instruct"))
    logits = model(tokens_bt)                                  # == lm.logits(tokens_bt)
    resid = model(tokens_bt, stop_layer=15)                    # == lm.residual(tokens_bt, 15)
    fast = nnx.jit(DecoderLM.__call__, static_argnames="stop_layer")
    graphdef, state = nnx.split(model)                         # state: the nnx.Param leaves
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from jaxsae.models.config import ModelConfig
from jaxsae.models.decoder import Edit, forward


class DecoderLM(nnx.Module):
    """A decoder LM as an NNX module over the functional core (shardings of the arrays are kept)."""

    def __init__(self, config: ModelConfig, params: dict[str, Any]):
        self.config = config
        for name, value in params.items():
            if isinstance(value, dict):
                setattr(self, name, nnx.data({k: nnx.Param(v) for k, v in value.items()}))
            else:
                setattr(self, name, nnx.Param(value))

    @classmethod
    def from_lm(cls, lm) -> DecoderLM:
        """The module of a loaded :class:`~jaxsae.models.lm.LM` (sharing its arrays, no copy)."""
        return cls(lm.config, lm.params)

    def params(self) -> dict[str, Any]:
        """The params pytree for the functional core (``forward(model.params(), model.config, ...)``)."""
        return nnx.to_pure_dict(nnx.state(self, nnx.Param))

    def __call__(self, tokens_bt, mask_bt=None, edit: Edit | None = None, stop_layer: int | None = None):
        """int[B, T] -> float32 logits [B, T, V], or the float32 residual [B, T, D] after block
        ``stop_layer`` (early exit); ``mask_bt`` marks real tokens (left padding), ``edit`` changes
        the residual stream at its layer."""
        tokens_bt = jnp.asarray(tokens_bt, jnp.int32)
        mask_bt = None if mask_bt is None else jnp.asarray(mask_bt, bool)
        return forward(self.params(), self.config, tokens_bt, mask_bt, edit=edit, stop_layer=stop_layer)[0]
