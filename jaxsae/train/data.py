"""The activation pipeline: text -> token contexts -> residuals at layer L -> training batches.

Text sources: the embedded corpus (docstrings of the Python standard library, read from its
source files with ``ast`` — real human prose that ships with every Python, kept disjoint from
the held-out ``pydoc_data.topics`` text that the statistics pass uses), local text files, or a
Hugging Face dataset streamed with ``datasets`` (``hf:NAME[:CONFIG]``; its held-out text, for the
statistics pass and core metrics, is a part training never reads: :func:`hf_held_out_texts`,
:func:`local_texts`).

Harvesting runs the model with early exit, drops BOS / special / pad positions, and writes the
activations to a float32 ``.npy`` or a folder of ``.npy`` shards (memory-mapped, with a record of
the model, layer and text they came from: :mod:`jaxsae.train.shards`), from which training batches
are drawn in a seeded shuffled order. A batch is a pure function of (seed, step), so a resumed run sees exactly
the data the uninterrupted run would have, and a sweep can be re-run without the LLM
(``--activations``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
import sysconfig
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from jaxsae.errors import UserError
from jaxsae.io import provenance_hash


def stdlib_docstrings(max_chars: int | None = None) -> list[str]:
    """Module, class and function docstrings of the standard library (sorted files, offline)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    total = 0
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in path.parts[-2:][0] or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 80:
                    docs.append(doc)
                    total += len(doc)
        if max_chars and total >= max_chars:
            break
    if not docs:
        raise UserError("found no standard-library sources for the embedded corpus; pass --text FILES or hf:DATASET")
    return docs


HELD_OUT_SPLITS = ("validation", "test")
"""Splits an ``hf:`` source's held-out text comes from (the first one the dataset has)."""
HELD_OUT_DOCS = 20_000
"""Without such a split: the first this many documents of ``train`` are the held-out text, and
the training stream skips them."""


def _hf_part(splits, held_out: bool):
    """The training (or held-out) part of a dataset's splits, disjoint from each other."""
    if "train" not in splits:
        raise UserError(f"the dataset has no 'train' split (it has {sorted(splits)}); pass a dataset with one")
    held = next((s for s in HELD_OUT_SPLITS if s in splits), None)
    if held_out:
        return splits[held] if held else splits["train"].take(HELD_OUT_DOCS)
    return splits["train"] if held else splits["train"].skip(HELD_OUT_DOCS)


def hf_texts(spec: str, max_docs: int, *, held_out: bool = False) -> Iterator[str]:
    """Stream documents' ``text`` from a Hugging Face dataset ``NAME[:CONFIG]`` (a Hub id or a
    local folder of data files): its training part, or with ``held_out`` the part training never
    reads (its validation / test split, else the first :data:`HELD_OUT_DOCS` of ``train``)."""
    name, _, config = spec.partition(":")
    try:
        import datasets

        ds = _hf_part(datasets.load_dataset(name, config or None, streaming=True), held_out)
        for i, row in enumerate(ds):
            if i >= max_docs:
                break
            yield row.get("text") or ""
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - offline / missing dataset
        raise UserError(f"cannot stream dataset {name!r} ({type(e).__name__}); check the network and name, or use local text") from None


def _hf_until(docs: Iterator[str], max_chars: int) -> list[str]:
    out, total = [], 0
    for t in docs:
        out.append(t)
        total += len(t)
        if total >= max_chars:
            break
    return out


def hf_held_out_texts(source: str) -> Iterator[str]:
    """Held-out documents of an ``hf:NAME[:CONFIG]`` source, disjoint from what training streams
    (see :func:`hf_texts`), lazily: a reader stops once it has packed the tokens it needs."""
    if not source.startswith("hf:"):
        raise UserError(f"held-out text is streamed only from hf:NAME sources, not {source!r}")
    return hf_texts(source[3:], max_docs=10**12, held_out=True)


HELD_OUT_FRACTION = 0.1
"""Local text files: the last this fraction of every document (cut at a whitespace) is the held-out
text, and training reads the rest."""


def split_document(text: str, *, held_out: bool) -> str:
    """The training part of a local document, or with ``held_out`` its last :data:`HELD_OUT_FRACTION`."""
    cut = int(len(text) * (1 - HELD_OUT_FRACTION))
    space = next((i for i in range(cut, len(text)) if text[i].isspace()), len(text))
    return text[space:] if held_out else text[:space]


def local_texts(source: str, *, held_out: bool = False) -> list[str]:
    """Documents of local files ("a.txt,b.jsonl,folder/": a folder gives its .txt files), their
    training parts, or with ``held_out`` the disjoint held-out parts (see :func:`split_document`)."""
    from jaxsae.text import read_texts

    paths: list[Path] = []
    for p in map(Path, source.split(",")):
        found = sorted(p.glob("*.txt")) if p.is_dir() else [p]
        if not found:
            raise UserError(f"data source folder {p} has no .txt files; pass .txt / .jsonl files, a folder of .txt "
                            "files, 'embedded' or 'hf:NAME'")
        paths.extend(found)
    return [split_document(d, held_out=held_out) for d in read_texts(paths)]


