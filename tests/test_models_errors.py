"""Loading errors are one clear UserError line naming the fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import safetensors.numpy

from jaxsae.errors import UserError
from jaxsae.models import load_model
from tiny_models import build_tiny


def test_unknown_source():
    with pytest.raises(UserError, match="unknown model"):
        load_model("no-such-model")


def test_missing_path_and_gguf(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(str(tmp_path / "x.gguf"))
    with pytest.raises(UserError, match="config.json"):
        load_model(str(tmp_path))


def test_offline_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="Hugging Face Hub"):
        load_model("google/gemma-2-2b-not-cached")


def test_missing_shard(tmp_path):
    path = build_tiny("qwen2", tmp_path / "m", max_shard_size="100KB")
    shard = sorted(path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(UserError, match="missing"):
        load_model(str(path))


def test_wrong_shapes(tiny_dirs, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(tiny_dirs("llama"), path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["intermediate_size"] = 100
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="shape"):
        load_model(str(path))


def _edit_weights(src, dst, fn):
    """Copy checkpoint folder ``src`` to ``dst`` with its tensors dict changed by ``fn``."""
    shutil.copytree(src, dst)
    tensors = safetensors.numpy.load_file(str(dst / "model.safetensors"))
    fn(tensors)
    safetensors.numpy.save_file(tensors, str(dst / "model.safetensors"))
    return dst


K_PROJ = "model.layers.1.self_attn.k_proj.weight"  # stored [K*H, D] = (32, 64)


@pytest.mark.parametrize("shape", [(64, 32), (31, 64)], ids=["transposed", "wrong-size"])
def test_stored_shape_is_checked_before_the_layout_transform(tiny_dirs, tmp_path, shape):
    def fn(t):
        t[K_PROJ] = np.zeros(shape, np.float32)

    path = _edit_weights(tiny_dirs("llama"), tmp_path / "m", fn)
    with pytest.raises(UserError, match=rf"{K_PROJ} has shape \({shape[0]}, {shape[1]}\), expected \(32, 64\)") as e:
        load_model(str(path))
    assert "\n" not in str(e.value)


def test_tied_lm_head_shape_is_checked(tiny_dirs, tmp_path):
    def fn(t):
        t["lm_head.weight"] = t["model.embed_tokens.weight"][:-1]

    path = _edit_weights(tiny_dirs("llama"), tmp_path / "bad", fn)
    with pytest.raises(UserError, match=r"lm_head.weight has shape \(49151, 64\), expected \(49152, 64\)"):
        load_model(str(path))

    def same(t):  # a stored copy of the tied embedding is fine
        t["lm_head.weight"] = t["model.embed_tokens.weight"].copy()

    ok = load_model(str(_edit_weights(tiny_dirs("llama"), tmp_path / "ok", same)))
    assert ok.config.tie_embeddings and "unembed_dv" not in ok.params


def test_layer_tensor_name_outside_the_layers_is_unexpected(tiny_dirs, tmp_path):
    def fn(t):
        t["input_layernorm.weight"] = np.ones(64, np.float32)

    with pytest.raises(UserError, match="unexpected tensor.*input_layernorm.weight"):
        load_model(str(_edit_weights(tiny_dirs("llama"), tmp_path / "m", fn)))


def test_missing_and_unknown_tensors(tiny_dirs, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(tiny_dirs("llama"), path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["num_hidden_layers"] = 5  # checkpoint has 4
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="missing"):
        load_model(str(path))
    cfg["num_hidden_layers"] = 3  # checkpoint has a 4th layer nobody expects
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="unexpected"):
        load_model(str(path))


def test_unsupported_architecture_and_fields(tiny_dirs, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(tiny_dirs("llama"), path)
    cfg = json.loads((path / "config.json").read_text())
    for change, msg in [({"model_type": "mistral"}, "not supported"),
                        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "RoPE scaling"),
                        ({"mlp_bias": True}, "mlp_bias"),
                        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
                        ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e5, "partial_rotary_factor": 0.25}},
                         "partial_rotary_factor"),
                        ({"num_key_value_heads": 3}, "num_key_value_heads")]:
        (path / "config.json").write_text(json.dumps(cfg | change))
        with pytest.raises(UserError, match=msg):
            load_model(str(path))


GGUF_META = {"general.architecture": "llama", "llama.attention.head_count": 4, "llama.embedding_length": 64,
             "llama.block_count": 2, "llama.feed_forward_length": 128, "llama.vocab_size": 100}


def test_gguf_head_dims_must_agree():
    from jaxsae.models.config import from_gguf

    assert from_gguf(GGUF_META, set()).head_dim == 16
    assert from_gguf(GGUF_META | {"llama.rope.dimension_count": 16, "llama.attention.value_length": 16}, set()).head_dim == 16
    wide = {"llama.attention.key_length": 32, "llama.attention.value_length": 32, "llama.rope.dimension_count": 32}
    assert from_gguf(GGUF_META | wide, set()).head_dim == 32
    for change, msg in [({"llama.rope.dimension_count": 8}, "rope.dimension_count is 8 but the head dim is 16"),
                        ({"llama.attention.value_length": 32}, "value_length is 32 but the head dim is 16"),
                        ({"llama.attention.key_length": 32, "llama.attention.value_length": 16},
                         "value_length is 16 but the head dim is 32")]:
        with pytest.raises(UserError, match=msg):
            from_gguf(GGUF_META | change, set())


def test_pickle_weights_are_refused(tiny_dirs, tmp_path):
    shutil.copy(tiny_dirs("llama") / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserError):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="config.json"):
        load_model(str(tmp_path))


def test_residual_layer_out_of_range(tiny_llama):
    with pytest.raises(UserError, match="out of range"):
        tiny_llama.residual([[3, 4]], 4)
