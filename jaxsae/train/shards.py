"""Stored activations: one float32 ``.npy`` or a folder of fixed-size ``.npy`` shards, each with a
record of what it was harvested from.

Layouts::

    FILE.npy  + FILE.npy.json           one [n_tokens, d_model] array and its record
    DIR/shard-00000.npy ...             [shard_tokens, d_model] each (the last one shorter)
    DIR/index.json                      {"format", "dtype", "shape", "shard_tokens",
                                         "shards": [{"file", "tokens"}], "source": {...}}

The record's ``source`` says where the activations came from (``model_name``, ``model_source``,
``hook_layer``, ``dataset_path`` (the text), ``context_size``, ``tokens_requested``), so a cached
harvest made from another model, layer or text is refused instead of reused. A shard folder reads
as one memory-mapped array (:class:`ShardedActivations`): ``acts[idx]`` for any row indices is
exactly the rows of the single array the shards were cut from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxsae.errors import UserError
from jaxsae.io import atomic_write_json

FORMAT = "jaxsae-activations"
INDEX_NAME = "index.json"
METADATA_KEYS = ("model_name", "hook_layer", "dataset_path", "context_size")
"""What the activations came from, as exported SAEs' metadata and the sweep's signature hold it."""
SOURCE_KEYS = (*METADATA_KEYS, "model_source", "tokens_requested")
"""What a record's ``source`` holds (None where unknown)."""


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.npy"


def shard_sizes(n_tokens: int, shard_tokens: int) -> list[int]:
    """Rows per shard: ``shard_tokens`` each, the last one holding the rest (at least one shard)."""
    if shard_tokens < 1:
        raise UserError(f"shards must hold at least one token, not {shard_tokens}; pass a positive --shard-tokens")
    full, rest = divmod(n_tokens, shard_tokens)
    return [shard_tokens] * full + ([rest] if rest or not full else [])


def sidecar_path(path: Path) -> Path:
    """Where the record of a single-file ``.npy`` lives (``FILE.npy.json``)."""
    return path.with_name(path.name + ".json")


def record(shape: tuple[int, int], source: dict | None) -> dict:
    """The JSON record of an activation store of ``shape``."""
    src = {k: (source or {}).get(k) for k in SOURCE_KEYS}
    return {"format": FORMAT, "version": 1, "dtype": "float32", "shape": [int(shape[0]), int(shape[1])],
            "n_tokens": int(shape[0]), "source": src}


def read_record(path: str | Path) -> dict | None:
    """The record of a stored activations file or shard folder, or None if it has none."""
    path = Path(path)
    p = path / INDEX_NAME if path.is_dir() else sidecar_path(path)
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{p} is not valid JSON; delete {path} and harvest again") from None
    return rec if isinstance(rec, dict) and rec.get("format") == FORMAT else None


class ShardWriter:
    """Rows written at global offsets into pre-sized shards (memory-mapped) of one folder."""

    def __init__(self, folder: Path, n_tokens: int, d: int, shard_tokens: int):
        from numpy.lib.format import open_memmap

        self.folder, self.shard_tokens = Path(folder), shard_tokens
        self.sizes = shard_sizes(n_tokens, shard_tokens)
        self.shape = (n_tokens, d)
        self.arrays = [open_memmap(self.folder / shard_name(i), mode="w+", dtype=np.float32, shape=(n, d))
                       for i, n in enumerate(self.sizes)]

    def write(self, start: int, rows_nd: np.ndarray) -> None:
        """Rows ``start .. start + len(rows_nd)`` of the whole array."""
        done = 0
        while done < len(rows_nd):
            i, off = divmod(start + done, self.shard_tokens)
            take = min(len(rows_nd) - done, self.sizes[i] - off)
            self.arrays[i][off : off + take] = rows_nd[done : done + take]
            done += take

    def close(self, source: dict | None) -> None:
        """Flush the shards and write the index (the folder is complete once it exists)."""
        for a in self.arrays:
            a.flush()
        self.arrays = []
        rec = record(self.shape, source)
        rec.update(shard_tokens=self.shard_tokens,
                   shards=[{"file": shard_name(i), "tokens": n} for i, n in enumerate(self.sizes)])
        atomic_write_json(self.folder / INDEX_NAME, rec)


def save_shards(acts_nd: np.ndarray, folder: str | Path, shard_tokens: int, source: dict | None = None) -> Path:
    """Write a float32 [N, D] array as a shard folder (atomically), e.g. to re-shard a ``.npy``."""
    from jaxsae.io import atomic_dir

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        w = ShardWriter(tmp, len(acts_nd), int(acts_nd.shape[1]), shard_tokens)
        for s in range(0, len(acts_nd), shard_tokens):
            w.write(s, np.asarray(acts_nd[s : s + shard_tokens], np.float32))
        w.close(source)
    return folder


class ShardedActivations:
    """A shard folder read as one float32 [N, D] array: each shard memory-mapped, ``acts[idx]``
    gathers any rows (ints, slices or index arrays) in the order asked."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        rec = read_record(self.folder)
        if rec is None or "shards" not in rec:
            raise UserError(f"{self.folder} is not an activation shard folder (no {INDEX_NAME}); "
                            "pass a float32 .npy or a folder written by harvesting with --shard-tokens")
        self.record = rec
        self.shards = []
        for s in rec["shards"]:
            p = self.folder / s["file"]
            if not p.is_file():
                raise UserError(f"{p} is missing; harvest {self.folder} again")
            a = np.load(p, mmap_mode="r", allow_pickle=False)
            if a.dtype != np.float32 or a.ndim != 2 or len(a) != int(s["tokens"]):
                raise UserError(f"{p} holds {a.dtype}{list(a.shape)}, not float32[{s['tokens']}, D] as {INDEX_NAME} says; "
                                f"harvest {self.folder} again")
            self.shards.append(a)
        widths = {int(a.shape[1]) for a in self.shards}
        if len(widths) != 1:
            raise UserError(f"the shards of {self.folder} have different widths {sorted(widths)}; harvest it again")
        self.offsets = np.cumsum([0] + [len(a) for a in self.shards])
        self.shape = (int(self.offsets[-1]), widths.pop())
        if list(self.shape) != list(rec["shape"]):
            raise UserError(f"the shards of {self.folder} hold {list(self.shape)}, not {rec['shape']}; harvest it again")
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, tuple):
            rows, cols = idx[0], idx[1:]
            return self[rows][(slice(None), *cols)]
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(len(self)))
        scalar = np.ndim(idx) == 0
        idx = np.atleast_1d(np.asarray(idx, np.int64))
        idx = np.where(idx < 0, idx + len(self), idx)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} activations")
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        out = np.empty((len(idx), self.shape[1]), np.float32)
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = self.shards[s][idx[sel] - self.offsets[s]]
        return out[0] if scalar else out

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate([np.asarray(a) for a in self.shards])
        return out.astype(dtype) if dtype is not None else out
