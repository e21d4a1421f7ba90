"""The AutoInterp judges: a local instruct model, or an OpenAI-compatible API.

Both write an explanation from the highlighted explanation windows, then say which of the
shuffled scoring windows activate the latent.

* :class:`ApiJudge` asks for the list of activating window numbers in one reply, as SAEBench.
* :class:`LocalJudge` explains by greedy generation and, for detection, reads the model's
  probability of "yes" to a yes/no question about each window separately (one batched forward
  per window, no sampling), normalised over yes + no:
  ``P(yes) = Σ p(yes-tokens) / (Σ p(yes-tokens) + Σ p(no-tokens))``.

  Decision rule (``AutoInterpConfig.detection``):

  - ``"rank"`` (default): the k windows with the highest P(yes) are predicted active, k = the
    number of top + IW windows in the scoring set (4 of 14). Small instruct models are badly
    calibrated and lean to "yes" or "no" wholesale; a fixed threshold then scores nearly every
    latent 4/14 or 10/14 whatever its explanation, so µ stops telling SAEs apart. Ranking
    cancels that per-prompt bias: the score only depends on how well the explanation makes
    the judge order active above inactive windows. k is a constant of the protocol (the same
    for every latent and SAE), not information about the particular latent.
  - ``"threshold"``: P(yes) >= ``yes_threshold`` (0.5 by default), the literal reading of a
    yes/no judge, for well-calibrated judges.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.autointerp import prompts as P
from jaxsae.autointerp.config import AutoInterpConfig
from jaxsae.errors import UserError
from jaxsae.models.decoder import forward, unembed
from jaxsae.models.generate import generate_tokens


@dataclasses.dataclass
class Detection:
    """A judge's verdict on one scoring set."""

    predicted: list[int] | None
    """1-based numbers of the windows predicted active (None: unparseable reply)."""
    p_yes: list[float] | None = None
    """Local judge: P(yes) per window."""
    raw: str | None = None
    """API judge: the reply as given."""


# ---------------------------------------------------------------------------------- local judge

def _single_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    ids = set()
    for w in words:
        t = tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(t) == 1:
            ids.add(int(t[0]))
    return sorted(ids)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _yes_no_logprob(params, cfg, tokens_bt, mask_bt, yes_ids, no_ids):
    """(log p(yes-tokens) f32[B], log p(no-tokens) f32[B]) at the next position."""
    x = forward(params, cfg, tokens_bt, mask_bt, stop_layer=cfg.n_layers - 1)[0][:, -1:]
    lp = jax.nn.log_softmax(unembed(params, cfg, x)[:, 0], axis=-1)
    return jax.nn.logsumexp(lp[:, yes_ids], axis=-1), jax.nn.logsumexp(lp[:, no_ids], axis=-1)


def _fit(size: int, n: int) -> int:
    """The batch size for ``n`` items: ``size``, or the power of two that holds them when fewer
    (so a few items are not padded to a large batch, and few shapes get compiled)."""
    return min(size, 1 << max(0, n - 1).bit_length())


