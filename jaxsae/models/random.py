"""Tiny random-weight checkpoints written with numpy alone (no torch): the ``tiny-random-llama``
alias used by the CI smoke sweep. The folder is a real Hugging Face checkpoint (config.json,
model.safetensors) carrying SmolLM2's tokenizer, so every text path works on it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import safetensors.numpy

from jaxsae.io import atomic_dir

TINY_ALIAS = "tiny-random-llama"

TINY_LLAMA = dict(
    model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=49152, hidden_size=64,
    intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=2048,
    tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2, hidden_act="silu",
)


def write_random_llama(path: str | os.PathLike, tokenizer, *, seed: int = 0, config: dict | None = None) -> Path:
    """Write a random Llama checkpoint (std 0.08 weights, unit norms) with ``tokenizer`` (a
    ``transformers`` tokenizer: SmolLM2's for the alias)."""
    cfg = dict(TINY_LLAMA, **(config or {}))
    r = np.random.RandomState(seed)
    D, M, V, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    H = cfg["head_dim"]
    Q, K = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def w(*shape):
        return (r.randn(*shape) * 0.08).astype(np.float32)

    tensors = {"model.embed_tokens.weight": w(V, D), "model.norm.weight": np.ones(D, np.float32)}
    for i in range(L):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": np.ones(D, np.float32),
            p + "post_attention_layernorm.weight": np.ones(D, np.float32),
            p + "self_attn.q_proj.weight": w(Q * H, D),
            p + "self_attn.k_proj.weight": w(K * H, D),
            p + "self_attn.v_proj.weight": w(K * H, D),
            p + "self_attn.o_proj.weight": w(D, Q * H),
            p + "mlp.gate_proj.weight": w(M, D),
            p + "mlp.up_proj.weight": w(M, D),
            p + "mlp.down_proj.weight": w(D, M),
        }
    path = Path(path)
    with atomic_dir(path) as tmp:
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        safetensors.numpy.save_file(tensors, str(tmp / "model.safetensors"))
        tokenizer.save_pretrained(tmp)
    return path


def tiny_random_llama(cache: Path, tokenizer: Callable[[], Any]) -> Path:
    """The ``tiny-random-llama`` checkpoint folder under ``cache`` (written on first use, with
    ``tokenizer()``)."""
    path = cache / "models" / TINY_ALIAS
    if not (path / "model.safetensors").exists():
        write_random_llama(path, tokenizer())
    return path
