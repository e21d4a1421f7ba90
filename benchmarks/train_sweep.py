"""Sweep-training benchmark: one jitted vmapped step for the whole sweep, optionally against a loop
of separate SAEs and against dictionary_learning (the PyTorch library the paper trained with).

    python benchmarks/train_sweep.py --d-model 576 --d-sae 4608 --batch 2048 --steps 30 \
        --archs relu,topk,batchtopk,jumprelu,gated --l0 80 [--compare-loop] [--compare dictionary_learning]

The sweep is every --archs architecture at every --l0 level (ReLU/Gated use the paper's L1
coefficients at those levels), width --d-sae on --d-model (default 576, SmolLM2-135M's width), on
planted sparse random activations (normalised to E||x||² = 1 as the trainer does). Every contender
first runs one warm-up step (compilation / first allocation, excluded), then --repeat timed runs of
--steps steps each, interleaved, the fastest kept:

  1. jaxsae: ``make_step`` over all SAEs at once (one jitted, vmapped computation per step);
  2. --compare-loop: the reference "loop of separate SAEs": the same per-SAE update built from the
     same trainer code with a one-SAE spec (``make_step([spec])``, compiled once per architecture as
     the sparsity value is data), called for each SAE one after the other on the same batch, each
     SAE with its own state. Both do identical math; after the run the parameters of every SAE are
     compared between the two;
  3. --compare dictionary_learning (``pip install .[bench]``): that library's trainers for the same
     SAEs (StandardTrainerAprilUpdate for relu, TopKTrainer, BatchTopKTrainer, JumpReluTrainer,
     GatedSAETrainer), same data, sizes and steps, one ``trainer.update(step, x)`` per SAE per step,
     on CPU torch (--threads);
  4. --torch: a plain PyTorch TopK SAE step of the same shape (dictionary_learning's TopKTrainer
     recipe written out), compared with jaxsae's TopK SAE trained alone.

Achieved FLOP/s, as a fraction of a dense f32 matmul peak measured in the same run (jnp.dot of the
step's three matmul shapes, best of several runs each), with two FLOP counts per step:

  * nominal: the encoder and decoder matmuls forward and backward, 6 FLOPs per weight per token
    over the 2·D·F weights = 12·B·D·F per SAE (the same for every architecture and for torch);
  * XLA: the compiled sweep step's own count (``cost_analysis``), which adds what the recipes do on
    top (AuxK's extra decoder pass for the TopK family, Gated's auxiliary decoder pass, the
    gradient of b_dec through the encoder input; JumpReLU needs no input gradient).

Each step is synchronised (as a trainer reading its metrics every step does). Prints a table and a
final JSON line whose keys include ``token_sae_per_s`` and ``fraction_of_peak`` (the sweep's, nominal
FLOPs).
"""

from __future__ import annotations

import sys  # noqa: I001 - first: benchmarks/select.py would shadow the stdlib `select` module
from pathlib import Path as _Path

sys.path[:] = [p for p in sys.path if _Path(p or ".").resolve() != _Path(__file__).resolve().parent]

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_default_matmul_precision", "float32")

D_MODEL = 576  # SmolLM2-135M
ARCHS = ("relu", "topk", "batchtopk", "jumprelu", "gated")


