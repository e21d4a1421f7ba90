"""``jaxsae.sae.load``: every refusal is a one-line UserError naming the fix, and a legacy (pre-6)
SAELens config loads as its v6 equivalent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.numpy

import jaxsae.sae as S
from jaxsae.errors import UserError

D, F = 6, 10


def _write(folder, cfg: dict, tensors: dict):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    safetensors.numpy.save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
                                str(folder / "sae_weights.safetensors"))
    return folder


def _tensors(seed=0, keys=("W_enc", "b_enc", "W_dec", "b_dec")):
    r = np.random.default_rng(seed)
    shapes = {"W_enc": (D, F), "W_dec": (F, D), "b_dec": (D,), "b_enc": (F,), "threshold": (F,)}
    return {k: r.normal(size=shapes[k]).astype(np.float32) for k in keys}


def _cfg(arch="standard", **extra):
    return S.make_cfg(arch, D, F, apply_b_dec_to_input=True, metadata={"hook_layer": 3}, **extra)


def _refused(path, *needles):
    with pytest.raises(UserError) as e:
        S.load(path)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_a_valid_folder_loads(tmp_path):
    t = _tensors()
    sae = S.load(_write(tmp_path / "ok", _cfg(), t))
    assert sae.arch == "standard" and (sae.d_in, sae.d_sae) == (D, F) and sae.cfg["metadata"]["hook_layer"] == 3
    for k, v in t.items():
        np.testing.assert_array_equal(np.asarray(sae.params[k]), v)


def test_missing_files(tmp_path):
    _refused(tmp_path, "is not an SAE folder", "cfg.json", "sae_weights.safetensors")
    (tmp_path / "cfg.json").write_text(json.dumps(_cfg()))
    _refused(tmp_path, "is not an SAE folder")


def test_bad_json(tmp_path):
    folder = _write(tmp_path / "a", _cfg(), _tensors())
    (folder / "cfg.json").write_text("{not json")
    _refused(folder, "is not valid JSON", "re-export")


@pytest.mark.parametrize("change,needles", [
    ({"architecture": "transcoder"}, ("architecture 'transcoder' is not supported", "standard, topk, jumprelu, gated")),
    ({"normalize_activations": "expected_average_only_in"}, ("normalize_activations", "fold the scale")),
    ({"reshape_activations": "hook_z"}, ("reshape_activations", "residual-stream SAE")),
])
def test_unsupported_configurations(tmp_path, change, needles):
    _refused(_write(tmp_path / "a", {**_cfg(), **change}, _tensors()), *needles)


def test_topk_without_k(tmp_path):
    _refused(_write(tmp_path / "a", _cfg("topk"), _tensors()), "a topk SAE needs 'k'")


def test_missing_weight_and_wrong_shape(tmp_path):
    _refused(_write(tmp_path / "a", _cfg("jumprelu"), _tensors()), "weights lack 'threshold'", "re-export")
    t = _tensors()
    t["W_dec"] = t["W_dec"][:, :-1]
    _refused(_write(tmp_path / "b", _cfg(), t), "W_dec has shape (10, 5), expected (10, 6)", "do not match")
    _refused(_write(tmp_path / "c", {**_cfg(), "d_sae": F + 1}, _tensors()), "expected (6, 11)")


def test_legacy_config_loads_as_v6(tmp_path):
    """A pre-6 SAELens config (flat keys, topk given as activation_fn_str) reads as the v6 one."""
    legacy = {"architecture": "standard", "d_in": D, "d_sae": F, "dtype": "float32", "device": "cpu",
              "apply_b_dec_to_input": True, "normalize_activations": "none", "activation_fn_str": "topk",
              "activation_fn_kwargs": {"k": 3}, "model_name": "gpt2", "hook_name": "blocks.3.hook_resid_post",
              "hook_layer": 3, "sae_lens_version": "3.13.0"}
    t = _tensors(1)
    sae = S.load(_write(tmp_path / "old", legacy, t))
    assert sae.arch == "topk" and sae.cfg["k"] == 3 and sae.cfg["metadata"]["hook_layer"] == 3
    assert sae.metadata["model_name"] == "gpt2" and sae.metadata["sae_lens_version"] == "3.13.0"
    x = np.random.default_rng(2).normal(size=(5, D)).astype(np.float32)
    pre = np.maximum((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"], 0)
    keep = pre >= np.sort(pre, axis=1)[:, -3:-2]
    np.testing.assert_allclose(np.asarray(sae.encode(x)), np.where(keep, pre, 0), rtol=1e-5, atol=1e-6)
