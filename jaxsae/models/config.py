"""ModelConfig: one decoder, configured per family from the checkpoint's own metadata.

Configs are read from a Hugging Face ``config.json`` (``from_hf``) or from GGUF metadata
(``from_gguf``); there are no hand-copied presets. Any field that would change the numerics in a
way this port does not implement is refused with a :class:`~jaxsae.errors.UserError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jaxsae.errors import UserError

#: Window value used for layers with global (full causal) attention.
GLOBAL_WINDOW = 1 << 30

#: transformers' defaults (its Gemma2Config / Qwen2Config / LlamaConfig; a test checks them against
#: the installed version) for the fields that change numerics, used where config.json omits them.
#: Llama derives head_dim and num_key_value_heads from the heads, as the code below does by default.
HF_DEFAULTS = {
    "gemma2": dict(
        tie_word_embeddings=True, head_dim=256, num_key_value_heads=4, query_pre_attn_scalar=256,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096, rms_norm_eps=1e-6,
        rope_theta=10000.0, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192,
    ),
    "qwen2": dict(
        tie_word_embeddings=False, num_key_value_heads=32, rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu",
        use_sliding_window=False, max_window_layers=28, max_position_embeddings=32768,
    ),
    "llama": dict(tie_word_embeddings=False, rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu", max_position_embeddings=2048),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything the decoder needs; frozen and hashable so it can be a static jit argument."""

    family: str
    """"gemma2", "qwen2" or "llama" (Llama-architecture models such as SmolLM2)."""
    vocab_size: int
    """Rows of the embedding matrix (V)."""
    d_model: int
    """Residual-stream width (D)."""
    n_layers: int
    """Number of decoder blocks."""
    n_heads: int
    """Query heads (Q)."""
    n_kv_heads: int
    """Key/value heads (K); Q is a multiple of K (grouped-query attention, G = Q / K)."""
    head_dim: int
    """Per-head width (H); may differ from D / Q (Gemma-2)."""
    d_ff: int
    """MLP hidden (feed-forward) width (M)."""
    rope_theta: float
    """RoPE base frequency (rotate-half layout over the full head dim)."""
    rms_eps: float
    """RMSNorm epsilon."""
    query_scale: float
    """Multiplier of q.k scores: query_pre_attn_scalar**-0.5 (Gemma-2) or head_dim**-0.5."""
    windows: tuple[int, ...]
    """Per-layer attention window: key j is visible from query i iff 0 <= i - j < window."""
    tie_embeddings: bool
    """Logits use the embedding matrix (no separate unembedding)."""
    qkv_bias: bool = False
    """q/k/v projections carry biases (Qwen-2)."""
    norm_plus_one: bool = False
    """RMSNorm weight is zero-centred and applied as (1 + w) in float32 (Gemma-2)."""
    sandwich_norms: bool = False
    """Extra post-attention and post-feed-forward norms inside each block (Gemma-2)."""
    embed_scale: bool = False
    """Embeddings multiplied by sqrt(D), rounded to the activation dtype (Gemma-2)."""
    attn_softcap: float | None = None
    """Attention-score soft-cap c: scores <- c * tanh(scores / c), before the mask."""
    final_softcap: float | None = None
    """Logit soft-cap, applied in float32."""
    activation: str = "silu"
    """Gate activation: "silu" (SwiGLU) or "gelu_tanh" (GeGLU)."""
    bos_id: int | None = None
    """Beginning-of-sequence token id, if the model has one."""
    eos_ids: tuple[int, ...] = ()
    """Token ids that end generation."""
    pad_id: int = 0
    """Token id written into padding slots."""
    max_positions: int = 8192
    """Maximum context length the checkpoint was trained for."""
    name: str = ""
    """Human-readable model name (for metadata and SAELens export)."""

    @property
    def n_groups(self) -> int:
        return self.n_heads // self.n_kv_heads


def _get(d: Mapping[str, Any], *keys, default=None):
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def _as_tuple(x) -> tuple[int, ...]:
    if x is None:
        return ()
    if isinstance(x, (list, tuple)):
        return tuple(int(v) for v in x)
    return (int(x),)


def _rope_theta(d: Mapping[str, Any], default: float) -> float:
    rp = d.get("rope_parameters") or {}
    scaling = d.get("rope_scaling")
    partial = _get(rp, "partial_rotary_factor", default=_get(d, "partial_rotary_factor", default=1.0))
    if float(partial) != 1.0:
        raise UserError(
            f"partial_rotary_factor {partial} is not supported by jaxsae's port (RoPE over the full head dim only); "
            "use a checkpoint without partial rotary embeddings"
        )
    rope_type = (rp.get("rope_type") or rp.get("type") or "default") if rp else "default"
    if scaling:
        rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise UserError(
            f"RoPE scaling type {rope_type!r} is not supported by jaxsae's port; use a checkpoint "
            "without rope_scaling (e.g. a base Llama/Qwen-2.5/Gemma-2 model)"
        )
    return float(rp.get("rope_theta", d.get("rope_theta", default)) if rp else d.get("rope_theta", default))


