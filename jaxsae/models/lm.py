"""LM: a loaded model (config, params, tokenizer) with jitted logits / residual / generate."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import UserError
from jaxsae.models.config import ModelConfig
from jaxsae.models.decoder import Edit, KVCache, forward
from jaxsae.models.generate import generate_tokens, prefix_fits_windows
from jaxsae.models.score import logprobs_plain, logprobs_prefixed, prefix_cache


@functools.partial(jax.jit, static_argnames=("cfg", "stop_layer"))
def _forward(params, cfg, tokens_bt, mask_bt, edit, stop_layer):
    return forward(params, cfg, tokens_bt, mask_bt, edit=edit, stop_layer=stop_layer)[0]


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def distinct_prompts(tokens_bt: np.ndarray, mask_bt: np.ndarray):
    """(tokens int32[U, T], mask bool[U, T], rows int32[B]) when B left-padded prompts repeat:
    row b's prompt is row ``rows[b]`` of the U distinct ones (padded with repeats to a power of
    two, so that few shapes are compiled). None when that is more than half of B (too little to
    share)."""
    B = len(tokens_bt)
    both = np.concatenate([tokens_bt, mask_bt.astype(tokens_bt.dtype)], axis=1)
    _, first, rows = np.unique(both, axis=0, return_index=True, return_inverse=True)
    U = 1 << (len(first) - 1).bit_length()
    if 2 * U > B:
        return None
    pick = np.concatenate([first, np.full(U - len(first), first[-1])])
    return tokens_bt[pick], mask_bt[pick], rows.reshape(-1).astype(np.int32)


def length_batches(lengths: Sequence[int], size: int) -> tuple[int, list[np.ndarray]]:
    """(B, index batches): the items sorted by length (so padding stays small) in batches of B =
    ``size``, or the power of two that holds them all when fewer (so a few items are not padded
    to a large batch, and few shapes get compiled)."""
    B = min(max(1, size), 1 << max(0, len(lengths) - 1).bit_length())
    order = np.argsort(np.asarray(lengths), kind="stable")
    return B, [order[i : i + B] for i in range(0, len(order), B)]


MIN_SHARED = 16
"""Fewer shared leading tokens than this are not worth a prefix pass."""


def shared_length(ids: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row of ``ids`` has in common, leaving each row at least one
    token of its own."""
    if not ids:
        return 0
    n = min(len(x) for x in ids) - 1
    first = ids[0]
    for x in ids[1:]:
        n = next((i for i in range(n) if x[i] != first[i]), n)
    return max(n, 0)


