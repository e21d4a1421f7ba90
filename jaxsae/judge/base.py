"""The judge interface: rate (criterion, concept, instruction, fragment) requests on the 0–2 scale."""

from __future__ import annotations

import abc
import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

from .rubric import CRITERIA, harmonic_mean


@dataclasses.dataclass(frozen=True)
class RatingRequest:
    """One rating to make."""

    criterion: str
    """"concept" | "instruction" | "fluency"."""
    concept: str
    """The concept the generation was steered towards (used by the concept criterion)."""
    instruction: str
    """The instruction the generation answers (used by the instruction criterion)."""
    fragment: str
    """The generated text being rated."""

    def __post_init__(self):
        if self.criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {self.criterion!r}; expected one of {CRITERIA}")


@dataclasses.dataclass(frozen=True)
class Rating:
    """A judge's rating of one request."""

    score: float
    """The score in [0, 2] used downstream: the expected score for the local judge, the parsed
    score for the API judge (0 when the answer could not be parsed)."""
    argmax: float
    """The most likely score (local judge: argmax over "0", "1", "2"; API judge: = score)."""
    ok: bool
    """False when no valid rating was obtained (API: unparseable answer or failed request)."""
    probs: tuple[float, float, float] | None = None
    """Local judge: p("0"), p("1"), p("2") renormalised over the three digits."""
    digit_mass: float | None = None
    """Local judge: total next-token probability on the three digits before renormalising."""
    text: str | None = None
    """API judge: the judge's answer (None when the request failed)."""


def rating_record(r: Rating) -> dict:
    """The JSON form of one rating as saved with a steered generation: score, argmax and ok, plus
    the local judge's probs / digit_mass or the API judge's raw answer (``text``, None when the
    request failed) where the judge gives them."""
    out = {"score": float(r.score), "argmax": float(r.argmax), "ok": bool(r.ok)}
    if r.probs is not None:
        out["probs"] = [float(v) for v in r.probs]
    if r.digit_mass is not None:
        out["digit_mass"] = float(r.digit_mass)
    if r.probs is None and r.digit_mass is None:  # a text judge: keep its answer, even a failed one
        out["text"] = r.text
    return out


class GenerationRatings(NamedTuple):
    """Per-generation ratings: ``C, I, F, HM = judge.rate_generations(...)``; f64[N] each."""

    concept: np.ndarray
    instruction: np.ndarray
    fluency: np.ndarray
    hm: np.ndarray


def generation_requests(concepts: Sequence[str], instructions: Sequence[str],
                        outputs: Sequence[str]) -> list[RatingRequest]:
    """The 3N requests for N generations: all concept ratings, then instruction, then fluency."""
    if not len(concepts) == len(instructions) == len(outputs):
        raise ValueError(f"lengths differ: {len(concepts)} concepts, {len(instructions)} instructions, "
                         f"{len(outputs)} outputs")
    return [RatingRequest(crit, c, i, o) for crit in CRITERIA
            for c, i, o in zip(concepts, instructions, outputs)]


def combine(ratings: Sequence[Rating], n: int, *, use: str = "score") -> GenerationRatings:
    """Fold the 3N ratings of :func:`generation_requests` into C, I, F and the zero-guarded HM.

    ``use``: ``"score"`` (expected / parsed score) or ``"argmax"``.
    """
    if use not in ("score", "argmax"):
        raise ValueError(f"use must be 'score' or 'argmax', not {use!r}")
    v = np.array([getattr(r, use) for r in ratings], dtype=np.float64).reshape(3, n)
    return GenerationRatings(v[0], v[1], v[2], np.asarray(harmonic_mean(v[0], v[1], v[2])).reshape(n))


class RatedGenerations(NamedTuple):
    """N generations rated on all three criteria: the 3N raw ratings (in
    :func:`generation_requests` order) and their folds by expected score and by argmax."""

    ratings: list[Rating]
    expected: GenerationRatings
    argmax: GenerationRatings

    def per_generation(self, j: int) -> dict[str, Rating]:
        """{criterion: Rating} of generation ``j``."""
        n = len(self.expected.hm)
        return {crit: self.ratings[k * n + j] for k, crit in enumerate(CRITERIA)}


class Judge(abc.ABC):
    """Rates generations on the AxBench rubric (:mod:`jaxsae.judge.rubric`)."""

    @abc.abstractmethod
    def rate(self, items: Sequence[RatingRequest]) -> list[Rating]:
        """One :class:`Rating` per request, in order."""

    def rate_generations_full(self, concepts: Sequence[str], instructions: Sequence[str],
                              outputs: Sequence[str]) -> RatedGenerations:
        """Rate N generations once and keep everything: the raw ratings, C/I/F/HM by expected
        score and C/I/F/HM by argmax (equal for a judge whose argmax is its score)."""
        ratings = self.rate(generation_requests(concepts, instructions, outputs))
        n = len(outputs)
        return RatedGenerations(ratings, combine(ratings, n, use="score"), combine(ratings, n, use="argmax"))

    def describe(self) -> str:
        """What rates, as one string (kind, model, prompt version, decoding): steering results
        made by another description are recomputed on resume."""
        return type(self).__name__

    def stats(self) -> dict:
        """Counters for reports (requests, failures, ...)."""
        return {}