def _windows(d: Mapping[str, Any], n_layers: int, family: str) -> tuple[int, ...]:
    types = d.get("layer_types")
    window = d.get("sliding_window")
    if types is None:
        if family == "gemma2":  # older configs: even layers are local
            types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
        elif family == "qwen2" and d.get("use_sliding_window"):
            first = int(d.get("max_window_layers", n_layers))
            types = ["sliding_attention" if i >= first else "full_attention" for i in range(n_layers)]
        else:
            types = ["full_attention"] * n_layers
    if len(types) != n_layers:
        raise UserError(f"config.json: layer_types has {len(types)} entries for {n_layers} layers; fix the config")
    out = []
    for t in types:
        if t == "full_attention":
            out.append(GLOBAL_WINDOW)
        elif t == "sliding_attention":
            if not window:
                raise UserError("config.json: a sliding_attention layer needs sliding_window; fix the config")
            out.append(int(window))
        else:
            raise UserError(f"attention type {t!r} is not supported by jaxsae's port (full or sliding only)")
    return tuple(out)


def from_hf(d: Mapping[str, Any], name: str = "") -> ModelConfig:
    """Build a ModelConfig from a Hugging Face ``config.json`` dict, refusing what we do not port."""
    try:
        return _from_hf(d, name)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"config.json is missing or has a malformed field ({e}); use the checkpoint's own config.json") from None


