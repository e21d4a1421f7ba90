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

import contextlib
import dataclasses
import functools
import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Sequence

import jax
import numpy as np

from jaxsae.errors import UserError
from jaxsae.io import atomic_write_json, atomic_write_text
from jaxsae.judge.base import RatedGenerations, rating_record
from jaxsae.judge.rubric import CRITERIA
from jaxsae.steer.concepts import Concept, draw_instructions
from jaxsae.steer.edits import row_edit, unit_directions

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
    batch: int = dataclasses.field(default=0, metadata={"hashed": False})
    """Steered generations per batch, across the concepts and SAEs of a model (0: :data:`DEFAULT_BATCH`, 256); not part
    of the stage hash nor of a record's settings: results depend on it only through float rounding (a sampled token or
    a local judge's rating at a near-tie can flip with the batch: in the demo, 64 → 256 rows moved one SAE's g of 10)."""

    def __post_init__(self):
        if self.batch < 0:
            raise UserError(f"steer.batch must be 0 (the default, 256 rows) or a positive number of rows, got {self.batch}")

    @property
    def all_positions(self) -> bool:
        """Whether every position is steered (``position == "all"``)."""
        return self.position == "all"

    def protocol(self) -> dict:
        """The settings one concept's result depends on (not which concepts are steered, nor where
        the instruction pool came from: the pool itself is checked per record; nor the unhashed
        fields such as ``batch``)."""
        d = dataclasses.asdict(self)
        for name in ("concepts", "n_concepts", "instructions_dir"):
            d.pop(name)
        for f in dataclasses.fields(self):
            if not f.metadata.get("hashed", True):
                d.pop(f.name)
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
              identity: dict[str, str], split: str = "test") -> bool:
    """Whether a finished record (``split`` "test": a concept's record; "dev": its dev phase) was
    made with these settings, judge and model (``identity``), concept text, measured m_f and the
    split's instructions."""
    f = int(rec["feature"])
    if rec.get("settings") != settings or rec.get("concept") != concepts.get(f, rec.get("concept")):
        return False
    if any(rec.get(k) != v for k, v in identity.items()):
        return False
    if not (0 <= f < len(max_acts) and rec.get("m_f_measured") == float(max_acts[f])):
        return False
    if hard_failures(rec):  # a rating whose request failed for good is not a result: the concept is redone
        return False
    dev, test = _draw(pool, st, f)
    want = test if split == "test" else [i for _ in st.factors for i in dev]
    return [g.get("instruction") for g in rec.get("generations", []) if g.get("split") == split] == want


def _hard_failure(r: dict) -> bool:
    """Whether a saved rating (:func:`rating_record`) is a judge request that failed for good: not
    a valid rating, and no answer at all (``text`` recorded as None), unlike a parse failure."""
    return not r.get("ok", True) and "text" in r and r["text"] is None


def hard_failures(rec: dict) -> int:
    """Ratings of a saved concept record whose judge request failed for good (no answer: scored 0
    but not a result; a re-run redoes the concept, the judge's cache answering the rest)."""
    return sum(1 for g in rec.get("generations", []) for r in (g.get("ratings") or {}).values() if _hard_failure(r))


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


SPLITS = ("dev", "test")


def row_seed(seed: int, feature: int, split: str, index: int) -> int:
    """Sampling seed of one steered generation: from the settings' seed, the concept's feature, the
    split and the row's index in that split, so that a row's sample does not depend on which rows
    share its batch (the per-concept and the batched paths draw the same samples)."""
    return int(np.random.SeedSequence([int(seed), int(feature), SPLITS.index(split), int(index)]).generate_state(1)[0])


