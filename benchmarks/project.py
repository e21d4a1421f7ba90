"""Projected wall time of the `full` sweep (jaxsae/configs/full.toml) on one 8×H100 host and a v5e-64 slice.

A projection, not a measurement: every component's work is counted from the sweep config and the
models' shapes (FLOPs for compute-bound work; bytes moved per decode step for memory-bound
generation), then divided by the peak of the chips that component actually runs on, times an
efficiency. The efficiencies default to what our kernels reach on the CPU we can measure on, as a
fraction of that CPU's own measured matmul peak (pass --measured-train/--measured-fwd from
benchmarks/train_sweep.py and benchmarks/forward.py), capped by --mfu-cap, since a fraction reached
on 2 CPU cores says little about an accelerator's. Decode uses --bw-eff of HBM bandwidth.

Which chips each component runs on is what the launcher does (README, "Scaling out"):
  * 8×H100: `launch/multi_gpu.sh`, one process per GPU (8 processes of 1 chip);
    v5e-64: `launch/tpu_pod.sh`, one process per host (16 processes of 4 chips, the model's
    weights split over a host's chips in the per-SAE stages);
  * SAE training: one computation sharded over every chip;
  * harvesting (streaming mode): each process runs the model only on the contexts of the batch
    rows it trains on (``data.harvest_shards`` = 16 row blocks in full.toml), so over every chip;
  * per-SAE stages (core metrics, statistics pass, AutoInterp, steering, ΔTC): each process takes
    every P-th SAE of a model, so a model's 30 SAEs take ceil(30 / P) rounds on one process's chips;
  * the judge rows count a local judge (judge.kind = "local", Gemma-2-9B-it); with full.toml's API
    judge that work runs at the provider (the paper: about $5 of gpt-4o-mini per SAE).
The paper's reported costs (2×A800) are printed beside it.

SAE training is not projected from an efficiency: its step time is the roofline of the compiled
full-shape step (``benchmarks/scale.py --json benchmarks/scale_full.json``, XLA's CPU compiler on
8 and 64 fake devices, and ``benchmarks/scale_tpu.json``, libtpu's compiler for the v5e-64, which
replaces the CPU compile's v5e-64 figures; read here through scale.py's own ``figures``), times
5e8 / 2048 steps, on all chips of the slice with the launcher's layout; without those files the
efficiency estimate is used and said so.

    python benchmarks/project.py [--measured-train 0.55] [--measured-fwd 0.45] [--mfu-cap 0.4]
                                 [--scale-json benchmarks/scale_full.json benchmarks/scale_tpu.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True)
class Model:
    name: str
    layer: int
    n_layers: int
    d: int
    ffn: int
    q_dim: int  # heads x head_dim
    kv_dim: int  # kv heads x head_dim
    vocab: int

    @property
    def per_layer(self) -> float:
        return self.d * (2 * self.q_dim + 2 * self.kv_dim) + 3 * self.d * self.ffn

    @property
    def params(self) -> float:
        return self.n_layers * self.per_layer + self.d * self.vocab

    def below(self) -> float:  # blocks 0..layer (early exit)
        return (self.layer + 1) * self.per_layer

    def above(self) -> float:  # the upper blocks and the unembedding
        return (self.n_layers - self.layer - 1) * self.per_layer + self.d * self.vocab


MODELS = [
    Model("Gemma-2-2B", 12, 26, 2304, 9216, 8 * 256, 4 * 256, 256_000),
    Model("Qwen-2.5-3B", 17, 36, 2048, 11008, 16 * 128, 2 * 128, 151_936),
    Model("Gemma-2-9B", 20, 42, 3584, 14336, 16 * 256, 8 * 256, 256_000),
]
JUDGE = Model("Gemma-2-9B-it (judge)", 41, 42, 3584, 14336, 16 * 256, 8 * 256, 256_000)

HW = {  # per chip: peak bf16 FLOP/s, peak f32-matmul FLOP/s, HBM bytes/s; then processes x chips each
    "8xH100": (989e12, 494e12, 3.35e12, 8, 1),  # TF32 for the f32 SAE matmuls
    "v5e-64": (197e12, 197e12, 819e9, 16, 4),  # f32 matmuls at bf16 passes' rate (default precision)
}
N_SAE = 30  # SAEs per model
PAPER_H = {"SAE training (30 SAEs / model)": [17, 37, 60], "AutoInterp (30 SAEs)": [4, 4.5, 6],
           "AxBench steering (30 SAEs)": [450, 480, 690]}


def full_sweep():
    """The `full` sweep's configuration (jaxsae/configs/full.toml): what the rows count."""
    from jaxsae.launch.config import load_config

    return load_config("full")


