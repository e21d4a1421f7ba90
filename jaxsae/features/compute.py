"""The statistics pass: model (early exit at the SAE layer) + SAE encode + streaming update, one
jitted step per batch of contexts, state donated and kept on device."""

from __future__ import annotations

import dataclasses
import functools
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import UserError
from jaxsae import text as corpus
from jaxsae.features.store import FeatureStats
from jaxsae.features.stream import StreamSpec, finalize_iw, init_state, random_positions, update


@dataclasses.dataclass(frozen=True)
class FeatureStatsConfig:
    """How the held-out statistics are gathered (defaults: SAEBench AutoInterp)."""

    context_len: int = 128
    """Tokens per held-out context (SAEBench: 128)."""
    total_tokens: int = 2_000_000
    """Held-out token budget (SAEBench: 2M); fewer when the text runs out."""
    batch_size: int = 32
    """Contexts per jitted step."""
    n_top: int = 12
    """Top non-overlapping windows kept per latent (SAEBench: 10 explanation + 2 scoring)."""
    buffer: int = 10
    """Window half-width: windows are peak ± buffer tokens (SAEBench: 10)."""
    n_iw: int = 7
    """Importance-weighted windows per latent (SAEBench: 5 explanation + 2 scoring)."""
    n_random: int = 10
    """Random windows per latent (SAEBench: 10 for scoring)."""
    seed: int = 0
    """Seed of the random windows and of the importance-weighted draw."""
    prepend_bos: bool | None = None
    """Start every context with BOS; None: exactly when the tokenizer itself adds one."""
    mask_first: bool | None = None
    """Exclude position 0 of every context; None: when contexts start without a BOS."""

    def spec(self) -> StreamSpec:
        return StreamSpec(self.context_len, self.n_top, self.buffer, self.n_iw, self.n_random)


EncodeFn = Callable[[Any, jax.Array], jax.Array]


def sae_encoder(sae) -> tuple[EncodeFn, Any]:
    """(encode_fn, params) of a :mod:`jaxsae.sae` SAE, for :func:`compute_feature_stats`."""
    import jaxsae.sae as S

    return S.encode_fn(sae), sae.params


def residuals(lm, layer: int, tokens_nt: np.ndarray, batch: int = 16, out: np.ndarray | None = None) -> np.ndarray:
    """f32[N, T, D] block-``layer`` residuals of ready contexts (early exit), to share between SAEs;
    written into ``out`` when given (any [N, T, D] array, e.g. a memory map)."""
    if out is None:
        out = np.zeros((*tokens_nt.shape, lm.config.d_model), np.float32)
    for s in range(0, len(tokens_nt), batch):
        out[s : s + batch] = np.asarray(lm.residual(tokens_nt[s : s + batch], layer))  # cast to out's dtype
    return out


def residuals_on_disk(lm, layer: int, tokens_nt: np.ndarray, path: str | Path, batch: int = 16) -> np.ndarray:
    """The contexts' block-``layer`` residuals [N, T, D], computed once and written to ``path`` (a
    raw memory map), then returned read-only and memory-mapped: the later statistics passes over
    the same contexts read them instead of running the model again (the study's 2M held-out tokens
    do not fit in memory: 18 GB for Gemma-2-2B in float32).

    Stored in the dtype the model's forward gives (bfloat16 for a bfloat16 model, as on GPUs and
    TPUs, float32 on CPUs), so nothing is rounded: a pass reading them gives the statistics of a
    pass running the model. The caller removes ``path`` when done."""
    path = Path(path)
    shape = (*tokens_nt.shape, lm.config.d_model)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(lm.params))  # the activations' dtype (float32 if any is)
    need, free = int(np.prod(shape)) * dtype.itemsize, shutil.disk_usage(path.parent).free
    if need > free:
        raise UserError(f"the held-out residuals need {need / 1e9:.1f} GB on disk under {path.parent}, "
                        f"{free / 1e9:.1f} GB is free; free space there or lower eval.stats_tokens")
    out = np.memmap(path, dtype=dtype, mode="w+", shape=shape)
    residuals(lm, layer, tokens_nt, batch, out=out).flush()
    del out
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


