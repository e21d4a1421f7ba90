"""Forward-pass benchmark: jaxsae vs transformers on SmolLM2-135M-Instruct, same inputs, fp32.

Side by side in one run:
  1. residual harvesting tokens/s to a middle layer: jaxsae (early exit) against transformers'
     full forward and against transformers truncated to the same layer;
  2. batched greedy generation new-tokens/s (batch 16, 64 new tokens, end tokens ignored so both
     produce exactly 64) against ``transformers.generate``.
Prints a table and a final JSON line with the ratios. On a GPU it also prints MFU.

    python benchmarks/forward.py [--batch 8 --seq 256 --layer 15 --gen-batch 16 --gen-tokens 64]
"""

from __future__ import annotations

import sys  # noqa: I001 - first: benchmarks/select.py would shadow the stdlib `select` module
from pathlib import Path as _Path

sys.path[:] = [p for p in sys.path if _Path(p or ".").resolve() != _Path(__file__).resolve().parent]

import argparse
import copy
import dataclasses
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_default_matmul_precision", "float32")


def interleaved(fns: dict, repeat: int) -> dict:
    """Minimum wall time of each function over ``repeat`` rounds, after one warm-up call each.

    Contenders are timed in turn within every round (A B C, A B C, ...) so that a burst of load
    on a shared machine hits all of them alike; the minimum is the least-disturbed run."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def peak_flops() -> float | None:
    """Dense bf16 peak of known accelerators (for MFU); None on CPU."""
    kind = jax.devices()[0].device_kind.lower()
    table = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "v5e": 197e12, "v5 lite": 197e12, "v4": 275e12}
    return next((v for k, v in table.items() if k in kind), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8, help="sequences per harvesting batch")
    ap.add_argument("--seq", type=int, default=256, help="tokens per sequence when harvesting")
    ap.add_argument("--layer", type=int, default=15, help="residual layer to harvest (block output)")
    ap.add_argument("--gen-batch", type=int, default=16, help="prompts per generation batch")
    ap.add_argument("--gen-tokens", type=int, default=64, help="new tokens per prompt")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is kept)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    args = ap.parse_args()

    import torch
    import transformers

    from jaxsae.models import config as cfgmod
    from jaxsae.models import hub, load_model
    from jaxsae.models.generate import generate_tokens

    torch.set_num_threads(args.threads)
    lm = load_model("smollm2-135m-instruct")
    path = hub.smollm2_gguf()
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    device = jax.devices()[0]
    tdev = "cuda" if device.platform == "gpu" and torch.cuda.is_available() else "cpu"
    ref.to(tdev)
    rng = np.random.RandomState(0)
    tokens = rng.randint(3, lm.config.vocab_size, size=(args.batch, args.seq)).astype(np.int32)
    n_tok = tokens.size
    rows = []

    # 1. harvesting
    jt = jnp.asarray(tokens)
    tt = torch.tensor(tokens, dtype=torch.long, device=tdev)
    truncated = copy.copy(ref.model)  # shares weights; only its layer list is cut at the layer
    truncated.layers = ref.model.layers[: args.layer + 1]
    with torch.no_grad():
        t = interleaved(
            {
                "jax": lambda: lm.residual(jt, args.layer).block_until_ready(),
                "full": lambda: ref(tt, output_hidden_states=True).hidden_states[args.layer + 1].cpu(),
                "trunc": lambda: truncated(tt).last_hidden_state.cpu(),
            },
            args.repeat,
        )
    t_jax, t_full, t_trunc = t["jax"], t["full"], t["trunc"]
    rows += [
        ("harvest L%d: jaxsae (early exit)" % args.layer, n_tok / t_jax, "tok/s"),
        ("harvest: transformers full forward", n_tok / t_full, "tok/s"),
        ("harvest: transformers truncated", n_tok / t_trunc, "tok/s"),
    ]

    # 2. generation: exactly gen_tokens new tokens for every prompt in both
    prompts = [f"Tell me fact number {i} about the history of science." for i in range(args.gen_batch)]
    ptoks, pmask = lm.encode(prompts, chat=True, multiple=1)
    no_eos = dataclasses.replace(lm.config, eos_ids=())
    key = jax.random.key(0)

    def run_jax():
        out, _ = generate_tokens(lm.params, no_eos, jnp.asarray(ptoks), jnp.asarray(pmask), key, jnp.float32(1.0),
                                 max_new=args.gen_tokens, greedy=True)
        out.block_until_ready()

    pt = torch.tensor(ptoks, dtype=torch.long, device=tdev)
    pm = torch.tensor(pmask.astype(np.int64), device=tdev)

    def run_hf():
        ref.generate(pt, attention_mask=pm, max_new_tokens=args.gen_tokens, min_new_tokens=args.gen_tokens,
                     do_sample=False, pad_token_id=lm.config.pad_id)

    with torch.no_grad():
        t = interleaved({"jax": run_jax, "hf": run_hf}, args.repeat)
    t_gen, t_hf = t["jax"], t["hf"]
    n_new = args.gen_batch * args.gen_tokens
    rows += [
        (f"generate b{args.gen_batch} x{args.gen_tokens}: jaxsae", n_new / t_gen, "new tok/s"),
        ("generate: transformers.generate", n_new / t_hf, "new tok/s"),
    ]

    result = {
        "device": device.device_kind,
        "harvest_tok_s": n_tok / t_jax,
        "harvest_vs_torch_full": t_full / t_jax,
        "harvest_vs_torch_truncated": t_trunc / t_jax,
        "generate_new_tok_s": n_new / t_gen,
        "generate_vs_transformers": t_hf / t_gen,
    }
    peak = peak_flops()
    if peak:
        harvest_flops = cfgmod.flops_per_token(lm.config, n_layers=args.layer + 1, context=args.seq // 2, logits=False)
        result["harvest_mfu_fp32_vs_bf16_peak"] = harvest_flops * n_tok / t_jax / peak
    print(f"\n{'measurement':45s} {'value':>12s}")
    for name, v, unit in rows:
        print(f"{name:45s} {v:12.1f} {unit}")
    print(json.dumps(result))
    print(f"\nharvest ratio vs full torch:      {result['harvest_vs_torch_full']:.2f}x")
    print(f"generation ratio vs transformers: {result['generate_vs_transformers']:.2f}x (target >= 3)")
    print(f"harvest ratio vs truncated torch: {result['harvest_vs_torch_truncated']:.2f}x (target >= 1.0)")
    missed = [m for m, ok in (("generation >= 3x transformers", result["generate_vs_transformers"] >= 3.0),
                              ("harvest >= 1x truncated torch", result["harvest_vs_torch_truncated"] >= 1.0)) if not ok]
    if missed:
        print("missed: " + "; ".join(missed))
        sys.exit(1)


if __name__ == "__main__":
    main()
