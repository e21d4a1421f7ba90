"""Steering utility g(θ) by the AxBench protocol, as the paper uses it.

Per concept (feature f, description c): instructions split half dev / half test; for every factor
α of the grid the dev instructions are answered with x += α·m_f·v_f at the SAE's layer (all
positions, every decode step), rated by the judge for concept / instruction / fluency (0–2 each)
and combined per generation by the zero-guarded harmonic mean; the factor with the best mean on
dev is kept and the concept's score is the mean on the test instructions at that factor.
g(θ) = mean over concepts. Every generation, rating and choice is saved (JSON lines, one per
concept, appended as each finishes: a re-run with the same settings skips concepts already done).

Default factor grid (6 values): {0.4, 0.8, 1.2, 1.6, 2.0, 3.0}. The paper does not publish its
grid; these are the values common to AxBench's addition grid (0.2…5.0) and Arad et al.'s
(0.4…8.0) in the range where m_f-scaled steering moves from subtle to dominant, so the factor
search spans weak to strong steering with the same budget of six.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxsae.io import atomic_write_json
from jaxsae.steer.concepts import Concept, draw_instructions
from jaxsae.steer.edits import feature_edit

DEFAULT_FACTORS = (0.4, 0.8, 1.2, 1.6, 2.0, 3.0)


@dataclasses.dataclass(frozen=True)
class SteerSettings:
    """The AxBench protocol's knobs."""

    factors: tuple[float, ...] = DEFAULT_FACTORS
    """Steering factors α tried on the dev instructions."""
    n_instructions: int = 10
    """Instructions per concept (half dev, half test)."""
    max_new_tokens: int = 128
    """New tokens per generation."""
    temperature: float = 1.0
    """Sampling temperature (AxBench: 1.0; 0 = greedy)."""
    seed: int = 0
    """Seed of instruction draws (combined with the concept's feature id) and sampling."""
    all_positions: bool = True
    """Steer every position (AxBench) or only the last one (Arad et al.)."""


def choose_factor(factors: Sequence[float], dev_hm_by_factor: Sequence[Sequence[float]]) -> tuple[int, list[float]]:
    """Index of the factor with the best mean dev HM (the first on ties) and the means."""
    means = [float(np.mean(h)) if len(h) else 0.0 for h in dev_hm_by_factor]
    return int(np.argmax(means)), means


def _draw(pool: Sequence[str], st: SteerSettings, feature: int) -> tuple[list[str], list[str]]:
    """The concept's dev and test instructions (seeded by the settings' seed and the feature id)."""
    return draw_instructions(pool, st.n_instructions, seed=st.seed * 1_000_003 + feature)


def _reusable(rec: dict, settings: dict, concepts: dict[int, str], max_acts, pool, st: SteerSettings) -> bool:
    """Whether a finished record was made with these settings, concept text, m_f and instructions."""
    f = int(rec["feature"])
    if rec.get("settings") != settings or rec.get("concept") != concepts.get(f, rec.get("concept")):
        return False
    if not (0 <= f < len(max_acts) and rec.get("m_f") == float(max_acts[f])):
        return False
    test = _draw(pool, st, f)[1]
    return [g.get("instruction") for g in rec.get("generations", []) if g.get("split") == "test"] == test


def steer_concept(lm, judge, sae, layer: int, concept: Concept, max_acts: np.ndarray, pool: Sequence[str],
                  st: SteerSettings) -> dict:
    """One concept through the protocol; returns its record (scores, choice, every generation)."""
    dev, test = _draw(pool, st, concept.feature)
    prompts = [i for _ in st.factors for i in dev]
    alphas = [a for a in st.factors for _ in dev]
    seed = st.seed * 7919 + concept.feature
    outs = lm.generate(prompts, max_new_tokens=st.max_new_tokens, temperature=st.temperature,
                       steer=feature_edit(layer, sae, [concept.feature], max_acts, alphas,
                                          all_positions=st.all_positions), seed=seed)
    r = judge.rate_generations([concept.concept] * len(outs), prompts, outs)
    hm_by_factor = [r.hm[k * len(dev):(k + 1) * len(dev)] for k in range(len(st.factors))]
    best, means = choose_factor(st.factors, hm_by_factor)
    alpha = st.factors[best]
    outs_t = lm.generate(test, max_new_tokens=st.max_new_tokens, temperature=st.temperature,
                         steer=feature_edit(layer, sae, [concept.feature], max_acts, [alpha] * len(test),
                                            all_positions=st.all_positions), seed=seed + 1)
    rt = judge.rate_generations([concept.concept] * len(outs_t), test, outs_t)
    gens = []
    for split, ps, fs, os_, rr in (("dev", prompts, alphas, outs, r), ("test", test, [alpha] * len(test), outs_t, rt)):
        for j, (p, f, o) in enumerate(zip(ps, fs, os_)):
            gens.append({"split": split, "factor": f, "instruction": p, "output": o,
                         "concept_score": float(rr.concept[j]), "instruction_score": float(rr.instruction[j]),
                         "fluency_score": float(rr.fluency[j]), "hm": float(rr.hm[j])})
    return {"feature": concept.feature, "concept": concept.concept, "m_f": float(max_acts[concept.feature]),
            "dev_means": dict(zip(map(str, st.factors), means)), "factor": alpha, "dev_score": means[best],
            "test_score": float(np.mean(rt.hm)), "settings": dataclasses.asdict(st), "generations": gens}


def run_utility(lm, judge, sae, layer: int, concepts: Sequence[Concept], max_acts: np.ndarray, pool: Sequence[str],
                st: SteerSettings, out_dir: str | Path, *, progress: bool = True) -> dict:
    """g(θ) over ``concepts``, resumable: ``out_dir/concepts.jsonl`` gets one line per finished
    concept (a re-run keeps the lines made with the same settings, concept text, m_f and
    instructions, and recomputes the rest); ``out_dir/utility.json`` the summary (written atomically at the end)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "concepts.jsonl"
    settings = json.loads(json.dumps(dataclasses.asdict(st)))
    wanted = {c.feature: c.concept for c in concepts}
    done: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                f = int(rec["feature"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                break  # a torn last line from a crash: recomputed below
            if _reusable(rec, settings, wanted, max_acts, pool, st):  # else stale: recomputed below
                done[f] = rec
        path.write_text("".join(json.dumps(done[f]) + "\n" for f in done))
    items = [c for c in concepts if c.feature not in done]
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="steer", unit="concept", leave=False, dynamic_ncols=True)
    with open(path, "a") as f:
        for c in items:
            rec = steer_concept(lm, judge, sae, layer, c, max_acts, pool, st)
            f.write(json.dumps(rec) + "\n")
            f.flush()
            done[c.feature] = rec
    recs = [done[c.feature] for c in concepts]
    summary = {
        "g": float(np.mean([r["test_score"] for r in recs])) if recs else None,
        "n_concepts": len(recs),
        "settings": settings,
        "concepts": [{k: r[k] for k in ("feature", "concept", "factor", "dev_score", "test_score")} for r in recs],
    }
    atomic_write_json(out_dir / "utility.json", summary)
    return summary
