"""AutoInterp's two roles, each played by a local instruct model or an OpenAI-compatible API.

* An :class:`Explainer` writes an explanation of a latent from its highlighted explanation windows.
* A :class:`Detector` says, given that explanation, which of the shuffled scoring windows activate
  the latent.

SAEBench uses one API model for both; any explainer pairs with any detector here.

* :class:`ApiExplainer` / :class:`ApiDetector`: chat requests; the detector asks for the list of
  activating window numbers in one reply, as SAEBench.
* :class:`LocalExplainer` explains by greedy generation. :class:`LocalDetector` reads the model's
  probability of "yes" to a yes/no question about each window separately (one next-token
  distribution per window, no sampling), normalised over yes + no:
  ``P(yes) = Σ p(yes-tokens) / (Σ p(yes-tokens) + Σ p(no-tokens))``.

  Decision rule (``AutoInterpConfig.detection``):

  - ``"rank"`` (default): the k windows with the highest P(yes) are predicted active, k = the
    number of top + IW windows in the scoring set (4 of 14). Small instruct models are badly
    calibrated and lean to "yes" or "no" wholesale; a fixed threshold then scores nearly every
    latent 4/14 or 10/14 whatever its explanation, so µ stops telling SAEs apart. Ranking
    cancels that per-prompt bias: the score only depends on how well the explanation makes
    the detector order active above inactive windows. k is a constant of the protocol (the same
    for every latent and SAE), not information about the particular latent.
  - ``"threshold"``: P(yes) >= ``yes_threshold`` (0.5 by default), the literal reading of a
    yes/no judge, for well-calibrated models.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

from jaxsae.autointerp import prompts as P
from jaxsae.autointerp.config import AutoInterpConfig
from jaxsae.errors import UserError
from jaxsae.models.lm import MIN_SHARED, even_batch, shared_length


@dataclasses.dataclass
class Detection:
    """A judge's verdict on one scoring set."""

    predicted: list[int] | None
    """1-based numbers of the windows predicted active (None: unparseable reply)."""
    p_yes: list[float] | None = None
    """Local judge: P(yes) per window."""
    raw: str | None = None
    """API judge: the reply as given."""


# ---------------------------------------------------------------------------------- local models

def _single_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    ids = set()
    for w in words:
        t = tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(t) == 1:
            ids.add(int(t[0]))
    return sorted(ids)


class Explainer(Protocol):
    """Writes one explanation per latent."""

    name: str
    """``local:<model>`` or ``api:<model>``: recorded with the results."""

    def explain(self, messages: Sequence[P.Messages]) -> list[str | None]:
        """The raw reply per prompt (None where a request failed for good: that latent is not scored)."""
        ...


class Detector(Protocol):
    """Predicts which scoring windows of each latent activate it, given its explanation."""

    name: str
    """As :attr:`Explainer.name`."""
    rule: str
    """How predictions are made: ``"rank"`` / ``"threshold"`` (local), ``"list"`` (API)."""

    def detect(self, explanations: Sequence[str], window_texts: Sequence[Sequence[str]],
               examples: Sequence[Sequence[int]]) -> list[Detection]:
        """One :class:`Detection` per latent; ``examples``: the example answer an API prompt shows."""
        ...


def _need_tokenizer(lm):
    if lm.tokenizer is None:
        raise UserError(f"the judge model {lm.source} has no tokenizer; use a checkpoint with tokenizer files")


class LocalExplainer:
    """Greedy explanations from an instruct :class:`jaxsae.models.LM`, at most
    ``max_explanation_tokens`` new tokens each (equal batches of at most ``explain_batch`` prompts,
    :func:`~jaxsae.models.lm.even_batch`). With ``share_prefix`` (default) the tokens all prompts
    start with (chat header, instructions, examples) run once and every batch continues them
    (:meth:`jaxsae.models.LM.complete_ids`); the explanations are those of each prompt run whole,
    up to float rounding (the 20 explanations of four demo SAEs were identical)."""

    def __init__(self, lm, cfg: AutoInterpConfig, *, multiple: int = 64, share_prefix: bool = True):
        _need_tokenizer(lm)
        self.lm, self.cfg, self.multiple, self.share_prefix = lm, cfg, multiple, bool(share_prefix)
        self.name = f"local:{lm.config.name or lm.source}"

    def explain(self, messages: Sequence[P.Messages]) -> list[str]:
        lm = self.lm
        ids = [lm.token_ids(P.flatten(m), chat=True) for m in messages]
        new = lm.complete_ids(ids, max_new_tokens=self.cfg.max_explanation_tokens,
                              batch=even_batch(len(ids), self.cfg.explain_batch), multiple=self.multiple,
                              share_prefix=self.share_prefix)
        return [lm.tokenizer.decode(x, skip_special_tokens=True) for x in new]


