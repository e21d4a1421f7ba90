"""Concepts to steer toward, and the instructions to steer with.

Concept sources: the SAE's own CONCEPT100 (its AutoInterp explanations), an AxBench
``metadata.jsonl`` (the Gemma Scope latent id is the last path part of ``ref``), or a user JSONL
of ``{"feature": int, "concept": str}``. Instructions: AlpacaEval from the Hub when reachable,
else the ``input`` column of AxBench parquet files, else a bundled list.
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
    return out


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


def instructions(n_pool: int = 200, axbench_dir: str | Path | None = None) -> list[str]:
    """A pool of real instructions: AlpacaEval (online), AxBench ``input`` columns, or bundled."""
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
            return uniq[:n_pool]
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


def _alpaca_eval(n_pool: int) -> list[str]:
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
