"""Reading what the stages left in each SAE's folder, forgivingly: a missing or unreadable file
is None (or empty), never an exception, so that a partial run still gets a report.

Per SAE folder (``record["sae_dir"]``, relative to the run folder)::

    autointerp.json           {"summary": {"mu", ...}, "concept100": [...], "latents": [...]}
    dtc.npz                   features i64[d_sae], delta_tc f32[d_sae], output_score f32[d_sae]
    steering/concepts.jsonl   one concept a line: feature, concept, factor, dev/test_score,
                              generations [{split, factor, instruction, output, *_score, hm}]
    steering/selected.json    pool, g_dtc, tier_dtc, dtc {tier, features, ...}, output {...}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    """The file's JSON objects, one a line (unreadable lines are skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for ln in lines:
        try:
            obj = json.loads(ln)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def sae_folders(run_dir: Path, records: Sequence[Mapping[str, Any]]) -> Iterator[tuple[Mapping[str, Any], Path]]:
    """(record, folder) for every record that names an existing SAE folder, in record order."""
    for r in records:
        d = r.get("sae_dir")
        if isinstance(d, str) and d and (Path(run_dir) / d).is_dir():
            yield r, Path(run_dir) / d


def load_dtc(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a dtc.npz, or None if it is missing, unreadable or has no ``delta_tc``."""
    try:
        with np.load(path) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, EOFError):
        return None
    return arrays if "delta_tc" in arrays else None


def first_dtc(run_dir: Path, records) -> tuple[Mapping[str, Any], dict[str, np.ndarray], dict | None] | None:
    """(record, dtc arrays, selected.json or None) of the first SAE that has a readable dtc.npz."""
    for r, d in sae_folders(run_dir, records):
        arrays = load_dtc(d / "dtc.npz")
        if arrays is not None:
            sel = read_json(d / "steering" / "selected.json")
            return r, arrays, sel if isinstance(sel, dict) else None
    return None


def first_concepts(run_dir: Path, records) -> tuple[Mapping[str, Any], list[dict]] | None:
    """(record, steered concepts) of the first SAE with a non-empty steering/concepts.jsonl."""
    for r, d in sae_folders(run_dir, records):
        concepts = read_jsonl(d / "steering" / "concepts.jsonl")
        if concepts:
            return r, concepts
    return None


def first_autointerp(run_dir: Path, records) -> tuple[Mapping[str, Any], dict] | None:
    """(record, autointerp.json) of the first SAE whose autointerp.json lists scored latents."""
    for r, d in sae_folders(run_dir, records):
        ai = read_json(d / "autointerp.json")
        if isinstance(ai, dict) and isinstance(ai.get("latents"), list) and ai["latents"]:
            return r, ai
    return None
