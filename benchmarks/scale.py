"""The full sweep's training step at full shapes, compiled (not run) on fake-device meshes.

For every model of jaxsae/configs/full.toml (30 SAEs = 5 architectures x 6 levels, width 16384, batch
2048) on an 8xH100 host (8 devices) and a v5e-64 slice (64 devices), with the launcher's own layout
rule (``jaxsae.train.layout.choose_layout``), the real sweep step (``jaxsae.train.trainer.make_step``)
is lowered from ``jax.ShapeDtypeStruct``s (nothing is allocated) and compiled by the CPU compiler
with ``--xla_force_host_platform_device_count``. Printed per model and layout:

  * bytes per device: arguments, outputs, temporaries, aliased (``memory_analysis()``) and their
    peak = arguments + outputs + temporaries - aliased;
  * collective bytes per device per step, read from the HLO text (all-reduce, all-gather,
    reduce-scatter, collective-permute, all-to-all result bytes; a while loop's body times its known
    trip count; a conditional's branches counted once, by the larger);
  * FLOPs per device: XLA's ``cost_analysis()`` and the analytic 12·d·F·B per SAE (on the device's
    SAEs, padding included);
  * a roofline step time = max(FLOPs / peak bf16, HBM bytes / HBM bandwidth, wire bytes /
    interconnect bandwidth), with the hardware figures of /work/shared/reference/scale.md (vendor
    documentation): H100 SXM 989 TFLOP/s bf16 dense, 3.35 TB/s HBM, NVLink 900 GB/s per GPU (both
    directions, so 450 GB/s each way); TPU v5e 197 TFLOP/s bf16, 819 GB/s HBM, ICI 400 GB/s per chip
    (both directions, 200 GB/s each way). Wire bytes of a ring collective over g devices:
    2(g-1)/g x bytes for an all-reduce, (g-1)/g for an all-gather / reduce-scatter / all-to-all,
    1x for a permute. HBM bytes are XLA's "bytes accessed" (the CPU cost model: every operand and
    result of every top-level op) less the CPU backend's write and re-read of the top-k radix
    compare [digits, .., B, F], which it materialises ahead of its reduce-window tree where a GPU/TPU
    reduction fusion reads the [B, F] bit patterns once (both figures are printed).
    Left out: overlap of compute and communication, kernel efficiency, the LLM forward beside it.

What is compiled: the trainer's step as it runs, f32 master weights and optax (Adam) state, an f32
batch; ``--matmul bf16`` compiles it with ``train.matmul_dtype = "bfloat16"`` (the encoder / decoder
matmuls take bf16 operands and accumulate in f32, forward and backward: what "auto" picks on a GPU or
TPU), which changes nothing in the state; the default, f32, is ``matmul_dtype = "float32"``.

The issue's "Done when" thresholds are checked (<= 16 GB/device on 8 devices, <= 12 GB/chip on
64, collectives <= 1.5 GB/device/step on 8, roofline within 2x of pure compute at bf16 peak); the
script exits non-zero when one is missed. The CPU compiler's buffer assignment is not the GPU's or
the TPU's: keep a margin.

    python benchmarks/scale.py                       # every model, 8 and 64 devices
    python benchmarks/scale.py --models Gemma-2-9B --devices 8
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/select.py would shadow the standard library's select module
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
from dataclasses import dataclass  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

D_MODEL = {"google/gemma-2-2b": 2304, "Qwen/Qwen2.5-3B": 2048, "google/gemma-2-9b": 3584}
"""Residual width of each full.toml model (reference/models.md, the models' config.json)."""


@dataclass(frozen=True)
class Chip:
    name: str
    peak_bf16: float  # FLOP/s, dense
    hbm_bw: float  # bytes/s
    link_bw: float  # bytes/s each way per chip
    hbm: float  # bytes


# /work/shared/reference/scale.md, "Hardware figures" (vendors' documentation)
CHIPS = {8: Chip("8xH100 SXM", 989e12, 3.35e12, 450e9, 80e9), 64: Chip("v5e-64", 197e12, 819e9, 200e9, 16e9)}
TPU_TOPOLOGY = {8: "v5e:2x4", 64: "v5e:8x8"}
"""``--target tpu``: the v5e slice compiled for (libtpu's deviceless ahead-of-time compiler)."""
LIMIT_BYTES = {8: 16e9, 64: 12e9}
"""The issue's memory ceilings per device (room for the model on an 80 GB H100; a 16 GB v5e chip)."""
LIMIT_COLLECTIVE_8 = 1.5e9
ROOFLINE_FACTOR = 2.0

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
_DTYPE_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
                "s8": 1, "u8": 1, "pred": 1, "f8e4m3fn": 1, "f8e5m2": 1}


