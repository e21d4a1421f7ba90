"""Steer-stage benchmark on SmolLM2-135M-Instruct (layer 15).

Side by side in one run, at equal work (every SAE × concept × (dev instruction × factor + test
instruction) generation, each judged on the three criteria):
  1. the per-concept loop the steer stage used to run: per concept ``steer_concept`` (one
     ``generate`` of the dev rows, judge them, one ``generate`` of the test rows, judge them);
  2. the batched stage path, ``run_utility_many`` over all SAEs: every dev row of every concept in
     batches of ``--batch`` rows, judged per batch, then every test row likewise.

Judge (``--judge``): ``instant`` (default) rates from the text at no cost, standing in for an API
judge whose latency the batched path overlaps with generation: the timings are then the device's
work, generation, which is what batching changes; ``local`` judges with SmolLM2 itself, as the
demo does (on a CPU its forward passes are compute-bound, so batching them saves little, and they
cost about three times the generation: expect a smaller ratio).

Random decoder directions stand in for trained SAEs (steering only reads W_dec and m_f); the
demo's protocol by default (2 factors, 4 instructions: 4 dev + 2 test rows per concept, 16 new
tokens, temperature 1). Each path runs once end to end, compiles included (as the stage pays them),
and the batched path once more, its programs compiled (it compiles in a background thread while it
generates, so its compile time overlaps its wall time); the time JAX spent compiling is also
reported, and the batched run is checked to give the same records as the loop. Prints generated
tokens/s and wall time per path, and the ratio last; exits 1 below ``--target`` (5x).

    python benchmarks/steer.py [--saes 2 --concepts 16 --batch 64 --max-new 16]
"""

from __future__ import annotations

import sys  # noqa: I001 - first: benchmarks/select.py would shadow the stdlib `select` module
from pathlib import Path as _Path

sys.path[:] = [p for p in sys.path if _Path(p or ".").resolve() != _Path(__file__).resolve().parent]

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_default_matmul_precision", "float32")

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_s = [0.0]


