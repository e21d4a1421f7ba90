"""AutoInterp benchmark on SmolLM2-135M-Instruct with a random 4608-wide SAE at layer 15.

Side by side in one run:
  1. the statistics pass (``compute_feature_stats``: model to the SAE layer + SAE encode + the
     streaming per-latent update, one jitted step per batch of contexts; the call as a user makes
     it, so it includes building its jitted step) against a plain reference that materialises
     all codes of the SAE on the same tokens (the same jitted early-exit forward and encoder,
     codes to numpy [N, T, F]) and then, per latent, sorts its activations with numpy and takes
     SAEBench's greedy non-overlapping top windows, the importance-weighted draw below the top
     windows and the random windows, as SAEBench's AutoInterp does per latent. Tokens/s for both
     (warm-up run excluded, interleaved rounds, best kept), end to end and without the time JAX
     spent tracing and compiling inside the call (``compute_feature_stats`` builds a new jitted
     step on every call, so at a small token count its compile is a visible share), and how well
     the two sets of statistics agree. The LLM forward alone is timed alongside, to show what
     each spends on top of it;
  2. AutoInterp with the local SmolLM2 judge (explanation by greedy generation, detection by
     P(yes) per scoring window) on a few latents: latents/s, split into explanation and
     detection time; a first (cold: compiles the judge's shapes) and a second (warm) run on the
     same latents. The explanation batch is min(8, --latents), so that the few latents timed fill
     it as a full run's 1000 latents do (padding rows would otherwise be timed as work).

The SAE is a standard (ReLU) SAE with a random encoder whose biases make each latent fire on
about --fire of the tokens (L0 ≈ fire·F), calibrated on the first batch of contexts. Prints a
table and a final JSON line.

    python benchmarks/autointerp.py [--contexts 64 --context-len 128 --d-sae 4608 --layer 15 --latents 4]
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

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_s = [0.0]


def _on_event(event: str, duration: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        _compile_s[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_event)


def reference_stats(lm, layer: int, encode, params, tokens: np.ndarray, counted: np.ndarray, cfg, seed: int = 0) -> dict:
    """All codes materialised, then per latent: numpy sort, greedy non-overlapping top windows
    (SAEBench ``get_k_largest_indices(no_overlap=True)``), IW draw ∝ act² below the top windows
    (``get_iw_sample_indices``), random windows."""
    spec = cfg.spec()
    N, T = tokens.shape
    B, b, A, W = cfg.batch_size, spec.buffer, spec.n_top, spec.window
    codes = None
    for s in range(0, N, B):
        resid = lm.residual(tokens[s : s + B], layer)
        c = np.asarray(encode(params, resid))
        if codes is None:
            codes = np.empty((N, T, c.shape[-1]), np.float32)
        codes[s : s + B] = c
    codes *= counted[..., None]  # special tokens read as 0
    F = codes.shape[-1]
    count = np.sum(codes > 0, axis=(0, 1))
    sum_act = np.sum(codes, axis=(0, 1))
    max_act = np.max(codes, axis=(0, 1))
    per_latent = np.ascontiguousarray(codes.transpose(2, 0, 1))  # [F, N, T]
    del codes
    rng = np.random.default_rng(seed)
    top_val = np.full((F, A), -np.inf, np.float32)
    top_pos = np.full((F, A), -1, np.int64)
    top_win = np.zeros((F, A, W), np.float32)
    iw_pos = np.full((F, spec.n_iw), -1, np.int64)
    iw_win = np.zeros((F, spec.n_iw, W), np.float32)
    rand_win = np.zeros((F, spec.n_random, W), np.float32)
    Tr = T - 2 * b
    for f in range(F):
        a = per_latent[f]
        x = a[:, b : T - b].ravel()  # window region only: windows stay inside their context
        order = np.argsort(-x, kind="stable")
        taken: list[tuple[int, int]] = []
        seen: set[tuple[int, int]] = set()
        for p in order:
            if x[p] <= 0 or len(taken) == A:
                break
            n, t = divmod(int(p), Tr)
            t += b
            if (n, t) in seen:
                continue
            taken.append((n, t))
            seen.update((n, t + o) for o in range(-b, b + 1))
        for j, (n, t) in enumerate(taken):
            top_val[f, j], top_pos[f, j] = a[n, t], n * T + t
            top_win[f, j] = a[n, t - b : t + b + 1]
        if len(taken) == A:  # SAEBench skips latents without a full set of top windows
            below = np.flatnonzero((x > 0) & (x < top_val[f, -1]))
            if len(below):
                w = np.square(x[below].astype(np.float64))
                pick = rng.choice(below, size=min(spec.n_iw, len(below)), replace=False, p=w / w.sum())
                for j, p in enumerate(pick):
                    n, t = divmod(int(p), Tr)
                    t += b
                    iw_pos[f, j] = n * T + t
                    iw_win[f, j] = a[n, t - b : t + b + 1]
        rn = rng.integers(0, N, spec.n_random)
        rt = rng.integers(b, T - b, spec.n_random)
        for j, (n, t) in enumerate(zip(rn, rt)):
            rand_win[f, j] = a[n, t - b : t + b + 1]
    return dict(count=count, sum_act=sum_act, max_act=max_act, top_val=top_val, top_pos=top_pos, top_win=top_win,
                iw_pos=iw_pos, iw_win=iw_win, rand_win=rand_win)


class TimedJudge:
    """Wraps an explainer and a detector, timing their calls (it plays both roles)."""

    def __init__(self, explainer, detector, lm):
        self.explainer, self.detector, self.lm = explainer, detector, lm
        self.name, self.rule = detector.name, detector.rule
        self.reset()

    def reset(self):
        self.t_explain = self.t_detect = 0.0
        self.explain_prompt_tokens: list[int] = []
        self.n_questions = 0
        self.explanations: list[str] = []

    def explain(self, messages):
        from jaxsae.autointerp import prompts as P

        self.explain_prompt_tokens += [len(self.lm.token_ids(P.flatten(m), chat=True)) for m in messages]
        t0 = time.perf_counter()
        out = self.explainer.explain(messages)
        self.t_explain += time.perf_counter() - t0
        self.explanations += list(out)
        return out

    def detect(self, explanations, window_texts, examples=None):
        self.n_questions += sum(len(w) for w in window_texts)
        t0 = time.perf_counter()
        out = self.detector.detect(explanations, window_texts, examples)
        self.t_detect += time.perf_counter() - t0
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, default=64, help="held-out contexts for the statistics pass")
    ap.add_argument("--context-len", type=int, default=128, help="tokens per context")
    ap.add_argument("--stats-batch", type=int, default=32, help="contexts per jitted step (both contenders)")
    ap.add_argument("--d-sae", type=int, default=4608, help="SAE width")
    ap.add_argument("--layer", type=int, default=15, help="SAE layer (block output)")
    ap.add_argument("--fire", type=float, default=0.02, help="firing rate of each random latent (L0 ≈ fire·d_sae)")
    ap.add_argument("--repeat", type=int, default=2, help="timed rounds of the statistics pass (best kept)")
    ap.add_argument("--compare-reference", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the materialise-then-numpy reference")
    ap.add_argument("--latents", type=int, default=4, help="latents scored by AutoInterp (0: skip)")
    args = ap.parse_args()

    from jaxsae import features
    from jaxsae.autointerp import AutoInterpConfig
    from jaxsae.autointerp.roles import local_roles
    from jaxsae.autointerp.prompts import TokenText
    from jaxsae.autointerp.run import run_autointerp
    from jaxsae.models import load_model
    from jaxsae.sae.random import calibrated_sae

    lm = load_model("smollm2-135m-instruct")
    cfg = features.FeatureStatsConfig(context_len=args.context_len, total_tokens=args.contexts * args.context_len,
                                      batch_size=args.stats_batch)
    tokens, _ = features.held_out_tokens(lm, cfg)
    tokens = tokens[: args.contexts]
    n_tok = tokens.size
    sae = calibrated_sae(lm, args.layer, args.d_sae, tokens[: args.stats_batch], fire=args.fire)
    encode, params = features.sae_encoder(sae)
    device = jax.devices()[0]

    # 1. statistics pass vs materialise-then-numpy reference
    out: dict = {}

    def ours():
        out["stats"] = features.compute_feature_stats(lm, args.layer, encode, params, cfg, tokens=tokens)

    contenders = {"stats": ours}
    if args.compare_reference:
        enc_jit = jax.jit(encode)
        counted = {}

        def reference():
            if "counted" not in counted:  # the same token mask as the statistics pass
                counted["counted"] = out["stats"].counted
            out["ref"] = reference_stats(lm, args.layer, enc_jit, params, tokens, counted["counted"], cfg)

        contenders["reference"] = reference

    def forward_only():  # the LLM's share of both: early-exit forward of the same batches
        for s in range(0, len(tokens), args.stats_batch):
            lm.residual(tokens[s : s + args.stats_batch], args.layer).block_until_ready()

    contenders["forward"] = forward_only
    warm, times, net = {}, {k: [] for k in contenders}, {k: [] for k in contenders}
    for k, fn in contenders.items():
        t0 = time.perf_counter()
        fn()
        warm[k] = time.perf_counter() - t0
    for _ in range(args.repeat):
        for k, fn in contenders.items():
            c0, t0 = _compile_s[0], time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            times[k].append(dt)
            net[k].append(dt - (_compile_s[0] - c0))
    t = {k: min(v) for k, v in times.items()}
    tn = {k: min(v) for k, v in net.items()}
    stats = out["stats"]
    result = {
        "device": device.device_kind, "model": "smollm2-135m-instruct", "layer": args.layer, "d_sae": args.d_sae,
        "contexts": args.contexts, "context_len": args.context_len, "tokens": n_tok, "repeat": args.repeat,
        "l0_mean": float(stats.count.sum() / max(int(stats.meta["n_counted"]), 1)),
        "stats_tok_s": n_tok / t["stats"],
        "stats_tok_s_without_compile": n_tok / tn["stats"],
        "stats_compile_s_per_call": t["stats"] - tn["stats"],
        "stats_first_call_s": warm["stats"],
        "forward_only_s": t["forward"],
    }
    rows = [
        (f"statistics pass, {n_tok} tokens (compute_feature_stats)", n_tok / t["stats"], "tok/s"),
        ("  without its per-call trace + compile (%.1fs)" % (t["stats"] - tn["stats"]), n_tok / tn["stats"], "tok/s"),
    ]
    if "reference" in t:
        ref = out["ref"]
        both = np.isfinite(ref["top_val"]) & np.isfinite(stats.top_val)
        same_pos = np.all(np.sort(ref["top_pos"], axis=1) == np.sort(stats.top_pos, axis=1), axis=1)
        result.update(
            reference_tok_s=n_tok / t["reference"],
            reference_tok_s_without_compile=n_tok / tn["reference"],
            speedup_vs_reference=t["reference"] / t["stats"],
            speedup_vs_reference_without_compile=tn["reference"] / tn["stats"],
            count_equal_frac=float(np.mean(ref["count"] == stats.count)),
            max_abs_diff_max_act=float(np.max(np.abs(ref["max_act"] - stats.max_act))),
            max_abs_diff_top_val=float(np.max(np.abs(ref["top_val"] - stats.top_val)[both])) if both.any() else None,
            top_windows_identical_frac=float(np.mean(same_pos)),
        )
        rows += [("reference: materialise codes + numpy per latent", n_tok / t["reference"], "tok/s"),
                 ("  without trace + compile (%.1fs)" % (t["reference"] - tn["reference"]), n_tok / tn["reference"], "tok/s")]

    # 2. AutoInterp with the local judge
    if args.latents > 0:
        acfg = AutoInterpConfig(n_latents=args.latents, n_concepts=args.latents,
                                explain_batch=min(AutoInterpConfig.explain_batch, args.latents))
        judge = TimedJudge(*local_roles(lm, acfg), lm)
        token_text = TokenText(lm.tokenizer)
        runs = {}
        for label in ("cold", "warm"):
            judge.reset()
            t0 = time.perf_counter()
            res = run_autointerp(stats, judge, judge, acfg, token_text)
            total = time.perf_counter() - t0
            n = len(res["latents"])
            runs[label] = dict(latents=n, seconds=total, latents_per_s=n / total, explain_s=judge.t_explain,
                               detect_s=judge.t_detect, other_s=total - judge.t_explain - judge.t_detect,
                               explain_prompt_tokens_mean=float(np.mean(judge.explain_prompt_tokens)),
                               detection_questions=judge.n_questions, mean_score=res["summary"]["mean_all"])
        result["autointerp"] = runs
        result["autointerp_latents"] = [r["latent"] for r in res["latents"]]
        result["autointerp_explanations"] = judge.explanations
        w = runs["warm"]
        rows += [
            (f"AutoInterp, local SmolLM2 judge, {w['latents']} latents (warm)", w["latents_per_s"], "latents/s"),
            ("  explanation (greedy generation) per latent", w["explain_s"] / w["latents"], "s"),
            (f"  detection ({w['detection_questions'] // max(w['latents'], 1)} yes/no windows) per latent",
             w["detect_s"] / w["latents"], "s"),
            ("  sampling, prompts, scoring per latent", w["other_s"] / w["latents"], "s"),
            ("AutoInterp first run (cold: compiles the judge)", runs["cold"]["latents_per_s"], "latents/s"),
        ]

    print(f"\nAutoInterp on smollm2-135m-instruct, random {args.d_sae}-wide SAE at layer {args.layer} "
          f"(L0 {result['l0_mean']:.0f}), {args.contexts} contexts × {args.context_len} tokens, device {device.device_kind}")
    print(f"\n{'measurement':58s} {'value':>12s}")
    for label, v, unit in rows:
        print(f"{label:58s} {v:12.4g} {unit}")
    if "speedup_vs_reference" in result:
        print(f"\nstatistics pass vs materialise-then-numpy reference: {result['speedup_vs_reference']:.2f}x end to end, "
              f"{result['speedup_vs_reference_without_compile']:.2f}x without trace + compile "
              f"(counts equal on {result['count_equal_frac']:.1%} of latents, top windows identical on "
              f"{result['top_windows_identical_frac']:.1%}, max |Δ top activation| {result['max_abs_diff_top_val']:.1e})")
    print(f"LLM forward alone (layers 0..{args.layer}) on the same batches: {t['forward']:.1f}s; on top of it the statistics "
          f"pass spends {tn['stats'] - t['forward']:.1f}s (+{t['stats'] - tn['stats']:.1f}s compile)"
          + (f", the reference {t['reference'] - t['forward']:.1f}s" if "reference" in t else ""))
    if "autointerp" in result:
        w = result["autointerp"]["warm"]
        print(f"AutoInterp warm: {w['seconds']:.1f}s for {w['latents']} latents = explanation {w['explain_s']:.1f}s "
              f"(prompts ~{w['explain_prompt_tokens_mean']:.0f} tokens) + detection {w['detect_s']:.1f}s "
              f"({w['detection_questions']} questions) + other {w['other_s']:.2f}s")
    print(json.dumps(result))
    if "speedup_vs_reference_without_compile" in result:  # target: the streaming pass beats materialising
        ratio = result["speedup_vs_reference_without_compile"]
        if ratio < 1.0:
            print("missed: statistics pass >= 1x the materialise-then-numpy reference (without compile)")
        print(f"statistics pass vs materialise-then-numpy reference, without compile: {ratio:.2f}x (target >= 1)")
        sys.exit(0 if ratio >= 1.0 else 1)


if __name__ == "__main__":
    main()
