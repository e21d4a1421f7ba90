"""Feature-selection benchmark on SmolLM2-135M-Instruct with a 4608-wide SAE at a middle layer.

Side by side in one run:
  1. ΔTC for every latent with the batched kernel, alone (like for like with the naive loop) and
     with the output score (same kernel plus its logit-lens pass), against a careful naive loop
     (the clean forward once, then full forwards of the prefix for a batch of features at a time
     with the SAE hook written out, ΔC_1 only), timed on a sample and extrapolated to all latents;
  2. the local judge's ratings/s (SmolLM2 as judge, next-token distribution at the rating slot).
Prints a table, a JSON line and, last, the speed-up of ΔTC alone over the naive loop; exits 1 when
a target is missed (speed-up >= --target, every latent with the output score in under 30 s).

    python benchmarks/select.py [--d-sae 4608 --layer 15 --naive-sample 64 --naive-batch 32 --ratings 48]
"""

from __future__ import annotations

import sys  # noqa: I001 - must run first: this file's name shadows the stdlib `select` module
from pathlib import Path as _Path

sys.path[:] = [p for p in sys.path if _Path(p or ".").resolve() != _Path(__file__).resolve().parent]

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_default_matmul_precision", "float32")


def random_sae(d_in: int, d_sae: int, seed: int = 0):
    import jaxsae.sae as S

    r = np.random.RandomState(seed)
    w_dec = r.randn(d_sae, d_in).astype(np.float32)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    params = {
        "W_enc": jnp.asarray(r.randn(d_in, d_sae).astype(np.float32) / np.sqrt(d_in)),
        "b_enc": jnp.zeros(d_sae, jnp.float32),
        "W_dec": jnp.asarray(w_dec),
        "b_dec": jnp.zeros(d_in, jnp.float32),
        "threshold": jnp.full(d_sae, 0.05, jnp.float32),
    }
    return S.SAE(cfg=S.make_cfg("jumprelu", d_in, d_sae, apply_b_dec_to_input=False, metadata={}), params=params)