def _on_event(event: str, duration: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        _compile_s[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_event)

WORDS = ("the ocean", "cooking", "music", "numbers", "rain", "cats", "space travel", "medicine", "football",
         "money", "trees", "computers", "fire", "history", "love", "mountains")


def random_sae(d_in: int, d_sae: int, seed: int):
    import jaxsae.sae as S

    w = np.random.default_rng(seed).normal(size=(d_sae, d_in)).astype(np.float32)
    cfg = S.make_cfg("standard", d_in, d_sae, apply_b_dec_to_input=False, metadata={"hook_layer": 15})
    params = {"W_enc": jnp.asarray(w.T.copy()), "b_enc": jnp.zeros(d_sae, jnp.float32), "W_dec": jnp.asarray(w),
              "b_dec": jnp.zeros(d_in, jnp.float32)}
    return S.SAE(cfg=cfg, params=params)


def instant_judge():
    """Ratings from the text alone (no model, no latency): an API judge whose time is overlapped."""
    from jaxsae.judge import Judge, Rating

    class InstantJudge(Judge):
        def rate(self, items):
            return [Rating(score=float((len(r.fragment) + len(r.criterion)) % 3), argmax=float((len(r.fragment) + len(r.criterion)) % 3),
                           ok=True) for r in items]

    return InstantJudge()


def n_tokens(lm, recs) -> int:
    """Generated tokens (the outputs re-tokenised) over every record."""
    tok = lm.tokenizer
    return sum(len(tok(g["output"], add_special_tokens=False)["input_ids"]) for r in recs for g in r["generations"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saes", type=int, default=2)
    ap.add_argument("--concepts", type=int, default=16, help="concepts per SAE")
    ap.add_argument("--factors", type=float, nargs="+", default=[0.8, 2.0], help="the demo's factor grid")
    ap.add_argument("--instructions", type=int, default=4, help="instructions per concept (half dev, half test)")
    ap.add_argument("--max-new", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=0, help="rows per batch (0: the stage's default for this device)")
    ap.add_argument("--d-sae", type=int, default=1152)
    ap.add_argument("--judge", choices=("instant", "local"), default="instant")
    ap.add_argument("--target", type=float, default=5.0, help="speed-up the batched stage must reach (exit 1 below it)")
    args = ap.parse_args()

    from jaxsae.judge import LocalJudge
    from jaxsae.models import load_model
    from jaxsae.steer import Concept, SteerJob, SteerSettings, DEFAULT_BATCH, run_utility_many, steer_concept
    from jaxsae.steer.concepts import BUNDLED_INSTRUCTIONS

    lm = load_model("smollm2-135m-instruct")
    judge = LocalJudge(lm) if args.judge == "local" else instant_judge()
    pool = list(BUNDLED_INSTRUCTIONS)
    st = SteerSettings(factors=tuple(args.factors), n_instructions=args.instructions, max_new_tokens=args.max_new,
                       temperature=args.temperature, seed=0)
    batch = args.batch or DEFAULT_BATCH
    rng = np.random.default_rng(0)
    jobs = []
    tmp = tempfile.TemporaryDirectory()
    for k in range(args.saes):
        feats = rng.choice(args.d_sae, args.concepts, replace=False)
        concepts = [Concept(int(f), WORDS[i % len(WORDS)], i) for i, f in enumerate(feats)]
        jobs.append(SteerJob(random_sae(lm.config.d_model, args.d_sae, k), 15, concepts,
                             rng.uniform(2.0, 8.0, args.d_sae).astype(np.float32), pool, _Path(tmp.name) / f"sae{k}"))
    rows = args.saes * args.concepts * (len(args.factors) * (args.instructions // 2) + (args.instructions - args.instructions // 2))
    print(f"{args.saes} SAEs x {args.concepts} concepts x ({len(args.factors)} factors x {args.instructions // 2} dev + "
          f"{args.instructions - args.instructions // 2} test) = {rows} generations of {args.max_new} new tokens, "
          f"each judged 3 times ({args.judge} judge); batch {batch}; {jax.default_backend()}", flush=True)

    res = {}
    c0, t0 = _compile_s[0], time.perf_counter()
    loop = [steer_concept(lm, judge, j.sae, j.layer, c, j.max_acts, j.pool, st) for j in jobs for c in j.concepts]
    res["loop"] = (time.perf_counter() - t0, _compile_s[0] - c0, n_tokens(lm, loop))
    print(f"per-concept loop: {res['loop'][0]:.1f} s", flush=True)

    c0, t0 = _compile_s[0], time.perf_counter()
    run_utility_many(lm, judge, jobs, st, batch=batch, progress=False)
    wall = time.perf_counter() - t0
    batched = [json.loads(x) for j in jobs for x in (j.out_dir / "concepts.jsonl").read_text().splitlines()]
    res["batched"] = (wall, _compile_s[0] - c0, n_tokens(lm, batched))
    # again, its programs compiled: the batched path compiles in a background thread while it
    # generates, so its wall time less its compile time would understate it
    for j in jobs:
        for name in ("concepts.jsonl", "utility.json"):
            (j.out_dir / name).unlink()
    c0, t0 = _compile_s[0], time.perf_counter()
    run_utility_many(lm, judge, jobs, st, batch=batch, progress=False)
    res["batched, compiled"] = (time.perf_counter() - t0, _compile_s[0] - c0, res["batched"][2])

    key = lambda r: (r["feature"], r["concept"], r["generations"][0]["instruction"])  # noqa: E731
    same_text = sum(a["generations"] == b["generations"] for a, b in zip(sorted(loop, key=key), sorted(batched, key=key)))
    print(f"\n{'path':18s} {'wall s':>8s} {'compile s':>10s} {'tokens':>8s} {'tokens/s':>9s}")
    for name, (w, c, n) in res.items():
        print(f"{name:18s} {w:8.1f} {c:10.1f} {n:8d} {n / w:9.1f}")
    (wl, cl, _), (wb, cb, _), (ww, _, _) = res["loop"], res["batched"], res["batched, compiled"]
    print(f"records identical (generations and ratings): {same_text}/{len(loop)} concepts "
          "(ratings may differ in the last float bits with the judge's batch composition)")
    out = {"judge": args.judge, "saes": args.saes, "concepts": args.concepts, "rows": rows, "batch": batch,
           "loop_s": round(wl, 2), "batched_s": round(wb, 2), "loop_compile_s": round(cl, 2),
           "batched_compile_s": round(cb, 2), "batched_compiled_s": round(ww, 2), "ratio": round(wl / wb, 2),
           "ratio_without_compiles": round((wl - cl) / ww, 2)}
    print(json.dumps(out))
    print(f"batched steer stage vs per-concept loop: {wl / wb:.2f}x faster "
          f"({(wl - cl) / ww:.2f}x without compiles: the loop less its compile time, against the batched path run "
          f"again; target >= {args.target:g}x)")
    if wl / wb < args.target:
        print(f"missed: batched steering {wl / wb:.2f}x < {args.target:g}x")
        sys.exit(1)


if __name__ == "__main__":
    main()
