"""Text for training, the statistics pass and the core metrics: corpus sources (Python's docs,
local files), packed token contexts int32[N, T], and which tokens count.

Packing follows SAELens' ``tokenize_and_concatenate`` (which SAEBench uses): documents are
tokenized without special tokens, joined with the end-of-text token, cut into contexts of
``T`` tokens (``T - 1`` plus a BOS at the front when the model's tokenizer itself prepends
one, e.g. Gemma), and the last partial context is dropped.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from jaxsae.errors import UserError


def pydoc_texts() -> list[str]:
    """Python's own documentation topics (``pydoc_data.topics``, shipped with CPython, offline),
    one document per topic, in sorted topic order: about 465k characters of real English prose
    and code, roughly 110k tokens.

    Held out by construction: ``jaxsae.train``'s embedded training corpus is the standard
    library's docstrings (``jaxsae.train.data.stdlib_docstrings``), a different text.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError:  # pragma: no cover - stripped-down Python builds
        raise UserError("this Python has no pydoc_data module; pass held-out text with --text FILE") from None
    return [topics[k] for k in sorted(topics)]


def read_texts(paths: Sequence[str | Path]) -> list[str]:
    """Documents from local files: a ``.jsonl`` file gives one document per line (its ``"text"``
    field); any other file is one document of UTF-8 text."""
    docs: list[str] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise UserError(f"text file {p} does not exist; pass existing .txt or .jsonl files")
        if p.suffix == ".jsonl":
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
                if line.strip():
                    try:
                        docs.append(json.loads(line)["text"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise UserError(f"{p}:{i + 1} is not a JSON object with a \"text\" field") from None
        else:
            docs.append(_text_of(p))
    return docs


def _text_of(path: Path) -> str:
    """A file's UTF-8 text (a stray bad byte becomes U+FFFD); a file that is not text — NUL bytes,
    or more than 1 % undecodable — is refused in one line instead of being trained on."""
    data = path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    if b"\x00" in data or text.count("\ufffd") > 0.01 * max(len(text), 1):
        raise UserError(f"{path} is not UTF-8 text (a binary file?); pass .txt or .jsonl text files as data.source")
    return text


def tokenizer_adds_bos(tokenizer) -> bool:
    """True when the tokenizer itself starts a text with its BOS token (Gemma; not Qwen/SmolLM2)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def pack_contexts(
    texts: Iterable[str],
    tokenizer,
    *,
    context_len: int,
    max_tokens: int,
    bos_id: int | None,
    sep_id: int | None,
) -> np.ndarray:
    """int32[N, T]: ``texts`` tokenized, joined with ``sep_id`` (if any) and cut into contexts;
    ``bos_id`` (if any) starts every context. Stops once ``max_tokens`` tokens are packed."""
    body = context_len - (bos_id is not None)
    n_max = max(1, max_tokens // context_len)
    stream: list[int] = []
    docs = iter(texts)
    while len(stream) < n_max * body:  # tokenize in chunks: stop early on a large (or streamed) corpus
        chunk = list(itertools.islice(docs, 256))
        if not chunk:
            break
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            if sep_id is not None:
                stream.append(sep_id)
    n = min(n_max, len(stream) // body)
    if n == 0:
        raise UserError(f"the held-out text has {len(stream)} tokens, fewer than one context of {context_len}; give more text")
    ctx = np.asarray(stream[: n * body], np.int32).reshape(n, body)
    if bos_id is not None:
        ctx = np.concatenate([np.full((n, 1), bos_id, np.int32), ctx], axis=1)
    return ctx


def counted_mask(tokens_nt: np.ndarray, special_ids: Sequence[int], *, mask_first: bool) -> np.ndarray:
    """bool[N, T]: tokens whose activations count (not special/BOS/EOS/PAD; position 0 too when
    ``mask_first``, for models whose contexts start without a BOS: that position is the
    attention sink and carries outlier activations)."""
    counted = ~np.isin(tokens_nt, np.asarray(sorted(set(special_ids)), np.int64))
    if mask_first:
        counted[:, 0] = False
    return counted
