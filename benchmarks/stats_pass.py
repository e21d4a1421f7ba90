"""Statistics pass for the SAEs of one model: one pass for all of them against a pass each.

SmolLM2-135M-Instruct at layer 15 with ``--saes`` random (ReLU) SAEs of width ``--d-sae``, each
calibrated to fire on about 2 % of the tokens, over ``--contexts`` held-out contexts of 128 tokens.
Side by side in one run, each path warmed up first (compiled) and then timed:
  1. ten passes: ``compute_feature_stats`` once per SAE, the model run to the SAE layer in each
     (as the autointerp stage did once the held-out residuals outgrew its in-memory cache);
  2. one pass: ``compute_feature_stats_many`` over all SAEs, the model once per batch and every
     SAE's encoder and statistics update in the same jitted step.
The statistics of both are checked to be identical. Then, as the autointerp stage does when a
model's SAEs need several passes (``--groups`` of them): each pass running the model, against the
model run once into residuals on disk (``residuals_on_disk``) that every pass reads (statistics
checked equal to 1e-5). Prints the times and the one-pass ratio last.

    python benchmarks/stats_pass.py [--saes 10 --d-sae 4608 --contexts 16]
"""

from __future__ import annotations

import sys  # noqa: I001 - first: benchmarks/select.py would shadow the stdlib `select` module
from pathlib import Path as _Path

sys.path[:] = [p for p in sys.path if _Path(p or ".").resolve() != _Path(__file__).resolve().parent]

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import numpy as np

jax.config.update("jax_default_matmul_precision", "float32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saes", type=int, default=10)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--contexts", type=int, default=16)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--groups", type=int, default=3, help="passes the SAEs are split into for the on-disk comparison")
    ap.add_argument("--target", type=float, default=4.0, help="speed-up one pass must reach (exit 1 below it)")
    args = ap.parse_args()

    from jaxsae import features
    from jaxsae.features.compute import compute_feature_stats_many
    from jaxsae.models import load_model
    from jaxsae.sae.random import calibrated_sae

    lm = load_model("smollm2-135m-instruct")
    cfg = features.FeatureStatsConfig(context_len=128, total_tokens=args.contexts * 128, batch_size=8)
    tokens, _ = features.held_out_tokens(lm, cfg)
    saes = [calibrated_sae(lm, args.layer, args.d_sae, tokens[:2], fire=0.02, seed=i) for i in range(args.saes)]
    encs = [features.sae_encoder(s) for s in saes]
    print(f"{args.saes} SAEs x {args.d_sae} latents, {tokens.size} held-out tokens, layer {args.layer}, "
          f"{jax.default_backend()}", flush=True)

    def each():
        return [features.compute_feature_stats(lm, args.layer, e, p, cfg, tokens=tokens) for e, p in encs]

    def one():
        return compute_feature_stats_many(lm, args.layer, encs, cfg, tokens=tokens)

    warm = [each(), one()]  # compile both
    times = {}
    for name, fn in (("a pass per SAE", each), ("one pass", one)):
        t0 = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t0
        print(f"{name:16s} {times[name]:8.2f} s  {args.saes * tokens.size / times[name]:10.0f} SAE-tokens/s", flush=True)
    groups = [encs[g :: args.groups] for g in range(args.groups)]

    def passes_run_the_model():
        return [compute_feature_stats_many(lm, args.layer, g, cfg, tokens=tokens) for g in groups]

    def passes_read_the_disk():
        import tempfile

        from jaxsae.features.compute import residuals_on_disk

        with tempfile.TemporaryDirectory() as tmp:
            resid = residuals_on_disk(lm, args.layer, tokens, _Path(tmp) / "r.bin")
            return [compute_feature_stats_many(lm, args.layer, g, cfg, tokens=tokens, resid_ntd=resid) for g in groups]

    warm_disk = [passes_run_the_model(), passes_read_the_disk()]
    for name, fn in (("model per pass", passes_run_the_model), ("residuals on disk", passes_read_the_disk)):
        t0 = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t0
        print(f"{args.groups} passes, {name:18s} {times[name]:8.2f} s", flush=True)
    disk_ok = all(np.allclose(getattr(a, k), getattr(b, k), rtol=1e-5, atol=1e-6) for ga, gb in zip(*warm_disk)
                  for a, b in zip(ga, gb) for k in ("count", "sum_act", "max_act", "top_val"))
    print(f"{args.groups} passes: residuals on disk {times['model per pass'] / times['residuals on disk']:.2f}x "
          f"faster than the model per pass (statistics equal: {disk_ok})")
    same = all(np.array_equal(getattr(a, k), getattr(b, k)) for a, b in zip(*warm)
               for k in ("count", "sum_act", "max_act", "top_val", "top_pos", "iw_pos", "rand_win"))
    ratio = times["a pass per SAE"] / times["one pass"]
    print(f"statistics identical: {same}")
    print(json.dumps({"saes": args.saes, "d_sae": args.d_sae, "tokens": int(tokens.size),
                      "each_s": round(times["a pass per SAE"], 2), "one_s": round(times["one pass"], 2),
                      "ratio": round(ratio, 2), "identical": same}))
    print(f"one statistics pass for {args.saes} SAEs vs a pass each: {ratio:.2f}x faster (target >= {args.target:g}x)")
    missed = [m for m, bad in ((f"one pass {ratio:.2f}x < {args.target:g}x", ratio < args.target),
                               ("statistics differ from a pass per SAE", not same),
                               ("statistics from residuals on disk differ", not disk_ok)) if bad]
    if missed:
        print("missed: " + "; ".join(missed))
        sys.exit(1)


if __name__ == "__main__":
    main()
