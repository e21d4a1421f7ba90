"""LocalJudge: an instruct model loaded with :func:`jaxsae.models.load_model` rates by reading its
next-token distribution at the rating slot. No sampling, no parsing.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import UserError
from jaxsae.models.decoder import forward, unembed

from .base import Judge, Rating, RatingRequest
from .rubric import RATING_PREFIX, judge_prompt

DIGITS = ("0", "1", "2")
"""The three score tokens read at the rating slot."""


@functools.partial(jax.jit, static_argnames=("cfg",))
def rating_slot_probs(params, cfg, tokens_bt, mask_bt, digit_ids_k):
    """f32[B, K]: next-token probabilities of ``digit_ids_k`` after the last position.

    One forward through every block over the left-padded batch, then the final norm and
    unembedding of the last position only (the same numbers as ``lm.logits(...)[:, -1]`` without
    materialising [B, T, V] logits), softmax over the whole vocabulary.
    """
    x_btd, _ = forward(params, cfg, tokens_bt, mask_bt, stop_layer=cfg.n_layers - 1)
    x_b1d = x_btd[:, -1:, :].astype(params["embed_vd"].dtype)  # back to the activation dtype
    logits_bv = unembed(params, cfg, x_b1d)[:, 0, :]
    logp_bv = jax.nn.log_softmax(logits_bv, axis=-1)
    return jnp.exp(jnp.take(logp_bv, digit_ids_k, axis=1))


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


class LocalJudge(Judge):
    """Rate with a local instruct model by the next-token distribution at the rating slot.

    Rule: the judge prompt (:func:`jaxsae.judge.rubric.judge_prompt` with ``explain=False``) is
    wrapped as a user turn by the tokenizer's chat template (plain text followed by a blank line
    when there is none), the assistant's answer is pre-filled up to the score,
    ``"Rating: [["``, and one forward pass gives the next-token distribution p over the vocabulary.
    With p_i = p(token of digit i) for i = 0, 1, 2:

        expected score = sum_i i * p_i / sum_i p_i      (``Rating.score``, in [0, 2])
        argmax score   = argmax_i p_i                   (``Rating.argmax``)

    ``Rating.probs`` holds the renormalised p_i and ``Rating.digit_mass`` = sum_i p_i (how much of
    the model's belief went to a valid score at all). Requests are sorted by length and run in
    left-padded batches of ``batch_size`` (a short last batch is padded with repeats so that shapes
    stay fixed), one jitted forward per batch.
    """

    def __init__(self, lm, *, batch_size: int = 8, pad_multiple: int = 32):
        tok = lm.tokenizer
        if tok is None:
            raise UserError(f"{lm.source} has no tokenizer; the local judge needs an instruct model with tokenizer files")
        self.lm = lm
        self.batch_size = int(batch_size)
        self.pad_multiple = int(pad_multiple)
        self.digit_ids = _digit_ids(tok)
        self._chat = bool(getattr(tok, "chat_template", None))
        self._n = 0
        self._mass_sum = 0.0
        self._mass_min = 1.0

    def prompt_text(self, req: RatingRequest) -> str:
        """The exact text fed to the model for ``req``, ending with the pre-filled ``Rating: [[``."""
        body = judge_prompt(req.criterion, concept=req.concept, instruction=req.instruction,
                            fragment=req.fragment, explain=False)
        tok = self.lm.tokenizer
        if self._chat:
            head = tok.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                           add_generation_prompt=True)
        else:
            head = body + "\n"
        return head + RATING_PREFIX

    def _token_ids(self, req: RatingRequest) -> list[int]:
        tok = self.lm.tokenizer
        text = self.prompt_text(req)
        # the chat template already carries any BOS it wants; a plain prompt gets the tokenizer's
        return list(tok(text, add_special_tokens=not self._chat)["input_ids"])

    def slot_probs(self, items: Sequence[RatingRequest]) -> np.ndarray:
        """f32[N, 3]: p("0"), p("1"), p("2") at the rating slot of each request (not renormalised)."""
        ids = [self._token_ids(r) for r in items]
        limit = self.lm.config.max_positions
        longest = max((len(x) for x in ids), default=0)
        if longest > limit:
            raise UserError(f"a judge prompt has {longest} tokens, more than the judge model's context of "
                            f"{limit}; shorten the generations (max_new_tokens) or use a longer-context judge")
        out = np.zeros((len(ids), len(self.digit_ids)), np.float32)
        order = sorted(range(len(ids)), key=lambda k: len(ids[k]))
        digit_ids = jnp.asarray(self.digit_ids, jnp.int32)
        for s in range(0, len(order), self.batch_size):
            chunk = order[s : s + self.batch_size]
            rows = [ids[k] for k in chunk]
            rows += [rows[-1]] * (self.batch_size - len(rows))
            tokens, mask = self.lm.pad(rows, multiple=self.pad_multiple)
            p = rating_slot_probs(self.lm.params, self.lm.config, jnp.asarray(tokens), jnp.asarray(mask), digit_ids)
            out[chunk] = np.asarray(p)[: len(chunk)]
        return out

    def rate(self, items: Sequence[RatingRequest]) -> list[Rating]:
        items = list(items)
        if not items:
            return []
        p_nk = self.slot_probs(items).astype(np.float64)
        mass_n = p_nk.sum(axis=1)
        ratings = []
        scores = np.arange(len(self.digit_ids), dtype=np.float64)
        for p, m in zip(p_nk, mass_n):
            ok = bool(np.isfinite(m) and m > 0)
            q = p / m if ok else np.full_like(p, 1.0 / p.size)
            ratings.append(Rating(score=float(q @ scores), argmax=float(np.argmax(q)), ok=ok,
                                  probs=tuple(float(v) for v in q), digit_mass=float(m)))
        self._n += len(items)
        self._mass_sum += float(np.nansum(mass_n))
        self._mass_min = min(self._mass_min, float(np.nanmin(mass_n)))
        return ratings

    def stats(self) -> dict:
        """``{"ratings", "mean_digit_mass", "min_digit_mass"}`` over every call so far."""
        return {
            "ratings": self._n,
            "mean_digit_mass": self._mass_sum / self._n if self._n else None,
            "min_digit_mass": self._mass_min if self._n else None,
        }