def _from_hf(d: Mapping[str, Any], name: str) -> ModelConfig:
    model_type = d.get("model_type")
    family = {"gemma2": "gemma2", "qwen2": "qwen2", "llama": "llama"}.get(model_type)
    if family is None:
        raise UserError(
            f"model_type {model_type!r} is not supported; jaxsae ports gemma2, qwen2 and llama checkpoints"
        )
    d = HF_DEFAULTS[family] | dict(d)  # an explicit null stays null, as in transformers
    if d.get("attention_bias") and family == "llama":
        raise UserError("llama configs with attention_bias=true are not supported by jaxsae's port")
    if d.get("mlp_bias"):
        raise UserError("configs with mlp_bias=true are not supported by jaxsae's port")
    n_layers = int(d["num_hidden_layers"])
    n_heads = int(d["num_attention_heads"])
    d_model = int(d["hidden_size"])
    head_dim = int(_get(d, "head_dim", default=d_model // n_heads))
    n_kv_heads = int(_get(d, "num_key_value_heads", default=n_heads))
    if n_heads % n_kv_heads:
        raise UserError(
            f"config.json: num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}; "
            "set num_key_value_heads in the config"
        )
    act = _get(d, "hidden_activation", "hidden_act", default="silu")
    activation = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}.get(act)
    if activation is None:
        raise UserError(f"activation {act!r} is not supported by jaxsae's port (silu or gelu_pytorch_tanh)")
    if family == "gemma2" and activation != "gelu_tanh":
        raise UserError(f"gemma2 with activation {act!r} is not supported (expected gelu_pytorch_tanh)")
    gemma = family == "gemma2"
    scalar = d.get("query_pre_attn_scalar") if gemma else None
    eos = _as_tuple(d.get("eos_token_id"))
    pad = d.get("pad_token_id")
    return ModelConfig(
        family=family,
        vocab_size=int(d["vocab_size"]),
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        d_ff=int(d["intermediate_size"]),
        rope_theta=_rope_theta(d, 10000.0),
        rms_eps=float(_get(d, "rms_norm_eps", default=1e-6)),
        query_scale=float(scalar) ** -0.5 if scalar else head_dim**-0.5,
        windows=_windows(d, n_layers, family),
        tie_embeddings=bool(d["tie_word_embeddings"]),
        qkv_bias=family == "qwen2",
        norm_plus_one=gemma,
        sandwich_norms=gemma,
        embed_scale=gemma,
        attn_softcap=float(d["attn_logit_softcapping"]) if gemma and d.get("attn_logit_softcapping") else None,
        final_softcap=float(d["final_logit_softcapping"]) if gemma and d.get("final_logit_softcapping") else None,
        activation=activation,
        bos_id=d.get("bos_token_id"),
        eos_ids=eos,
        pad_id=int(pad if pad is not None else (eos[0] if eos else 0)),
        max_positions=int(_get(d, "max_position_embeddings", default=8192)),
        name=name or str(d.get("_name_or_path", "")),
    )


def from_gguf(meta: Mapping[str, Any], tensor_names: set[str], name: str = "") -> ModelConfig:
    """Build a ModelConfig from GGUF metadata (llama and qwen2 architectures)."""
    arch = meta.get("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise UserError(
            f"GGUF architecture {arch!r} is not supported; jaxsae reads llama and qwen2 GGUF files "
            "(use the safetensors checkpoint for gemma2)"
        )
    if meta.get(f"{arch}.rope.scaling.type", "none") not in ("none", None):
        raise UserError("GGUF files with RoPE scaling are not supported by jaxsae's port")
    g = lambda k, default=None: meta.get(f"{arch}.{k}", default)  # noqa: E731
    n_heads = int(g("attention.head_count"))
    d_model = int(g("embedding_length"))
    head_dim = int(g("attention.key_length", d_model // n_heads))
    for key in ("attention.value_length", "rope.dimension_count"):
        if g(key) is not None and int(g(key)) != head_dim:
            raise UserError(
                f"GGUF {arch}.{key} is {int(g(key))} but the head dim is {head_dim}; jaxsae's port needs equal "
                "key/value head dims and RoPE over the full head dim (use another checkpoint)"
            )
    vocab = int(g("vocab_size", 0) or len(meta.get("tokenizer.ggml.tokens", [])))
    eos = meta.get("tokenizer.ggml.eos_token_id")
    pad = meta.get("tokenizer.ggml.padding_token_id", eos)
    return ModelConfig(
        family=arch,
        vocab_size=vocab,
        d_model=d_model,
        n_layers=int(g("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(g("attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        d_ff=int(g("feed_forward_length")),
        rope_theta=float(g("rope.freq_base", 10000.0)),
        rms_eps=float(g("attention.layer_norm_rms_epsilon", 1e-6)),
        query_scale=head_dim**-0.5,
        windows=(GLOBAL_WINDOW,) * int(g("block_count")),
        tie_embeddings="output.weight" not in tensor_names,
        qkv_bias=arch == "qwen2",
        activation="silu",
        bos_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_ids=_as_tuple(eos),
        pad_id=int(pad if pad is not None else 0),
        max_positions=int(g("context_length", 8192)),
        name=name or str(meta.get("general.name", "")),
    )


def with_end_tokens(cfg: ModelConfig, generation_config: Mapping[str, Any] | None, tokenizer_eos: int | None) -> ModelConfig:
    """``cfg`` whose end tokens also include generation_config.json's ``eos_token_id`` and the
    tokenizer's EOS (e.g. Gemma-2-it ends a chat turn with <end_of_turn>, id 107, listed only in
    generation_config.json), in that order after config.json's."""
    ids = list(cfg.eos_ids)
    for i in (*_as_tuple((generation_config or {}).get("eos_token_id")), *_as_tuple(tokenizer_eos)):
        if i not in ids:
            ids.append(i)
    return dataclasses.replace(cfg, eos_ids=tuple(ids))


def describe(cfg: ModelConfig) -> str:
    """One line for logs: family, sizes and parameter count."""
    n = param_count(cfg)
    return (
        f"{cfg.name or cfg.family} ({cfg.family}): {cfg.n_layers} layers, d_model {cfg.d_model}, "
        f"{cfg.n_heads}/{cfg.n_kv_heads} heads x {cfg.head_dim}, d_ff {cfg.d_ff}, vocab {cfg.vocab_size}, "
        f"{n / 1e6:.1f}M params"
    )


def param_count(cfg: ModelConfig) -> int:
    D, Q, K, H, M, V = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size
    per_layer = D * H * (2 * Q + 2 * K) + 3 * D * M + D * (4 if cfg.sandwich_norms else 2)
    if cfg.qkv_bias:
        per_layer += H * (Q + 2 * K)
    return V * D * (1 if cfg.tie_embeddings else 2) + cfg.n_layers * per_layer + D


def flops_per_token(cfg: ModelConfig, n_layers: int | None = None, context: int = 0, logits: bool = True) -> float:
    """Approximate forward FLOPs per token (2 x matmul params, plus attention over ``context`` keys)."""
    L = cfg.n_layers if n_layers is None else n_layers
    D, Q, K, H, M, V = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size
    per_layer = 2 * (D * H * (2 * Q + 2 * K) + 3 * D * M) + 4 * Q * H * context
    return L * per_layer + (2 * V * D if logits else 0)
