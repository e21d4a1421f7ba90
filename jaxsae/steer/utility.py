"""Steering utility g(θ) by the AxBench protocol, as the paper uses it.

Per concept (feature f, description c): instructions split half dev / half test; for every factor
α of the grid the dev instructions are answered with x += α·m_f·v_f at the SAE's layer (all
positions, every decode step), rated by the judge for concept / instruction / fluency (0–2 each)
and combined per generation by the zero-guarded harmonic mean; the factor with the best mean on
dev is kept and the concept's score is the mean on the test instructions at that factor.
g(θ) = mean over concepts. Every generation, rating and choice is saved (JSON lines, one per
concept, appended as each finishes: a re-run with the same settings, judge and model skips
concepts already done).

Expected vs argmax: the scores above fold each rating by its ``score`` (the local judge's
expected score over "0"/"1"/"2"; the API judge's parsed rating). Every generation also keeps the
zero-guarded HM of the ``argmax`` ratings and every raw rating (the local judge's probabilities,
the API judge's answer), and each concept a ``test_score_argmax``: the same test generations (at
the factor chosen with expected scores) scored with argmax ratings; ``factor_argmax`` is the
factor argmax ratings would have chosen on dev. ``utility.json`` reports ``g`` and ``g_argmax``.

m_f of a latent that never fired: the measured maximum activation is 0 and x + α·0·v_f would
not steer at all, so such a latent (measured m_f ≤ 0 or not finite) is steered with
``SteerSettings.dead_m_f`` (default 1.0, AxBench's fallback when Neuronpedia has no maximum
activation); the record says so (``m_f_fallback``, ``m_f_measured``).

Default factor grid (6 values): {0.4, 0.8, 1.2, 1.6, 2.0, 3.0}. The paper does not publish its
grid; these are the values common to AxBench's addition grid (0.2…5.0) and Arad et al.'s
(0.4…8.0) in the range where m_f-scaled steering moves from subtle to dominant, so the factor
search spans weak to strong steering with the same budget of six.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal, Sequence

import jax
import numpy as np

from jaxsae.io import atomic_write_json, atomic_write_text
from jaxsae.judge.base import RatedGenerations, rating_record
from jaxsae.judge.rubric import CRITERIA
from jaxsae.steer.concepts import Concept, draw_instructions
from jaxsae.steer.edits import feature_edit

DEFAULT_FACTORS = (0.4, 0.8, 1.2, 1.6, 2.0, 3.0)
DEAD_M_F = 1.0
"""m_f of a latent that never fired (AxBench's fallback when no maximum activation is known)."""


@dataclasses.dataclass(frozen=True)
class SteerSettings:
    """The AxBench protocol's knobs; a sweep's ``[steer]`` section."""

    concepts: str = "concept100"
    """What each SAE steers toward: "concept100" (its own CONCEPT100 with their AutoInterp
    explanations, the paper's protocol) or a path to a concept file used for every SAE: an
    AxBench metadata.jsonl or parquet set (train_data / latent_eval_data, latent ids from
    ``ref`` / ``sae_id``) or a user JSONL of {"feature", "concept"}."""
    n_concepts: int = 100
    """Concepts steered per SAE (the first of CONCEPT100 or of the concept file)."""
    instructions_dir: str = ""
    """Offline instruction pool: a folder of AxBench parquet files whose ``input`` column is used
    when AlpacaEval cannot be fetched from the Hub ("" = the bundled list)."""
    factors: tuple[float, ...] = DEFAULT_FACTORS
    """Steering factors α (x += α·m_f·v_f) tried on the dev instructions; the paper used 6
    unpublished values."""
    n_instructions: int = 10
    """Instructions per concept (half dev: factor choice, half test: score)."""
    max_new_tokens: int = 128
    """New tokens per generation."""
    temperature: float = 1.0
    """Sampling temperature (AxBench: 1.0; 0 = greedy)."""
    seed: int = 0
    """Seed of instruction draws (combined with the concept's feature id) and sampling."""
    position: Literal["all", "last"] = "all"
    """Where the steering vector is added: "all" (AxBench: every prompt position and decode step)
    or "last" (Arad et al.: the last position at each step)."""
    dead_m_f: float = DEAD_M_F
    """m_f used for a latent that never fired (measured m_f ≤ 0 or not finite): AxBench's
    fallback of 1.0 (the scale it uses when Neuronpedia gives no maximum activation)."""

    @property
    def all_positions(self) -> bool:
        """Whether every position is steered (``position == "all"``)."""
        return self.position == "all"

    def protocol(self) -> dict:
        """The settings one concept's result depends on (not which concepts are steered, nor where
        the instruction pool came from: the pool itself is checked per record)."""
        d = dataclasses.asdict(self)
        for name in ("concepts", "n_concepts", "instructions_dir"):
            d.pop(name)
        return json.loads(json.dumps(d))


def steering_scales(max_acts: np.ndarray, dead_m_f: float) -> tuple[np.ndarray, np.ndarray]:
    """(f32[F] m_f used for steering, bool[F] whether it is the fallback ``dead_m_f``)."""
    m = np.asarray(max_acts, np.float32)
    dead = ~(np.isfinite(m) & (m > 0))
    return np.where(dead, np.float32(dead_m_f), m).astype(np.float32), dead


def model_description(lm) -> str:
    """``<source> (<param dtype>)`` of the steered model, for resume checks."""
    params = getattr(lm, "params", None)
    leaves = jax.tree_util.tree_leaves(params) if params is not None else []
    return f"{getattr(lm, 'source', '') or type(lm).__name__} ({leaves[0].dtype if leaves else '?'})"


def choose_factor(factors: Sequence[float], dev_hm_by_factor: Sequence[Sequence[float]]) -> tuple[int, list[float]]:
    """Index of the factor with the best mean dev HM (the first on ties) and the means."""
    means = [float(np.mean(h)) if len(h) else 0.0 for h in dev_hm_by_factor]
    return int(np.argmax(means)), means


def _draw(pool: Sequence[str], st: SteerSettings, feature: int) -> tuple[list[str], list[str]]:
    """The concept's dev and test instructions (seeded by the settings' seed and the feature id)."""
    return draw_instructions(pool, st.n_instructions, seed=st.seed * 1_000_003 + feature)


def _reusable(rec: dict, settings: dict, concepts: dict[int, str], max_acts, pool, st: SteerSettings,
              identity: dict[str, str]) -> bool:
    """Whether a finished record was made with these settings, judge and model (``identity``),
    concept text, measured m_f and instructions."""
    f = int(rec["feature"])
    if rec.get("settings") != settings or rec.get("concept") != concepts.get(f, rec.get("concept")):
        return False
    if any(rec.get(k) != v for k, v in identity.items()):
        return False
    if not (0 <= f < len(max_acts) and rec.get("m_f_measured") == float(max_acts[f])):
        return False
    test = _draw(pool, st, f)[1]
    return [g.get("instruction") for g in rec.get("generations", []) if g.get("split") == "test"] == test


def _generation_rows(split: str, prompts, factors, outputs, rated: RatedGenerations) -> list[dict]:
    """One saved row per generation: expected C/I/F/HM, the argmax HM and every raw rating."""
    rows = []
    for j, (p, f, o) in enumerate(zip(prompts, factors, outputs)):
        e = rated.expected
        rows.append({"split": split, "factor": f, "instruction": p, "output": o,
                     "concept_score": float(e.concept[j]), "instruction_score": float(e.instruction[j]),
                     "fluency_score": float(e.fluency[j]), "hm": float(e.hm[j]),
                     "hm_argmax": float(rated.argmax.hm[j]),
                     "ratings": {c: rating_record(r) for c, r in rated.per_generation(j).items()}})
    return rows


def _by_factor(hm_n: np.ndarray, n_factors: int, n_dev: int) -> list[np.ndarray]:
    """The dev HMs (factor-major) split per factor."""
    return [hm_n[k * n_dev:(k + 1) * n_dev] for k in range(n_factors)]


def steer_concept(lm, judge, sae, layer: int, concept: Concept, max_acts: np.ndarray, pool: Sequence[str],
                  st: SteerSettings) -> dict:
    """One concept through the protocol; returns its record (scores, choice, every generation).

    ``max_acts`` are the measured m_f; a latent that never fired is steered with ``st.dead_m_f``."""
    scales, dead = steering_scales(max_acts, st.dead_m_f)
    f = concept.feature
    dev, test = _draw(pool, st, f)
    prompts = [i for _ in st.factors for i in dev]
    alphas = [a for a in st.factors for _ in dev]
    seed = st.seed * 7919 + f
    outs = lm.generate(prompts, max_new_tokens=st.max_new_tokens, temperature=st.temperature,
                       steer=feature_edit(layer, sae, [f], scales, alphas, all_positions=st.all_positions), seed=seed)
    r = judge.rate_generations_full([concept.concept] * len(outs), prompts, outs)
    best, means = choose_factor(st.factors, _by_factor(r.expected.hm, len(st.factors), len(dev)))
    best_a, means_a = choose_factor(st.factors, _by_factor(r.argmax.hm, len(st.factors), len(dev)))
    alpha = st.factors[best]
    outs_t = lm.generate(test, max_new_tokens=st.max_new_tokens, temperature=st.temperature,
                         steer=feature_edit(layer, sae, [f], scales, [alpha] * len(test),
                                            all_positions=st.all_positions), seed=seed + 1)
    rt = judge.rate_generations_full([concept.concept] * len(outs_t), test, outs_t)
    gens = _generation_rows("dev", prompts, alphas, outs, r) + _generation_rows("test", test, [alpha] * len(test), outs_t, rt)
    return {"feature": f, "concept": concept.concept, "m_f": float(scales[f]), "m_f_measured": float(max_acts[f]),
            "m_f_fallback": bool(dead[f]), "dev_means": dict(zip(map(str, st.factors), means)), "factor": alpha,
            "dev_score": means[best], "test_score": float(np.mean(rt.expected.hm)),
            "dev_means_argmax": dict(zip(map(str, st.factors), means_a)), "factor_argmax": st.factors[best_a],
            "test_score_argmax": float(np.mean(rt.argmax.hm)), "settings": st.protocol(),
            "generations": gens}


def rating_counts(recs: Sequence[dict]) -> dict:
    """Judge failure counts over the saved ratings of ``recs`` (exact per SAE, also after a
    resume): ratings, failed (no valid rating, scored 0), of those parse_failures (an answer
    without a valid ``Rating: [[x]]``) and hard_failures (no answer: the request failed for good);
    for the local judge the mean and least digit mass (probability on "0"/"1"/"2")."""
    rs = [g["ratings"][c] for r in recs for g in r.get("generations", []) if "ratings" in g for c in CRITERIA]
    failed = [x for x in rs if not x.get("ok", True)]
    out = {"ratings": len(rs), "failed": len(failed),
           "parse_failures": sum("text" in x and x["text"] is not None for x in failed),
           "hard_failures": sum("text" in x and x["text"] is None for x in failed)}
    mass = [x["digit_mass"] for x in rs if x.get("digit_mass") is not None]
    if mass:
        out.update(mean_digit_mass=float(np.mean(mass)), min_digit_mass=float(np.min(mass)))
    return out


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _stats_delta(before: dict, after: dict) -> dict:
    """The counters of ``judge.stats()`` (integers, nested dicts too) that grew from ``before`` to
    ``after``, as differences; running means and other values are left out (they are not per call)."""
    out = {}
    for k, v in after.items():
        b = before.get(k) if isinstance(before, dict) else None
        if isinstance(v, dict):
            out[k] = _stats_delta(b if isinstance(b, dict) else {}, v)
        elif _is_count(v):
            out[k] = v - (b if _is_count(b) else 0)
    return out


def _read_reusable(path: Path, keep) -> dict[int, dict]:
    """The records of ``path`` that ``keep(rec)`` accepts, by feature; the file is rewritten with
    only those (a torn last line from a crash and stale records are dropped, recomputed later)."""
    done: dict[int, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            f = int(rec["feature"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            break
        if keep(rec):
            done[f] = rec
    atomic_write_text(path, "".join(json.dumps(done[f]) + "\n" for f in done))
    return done


def summarize(recs: Sequence[dict], settings: dict, identity: dict[str, str], judge_session: dict) -> dict:
    """utility.json: g (expected) and g_argmax, the judge and model, failure counts, fallbacks."""
    def mean(key):
        return float(np.mean([r[key] for r in recs])) if recs else None

    return {
        "g": mean("test_score"),
        "g_argmax": mean("test_score_argmax"),
        "n_concepts": len(recs),
        **identity,
        "judge_stats": {**rating_counts(recs), "this_run": judge_session},
        "m_f_fallback": [int(r["feature"]) for r in recs if r.get("m_f_fallback")],
        "settings": settings,
        "concepts": [{k: r[k] for k in ("feature", "concept", "factor", "dev_score", "test_score", "factor_argmax",
                                        "test_score_argmax", "m_f", "m_f_fallback")} for r in recs],
    }


def run_utility(lm, judge, sae, layer: int, concepts: Sequence[Concept], max_acts: np.ndarray, pool: Sequence[str],
                st: SteerSettings, out_dir: str | Path, *, progress: bool = True) -> dict:
    """g(θ) over ``concepts``, resumable: ``out_dir/concepts.jsonl`` gets one line per finished
    concept (a re-run keeps the lines made with the same settings, judge (``judge.describe()``),
    steered model (:func:`model_description`), concept text, measured m_f and instructions, and
    recomputes the rest); ``out_dir/utility.json`` the summary (:func:`summarize`, written
    atomically at the end) with ``judge_stats``: the failure counts over every saved rating and,
    under ``this_run``, what ``judge.stats()`` counted during this call."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "concepts.jsonl"
    settings = st.protocol()
    identity = {"judge": judge.describe(), "model": model_description(lm)}
    wanted = {c.feature: c.concept for c in concepts}
    done = _read_reusable(path, lambda rec: _reusable(rec, settings, wanted, max_acts, pool, st, identity))
    stats_before = judge.stats()
    items = [c for c in concepts if c.feature not in done]
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="steer", unit="concept", leave=False, dynamic_ncols=True)
    with open(path, "a") as f:
        for c in items:
            rec = {**steer_concept(lm, judge, sae, layer, c, max_acts, pool, st), **identity}
            f.write(json.dumps(rec) + "\n")
            f.flush()
            done[c.feature] = rec
    recs = [done[c.feature] for c in concepts]
    summary = summarize(recs, settings, identity, _stats_delta(stats_before, judge.stats()))
    atomic_write_json(out_dir / "utility.json", summary)
    return summary