def steer_rows(cfg) -> int:
    """Steered generations per SAE: concepts x (dev instructions x factors + test instructions)."""
    st = cfg.steer
    dev = st.n_instructions // 2
    return st.n_concepts * (dev * len(st.factors) + (st.n_instructions - dev))


def components(a) -> dict[str, list[tuple[str, float, float]]]:
    """Per model: (component, FLOPs, decode bytes) of the full sweep, counted from full.toml."""
    cfg = full_sweep()
    n_sae, tokens, F = N_SAE, float(cfg.train.tokens), cfg.train.d_sae
    st = cfg.steer
    out = {}
    for m in MODELS:
        rows = []
        rows.append(("harvest (5e8 tokens, early exit)", 2 * m.below() * tokens, 0.0))
        rows.append(("SAE training (30 SAEs, one stream)", n_sae * 12 * m.d * F * tokens, 0.0))
        metric_tok, stats_tok = 409_600, 2_000_000
        rows.append(("core metrics", metric_tok * (2 * m.below() + 2 * 2 * m.above() + n_sae * (4 * m.d * F + 2 * m.above())), 0.0))
        rows.append(("statistics pass", stats_tok * (2 * m.below() + n_sae * 2 * m.d * F), 0.0))
        n_lat = cfg.autointerp.n_latents
        ai_tokens = n_lat * (700 + 14 * 150)  # explanation prompt + 14 detection windows with instructions
        rows.append((f"AutoInterp ({n_lat} latents, local 9B judge)", n_sae * ai_tokens * 2 * JUDGE.params, 0.0))
        gens = steer_rows(cfg)
        batch, steps, ctx = 256, st.max_new_tokens, 200  # steer.batch's default on GPU / TPU
        n_batches = -(-gens // batch)
        kv = batch * ctx * m.n_layers * 2 * m.kv_dim * 2  # bf16 K and V read per step
        dec_bytes = n_sae * n_batches * steps * (2 * m.params + kv)
        rows.append((f"steering generation ({gens} x {steps} tokens / SAE)", n_sae * gens * (steps + 40) * 2 * m.params,
                     dec_bytes))
        rows.append((f"steering judge (3 ratings x {gens} / SAE)", n_sae * gens * 3 * 350 * 2 * JUDGE.params, 0.0))
        sel = cfg.select
        scored = F if sel.pool == "all" else st.n_concepts
        readings = 3 if sel.compare_readings else 1
        rows.append((f"ΔTC ({readings} readings) + output score ({scored} latents, select.pool = {sel.pool!r})",
                     n_sae * scored * (readings + 1) * 2 * (m.above() + m.d * m.vocab), 0.0))
        out[m.name] = rows
    return out


def chips_for(name: str, hw: str) -> tuple[int, float]:
    """(chips the component runs on at once, rounds of that work): see the module docstring."""
    _, _, _, procs, per_proc = HW[hw]
    if name.startswith(("SAE training", "harvest")):
        return procs * per_proc, 1.0
    return per_proc, -(-N_SAE // procs) / N_SAE  # per-SAE stages: ceil(30 / P) of the 30 SAEs each


DEVICES = {"8xH100": 8, "v5e-64": 64}
SCALE: dict = {}
"""(model, hw) -> roofline seconds per training step, from benchmarks/scale.py's measurements."""


def load_scale(paths: list[Path]) -> list[Path]:
    """Fill :data:`SCALE` from scale.py's ``--json`` outputs, a later file's figures replacing an
    earlier one's; returns the files read."""
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scale import figures  # noqa: PLC0415 - benchmarks/ is not a package

    read = []
    for path in paths:
        if not path.exists():
            continue
        for r in json.loads(path.read_text()):
            hw = {v: k for k, v in DEVICES.items()}.get(r["devices"])
            if hw is not None:
                SCALE[(r["model"], hw)] = figures(r)["roofline"]
        read.append(path)
    return read


def seconds(name: str, flops: float, dec_bytes: float, hw: str, eff_train: float, eff_fwd: float, bw_eff: float,
            model: str = "") -> float:
    bf16, f32, bw, _, _ = HW[hw]
    if name.startswith("SAE training") and (model, hw) in SCALE:
        return SCALE[(model, hw)] * (5e8 / 2048)  # compiled step's roofline x steps
    chips, share = chips_for(name, hw)
    if name.startswith("SAE training") or name.startswith("statistics"):
        t = flops / (chips * f32 * eff_train)
    else:
        t = flops / (chips * bf16 * eff_fwd)
    if dec_bytes:
        t = max(t, dec_bytes / (chips * bw * bw_eff))
    return t * share


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measured-train", type=float, default=0.55,
                    help="fraction of matmul peak the sweep step reaches (benchmarks/train_sweep.py)")
    ap.add_argument("--measured-fwd", type=float, default=0.45,
                    help="fraction of matmul peak the model forward reaches (benchmarks/forward.py)")
    ap.add_argument("--mfu-cap", type=float, default=0.4, help="upper bound on the efficiency assumed on accelerators")
    ap.add_argument("--bw-eff", type=float, default=0.5, help="fraction of HBM bandwidth reached by batched decode")
    ap.add_argument("--api-latency", type=float, default=2.0, help="seconds per API judge request (assumed)")
    here = Path(__file__).resolve().parent
    ap.add_argument("--scale-json", type=Path, nargs="+", default=[here / "scale_full.json", here / "scale_tpu.json"],
                    help="benchmarks/scale.py --json outputs (a later file's figures replace an earlier one's): SAE "
                         "training from the compiled step's roofline")
    a = ap.parse_args()
    read = load_scale(a.scale_json)
    missing = [hw for hw in DEVICES if not any(k[1] == hw for k in SCALE)]
    if read:
        print(f"SAE training: compiled full-shape step's roofline x 5e8/2048 steps ({', '.join(p.name for p in read)}, "
              "benchmarks/scale.py)" + (f"; none for {', '.join(missing)}: projected there from the efficiency below"
                                        if missing else ""))
    else:
        print(f"SAE training: none of {', '.join(str(p) for p in a.scale_json)}; projected from the efficiency below "
              "(run benchmarks/scale.py --json)")
    e_tr, e_fw = min(a.measured_train, a.mfu_cap), min(a.measured_fwd, a.mfu_cap)
    print(f"efficiency assumed: SAE training {e_tr:.2f}, forwards {e_fw:.2f} of peak; decode {a.bw_eff:.2f} of HBM bandwidth")
    for hw, (_, _, _, procs, per_proc) in HW.items():
        print(f"{hw}: {procs} processes x {per_proc} chip(s); training and harvesting on all {procs * per_proc} "
              f"chips, per-SAE stages on {procs} processes at once")
    print()
    comp = components(a)
    totals = {hw: 0.0 for hw in HW}
    print(f"| component | {' | '.join(m.name for m in MODELS)} | total 8×H100 | total v5e-64 |")
    print("|---|" + "---|" * (len(MODELS) + 2))
    names = [r[0] for r in next(iter(comp.values()))]
    for i, name in enumerate(names):
        per = [comp[m.name][i] for m in MODELS]
        cells = [f"{p[1] / 1e18:.3g} EFLOP" for p in per]
        t = {hw: sum(seconds(name, p[1], p[2], hw, e_tr, e_fw, a.bw_eff, m.name) for p, m in zip(per, MODELS))
             for hw in HW}
        for hw in HW:
            totals[hw] += t[hw]
        print(f"| {name} | {' | '.join(cells)} | {t['8xH100'] / 3600:.2f} h | {t['v5e-64'] / 3600:.2f} h |")
    print(f"| **all 90 SAEs, every stage** | | | | **{totals['8xH100'] / 3600:.1f} h** | **{totals['v5e-64'] / 3600:.1f} h** |")
    print("\nThe paper, on 2×A800 (Gemma-2-2B / Qwen-2.5-3B / Gemma-2-9B; steering = 15–23 h per SAE × 30):")
    for k, v in PAPER_H.items():
        print(f"- {k}: {' / '.join(f'{x:g} h' for x in v)} (total {sum(v):g} h)")
    print(f"- total ≈ {sum(sum(v) for v in PAPER_H.values()):.0f} h of wall time")
    api_judge(a)


def api_judge(a) -> None:
    """With full.toml's API judge the judge rows above run at the provider: its wall time is the
    requests over the concurrency of every process (each has its own client), at an assumed
    latency; the steering stage overlaps it with generation, so it is a floor on that stage."""
    cfg = full_sweep()
    j = cfg.judge
    per_sae = 2 * cfg.autointerp.n_latents + 3 * steer_rows(cfg)  # explanation + detection; 3 ratings a row
    n = per_sae * N_SAE * len(MODELS)
    print(f"\nWith full.toml's judge (judge.kind = {j.kind!r}, {j.model}, max_concurrency {j.max_concurrency} per process), "
          f"at an assumed {a.api_latency:g} s per request:")
    print(f"- {per_sae:,} requests per SAE (AutoInterp {2 * cfg.autointerp.n_latents:,}, steering {3 * steer_rows(cfg):,}), "
          f"{n:,} for the 90 SAEs")
    for hw, (_, _, _, procs, _) in HW.items():
        hours = n * a.api_latency / (procs * j.max_concurrency) / 3600
        print(f"- {hw}: {procs} processes x {j.max_concurrency} in flight: {hours:.1f} h of judge wall time "
              "(if the provider's rate limits allow it), overlapped with steering generation")


if __name__ == "__main__":
    main()
