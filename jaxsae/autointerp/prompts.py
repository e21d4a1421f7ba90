"""Judge prompts (our own wording of SAEBench's), window rendering, and reply parsing."""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

Messages = list[dict[str, str]]


class TokenText:
    """Per-token strings of a tokenizer (each token decoded on its own, as SAEBench's
    ``to_str_tokens``), cached."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, ids: Sequence[int]) -> list[str]:
        ids = [int(i) for i in ids]
        missing = sorted({i for i in ids if i not in self._cache})
        if missing:
            for i, s in zip(missing, self.tokenizer.batch_decode([[i] for i in missing])):
                self._cache[i] = s
        return [self._cache[i] for i in ids]


def render_window(pieces: Sequence[str], acts: np.ndarray | None = None, threshold: float = 0.0) -> str:
    """One line of text; with ``acts``, tokens whose activation is above ``threshold`` are wrapped
    in ``<<`` ``>>``. Newlines show as ↵ and undecodable byte pieces (�) are dropped."""
    out = []
    for i, p in enumerate(pieces):
        p = p.replace("\ufffd", "").replace("\n", "↵")
        out.append(f"<<{p}>>" if acts is not None and acts[i] > threshold else p)
    return "".join(out)


def numbered(texts: Sequence[str]) -> str:
    return "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))


_INTRO = (
    "We are studying a single latent unit (a 'neuron') of a neural network. It responds to particular "
    "words, parts of words, or ideas in short passages of text."
)
_DEMOS = (
    ' Good answers look like: "This neuron activates on the word \'knows\' in rhetorical questions", '
    '"This neuron activates on verbs about making decisions or stating preferences", '
    '"This neuron activates on the word piece \'Ent\' at the start of a word", or '
    '"This neuron activates on text about government economic policy".'
)


TEMPLATE_FIELDS = {
    "explain_system": ((), ()),
    "explain_user": (("passages",), ()),
    "detect_system": ((), ("n", "example")),
    "detect_user": (("explanation", "passages"), ()),
    "yes_no": (("explanation", "passage"), ()),
}
"""Prompts an ``autointerp.templates`` file may replace, with their (required, optional)
placeholders: ``{passages}`` (the numbered windows, one per line), ``{n}`` (how many),
``{example}`` (an example answer such as "2, 5, 9, 12"), ``{explanation}``, ``{passage}`` (one
window, for the local judge's yes/no question). The explainer system prompt replaces ours whole,
demonstrations included."""


def load_templates(path) -> dict[str, str]:
    """The explainer/detector templates of a user file (see :mod:`jaxsae.templates`)."""
    from jaxsae.templates import load_templates as load

    return load(path, TEMPLATE_FIELDS, "autointerp.templates")


def explanation_messages(window_texts: Sequence[str], *, use_demos: bool, templates: dict | None = None) -> Messages:
    """Ask for a one-sentence explanation from highlighted windows (strongest first)."""
    t = templates or {}
    system = (
        f"{_INTRO} Below are passages where it responds, ordered from strongest to weakest; the tokens "
        "where it responds are wrapped in << and >>. Summarise in one sentence what the neuron responds "
        "to. Do not be too specific: the explanation should cover most of the marked tokens, not a single "
        "word, and if it responds to every word of passages about some topic, name the topic. Mention "
        "capitalisation or punctuation only when it matters. Keep it short and simple, at most 20 words, "
        "with no formatting and no long lists of words. Answer in the form \"This neuron activates on ...\"."
    )
    if use_demos:
        system += _DEMOS
    system = t.get("explain_system", system)
    user = (t["explain_user"].format(passages=numbered(window_texts)) if "explain_user" in t
            else f"The passages are:\n\n{numbered(window_texts)}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def detection_messages(explanation: str, window_texts: Sequence[str], example: Sequence[int],
                       templates: dict | None = None) -> Messages:
    """Ask for the list of windows in which the neuron fires (API judge)."""
    t = templates or {}
    n = len(window_texts)
    system = (
        f"{_INTRO} You will get a short explanation of what it responds to, then {n} numbered passages in "
        "random order. Reply with the numbers of the passages in which you expect the neuron to respond "
        "to at least one token, separated by commas, for example "
        f"\"{', '.join(str(i) for i in example)}\". Do not read the explanation too narrowly. If you expect "
        "it to respond to none of them, reply \"None\". Reply with nothing but the numbers or the word "
        "None; this matters."
    )
    if "detect_system" in t:
        system = t["detect_system"].format(n=n, example=", ".join(str(i) for i in example))
    user = (t["detect_user"].format(explanation=explanation, passages=numbered(window_texts)) if "detect_user" in t
            else f"Explanation: this neuron fires on {explanation}.\n\nPassages:\n\n{numbered(window_texts)}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def yes_no_prompt(explanation: str, window_text: str, templates: dict | None = None) -> str:
    """One window, one yes/no question (local judge, read off P(yes) of the next token)."""
    if templates and "yes_no" in templates:
        return templates["yes_no"].format(explanation=explanation, passage=window_text)
    return (
        f"{_INTRO} According to its explanation, this neuron fires on {explanation}.\n\n"
        f"Passage: {window_text}\n\n"
        "Does the neuron respond to at least one token of this passage? Answer yes or no."
    )


def flatten(messages: Messages) -> str:
    """System and user turns as one user message (for chat templates without a system turn)."""
    return "\n\n".join(m["content"] for m in messages)


_LEAD_INS = ("activates on", "responds to", "fires on")


def parse_explanation(raw: str) -> str:
    """The explanation proper: the first non-empty line (without list numbering), after the
    last "activates on" (SAEBench's rule; "responds to" / "fires on" too), without surrounding
    quotes or a trailing full stop; highlight marks copied from the windows (``<<`` ``>>``) are
    dropped, so they never reach the scoring prompt."""
    raw = raw.replace("<<", "").replace(">>", "")
    lines = [ln.strip() for ln in raw.strip().splitlines() if ln.strip()]
    text = re.sub(r"^\d+[.)]\s*", "", lines[0]) if lines else ""
    cut = max(((text.rfind(k), k) for k in _LEAD_INS), key=lambda x: x[0])
    if cut[0] >= 0:
        text = text[cut[0] + len(cut[1]) :]
    return text.strip().strip("\"'").strip().rstrip(".").strip()


def parse_predictions(raw: str) -> list[int] | None:
    """SAEBench's reply parsing: comma-separated numbers ("and" is a comma; "None" is empty);
    None when anything else is left (the latent is then not scored)."""
    text = raw.strip().rstrip(".").replace("and", ",").replace("None", "")
    text = re.sub(r"^[\[(]|[\])]$", "", text.strip())
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdecimal() for p in parts):  # (isdigit would pass "²", which int() rejects)
        return None
    return [int(p) for p in parts]
