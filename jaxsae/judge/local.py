"""LocalJudge: an instruct model loaded with :func:`jaxsae.models.load_model` rates by reading its
next-token distribution at the rating slot. No sampling, no parsing.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import UserError
from jaxsae.models import KVCache

from .base import Judge, Rating, RatingRequest
from .rubric import RATING_PREFIX, judge_prompt, prompt_digest

DIGITS = ("0", "1", "2")
"""The three score tokens read at the rating slot."""


def auto_batch_size(lm, rows_tokens: int = 256, *, fraction: float = 0.25, cpu: int = 8, most: int = 256) -> int:
    """Judge rows per forward from the device's free memory: ``fraction`` of it over what one row
    of ``rows_tokens`` tokens takes (its keys/values in every layer, the widest activation (the
    feed-forward's) and the digit logits row), a power of two in [8, ``most``]; ``cpu`` on a CPU
    (compute-bound there: larger batches do not help) or when the device reports no memory."""
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" and hasattr(dev, "memory_stats") else None
    if not stats or "bytes_limit" not in stats:
        return cpu
    free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    c = lm.config
    item = jnp.dtype(jax.tree_util.tree_leaves(lm.params)[0].dtype).itemsize
    per_row = rows_tokens * item * (2 * c.n_layers * c.n_kv_heads * c.head_dim + 4 * c.d_ff + 4 * c.d_model) \
        + 4 * c.vocab_size
    n = max(8, min(most, int(fraction * free // max(per_row, 1))))
    return 1 << (n.bit_length() - 1)


def _digit_ids(tok) -> list[int]:
    """Token id of each digit as it follows :data:`RATING_PREFIX`; a UserError if a digit is not
    exactly one token there (then the slot cannot be read from one distribution)."""
    base = tok(RATING_PREFIX, add_special_tokens=False)["input_ids"]
    ids = []
    for d in DIGITS:
        full = tok(RATING_PREFIX + d, add_special_tokens=False)["input_ids"]
        if len(full) != len(base) + 1 or list(full[: len(base)]) != list(base):
            raise UserError(
                f"the judge's tokenizer does not put {d!r} in a token of its own after {RATING_PREFIX!r}; "
                "use an instruct model whose tokenizer splits digits (Gemma-2, Qwen-2.5, SmolLM2) as the local judge"
            )
        ids.append(int(full[-1]))
    return ids


_FIRST_BLOCK = {"concept": "[Concept Start]", "instruction": "[Instruction Start]",
                "fluency": "[Sentence Fragment Start]"}
"""Where each criterion's prompt stops being the same for every request."""


class LocalJudge(Judge):
    """Rate with a local instruct model by the next-token distribution at the rating slot.

    Rule: the judge prompt (:func:`jaxsae.judge.rubric.judge_prompt` with ``explain=False``) is
    wrapped as a user turn by the tokenizer's chat template (plain text and a newline when there
    is none), the assistant's answer is pre-filled up to the score, ``"Rating: [["``, and one
    forward pass gives the next-token distribution p over the whole vocabulary. With
    p_i = p(token of digit i), i = 0, 1, 2:

        expected score = sum_i i * p_i / sum_i p_i      (``Rating.score``, in [0, 2])
        argmax score   = argmax_i p_i                   (``Rating.argmax``)

    ``Rating.probs`` holds the renormalised p_i and ``Rating.digit_mass`` = sum_i p_i (how much of
    the model's belief went to a valid score at all). No sampling, no parsing.

    Batching: requests are sorted by length and run in right-padded batches of ``batch_size``
    (default :func:`auto_batch_size`: from the device's free memory on GPU / TPU, 8 on a CPU; a
    short batch is filled with repeats so that shapes stay fixed), each batch's length rounded up to
    ``pad_multiple`` tokens (32: the demo's 720 requests take 2 padded lengths, so 2 programs
    compile; 8 compiled 8 and rated 144 of them 1.31x faster warm on a CPU, but the extra compiles
    slowed the two-process smoke launch past its test's limit, so 8 is not the default), one jitted
    forward per batch;
    only each row's last real position is unembedded. With ``share_prefix`` (default) the part of
    the prompt that is identical for every request of a criterion (chat header and rubric, about
    150 tokens) is run once and its keys/values reused, so a batch only runs each request's own
    tokens (the prefix's keys/values are passed to every batch as one batch-1 key set); the
    probabilities are the same as a full forward (tested) up to float rounding.
    """

    on_device = True
    """Rates on the device that generates: steering judges it between generation batches."""

    def __init__(self, lm, *, batch_size: int | None = None, pad_multiple: int = 32, share_prefix: bool = True,
                 templates: dict | None = None):
        tok = lm.tokenizer
        if tok is None:
            raise UserError(f"{lm.source} has no tokenizer; the local judge needs an instruct model with tokenizer files")
        self.lm = lm
        self.batch_size = max(1, int(batch_size if batch_size is not None else auto_batch_size(lm)))
        self.pad_multiple = max(1, int(pad_multiple))
        self.templates = templates or None
        self.share_prefix = bool(share_prefix) and not self.templates  # a user's wording has no known shared part
        self.digit_ids = _digit_ids(tok)
        self._chat = bool(getattr(tok, "chat_template", None))
        self._prefix_ids: dict[str, list[int]] = {}
        self._prefix_kv: dict[str, KVCache] = {}
        self._n = 0
        self._mass_sum = 0.0
        self._mass_min = 1.0

    # ------------------------------------------------------------------------------ prompts

    def prompt_text(self, req: RatingRequest) -> str:
        """The exact text fed to the model for ``req``, ending with the pre-filled ``Rating: [[``."""
        body = judge_prompt(req.criterion, concept=req.concept, instruction=req.instruction,
                            fragment=req.fragment, explain=False, templates=self.templates)
        tok = self.lm.tokenizer
        if self._chat:
            head = tok.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                           add_generation_prompt=True)
        else:
            head = body + "\n"
        return head + RATING_PREFIX

    def _tokenize(self, text: str) -> list[int]:
        # the chat template already carries any BOS it wants; a plain prompt gets the tokenizer's
        return list(self.lm.tokenizer(text, add_special_tokens=not self._chat)["input_ids"])

    def token_ids(self, req: RatingRequest) -> list[int]:
        """Token ids of :meth:`prompt_text`."""
        return self._tokenize(self.prompt_text(req))

    def shared_prefix(self, criterion: str) -> list[int]:
        """Token ids every request of ``criterion`` starts with (the chat header and rubric; the
        last token before the first input block is left out since it may merge with what follows)."""
        if criterion not in self._prefix_ids:
            text = self.prompt_text(RatingRequest(criterion, "", "", ""))
            self._prefix_ids[criterion] = self._tokenize(text[: text.index(_FIRST_BLOCK[criterion])])[:-1]
        return self._prefix_ids[criterion]

    def _kv(self, criterion: str):
        if criterion not in self._prefix_kv:
            # left-padded to a multiple of 64 so that the three criteria share compiled programs
            self._prefix_kv[criterion] = self.lm.prefix(self.shared_prefix(criterion), multiple=64)
        return self._prefix_kv[criterion]

    # ------------------------------------------------------------------------------ rating

    def slot_probs(self, items: Sequence[RatingRequest]) -> np.ndarray:
        """f32[N, C]: p("0"), p("1"), p("2") at the rating slot of each request (not renormalised)."""
        ids = [self.token_ids(r) for r in items]
        limit = self.lm.config.max_positions
        longest = max((len(x) for x in ids), default=0)
        if longest > limit:
            raise UserError(f"a judge prompt has {longest} tokens, more than the judge model's context of "
                            f"{limit}; shorten the generations (max_new_tokens) or use a longer-context judge")
        groups: dict[str | None, list[int]] = {}
        for k, (req, x) in enumerate(zip(items, ids)):
            key = None
            if self.share_prefix:
                pre = self.shared_prefix(req.criterion)
                if 0 < len(pre) < len(x) and x[: len(pre)] == pre:
                    key = req.criterion
            groups.setdefault(key, []).append(k)
        out = np.zeros((len(ids), len(self.digit_ids)), np.float32)
        for key, idxs in groups.items():
            skip = 0 if key is None else len(self.shared_prefix(key))
            logp = self.lm.next_token_logprobs([ids[k][skip:] for k in idxs], self.digit_ids,
                                               prefix=None if key is None else self._kv(key),
                                               batch=self.batch_size, multiple=self.pad_multiple)
            out[idxs] = np.exp(logp)
        return out

    def rate(self, items: Sequence[RatingRequest]) -> list[Rating]:
        items = list(items)
        if not items:
            return []
        p_nc = self.slot_probs(items).astype(np.float64)
        mass_n = p_nc.sum(axis=1)
        ratings = []
        scores = np.arange(len(self.digit_ids), dtype=np.float64)
        for p, m in zip(p_nc, mass_n):
            if np.isfinite(m) and m > 0:
                q = p / m
                ratings.append(Rating(score=float(q @ scores), argmax=float(np.argmax(q)), ok=True,
                                      probs=tuple(float(v) for v in q), digit_mass=float(m)))
            else:  # no valid rating (NaN or zero digit mass): a failure scores 0, as the API judge's do
                ratings.append(Rating(score=0.0, argmax=0.0, ok=False, probs=(0.0,) * p.size,
                                      digit_mass=float(m) if np.isfinite(m) else 0.0))
        self._n += len(items)
        self._mass_sum += float(np.nansum(mass_n))
        self._mass_min = min(self._mass_min, float(np.nanmin(mass_n)))
        return ratings

    def describe(self) -> str:
        """``local:<model source>:<param dtype>:prompt=<hash>``."""
        dtype = jax.tree_util.tree_leaves(self.lm.params)[0].dtype
        return f"local:{self.lm.source}:{dtype}:prompt={prompt_digest(explain=False, templates=self.templates)}"

    def stats(self) -> dict:
        """``{"ratings", "mean_digit_mass", "min_digit_mass"}`` over every call so far."""
        return {
            "ratings": self._n,
            "mean_digit_mass": self._mass_sum / self._n if self._n else None,
            "min_digit_mass": self._mass_min if self._n else None,
        }
