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
from jaxsae.models.decoder import Edit, forward
from jaxsae.models.generate import generate_tokens


@functools.partial(jax.jit, static_argnames=("cfg", "stop_layer"))
def _forward(params, cfg, tokens_bt, mask_bt, edit, stop_layer):
    return forward(params, cfg, tokens_bt, mask_bt, edit=edit, stop_layer=stop_layer)[0]


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


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
        out, _ = generate_tokens(
            self.params, self.config, jnp.asarray(tokens), jnp.asarray(mask), key,
            jnp.float32(max(temperature, 1e-6)), max_new=int(max_new_tokens), greedy=temperature <= 0.0, edit=steer,
        )
        out = np.asarray(out)
        eos = set(self.config.eos_ids)
        result = []
        for row in out:
            ids = []
            for t in row.tolist():
                if t in eos:
                    break
                ids.append(t)
            result.append(ids)
        return result
