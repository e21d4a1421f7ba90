"""The AxBench steering judge over an OpenAI-compatible endpoint (:class:`APIJudge`), through the
disk-cached :class:`jaxsae.chat.ChatClient`."""

from __future__ import annotations

import logging
from typing import Sequence

from jaxsae.chat import ChatClient

from .base import Judge, Rating, RatingRequest
from .rubric import judge_messages, parse_rating, prompt_digest

log = logging.getLogger(__name__)


class APIJudge(Judge):
    """Rate through a :class:`ChatClient`: the full AxBench-style prompt (explanation, then
    ``Rating: [[score]]``), parsed with :func:`jaxsae.judge.rubric.parse_rating`.

    A missing or out-of-range rating scores 0 with ``ok=False`` (``parse_failures``); a request
    that failed for good scores 0 with ``ok=False`` and ``text=None`` (``hard_failures``). Both are
    counted in :meth:`stats` and logged as a warning after each :meth:`rate` call.
    """

    def __init__(self, client: ChatClient, *, max_tokens: int | None = 256, temperature: float = 0.0,
                 templates: dict | None = None):
        self.client = client
        self.templates = templates or None
        self.max_tokens = max_tokens
        self.temperature = float(temperature)
        self._ratings = 0
        self._parse_failures = 0
        self._hard_failures = 0

    def rate(self, items: Sequence[RatingRequest]) -> list[Rating]:
        items = list(items)
        msgs = [judge_messages(r.criterion, concept=r.concept, instruction=r.instruction, fragment=r.fragment,
                               templates=self.templates) for r in items]
        texts = self.client.chat_many(msgs, temperature=self.temperature, max_tokens=self.max_tokens)
        out, parse_fail, hard_fail = [], 0, 0
        for t in texts:
            if t is None:
                hard_fail += 1
                out.append(Rating(score=0.0, argmax=0.0, ok=False, text=None))
                continue
            score, ok = parse_rating(t)
            parse_fail += not ok
            out.append(Rating(score=score, argmax=score, ok=ok, text=t))
        self._ratings += len(items)
        self._parse_failures += parse_fail
        self._hard_failures += hard_fail
        if parse_fail or hard_fail:
            log.warning("API judge: %d of %d ratings had no valid 'Rating: [[x]]' and %d requests failed; "
                        "both score 0", parse_fail, len(items), hard_fail)
        return out

    def describe(self) -> str:
        """``api:<endpoint>:<model>:temperature=<t>:max_tokens=<n>:prompt=<hash>`` (never the key)."""
        return (f"api:{self.client.url}:{self.client.model}:temperature={self.temperature:g}:"
                f"max_tokens={self.max_tokens}:prompt={prompt_digest(explain=True, templates=self.templates)}")

    def stats(self) -> dict:
        """``{"ratings", "parse_failures", "hard_failures", "client": ClientStats}``."""
        return {"ratings": self._ratings, "parse_failures": self._parse_failures,
                "hard_failures": self._hard_failures, "client": self.client.stats.as_dict()}