@dataclasses.dataclass
class _Plan:
    """One concept of one SAE going through the protocol."""

    job: int
    """Index of its SAE's :class:`SteerJob`."""
    concept: Concept
    layer: int
    v_d: np.ndarray
    """f32[D]: the feature's unit decoder direction."""
    m_f: float
    """m_f used for steering (the fallback for a latent that never fired)."""
    m_f_measured: float
    fallback: bool
    dev: list[str]
    test: list[str]
    factors: tuple[float, ...]
    dev_rows: list | None = None
    """Saved generation rows of the dev split (factor-major), filled as batches are judged."""
    test_rows: list | None = None
    dev_rec: dict | None = None
    """The finished dev phase (:func:`_dev_record`), reused on resume."""

    def prompts(self, split: str, test_factor: float | None = None) -> tuple[list[str], list[float]]:
        """(instructions, factors) of the split's rows, in the saved order (dev: factor-major). The
        test rows' factor is the one chosen on dev, or ``test_factor`` when given (e.g. a
        placeholder before dev has chosen)."""
        if split == "dev":
            return [i for _ in self.factors for i in self.dev], [a for a in self.factors for _ in self.dev]
        return list(self.test), [self.dev_rec["factor"] if test_factor is None else test_factor] * len(self.test)


def _plan(job: int, sae, layer: int, concept: Concept, max_acts, pool, st: SteerSettings) -> _Plan:
    scales, dead = steering_scales(max_acts, st.dead_m_f)
    f = concept.feature
    dev, test = _draw(pool, st, f)
    return _Plan(job, concept, int(layer), unit_directions(sae, [f])[0], float(scales[f]), float(max_acts[f]),
                 bool(dead[f]), dev, test, tuple(st.factors))


@dataclasses.dataclass(frozen=True)
class _Row:
    """One generation to make: plan index, split, index in the split, instruction, factor."""

    plan: int
    split: str
    index: int
    instruction: str
    factor: float


def _rows(plans: Sequence[_Plan], split: str, which: Sequence[int], test_factor: float | None = None) -> list[_Row]:
    """The rows of ``split`` of the plans ``which``, in order (:meth:`_Plan.prompts`)."""
    out = []
    for k in which:
        prompts, factors = plans[k].prompts(split, test_factor)
        out += [_Row(k, split, j, p, a) for j, (p, a) in enumerate(zip(prompts, factors))]
    return out


def _delta(plan: _Plan, factor: float) -> np.ndarray:
    """f32[D] α·m_f·v_f, rounded as :func:`feature_edit` rounds it (α·m_f in f32, then the product)."""
    return (np.float32(factor) * np.float32(plan.m_f)) * plan.v_d


def _generate(lm, plans: Sequence[_Plan], rows: Sequence[_Row], st: SteerSettings, *,
              compile_only: bool = False) -> list[str] | None:
    """The steered generations of ``rows`` (one layer), in one ``generate`` call: each row with its
    own vector α·m_f·v_f and its own sampling seed. ``compile_only``: compile that call's program
    and return None (:meth:`~jaxsae.models.LM.compile_generate`)."""
    edit = row_edit(plans[rows[0].plan].layer, np.stack([_delta(plans[r.plan], r.factor) for r in rows]),
                    all_positions=st.all_positions)
    seeds = [row_seed(st.seed, plans[r.plan].concept.feature, r.split, r.index) for r in rows]
    call = lm.compile_generate if compile_only else lm.generate
    return call([r.instruction for r in rows], max_new_tokens=st.max_new_tokens, temperature=st.temperature,
                steer=edit, seed=seeds)


def _rate(judge, plans: Sequence[_Plan], rows: Sequence[_Row], outputs: Sequence[str]) -> list[dict]:
    """Judge the generations of ``rows`` (one split) together; one saved generation row each."""
    r = judge.rate_generations_full([plans[x.plan].concept.concept for x in rows], [x.instruction for x in rows], outputs)
    return _generation_rows(rows[0].split, [x.instruction for x in rows], [x.factor for x in rows], outputs, r)


def _dev_record(p: _Plan, st: SteerSettings) -> dict:
    """The dev phase of a concept: the factor chosen by expected and by argmax HM, its generations."""
    hm = np.array([g["hm"] for g in p.dev_rows])
    hm_argmax = np.array([g["hm_argmax"] for g in p.dev_rows])
    best, means = choose_factor(st.factors, _by_factor(hm, len(st.factors), len(p.dev)))
    best_argmax, means_argmax = choose_factor(st.factors, _by_factor(hm_argmax, len(st.factors), len(p.dev)))
    return {"feature": p.concept.feature, "concept": p.concept.concept, "m_f": p.m_f, "m_f_measured": p.m_f_measured,
            "m_f_fallback": p.fallback, "dev_means": dict(zip(map(str, st.factors), means)),
            "factor": st.factors[best], "dev_score": means[best],
            "dev_means_argmax": dict(zip(map(str, st.factors), means_argmax)), "factor_argmax": st.factors[best_argmax],
            "settings": st.protocol(), "generations": list(p.dev_rows)}


