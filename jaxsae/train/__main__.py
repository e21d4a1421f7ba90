"""`python -m jaxsae.train`: train a sweep of SAEs together, on pre-computed activations or
harvested from a model.

    python -m jaxsae.train --activations FILE.npy --archs relu,topk,batchtopk,jumprelu,gated \\
        --l0 80,160 --d-sae 4608 --batch 2048 --steps N --out DIR
    python -m jaxsae.train --model smollm2-135m-instruct --layer 15 --tokens 200000 ... --out DIR

Writes one SAELens folder per SAE and DIR/sweep.json (architecture, sparsity, final L0 and FVU
of each). Re-running the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from jaxsae.errors import UserError, cli_errors


@dataclasses.dataclass
class Args:
    out: Path
    """Output folder of the sweep (re-run with the same folder to resume)."""
    activations: Path | None = None
    """Pre-computed activations: a float32 .npy of shape [n_tokens, d_model]."""
    model: str | None = None
    """Harvest from this model instead (alias, checkpoint folder, .gguf or Hub id)."""
    layer: int | None = None
    """Residual layer to harvest (block output, 0-based); required with --model."""
    text: str = "embedded"
    """Text to harvest: "embedded" (Python's stdlib docstrings), "hf:NAME[:CONFIG]", or file paths (comma-separated)."""
    tokens: int = 200_000
    """Tokens to harvest with --model (saved as DIR/activations.npy for re-runs)."""
    context: int = 128
    """Tokens per context when harvesting."""
    archs: str = "relu,topk,batchtopk,jumprelu,gated"
    """Comma-separated architectures: relu, topk, batchtopk, jumprelu, gated, matryoshka."""
    l0: str = "80,160"
    """Comma-separated target L0s (k for TopK family, target for JumpReLU); ReLU/Gated use the paper's L1 at the same level."""
    levels: str | None = None
    """Instead of --l0: comma-separated indices 0..5 of the paper's sparsity levels."""
    d_sae: int = 4608
    """Dictionary width."""
    batch: int = 2048
    """Tokens per step."""
    steps: int = 1000
    """Optimiser steps."""
    lr: float = 3e-4
    """Peak learning rate."""
    seed: int = 0
    """Seed of initialisation and data order."""
    checkpoint_every: int = 1000
    """Steps between checkpoints."""
    mesh: str = "1x0"
    """Device mesh SWEEPxDATA (0 = all remaining devices), e.g. 2x4 on 8 devices."""
    progress: bool = True
    """Show a progress bar with tokens/s."""


def main(args: Args) -> None:
    from jaxsae.distributed import barrier, init_distributed

    init_distributed()  # several processes (JAXSAE_NUM_PROCESSES ...): one mesh over all their devices
    import jax

    from jaxsae.train import ActivationArray, TrainSettings, harvest, load_activations, make_mesh, texts_from, train_sweep
    from jaxsae.train.spec import sweep_from_l0, sweep_from_levels

    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    try:
        specs = (sweep_from_levels(archs, [int(v) for v in args.levels.split(",")]) if args.levels
                 else sweep_from_l0(archs, [int(v) for v in args.l0.split(",")]))
    except ValueError:
        raise UserError("--l0 and --levels take comma-separated integers, e.g. --l0 80,160") from None
    metadata = {}
    if args.activations is not None:
        acts = load_activations(args.activations)
        metadata["dataset_path"] = str(args.activations)
    elif args.model is not None:
        from jaxsae.models import load_model

        if args.layer is None:
            raise UserError("--model needs --layer (the residual block to harvest)")
        if jax.process_index() == 0:  # fetches / caches the model once
            lm = load_model(args.model)
        barrier("model loaded")
        lm = load_model(args.model) if jax.process_index() else lm
        lm._check_layer(args.layer)
        cached = args.out / "activations.npy"
        if jax.process_index() == 0 and not cached.exists():
            texts = texts_from(args.text, max_chars=args.tokens * 8)
            harvest(lm, args.layer, texts, args.tokens, cached, context=args.context, progress=args.progress)
        barrier("activations written")
        acts = load_activations(cached)
        metadata.update(model_name=lm.config.name or args.model, hook_layer=args.layer, context_size=args.context,
                        dataset_path=args.text)
    else:
        raise UserError("pass --activations FILE.npy, or --model SOURCE --layer L to harvest")
    sweep, _, data = args.mesh.partition("x")
    mesh = make_mesh(int(sweep or 1), int(data) if data and int(data) > 0 else None)
    st = TrainSettings(d_sae=args.d_sae, batch=args.batch, steps=args.steps, lr=args.lr, seed=args.seed,
                       checkpoint_every=args.checkpoint_every)
    result = train_sweep(specs, ActivationArray(acts, args.batch, args.seed), st, args.out, mesh=mesh,
                         metadata=metadata, progress=args.progress)
    if jax.process_index() == 0:
        for e in result["saes"]:
            print(f"{e['name']:24s} L0 {e['l0']:8.1f}   FVU {e['fvu']:.4f}")
        print(f"sweep: {args.out / 'sweep.json'}")


if __name__ == "__main__":
    with cli_errors():
        main(tyro.cli(Args, description=__doc__))
