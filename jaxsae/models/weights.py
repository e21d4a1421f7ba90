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
from typing import Callable, NamedTuple

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


class LazyTensor:
    """A checkpoint tensor whose data is produced only when read (``np.asarray``): its shape is
    known up front, so it can be checked before anything is dequantised."""

    def __init__(self, shape: tuple[int, ...], load: Callable[[], np.ndarray]):
        self.shape = tuple(int(x) for x in shape)
        self._load = load

    def __array__(self, dtype=None, copy=None):
        a = self._load()
        return a if dtype is None else a.astype(dtype)


def _dequantize(t, permute_heads: int | None) -> np.ndarray:
    import gguf

    w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    return w if permute_heads is None else _unpermute_rope_rows(w, permute_heads)


def gguf_tensors(reader, meta) -> dict[str, LazyTensor]:
    """HF-named tensors of a GGUF file, each dequantised (and q/k rows un-permuted) when read."""
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
        heads = None
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = n_heads if "q_proj" in name else n_kv
        shape = tuple(reversed([int(x) for x in t.shape]))  # ggml lists dims fastest first
        out[name] = LazyTensor(shape, lambda t=t, heads=heads: _dequantize(t, heads))
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
        "self_attn.q_proj.weight": ("q_ldqh", _q),
        "self_attn.k_proj.weight": ("k_ldkh", _kv),
        "self_attn.v_proj.weight": ("v_ldkh", _kv),
        "self_attn.o_proj.weight": ("o_lqhd", _o),
        "mlp.gate_proj.weight": ("gate_ldm", _t),
        "mlp.up_proj.weight": ("up_ldm", _t),
        "mlp.down_proj.weight": ("down_lmd", _t),
    }
    if cfg.qkv_bias:
        rules |= {
            "self_attn.q_proj.bias": ("q_bias_lqh", _qb),
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


def hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Stored (Hugging Face, [out, in]) shape the config implies for every tensor a checkpoint may
    hold: layer tensors keyed by their name inside a layer, the rest by their full name."""
    D, Q, K, H, M, V = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size
    norm = (D,)
    shapes = {
        "input_layernorm.weight": norm, "post_attention_layernorm.weight": norm,
        "self_attn.q_proj.weight": (Q * H, D), "self_attn.k_proj.weight": (K * H, D),
        "self_attn.v_proj.weight": (K * H, D), "self_attn.o_proj.weight": (D, Q * H),
        "mlp.gate_proj.weight": (M, D), "mlp.up_proj.weight": (M, D), "mlp.down_proj.weight": (D, M),
        "model.embed_tokens.weight": (V, D), "model.norm.weight": norm, "lm_head.weight": (V, D),
    }
    if cfg.qkv_bias:
        shapes |= {"self_attn.q_proj.bias": (Q * H,), "self_attn.k_proj.bias": (K * H,), "self_attn.v_proj.bias": (K * H,)}
    if cfg.sandwich_norms:
        shapes |= {"pre_feedforward_layernorm.weight": norm, "post_feedforward_layernorm.weight": norm}
    return shapes


def param_shapes(cfg: ModelConfig) -> dict:
    """Expected shape of every params leaf (the same nesting as the params pytree)."""
    L, D, Q, K, H, M, V = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size)
    per = {
        "attn_norm_ld": (D,), "q_ldqh": (D, Q, H), "k_ldkh": (D, K, H), "v_ldkh": (D, K, H), "o_lqhd": (Q, H, D),
        "mlp_norm_ld": (D,), "gate_ldm": (D, M), "up_ldm": (D, M), "down_lmd": (M, D),
    }
    if cfg.qkv_bias:
        per |= {"q_bias_lqh": (Q, H), "k_bias_lkh": (K, H), "v_bias_lkh": (K, H)}
    if cfg.sandwich_norms:
        per |= {"post_attn_norm_ld": (D,), "post_mlp_norm_ld": (D,)}
    shapes = {"embed_vd": (V, D), "final_norm_d": (D,), "layers": {k: (L, *s) for k, s in per.items()}}
    if not cfg.tie_embeddings:
        shapes["unembed_dv"] = (D, V)
    return shapes


# ---------------------------------------------------------------------------------- sharding

#: Mesh axis that model weights are split over (tensor parallelism); other mesh axes replicate
#: weights. Each leaf's trailing name suffix says its axes (the letters of the :mod:`jaxsae` shape
#: table); this table says which axis letters are split over MODEL_AXIS (query heads, key/value
#: heads, MLP hidden width, vocabulary).
MODEL_AXIS = "model"
SPLIT_LETTERS = {"q": MODEL_AXIS, "k": MODEL_AXIS, "m": MODEL_AXIS, "v": MODEL_AXIS}


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


def leaf_sharding(name: str, shape: tuple[int, ...], mesh: Mesh | None) -> jax.sharding.Sharding:
    if mesh is None:  # the default device (honours jax.default_device), as jax.device_put would
        default = jax.config.jax_default_device
        device = default if isinstance(default, jax.Device) else jax.local_devices()[0]
        return jax.sharding.SingleDeviceSharding(device)
    return NamedSharding(mesh, partition_spec(name, shape, mesh))


# -------------------------------------------------------------------------------- assembling


class LeafPlan(NamedTuple):
    """Where one params leaf comes from: its checkpoint tensors (one per layer when ``stacked``)
    and the layout transform applied to each."""

    shape: tuple[int, ...]
    parts: list
    transform: Transform
    stacked: bool


#: Checkpoint tensors outside the layers -> (params leaf, layout transform).
TOP_RULES = {
    "model.embed_tokens.weight": ("embed_vd", _id),
    "model.norm.weight": ("final_norm_d", _id),
    "lm_head.weight": ("unembed_dv", _t),
}


def _shape_error(source: str, name: str, expected, found) -> UserError:
    return UserError(
        f"{source}: tensor {name} has shape {tuple(found)}, expected {tuple(expected)} from the config; "
        "the checkpoint and its config disagree"
    )


def plan_params(tensors: dict, cfg: ModelConfig, source: str = "") -> dict:
    """Map each params leaf to its checkpoint tensors, asserting every stored (HF) shape against the
    config before any data is read; missing, unexpected and mis-shaped tensors are UserErrors."""
    shapes, rules, stored = param_shapes(cfg), layer_rules(cfg), hf_shapes(cfg)
    parts = {k: [None] * cfg.n_layers for k in shapes["layers"]}
    top = {}
    unknown = []
    for name, w in tensors.items():
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
        key = m.group(2) if m else name
        known = (key in rules and int(m.group(1)) < cfg.n_layers) if m else name in TOP_RULES
        if not known:
            if not name.endswith("rotary_emb.inv_freq"):
                unknown.append(name)
            continue
        if tuple(w.shape) != stored[key]:
            raise _shape_error(source, name, stored[key], w.shape)
        if m:
            parts[rules[key][0]][int(m.group(1))] = w
        elif TOP_RULES[name][0] in shapes:  # with tied embeddings a stored lm_head.weight is not used
            leaf, tf = TOP_RULES[name]
            top[leaf] = LeafPlan(shapes[leaf], [w], tf, False)
    if unknown:
        raise UserError(
            f"{source}: unexpected tensor(s) {', '.join(sorted(unknown)[:3])}{' ...' if len(unknown) > 3 else ''} "
            f"for a {cfg.family} model; the checkpoint does not match its config"
        )
    holes = {k: [i for i, w in enumerate(v) if w is None] for k, v in parts.items()}
    missing = [f"{k}[layer {v[0]}]" for k, v in holes.items() if v]
    missing += [k for k in shapes if k != "layers" and k not in top]
    if missing:
        raise UserError(f"{source}: missing tensor(s) {', '.join(missing[:4])}; the checkpoint is incomplete")
    transforms = {leaf: tf for leaf, tf in rules.values()}
    layers = {k: LeafPlan(shapes["layers"][k], v, transforms[k], True) for k, v in parts.items()}
    return top | {"layers": layers}


def read_slice(plan: LeafPlan, cfg: ModelConfig, index: tuple, dtype) -> np.ndarray:
    """The part ``index`` (a tuple of slices) of one leaf, read from its checkpoint tensors (memory
    maps are sliced, not copied whole) and cast to ``dtype``."""
    index = tuple(index) + (slice(None),) * (len(plan.shape) - len(index))
    if not plan.stacked:
        return np.array(plan.transform(np.asarray(plan.parts[0]), cfg)[index], dtype=dtype)
    layers = range(len(plan.parts))[index[0]]
    out = None
    for j, i in enumerate(layers):
        piece = plan.transform(np.asarray(plan.parts[i]), cfg)[index[1:]]
        if out is None:
            out = np.empty((len(layers), *piece.shape), dtype)
        out[j] = piece
    return out if out is not None else np.empty((0, *plan.shape[1:]), dtype)


def place_leaf(name: str, plan: LeafPlan, cfg: ModelConfig, dtype, mesh: Mesh | None) -> jax.Array:
    """One leaf on its sharding, built shard by shard (``jax.make_array_from_callback``): host
    memory holds only this leaf's distinct shards while it is placed."""
    shards: dict = {}

    def shard(index):
        key = tuple((s.start, s.stop, s.step) for s in index)
        if key not in shards:  # replicas of a shard are read once
            shards[key] = read_slice(plan, cfg, index, dtype)
        return shards[key]

    array = jax.make_array_from_callback(plan.shape, leaf_sharding(name, plan.shape, mesh), shard)
    array.block_until_ready()  # transferred: this leaf's host buffers go before the next leaf is read
    shards.clear()
    return array


def build_params(tensors: dict, cfg: ModelConfig, dtype, mesh: Mesh | None = None, source: str = "") -> dict:
    """Map HF-named tensors to the params pytree (cast to ``dtype``), asserting every shape; leaves
    are placed one at a time, so host memory peaks at about one leaf, not the model."""
    plans = plan_params(tensors, cfg, source)
    np_dtype = np.dtype(dtype)
    params = {k: place_leaf(k, p, cfg, np_dtype, mesh) for k, p in plans.items() if k != "layers"}
    params["layers"] = {k: place_leaf(k, p, cfg, np_dtype, mesh) for k, p in plans["layers"].items()}
    return params
