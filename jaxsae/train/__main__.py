"""`python -m jaxsae.train`: train a sweep of SAEs together, on pre-computed activations or
harvested from a model.

    python -m jaxsae.train --activations FILE.npy --archs relu,topk,batchtopk,jumprelu,gated \\
        --l0 80,160 --d-sae 4608 --batch 2048 --steps N --out DIR
    python -m jaxsae.train --model smollm2-135m-instruct --layer 15 --tokens 200000 ... --out DIR
    python -m jaxsae.train --activations DIR/activations --model smollm2-135m-instruct --layer 15 ...

Writes one SAELens folder per SAE and DIR/sweep.json (architecture, sparsity, final L0 and FVU
of each, and the effective settings). Re-running the same command resumes from the last checkpoint;
a different sweep, or a cached harvest from another model / layer / text, is refused.
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
    """Pre-computed activations: a float32 .npy of shape [n_tokens, d_model], or a folder of .npy shards (see --shard-tokens)."""
    model: str | None = None
    """Harvest from this model (alias, checkpoint folder, .gguf or Hub id); with --activations, the model they came from (loaded to check their width and name the SAEs' model_name)."""
    layer: int | None = None
    """Residual layer (block output, 0-based) to harvest, or that --activations came from; required with --model."""
    text: str = "embedded"
    """Text to harvest: "embedded" (Python's stdlib docstrings), "hf:NAME[:CONFIG]", or file paths (comma-separated)."""
    tokens: int = 200_000
    """Tokens to harvest with --model (kept in DIR for re-runs; a cache harvested with other settings is refused)."""
    context: int = 128
    """Tokens per context when harvesting."""
    shard_tokens: int | None = None
    """Harvest into a folder DIR/activations/ of .npy shards of this many tokens (plus index.json) instead of one DIR/activations.npy."""
    archs: str = "relu,topk,batchtopk,jumprelu,gated"
    """Comma-separated architectures: relu, topk, batchtopk, jumprelu, gated, matryoshka."""
    l0: str = "80,160"
    """Comma-separated target L0s, one per level (k for the TopK family, target for JumpReLU); ReLU/Gated use the paper's L1 at the same level unless --l1 is given."""
    l1: str | None = None
    """Comma-separated L1 coefficients of ReLU and Gated, one per level of --l0 / --levels (e.g. 0.012,0.02), or each separately: "relu=0.012,0.02;gated=0.012,0.018"; a sweep of only relu/gated takes its levels from here."""
    levels: str | None = None
    """Instead of --l0: comma-separated indices 0..5 of the paper's sparsity levels."""
    d_sae: int = 4608
    """Dictionary width."""
    batch: int = 2048
    """Tokens per step."""
    steps: int = 1000
    """Optimiser steps (short runs scale the recipe's warmups down; the line printed and sweep.json say how)."""
    lr: float = 3e-4
    """Peak learning rate."""
    seed: int = 0
    """Seed of initialisation and data order."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (0: none, so an interrupted run starts again from step 0)."""
    mesh: str = "1x0"
    """Device mesh SWEEPxDATA (0 = all remaining devices), e.g. 2x4 on 8 devices."""
    matmul_dtype: str = "auto"
    """SAE matmul operands: float32, bfloat16 (f32 accumulation, f32 weights) or auto (bf16 on GPU/TPU)."""
    progress: bool = True
    """Show a progress bar with tokens/s."""


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, e.g. {flag} 80,160") from None


def sweep_specs(args: Args):
    """The sweep's SAEs from --archs, --l0 / --levels and --l1."""
    from jaxsae.train.spec import parse_l1, sweep_from_l0, sweep_from_levels

    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    l1 = parse_l1(args.l1) if args.l1 else None
    if args.levels:
        return sweep_from_levels(archs, _ints(args.levels, "--levels"), l1=l1)
    return sweep_from_l0(archs, _ints(args.l0, "--l0"), l1=l1)


def _load_lm(model: str):
    """The model, fetched / cached by process 0 first."""
    import jax

    from jaxsae.distributed import barrier
    from jaxsae.models import load_model

    if jax.process_index() == 0:
        lm = load_model(model)
    barrier("model loaded")
    return load_model(model) if jax.process_index() else lm


def _check_width(path: Path, acts, lm) -> None:
    if int(acts.shape[1]) != lm.config.d_model:
        raise UserError(f"{path} holds activations of width {acts.shape[1]} but {lm.config.name or lm.source} has d_model "
                        f"{lm.config.d_model}; pass activations of that model (or a new --out to harvest them)")


def check_cached(path: Path, want: dict) -> None:
    """Refuse a cached harvest made from another model / layer / text / context / token count
    (the record fields it must share with the run that reuses it)."""
    from jaxsae.train.shards import METADATA_KEYS, read_record

    checked = (*METADATA_KEYS, "tokens_requested")

    rec = read_record(path)
    if rec is None:
        raise UserError(f"{path} has no record of what it was harvested from; delete it to harvest again, "
                        "or pass it as --activations")
    have = rec.get("source") or {}
    diff = [f"{k} {have.get(k)!r} (this run: {want[k]!r})" for k in checked if have.get(k) != want[k]]
    if diff:
        raise UserError(f"{path} was harvested with {', '.join(diff)}; pass a new --out folder, "
                        "or delete it to harvest again")


def cached_path(args: Args) -> Path:
    """DIR's harvest: whichever layout is already there, else the one asked for."""
    for p in (args.out / "activations", args.out / "activations.npy"):
        if p.exists():
            return p
    return args.out / ("activations" if args.shard_tokens else "activations.npy")


def harvested(args: Args, lm):
    """DIR's cached harvest (checked against this run), harvesting it first if absent."""
    import jax

    from jaxsae.distributed import barrier
    from jaxsae.train import harvest, load_activations, texts_from
    from jaxsae.train.data import harvest_source
    from jaxsae.train.shards import METADATA_KEYS

    lm._check_layer(args.layer)
    cached = cached_path(args)
    want = harvest_source(lm, args.layer, text=args.text, context=args.context, n_tokens=args.tokens)
    if cached.exists():
        check_cached(cached, want)
    elif jax.process_index() == 0:
        texts = texts_from(args.text, max_chars=args.tokens * 8)
        harvest(lm, args.layer, texts, args.tokens, cached, context=args.context, progress=args.progress,
                text=args.text, shard_tokens=args.shard_tokens)
    barrier("activations written")
    acts = load_activations(cached)
    _check_width(cached, acts, lm)
    md = {k: want[k] for k in METADATA_KEYS}
    return acts, md


def given(args: Args):
    """--activations, with what their record (and --model / --layer) say they came from."""
    from jaxsae.train import load_activations
    from jaxsae.train.data import model_name
    from jaxsae.train.shards import METADATA_KEYS, read_record

    acts = load_activations(args.activations)
    src = (read_record(args.activations) or {}).get("source") or {}
    md = {k: src[k] for k in METADATA_KEYS if src.get(k) is not None}
    md.setdefault("dataset_path", str(args.activations))
    if args.layer is not None:
        if md.get("hook_layer") not in (None, args.layer):
            raise UserError(f"{args.activations} was harvested at layer {md['hook_layer']}, not --layer {args.layer}; "
                            "drop --layer or pass the right one")
        md["hook_layer"] = args.layer
    if args.model is not None:
        if "hook_layer" not in md:
            raise UserError("--model with --activations needs --layer (the layer they were harvested at)")
        lm = _load_lm(args.model)
        lm._check_layer(md["hook_layer"])
        _check_width(args.activations, acts, lm)
        name = model_name(lm)
        if md.get("model_name") not in (None, name):
            raise UserError(f"{args.activations} was harvested from {md['model_name']}, not {name}; "
                            "drop --model or pass the right one")
        md["model_name"] = name
    return acts, md


def main(args: Args) -> None:
    from jaxsae.distributed import init_distributed

    init_distributed()  # several processes (JAXSAE_NUM_PROCESSES ...): one mesh over all their devices
    import jax

    from jaxsae.train import ActivationArray, TrainSettings, make_mesh, train_sweep

    specs = sweep_specs(args)
    if args.activations is not None:
        acts, metadata = given(args)
    elif args.model is not None:
        if args.layer is None:
            raise UserError("--model needs --layer (the residual block to harvest)")
        acts, metadata = harvested(args, _load_lm(args.model))
    else:
        raise UserError("pass --activations FILE.npy (or a shard folder), or --model SOURCE --layer L to harvest")
    sweep, _, data = args.mesh.partition("x")
    mesh = make_mesh(int(sweep or 1), int(data) if data and int(data) > 0 else None)
    st = TrainSettings(d_sae=args.d_sae, batch=args.batch, steps=args.steps, lr=args.lr, seed=args.seed,
                       checkpoint_every=args.checkpoint_every, matmul_dtype=args.matmul_dtype)
    result = train_sweep(specs, ActivationArray(acts, args.batch, args.seed), st, args.out, mesh=mesh,
                         metadata=metadata, progress=args.progress)
    if jax.process_index() == 0:
        for e in result["saes"]:
            print(f"{e['name']:24s} L0 {e['l0']:8.1f}   FVU {e['fvu']:.4f}")
        print(f"sweep: {args.out / 'sweep.json'}")


if __name__ == "__main__":
    with cli_errors():
        main(tyro.cli(Args, description=__doc__))