def _record(p: _Plan) -> dict:
    """The concept's finished record: the dev phase and the test generations at the chosen factor."""
    d = p.dev_rec
    keep = ("feature", "concept", "m_f", "m_f_measured", "m_f_fallback", "dev_means", "factor", "dev_score")
    return {**{k: d[k] for k in keep}, "test_score": float(np.mean([g["hm"] for g in p.test_rows])),
            "dev_means_argmax": d["dev_means_argmax"], "factor_argmax": d["factor_argmax"],
            "test_score_argmax": float(np.mean([g["hm_argmax"] for g in p.test_rows])), "settings": d["settings"],
            "generations": list(d["generations"]) + list(p.test_rows)}


def steer_concept(lm, judge, sae, layer: int, concept: Concept, max_acts: np.ndarray, pool: Sequence[str],
                  st: SteerSettings) -> dict:
    """One concept through the protocol on its own (two ``generate`` calls and two judge calls);
    returns its record (scores, choice, every generation). :func:`run_utility_many` batches many
    concepts and gives the same records (exactly at temperature 0, as float rounding allows
    otherwise: every row has its own sampling seed).

    ``max_acts`` are the measured m_f; a latent that never fired is steered with ``st.dead_m_f``."""
    plans = [_plan(0, sae, layer, concept, max_acts, pool, st)]
    p = plans[0]
    for split in SPLITS:
        rows = _rows(plans, split, [0])
        rated = _rate(judge, plans, rows, _generate(lm, plans, rows, st))
        if split == "dev":
            p.dev_rows = rated
            p.dev_rec = _dev_record(p, st)
        else:
            p.test_rows = rated
    return _record(p)


def rating_counts(recs: Sequence[dict]) -> dict:
    """Judge failure counts over the saved ratings of ``recs`` (exact per SAE, also after a
    resume): ratings, failed (no valid rating, scored 0), of those parse_failures (an answer
    without a valid ``Rating: [[x]]``) and hard_failures (no answer: the request failed for good);
    for the local judge the mean and least digit mass (probability on "0"/"1"/"2")."""
    rs = [g["ratings"][c] for r in recs for g in r.get("generations", []) if "ratings" in g for c in CRITERIA]
    failed = [x for x in rs if not x.get("ok", True)]
    out = {"ratings": len(rs), "failed": len(failed),
           "parse_failures": sum("text" in x and x["text"] is not None for x in failed),
           "hard_failures": sum(_hard_failure(x) for x in failed)}
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


@dataclasses.dataclass
class SteerJob:
    """One SAE's share of a steering run: its concepts, measured m_f and output folder."""

    sae: object
    """The SAE (its decoder rows are the steering directions)."""
    layer: int
    """Block whose output is steered."""
    concepts: Sequence[Concept]
    """The concepts steered (each a latent and its description)."""
    max_acts: np.ndarray
    """f32[F]: measured m_f per latent (the fallback ``dead_m_f`` replaces those ≤ 0)."""
    pool: Sequence[str]
    """The instruction pool dev / test instructions are drawn from."""
    out_dir: str | Path
    """Folder of ``concepts.jsonl``, ``dev.jsonl`` (the dev phase, while unfinished) and ``utility.json``."""


DEFAULT_BATCH = 256
"""Rows per steering batch when none is given, on every backend. On GPU / TPU decoding reads the
weights once per step for the whole batch; on a CPU a [64, 576] x [576, 1536] product runs at about
half the rate of a 128- or 256-row one (SmolLM2's shapes, measured on a 2-core machine), so fewer,
larger batches are faster there too."""