def planted_batches(n_batches: int, batch: int, d: int, n_dirs: int, l0: float, seed: int = 0) -> list[np.ndarray]:
    """``n_batches`` f32[batch, d] batches of x = sparse codes · unit directions + noise, scaled so
    that E||x||² = 1 (the trainer's normalisation)."""
    r = np.random.default_rng(seed)
    dirs = r.standard_normal((n_dirs, d), np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    out = []
    for _ in range(n_batches):
        codes = (r.random((batch, n_dirs), np.float32) < l0 / n_dirs) * r.exponential(1.0, (batch, n_dirs)).astype(np.float32)
        out.append(codes @ dirs + 0.05 * r.standard_normal((batch, d), np.float32))
    scale = np.sqrt(np.mean([np.mean(np.sum(x * x, axis=1)) for x in out]))
    return [(x / scale).astype(np.float32) for x in out]


class TorchTopK:
    """A plain PyTorch TopK SAE and its training step (dictionary_learning's TopKTrainer recipe)."""

    def __init__(self, d: int, f: int, k: int, lr: float, dead_tokens: int, seed: int = 0):
        import torch

        g = torch.Generator().manual_seed(seed)
        w = torch.rand(f, d, generator=g) * 2 - 1
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w.clone())
        self.W_enc = torch.nn.Parameter(w.T.clone().contiguous())
        self.b_enc = torch.nn.Parameter(torch.zeros(f))
        self.b_dec = torch.nn.Parameter(torch.zeros(d))
        self.params = [self.W_enc, self.b_enc, self.W_dec, self.b_dec]
        self.opt = torch.optim.Adam(self.params, lr=lr, betas=(0.9, 0.999))
        self.k, self.f, self.d, self.dead_tokens = k, f, d, dead_tokens
        self.since_fired = torch.zeros(f, dtype=torch.long)
        self.threshold = -1.0

    def step(self, x) -> float:
        import torch

        pre = torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        f = torch.zeros_like(pre).scatter_(-1, idx, vals)
        x_hat = f @ self.W_dec + self.b_dec
        e = x - x_hat
        loss = e.pow(2).sum(-1).mean()
        with torch.no_grad():
            fired = torch.zeros(self.f, dtype=torch.bool)
            fired[idx[vals > 0]] = True
            self.since_fired += x.shape[0]
            self.since_fired[fired] = 0
            dead = self.since_fired >= self.dead_tokens
        if dead.any():  # AuxK on the top-k_aux dead latents (never reached in a short benchmark)
            k_aux = min(self.d // 2, int(dead.sum()))
            aux_vals, aux_idx = torch.where(dead[None], pre, torch.full_like(pre, -torch.inf)).topk(k_aux, dim=-1)
            a = torch.zeros_like(pre).scatter_(-1, aux_idx, torch.relu(aux_vals))
            ed = e.detach()
            aux = (ed - a @ self.W_dec).pow(2).sum(-1).mean() / (ed - ed.mean(0)).pow(2).sum(-1).mean()
            loss = loss + aux.nan_to_num(0.0) / 32
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            w = self.W_dec / (self.W_dec.norm(dim=-1, keepdim=True) + 1e-6)
            self.W_dec.grad -= (self.W_dec.grad * w).sum(-1, keepdim=True) * w
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True) + torch.finfo(torch.float32).eps
            pos = f.detach() > 0
            row_min = torch.where(pos, f.detach(), torch.full_like(f, torch.inf)).min(-1).values
            has = pos.any(-1)
            value = float(row_min[has].mean()) if bool(has.any()) else 0.0
            self.threshold = value if self.threshold < 0 else 0.999 * self.threshold + 0.001 * value
        return float(loss.detach())


DL_TRAINERS = {  # jaxsae architecture -> dictionary_learning trainer (module, class)
    "relu": ("standard", "StandardTrainerAprilUpdate"),
    "topk": ("top_k", "TopKTrainer"),
    "batchtopk": ("batch_top_k", "BatchTopKTrainer"),
    "jumprelu": ("jumprelu", "JumpReluTrainer"),
    "gated": ("gdm", "GatedSAETrainer"),
}