@functools.partial(jax.jit, static_argnames=("cfg", "layer", "encode_fns", "spec"), donate_argnums=(0,))
def _step_many(states, lm_params, sae_params, tokens_bt, counted_bt, start, key, *, cfg, layer, encode_fns, spec):
    """One batch of contexts through the model (to block ``layer``; ``lm_params`` is the residual
    f32[B, T, D] itself when ``cfg`` is None) and every SAE's encoder, each SAE's statistics
    updated: one compiled program per (model, layer, SAE configs, shapes), built once."""
    if cfg is None:
        x_btd = lm_params
    else:
        from jaxsae.models import forward

        x_btd = forward(lm_params, cfg, tokens_bt, None, stop_layer=layer)[0]
    B, T, D = x_btd.shape
    x_nd = x_btd.reshape(B * T, D).astype(jnp.float32)
    return tuple(update(st, enc(p, x_nd).reshape(B, T, -1), counted_bt, start, key, spec)
                 for st, enc, p in zip(states, encode_fns, sae_params))


def held_out_tokens(lm, cfg: FeatureStatsConfig, texts: Iterable[str] | None = None) -> tuple[np.ndarray, bool]:
    """(int32[N, T] contexts, whether they start with BOS) from ``texts`` (default: the offline
    Python-docs corpus, :func:`corpus.pydoc_texts`; an iterator is read only as far as needed).
    Warns once when the text holds fewer than ``cfg.total_tokens`` tokens."""
    tok = lm.tokenizer
    if tok is None:
        raise UserError(f"{lm.source} has no tokenizer; pass pre-tokenized contexts (tokens=...)")
    bos = cfg.prepend_bos if cfg.prepend_bos is not None else corpus.tokenizer_adds_bos(tok)
    bos_id = lm.config.bos_id if bos else None
    if bos and bos_id is None:
        raise UserError(f"{lm.source} has no BOS token; set prepend_bos=False")
    sep = lm.config.eos_ids[0] if lm.config.eos_ids else None
    source = "the Python-docs corpus (pydoc_data.topics)" if texts is None else "the held-out text"
    texts = corpus.pydoc_texts() if texts is None else texts
    tokens = corpus.pack_contexts(texts, tok, context_len=cfg.context_len, max_tokens=cfg.total_tokens, bos_id=bos_id, sep_id=sep)
    if len(tokens) < cfg.total_tokens // cfg.context_len:
        warn_short(tokens.size, cfg.total_tokens, source)
    return tokens, bos


class HeldOutShortWarning(UserWarning):
    """The held-out text gave fewer tokens than asked for (statistics rest on less text)."""


def warn_short(n_tokens: int, requested: int, source: str) -> None:
    """Warn (once per message, Python's default filter) that only ``n_tokens`` of ``requested``
    held-out tokens were available."""
    warnings.warn(
        f"{source} gave only {n_tokens:,} held-out tokens of the {requested:,} asked for; the feature "
        "statistics rest on that many (recorded as n_tokens); give more held-out text for the full count",
        HeldOutShortWarning, stacklevel=2,
    )


def text_label(texts: Iterable[str] | None) -> str:
    """Provenance of held-out ``texts`` for the saved statistics."""
    if texts is None:
        return "pydoc_data.topics"
    return f"{len(texts)} documents" if isinstance(texts, Sequence) else "streamed documents"


def special_ids(lm) -> set[int]:
    """Token ids never counted: the tokenizer's special tokens plus the model's BOS/EOS/PAD."""
    ids = set(getattr(lm.tokenizer, "all_special_ids", None) or [])
    ids |= set(lm.config.eos_ids) | {lm.config.pad_id}
    if lm.config.bos_id is not None:
        ids.add(lm.config.bos_id)
    return ids


