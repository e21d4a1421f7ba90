"""Judge validity, measured on labelled data: can the judge tell what it is asked to tell?

For each rating criterion the judge rates examples whose answer is known, and we measure how
well its rating separates the two classes:

  concept      AxBench positives (the concept is in the output) vs negatives and hard negatives
               of the same concept (``latent_eval_data.parquet``; ``train_data.parquet``'s
               positives too), each rated for its concept;
  instruction  a concept-free AxBench response under its own instruction vs another response
               under an instruction it does not answer;
  fluency      a real AxBench response vs another one with its words shuffled, or its first
               words repeated to the same length.

and for the AutoInterp detector (:func:`jaxsae.autointerp.validate.validate_detector`, one layer
up): a latent's activating scoring windows vs its random, non-activating ones, given the judge's
own explanation.

Per criterion: AUROC = P(rating of a positive > rating of a negative) + ½ P(equal) (the
Mann–Whitney U statistic over n_pos·n_neg), a percentile bootstrap CI resampling each class
separately, n per class, the AUROC per negative kind, the AUROC of the argmax ratings, the
fraction of valid ratings, and for judges that read the digit distribution the mean digit mass
(probability on "0"/"1"/"2" before renormalising) and the agreement of expected and argmax
ratings (argmax = the expected rating rounded half up).

    from jaxsae.judge.validate import ValiditySettings, labelled_examples, validate_judge, verdict
    s = ValiditySettings(axbench_dir="../shared/axbench")
    res = validate_judge(judge, labelled_examples(s.axbench_dir, n_per_class=s.n_per_class, seed=s.seed), settings=s)
    print(verdict(res) or "the judge tells every criterion apart")

:func:`validate_cached` keeps one result file per :func:`cache_key` (the judge's description,
the data's hash and the sizes), so a launcher stage re-runs nothing for an unchanged judge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxsae.errors import UserError
from jaxsae.io import atomic_write_json

from .base import Judge, Rating, RatingRequest
from .rubric import CRITERIA

RESULTS_VERSION = 1
"""Version of the result layout (part of the cache key)."""


@dataclasses.dataclass(frozen=True)
class ValiditySettings:
    """How judge validity is measured (``python -m jaxsae.judge validate``, the launcher's stage)."""

    axbench_dir: str = ""
    """Folder holding AxBench concept sets (``train_data.parquet`` / ``latent_eval_data.parquet``,
    searched recursively, e.g. ``../shared/axbench``); every set found is pooled."""
    n_per_class: int = 24
    """Examples per class and criterion (24: the embedded SmolLM2 judge takes about a minute)."""
    criteria: tuple[str, ...] = CRITERIA
    """Criteria measured (a subset of concept, instruction, fluency)."""
    n_boot: int = 1000
    """Bootstrap resamples for the AUROC's confidence interval."""
    ci_level: float = 0.95
    """Confidence level of the interval."""
    seed: int = 0
    """Seed of the example draw and of the bootstrap."""
    min_digit_mass: float = 0.5
    """A local judge whose mean probability on the valid digits is below this is flagged."""
    detector_latents: int = 8
    """Latents whose scoring windows test the AutoInterp detector (0: the launcher's stage does not
    measure the detector)."""
    skip: bool = False
    """Whether the launcher's ``validity`` stage skips measuring the judge (``--validity.skip``):
    validity.json and the report then say judge validity was not measured. Not used by
    ``python -m jaxsae.judge validate``."""
    required: bool = True
    """Launcher: whether missing AxBench data (``axbench_dir`` empty or holding no concept set)
    stops the run before any stage runs (true), or lets the stage record, and the report say, that
    the judge was not measured and why (false: the demo, which must run on any machine)."""


# ------------------------------------------------------------------------------ statistics

def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(p > n) + ½ P(p = n) over every (positive, negative) pair: the Mann–Whitney U of the
    positives divided by n_pos·n_neg. NaN when a class is empty."""
    p = np.asarray(pos, np.float64).ravel()
    n = np.sort(np.asarray(neg, np.float64).ravel())
    if p.size == 0 or n.size == 0:
        return math.nan
    below = np.searchsorted(n, p, side="left")
    upto = np.searchsorted(n, p, side="right")
    return float((below.sum() + 0.5 * (upto - below).sum()) / (p.size * n.size))


def bootstrap_ci(pos: Sequence[float], neg: Sequence[float], *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`auroc`, each class resampled with replacement on
    its own (so every resample keeps n_pos and n_neg). (nan, nan) when a class has < 2 items."""
    p = np.asarray(pos, np.float64).ravel()
    n = np.asarray(neg, np.float64).ravel()
    if p.size < 2 or n.size < 2 or n_boot < 1:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.array([auroc(p[rng.integers(0, p.size, p.size)], n[rng.integers(0, n.size, n.size)])
                      for _ in range(int(n_boot))])
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [a, 1.0 - a])
    return float(lo), float(hi)


