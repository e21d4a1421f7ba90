"""The three AxBench-style judge prompts (our wording), rating parsing, and the harmonic mean.

Each steered generation is rated three times, each on a 0–2 scale with a three-level rubric:

  concept      is the concept clearly present in the fragment? (grammar and coherence ignored)
  instruction  is the fragment on topic for the instruction?  (grammar and completeness ignored)
  fluency      does the fragment read naturally?              (completeness and relevance ignored)

The prompts follow AxBench's structure (a "[System]" preamble in one user turn, a short explanation
then the answer as ``Rating: [[score]]``, the inputs in delimited blocks) in wording of our own.
``explain=False`` swaps the "explain first" sentence for "answer with the rating only", for judges
that read the rating slot directly (:class:`jaxsae.judge.local.LocalJudge`).

Parsing (:func:`parse_rating`) is AxBench's rule: the text after the last ``Rating:``, first line,
brackets removed, trailing period, quotes and asterisks stripped, read as a float; missing,
unparseable or outside [0, 2] gives 0 (and ``ok=False`` here, so failures can be counted).
"""

from __future__ import annotations

import numpy as np

from jaxsae.io import provenance_hash

CRITERIA = ("concept", "instruction", "fluency")
"""The three rated aspects, in AxBench's order."""

MAX_SCORE = 2.0
"""Top of the rating scale (scores live in [0, 2])."""

RATING_PREFIX = "Rating: [["
"""The answer form up to the score: a judge's answer is ``Rating: [[<score>]]``."""

_HEAD = "[System]\nYou are a neutral judge. Assess one property only of the sentence fragment below: "

_ASK = {
    True: (
        "Start with a brief justification of one or two sentences. Then state your score on its own "
        'line, formatted exactly as "Rating: [[score]]".'
    ),
    False: 'Answer with the score only, formatted exactly as "Rating: [[score]]".',
}

_BODY = {
    "concept": (
        "whether it brings in the concept given below. Look only at the concept: do not consider "
        "grammar, coherence or whether the text is complete.\n\n"
        "Score it from 0 to 2:\n"
        "0: the concept does not appear at all.\n"
        "1: the concept appears only faintly, in passing, or in a forced and awkward way.\n"
        "2: the concept is clearly present and woven naturally into the text.\n\n"
    ),
    "instruction": (
        "whether it is on topic for the instruction given below. Look only at topical relevance: "
        "do not consider grammar, fluency, or how informative or complete the answer is.\n\n"
        "Score it from 0 to 2:\n"
        "0: the fragment has nothing to do with the instruction.\n"
        "1: the fragment is loosely or only partly connected to the instruction.\n"
        "2: the fragment clearly addresses the topic of the instruction.\n\n"
    ),
    "fluency": (
        "how fluent it is. Look only at how naturally it reads: do not consider whether it is "
        "complete, what it is about, or whether it is relevant to anything.\n\n"
        "Score it from 0 to 2:\n"
        "0: not fluent: broken, incoherent, or highly repetitive text.\n"
        "1: readable, but with noticeable errors or awkward phrasing.\n"
        "2: natural text with hardly any flaw.\n\n"
    ),
}


def _block(name: str, text: str) -> str:
    return f"[{name} Start]\n{text}\n[{name} End]\n"


TEMPLATE_FIELDS = {
    "concept": (("concept", "fragment"), ()),
    "instruction": (("instruction", "fragment"), ()),
    "fluency": (("fragment",), ()),
}
"""Prompts a ``judge.templates`` file may replace, with their (required, optional) placeholders:
``{concept}`` (the concept description), ``{instruction}`` (the instruction the model answered),
``{fragment}`` (the steered generation). The judge must still answer ``Rating: [[score]]``."""


def load_templates(path) -> dict[str, str]:
    """The steering judge's templates from a user file (see :mod:`jaxsae.templates`)."""
    from jaxsae.templates import load_templates as load

    return load(path, TEMPLATE_FIELDS, "judge.templates")


def judge_prompt(criterion: str, *, concept: str = "", instruction: str = "", fragment: str,
                 explain: bool = True, templates: dict | None = None) -> str:
    """The full judge prompt for one rating (one user turn).

    ``criterion`` in :data:`CRITERIA`; the concept block appears only for ``concept``, the
    instruction block only for ``instruction``; every prompt ends with the fragment block.
    ``templates``: a user's wording per criterion (:func:`load_templates`), used as given.
    """
    if criterion not in _BODY:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}")
    if templates and criterion in templates:
        return templates[criterion].format(concept=concept, instruction=instruction, fragment=fragment)
    parts = [_HEAD, _BODY[criterion], _ASK[bool(explain)], "\n\n"]
    if criterion == "concept":
        parts.append(_block("Concept", concept) + "\n")
    elif criterion == "instruction":
        parts.append(_block("Instruction", instruction) + "\n")
    parts.append(_block("Sentence Fragment", fragment))
    return "".join(parts)


def judge_messages(criterion: str, *, concept: str = "", instruction: str = "", fragment: str,
                   explain: bool = True, templates: dict | None = None) -> list[dict]:
    """The chat messages of one rating request: a single user turn holding :func:`judge_prompt`."""
    return [{"role": "user", "content": judge_prompt(criterion, concept=concept, instruction=instruction,
                                                     fragment=fragment, explain=explain, templates=templates)}]


def prompt_digest(*, explain: bool = True, templates: dict | None = None) -> str:
    """Short hash of the three prompt templates (with or without the "explain first" request, and a
    user's ``templates``): part of a judge's :meth:`~jaxsae.judge.base.Judge.describe`, so that a
    changed wording is a different judge for resume checks."""
    text = "\x00".join(judge_prompt(c, concept="{c}", instruction="{i}", fragment="{f}", explain=explain,
                                    templates=templates) for c in CRITERIA)
    return provenance_hash(text, length=12)


def parse_rating(text: str | None, *, max_score: float = MAX_SCORE) -> tuple[float, bool]:
    """(score, ok) from a judge's answer, by AxBench's rule (module docstring).

    ``ok`` is False (and the score 0.0) when there is no ``Rating:``, the value does not parse as
    a float, or it lies outside [0, max_score]. NaN counts as out of range.
    """
    if not text or "Rating:" not in text:
        return 0.0, False
    s = text.split("Rating:")[-1].strip()
    s = s.split("\n")[0].strip()
    s = s.replace("[", "").replace("]", "")
    s = s.rstrip(".").strip('"').strip("'").strip("*").strip()
    try:
        score = float(s)
    except ValueError:
        return 0.0, False
    if not 0.0 <= score <= max_score:  # also rejects NaN
        return 0.0, False
    return score, True


def harmonic_mean(c, i, f):
    """Per-generation score HM(C, I, F) = 3 / (1/C + 1/I + 1/F), and 0 where any score <= 0.

    Vectorised over numpy arrays (broadcasting); returns a float for scalar inputs.
    """
    c, i, f = (np.asarray(v, dtype=np.float64) for v in (c, i, f))
    c, i, f = np.broadcast_arrays(c, i, f)
    pos = (c > 0) & (i > 0) & (f > 0)
    safe = [np.where(pos, v, 1.0) for v in (c, i, f)]
    out = np.where(pos, 3.0 / (1.0 / safe[0] + 1.0 / safe[1] + 1.0 / safe[2]), 0.0)
    return float(out) if out.ndim == 0 else out