# ------------------------------------------------------------------------------ HLO reading


def shape_bytes(text: str) -> int:
    """Bytes of every array shape in ``text`` (an HLO result type such as ``f32[2,3]{1,0}`` or a
    tuple ``(f32[2], s32[4,4])``)."""
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]", text):
        if dtype not in _DTYPE_BYTES:
            continue
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _DTYPE_BYTES[dtype]
    return total


def computations(hlo: str) -> dict[str, list[str]]:
    """The instruction lines of each computation of an HLO module's text, by name (ENTRY under
    "ENTRY" too)."""
    comps: dict[str, list[str]] = {}
    cur = None
    for line in hlo.splitlines():
        m = re.match(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if m and not line[:1].isspace() and not line.startswith("HloModule"):
            cur = m.group(2)
            comps[cur] = []
            if m.group(1):
                comps["ENTRY"] = comps[cur]
            continue
        if line.startswith("}"):
            cur = None
            continue
        if cur is not None and line.strip():
            comps[cur].append(line.strip())
    return comps


def _group_size(line: str) -> int:
    """Devices in each replica group of a collective (1 when it cannot be read)."""
    m = re.search(r"replica_groups=\{\{([0-9,]+)\}", line)
    if m:
        return len(m.group(1).split(","))
    m = re.search(r"replica_groups=\[(\d+),(\d+)\]", line)  # iota form [groups, size]
    if m:
        return int(m.group(2))
    m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)  # mesh form: axes named
    if m:
        sizes = dict((k.strip("' "), int(v)) for k, v in (p.split("=") for p in m.group(1).split(",")))
        return max(1, int(__import__("math").prod(sizes[a.strip("' ")] for a in m.group(2).split(",") if a.strip())))
    return 1