def even_batch(n: int, size: int) -> int:
    """The batch size that runs ``n`` rows in as few batches of at most ``size`` rows as possible,
    all of about the same size: ceil(n / ceil(n / size)). Five rows with ``size`` 8 run as one
    batch of 5, not of 8 (three rows of repeats); 14 rows as one of 14, not 16; 20 as 7 + 7 + 6.
    Any size up to ``size`` can come out (not only powers of two), so callers whose row counts vary
    compile one program per count."""
    n, size = max(1, int(n)), max(1, int(size))
    return -(-n // -(-n // size))


def _right_pad(rows: Sequence[Sequence[int]], pad_id: int, multiple: int):
    """(tokens int32[B, T], mask bool[B, T], last int32[B]): rows at the left, T a multiple."""
    T = round_up(max(len(r) for r in rows), multiple)
    tokens = np.full((len(rows), T), pad_id, np.int32)
    mask = np.zeros((len(rows), T), bool)
    for b, r in enumerate(rows):
        tokens[b, : len(r)] = r
        mask[b, : len(r)] = True
    return tokens, mask, np.array([len(r) - 1 for r in rows], np.int32)


@dataclasses.dataclass
class LM:
    """A language model ready for harvesting, steering and generation."""

    config: ModelConfig
    """The checkpoint's architecture (n_layers, d_model, vocab_size, ...)."""
    params: Any
    """Params pytree (see :mod:`jaxsae.models.decoder`)."""
    tokenizer: Any = None
    """The checkpoint's transformers tokenizer, or None when the folder ships none."""
    mesh: jax.sharding.Mesh | None = None
    """Mesh the weights are placed on (None: default device)."""
    source: str = ""
    """Where the model was loaded from."""

    # ------------------------------------------------------------------------ numeric entry points

    def check_layer(self, layer: int) -> int:
        """``layer`` as an int when it is one of the model's blocks (0 .. n_layers - 1), else a
        one-line error naming the range."""
        if not 0 <= layer < self.config.n_layers:
            raise UserError(
                f"layer {layer} is out of range for {self.config.name or self.config.family} "
                f"({self.config.n_layers} layers: use 0..{self.config.n_layers - 1})"
            )
        return int(layer)

    def logits(self, tokens_bt, mask_bt=None, edit: Edit | None = None) -> jax.Array:
        """int[B, T] (bool[B, T] valid mask, left padding) -> float32 logits [B, T, V]."""
        tokens_bt = jnp.asarray(tokens_bt, jnp.int32)
        mask_bt = jnp.ones(tokens_bt.shape, bool) if mask_bt is None else jnp.asarray(mask_bt, bool)
        return _forward(self.params, self.config, tokens_bt, mask_bt, edit, None)

    def residual(self, tokens_bt, layer: int, mask_bt=None, edit: Edit | None = None) -> jax.Array:
        """float32 [B, T, D]: output of block ``layer`` (== HF ``hidden_states[layer + 1]``).

        Early exit: blocks above ``layer`` and the unembedding are not run."""
        layer = self.check_layer(layer)
        tokens_bt = jnp.asarray(tokens_bt, jnp.int32)
        mask_bt = jnp.ones(tokens_bt.shape, bool) if mask_bt is None else jnp.asarray(mask_bt, bool)
        return _forward(self.params, self.config, tokens_bt, mask_bt, edit, layer)

    def prefix(self, ids: Sequence[int], *, multiple: int = 64) -> KVCache:
        """Keys/values of a prompt prefix that many rows continue (a batch-1 :class:`KVCache`),
        left-padded to a multiple of ``multiple`` tokens so that prefixes of similar length share
        one compiled program. Pass it to :meth:`next_token_logprobs`."""
        tokens, mask = self.pad([list(ids)], multiple=multiple)
        return prefix_cache(self.params, self.config, jnp.asarray(tokens), jnp.asarray(mask))

    def next_token_logprobs(self, ids: Sequence[Sequence[int]], token_ids: Sequence[int], *,
                            prefix: KVCache | None = None, batch: int = 8, multiple: int = 32) -> np.ndarray:
        """f32[N, C]: log p(``token_ids[c]``) for the token that follows each of the N rows of
        ``ids`` (token-id lists). With ``prefix`` (from :meth:`prefix`), each row holds only the
        tokens after that prefix, whose keys/values every batch attends to without recomputing
        or copying them.

        Rows run sorted by length in right-padded batches of ``batch`` rows (the power of two
        that holds them when fewer; a short batch is filled with repeats) and lengths rounded up
        to ``multiple``, so few shapes get compiled; only each row's last position is unembedded.
        """
        ids = [list(x) for x in ids]
        cand_c = jnp.asarray(token_ids, jnp.int32)
        out = np.zeros((len(ids), len(token_ids)), np.float32)
        if not ids:
            return out
        if min(len(x) for x in ids) == 0:
            raise ValueError("next_token_logprobs needs at least one token per row")
        before = 0 if prefix is None else int(np.asarray(prefix.valid_bs).sum())  # real tokens, not padded slots
        if before + max(len(x) for x in ids) > self.config.max_positions:
            raise UserError(f"a prompt of {before + max(len(x) for x in ids)} tokens exceeds the model's context of "
                            f"{self.config.max_positions}; shorten it or use a longer-context model")
        B, batches = length_batches([len(x) for x in ids], batch)
        for idx in batches:
            rows = [ids[i] for i in idx]
            rows += [rows[-1]] * (B - len(rows))
            tokens, mask, last = (jnp.asarray(a) for a in _right_pad(rows, self.config.pad_id, multiple))
            if prefix is None:
                lp = logprobs_plain(self.params, self.config, tokens, mask, last, cand_c)
            else:
                lp = logprobs_prefixed(self.params, self.config, prefix, tokens, mask, last, cand_c)
            out[idx] = np.asarray(lp)[: len(idx)]
        return out

    # ------------------------------------------------------------------------------------ text

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise UserError(f"{self.source} has no tokenizer files; add tokenizer.json to the checkpoint folder")
        return self.tokenizer

    def token_ids(self, text: str, *, chat: bool = False) -> list[int]:
        """Token ids of one prompt; with ``chat`` the tokenizer's chat template wraps it as a user turn."""
        tok = self._need_tokenizer()
        if chat:
            if not getattr(tok, "chat_template", None):
                raise UserError(f"{self.source}'s tokenizer has no chat template; use chat=False")
            text = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(text)["input_ids"])

    def encode(self, texts: Sequence[str], *, chat: bool = False, multiple: int = 16):
        """Left-padded batch: (tokens int32[B, T], mask bool[B, T]); T rounded up to ``multiple``
        so that similar lengths share one compiled program."""
        ids = [self.token_ids(t, chat=chat) for t in texts]
        return self.pad(ids, multiple=multiple)

    def pad(self, ids: Sequence[Sequence[int]], *, multiple: int = 16):
        T = round_up(max(len(x) for x in ids), multiple)
        tokens = np.full((len(ids), T), self.config.pad_id, np.int32)
        mask = np.zeros((len(ids), T), bool)
        for b, x in enumerate(ids):
            if len(x):
                tokens[b, T - len(x) :] = x
                mask[b, T - len(x) :] = True
        return tokens, mask

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        chat: bool = True,
        steer: Edit | None = None,
        seed: int | Sequence[int] = 0,
    ) -> list[str]:
        """Continue each prompt; greedy at temperature 0. ``steer`` edits the residual stream at
        every prompt position and every decode step. ``seed``: one seed for the batch, or one per
        prompt (a row's sample then does not depend on the other rows). Returns the decoded new
        text per prompt."""
        tok = self._need_tokenizer()
        new = self.generate_ids(prompts, max_new_tokens=max_new_tokens, temperature=temperature, chat=chat, steer=steer, seed=seed)
        return [tok.decode(x, skip_special_tokens=True) for x in new]

    def generate_ids(self, prompts, *, max_new_tokens=64, temperature=0.0, chat=True, steer=None, seed=0) -> list[list[int]]:
        """As :meth:`generate`, returning the new token ids (up to and excluding the end token)."""
        args, kwargs = self._generate_call(prompts, max_new_tokens, temperature, chat, steer, seed)
        out, _ = generate_tokens(*args, **kwargs)
        return self._until_end(out)

    def compile_generate(self, prompts, *, max_new_tokens=64, temperature=0.0, chat=True, steer=None, seed=0) -> None:
        """Compile, without running it, the program :meth:`generate_ids` runs for these arguments,
        so that the call then starts at once (e.g. from a background thread while another batch
        generates). The program depends on the batch size, the prompts' padded length, whether
        repeated prompts are shared (and how many distinct ones that leaves), ``max_new_tokens``,
        greedy or sampled, one seed or one per row, and the edit's layer, function and shapes; not
        on the seeds' or the edit's values. JAX keeps it: compiling it again costs only the
        tokenizing and tracing. Safe beside other threads using this LM: the tokenizer is only read
        (no truncation or padding settings are ever changed)."""
        args, kwargs = self._generate_call(prompts, max_new_tokens, temperature, chat, steer, seed)
        generate_tokens.lower(*args, **kwargs).compile()

    def _generate_call(self, prompts, max_new_tokens, temperature, chat, steer, seed) -> tuple[tuple, dict]:
        """The arguments of the ``generate_tokens`` call that generates ``prompts``."""
        if steer is not None:
            self.check_layer(steer.layer)
        tokens, mask = self.encode(prompts, chat=chat)
        if tokens.shape[1] + max_new_tokens > self.config.max_positions:
            raise UserError(
                f"prompt ({tokens.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                f"context of {self.config.max_positions}; shorten the prompt or lower max_new_tokens"
            )
        if np.ndim(seed):
            if len(seed) != len(prompts):
                raise ValueError(f"{len(seed)} seeds for {len(prompts)} prompts")
            key = jax.vmap(jax.random.key)(jnp.asarray(np.asarray(seed, np.int64) % (1 << 32), jnp.uint32))
        else:
            key = jax.random.key(seed)
        rows = None
        shared = distinct_prompts(tokens, mask)
        if shared is not None:  # prompts repeat (e.g. one instruction at several steering factors)
            tokens, mask, rows = shared
        args = (self.params, self.config, jnp.asarray(tokens), jnp.asarray(mask), key, jnp.float32(max(temperature, 1e-6)))
        return args, dict(max_new=int(max_new_tokens), greedy=temperature <= 0.0, edit=steer,
                          rows_b=None if rows is None else jnp.asarray(rows))

    def complete_ids(self, ids: Sequence[Sequence[int]], *, max_new_tokens: int, batch: int = 8,
                     multiple: int = 64, share_prefix: bool = False) -> list[list[int]]:
        """Greedy continuations of token-id prompts (new ids up to and excluding the end token),
        run sorted by length in left-padded batches of ``batch`` rows (the power of two that holds
        them when fewer; a short batch filled with repeats) with lengths rounded up to
        ``multiple``, so few shapes get compiled. Row by row the same as :meth:`generate_ids` (up to
        float rounding, which can flip a greedy near-tie).

        ``share_prefix``: the tokens every prompt starts with (:func:`shared_length`, at least
        :data:`MIN_SHARED`) run through the model once (:meth:`prefix`) and every batch continues
        their keys/values, e.g. the instructions and examples all explanation prompts share;
        skipped where a sliding-window layer could not span prefix, padding and continuation."""
        ids = [list(x) for x in ids]
        out: list[list[int]] = [[] for _ in ids]
        if not ids:
            return out
        n = shared_length(ids) if share_prefix else 0
        prefix = None
        if n >= MIN_SHARED:
            slots = round_up(n, 64) + round_up(max(len(x) - n for x in ids), multiple) + max_new_tokens
            if prefix_fits_windows(self.config, slots):
                prefix = self.prefix(ids[0][:n], multiple=64)
                ids = [x[n:] for x in ids]
        if prefix is None:
            n = 0  # the prompts run whole
        B, batches = length_batches([len(x) for x in ids], batch)
        for idx in batches:
            rows = [ids[i] for i in idx]
            tokens, mask = self.pad(rows + [rows[-1]] * (B - len(rows)), multiple=multiple)
            if n + tokens.shape[1] + max_new_tokens > self.config.max_positions:
                raise UserError(f"prompts of {n + tokens.shape[1]} tokens + {max_new_tokens} new exceed the model's "
                                f"context of {self.config.max_positions}; shorten them or use a longer-context model")
            new, _ = generate_tokens(self.params, self.config, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(0),
                                     jnp.float32(1e-6), max_new=int(max_new_tokens), greedy=True, prefix=prefix)
            for i, row in zip(idx, self._until_end(new)):
                out[i] = row
        return out

    def _until_end(self, new_bn) -> list[list[int]]:
        """Each row of new token ids int32[B, max_new] up to (excluding) its first end token."""
        eos = set(self.config.eos_ids)
        result = []
        for row in np.asarray(new_bn).tolist():
            keep = []
            for t in row:
                if t in eos:
                    break
                keep.append(t)
            result.append(keep)
        return result