def compute_feature_stats(
    lm,
    layer: int,
    encode_fn: EncodeFn,
    sae_params,
    cfg: FeatureStatsConfig = FeatureStatsConfig(),
    *,
    texts: Iterable[str] | None = None,
    tokens: np.ndarray | None = None,
    meta: dict | None = None,
    progress: bool = False,
    resid_ntd: np.ndarray | None = None,
) -> FeatureStats:
    """Run ``lm`` to block ``layer`` and the SAE over held-out contexts; gather the statistics.

    Args:
      lm: a :class:`jaxsae.models.LM`.
      layer: the SAE's block (its input is the output of that block).
      encode_fn, sae_params: ``encode_fn(sae_params, x f32[N, D]) -> f32[N, F]``
        (see :func:`sae_encoder`).
      texts: held-out documents (default: the Python-docs corpus); ignored when ``tokens`` given.
      tokens: int32[N, T] ready contexts (T must equal ``cfg.context_len``).
      meta: extra provenance stored with the statistics (e.g. the SAE folder).
      resid_ntd: the block-``layer`` residuals f32[N, T, D] of ``tokens``, when already computed
        (see :func:`residuals`): the model is then not run.

    The one-SAE case of :func:`compute_feature_stats_many`.
    """
    return compute_feature_stats_many(lm, layer, [(encode_fn, sae_params)], cfg, texts=texts, tokens=tokens,
                                      metas=[meta or {}], progress=progress, resid_ntd=resid_ntd)[0]


def compute_feature_stats_many(
    lm,
    layer: int,
    encoders: Sequence[tuple[EncodeFn, Any]],
    cfg: FeatureStatsConfig = FeatureStatsConfig(),
    *,
    texts: Iterable[str] | None = None,
    tokens: np.ndarray | None = None,
    metas: Sequence[dict] | None = None,
    progress: bool = False,
    resid_ntd: np.ndarray | None = None,
) -> list[FeatureStats]:
    """The statistics of several SAEs of one model and layer in one pass: each batch of contexts
    runs the model once and every SAE's encoder and update in the same jitted step (compiled once
    per model, layer, SAE configs and shapes; a later call with the same ones reuses it).
    ``encoders``: ``(encode_fn, params)`` per SAE (:func:`sae_encoder`); ``metas``: provenance
    per SAE. Each SAE's statistics equal those of its own :func:`compute_feature_stats` pass.
    Other arguments as :func:`compute_feature_stats`."""
    if not 0 <= layer < lm.config.n_layers:
        raise UserError(f"layer {layer} is out of range for a {lm.config.n_layers}-layer model; use 0..{lm.config.n_layers - 1}")
    spec = cfg.spec()
    D = lm.config.d_model
    widths = []
    for encode_fn, sae_params in encoders:
        try:
            widths.append(jax.eval_shape(encode_fn, sae_params, jax.ShapeDtypeStruct((1, D), jnp.float32)).shape[-1])
        except (TypeError, ValueError) as e:
            raise UserError(f"the SAE does not take the model's d_model={D} residual ({e}); pair it with the model it "
                            "was trained on") from None

    if tokens is None:
        source = text_label(texts)
        tokens, has_bos = held_out_tokens(lm, cfg, texts)
    else:
        tokens = np.asarray(tokens, np.int32)
        if tokens.ndim != 2 or tokens.shape[1] != cfg.context_len:
            raise UserError(f"tokens must be int32[N, {cfg.context_len}], got shape {tokens.shape}")
        has_bos = lm.config.bos_id is not None and bool(np.all(tokens[:, 0] == lm.config.bos_id))
        source = "tokens"
    mask_first = cfg.mask_first if cfg.mask_first is not None else not has_bos
    counted = corpus.counted_mask(tokens, special_ids(lm), mask_first=mask_first)
    N, T = tokens.shape
    B = min(cfg.batch_size, N)

    states = tuple(init_state(spec, random_positions(np.random.default_rng([cfg.seed, 1]), N, spec, F)) for F in widths)
    if resid_ntd is not None and resid_ntd.shape != (N, T, D):
        raise UserError(f"cached residuals {resid_ntd.shape} do not match the tokens {tokens.shape} and d_model {D}")
    step = functools.partial(_step_many, cfg=None if resid_ntd is not None else lm.config, layer=int(layer),
                             encode_fns=tuple(e for e, _ in encoders), spec=spec)
    sae_params = tuple(p for _, p in encoders)
    base_key = jax.random.key(cfg.seed)
    starts = range(0, N, B)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"feature stats ({len(encoders)} SAEs)", unit="batch")
    t0 = time.perf_counter()
    for i, s in enumerate(starts):
        tb = np.full((B, T), lm.config.pad_id, np.int32)
        cb = np.zeros((B, T), bool)
        n = min(B, N - s)
        tb[:n], cb[:n] = tokens[s : s + n], counted[s : s + n]
        if resid_ntd is not None:
            rb = np.zeros((B, T, D), np.float32)
            rb[:n] = resid_ntd[s : s + n]
            states = step(states, rb, sae_params, tb, cb, np.int32(s), jax.random.fold_in(base_key, i))
        else:
            states = step(states, lm.params, sae_params, tb, cb, np.int32(s), jax.random.fold_in(base_key, i))
    states = jax.block_until_ready(states)
    seconds = time.perf_counter() - t0

    info = dict(
        model=str(getattr(lm, "source", "")),
        layer=int(layer),
        text_source=source,
        bos_prepended=bool(has_bos),
        mask_first=bool(mask_first),
        seconds=round(seconds, 3),
        tokens_per_s=round(N * T / max(seconds, 1e-9), 1),
        saes_in_pass=len(encoders),
    )
    metas = list(metas) if metas is not None else [{} for _ in encoders]
    return [finish(st, cfg, tokens, counted, {**info, **(m or {})}) for st, m in zip(states, metas)]


