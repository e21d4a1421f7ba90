"""Train a sweep end to end: normalise, step, log, checkpoint, resume, export, list.

Output folder::

    <out>/sweep.json          the sweep: per SAE its architecture, sparsity, final L0 and FVU
    <out>/<sae-name>/         SAELens-v6 folder (cfg.json + sae_weights.safetensors)
    <out>/metrics.jsonl       per-SAE metrics every ``log_every`` steps
    <out>/checkpoints/        Orbax checkpoints (removed once the sweep is exported)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxsae.sae as S
from jaxsae.distributed import barrier, to_host
from jaxsae.errors import UserError
from jaxsae.io import atomic_write_json, atomic_write_text
from jaxsae.sae import ARCHS, ArchConfig
from jaxsae.train.data import ActivationArray, norm_scale
from jaxsae.train.spec import SAESpec, TrainSettings, check_sweep
from jaxsae.train.trainer import first_bad, groups_of, init_state, make_step, metrics_rows, shard_state, state_shardings


def make_mesh(sweep: int = 1, data: int | None = None) -> Mesh | None:
    """A ("sweep", "data") mesh over all devices, of every process (None on a single device)."""
    n = jax.device_count()
    data = n // sweep if data is None else data
    if sweep * data != n:
        raise UserError(f"mesh {sweep}x{data} does not match the {n} devices; choose sizes whose product is {n}")
    if n == 1:
        return None
    devices = np.asarray(jax.devices()).reshape(sweep, data)
    return Mesh(devices, ("sweep", "data"))


def sweep_signature(specs: list[SAESpec], st: TrainSettings, d_in: int) -> dict:
    return {"saes": [s.name for s in specs], "d_in": d_in, "d_sae": st.d_sae, "batch": st.batch,
            "steps": st.steps, "lr": st.lr, "seed": st.seed}


def _check_out(out: Path, signature: dict) -> dict | None:
    """The finished sweep.json if ``out`` already holds this sweep; refuses a different one."""
    for name in ("sweep.json", "signature.json"):
        p = out / name
        if p.exists():
            try:
                old = json.loads(p.read_text())
            except json.JSONDecodeError:
                continue
            sig = old.get("signature", old)
            if sig != signature:
                raise UserError(
                    f"{out} already holds a different sweep ({', '.join(sig.get('saes', [])[:3])}...); "
                    "pass a new --out folder"
                )
            if name == "sweep.json":
                return old
    return None


def _checkpointer(path: Path):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(path.resolve(), options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def export_sweep(state, specs: list[SAESpec], st: TrainSettings, scale: float, d_in: int, out: Path,
                 metadata: dict, arch_cfg: ArchConfig) -> dict[str, Path]:
    """Write every SAE of the sweep as a SAELens-v6 folder with the normalisation folded in
    (``state`` on the host, see :func:`jaxsae.distributed.to_host`)."""
    host = to_host(state)
    paths = {}
    by_name = {s.name: s for s in specs}
    for g in groups_of(specs):
        arch = ARCHS[g.arch]
        grp = host["groups"][g.arch]
        for i, name in enumerate(g.names):
            params = jax.tree.map(lambda a: jnp.asarray(a[i]), grp["params"])
            aux = jax.tree.map(lambda a: jnp.asarray(a[i]), grp["aux"])
            sae_arch, tensors, extra = arch.export(params, aux, g.sparsity[i], arch_cfg, scale)
            extra = dict(extra)
            apply_b_dec = bool(extra.pop("apply_b_dec_to_input", True))
            private = {k[1:]: v for k, v in extra.items() if k.startswith("_")}
            public = {k: v for k, v in extra.items() if not k.startswith("_")}
            spec = by_name[name]
            md = {**metadata, "jaxsae": {"trained_architecture": g.arch, "sparsity": g.sparsity[i], "level": spec.level,
                                         "activation_scale": scale, "steps": st.steps, "batch": st.batch, **private}}
            cfg = S.make_cfg(sae_arch, d_in, st.d_sae, apply_b_dec_to_input=apply_b_dec, metadata=md, **public)
            sae = S.SAE(cfg=cfg, params={k: jnp.asarray(v, jnp.float32) for k, v in tensors.items()})
            paths[name] = S.save(sae, out / name)
    return paths


def evaluate(sae, acts: ActivationArray, n_batches: int = 8, start: int = 0) -> dict:
    """L0 and fraction of variance unexplained of an exported SAE on raw activations."""
    l0, err, var, n = 0.0, 0.0, 0.0, 0
    xs = [acts.batch_at(start + i) for i in range(min(n_batches, acts.per_epoch))]
    mean = np.mean(np.concatenate(xs), axis=0)
    for x in xs:
        f = np.asarray(sae.encode(x))
        x_hat = np.asarray(sae.decode(f))
        l0 += float(np.sum(f != 0))
        err += float(np.sum((x - x_hat) ** 2))
        var += float(np.sum((x - mean) ** 2))
        n += len(x)
    return {"l0": l0 / n, "fvu": err / var}


def train_sweep(
    specs: list[SAESpec],
    acts: ActivationArray,
    st: TrainSettings,
    out: str | Path,
    *,
    mesh: Mesh | None = None,
    metadata: dict | None = None,
    arch_cfg: ArchConfig | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train (or resume, or just return) the sweep in ``out``; returns the sweep.json dict.

    ``stop_after``: stop (after checkpointing) once this many steps are done — for tests of
    interruption; the next call resumes.

    Several processes (``jax.distributed``): every process calls this with the same arguments and
    a ``mesh`` over all devices; each reads only its devices' rows of every batch, process 0
    alone writes the log, exported SAEs and sweep.json, and Orbax checkpoints are saved by all."""
    out = Path(out)
    d_in = acts.d_in
    check_sweep(specs, d_in, st.d_sae)
    st = st.effective()
    arch_cfg = arch_cfg or ArchConfig()
    arch_cfg = arch_cfg.replace(dead_tokens=st.dead_tokens,
                                threshold_start_step=min(arch_cfg.threshold_start_step, st.steps // 5))
    signature = sweep_signature(specs, st, d_in)
    writer = jax.process_index() == 0
    done = _check_out(out, signature)
    barrier("train_sweep: checked the output folder")  # before process 0 writes into it
    if done is not None:
        return done
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "signature.json", signature)
    scale = norm_scale(acts)
    ckpt_dir = out / "checkpoints"
    mngr = _checkpointer(ckpt_dir)
    first = acts.batch_at(0) / scale
    state = init_state(specs, d_in, st, first, arch_cfg)
    start = 0
    latest = mngr.latest_step()
    if latest is not None:
        import orbax.checkpoint as ocp

        if mesh is not None and jax.process_count() > 1:  # restore straight into the global placement
            abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state,
                                    state_shardings(state, mesh))
        else:
            abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
        state = mngr.restore(latest, args=ocp.args.StandardRestore(abstract))
        start = int(to_host(state["step"]))
    state = shard_state(state, mesh)
    data_sharding = NamedSharding(mesh, P("data")) if mesh is not None and mesh.shape.get("data", 1) > 1 else None
    if data_sharding is None and mesh is not None and jax.process_count() > 1:
        data_sharding = NamedSharding(mesh, P())  # the batch must be a global array too
    step_fn = make_step(specs, st, arch_cfg)
    log_path = out / "metrics.jsonl"
    log = None
    if writer:
        kept = []
        if log_path.exists():  # rows past the restored checkpoint are recomputed
            kept = [ln for ln in log_path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] < start]
        atomic_write_text(log_path, "".join(ln + "\n" for ln in kept))
        log = open(log_path, "a")
    steps = range(start, st.steps)
    bar = None
    if progress and writer:
        from tqdm import tqdm

        bar = tqdm(total=st.steps, initial=start, desc=f"train {len(specs)} SAEs", unit="step", dynamic_ncols=True)
    t0, tok0 = time.time(), 0
    try:
        for step in steps:
            if data_sharding is not None and not data_sharding.is_fully_addressable:
                # each process reads only the rows its devices hold
                x = jax.make_array_from_callback(
                    (st.batch, d_in), data_sharding, lambda index, step=step: acts.batch_at(step, index[0]) / scale)
            else:
                x = jnp.asarray(acts.batch_at(step) / scale)
                if data_sharding is not None:
                    x = jax.device_put(x, data_sharding)
            state, met = step_fn(state, x)
            bad = first_bad(met, specs)
            if bad is not None:
                raise UserError(
                    f"training diverged: SAE {bad} has a non-finite loss at step {step}; the last good checkpoint "
                    f"(step {mngr.latest_step()}) is kept in {ckpt_dir} — lower the learning rate and re-run"
                )
            done_steps = step + 1
            if done_steps % st.log_every == 0 or done_steps == st.steps:
                rows = metrics_rows(met, specs, step)  # every process: may be a collective
                if log is not None:
                    for row in rows:
                        log.write(json.dumps(row) + "\n")
                    log.flush()
            if bar is not None:
                tok0 += st.batch
                bar.update(1)
                bar.set_postfix(tok_s=f"{tok0 / max(time.time() - t0, 1e-9):,.0f}", sae_tok_s=f"{tok0 * len(specs) / max(time.time() - t0, 1e-9):,.0f}")
            if (st.checkpoint_every and done_steps % st.checkpoint_every == 0) or done_steps == stop_after:
                import orbax.checkpoint as ocp

                mngr.save(done_steps, args=ocp.args.StandardSave(to_host(state)))  # every process
                mngr.wait_until_finished()
            if stop_after is not None and done_steps >= stop_after:
                return {}
    finally:
        if log is not None:
            log.close()
        if bar is not None:
            bar.close()
        mngr.close()
    host = to_host(state)  # every process: a collective when the state spans processes
    if writer:
        md = {"d_sae_width": st.d_sae, **(metadata or {})}
        paths = export_sweep(host, specs, st, scale, d_in, out, md, arch_cfg)
        entries = []
        for s in specs:
            ev = evaluate(S.load(paths[s.name]), acts, start=max(0, acts.per_epoch - 8))
            entries.append({"name": s.name, "dir": s.name, "architecture": s.arch, "level": s.level,
                            "level_label": s.level_label, "sparsity": s.sparsity, **ev})
        result = {"signature": signature, "activation_scale": scale, "saes": entries}
        atomic_write_json(out / "sweep.json", result)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    barrier("train_sweep: exported")  # the others read what process 0 wrote
    if not writer:
        result = json.loads((out / "sweep.json").read_text())
    return result