def _batches(lengths: Sequence[int], size: int):
    """Index batches of similar lengths (sorted), so padding stays small."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + size] for i in range(0, len(order), size)]


class LocalJudge:
    """An instruct :class:`jaxsae.models.LM` as judge (see the module docstring for the rule)."""

    def __init__(self, lm, cfg: AutoInterpConfig, *, explain_multiple: int = 64, detect_multiple: int = 16):
        if lm.tokenizer is None:
            raise UserError(f"the judge model {lm.source} has no tokenizer; use a checkpoint with tokenizer files")
        self.lm, self.cfg = lm, cfg
        self.templates = P.load_templates(cfg.templates)
        self.explain_multiple, self.detect_multiple = explain_multiple, detect_multiple
        self.name = f"local:{lm.config.name or lm.source}"
        self.rule = cfg.detection
        self.yes_ids = _single_token_ids(lm.tokenizer, ("yes", "Yes", "YES", " yes", " Yes", " YES"))
        self.no_ids = _single_token_ids(lm.tokenizer, ("no", "No", "NO", " no", " No", " NO"))
        if not self.yes_ids or not self.no_ids:
            raise UserError("the judge model's tokenizer has no single-token 'yes'/'no'; use another judge model")

    def _pad(self, ids: list[list[int]], batch: int, multiple: int):
        """Left-padded tokens/mask with T rounded up to ``multiple`` and B padded to ``batch``
        (repeating the last row), so few distinct shapes get compiled."""
        ids = list(ids) + [ids[-1]] * (batch - len(ids))
        return self.lm.pad(ids, multiple=multiple)

    def explain(self, messages: Sequence[P.Messages]) -> list[str]:
        """Greedy explanations, at most ``max_explanation_tokens`` new tokens each."""
        lm, cfg = self.lm, self.cfg
        ids = [lm.token_ids(P.flatten(m), chat=True) for m in messages]
        out: list[str] = [""] * len(ids)
        eos = set(lm.config.eos_ids)
        B = _fit(cfg.explain_batch, len(ids))
        for idx in _batches([len(x) for x in ids], B):
            tokens, mask = self._pad([ids[i] for i in idx], B, self.explain_multiple)
            if tokens.shape[1] + cfg.max_explanation_tokens > lm.config.max_positions:
                raise UserError(f"explanation prompts of {tokens.shape[1]} tokens exceed the judge's context; "
                                "use a judge with a longer context")
            new, _ = generate_tokens(
                lm.params, lm.config, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(0), jnp.float32(1e-6),
                max_new=cfg.max_explanation_tokens, greedy=True,
            )
            for row, i in zip(np.asarray(new), idx):
                keep = []
                for t in row.tolist():
                    if t in eos:
                        break
                    keep.append(t)
                out[i] = lm.tokenizer.decode(keep, skip_special_tokens=True)
        return out

    def p_yes(self, questions: Sequence[str]) -> np.ndarray:
        """f64[n]: P(yes) / (P(yes) + P(no)) of the next token after each chat-wrapped question."""
        lm, cfg = self.lm, self.cfg
        ids = [lm.token_ids(q, chat=True) for q in questions]
        out = np.zeros(len(ids))
        yes, no = jnp.asarray(self.yes_ids), jnp.asarray(self.no_ids)
        B = _fit(cfg.detect_batch, len(ids))
        for idx in _batches([len(x) for x in ids], B):
            tokens, mask = self._pad([ids[i] for i in idx], B, self.detect_multiple)
            ly, ln = _yes_no_logprob(lm.params, lm.config, jnp.asarray(tokens), jnp.asarray(mask), yes, no)
            p = 1.0 / (1.0 + np.exp(np.asarray(ln, np.float64) - np.asarray(ly, np.float64)))
            out[idx] = p[: len(idx)]
        return out

    def detect(self, explanations: Sequence[str], window_texts: Sequence[Sequence[str]], examples=None) -> list[Detection]:
        questions = [P.yes_no_prompt(e, w, self.templates) for e, ws in zip(explanations, window_texts) for w in ws]
        p = self.p_yes(questions)
        out, k = [], 0
        for ws in window_texts:
            pw = p[k : k + len(ws)]
            k += len(ws)
            out.append(Detection(predicted=decide(pw, self.cfg), p_yes=[float(x) for x in pw]))
        return out


def decide(p_yes: np.ndarray, cfg: AutoInterpConfig) -> list[int]:
    """1-based numbers of the windows predicted active under ``cfg.detection``."""
    p_yes = np.asarray(p_yes)
    if cfg.detection == "rank":
        top = np.argsort(-p_yes, kind="stable")[: cfg.n_expected_positive]
        return sorted(int(i) + 1 for i in top)
    if cfg.detection == "threshold":
        return [int(i) + 1 for i in np.flatnonzero(p_yes >= cfg.yes_threshold)]
    raise UserError(f"unknown detection rule {cfg.detection!r}; use 'rank' or 'threshold'")


# ------------------------------------------------------------------------------------ API judge

class ApiJudge:
    """An OpenAI-compatible chat model (:class:`jaxsae.chat.ChatClient`) as judge."""

    def __init__(self, client, cfg: AutoInterpConfig):
        self.client, self.cfg = client, cfg
        self.templates = P.load_templates(cfg.templates)
        self.name = f"api:{getattr(client, 'model', '?')}"
        self.rule = "list"

    def explain(self, messages: Sequence[P.Messages]) -> list[str | None]:
        """Raw explanations (None where a request failed for good: the latent is not scored)."""
        return self.client.chat_many(
            [list(m) for m in messages], temperature=self.cfg.api_temperature, max_tokens=self.cfg.max_explanation_tokens
        )

    def detect(self, explanations: Sequence[str], window_texts: Sequence[Sequence[str]], examples) -> list[Detection]:
        """``examples``: per latent, the example answer shown in the prompt (SAEBench: a random
        sorted draw of as many numbers as positives by design)."""
        msgs = [P.detection_messages(e, ws, ex, self.templates) for e, ws, ex in zip(explanations, window_texts, examples)]
        replies = self.client.chat_many(msgs, temperature=self.cfg.api_temperature, max_tokens=2 * self.cfg.n_scoring + 5)
        return [Detection(predicted=None if r is None else P.parse_predictions(r), raw=r) for r in replies]
