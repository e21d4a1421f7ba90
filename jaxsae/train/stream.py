"""Training batches harvested from the model on the fly, for token budgets that do not fit on disk.

The text is packed lazily into contexts (never all in memory) and cut into *chunks* of
``chunk_contexts`` contexts. Each batch is made of ``shards`` row blocks of ``batch / shards`` rows;
block h of a chunk's batches comes from the chunk's contexts h, h + shards, h + 2·shards, ...: their
residuals at the layer (early exit; special, BOS and pad positions dropped) shuffled with a seed of
(seed, chunk, h) — a mixing buffer one chunk wide. How many batches a chunk gives depends only on
its tokens, so the step → chunk map is known without running the model: ``batch_at(step)`` depends
only on (text, seed, shards, step), and a resumed run harvests exactly the batches it would have seen.

The harvest stays on the device: each block's residuals are gathered into their mixed order there
(the permutation, a few integers, is drawn on the host with numpy, so the batches are those the
host-side mixing gave before) and ``batch_at`` returns a device array, so no activation goes to the
host and back between the model and the trainer.

Several processes (``jax.distributed``) each hold some rows of every batch; ``batch_at(step, rows)``
harvests only the blocks covering ``rows``, so each process runs the model on its own contexts and
the harvest is spread over the processes, while the batches stay those of a single-process run with
the same ``shards``.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import UserError


def context_stream(texts: Iterable[str], tokenizer, *, context_len: int, bos_id: int | None,
                   sep_id: int | None, docs_per_call: int = 256) -> Iterator[np.ndarray]:
    """int32[T] contexts packed from documents as they come (same packing as
    :func:`jaxsae.text.pack_contexts`: documents joined by ``sep_id``, ``bos_id`` first)."""
    body = context_len - (bos_id is not None)
    buf: list[int] = []
    docs: list[str] = []

    def drain():
        nonlocal buf
        for ids in tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []:
            buf.extend(ids)
            if sep_id is not None:
                buf.append(sep_id)
        docs.clear()
        while len(buf) >= body:
            ctx, buf = buf[:body], buf[body:]
            yield np.asarray(([bos_id] if bos_id is not None else []) + ctx, np.int32)

    for t in texts:
        docs.append(t)
        if len(docs) >= docs_per_call:
            yield from drain()
    yield from drain()


class ActivationStream:
    """Batches f32[batch, D] of the residual after block ``layer``, harvested chunk by chunk.

    Same interface as :class:`jaxsae.train.data.ActivationArray` (``d_in``, ``per_epoch``,
    ``batch_at(step, rows)``), so :func:`jaxsae.train.train_sweep` takes either; the batches here are
    device arrays (``jax.Array``, immutable), numpy arrays there.
    """

    def __init__(self, lm, layer: int, texts: Callable[[], Iterable[str]], batch: int, steps: int, *,
                 context: int = 128, llm_batch: int = 16, chunk_contexts: int | None = None, seed: int = 0,
                 shards: int = 1):
        from jaxsae.text import tokenizer_adds_bos

        if lm.tokenizer is None:
            raise UserError(f"{lm.source} has no tokenizer; harvesting needs one")
        lm.check_layer(layer)
        if shards < 1 or batch % shards:
            raise UserError(f"the SAE batch ({batch}) must be a multiple of the harvest shards ({shards}); change one of them")
        cfg = lm.config
        self.lm, self.layer, self.texts, self.batch, self.seed = lm, layer, texts, batch, seed
        self.shards, self.block = shards, batch // shards
        self.per_epoch = int(steps)
        self.context, self.llm_batch = context, llm_batch
        # ~64 batches per chunk by default (the mixing buffer), and at least one context per block
        self.chunk_contexts = max(shards, chunk_contexts or -(-64 * batch // max(1, context - 1)))
        self.bos = cfg.bos_id if tokenizer_adds_bos(lm.tokenizer) else None
        self.sep = cfg.eos_ids[0] if cfg.eos_ids else None
        self.special = sorted({t for t in (cfg.bos_id, cfg.pad_id, *cfg.eos_ids) if t is not None})
        self._ctx_iter: Iterator[np.ndarray] | None = None
        self._next_chunk = 0  # the chunk the context iterator yields next
        self._counts: list[int] = []  # batches per chunk, for chunks tokenized so far
        self._tokens: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # chunk -> (tokens, counted), small LRU
        self._acts: dict[tuple[int, int], jax.Array] = {}  # (chunk, block) -> f32[M, block, D] on the device

    @property
    def d_in(self) -> int:
        return int(self.lm.config.d_model)

    # ------------------------------------------------------------------------- tokens only

    def _tokenize_chunk(self) -> tuple[np.ndarray, np.ndarray]:
        from jaxsae.text import counted_mask

        if self._ctx_iter is None:
            self._ctx_iter = context_stream(self.texts(), self.lm.tokenizer, context_len=self.context,
                                            bos_id=self.bos, sep_id=self.sep)
            self._next_chunk = 0
        rows = [c for _, c in zip(range(self.chunk_contexts), self._ctx_iter)]
        if len(rows) < self.chunk_contexts:
            raise UserError(
                f"the training text ran out after {sum(self._counts)} batches of {self.batch} tokens, before the "
                f"{self.per_epoch} steps asked for; give more text or lower train.tokens"
            )
        tokens = np.stack(rows)
        counted = counted_mask(tokens, self.special, mask_first=self.bos is None)
        k = self._next_chunk
        self._next_chunk += 1
        if k == len(self._counts):
            per_block = [int(counted[h :: self.shards].sum()) // self.block for h in range(self.shards)]
            self._counts.append(min(per_block))
            if self._counts[-1] == 0:
                raise UserError(f"a chunk of {self.chunk_contexts} contexts holds fewer than {self.batch} tokens; raise chunk_contexts")
        return tokens, counted

    def _chunk_tokens(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k in self._tokens:
            return self._tokens[k]
        if self._ctx_iter is None or self._next_chunk > k:  # going back: restart the text
            self._ctx_iter = None
        while True:
            tc = self._tokenize_chunk()
            if self._next_chunk - 1 == k:
                self._tokens = {kk: v for kk, v in self._tokens.items() if kk >= k - 1}
                self._tokens[k] = tc
                return tc

    def _locate(self, step: int) -> tuple[int, int]:
        """(chunk, batch within it) of ``step`` (within an epoch)."""
        k, start = 0, 0
        while True:
            while k >= len(self._counts):
                self._chunk_tokens(len(self._counts))
            if step < start + self._counts[k]:
                return k, step - start
            start += self._counts[k]
            k += 1

    # ----------------------------------------------------------------------------- harvest

    def _block_acts(self, k: int, h: int) -> jax.Array:
        """f32[M, block, D] on the device: row block ``h`` of every batch of chunk ``k`` (batches
        ``M > self._counts[k]``, if any, are padding and never read; M depends only on the block's
        number of contexts, so a compiled gather serves every chunk)."""
        if (k, h) in self._acts:
            return self._acts[(k, h)]
        tokens, counted = self._chunk_tokens(k)
        tokens, counted = tokens[h :: self.shards], counted[h :: self.shards]
        self._acts = {kh: a for kh, a in self._acts.items() if kh[0] == k}  # one chunk's blocks at a time
        parts = tuple(self.lm.residual(tokens[s : s + self.llm_batch], self.layer)
                      for s in range(0, len(tokens), self.llm_batch))  # f32[b, T, D] each, on the device
        kept = np.flatnonzero(counted.ravel())  # the counted positions, contexts in order
        n = self._counts[k] * self.block
        perm = np.random.default_rng([self.seed, k, h]).permutation(len(kept))[:n]
        m = counted.size // self.block  # >= self._counts[k]
        idx = np.zeros(m * self.block, np.int32)
        idx[:n] = kept[perm]
        # finished before it is used: see train_sweep's prefetch thread
        self._acts[(k, h)] = _mixed(parts, jnp.asarray(idx), m).block_until_ready()
        return self._acts[(k, h)]

    def batch_at(self, step: int, rows: slice | None = None) -> jax.Array:
        """f32[batch, D] on the device: the batch of ``step``; with ``rows``, only those rows of it
        (harvesting only the row blocks that cover them)."""
        k, i = self._locate(step % self.per_epoch)
        start, stop, _ = (rows or slice(None)).indices(self.batch)
        first, last = start // self.block, max(start, stop - 1) // self.block
        blocks = [_batch(self._block_acts(k, h), i) for h in range(first, last + 1)]
        out = blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks)
        return out[start - first * self.block : stop - first * self.block].block_until_ready()


@jax.jit
def _batch(acts_mbd: jax.Array, i) -> jax.Array:
    """f32[block, D]: batch ``i`` of a block's batches (a traced index: one program for every i)."""
    return jax.lax.dynamic_index_in_dim(acts_mbd, i, keepdims=False)


@functools.partial(jax.jit, static_argnums=2)
def _mixed(parts_btd: tuple[jax.Array, ...], idx_n: jax.Array, m: int) -> jax.Array:
    """f32[m, N / m, D]: rows ``idx_n`` of the residuals ``parts_btd`` (f32[b, T, D] each, their
    [b·T] positions concatenated in order), gathered on the device."""
    flat = jnp.concatenate([p.reshape(-1, p.shape[-1]) for p in parts_btd])
    return jnp.take(flat, idx_n, axis=0).astype(jnp.float32).reshape(m, -1, flat.shape[-1])