def import_dictionary_learning():
    """dictionary_learning's trainer classes by architecture, or exit 2 with a one-line message.
    Its package ``__init__`` imports ``nnsight`` (for the activation buffer, unused here); when only
    the trainers' own dependencies are installed, a stub stands in for it."""
    import importlib

    try:
        importlib.import_module("nnsight")
    except ImportError:
        import types

        sys.modules["nnsight"] = types.SimpleNamespace(LanguageModel=None)  # only buffer.py names it
    try:
        return {a: getattr(importlib.import_module(f"dictionary_learning.trainers.{m}"), c) for a, (m, c) in DL_TRAINERS.items()}
    except Exception as e:  # noqa: BLE001 - any failure: say what and stop
        print(f"--compare dictionary_learning: cannot import dictionary_learning's trainers ({type(e).__name__}: {e}); "
              "install it with `pip install -e .[bench]` (or `pip install dictionary-learning`)", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-model", type=int, default=D_MODEL, help="activation width D (576: SmolLM2-135M)")
    ap.add_argument("--d-sae", type=int, default=4608, help="SAE width F")
    ap.add_argument("--batch", type=int, default=2048, help="tokens per step B")
    ap.add_argument("--steps", type=int, default=5, help="training steps per timed run (after one warm-up step)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs of --steps steps per contender, interleaved; fastest kept")
    ap.add_argument("--archs", default=",".join(ARCHS), help="comma-separated architectures")
    ap.add_argument("--l0", default="80,160", help="comma-separated target L0 levels")
    ap.add_argument("--compare-loop", action=argparse.BooleanOptionalAction, default=False,
                    help="also time the same SAEs trained one after another (one jitted step per SAE)")
    ap.add_argument("--compare", choices=["dictionary_learning"], action="append", default=[],
                    help="also time that library's trainers for the same SAEs (pip install .[bench])")
    ap.add_argument("--torch", action=argparse.BooleanOptionalAction, default=False,
                    help="also time a plain PyTorch TopK SAE step of the same shape")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    args = ap.parse_args()
    if args.steps < 1 or args.repeat < 1:
        ap.error("--steps and --repeat must be >= 1")
    dl_classes = import_dictionary_learning() if "dictionary_learning" in args.compare else None

    from jaxsae.sae import ArchConfig
    from jaxsae.train.spec import TrainSettings, check_sweep, sweep_from_l0
    from jaxsae.train.trainer import init_state, make_step

    B, D, F = args.batch, args.d_model, args.d_sae
    specs = sweep_from_l0([a.strip() for a in args.archs.split(",") if a.strip()], [int(v) for v in args.l0.split(",")])
    check_sweep(specs, D, F)
    n_sae = len(specs)
    # schedules as for a 1000-step run (the LR/sparsity warm-ups only change values, not cost)
    sched_steps = 1000
    st = TrainSettings(d_sae=F, batch=B, steps=sched_steps, checkpoint_every=0).effective()
    arch_cfg = ArchConfig().replace(dead_tokens=st.dead_tokens, threshold_start_step=min(1000, st.steps // 5))
    batches_np = planted_batches(4, B, D, n_dirs=F, l0=60)
    batches = [jnp.asarray(x) for x in batches_np]
    device = jax.devices()[0]
    if args.torch or dl_classes:
        import torch

        torch.set_num_threads(args.threads)
        tbatches = [torch.from_numpy(x.copy()) for x in batches_np]

    contenders = {}  # name -> fn(n_steps)
    per_sae: dict[str, float] = {}

    # 1. jaxsae: one step for the whole sweep
    sweep = {"state": init_state(specs, D, st, batches_np[0], arch_cfg), "i": 0}
    sweep_step = make_step(specs, st, arch_cfg)

    def run_sweep(n):
        for _ in range(n):
            sweep["state"], met = sweep_step(sweep["state"], batches[sweep["i"] % len(batches)])
            jax.block_until_ready(met)
            sweep["i"] += 1

    contenders["sweep"] = run_sweep

    # 2. reference: one separately jitted step per SAE, called one after the other
    if args.compare_loop:
        loop = {"i": 0, "timed": False}
        loop_states = {s.name: init_state([s], D, st, batches_np[0], arch_cfg) for s in specs}
        # one jitted one-SAE step per architecture (k / L1 / target L0 are data in the state, so
        # the levels share it; this only saves compile time), called once per SAE
        by_arch = {s.arch: make_step([s], st, arch_cfg) for s in specs}
        loop_steps = {s.name: by_arch[s.arch] for s in specs}

        def run_loop(n):
            times = dict.fromkeys(loop_steps, 0.0)
            for _ in range(n):
                x = batches[loop["i"] % len(batches)]
                for name, fn in loop_steps.items():
                    t0 = time.perf_counter()
                    loop_states[name], met = fn(loop_states[name], x)
                    jax.block_until_ready(met)
                    times[name] += time.perf_counter() - t0
                loop["i"] += 1
            if n == args.steps:
                for name, tt in times.items():
                    per_sae[name] = min(per_sae.get(name, np.inf), tt)

        contenders["loop"] = run_loop

    # 3. dictionary_learning's trainers, one per SAE, one update each per step
    dl_times: dict[str, float] = {}
    if dl_classes:
        torch.manual_seed(0)
        dl_trainers = {}
        for s in specs:
            cls = dl_classes[s.arch]
            # the same 1000-step schedules as jaxsae's (they change values, not cost)
            common = dict(steps=sched_steps, activation_dim=D, dict_size=F, layer=0, lm_name="benchmark", device="cpu",
                          warmup_steps=st.warmup_steps, decay_start=int(st.decay_start * sched_steps))
            if s.arch in ("topk", "batchtopk"):
                tr = cls(k=int(round(s.sparsity)), threshold_start_step=arch_cfg.threshold_start_step, **common)
            elif s.arch == "jumprelu":
                tr = cls(target_l0=float(s.sparsity), sparsity_warmup_steps=st.sparsity_warmup_steps, **common)
            else:  # relu, gated: L1 coefficient
                tr = cls(l1_penalty=float(s.sparsity), sparsity_warmup_steps=st.sparsity_warmup_steps, **common)
            dl_trainers[s.name] = tr
        dl = {"i": 0}

        def run_dl(n):
            times = dict.fromkeys(dl_trainers, 0.0)
            for _ in range(n):
                x = tbatches[dl["i"] % len(tbatches)]
                for name, tr in dl_trainers.items():
                    t0 = time.perf_counter()
                    tr.update(dl["i"], x)
                    times[name] += time.perf_counter() - t0
                dl["i"] += 1
            if n == args.steps:
                for name, tt in times.items():
                    dl_times[name] = min(dl_times.get(name, np.inf), tt)

        contenders["dictionary_learning"] = run_dl

    # 4. plain PyTorch TopK SAE step
    topk_spec = next((s for s in specs if s.arch == "topk"), None)
    if args.torch and topk_spec is not None:
        tsae = TorchTopK(D, F, int(round(topk_spec.sparsity)), st.lr, st.dead_tokens)
        tstate = {"i": 0}

        def run_torch(n):
            for _ in range(n):
                tsae.step(tbatches[tstate["i"] % len(tbatches)])
                tstate["i"] += 1

        contenders["torch_topk"] = run_torch

    # warm-up (compilation, first allocation): one step each; then interleaved timed runs
    warm = {}
    for k, fn in contenders.items():
        t0 = time.perf_counter()
        fn(1)
        warm[k] = time.perf_counter() - t0
        print(f"warm-up step {k}: {warm[k]:.2f} s", file=sys.stderr, flush=True)
    times = {k: [] for k in contenders}
    for _ in range(args.repeat):
        for k, fn in contenders.items():
            t0 = time.perf_counter()
            fn(args.steps)
            times[k].append(time.perf_counter() - t0)
            print(f"timed {args.steps} steps {k}: {times[k][-1]:.2f} s", file=sys.stderr, flush=True)
    t = {k: min(v) for k, v in times.items()}

    # dense f32 matmul peak: the step's matmul shapes (encoder fwd, decoder fwd, weight grad),
    # best of several runs each, measured in this run
    dot = jax.jit(jnp.dot)
    r = np.random.default_rng(1)
    mats = {
        "BxD@DxF": (r.standard_normal((B, D), np.float32), r.standard_normal((D, F), np.float32)),
        "BxF@FxD": (r.standard_normal((B, F), np.float32), r.standard_normal((F, D), np.float32)),
        "DxB@BxF": (r.standard_normal((D, B), np.float32), r.standard_normal((B, F), np.float32)),
    }
    mm_flops = 2.0 * B * D * F
    mm_t = {}
    for k, (a, b) in mats.items():
        a, b = jnp.asarray(a), jnp.asarray(b)
        dot(a, b).block_until_ready()
        best = np.inf
        for _ in range(5):
            t0 = time.perf_counter()
            dot(a, b).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        mm_t[k] = best
    peak = max(mm_flops / v for v in mm_t.values())

    flops_sae_step = 12.0 * B * D * F  # nominal, see the module docstring
    try:  # the compiled sweep step's own FLOP count (reuses the cached compilation)
        ca = sweep_step.lower(sweep["state"], batches[0]).compile().cost_analysis()
        xla_flops = float((ca[0] if isinstance(ca, (list, tuple)) else ca)["flops"])
    except Exception:  # noqa: BLE001 - not every backend reports it
        xla_flops = None
    n = args.steps
    tok_sae_s = B * n_sae * n / t["sweep"]
    frac = flops_sae_step * n_sae * n / t["sweep"] / peak
    result = {
        "token_sae_per_s": tok_sae_s,
        "fraction_of_peak": frac,
        "device": device.device_kind,
        "d_model": D, "d_sae": F, "batch": B, "n_saes": n_sae, "steps_per_run": n, "repeat": args.repeat,
        "saes": [s.name for s in specs],
        "matmul_peak_gflop_s": peak / 1e9,
        "matmul_gflop_s": {k: mm_flops / v / 1e9 for k, v in mm_t.items()},
        "sweep_steps_s": n / t["sweep"],
        "sweep_tok_sae_s": tok_sae_s,
        "sweep_gflop_s": flops_sae_step * n_sae * n / t["sweep"] / 1e9,
        "sweep_frac_of_peak": frac,
        "sweep_compile_and_first_step_s": warm["sweep"],
        "nominal_flop_per_sae_step": flops_sae_step,
    }
    if xla_flops:
        result.update(xla_flop_per_sweep_step=xla_flops, xla_flop_over_nominal=xla_flops / (flops_sae_step * n_sae),
                      sweep_xla_gflop_s=xla_flops * n / t["sweep"] / 1e9,
                      sweep_xla_frac_of_peak=xla_flops * n / t["sweep"] / peak)
    rows = [
        ("dense f32 matmul peak (best of %s)" % ", ".join(mats), peak / 1e9, "GFLOP/s"),
        (f"sweep of {n_sae} SAEs, one vmapped jitted step", n / t["sweep"], "steps/s"),
        ("  token·SAE/s", tok_sae_s, "tok·SAE/s"),
        ("  achieved, nominal 12·B·D·F per SAE", result["sweep_gflop_s"], "GFLOP/s"),
        ("  fraction of measured matmul peak (nominal)", frac, ""),
    ]
    if xla_flops:
        rows += [
            ("  achieved, XLA-counted FLOPs (%.2fx nominal)" % result["xla_flop_over_nominal"], result["sweep_xla_gflop_s"], "GFLOP/s"),
            ("  fraction of measured matmul peak (XLA count)", result["sweep_xla_frac_of_peak"], ""),
        ]
    if "loop" in t:
        result.update(
            loop_steps_s=n / t["loop"],
            loop_tok_sae_s=B * n_sae * n / t["loop"],
            loop_gflop_s=flops_sae_step * n_sae * n / t["loop"] / 1e9,
            loop_frac_of_peak=flops_sae_step * n_sae * n / t["loop"] / peak,
            loop_compile_and_first_step_s=warm["loop"],
            speedup_sweep_vs_loop=t["loop"] / t["sweep"],
            loop_per_sae_step_s={k: v / n for k, v in per_sae.items()},
        )
        rows += [
            (f"loop of {n_sae} separately jitted SAEs", n / t["loop"], "steps/s"),
            ("  token·SAE/s", result["loop_tok_sae_s"], "tok·SAE/s"),
            ("  achieved, nominal 12·B·D·F per SAE", result["loop_gflop_s"], "GFLOP/s"),
            ("  fraction of measured matmul peak (nominal)", result["loop_frac_of_peak"], ""),
        ]
        rows += [(f"    {k} step alone", v / n, "s") for k, v in per_sae.items()]
        # same math: after the same steps on the same batches, the parameters agree
        host_sweep = jax.device_get(sweep["state"]["groups"])
        diff = 0.0
        for s in specs:
            grp = host_sweep[s.arch]
            i = [x.name for x in specs if x.arch == s.arch].index(s.name)
            alone = jax.device_get(loop_states[s.name]["groups"][s.arch]["params"])
            for k, v in grp["params"].items():
                diff = max(diff, float(np.max(np.abs(np.asarray(v)[i] - np.asarray(alone[k])[0]))))
        result["max_abs_param_diff_sweep_vs_loop"] = diff
        result["steps_compared"] = sweep["i"]
    if "dictionary_learning" in t:
        import dictionary_learning

        result.update(
            dictionary_learning_version=getattr(dictionary_learning, "__version__", "?"),
            torch_threads=torch.get_num_threads(),
            dl_total_s=t["dictionary_learning"],
            dl_tok_sae_s=B * n_sae * n / t["dictionary_learning"],
            dl_frac_of_peak=flops_sae_step * n_sae * n / t["dictionary_learning"] / peak,
            dl_per_sae_step_s={k: v / n for k, v in dl_times.items()},
            sweep_total_s=t["sweep"],
            speedup_sweep_vs_dictionary_learning=t["dictionary_learning"] / t["sweep"],
        )
        rows += [
            (f"dictionary_learning {result['dictionary_learning_version']}: {n_sae} trainers one after another",
             n / t["dictionary_learning"], "steps/s"),
            ("  token·SAE/s", result["dl_tok_sae_s"], "tok·SAE/s"),
            ("  fraction of measured matmul peak (nominal)", result["dl_frac_of_peak"], ""),
        ]
        rows += [(f"    {k} ({dl_trainers[k].__class__.__name__}) update", v / n, "s/step") for k, v in dl_times.items()]
    if "torch_topk" in t:
        name = topk_spec.name
        result.update(
            torch_topk_steps_s=n / t["torch_topk"],
            torch_topk_tok_s=B * n / t["torch_topk"],
            torch_topk_gflop_s=flops_sae_step * n / t["torch_topk"] / 1e9,
            torch_topk_frac_of_peak=flops_sae_step * n / t["torch_topk"] / peak,
        )
        rows += [
            (f"PyTorch TopK SAE step alone (k={int(round(topk_spec.sparsity))})", n / t["torch_topk"], "steps/s"),
            ("  fraction of measured matmul peak (nominal)", result["torch_topk_frac_of_peak"], ""),
        ]
        if name in per_sae:
            result["jaxsae_topk_alone_steps_s"] = n / per_sae[name]
            result["speedup_jaxsae_topk_alone_vs_torch"] = t["torch_topk"] / per_sae[name]
            rows.append((f"jaxsae {name} step alone (inside the loop)", n / per_sae[name], "steps/s"))
        result["speedup_sweep_per_sae_vs_torch_topk"] = t["torch_topk"] * n_sae / t["sweep"]

    print(f"\nSAE sweep training: {n_sae} SAEs ({', '.join(s.name for s in specs)}), d_model {D}, d_sae {F}, "
          f"batch {B}, {n} steps per timed run after 1 warm-up step, best of {args.repeat}, device {device.device_kind}")
    print(f"\n{'measurement':62s} {'value':>12s}")
    for label, v, unit in rows:
        print(f"{label:62s} {v:12.4g} {unit}")
    print(f"\ntoken·SAE/s: {tok_sae_s:.4g}   fraction of measured f32 matmul peak ({peak / 1e9:.4g} GFLOP/s): {frac:.3f}")
    if "loop" in t:
        print(f"sweep vs loop of separate SAEs: {result['speedup_sweep_vs_loop']:.2f}x "
              f"(loop {t['loop']:.2f} s / sweep {t['sweep']:.2f} s for {n} steps; "
              f"max |param diff| after {result['steps_compared']} steps: {result['max_abs_param_diff_sweep_vs_loop']:.2e})")
    if "dictionary_learning" in t:
        print(f"sweep vs dictionary_learning: {result['speedup_sweep_vs_dictionary_learning']:.2f}x "
              f"(dictionary_learning {t['dictionary_learning']:.2f} s / sweep {t['sweep']:.2f} s for {n} steps of {n_sae} SAEs)")
    if "torch_topk" in t:
        if "speedup_jaxsae_topk_alone_vs_torch" in result:
            print(f"jaxsae TopK step alone vs PyTorch TopK step: {result['speedup_jaxsae_topk_alone_vs_torch']:.2f}x")
        print(f"sweep per-SAE cost vs PyTorch TopK step: {result['speedup_sweep_per_sae_vs_torch_topk']:.2f}x "
              f"(sweep time / {n_sae} vs one torch TopK step; architectures differ in cost)")
    print(json.dumps(result))
    # targets: the stacked sweep is no slower than a loop of separately jitted SAEs, nor than
    # dictionary_learning's trainers on the same batches (each checked when measured); ratio last
    checks = [(f"sweep vs {name} >= 1x", result[key]) for name, key in
              (("loop", "speedup_sweep_vs_loop"), ("dictionary_learning", "speedup_sweep_vs_dictionary_learning"))
              if key in result]
    missed = [name for name, v in checks if v < 1.0]
    if missed:
        print("missed: " + "; ".join(missed))
    if checks:
        print(f"{checks[-1][0].replace(' >= 1x', '')}: {checks[-1][1]:.2f}x (target >= 1)")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
