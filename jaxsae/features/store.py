"""FeatureStats: the finished statistics of one SAE over held-out text, saved and loaded.

On disk: a folder with ``stats.safetensors`` (arrays) and ``stats.json`` (sizes, config,
provenance), written atomically (a reader sees the old folder or the new one, never half).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from jaxsae.errors import UserError
from jaxsae.io import atomic_dir

FORMAT_VERSION = 1
_ARRAYS = (
    "tokens", "counted", "count", "sum_act", "max_act", "top_val", "top_pos", "top_win",
    "iw_val", "iw_pos", "iw_win", "rand_pos", "rand_win",
)


@dataclasses.dataclass
class FeatureStats:
    """Per-latent statistics (F latents, N contexts of T tokens, A top / R IW / ``n_random`` random
    windows of W = 2·buffer + 1 tokens). Missing windows have position -1 and zero activations."""

    meta: dict[str, Any]
    """Config and provenance: model, layer, SAE, text source, sizes, timing."""
    tokens: np.ndarray
    """i32[N, T]: the held-out contexts (windows are cut from them)."""
    counted: np.ndarray
    """bool[N, T]: tokens whose activations count (False: BOS/EOS/PAD/special)."""
    count: np.ndarray
    """i64[F]: counted tokens where the latent is > 0."""
    sum_act: np.ndarray
    """f32[F]: sum of its activations over counted tokens."""
    max_act: np.ndarray
    """f32[F]: its maximum activation over counted tokens (m_f for steering)."""
    top_val: np.ndarray
    """f32[F, A]: non-overlapping peak activations, descending (-inf where missing)."""
    top_pos: np.ndarray
    """i32[F, A]: their global positions ``context * T + t``."""
    top_win: np.ndarray
    """f32[F, A, W]: the activations in each peak's window."""
    iw_val: np.ndarray
    """f32[F, R]: importance-weighted draws (∝ act², below the A-th peak), in draw order."""
    iw_pos: np.ndarray
    """i32[F, R]."""
    iw_win: np.ndarray
    """f32[F, R, W]."""
    rand_pos: np.ndarray
    """i32[F, n_random]: uniform random window centres."""
    rand_win: np.ndarray
    """f32[F, n_random, W]."""

    @property
    def d_sae(self) -> int:
        return int(self.count.shape[0])

    @property
    def context_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def buffer(self) -> int:
        return int(self.top_win.shape[2] // 2)

    @property
    def n_counted(self) -> int:
        """Counted tokens in total."""
        return int(self.meta["n_counted"])

    @property
    def frequency(self) -> np.ndarray:
        """f64[F]: firing frequency, count / counted tokens."""
        return self.count / max(self.n_counted, 1)

    def window_tokens(self, pos: np.ndarray) -> np.ndarray:
        """i32[..., W]: the tokens of the windows centred at global positions ``pos`` (>= 0)."""
        pos = np.asarray(pos)
        T, b = self.context_len, self.buffer
        n, t = pos // T, pos % T
        return self.tokens[n[..., None], t[..., None] + np.arange(-b, b + 1)]


def save(stats: FeatureStats, path: str | Path) -> Path:
    """Write ``stats`` to the folder ``path`` (replacing it atomically)."""
    path = Path(path)
    arrays = {}
    for name in _ARRAYS:
        a = np.ascontiguousarray(getattr(stats, name))
        arrays[name] = a.astype(np.uint8) if a.dtype == bool else a
    meta = dict(stats.meta, format_version=FORMAT_VERSION)
    with atomic_dir(path) as tmp:
        (tmp / "stats.safetensors").write_bytes(safetensors.numpy.save(arrays))
        (tmp / "stats.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load(path: str | Path) -> FeatureStats:
    """Read a folder written by :func:`save`."""
    path = Path(path)
    if not (path / "stats.safetensors").is_file() or not (path / "stats.json").is_file():
        raise UserError(f"{path} holds no feature statistics; compute them with `python -m jaxsae.autointerp`")
    meta = json.loads((path / "stats.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} was written by another jaxsae version; recompute the feature statistics")
    arrays = safetensors.numpy.load_file(str(path / "stats.safetensors"))
    arrays["counted"] = arrays["counted"].astype(bool)
    return FeatureStats(meta=meta, **{k: arrays[k] for k in _ARRAYS})
