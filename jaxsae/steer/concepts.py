"""Concepts to steer toward, and the instructions to steer with.

Concept sources (:func:`from_source`): the SAE's own CONCEPT100 (its AutoInterp explanations),
an AxBench ``metadata.jsonl`` (the Gemma Scope latent id is the last path part of ``ref``), an
AxBench parquet set (``train_data.parquet`` / ``latent_eval_data.parquet``, or the Hub's
``<model>/<layer>/{train,test}/data.parquet``), or a user JSONL of ``{"feature": int,
"concept": str}``. Instructions: all of AlpacaEval from the Hub when reachable, else the
``input`` column of AxBench parquet files, else a bundled list.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxsae.errors import UserError


@dataclasses.dataclass(frozen=True)
class Concept:
    """A feature and the concept it should steer toward."""

    feature: int
    """SAE latent id."""
    concept: str
    """Natural-language description (the AutoInterp explanation, or AxBench's concept)."""
    concept_id: int = -1
    """Id in its source (AxBench concept_id), -1 if none."""


def from_autointerp(path: str | Path, n: int | None = None) -> list[Concept]:
    """CONCEPT100 of an SAE from its autointerp.json (latents whose explanation failed are skipped)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        expl = {int(r["latent"]): r.get("explanation") for r in data["latents"]}
        ids = [int(f) for f in data["concept100"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(f"{path} is not an AutoInterp result (needs concept100 and latents); re-run the autointerp stage") from None
    out = [Concept(f, expl[f].strip(), i) for i, f in enumerate(ids) if expl.get(f) and expl[f].strip()]
    return out[:n] if n else out


def from_jsonl(path: str | Path) -> list[Concept]:
    """An AxBench metadata.jsonl (concept, ref ending in the latent id) or a user JSONL of
    {"feature", "concept"}; malformed lines are a UserError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"concept file {path} does not exist; pass an AxBench metadata.jsonl or a JSONL of {{feature, concept}}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"concept file {path} is not UTF-8 text; save it as UTF-8 JSON lines of {{feature, concept}}") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            concept = str(row["concept"]).strip()
            if "feature" in row:
                feature = int(row["feature"])
            else:
                feature = int(str(row["ref"]).rstrip("/").rsplit("/", 1)[-1])
            if not concept:
                raise ValueError("empty concept")
            if feature < 0:
                raise ValueError("negative feature id")
            concept_id = int(row.get("concept_id", len(out)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"{path}:{i} is not a concept record ({type(e).__name__}); each line needs \"concept\" and "
                "\"feature\" (or an AxBench \"ref\" URL ending in the latent id)"
            ) from None
        out.append(Concept(feature, concept, concept_id))
    if not out:
        raise UserError(f"concept file {path} holds no concepts; add one JSON object per line with \"feature\" and \"concept\"")
    return _distinct(out, path)


def _distinct(concepts: list[Concept], path: Path) -> list[Concept]:
    """``concepts`` unchanged, or a UserError when two of them name the same latent."""
    seen: dict[int, str] = {}
    for c in concepts:
        if c.feature in seen:
            raise UserError(f"concept file {path} names latent {c.feature} twice ({seen[c.feature]!r} and "
                            f"{c.concept!r}); steer each latent toward one concept")
        seen[c.feature] = c.concept
    return concepts


PARQUET_COLUMNS = ("concept_id", "output_concept", "category")
"""Columns every AxBench parquet set has (besides input/output/...): the concept's id and text,
and the row's category (positive rows carry the concept itself)."""


def _read_parquet(path: Path):
    """The table of an AxBench parquet file with the columns :func:`from_parquet` reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException):
        raise UserError(f"concept file {path} is not a readable parquet file; pass an AxBench parquet set, "
                        "its metadata.jsonl or a JSONL of {feature, concept}") from None
    missing = [c for c in PARQUET_COLUMNS if c not in names]
    if missing:
        raise UserError(f"concept file {path} lacks the AxBench column(s) {', '.join(missing)}; pass an AxBench "
                        "train_data / latent_eval_data parquet file or its metadata.jsonl")
    cols = [c for c in (*PARQUET_COLUMNS, "sae_id", "sae_link") if c in names]
    return pq.read_table(path, columns=cols).to_pydict()


def _parquet_latents(path: Path, table: dict) -> dict[int, int]:
    """concept_id -> latent id: from the ``sae_id`` / ``sae_link`` columns (latent_eval_data and
    the Hub's test split), else from the ``ref`` of the metadata.jsonl beside the file."""
    ids: dict[int, int] = {}
    link = table.get("sae_id") or table.get("sae_link")
    if link is not None:
        for cid, v in zip(table["concept_id"], link):
            if cid is None or cid < 0 or v is None:
                continue
            try:
                ids.setdefault(int(cid), int(str(v).rstrip("/").rsplit("/", 1)[-1]))
            except ValueError:
                raise UserError(f"concept file {path}: sae_id / sae_link {v!r} of concept_id {cid} does not end in a "
                                "latent id; fix the file or pass the set's metadata.jsonl") from None
        return ids
    meta = path.parent / "metadata.jsonl"
    if not meta.is_file():
        raise UserError(f"concept file {path} has no sae_id column and no metadata.jsonl beside it; put the set's "
                        "metadata.jsonl next to it, or pass the metadata.jsonl itself")
    return {c.concept_id: c.feature for c in from_jsonl(meta)}


def from_parquet(path: str | Path) -> list[Concept]:
    """An AxBench concept set in parquet form: one concept per ``concept_id`` ≥ 0, its text the
    ``output_concept`` of its positive rows (hard negatives carry contrast concepts), its latent
    from ``sae_id`` / ``sae_link`` or the metadata.jsonl beside the file; ordered by concept_id."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"concept file {path} does not exist; pass an AxBench parquet set, its metadata.jsonl "
                        "or a JSONL of {feature, concept}")
    table = _read_parquet(path)
    text: dict[int, str] = {}
    for cid, concept, cat in zip(table["concept_id"], table["output_concept"], table["category"]):
        if cat == "positive" and cid is not None and cid >= 0 and isinstance(concept, str) and concept.strip():
            text.setdefault(int(cid), concept.strip())
    if not text:
        raise UserError(f"concept file {path} has no positive rows with a concept_id >= 0; pass an AxBench "
                        "train_data / latent_eval_data parquet file")
    latents = _parquet_latents(path, table)
    lost = sorted(set(text) - set(latents))
    if lost:
        raise UserError(f"concept file {path}: no latent id for concept_id {', '.join(map(str, lost[:5]))}; "
                        "pass the set's metadata.jsonl or put the matching one beside the file")
    return _distinct([Concept(latents[cid], text[cid], cid) for cid in sorted(text)], path)


def from_file(path: str | Path) -> list[Concept]:
    """Concepts of a file: :func:`from_parquet` for ``*.parquet``, else :func:`from_jsonl`."""
    return from_parquet(path) if Path(path).suffix == ".parquet" else from_jsonl(path)


CONCEPT100 = "concept100"
"""The concept source that means the SAE's own CONCEPT100 (from its autointerp.json)."""


def from_source(source: str, autointerp_path: str | Path, n: int | None = None) -> list[Concept]:
    """The first ``n`` concepts (all if None) of ``source``: :data:`CONCEPT100` (the SAE's own,
    from ``autointerp_path``) or a concept file (:func:`from_file`)."""
    if source == CONCEPT100:
        return from_autointerp(autointerp_path, n)
    out = from_file(source)
    return out[:n] if n else out


BUNDLED_INSTRUCTIONS = (
    "Write a short story about a lost key.",
    "Explain how a rainbow forms.",
    "Give three tips for staying focused while studying.",
    "Describe your ideal weekend.",
    "What are the benefits of learning a second language?",
    "Write a poem about the morning.",
    "How do I make a simple tomato sauce?",
    "Summarize the plot of a famous fairy tale.",
    "What should I pack for a week-long hiking trip?",
    "Explain the difference between weather and climate.",
    "Write a letter thanking a teacher.",
    "Describe a busy market in the morning.",
    "How can I improve my sleep?",
    "Give advice to someone starting their first job.",
    "What is the best way to learn to play the guitar?",
    "Write a product description for a reusable water bottle.",
    "Explain why the sky is blue to a child.",
    "Plan a birthday party for a ten-year-old.",
    "What are some ways to reduce household waste?",
    "Describe the life of a honeybee.",
    "Write a dialogue between a cat and a dog.",
    "How does a bicycle stay upright?",
    "Suggest a name for a new coffee shop and explain it.",
    "What makes a good friend?",
    "Describe a walk through a forest in autumn.",
    "Explain how to change a flat tire.",
    "Write a motivational message for a runner before a race.",
    "What are the main causes of traffic jams?",
    "Tell me about the history of the printing press.",
    "Give me a recipe for a quick breakfast.",
)


def instructions(n_pool: int | None = None, axbench_dir: str | Path | None = None) -> list[str]:
    """A pool of real instructions: AlpacaEval (online, all 805), AxBench ``input`` columns, or
    bundled; the first ``n_pool`` of them (None: the whole pool)."""
    online = _alpaca_eval(n_pool)
    if online:
        return online
    if axbench_dir is not None:
        import pyarrow.parquet as pq

        found = []
        for p in sorted(Path(axbench_dir).rglob("*.parquet")):
            if "input" in pq.read_schema(p).names:  # other parquet files in the folder are not instructions
                found.extend(pq.read_table(p, columns=["input"]).column("input").to_pylist())
        uniq = list(dict.fromkeys(s.strip() for s in found if isinstance(s, str) and s.strip()))
        if uniq:
            return uniq[:n_pool]  # [:None] is everything
    return list(BUNDLED_INSTRUCTIONS)


def _hub_reachable(timeout: float = 3.0) -> bool:
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _alpaca_eval(n_pool: int | None) -> list[str]:
    """AlpacaEval's instructions from the Hub (the JSON file, no loading script); [] offline."""
    if not _hub_reachable():
        return []
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download("tatsu-lab/alpaca_eval", "alpaca_eval.json", repo_type="dataset")
        return [r["instruction"] for r in json.loads(Path(path).read_text())][:n_pool]
    except Exception:  # noqa: BLE001 - any failure: fall back to offline sources
        return []


def draw_instructions(pool: Sequence[str], n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` instructions drawn with ``seed`` and split half dev / half test."""
    if n < 2:
        raise UserError("steering needs at least 2 instructions per concept (half dev, half test)")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    chosen = [pool[i] for i in pick]
    half = len(chosen) // 2
    return chosen[:half], chosen[half:]