def texts_from(source: str, *, max_chars: int) -> list[str]:
    """Training documents for a data-source string ("embedded", "hf:NAME[:CONFIG]", or paths: the
    training part of each local document, see :func:`local_texts`)."""
    if source == "embedded":
        return stdlib_docstrings(max_chars=max_chars)
    if source.startswith("hf:"):
        return _hf_until(hf_texts(source[3:], max_docs=10**12), max_chars)
    return local_texts(source)


def iter_texts(source: str) -> Iterator[str]:
    """Training documents for a data-source string, lazily (for streaming; see :func:`texts_from`)."""
    if source.startswith("hf:"):
        yield from hf_texts(source[3:], max_docs=10**12)
    else:
        yield from texts_from(source, max_chars=10**12)


def model_name(lm) -> str:
    """The name a harvest and its SAEs record for ``lm``."""
    return lm.config.name or lm.source


def harvest_source(lm, layer: int, *, text: str | None, context: int, n_tokens: int) -> dict:
    """The record of what a harvest comes from (see :data:`jaxsae.train.shards.SOURCE_KEYS`)."""
    return {"model_name": model_name(lm), "model_source": lm.source, "hook_layer": int(layer),
            "dataset_path": text, "context_size": int(context), "tokens_requested": int(n_tokens)}


def harvest(lm, layer: int, texts: Sequence[str], n_tokens: int, out_path: Path, *, context: int = 128,
            llm_batch: int = 16, progress: bool = True, text: str | None = None, shard_tokens: int | None = None):
    """Residuals after block ``layer`` for ``n_tokens`` non-special tokens of ``texts`` (fewer when
    the text runs out), written atomically to ``out_path`` with a record of their source (``text``:
    the text source's name): a float32 .npy [n_tokens, D] (+ ``.npy.json``), or with
    ``shard_tokens`` a folder of .npy shards of that many tokens (+ ``index.json``). Returns the
    stored activations, memory-mapped (see :func:`load_activations`)."""
    from numpy.lib.format import open_memmap

    from jaxsae.text import counted_mask, pack_contexts, tokenizer_adds_bos
    from jaxsae.io import atomic_dir, atomic_write_json
    from jaxsae.train.shards import ShardWriter, record, sidecar_path

    if lm.tokenizer is None:
        raise UserError(f"{lm.source} has no tokenizer; harvesting needs one")
    cfg = lm.config
    bos = cfg.bos_id if tokenizer_adds_bos(lm.tokenizer) else None
    sep = cfg.eos_ids[0] if cfg.eos_ids else None
    # ~10% more contexts than needed: special/first positions are dropped
    ctx = pack_contexts(texts, lm.tokenizer, context_len=context, max_tokens=int(n_tokens * 1.15) + context,
                        bos_id=bos, sep_id=sep)
    special = [t for t in (cfg.bos_id, cfg.pad_id, *cfg.eos_ids) if t is not None]
    counted = counted_mask(ctx, special, mask_first=bos is None)
    n = min(n_tokens, int(counted.sum()))
    source = harvest_source(lm, layer, text=text, context=context, n_tokens=n_tokens)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if shard_tokens:
        with atomic_dir(out_path) as tmp:
            sink = ShardWriter(tmp, n, cfg.d_model, shard_tokens)
            _harvest_into(lm, layer, ctx, counted, n, sink.write, llm_batch, progress)
            sink.close(source)
        return load_activations(out_path)
    tmp = out_path.with_name(out_path.name + ".partial.npy")
    arr = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, cfg.d_model))

    def write(start, rows):
        arr[start : start + len(rows)] = rows  # noqa: F821 - bound until the `del` after the harvest

    _harvest_into(lm, layer, ctx, counted, n, write, llm_batch, progress)
    arr.flush()
    del arr
    atomic_write_json(sidecar_path(out_path), record((n, cfg.d_model), source))  # before the array appears
    tmp.replace(out_path)
    return load_activations(out_path)


def _harvest_into(lm, layer, ctx, counted, n, write, llm_batch, progress) -> None:
    """Run the model over the contexts ``ctx`` and ``write(start, rows)`` the first ``n`` counted residuals."""
    filled = 0
    batches = range(0, len(ctx), llm_batch)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"harvest L{layer}", unit="batch", dynamic_ncols=True)
    for s in batches:
        if filled >= n:
            break
        toks = ctx[s : s + llm_batch]
        pad = llm_batch - len(toks)
        if pad:  # fixed shape: one compiled program
            toks = np.concatenate([toks, np.repeat(toks[-1:], pad, axis=0)])
        resid = np.asarray(lm.residual(toks, layer))[: llm_batch - pad]
        keep = resid[counted[s : s + llm_batch]]
        take = min(len(keep), n - filled)
        write(filled, keep[:take])
        filled += take