def naive_loop(lm, sae, layer: int, features, alpha: float = 10.0, batch: int = 32) -> np.ndarray:
    """ΔC_1 the way a careful user computes it with a hook-based library: the clean forward of the
    prefix once, then the prefix run for ``batch`` features at a time (one row per feature), the
    hook encoding, amplifying that row's feature, decoding and adding the error back."""
    import jaxsae.sae as S
    from jaxsae.models import Edit
    from jaxsae.select.dtc import DEFAULT_PREFIX

    enc, dec = S.encode_fn(sae), S.decode_fn(sae)
    ids = np.asarray([lm.token_ids(DEFAULT_PREFIX)])
    rows = np.repeat(ids, batch, axis=0)

    def hook(args, resid, positions):
        acts = enc(args["params"], resid)
        b = jnp.arange(resid.shape[0])
        bumped = acts.at[b, -1, args["f_b"]].add(args["alpha"] * jnp.max(acts[:, -1], axis=-1))
        return dec(args["params"], bumped) + (resid - dec(args["params"], acts))

    base_top = float(jnp.max(jax.nn.log_softmax(lm.logits(ids)[0, -1])))  # once
    features = np.asarray(features)
    out = []
    for s in range(0, len(features), batch):
        f_b = features[s : s + batch]
        n = len(f_b)
        f_b = np.concatenate([f_b, np.full(batch - n, f_b[0])])  # one compiled shape
        e = Edit(layer, hook, {"params": sae.params, "f_b": jnp.asarray(f_b, jnp.int32), "alpha": jnp.float32(alpha)})
        logp = jax.nn.log_softmax(lm.logits(rows, edit=e)[:, -1], axis=-1)
        out.extend((base_top - np.asarray(jnp.max(logp, axis=-1)))[:n].tolist())
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-sae", type=int, default=4608, help="SAE width")
    ap.add_argument("--layer", type=int, default=15, help="SAE layer (block output)")
    ap.add_argument("--naive-sample", type=int, default=64, help="features timed with the naive loop")
    ap.add_argument("--naive-batch", type=int, default=32, help="features per forward of the naive loop")
    ap.add_argument("--target", type=float, default=5.0, help="least speed-up of ΔTC alone over the naive loop")
    ap.add_argument("--ratings", type=int, default=48, help="local-judge ratings timed")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of the batched kernels (best kept)")
    args = ap.parse_args()

    from jaxsae.judge import LocalJudge, RatingRequest
    from jaxsae.models import load_model
    from jaxsae.select.dtc import delta_token_confidence, feature_scores

    lm = load_model("smollm2-135m-instruct")
    sae = random_sae(lm.config.d_model, args.d_sae)

    # 1. ΔTC: batched kernel over every latent (compile excluded by a warm-up call), ΔTC alone
    #    (like for like with the naive loop, which computes ΔC_1 only) and with the output score
    delta_token_confidence(lm, sae, args.layer, reading="A")  # the naive loop below is Arad's hook (reading A)
    feature_scores(lm, sae, args.layer, reading="A")
    t_dtc, t_all = [], []
    for _ in range(args.repeat):  # interleaved, best kept
        t0 = time.perf_counter()
        dtc_only = delta_token_confidence(lm, sae, args.layer, reading="A")
        t_dtc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scores = feature_scores(lm, sae, args.layer, reading="A")
        t_all.append(time.perf_counter() - t0)
    t_dtc, t_all = min(t_dtc), min(t_all)
    np.testing.assert_allclose(dtc_only, scores["delta_tc"], atol=1e-5)  # two compiled kernels, one result
    sample = np.random.RandomState(0).choice(args.d_sae, args.naive_sample, replace=False)
    naive_loop(lm, sae, args.layer, sample[:1], batch=args.naive_batch)  # compile
    t0 = time.perf_counter()
    naive = naive_loop(lm, sae, args.layer, sample, batch=args.naive_batch)
    t_naive = (time.perf_counter() - t0) / len(sample) * args.d_sae
    agree = float(np.abs(naive - scores["delta_tc"][sample]).max())

    # 2. local judge ratings/s
    judge = LocalJudge(lm)
    crit = ("concept", "instruction", "fluency")
    reqs = [
        RatingRequest(crit[i % 3], "the ocean", "Describe your favourite holiday.",
                      f"We spent day {i} by the sea, watching the waves roll onto the sand.")
        for i in range(args.ratings)
    ]
    judge.rate(reqs[: judge.batch_size * 3])  # compile
    t0 = time.perf_counter()
    judge.rate(reqs)
    t_judge = time.perf_counter() - t0

    result = {
        "d_sae": args.d_sae,
        "dtc_only_all_latents_s": t_dtc,
        "dtc_only_features_per_s": args.d_sae / t_dtc,
        "dtc_all_latents_s": t_all,
        "dtc_features_per_s": args.d_sae / t_all,
        "naive_features_per_s": args.d_sae / t_naive,
        "naive_all_latents_s_extrapolated": t_naive,
        "speedup_vs_naive": t_naive / t_dtc,
        "speedup_with_output_score_vs_naive": t_naive / t_all,
        "max_abs_diff_vs_naive": agree,
        "judge_ratings_per_s": args.ratings / t_judge,
    }
    print(f"\n{'measurement':50s} {'value':>12s}")
    print(f"{'ΔTC alone, all %d latents (batched)' % args.d_sae:50s} {t_dtc:11.1f}s")
    print(f"{'  features/s batched':50s} {result['dtc_only_features_per_s']:12.1f}")
    print(f"{'ΔTC + output score, all %d latents (batched)' % args.d_sae:50s} {t_all:11.1f}s")
    print(f"{'  features/s batched':50s} {result['dtc_features_per_s']:12.1f}")
    print(f"{'ΔTC, naive loop (sample %d, batch %d), features/s' % (len(sample), args.naive_batch):50s} "
          f"{result['naive_features_per_s']:12.1f}")
    print(f"{'  speed-up of ΔTC alone (target >= %gx)' % args.target:50s} {result['speedup_vs_naive']:11.1f}x")
    print(f"{'  speed-up of ΔTC + output score':50s} {result['speedup_with_output_score_vs_naive']:11.1f}x")
    print(f"{'  max |batched - naive| on the sample':50s} {agree:12.2e}")
    print(f"{'every latent in under 30 s (target)':50s} {str(t_all < 30):>12s}")
    print(f"{'local judge ratings/s (SmolLM2)':50s} {result['judge_ratings_per_s']:12.2f}")
    print(json.dumps(result))
    missed = [name for name, ok in (("speed-up of ΔTC alone >= %gx" % args.target, result["speedup_vs_naive"] >= args.target),
                                    ("every latent in under 30 s", t_all < 30), ("agrees with the naive loop", agree < 1e-3))
              if not ok]
    if missed:
        print("missed: " + "; ".join(missed))
    print(f"ΔTC alone vs the careful naive loop: {result['speedup_vs_naive']:.1f}x (target >= {args.target:g}x)")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