def _op_of(line: str) -> str | None:
    m = re.match(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s([a-z][a-z0-9\-]*)\(", line)
    if not m:
        return None
    op = m.group(2)
    return op[:-6] if op.endswith("-start") else op


def walk(hlo: str, count, keys) -> dict[str, list[float]]:
    """Sum ``count(line, op) -> {key: [a, b]}`` over the instructions one step executes: while
    bodies times their known trip count (1 when unknown), a conditional's largest branch (by the
    first figure summed over keys) once, called computations (calls=, to_apply=) once per call."""
    comps = computations(hlo)
    memo: dict[str, dict[str, list[float]]] = {}

    def add(acc, part, n=1):
        for k, (a, b) in part.items():
            acc[k][0] += n * a
            acc[k][1] += n * b

    def total(name: str) -> dict[str, list[float]]:
        if name in memo:
            return memo[name]
        memo[name] = {k: [0.0, 0.0] for k in keys}  # recursion guard
        acc = {k: [0.0, 0.0] for k in keys}
        for line in comps.get(name, []):
            op = _op_of(line)
            add(acc, count(line, op))
            if op == "while":
                trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
                add(acc, total(re.search(r"body=%?([\w.\-]+)", line).group(1)), int(trip.group(1)) if trip else 1)
            elif op == "conditional":
                names = re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", line)
                m = re.search(r"branch_computations=\{([^}]*)\}", line)
                if m:
                    names += [s.strip().lstrip("%") for s in m.group(1).split(",")]
                branches = [total(n) for n in names]
                if branches:
                    add(acc, max(branches, key=lambda t: sum(v[0] for v in t.values())))
            elif op not in COLLECTIVES and op != "fusion":  # a fusion's inside is not memory traffic
                for callee in re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", line):
                    add(acc, total(callee))
        memo[name] = acc
        return acc

    return total("ENTRY")


def _collective(line: str, op: str | None) -> dict[str, list[float]]:
    if op not in COLLECTIVES:
        return {}
    rtype = line.split("=", 1)[1].split(f" {op}", 1)[0]
    b = shape_bytes(rtype)
    if rtype.strip().startswith("(") and "-start(" in line:  # async start: (operand, result, ...)
        b = max(shape_bytes(t) for t in re.findall(r"[a-z0-9]+\[[0-9,]*\]", rtype))
    g = _group_size(line)
    if op == "reduce-scatter":
        b *= g  # the operand is g times the result
    wire = {"all-reduce": 2 * (g - 1) / g, "collective-permute": 1.0}.get(op, (g - 1) / g) * b
    return {op: [b, wire]}


def collective_bytes(hlo: str) -> dict[str, dict[str, float]]:
    """Per collective kind: {"bytes": result bytes per device per step, "wire": bytes each device
    sends (ring algorithm)}, counted as :func:`walk` does (``-done`` halves of async pairs are not
    collectives of their own)."""
    got = walk(hlo, _collective, COLLECTIVES)
    return {k: {"bytes": b, "wire": w} for k, (b, w) in got.items()}


RADIX_DIGITS = (7, 15)
"""Candidate counts of the top-k radix passes (ops.kth_largest_bits: 3- and 4-bit digits)."""


def _radix_compare(line: str, op: str | None) -> dict[str, list[float]]:
    """Bytes of a top-level (unfused) result of rank >= 3 with an axis of a radix pass's candidates
    and at least 1 MB: the CPU backend writes the [digits, .., B, F] compare out before reducing it."""
    if op is None or op in ("parameter", "get-tuple-element", "tuple"):
        return {}
    rtype = line.split("=", 1)[1].split(f" {op}", 1)[0].strip()
    m = re.fullmatch(r"([a-z0-9]+)\[([0-9,]+)\](\{[0-9,]*\})?", rtype)
    dims = [int(d) for d in m.group(2).split(",")] if m else []
    if len(dims) < 3 or not any(d in RADIX_DIGITS for d in dims):
        return {}
    b = shape_bytes(rtype)
    return {"radix": [b, b]} if b >= 1 << 20 else {}


def radix_materialised_bytes(hlo: str) -> float:
    """HBM bytes the CPU compiler spends writing and re-reading the top-k radix compare
    [.., B, F, digits] (a GPU or TPU reduction fusion computes it in registers from one read of the
    [B, F] bit patterns)."""
    return 2 * walk(hlo, _radix_compare, ("radix",))["radix"][0]


# ------------------------------------------------------------------------------ the compile


def full_sweep():
    """(models [(name, d_model)], specs, TrainSettings, the same settings) of jaxsae/configs/full.toml."""
    from jaxsae.launch.config import load_config

    cfg = load_config("full")
    st = cfg.train.resolved()
    models = [(m.name, D_MODEL[m.source]) for m in cfg.models]
    return models, cfg.train.sweep(), st, st


def launcher_layout(n_devices: int, specs, st, train_cfg, fixed: tuple[int, int, int] = (0, 0, 0)):
    """The layout ``stage_train`` picks for this sweep on ``n_devices`` devices (``fixed``: sweep,
    feat, data shards set as ``[train]`` would set them; 0 = the rule's choice)."""
    from jaxsae.train.layout import choose_layout
    from jaxsae.train.trainer import groups_of

    sweep, feat, data = (f or getattr(train_cfg, k, 0) for f, k in zip(fixed, ("sweep_shards", "feat_shards", "data_shards")))
    return choose_layout(n_devices, [len(g.names) for g in groups_of(specs)], st.d_sae, st.batch,
                         sweep=sweep, feat=feat, data=data)


MATMUL_DTYPE = {"f32": "float32", "bf16": "bfloat16"}
"""``--matmul`` -> ``train.matmul_dtype``."""


def compile_step(d_in: int, specs, st, layout, matmul: str = "f32", devices=None):
    """The compiled sweep step of ``specs`` at width ``d_in`` on ``layout`` over ``devices``
    (default: the fake CPU devices; or a TPU topology's compile-only devices), its SAE matmuls in
    ``matmul`` (f32 | bf16, see :data:`MATMUL_DTYPE`)."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    from jaxsae.sae import ArchConfig
    from jaxsae.train.layout import mesh_of
    from jaxsae.train.trainer import abstract_state, make_step

    from jaxsae.sae import ops

    ops.DIGIT_BITS = 4  # the accelerators' top-k (8 radix passes), not the CPU's 31-pass bisection
    dtype = MATMUL_DTYPE[matmul]
    st = dataclasses.replace(st.effective(), matmul_dtype=dtype)
    mesh = mesh_of(layout, jax.devices()[: layout.size] if devices is None else devices)
    arch_cfg = ArchConfig(dead_tokens=st.dead_tokens, matmul_dtype=dtype)  # as train_sweep's effective_recipe
    state = abstract_state(specs, d_in, st, arch_cfg, mesh)
    shardings = jax.tree.map(lambda a: a.sharding, state)
    step = make_step(specs, st, arch_cfg, shardings)
    x = jax.ShapeDtypeStruct((st.batch, d_in), jnp.float32, sharding=NamedSharding(mesh, P("data")))
    return step.lower(state, x).compile()


def tpu_devices(n_devices: int) -> list:
    """The compile-only devices of a TPU v5e slice of ``n_devices`` chips (libtpu, no TPU needed)."""
    from jax.experimental import topologies

    if n_devices not in TPU_TOPOLOGY:
        raise SystemExit(f"--target tpu compiles for {', '.join(map(str, TPU_TOPOLOGY))} devices, not {n_devices}")
    return list(topologies.get_topology_desc(TPU_TOPOLOGY[n_devices], "tpu").devices)


def measure(name: str, d_in: int, n_devices: int, matmul: str, target: str = "cpu",
            fixed: tuple[int, int, int] = (0, 0, 0)) -> dict:
    from jaxsae.train.layout import padded
    from jaxsae.train.trainer import groups_of

    _, specs, st, train_cfg = full_sweep()
    lay = launcher_layout(n_devices, specs, st, train_cfg, fixed)
    devices = tpu_devices(n_devices) if target == "tpu" else None
    compiled = compile_step(d_in, specs, st, lay, matmul, devices)
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    hlo = compiled.as_text()
    if os.environ.get("SCALE_HLO_DIR"):  # keep the compiled program for reading
        Path(os.environ["SCALE_HLO_DIR"], f"{name}-{n_devices}-{matmul}-{target}.hlo.txt").write_text(hlo)
    coll = collective_bytes(hlo)
    radix = radix_materialised_bytes(hlo) if target == "cpu" else 0.0  # the TPU compiler fuses it
    n_saes = sum(padded(len(g.names), lay.sweep) for g in groups_of(specs))
    analytic = 12 * d_in * st.d_sae * st.batch * n_saes / n_devices
    return {
        "model": name, "d_in": d_in, "devices": n_devices, "layout": str(lay), "matmul": matmul, "target": target,
        # the TPU compiler's own estimate, where it gives one (deviceless compiles report a negative sentinel)
        "optimal_seconds": float(cost["optimal_seconds"]) if float(cost.get("optimal_seconds", -1.0)) > 0 else None,
        "saes": len(specs), "saes_padded": n_saes,
        "argument": mem.argument_size_in_bytes, "output": mem.output_size_in_bytes,
        "temp": mem.temp_size_in_bytes, "alias": mem.alias_size_in_bytes,
        "flops_xla": float(cost.get("flops", 0.0)), "bytes_xla": float(cost.get("bytes accessed", 0.0)),
        "flops_analytic": analytic, "collectives": coll, "radix_cpu_bytes": radix,
    }


def figures(r: dict) -> dict:
    """Derived figures of one measurement: peak bytes, collective totals, roofline terms."""
    chip = CHIPS[64] if r.get("target") == "tpu" else CHIPS[r["devices"]]
    peak = r["argument"] + r["output"] + r["temp"] - r["alias"]
    coll = sum(v["bytes"] for v in r["collectives"].values())
    wire = sum(v["wire"] for v in r["collectives"].values())
    t_compute = r["flops_analytic"] / chip.peak_bf16
    hbm = max(r["bytes_xla"] - r.get("radix_cpu_bytes", 0.0), 0.0)
    terms = {"flops": max(r["flops_xla"], r["flops_analytic"]) / chip.peak_bf16, "hbm": hbm / chip.hbm_bw,
             "link": wire / chip.link_bw}
    roof = max(terms.values())
    return {"peak": peak, "coll": coll, "wire": wire, "t_compute": t_compute, "terms": terms, "roofline": roof,
            "bound": max(terms, key=terms.get)}


def check(r: dict) -> list[str]:
    """The issue's "Done when" thresholds this measurement misses (empty when it meets them)."""
    f, n = figures(r), r["devices"]
    bad = []
    tpu = r.get("target") == "tpu"
    limit = LIMIT_BYTES[64] if tpu else LIMIT_BYTES[n]  # a v5e chip has 16 GB whatever the slice
    if f["peak"] > limit:
        bad.append(f"{f['peak'] / 1e9:.1f} GB per device > {limit / 1e9:.0f} GB")
    if n == 8 and not tpu and f["coll"] > LIMIT_COLLECTIVE_8:
        bad.append(f"collectives {f['coll'] / 1e9:.2f} GB per device per step > {LIMIT_COLLECTIVE_8 / 1e9} GB")
    if f["roofline"] > ROOFLINE_FACTOR * f["t_compute"]:
        bad.append(f"roofline {f['roofline'] * 1e3:.2f} ms > {ROOFLINE_FACTOR:g} x pure compute "
                   f"{f['t_compute'] * 1e3:.2f} ms ({f['bound']}-bound)")
    return bad


def row(r: dict) -> str:
    f = figures(r)
    gb = lambda b: f"{b / 1e9:6.2f}"  # noqa: E731
    parts = " ".join(f"{k.split('-')[0][:7]} {v['bytes'] / 1e9:.3f}" for k, v in r["collectives"].items() if v["bytes"])
    est = f" | TPU compiler's estimate {r['optimal_seconds'] * 1e3:.2f} ms" if r.get("optimal_seconds") else ""
    return (f"{r['model']:<12} {r.get('target', 'cpu')} {r['devices']:>3} {r['layout']:<26} args {gb(r['argument'])} out {gb(r['output'])} "
            f"temp {gb(r['temp'])} alias {gb(r['alias'])} peak {gb(f['peak'])} GB | HBM xla {gb(r['bytes_xla'])} "
            f"less radix {gb(r.get('radix_cpu_bytes', 0.0))} GB | coll {gb(f['coll'])} GB ({parts or '-'}) | "
            f"TFLOP xla {r['flops_xla'] / 1e12:6.2f} analytic {r['flops_analytic'] / 1e12:6.2f} | "
            f"roofline {f['roofline'] * 1e3:6.2f} ms ({f['bound']}; flops {f['terms']['flops'] * 1e3:.2f}, "
            f"hbm {f['terms']['hbm'] * 1e3:.2f}, link {f['terms']['link'] * 1e3:.2f}) vs compute {f['t_compute'] * 1e3:.2f} ms{est}")


def libtpu_path() -> str:
    """A folder holding the ``libtpu`` package (for ``--target tpu``): $JAXSAE_LIBTPU, else .venv/libtpu,
    else wherever Python finds it; a one-line error naming the install command when none has it."""
    import importlib.metadata
    import importlib.util

    for cand in (os.environ.get("JAXSAE_LIBTPU", ""), str(ROOT / ".venv" / "libtpu")):
        if cand and (Path(cand) / "libtpu").is_dir():
            return cand
    spec = importlib.util.find_spec("libtpu")
    if spec is not None and spec.origin:
        return str(Path(spec.origin).parents[1])
    pin = next((r.split(";")[0].replace(" ", "") for r in importlib.metadata.requires("jax") or []
                if r.startswith("libtpu")), "libtpu")
    raise SystemExit(f"--target tpu needs libtpu (the TPU compiler; no TPU needed): make .venv/libtpu, or "
                     f"pip install --no-deps --target .venv/libtpu '{pin}'")


def run_child(models: list[str], n_devices: int, matmul: str, timeout: int, target: str = "cpu",
              layout: str = "") -> list[dict]:
    """Measure in a fresh process that sees ``n_devices`` fake CPU devices (``target`` cpu) or
    compiles for a TPU v5e slice of ``n_devices`` chips (``target`` tpu)."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}", JAX_PLATFORMS="cpu")
    if target == "tpu":  # libtpu on the child's path only: the library and tests never see it
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
            p for p in (libtpu_path(), os.environ.get("PYTHONPATH", "")) if p))
        env.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-" + str(n_devices))  # quiets libtpu's host probing
    cmd = [sys.executable, __file__, "--child", "--devices", str(n_devices), "--matmul", matmul, "--models", ",".join(models),
           "--target", target, "--layout", layout]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"compiling on {n_devices} {target} devices failed:\n{r.stderr[-3000:]}")
    return [json.loads(ln[len("RESULT "):]) for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="", help="comma-separated model names of full.toml (default: all)")
    ap.add_argument("--devices", default="8,64", help="device counts to compile for (8: 8xH100, 64: v5e-64)")
    ap.add_argument("--matmul", choices=("f32", "bf16"), default="f32",
                    help="train.matmul_dtype of the compiled step (bf16: bf16 operands, f32 accumulation)")
    ap.add_argument("--target", choices=("cpu", "tpu"), default="cpu",
                    help="cpu: XLA's CPU compiler on fake devices; tpu: libtpu's own compiler for a v5e slice "
                         "(ahead of time, no TPU needed; its fusions, buffers and cost model)")
    ap.add_argument("--layout", default="", help="sweep,feat,data shards (0: the launcher's rule), as [train] "
                    "sweep_shards / feat_shards / data_shards would set them; default: the launcher's layout")
    ap.add_argument("--json", default="", help="also write the measurements to this file")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    models, _, _, _ = full_sweep()
    want = [m for m in a.models.split(",") if m] or [m for m, _ in models]
    unknown = set(want) - {m for m, _ in models}
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(sorted(unknown))}; full.toml has {', '.join(m for m, _ in models)}")
    if a.layout and (len(a.layout.split(",")) != 3 or not all(v.strip().isdigit() for v in a.layout.split(","))):
        raise SystemExit(f"--layout takes three whole numbers sweep,feat,data (0: the launcher's rule), not {a.layout!r}")
    if a.child:
        for name, d in models:
            if name in want:
                fixed = tuple(int(v) for v in a.layout.split(",")) if a.layout else (0, 0, 0)
                print("RESULT " + json.dumps(measure(name, d, int(a.devices), a.matmul, a.target, fixed)), flush=True)
        return 0
    results = []
    for n in (int(v) for v in a.devices.split(",")):
        for name in want:  # one process per model: the compiler's memory is returned between models
            results += run_child([name], n, a.matmul, a.timeout, a.target, a.layout)
            print(row(results[-1]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    misses = [(r, check(r)) for r in results]
    for r, bad in misses:
        where = f"{r['model']} on {r['devices']} ({r.get('target', 'cpu')})"
        print(f"{where}: " + ("meets the thresholds" if not bad else "MISSES: " + "; ".join(bad)))
    return 1 if any(bad for _, bad in misses) else 0


if __name__ == "__main__":
    sys.exit(main())