def separation(scores: Sequence[float], labels: Sequence[bool], kinds: Sequence[str] | None = None, *,
               n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """AUROC of ``scores`` for ``labels`` (True = positive) with its bootstrap CI and n per class;
    with ``kinds``, also the AUROC of all positives against each kind of negative."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    lo, hi = bootstrap_ci(pos, neg, n_boot=n_boot, level=level, seed=seed)
    out = {"auroc": auroc(pos, neg), "ci_low": lo, "ci_high": hi, "ci_level": level,
           "n_pos": int(pos.size), "n_neg": int(neg.size),
           "mean_pos": float(pos.mean()) if pos.size else math.nan,
           "mean_neg": float(neg.mean()) if neg.size else math.nan}
    if kinds is not None:
        k = np.asarray(list(kinds), object)
        out["by_negative_kind"] = {str(kind): {"auroc": auroc(pos, s[~y & (k == kind)]),
                                               "n_neg": int((~y & (k == kind)).sum())}
                                   for kind in sorted(set(k[~y]))}
    return out


def rating_summary(ratings: Sequence[Rating]) -> dict[str, Any]:
    """Fraction of valid ratings; for ratings carrying a digit distribution the mean and least
    digit mass and the fraction whose argmax equals the expected rating rounded half up."""
    out: dict[str, Any] = {"ok_fraction": float(np.mean([r.ok for r in ratings])) if ratings else math.nan,
                           "digit_mass": None, "min_digit_mass": None, "agreement": None}
    mass = [r.digit_mass for r in ratings if r.digit_mass is not None]
    if mass:
        out.update(digit_mass=float(np.mean(mass)), min_digit_mass=float(np.min(mass)))
    if any(r.probs is not None for r in ratings):
        out["agreement"] = float(np.mean([math.floor(r.score + 0.5) == r.argmax for r in ratings]))
    return out


# ------------------------------------------------------------------------------ labelled data

@dataclasses.dataclass(frozen=True)
class Labelled:
    """One rating request whose answer is known."""

    request: RatingRequest
    label: bool
    """True: the property is there (concept present, instruction followed, fluent text)."""
    kind: str
    """Where it comes from: "positive", "negative", "hard negative", "own instruction",
    "other instruction", "real", "shuffled", "repeated"."""


def _sets(axbench_dir: str | Path) -> list[Path]:
    root = Path(axbench_dir)
    if not str(axbench_dir) or not root.is_dir():
        raise UserError(f"the AxBench folder {str(axbench_dir)!r} is not a folder; pass one holding "
                        "train_data.parquet / latent_eval_data.parquet sets (e.g. ../shared/axbench)")
    found = sorted({p.parent for name in ("train_data.parquet", "latent_eval_data.parquet")
                    for p in root.rglob(name)})
    if not found:
        raise UserError(f"no train_data.parquet or latent_eval_data.parquet under {root}; pass a folder of AxBench "
                        "concept sets (e.g. ../shared/axbench)")
    return found


def _concept_names(folder: Path) -> dict[int, str]:
    names = {}
    meta = folder / "metadata.jsonl"
    if meta.is_file():
        for line in meta.read_text().splitlines():
            try:
                rec = json.loads(line)
                names[int(rec["concept_id"])] = str(rec["concept"])
            except (ValueError, KeyError, TypeError):
                continue
    return names


def axbench_rows(axbench_dir: str | Path) -> list[dict[str, Any]]:
    """Every row of every AxBench set under ``axbench_dir``: input, output, category, the concept
    (text; None for generic negatives) and the set's name, in a fixed order."""
    import pyarrow.parquet as pq

    rows = []
    for folder in _sets(axbench_dir):
        names = _concept_names(folder)
        for fname in ("train_data.parquet", "latent_eval_data.parquet"):
            path = folder / fname
            if not path.is_file():
                continue
            try:
                table = pq.read_table(path, columns=["input", "output", "category", "concept_id", "output_concept"])
            except Exception as e:  # noqa: BLE001 - pyarrow raises many types
                raise UserError(f"{path} is not an AxBench parquet file ({e}); pass a folder of AxBench sets") from e
            for r in table.to_pylist():
                cid = int(r["concept_id"])
                concept = names.get(cid) if cid >= 0 else None
                if cid >= 0 and concept is None and r["category"] == "positive":
                    concept = r["output_concept"]
                rows.append({"input": r["input"] or "", "output": r["output"] or "", "category": r["category"],
                             "concept": concept, "set": folder.name})
    return rows


def _draw(items: list, n: int, rng) -> list:
    idx = rng.permutation(len(items))[: min(n, len(items))]
    return [items[i] for i in sorted(idx)]


def concept_examples(rows: Sequence[dict], n_per_class: int, rng) -> list[Labelled]:
    """n positives rated for their concept; n negatives of a known concept rated for it, half of
    them hard negatives where there are enough."""
    pos = [r for r in rows if r["category"] == "positive" and r["concept"]]
    hard = [r for r in rows if r["category"] == "hard negative" and r["concept"]]
    plain = [r for r in rows if r["category"] == "negative" and r["concept"]]
    hard = _draw(hard, n_per_class // 2, rng)
    plain = _draw(plain, n_per_class - len(hard), rng)
    out = [Labelled(RatingRequest("concept", r["concept"], r["input"], r["output"]), True, "positive")
           for r in _draw(pos, n_per_class, rng)]
    return out + [Labelled(RatingRequest("concept", r["concept"], r["input"], r["output"]), False, r["category"])
                  for r in plain + hard]


def _generic(rows: Sequence[dict]) -> list[dict]:
    """Concept-free responses (negatives), one per distinct output, with enough words."""
    seen, out = set(), []
    for r in rows:
        if r["category"] == "negative" and r["output"] not in seen and len(r["output"].split()) >= 8:
            seen.add(r["output"])
            out.append(r)
    return out


def instruction_examples(rows: Sequence[dict], n_per_class: int, rng) -> list[Labelled]:
    """n responses under their own instruction; n other responses each under the instruction of
    another response (a rotation of the drawn instructions, so never its own)."""
    gen = _draw(_generic(rows), 2 * n_per_class, rng)
    pos, neg = gen[0::2], gen[1::2]
    instrs = [r["input"] for r in neg]
    out = [Labelled(RatingRequest("instruction", "", r["input"], r["output"]), True, "own instruction") for r in pos]
    for j, r in enumerate(neg):
        other = next((instrs[(j + s) % len(instrs)] for s in range(1, len(instrs))
                      if instrs[(j + s) % len(instrs)] != r["input"]), None)
        if other is not None:
            out.append(Labelled(RatingRequest("instruction", "", other, r["output"]), False, "other instruction"))
    return out


def shuffled_words(text: str, rng) -> str:
    """The text's words in a random order (a different one when the words are not all equal)."""
    words = text.split()
    for _ in range(10):
        perm = [words[i] for i in rng.permutation(len(words))]
        if perm != words:
            break
    return " ".join(perm)


def repeated_words(text: str) -> str:
    """The text's first max(2, n/8) words repeated to its n words."""
    words = text.split()
    head = words[: max(2, len(words) // 8)]
    return " ".join((head * (len(words) // len(head) + 1))[: len(words)])


def fluency_examples(rows: Sequence[dict], n_per_class: int, rng) -> list[Labelled]:
    """n real responses; n other responses broken, alternately shuffled and repeated."""
    gen = _draw(_generic(rows), 2 * n_per_class, rng)
    out = [Labelled(RatingRequest("fluency", "", r["input"], r["output"]), True, "real") for r in gen[0::2]]
    for j, r in enumerate(gen[1::2]):
        if j % 2 == 0:
            out.append(Labelled(RatingRequest("fluency", "", r["input"], shuffled_words(r["output"], rng)), False, "shuffled"))
        else:
            out.append(Labelled(RatingRequest("fluency", "", r["input"], repeated_words(r["output"])), False, "repeated"))
    return out


_BUILDERS = {"concept": concept_examples, "instruction": instruction_examples, "fluency": fluency_examples}


def labelled_examples(axbench_dir: str | Path, *, n_per_class: int = 24, seed: int = 0,
                      criteria: Sequence[str] = CRITERIA) -> dict[str, list[Labelled]]:
    """{criterion: labelled examples} drawn from the AxBench sets under ``axbench_dir``
    (deterministic for a seed)."""
    if n_per_class < 2:
        raise UserError(f"n_per_class must be at least 2 (a CI needs two of each class), got {n_per_class}")
    bad = [c for c in criteria if c not in _BUILDERS]
    if bad:
        raise UserError(f"unknown criteria {bad}; choose among {', '.join(CRITERIA)}")
    rows = axbench_rows(axbench_dir)
    out = {}
    for crit in criteria:  # each criterion's draw depends on the seed and its name only
        out[crit] = _BUILDERS[crit](rows, n_per_class, np.random.default_rng([seed, CRITERIA.index(crit)]))
        labels = [e.label for e in out[crit]]
        if sum(labels) < 2 or len(labels) - sum(labels) < 2:
            raise UserError(f"the AxBench sets under {axbench_dir} give fewer than 2 examples of a class for "
                            f"{crit}; pass a folder with more AxBench data")
    return out


def data_hash(examples: dict[str, Sequence[Labelled]]) -> str:
    """SHA-256 (16 hex digits) of every example's criterion, texts, label and kind, in order."""
    h = hashlib.sha256()
    for crit in sorted(examples):
        for e in examples[crit]:
            r = e.request
            h.update(json.dumps([crit, r.concept, r.instruction, r.fragment, e.label, e.kind]).encode())
    return h.hexdigest()[:16]


def cache_key(judge_description: str, data: str, sizes: dict[str, Any]) -> str:
    """The key of one validity result: SHA-256 (16 hex digits) of the judge's description, the
    data's hash (:func:`data_hash`) and the sizes (n per class, bootstrap, level, ...)."""
    blob = json.dumps({"v": RESULTS_VERSION, "judge": judge_description, "data": data, "sizes": sizes},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sizes(settings: ValiditySettings) -> dict[str, Any]:
    return {"n_per_class": settings.n_per_class, "n_boot": settings.n_boot, "ci_level": settings.ci_level,
            "seed": settings.seed}


# ------------------------------------------------------------------------------ validation

def validate_judge(judge: Judge, examples: dict[str, Sequence[Labelled]], *,
                   settings: ValiditySettings = ValiditySettings()) -> dict[str, Any]:
    """Rate every labelled example once (one ``judge.rate`` call) and measure each criterion:
    ``{"judge", "data", "cache_key", "criteria": {criterion: {auroc, ci_low, ci_high, n_pos,
    n_neg, by_negative_kind, auroc_argmax, ok_fraction, digit_mass, agreement, ...}}, ...}``."""
    t0 = time.perf_counter()
    order = [c for c in examples if examples[c]]
    flat = [e for c in order for e in examples[c]]
    ratings = judge.rate([e.request for e in flat])
    crit_out, k = {}, 0
    for c in order:
        ex, rs = examples[c], ratings[k : k + len(examples[c])]
        k += len(ex)
        labels, kinds = [e.label for e in ex], [e.kind for e in ex]
        res = separation([r.score for r in rs], labels, kinds, n_boot=settings.n_boot, level=settings.ci_level,
                         seed=settings.seed)
        res["auroc_argmax"] = auroc([r.argmax for r, y in zip(rs, labels) if y],
                                    [r.argmax for r, y in zip(rs, labels) if not y])
        res.update(rating_summary(rs))
        crit_out[c] = res
    desc = judge.describe()
    dh = data_hash(examples)
    return {"version": RESULTS_VERSION, "judge": desc, "data": dh, "cache_key": cache_key(desc, dh, _sizes(settings)),
            "settings": _json(dataclasses.asdict(settings)), "criteria": _json(crit_out),
            "min_digit_mass": settings.min_digit_mass, "seconds": round(time.perf_counter() - t0, 3)}


def validate_cached(judge: Judge, settings: ValiditySettings, cache_dir: str | Path, *,
                    detector=None) -> dict[str, Any]:
    """:func:`validate_judge` on :func:`labelled_examples` of ``settings``, kept as
    ``cache_dir/<cache_key>.json`` (written atomically) and read back when it is there.

    ``detector``: the AutoInterp detector's check
    (:class:`jaxsae.autointerp.validate.DetectorCheck`): called for ``"detector"`` in the result,
    its ``key()`` (detector, statistics fingerprint, settings) entering the cache key."""
    ex = labelled_examples(settings.axbench_dir, n_per_class=settings.n_per_class, seed=settings.seed,
                           criteria=settings.criteria)
    sizes = _sizes(settings)
    if detector is not None:
        sizes.update(detector.key())
    key = cache_key(judge.describe(), data_hash(ex), sizes)
    path = Path(cache_dir) / f"{key}.json"
    try:
        old = json.loads(path.read_text())
        if old.get("cache_key") == key:
            return old
    except (OSError, ValueError, AttributeError):
        pass
    res = validate_judge(judge, ex, settings=settings)
    if detector is not None:
        res["detector"] = detector()
    res["cache_key"] = key
    atomic_write_json(path, res)
    return res


# ------------------------------------------------------------------------------ verdict

_WHAT = {"concept": "concept present from absent",
         "instruction": "an instruction followed from one ignored",
         "fluency": "fluent text from shuffled or repeated text",
         "detector": "a latent's activating windows from random ones"}


def _fails(r: dict) -> bool:
    lo, hi = r.get("ci_low"), r.get("ci_high")
    return lo is None or hi is None or not (lo > 0.5 or hi < 0.5) or (r.get("auroc") or 0.0) <= 0.5


def _fmt(r: dict) -> str:
    def num(v):
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"

    level = round(100 * float(r.get("ci_level") or 0.95))
    return (f"AUROC {num(r.get('auroc'))}, {level}% CI {num(r.get('ci_low'))}–{num(r.get('ci_high'))}, "
            f"n = {r.get('n_pos', 0)}/{r.get('n_neg', 0)}")


def verdict(result: dict) -> str | None:
    """One line for the report's banner when the judge's measured validity does not carry its
    scores, else None: every criterion whose AUROC CI includes 0.5 (or whose AUROC is at most
    0.5), a mean digit mass below ``min_digit_mass``, and what is then not interpretable (g for
    the rating criteria, µ for the detector). ``result``: :func:`validate_judge`'s, optionally
    with ``"detector"`` (:func:`validate_detector`'s) added."""
    crits = dict(result.get("criteria") or {})
    if isinstance(result.get("detector"), dict):
        crits["detector"] = result["detector"]
    bad = [c for c, r in crits.items() if _fails(r)]
    parts = [f"{_WHAT.get(c, c)} ({_fmt(crits[c])})" for c in bad]
    lines = []
    if parts:
        lines.append("the judge cannot tell " + ", nor ".join(parts))
    floor = result.get("min_digit_mass", ValiditySettings.min_digit_mass)
    mass = [r["digit_mass"] for c, r in crits.items() if r.get("digit_mass") is not None]
    low_mass = bool(mass) and float(np.mean(mass)) < floor
    if low_mass:
        lines.append(f"the judge puts only {np.mean(mass):.2f} of its probability on the ratings 0/1/2 "
                     f"(below {floor:g})")
    if not lines:
        return None
    lost = []
    if low_mass or any(c in CRITERIA for c in bad):
        lost.append("g")
    if "detector" in bad:
        lost.append("µ")
    tail = " and ".join(lost) + (" are" if len(lost) > 1 else " is") + " not interpretable"
    return "; ".join(lines) + "; " + tail


def markdown_table(result: dict) -> list[str]:
    """The result as markdown table lines (criterion, AUROC, CI, n per class, digit mass, argmax
    agreement), the detector last when measured, for the report and the run's last lines."""
    def num(v):
        return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"

    crits = dict(result.get("criteria") or {})
    if isinstance(result.get("detector"), dict):
        crits["detector"] = result["detector"]
    level = round(100 * float(next(iter(crits.values()), {}).get("ci_level") or 0.95))
    lines = [f"| criterion | AUROC | {level}% CI | n (pos/neg) | digit mass | argmax agreement |",
             "|---|---:|---:|---:|---:|---:|"]
    for c, r in crits.items():
        lines.append(f"| {c} | {num(r.get('auroc'))} | {num(r.get('ci_low'))}–{num(r.get('ci_high'))} | "
                     f"{r.get('n_pos', 0)}/{r.get('n_neg', 0)} | {num(r.get('digit_mass'))} | "
                     f"{num(r.get('agreement'))} |")
    return lines


def _json(x):
    """JSON-able copy: numpy scalars as Python numbers, non-finite floats as None."""
    if isinstance(x, dict):
        return {str(k): _json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
