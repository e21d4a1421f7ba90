"""Parity with transformers' eager implementation on tiny random checkpoints (fp32, 1e-4)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import transformers

from jaxsae.models import load_model
from jaxsae.models.config import HF_DEFAULTS, from_hf
from tiny_models import load_torch

CASES = [
    ("gemma2", {}),  # head_dim != d/heads, GQA, window 4 < sequence, both soft-caps
    ("qwen2", {}),  # q/k/v biases, untied
    ("llama", {}),  # tied
    ("llama", {"tie_word_embeddings": False, "vocab_size": 300}),  # untied
]


@pytest.mark.parametrize("family,over", CASES, ids=lambda x: str(x))
def test_logits_and_residuals_match_transformers(tiny_dirs, family, over):
    path = tiny_dirs(family, **over)
    lm, ref = load_model(str(path)), load_torch(path)
    tokens = np.random.RandomState(0).randint(3, lm.config.vocab_size, size=(2, 12))
    with torch.no_grad():
        out = ref(torch.tensor(tokens), output_hidden_states=True)
    np.testing.assert_allclose(np.asarray(lm.logits(tokens)), out.logits.numpy(), atol=1e-4, rtol=0)
    for layer in range(lm.config.n_layers - 1):  # the last hidden state is final-normed in HF
        np.testing.assert_allclose(
            np.asarray(lm.residual(tokens, layer)), out.hidden_states[layer + 1].numpy(), atol=1e-4, rtol=0
        )


def _logits_match(path, tokens):
    lm, ref = load_model(str(path)), load_torch(path)
    with torch.no_grad():
        theirs = ref(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(lm.logits(tokens)), theirs, atol=1e-4, rtol=0)
    return lm


OMITTED = [
    ("gemma2", {}, "query_pre_attn_scalar"),  # transformers: 256, not head_dim (24 here)
    ("gemma2", {}, "tie_word_embeddings"),  # tied
    ("qwen2", {}, "tie_word_embeddings"),  # untied
    ("llama", {"tie_word_embeddings": False, "vocab_size": 300}, "tie_word_embeddings"),  # untied
]


@pytest.mark.parametrize("family,over,field", OMITTED, ids=lambda x: str(x))
def test_omitted_config_field_takes_transformers_default(tiny_dirs, tmp_path, family, over, field):
    path = tmp_path / "m"
    shutil.copytree(tiny_dirs(family, **over), path)
    cfg = json.loads((path / "config.json").read_text())
    del cfg[field]
    (path / "config.json").write_text(json.dumps(cfg))
    lm = _logits_match(path, np.random.RandomState(0).randint(3, cfg["vocab_size"], size=(2, 12)))
    if field == "query_pre_attn_scalar":
        assert lm.config.query_scale == 256**-0.5


CONFIG_CLASSES = {"gemma2": transformers.Gemma2Config, "qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig}


@pytest.mark.parametrize("family", sorted(CONFIG_CLASSES))
def test_defaults_are_the_installed_transformers_defaults(family):
    ref = CONFIG_CLASSES[family]()
    for key, value in HF_DEFAULTS[family].items():
        assert (ref.rope_parameters["rope_theta"] if key == "rope_theta" else getattr(ref, key)) == value, key
    minimal = dict(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2)
    ours, ref = from_hf({"model_type": family, **minimal}), CONFIG_CLASSES[family](**minimal)
    assert ours.tie_embeddings == ref.tie_word_embeddings
    assert ours.head_dim == (getattr(ref, "head_dim", None) or 64 // 4)
    assert (ours.rms_eps, ours.rope_theta) == (ref.rms_norm_eps, ref.rope_parameters["rope_theta"])
    if family == "gemma2":
        assert ours.query_scale == ref.query_pre_attn_scalar**-0.5
        assert (ours.attn_softcap, ours.final_softcap) == (ref.attn_logit_softcapping, ref.final_logit_softcapping)
        assert ours.windows == tuple(ref.sliding_window if t == "sliding_attention" else ours.windows[1] for t in ref.layer_types)


def test_gemma2_padded_batch_matches_transformers(tiny_dirs):
    path = tiny_dirs("gemma2")  # window 4 < both lengths: sliding layers see the padding
    lm, ref = load_model(str(path)), load_torch(path)
    rs = np.random.RandomState(4)
    tokens, mask = lm.pad([rs.randint(3, 257, size=11).tolist(), rs.randint(3, 257, size=6).tolist()], multiple=1)
    positions = np.maximum(mask.cumsum(1) - 1, 0)
    with torch.no_grad():
        theirs = ref(torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                     position_ids=torch.tensor(positions)).logits.numpy()
    np.testing.assert_allclose(np.asarray(lm.logits(tokens, mask))[mask], theirs[mask], atol=1e-4, rtol=0)


def test_gemma2_embedding_scale_is_rounded_to_bfloat16_as_in_transformers(tiny_dirs):
    import jax.numpy as jnp

    from jaxsae.models.decoder import embed

    path = tiny_dirs("gemma2", hidden_size=72)  # sqrt(72) = 8.485... is 8.5 in bf16
    lm = load_model(str(path), dtype=jnp.bfloat16)
    ref = load_torch(path).to(torch.bfloat16)
    tokens = np.random.RandomState(6).randint(3, 257, size=(2, 9))
    with torch.no_grad():
        theirs = ref(torch.tensor(tokens), output_hidden_states=True).hidden_states[0].float().numpy()
    ours = np.asarray(embed(lm.params, lm.config, jnp.asarray(tokens)).astype(jnp.float32))
    np.testing.assert_array_equal(ours, theirs)
    raw = np.asarray(lm.params["embed_vd"].astype(jnp.float32))[tokens]
    rounded = np.asarray(jnp.asarray(raw * np.float32(8.5), jnp.bfloat16).astype(jnp.float32))
    unrounded = np.asarray(jnp.asarray(raw * np.float32(np.sqrt(72)), jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_array_equal(ours, rounded)
    assert (ours != unrounded).mean() > 0.1  # the test would see an unrounded scale
    _logits_match(path, tokens)  # and in fp32 the model still matches transformers


def test_gemma2_config_is_read_not_preset(tiny_dirs):
    cfg = load_model(str(tiny_dirs("gemma2"))).config
    assert cfg.family == "gemma2" and cfg.head_dim == 24 and cfg.n_heads * cfg.head_dim != cfg.d_model
    assert cfg.windows[0] == 4 and cfg.windows[1] > 1000  # local on even layers, global on odd
    assert cfg.attn_softcap == 5.0 and cfg.final_softcap == 3.0
    assert cfg.query_scale == pytest.approx(20**-0.5)


def test_residual_matches_forward_hook_on_block(tiny_dirs):
    """The residual equals what a forward hook on HF ``model.layers[L]`` sees (incl. the last layer)."""
    path = tiny_dirs("qwen2")
    lm, ref = load_model(str(path)), load_torch(path)
    tokens = np.random.RandomState(1).randint(3, lm.config.vocab_size, size=(3, 7))
    last = lm.config.n_layers - 1
    seen = {}
    ref.model.layers[last].register_forward_hook(lambda m, i, o: seen.setdefault("x", (o[0] if isinstance(o, tuple) else o)))
    with torch.no_grad():
        ref(torch.tensor(tokens))
    np.testing.assert_allclose(np.asarray(lm.residual(tokens, last)), seen["x"].numpy(), atol=1e-4, rtol=0)


def test_sharded_checkpoint_loads(tiny_dirs, tmp_path):
    """A checkpoint split into several safetensors shards with an index loads to the same model."""
    from tiny_models import build_tiny

    path = build_tiny("qwen2", tmp_path / "sharded", max_shard_size="100KB")
    assert (path / "model.safetensors.index.json").exists()
    one = load_model(str(tiny_dirs("qwen2")))
    many = load_model(str(path))
    tokens = np.arange(3, 13)[None]
    np.testing.assert_array_equal(np.asarray(one.logits(tokens)), np.asarray(many.logits(tokens)))


def test_bfloat16_params_give_float32_outputs_close_to_fp32(tiny_dirs):
    import jax.numpy as jnp

    path = tiny_dirs("gemma2")
    f32, bf16 = load_model(str(path)), load_model(str(path), dtype=jnp.bfloat16)
    assert bf16.params["layers"]["q_ldqh"].dtype == jnp.bfloat16
    tokens = np.random.RandomState(5).randint(3, f32.config.vocab_size, size=(2, 10))
    lb, rb = bf16.logits(tokens), bf16.residual(tokens, 1)
    assert lb.dtype == jnp.float32 and rb.dtype == jnp.float32  # logits and residuals come back in fp32
    rel = np.abs(np.asarray(lb) - np.asarray(f32.logits(tokens))).max() / np.abs(np.asarray(f32.logits(tokens))).max()
    assert rel < 0.05