def _batches(lm, rows: Sequence[_Row], plans: Sequence[_Plan], batch: int) -> list[list[_Row]]:
    """``rows`` grouped by layer, sorted by prompt length (so a batch pads little) and cut into
    batches of at most ``batch``."""
    n_tok: dict[str, int] = {}

    def length(r: _Row) -> int:
        if r.instruction not in n_tok:
            n_tok[r.instruction] = len(lm.token_ids(r.instruction, chat=True))
        return n_tok[r.instruction]

    order = sorted(rows, key=lambda r: (plans[r.plan].layer, length(r)))
    out: list[list[_Row]] = []
    for r in order:
        if out and len(out[-1]) < batch and plans[out[-1][0].plan].layer == plans[r.plan].layer:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def _padded(rows: list[_Row], batch: int) -> list[_Row]:
    """A batch filled with repeats of its last row to a fixed size (``batch``, or for a short
    last batch the next multiple of 8), so that few shapes are compiled."""
    size = batch if len(rows) > batch - 8 else min(batch, -(-len(rows) // 8) * 8)
    return rows + [rows[-1]] * (size - len(rows))


@contextlib.contextmanager
def _compiled_ahead(lm, plans: Sequence[_Plan], batches: dict[str, list[list[_Row]]], st: SteerSettings, batch: int):
    """Per split, one future per batch of ``batches``: its generate program compiled in a
    background thread, in the order the batches run (:data:`SPLITS`, then batch order), so that
    later batches' programs compile while earlier batches generate (and the judge rates). On exit
    the compiles not yet started are dropped (the one running is waited for)."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        yield {split: [pool.submit(_generate, lm, plans, _padded(rows, batch), st, compile_only=True)
                       for rows in batches[split]] for split in SPLITS}
    finally:
        pool.shutdown(cancel_futures=True)


def _append(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def run_utility_many(lm, judge, jobs: Sequence[SteerJob], st: SteerSettings, *, batch: int | None = None,
                     progress: bool = True) -> list[dict]:
    """g(θ) of every SAE in ``jobs`` (all steered on ``lm``), resumable per concept, in two phases
    over all their concepts at once:

    1. dev: every (concept × dev instruction × factor) row, sorted by prompt length and generated in
       batches of ``batch`` rows (default ``st.batch``, or :data:`DEFAULT_BATCH` when that is 0), each row with its own vector α·m_f·v_f
       and sampling seed (:func:`row_seed`); each batch is judged as it comes (an API judge in a
       background thread while the next batch generates; a judge that runs on the device
       (``judge.on_device``) between batches). A concept whose dev rows are all judged gets its
       factor (best mean dev HM) and its dev phase saved to ``dev.jsonl``;
    2. test: every (concept × test instruction) row at its chosen factor, likewise; a concept whose
       test rows are judged is appended to ``concepts.jsonl`` (the record of :func:`steer_concept`).

    A re-run keeps the finished records (and finished dev phases) made with the same settings,
    judge (``judge.describe()``), steered model (:func:`model_description`), concept text,
    measured m_f and instructions, and computes the rest: nothing judged is judged again.
    ``utility.json`` per SAE (:func:`summarize`); its ``judge_stats.this_run`` is what
    ``judge.stats()`` counted during this call (for all the SAEs of the call together). Returns
    the summaries in ``jobs`` order."""
    settings = st.protocol()
    identity = {"judge": judge.describe(), "model": model_description(lm)}
    batch = int(batch or st.batch or DEFAULT_BATCH)
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    stats_before = judge.stats()
    plans: list[_Plan] = []
    done: list[dict[int, dict]] = []
    for k, job in enumerate(jobs):
        out = Path(job.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        wanted = {c.feature: c.concept for c in job.concepts}
        ok = functools.partial(_reusable, settings=settings, concepts=wanted, max_acts=job.max_acts, pool=job.pool,
                               st=st, identity=identity)
        done.append(_read_reusable(out / "concepts.jsonl", lambda rec: ok(rec, split="test")))
        devs = _read_reusable(out / "dev.jsonl", lambda rec: ok(rec, split="dev"))
        seen = set(done[k])
        for c in job.concepts:
            if c.feature in seen:
                continue
            seen.add(c.feature)
            p = _plan(k, job.sae, job.layer, c, job.max_acts, job.pool, st)
            if c.feature in devs:
                p.dev_rec = devs[c.feature]
            plans.append(p)

    def finish(split: str, rated: list[dict], rows: Sequence[_Row]) -> None:
        """Store judged rows; save each concept whose split is complete."""
        for r, g in zip(rows, rated):
            p = plans[r.plan]
            getattr(p, f"{split}_rows")[r.index] = g
        for i in sorted({r.plan for r in rows}):
            p = plans[i]
            got = getattr(p, f"{split}_rows")
            if any(g is None for g in got):
                continue
            path = Path(jobs[p.job].out_dir)
            if split == "dev":
                p.dev_rec = {**_dev_record(p, st), **identity}
                _append(path / "dev.jsonl", p.dev_rec)
            else:
                rec = {**_record(p), **identity}
                _append(path / "concepts.jsonl", rec)
                done[p.job][p.concept.feature] = rec

    todo = {"dev": [i for i, p in enumerate(plans) if p.dev_rec is None], "test": list(range(len(plans)))}
    bar = None
    if progress and plans:
        from tqdm import tqdm

        n = sum(len(plans[i].factors) * len(plans[i].dev) for i in todo["dev"]) + sum(len(p.test) for p in plans)
        bar = tqdm(total=n, desc=f"steer ({len(jobs)} SAE{'s' * (len(jobs) != 1)})", unit="gen", leave=False,
                   dynamic_ncols=True)
    overlap = not getattr(judge, "on_device", False)
    batches = {"dev": _batches(lm, _rows(plans, "dev", todo["dev"]), plans, batch),
               # the test rows' factors are chosen on dev, but their batches do not depend on them
               "test": _batches(lm, _rows(plans, "test", todo["test"], test_factor=0.0), plans, batch)}
    with ThreadPoolExecutor(max_workers=1) as executor, _compiled_ahead(lm, plans, batches, st, batch) as compiled:
        for split in SPLITS:
            for i in todo[split]:
                p = plans[i]
                setattr(p, f"{split}_rows", [None] * len(p.prompts(split)[0]))
            pending: deque = deque()
            for shape_rows, program in zip(batches[split], compiled[split]):
                program.result()
                rows = [dataclasses.replace(r, factor=plans[r.plan].dev_rec["factor"]) if split == "test" else r
                        for r in shape_rows]
                outs = _generate(lm, plans, _padded(rows, batch), st)[: len(rows)]
                if overlap:
                    pending.append((executor.submit(_rate, judge, plans, rows, outs), rows))
                    while pending and pending[0][0].done():
                        fut, rs = pending.popleft()
                        finish(split, fut.result(), rs)
                else:
                    finish(split, _rate(judge, plans, rows, outs), rows)
                if bar is not None:
                    bar.update(len(rows))
            while pending:
                fut, rs = pending.popleft()
                finish(split, fut.result(), rs)
    if bar is not None:
        bar.close()
    session = _stats_delta(stats_before, judge.stats())
    summaries = []
    for k, job in enumerate(jobs):
        out = Path(job.out_dir)
        recs = [done[k][c.feature] for c in job.concepts]
        summary = summarize(recs, settings, identity, session)
        atomic_write_json(out / "utility.json", summary)
        (out / "dev.jsonl").unlink(missing_ok=True)  # every concept is finished: its dev phase is in concepts.jsonl
        summaries.append(summary)
    return summaries


def run_utility(lm, judge, sae, layer: int, concepts: Sequence[Concept], max_acts: np.ndarray, pool: Sequence[str],
                st: SteerSettings, out_dir: str | Path, *, batch: int | None = None, progress: bool = True) -> dict:
    """g(θ) of one SAE over ``concepts``: :func:`run_utility_many` with one job. Resumable:
    ``out_dir/concepts.jsonl`` gets one line per finished concept; ``out_dir/utility.json`` the
    summary (:func:`summarize`, written atomically at the end) with ``judge_stats``: the failure
    counts over every saved rating and, under ``this_run``, what ``judge.stats()`` counted during
    this call."""
    return run_utility_many(lm, judge, [SteerJob(sae, layer, concepts, max_acts, pool, out_dir)], st, batch=batch,
                            progress=progress)[0]
