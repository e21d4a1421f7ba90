"""Checkpoint tensors -> the decoder's params pytree, placed on a mesh.

Readers yield (name, array-like) pairs in Hugging Face naming: safetensors files are read straight
from a memory map (bf16 via ml_dtypes, no torch); GGUF files are dequantised with the ``gguf``
package and renamed to HF names (undoing llama.cpp's q/k row permutation). A rule table maps each HF
key to a params leaf and a layout transform; every shape is asserted, and missing tensors, shape
mismatches and unknown keys are clear errors.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Callable, Iterator

import jax
import ml_dtypes
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxsae.errors import UserError
from jaxsae.models.config import ModelConfig

# ------------------------------------------------------------------------------- safetensors

_ST_DTYPES = {
    "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Memory-mapped arrays of one safetensors file (zero-copy views; no pickle, no torch)."""
    path = Path(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = _ST_DTYPES.get(info["dtype"])
        if dt is None:
            raise UserError(f"{path.name}: tensor {name} has unsupported dtype {info['dtype']}")
        a, b = info["data_offsets"]
        out[name] = mm[base + a : base + b].view(dt).reshape(info["shape"])
    return out


def safetensors_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files, checked against the shard index when there is one."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).exists()]
        if missing:
            raise UserError(
                f"{folder}: shard(s) {', '.join(missing)} listed in model.safetensors.index.json are missing; "
                "download the complete checkpoint"
            )
        return [folder / f for f in files]
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    if list(folder.glob("*.bin")) or list(folder.glob("*.pt")) or list(folder.glob("*.pth")):
        raise UserError(
            f"{folder} holds only pickle weights (.bin/.pt); jaxsae loads safetensors or GGUF only — "
            "convert with `save_pretrained(..., safe_serialization=True)`"
        )
    raise UserError(f"{folder} has no model.safetensors or model.safetensors.index.json; pass a complete checkpoint folder")


def hf_tensors(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for f in safetensors_files(folder):
        out.update(read_safetensors(f))
    return out


# --------------------------------------------------------------------------------------- GGUF

_GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GGUF_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def _unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head interleaving of q/k rows (its converter's ``permute``)."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path: str | Path):
    """(metadata dict, {hf_name: float32 array}) of a GGUF file, dequantised."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise UserError(f"{path} is not a readable GGUF file ({e}); check the file or re-download it") from None
    meta = {}
    for key, field in reader.fields.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            meta[key] = [None] * len(field.data)
            continue
        try:
            meta[key] = field.contents()
        except Exception:  # noqa: BLE001
            pass
    return meta, reader


def gguf_tensors(reader, meta) -> dict[str, np.ndarray]:
    import gguf

    arch = meta.get("general.architecture")
    n_heads = int(meta[f"{arch}.attention.head_count"])
    n_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_heads))
    out = {}
    for t in reader.tensors:
        m = re.fullmatch(r"blk\.(\d+)\.(.+)", t.name)
        if m:
            sub = _GGUF_LAYER.get(m.group(2))
            name = f"model.layers.{m.group(1)}.{sub}" if sub else t.name
        else:
            name = _GGUF_NAMES.get(t.name, t.name)
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            w = _unpermute_rope_rows(w, n_heads if "q_proj" in name else n_kv)
        out[name] = w
    return out


# ------------------------------------------------------------------------------ the rule table

# HF key (layer part) -> (params leaf, transform of the HF array into the leaf's per-layer layout)
Transform = Callable[[np.ndarray, ModelConfig], np.ndarray]


def _t(w, c):
    return w.T


def _q(w, c):
    return w.T.reshape(c.d_model, c.n_heads, c.head_dim)


def _kv(w, c):
    return w.T.reshape(c.d_model, c.n_kv_heads, c.head_dim)


def _o(w, c):
    return w.T.reshape(c.n_heads, c.head_dim, c.d_model)


def _qb(w, c):
    return w.reshape(c.n_heads, c.head_dim)


def _kvb(w, c):
    return w.reshape(c.n_kv_heads, c.head_dim)


def _id(w, c):
    return w


def layer_rules(cfg: ModelConfig) -> dict[str, tuple[str, Transform]]:
    rules = {
        "input_layernorm.weight": ("attn_norm_ld", _id),
        "self_attn.q_proj.weight": ("q_ldnh", _q),
        "self_attn.k_proj.weight": ("k_ldkh", _kv),
        "self_attn.v_proj.weight": ("v_ldkh", _kv),
        "self_attn.o_proj.weight": ("o_lnhd", _o),
        "mlp.gate_proj.weight": ("gate_ldf", _t),
        "mlp.up_proj.weight": ("up_ldf", _t),
        "mlp.down_proj.weight": ("down_lfd", _t),
    }
    if cfg.qkv_bias:
        rules |= {
            "self_attn.q_proj.bias": ("q_bias_lnh", _qb),
            "self_attn.k_proj.bias": ("k_bias_lkh", _kvb),
            "self_attn.v_proj.bias": ("v_bias_lkh", _kvb),
        }
    if cfg.sandwich_norms:
        rules |= {
            "post_attention_layernorm.weight": ("post_attn_norm_ld", _id),
            "pre_feedforward_layernorm.weight": ("mlp_norm_ld", _id),
            "post_feedforward_layernorm.weight": ("post_mlp_norm_ld", _id),
        }
    else:
        rules["post_attention_layernorm.weight"] = ("mlp_norm_ld", _id)
    return rules


def param_shapes(cfg: ModelConfig) -> dict:
    """Expected shape of every params leaf (the same nesting as the params pytree)."""
    L, D, N, K, H, F, V = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size)
    per = {
        "attn_norm_ld": (D,), "q_ldnh": (D, N, H), "k_ldkh": (D, K, H), "v_ldkh": (D, K, H), "o_lnhd": (N, H, D),
        "mlp_norm_ld": (D,), "gate_ldf": (D, F), "up_ldf": (D, F), "down_lfd": (F, D),
    }
    if cfg.qkv_bias:
        per |= {"q_bias_lnh": (N, H), "k_bias_lkh": (K, H), "v_bias_lkh": (K, H)}
    if cfg.sandwich_norms:
        per |= {"post_attn_norm_ld": (D,), "post_mlp_norm_ld": (D,)}
    shapes = {"embed_vd": (V, D), "final_norm_d": (D,), "layers": {k: (L, *s) for k, s in per.items()}}
    if not cfg.tie_embeddings:
        shapes["unembed_dv"] = (D, V)
    return shapes


# ---------------------------------------------------------------------------------- sharding

#: Mesh axis that model weights are split over (tensor parallelism); other mesh axes replicate
#: weights. Each leaf's trailing name suffix says its axes; this table says which axis letters
#: are split over MODEL_AXIS (heads, kv heads, feed-forward, vocabulary).
MODEL_AXIS = "model"
SPLIT_LETTERS = {"n": MODEL_AXIS, "k": MODEL_AXIS, "f": MODEL_AXIS, "v": MODEL_AXIS}


def partition_spec(name: str, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """PartitionSpec of a leaf from its shape-suffixed name: at most one axis is split, only where
    the mesh has the axis and its size divides the dimension."""
    letters = name.rsplit("_", 1)[-1]
    assert len(letters) == len(shape), (name, shape)
    spec: list[str | None] = [None] * len(shape)
    for i, letter in enumerate(letters):
        axis = SPLIT_LETTERS.get(letter)
        if axis in mesh.axis_names and shape[i] % mesh.shape[axis] == 0 and mesh.shape[axis] > 1:
            spec[i] = axis
            break
    return PartitionSpec(*spec)


def place(name: str, array: np.ndarray, mesh: Mesh | None) -> jax.Array:
    if mesh is None:
        return jax.device_put(array)
    return jax.device_put(array, NamedSharding(mesh, partition_spec(name, array.shape, mesh)))


# -------------------------------------------------------------------------------- assembling


def build_params(tensors: dict[str, np.ndarray], cfg: ModelConfig, dtype, mesh: Mesh | None = None, source: str = "") -> dict:
    """Map HF-named tensors to the params pytree (cast to ``dtype``), asserting every shape."""
    shapes = param_shapes(cfg)
    rules = layer_rules(cfg)
    np_dtype = np.dtype(dtype)
    stacked = {k: np.empty(s, np_dtype) for k, s in shapes["layers"].items()}
    filled = {k: np.zeros(cfg.n_layers, bool) for k in stacked}
    top: dict[str, np.ndarray] = {}
    unknown = []
    for name, w in tensors.items():
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
        if m:
            i, sub = int(m.group(1)), m.group(2)
            if sub not in rules or i >= cfg.n_layers:
                unknown.append(name)
                continue
            leaf, tf = rules[sub]
            arr = tf(np.asarray(w), cfg)
            if arr.shape != shapes["layers"][leaf][1:]:
                raise UserError(
                    f"{source}: tensor {name} has shape {tuple(np.shape(w))}, which does not match config.json "
                    f"(expected {shapes['layers'][leaf][1:]} after layout); the checkpoint and its config disagree"
                )
            stacked[leaf][i] = arr.astype(np_dtype)
            filled[leaf][i] = True
        elif name == "model.embed_tokens.weight":
            top["embed_vd"] = np.asarray(w)
        elif name == "model.norm.weight":
            top["final_norm_d"] = np.asarray(w)
        elif name == "lm_head.weight":
            if not cfg.tie_embeddings:
                top["unembed_dv"] = np.asarray(w).T
        elif name.endswith("rotary_emb.inv_freq"):
            continue
        else:
            unknown.append(name)
    if unknown:
        raise UserError(
            f"{source}: unexpected tensor(s) {', '.join(sorted(unknown)[:3])}{' ...' if len(unknown) > 3 else ''} "
            f"for a {cfg.family} model; the checkpoint does not match its config"
        )
    missing = [f"{k}[layer {int(np.argmin(v))}]" for k, v in filled.items() if not v.all()]
    missing += [k for k in shapes if k != "layers" and k not in top]
    if missing:
        raise UserError(f"{source}: missing tensor(s) {', '.join(missing[:4])}; the checkpoint is incomplete")
    for k, a in top.items():
        if a.shape != shapes[k]:
            raise UserError(
                f"{source}: tensor {k} has shape {a.shape}, expected {shapes[k]} from the config; the checkpoint "
                "and its config disagree"
            )
    params = {k: place(k, a.astype(np_dtype), mesh) for k, a in top.items()}
    params["layers"] = {k: place(k, a, mesh) for k, a in stacked.items()}
    return params


def iter_leaves(params) -> Iterator[tuple[str, jax.Array]]:
    for k, v in params.items():
        if isinstance(v, dict):
            yield from iter_leaves(v)
        else:
            yield k, v
