"""SAELens-v6 folders: ``cfg.json`` + ``sae_weights.safetensors``; the :class:`SAE` object.

Layout (what SAELens 6.x writes and reads):
  cfg.json  {"architecture": "standard"|"topk"|"jumprelu"|"gated", "d_in", "d_sae", "dtype",
             "device", "apply_b_dec_to_input", "normalize_activations": "none",
             "reshape_activations": "none", ("k", "rescale_acts_by_decoder_norm" for topk),
             "metadata": {"sae_lens_version": >= "6", "model_name", "hook_name", "hook_layer", ...}}
  sae_weights.safetensors  W_enc f32[D, F], W_dec f32[F, D], b_dec f32[D], and b_enc f32[F]
             (standard, topk, jumprelu), threshold f32[F] (jumprelu), b_gate/b_mag/r_mag f32[F] (gated).
Legacy (pre-6) configs with flat keys (``hook_name``, ``activation_fn_str``) are read as well.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from jaxsae.errors import UserError
from jaxsae.io import atomic_dir
from jaxsae.sae import inference

CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae_weights.safetensors"
SAE_LENS_VERSION = "6.0.0"

_KEYS = {
    "standard": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
    "gated": ("W_enc", "b_gate", "b_mag", "r_mag", "W_dec", "b_dec"),
}


@dataclass
class SAE:
    """A trained SAE in SAELens layout: ``encode``/``decode`` are batched and jitted.

    Any leading axes are allowed: ``encode(f32[..., D]) -> f32[..., F]``.
    """

    cfg: dict
    params: dict = field(repr=False)

    @property
    def arch(self) -> str:
        return self.cfg["architecture"]

    @property
    def d_in(self) -> int:
        return int(self.cfg["d_in"])

    @property
    def d_sae(self) -> int:
        return int(self.cfg["d_sae"])

    @property
    def metadata(self) -> dict:
        return self.cfg.get("metadata", {})

    @property
    def static(self) -> inference.EncodeStatic:
        return inference.EncodeStatic(
            arch=self.arch,
            apply_b_dec_to_input=bool(self.cfg.get("apply_b_dec_to_input", True)),
            k=int(self.cfg.get("k", 0) or 0),
            rescale_acts_by_decoder_norm=bool(self.cfg.get("rescale_acts_by_decoder_norm", False)),
        )

    def encode(self, x):
        return inference.jitted(self.static)[0](self.params, jnp.asarray(x))

    def decode(self, f):
        return inference.jitted(self.static)[1](self.params, jnp.asarray(f))

    def __call__(self, x):
        return self.decode(self.encode(x))


def encode_fn(sae: SAE):
    """A pure ``(params, x) -> f`` for use inside other jitted code (pass ``sae.params``)."""
    return inference.encode_for(sae.static)


def decode_fn(sae: SAE):
    """A pure ``(params, f) -> x_hat`` for use inside other jitted code (pass ``sae.params``)."""
    return inference.decode_for(sae.static)


def make_cfg(arch: str, d_in: int, d_sae: int, *, apply_b_dec_to_input: bool, metadata: dict,
             **extra) -> dict:
    """A SAELens-v6 cfg dict. ``extra``: architecture fields (``k``, ``rescale_acts_by_decoder_norm``)."""
    cfg = {
        "architecture": arch,
        "d_in": int(d_in),
        "d_sae": int(d_sae),
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": bool(apply_b_dec_to_input),
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    cfg.update(extra)
    md = {
        "sae_lens_version": SAE_LENS_VERSION,
        "sae_lens_training_version": SAE_LENS_VERSION,
        "hook_head_index": None,
        "prepend_bos": True,
        "seqpos_slice": [None],
        "model_from_pretrained_kwargs": {},
        "exclude_special_tokens": True,
        "neuronpedia_id": None,
    }
    md.update(metadata)
    if "hook_layer" in md and md["hook_layer"] is not None and "hook_name" not in md:
        md["hook_name"] = f"blocks.{int(md['hook_layer'])}.hook_resid_post"
    cfg["metadata"] = md
    return cfg


def save(sae: SAE, path: str | os.PathLike) -> Path:
    """Write ``sae`` as a SAELens-v6 folder (atomically: the folder appears complete or not at all)."""
    path = Path(path)
    _validate(sae.cfg, {k: np.asarray(v) for k, v in sae.params.items()}, path)
    tensors = {k: np.ascontiguousarray(np.asarray(sae.params[k], np.float32)) for k in _KEYS[sae.arch]}
    with atomic_dir(path) as tmp:
        (tmp / CFG_NAME).write_text(json.dumps(sae.cfg, indent=2) + "\n")
        safetensors.numpy.save_file(tensors, str(tmp / WEIGHTS_NAME))
    return path


def _version_tuple(v) -> tuple[int, ...]:
    out = []
    for part in str(v).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _from_legacy(cfg: dict) -> dict:
    """Pre-6.0 SAELens flat config -> v6 layout."""
    arch = cfg.get("architecture", "standard")
    extra = {}
    if arch == "standard" and cfg.get("activation_fn_str") == "topk":
        arch = "topk"
        extra["k"] = int((cfg.get("activation_fn_kwargs") or {})["k"])
    md_keys = ("model_name", "hook_name", "hook_layer", "hook_head_index", "context_size",
               "prepend_bos", "dataset_path", "neuronpedia_id", "model_from_pretrained_kwargs")
    md = {k: cfg[k] for k in md_keys if k in cfg}
    md["sae_lens_version"] = cfg.get("sae_lens_version") or "legacy"
    out = {k: v for k, v in cfg.items() if k in ("d_in", "d_sae", "dtype", "device",
                                                  "apply_b_dec_to_input", "normalize_activations")}
    out.update(architecture=arch, metadata=md, **extra)
    return out


def load(path: str | os.PathLike) -> SAE:
    """Load a SAELens folder (v6, or legacy pre-6 config) written by us or by SAELens."""
    path = Path(path)
    cfg_file, w_file = path / CFG_NAME, path / WEIGHTS_NAME
    if not cfg_file.is_file() or not w_file.is_file():
        raise UserError(f"{path} is not an SAE folder: it needs {CFG_NAME} and {WEIGHTS_NAME} "
                        "(SAELens v6 layout); pass the folder of one trained SAE")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_file} is not valid JSON ({e}); re-export the SAE") from None
    md = cfg.get("metadata") or {}
    if _version_tuple(md.get("sae_lens_version", "0")) < (6,):
        cfg = _from_legacy(cfg)
    if cfg.get("architecture") not in _KEYS:
        raise UserError(f"{cfg_file}: architecture {cfg.get('architecture')!r} is not supported; "
                        f"supported: {', '.join(_KEYS)}")
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", None):
        raise UserError(f"{cfg_file}: normalize_activations={norm!r} needs a runtime scale this "
                        "loader does not apply; fold the scale into the weights and set it to 'none'")
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise UserError(f"{cfg_file}: reshape_activations={cfg['reshape_activations']!r} "
                        "(attention hook_z SAEs) is not supported; use a residual-stream SAE")
    raw = safetensors.numpy.load_file(str(w_file))
    if cfg["architecture"] == "topk" and not cfg.get("k"):
        raise UserError(f"{cfg_file}: a topk SAE needs 'k' in its config")
    _validate(cfg, raw, path)
    for k in _KEYS[cfg["architecture"]]:
        n_bad = int(np.sum(~np.isfinite(raw[k])))
        if n_bad:
            raise UserError(f"{w_file}: {k} holds {n_bad} NaN or inf values; the SAE is corrupt: retrain or re-export it")
    params = {k: jnp.asarray(raw[k], jnp.float32) for k in _KEYS[cfg["architecture"]]}
    return SAE(cfg=cfg, params=params)


def _validate(cfg: dict, tensors: dict, where) -> None:
    arch = cfg["architecture"]
    d, f = int(cfg["d_in"]), int(cfg["d_sae"])
    want = {"W_enc": (d, f), "W_dec": (f, d), "b_dec": (d,), "b_enc": (f,), "threshold": (f,),
            "b_gate": (f,), "b_mag": (f,), "r_mag": (f,)}
    for k in _KEYS[arch]:
        if k not in tensors:
            raise UserError(f"{where}: weights lack {k!r}, which a {arch} SAE needs; re-export it")
        if tuple(tensors[k].shape) != want[k]:
            raise UserError(f"{where}: {k} has shape {tuple(tensors[k].shape)}, expected {want[k]} "
                            f"for d_in={d}, d_sae={f}; the config and weights do not match")
