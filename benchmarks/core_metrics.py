"""Core-metrics benchmark on SmolLM2-135M-Instruct (layer 15), side by side in one run:

  1. the previous path (kept as the reference in ``tests/test_sae_metrics.py``): per batch, the
     valid rows picked with a boolean mask (a new shape, so a new compile, whenever their count
     changes), every SAE encoded and decoded through the host, the sums kept in numpy;
  2. ``jaxsae.metrics.core_metrics_many``: masks instead of indexing (one compile), running sums on
     the device, one host transfer at the end.

Calibrated random SAEs (firing ~2%) stand in for trained ones. Each path runs once after a warm-up
call on one batch (so the compiles a path needs for every other count of valid rows are counted,
as the stage pays them); the metrics are checked to agree. Prints the time per path and the ratio
last; exits 1 below ``--target``.

    python benchmarks/core_metrics.py [--saes 10 --d-sae 4608 --contexts 32]
"""

from __future__ import annotations

import sys  # noqa: I001 - first: benchmarks/select.py would shadow the stdlib `select` module
from pathlib import Path as _Path

sys.path[:] = [p for p in sys.path if _Path(p or ".").resolve() != _Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "float32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saes", type=int, default=10)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--contexts", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8, help="contexts per batch")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--target", type=float, default=1.5, help="speed-up the device path must reach (exit 1 below it)")
    args = ap.parse_args()

    sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / "tests"))
    from test_sae_metrics import previous_core_metrics_many  # the reference: the previous implementation

    from jaxsae import features
    from jaxsae.features.compute import special_ids
    from jaxsae.metrics import core_metrics_many
    from jaxsae.models import load_model
    from jaxsae.sae.random import calibrated_sae
    from jaxsae.text import counted_mask

    lm = load_model("smollm2-135m-instruct")
    cfg = features.FeatureStatsConfig(context_len=128, total_tokens=args.contexts * 128, batch_size=args.batch)
    tokens, _ = features.held_out_tokens(lm, cfg)
    counted = counted_mask(tokens, special_ids(lm), mask_first=True)
    saes = [calibrated_sae(lm, args.layer, args.d_sae, tokens[:2], fire=0.02, seed=i) for i in range(args.saes)]
    print(f"{args.saes} SAEs x {args.d_sae} latents, {int(counted.sum())} counted of {tokens.size} tokens, "
          f"batches of {args.batch} contexts, layer {args.layer}, {jax.default_backend()}", flush=True)
    paths = {"previous (host)": previous_core_metrics_many, "device": core_metrics_many}
    times, results = {}, {}
    for name, fn in paths.items():
        fn(lm, saes, args.layer, tokens[: args.batch], counted[: args.batch], batch=args.batch)  # warm: one batch
        t0 = time.perf_counter()
        results[name] = fn(lm, saes, args.layer, tokens, counted, batch=args.batch)
        times[name] = time.perf_counter() - t0
        print(f"{name:16s} {times[name]:8.2f} s", flush=True)
    worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-6) for a, b in zip(*results.values()) for k in a
                if isinstance(a[k], float) and isinstance(b[k], float))
    ratio = times["previous (host)"] / times["device"]
    print(json.dumps({"saes": args.saes, "d_sae": args.d_sae, "tokens": int(tokens.size), "previous_s": round(times["previous (host)"], 2),
                      "device_s": round(times["device"], 2), "ratio": round(ratio, 2), "max_rel_diff": worst}))
    print(f"core metrics on the device vs the previous host path: {ratio:.2f}x faster "
          f"(largest relative difference {worst:.1e}; target >= {args.target:g}x)")
    missed = [m for m, bad in ((f"{ratio:.2f}x < {args.target:g}x", ratio < args.target),
                               (f"metrics differ by {worst:.1e}", worst > 1e-3)) if bad]
    if missed:
        print("missed: " + "; ".join(missed))
        sys.exit(1)


if __name__ == "__main__":
    main()