def finish(state, cfg: FeatureStatsConfig, tokens: np.ndarray, counted: np.ndarray, meta: dict) -> FeatureStats:
    """FeatureStats from a final :class:`~jaxsae.features.stream.StatsState` (the IW draw is cut
    from the reservoir here)."""
    state = jax.tree.map(np.asarray, state)
    bad = ~np.isfinite(state.sum_act)
    if bad.any():
        raise UserError(f"feature statistics: {int(bad.sum())} of {bad.size} latents have NaN or inf activations on the "
                        "held-out text; the SAE's weights or the model's residuals are not finite (re-export the SAE, "
                        "or load the model in float32)")
    spec = cfg.spec()
    iw_val, iw_pos, iw_win = finalize_iw(state.iw_key, state.iw_val, state.iw_pos, state.iw_win, state.top_val, spec.n_iw)
    top_win = np.where((state.top_pos >= 0)[..., None], state.top_win, 0.0)
    info = dict(
        d_sae=int(state.count.shape[0]),
        config=dataclasses.asdict(cfg),
        n_contexts=int(tokens.shape[0]),
        n_tokens=int(tokens.size),
        n_counted=int(state.n_counted),
    )
    info.update(meta)
    return FeatureStats(
        meta=info,
        tokens=np.asarray(tokens, np.int32),
        counted=np.asarray(counted, bool),
        count=state.count.astype(np.int64),
        sum_act=state.sum_act,
        max_act=state.max_act,
        top_val=state.top_val,
        top_pos=state.top_pos,
        top_win=top_win.astype(np.float32),
        iw_val=iw_val,
        iw_pos=iw_pos,
        iw_win=iw_win,
        rand_pos=state.rand_pos,
        rand_win=state.rand_win,
    )


def stats_from_codes(codes_ntf: np.ndarray, tokens: np.ndarray, counted: np.ndarray, cfg: FeatureStatsConfig, *,
                     meta: dict | None = None) -> FeatureStats:
    """The same statistics from SAE codes already in hand (f32[N, T, F], e.g. cached), streamed
    through the same jitted update in batches of ``cfg.batch_size`` contexts."""
    codes_ntf = np.asarray(codes_ntf)
    N, T, F = codes_ntf.shape
    if T != cfg.context_len or tokens.shape != (N, T) or counted.shape != (N, T):
        raise UserError(f"codes {codes_ntf.shape}, tokens {tokens.shape} and counted {counted.shape} must be [N, {cfg.context_len}(, F)]")
    spec = cfg.spec()
    B = min(cfg.batch_size, N)
    state = init_state(spec, random_positions(np.random.default_rng([cfg.seed, 1]), N, spec, F))
    step = jax.jit(functools.partial(update, spec=spec), donate_argnums=(0,))
    base_key = jax.random.key(cfg.seed)
    for i, s in enumerate(range(0, N, B)):
        n = min(B, N - s)
        a = np.zeros((B, T, F), np.float32)
        c = np.zeros((B, T), bool)
        a[:n], c[:n] = codes_ntf[s : s + n], counted[s : s + n]
        state = step(state, a, c, np.int32(s), jax.random.fold_in(base_key, i))
    return finish(state, cfg, tokens, counted, dict(meta or {}))