class ActivationArray:
    """Training batches from a float32 [N, D] array (or a :class:`~jaxsae.train.shards.ShardedActivations`
    folder, read the same way), in a seeded shuffled order per epoch.

    ``batch(step)`` depends only on (seed, step): resuming at any step is exact."""

    def __init__(self, acts_nd: np.ndarray, batch: int, seed: int = 0):
        if acts_nd.ndim != 2:
            raise UserError(f"activations must be a 2-D [n_tokens, d_model] array, got shape {acts_nd.shape}")
        if len(acts_nd) < batch:
            raise UserError(f"only {len(acts_nd)} activations for a batch of {batch}; harvest more tokens or lower the batch")
        self.acts = acts_nd
        self.batch = batch
        self.seed = seed
        self.per_epoch = len(acts_nd) // batch
        self._perm_epoch, self._perm = -1, None

    @property
    def d_in(self) -> int:
        return int(self.acts.shape[1])

    @property
    def n_tokens(self) -> int:
        return int(len(self.acts))

    def fingerprint(self, n_rows: int = 64) -> str:
        """A short hash of the shape and ``n_rows`` evenly spaced rows: tells one activation set
        from another without reading it all."""
        rows = np.unique(np.linspace(0, len(self.acts) - 1, n_rows).astype(np.int64))
        return provenance_hash(list(self.acts.shape), arrays=[np.asarray(self.acts[rows], np.float32)], length=24)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.acts))
            self._perm_epoch = epoch
        return self._perm

    def batch_at(self, step: int, rows: slice | None = None) -> np.ndarray:
        """The batch of ``step``; with ``rows``, only those rows of it (a host reading just the
        part of a global batch that its devices hold)."""
        epoch, i = divmod(step, self.per_epoch)
        idx = np.sort(self._permutation(epoch)[i * self.batch : (i + 1) * self.batch])
        if rows is not None:
            idx = idx[rows]
        return np.asarray(self.acts[idx], np.float32)


def load_activations(path: str | Path):
    """Stored activations, memory-mapped (no pickle): a float32 [n_tokens, d_model] .npy (an
    ``np.ndarray``), or a shard folder (a :class:`~jaxsae.train.shards.ShardedActivations`)."""
    from jaxsae.train.shards import ShardedActivations

    path = Path(path)
    if path.is_dir():
        return ShardedActivations(path)
    if not path.is_file():
        raise UserError(f"activations file {path} does not exist; pass a float32 .npy of shape [n_tokens, d_model] "
                        "or a shard folder")
    try:
        acts = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise UserError(f"{path} is not a plain .npy array ({e}); save activations with numpy.save") from None
    if acts.ndim != 2:
        raise UserError(f"{path} has shape {acts.shape}; activations must be [n_tokens, d_model]")
    if acts.dtype != np.float32:
        raise UserError(f"{path} holds {acts.dtype}; activations must be float32")
    return acts


def norm_scale(acts: ActivationArray, n_batches: int = 100) -> float:
    """One scalar s with E||x / s||^2 = 1, estimated on up to ``n_batches`` batches (dictionary_learning)."""
    sq = [np.mean(np.sum(np.square(acts.batch_at(i)), axis=-1)) for i in range(min(n_batches, acts.per_epoch))]
    bad = [i for i, v in enumerate(sq) if not np.isfinite(v)]
    if bad:
        raise UserError(f"the activations hold NaN or inf values (training batch {bad[0]}); harvest them again or drop those rows")
    return float(np.sqrt(np.mean(sq)))


@dataclass(frozen=True)
class DataConfig:
    """Text the SAEs are trained on (the activation stream); a sweep's ``[data]`` section."""

    source: str = "embedded"
    """"embedded" (Python's shipped documentation, offline), "hf:<dataset>[:<config>]" (streamed
    with `datasets`), or a path to .txt files / a folder of them."""
    context: int = 128
    """Tokens per context when harvesting."""
    llm_batch: int = 8
    """Contexts per LLM forward when harvesting."""
    store_activations: bool = True
    """Harvest the activations once to <out>/<model>/activations.npy and train from that file
    (re-runs need no model); false streams them from the model during training, chunk by chunk,
    for token budgets that do not fit on disk (the full study: 5e8 tokens x d_model floats)."""
    harvest_shards: int = 8
    """When streaming: row blocks per SAE batch, block h of every batch harvested from its own
    contexts, so that each of P processes (P dividing it) runs the model only on the contexts of
    the rows it trains on. The data order depends on this number, not on how many processes run;
    train.batch must be a multiple of it."""

    def __post_init__(self):
        for name in ("context", "llm_batch", "harvest_shards"):
            if getattr(self, name) < 1:
                raise UserError(f"data.{name} must be a positive number, got {getattr(self, name)}; set it to >= 1")