class LocalDetector:
    """An instruct :class:`jaxsae.models.LM`'s P(yes) per window (see the module docstring for the rule).

    The questions about one latent differ only in their window: with ``share_prefix`` (default)
    the tokens they all start with (chat header, instructions, explanation) run through the model
    once, and each question's remaining tokens attend to that prefix's keys/values
    (:meth:`jaxsae.models.LM.prefix`); the probabilities are those of each question run alone."""

    def __init__(self, lm, cfg: AutoInterpConfig, *, multiple: int = 16, share_prefix: bool = True):
        _need_tokenizer(lm)
        self.lm, self.cfg, self.multiple, self.share_prefix = lm, cfg, multiple, bool(share_prefix)
        self.templates = P.load_templates(cfg.templates)
        self.name = f"local:{lm.config.name or lm.source}"
        self.rule = cfg.detection
        self.yes_ids = _single_token_ids(lm.tokenizer, ("yes", "Yes", "YES", " yes", " Yes", " YES"))
        self.no_ids = _single_token_ids(lm.tokenizer, ("no", "No", "NO", " no", " No", " NO"))
        if not self.yes_ids or not self.no_ids:
            raise UserError("the judge model's tokenizer has no single-token 'yes'/'no'; use another judge model")

    def p_yes(self, questions: Sequence[str]) -> np.ndarray:
        """f64[N]: P(yes) / (P(yes) + P(no)) of the next token after each chat-wrapped question
        (the tokens all questions start with run once, see the class docstring)."""
        lm = self.lm
        ids = [lm.token_ids(q, chat=True) for q in questions]
        cands = self.yes_ids + self.no_ids
        n = shared_length(ids) if self.share_prefix else 0
        batch = even_batch(len(ids), self.cfg.detect_batch)  # 14 windows: one batch of 14, not 16
        if n >= MIN_SHARED:
            lp = lm.next_token_logprobs([x[n:] for x in ids], cands, prefix=lm.prefix(ids[0][:n], multiple=64),
                                        batch=batch, multiple=self.multiple)
        else:
            lp = lm.next_token_logprobs(ids, cands, batch=batch, multiple=self.multiple)
        lp = lp.astype(np.float64)
        ly = np.logaddexp.reduce(lp[:, : len(self.yes_ids)], axis=1)
        ln = np.logaddexp.reduce(lp[:, len(self.yes_ids) :], axis=1)
        return 1.0 / (1.0 + np.exp(ln - ly))

    def detect(self, explanations: Sequence[str], window_texts: Sequence[Sequence[str]], examples=None) -> list[Detection]:
        """Per latent, P(yes) of each of its windows (one prefix pass for its shared question tokens)."""
        out = []
        for e, ws in zip(explanations, window_texts):
            pw = self.p_yes([P.yes_no_prompt(e, w, self.templates) for w in ws]) if len(ws) else np.zeros(0)
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


# ------------------------------------------------------------------------------------ API models

class ApiExplainer:
    """Explanations from an OpenAI-compatible chat model (:class:`jaxsae.chat.ChatClient`)."""

    def __init__(self, client, cfg: AutoInterpConfig):
        self.client, self.cfg = client, cfg
        self.name = f"api:{getattr(client, 'model', '?')}"

    def explain(self, messages: Sequence[P.Messages]) -> list[str | None]:
        """Raw explanations (None where a request failed for good: the latent is not scored)."""
        return self.client.chat_many(
            [list(m) for m in messages], temperature=self.cfg.api_temperature, max_tokens=self.cfg.max_explanation_tokens
        )


class ApiDetector:
    """Detection by an OpenAI-compatible chat model: the list of activating windows in one reply."""

    def __init__(self, client, cfg: AutoInterpConfig):
        self.client, self.cfg = client, cfg
        self.templates = P.load_templates(cfg.templates)
        self.name = f"api:{getattr(client, 'model', '?')}"
        self.rule = "list"

    def detect(self, explanations: Sequence[str], window_texts: Sequence[Sequence[str]], examples) -> list[Detection]:
        """``examples``: per latent, the example answer shown in the prompt (SAEBench: a random
        sorted draw of as many numbers as positives by design)."""
        msgs = [P.detection_messages(e, ws, ex, self.templates) for e, ws, ex in zip(explanations, window_texts, examples)]
        replies = self.client.chat_many(msgs, temperature=self.cfg.api_temperature, max_tokens=2 * self.cfg.n_scoring + 5)
        return [Detection(predicted=None if r is None else P.parse_predictions(r), raw=r) for r in replies]


def local_roles(lm, cfg: AutoInterpConfig) -> tuple[LocalExplainer, LocalDetector]:
    """Explainer and detector played by one local instruct model."""
    return LocalExplainer(lm, cfg), LocalDetector(lm, cfg)


def api_roles(client, cfg: AutoInterpConfig) -> tuple[ApiExplainer, ApiDetector]:
    """Explainer and detector played by one OpenAI-compatible chat model."""
    return ApiExplainer(client, cfg), ApiDetector(client, cfg)


def judge_name(explainer: Explainer, detector: Detector) -> str:
    """One name for the pair: the model's when one plays both roles, else ``explainer / detector``."""
    e, d = getattr(explainer, "name", type(explainer).__name__), getattr(detector, "name", type(detector).__name__)
    return e if e == d else f"{e} / {d}"
