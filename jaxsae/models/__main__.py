"""`python -m jaxsae.models`: load a model, generate from a few prompts, print residual norms.

A quick check that a checkpoint loads and behaves: it prints the config, greedy continuations of
the prompts (chat template applied), and the mean L2 norm of the residual stream after block
``--layer`` (BOS/special positions excluded) for each prompt.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tyro

from jaxsae.errors import cli_errors


@dataclasses.dataclass
class Args:
    model: str = "smollm2-135m-instruct"
    """Model: the embedded alias, a checkpoint folder, a .gguf file or a Hub id."""
    layer: int | None = None
    """Residual layer to report (0-based block output); default: the middle block."""
    prompts: tuple[str, ...] = (
        "Write one sentence about the sea.",
        "What is a sparse autoencoder?",
        "Give me a tip for learning to cook.",
    )
    """Prompts to continue."""
    max_new_tokens: int = 40
    """New tokens per prompt (greedy)."""


def main(args: Args) -> None:
    from jaxsae.models import config as cfgmod
    from jaxsae.models import load_model

    t0 = time.time()
    lm = load_model(args.model)
    print(f"loaded {cfgmod.describe(lm.config)} in {time.time() - t0:.1f}s")
    layer = lm.config.n_layers // 2 if args.layer is None else args.layer
    t0 = time.time()
    outs = lm.generate(list(args.prompts), max_new_tokens=args.max_new_tokens)
    print(f"generated {len(outs)} x {args.max_new_tokens} tokens in {time.time() - t0:.1f}s")
    tokens, mask = lm.encode(list(args.prompts), chat=True)
    special = np.isin(tokens, [t for t in (lm.config.bos_id, *lm.config.eos_ids) if t is not None])
    resid = np.asarray(lm.residual(tokens, layer, mask))
    norms = np.linalg.norm(resid, axis=-1)
    for p, o, n, m in zip(args.prompts, outs, norms, mask & ~special):
        print(f"\n> {p}\n{o.strip()}\n[layer {layer} residual: mean norm {n[m].mean():.2f} over {m.sum()} tokens]")


if __name__ == "__main__":
    with cli_errors():
        main(tyro.cli(Args, description=__doc__))
