"""Train a sweep end to end: normalise, step, log, checkpoint, resume, export, list.

Output folder::

    <out>/sweep.json          the sweep: per SAE its architecture, sparsity, final L0 and FVU
    <out>/<sae-name>/         SAELens-v6 folder (cfg.json + sae_weights.safetensors)
    <out>/metrics.jsonl       per-SAE metrics every ``log_every`` steps
    <out>/checkpoints/        Orbax checkpoints (removed once the sweep is exported)
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from jaxsae.sae.arch import fold_decoder_norms
from jaxsae.train.data import ActivationArray, norm_scale
from jaxsae.train.prefetch import Prefetcher
from jaxsae.train.shards import METADATA_KEYS
from jaxsae.train.layout import Layout, choose_layout, layout_of, mesh_of
from jaxsae.train.spec import SAESpec, TrainSettings, check_sweep, describe_scaled, resolve_matmul_dtype, scaled_down
from jaxsae.train.trainer import (abstract_state, first_bad_step, groups_of, init_state_sharded, make_step, metrics_rows,
                                  state_shardings)


def make_mesh(sweep: int = 1, data: int | None = None, feat: int = 1) -> Mesh | None:
    """A ("sweep", "data", "feat") mesh over all devices, of every process (None on a single
    device); ``data`` defaults to the devices left by ``sweep`` and ``feat``. See
    :mod:`jaxsae.train.layout`."""
    n = jax.device_count()
    data = n // (sweep * feat) if data is None else data
    if sweep * data * feat != n:
        raise UserError(f"mesh sweep {sweep} x data {data} x feat {feat} does not match the {n} devices; "
                        f"choose sizes whose product is {n}")
    if n == 1:
        return None
    return mesh_of(Layout(sweep=sweep, feat=feat, data=data))


def auto_mesh(specs: list[SAESpec], st: TrainSettings) -> Mesh | None:
    """The mesh the launcher trains ``specs`` on: :func:`jaxsae.train.layout.choose_layout` over
    every process's devices with ``st``'s fixed axes (None on a single device)."""
    n = jax.device_count()
    lay = choose_layout(n, [len(g.names) for g in groups_of(specs)], st.d_sae, st.batch,
                        sweep=st.sweep_shards, feat=st.feat_shards, data=st.data_shards)
    return None if n == 1 else mesh_of(lay)


def data_source(acts, metadata: dict | None) -> dict:
    """What the training activations are: their provenance from ``metadata`` (model, layer, text,
    context), how many tokens, and a fingerprint of the stored rows where they are stored."""
    md = metadata or {}
    src = {k: md[k] for k in METADATA_KEYS if md.get(k) is not None}
    src["n_tokens"] = int(getattr(acts, "n_tokens", acts.per_epoch * acts.batch))
    if hasattr(acts, "fingerprint"):
        src["fingerprint"] = acts.fingerprint()
    return src


def sweep_signature(specs: list[SAESpec], st: TrainSettings, d_in: int, source: dict | None = None,
                    arch_cfg: ArchConfig | None = None) -> dict:
    """What a sweep folder holds: the SAEs, the settings that shape them (effective ones) and, with
    ``source``, what the activations came from (see :func:`data_source`)."""
    sig = {"saes": [s.name for s in specs], "d_in": d_in, "d_sae": st.d_sae, "batch": st.batch,
           "steps": st.steps, "lr": st.lr, "seed": st.seed, "recipe": st.recipe()}
    if arch_cfg is not None:
        sig["recipe"]["threshold_start_step"] = arch_cfg.threshold_start_step
    if source is not None:
        sig["data"] = source
    return sig


def effective_recipe(st: TrainSettings, arch_cfg: ArchConfig) -> tuple[TrainSettings, ArchConfig, dict]:
    """The settings a run of ``st.steps`` steps actually uses (warmups, dead window and threshold
    EMA start capped for short runs; the matmul dtype resolved) and {name: [asked, used]} of what
    was scaled down."""
    used = dataclasses.replace(st.effective(), matmul_dtype=resolve_matmul_dtype(st.matmul_dtype))
    cfg = arch_cfg.replace(dead_tokens=used.dead_tokens, matmul_dtype=used.matmul_dtype,
                           threshold_start_step=min(arch_cfg.threshold_start_step, st.steps // 5))
    asked = {**st.recipe(), "threshold_start_step": arch_cfg.threshold_start_step}
    scaled = scaled_down(asked, {**used.recipe(), "threshold_start_step": cfg.threshold_start_step})
    return used, cfg, scaled


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for the leaves that differ (nested dicts flattened with dots)."""
    out = []
    for k in dict.fromkeys([*old, *new]):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{prefix}{k}."))
        elif a != b:
            a, b = (f"{len(v)} SAEs" if isinstance(v, list) and len(v) > 3 else v for v in (a, b))
            out.append(f"{prefix}{k}: {a} there, {b} here")
    return out


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
                diff = _differences(sig, signature)
                raise UserError(
                    f"{out} already holds a different sweep ({'; '.join(diff[:3]) or 'other settings'}); "
                    "pass a new --out folder (or delete that one)"
                )
            if name == "sweep.json":
                return old
    return None


def _checkpointer(path: Path):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(path.resolve(), options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def export_sweep(state, specs: list[SAESpec], st: TrainSettings, scale: float, d_in: int, out: Path,
                 metadata: dict, arch_cfg: ArchConfig, scaled: dict | None = None) -> dict[str, Path]:
    """Write every SAE of the sweep as a SAELens-v6 folder with the normalisation folded in
    (``state`` on the devices or the host). One SAE is gathered at a time (a collective when the
    state spans processes: every process calls this, process 0 alone writes); ``metadata.jaxsae``
    records the effective training settings (``st``, ``arch_cfg``) and what a short run
    ``scaled`` down. Padding SAEs (rows past the group's names) are never exported."""
    paths = {}
    by_name = {s.name: s for s in specs}
    writer = jax.process_index() == 0
    for g in groups_of(specs):
        arch = ARCHS[g.arch]
        grp = state["groups"][g.arch]
        for i, name in enumerate(g.names):
            one = to_host(_sae_at(grp, i))
            params = jax.tree.map(jnp.asarray, one["params"])
            aux = jax.tree.map(jnp.asarray, one["aux"])
            if not writer:
                continue
            sae_arch, tensors, extra = arch.export(params, aux, g.sparsity[i], arch_cfg, scale)
            tensors, n_f = fold_decoder_norms(sae_arch, tensors)  # unit decoder rows, same function
            extra = dict(extra)
            apply_b_dec = bool(extra.pop("apply_b_dec_to_input", True))
            private = {k[1:]: v for k, v in extra.items() if k.startswith("_")}
            public = {k: v for k, v in extra.items() if not k.startswith("_")}
            spec = by_name[name]
            md = {**metadata, "jaxsae": {"trained_architecture": g.arch, "sparsity": g.sparsity[i], "level": spec.level,
                                         "activation_scale": scale, "steps": st.steps, "batch": st.batch,
                                         "settings": run_settings(st, arch_cfg), "scaled_down": scaled or {},
                                         "decoder_norms_folded": sae_arch != "topk",
                                         "decoder_norm_range": [float(n_f.min()), float(n_f.max())], **private}}
            cfg = S.make_cfg(sae_arch, d_in, st.d_sae, apply_b_dec_to_input=apply_b_dec, metadata=md, **public)
            sae = S.SAE(cfg=cfg, params={k: jnp.asarray(v, jnp.float32) for k, v in tensors.items()})
            paths[name] = S.save(sae, out / name)
    return paths


def _sae_at(grp: dict, i: int) -> dict:
    """SAE ``i``'s params and aux from its group's stacked (possibly sharded) state."""
    pick = {"params": grp["params"], "aux": grp["aux"]}
    if any(isinstance(a, jax.Array) and not a.is_fully_addressable for a in jax.tree.leaves(pick)):
        return jax.jit(lambda t: jax.tree.map(lambda a: a[i], t))(pick)
    return jax.tree.map(lambda a: a[i], pick)


def _restore(mngr, step: int, abstract: dict, ckpt_dir: Path) -> dict:
    """The checkpoint of ``step`` restored straight into ``abstract``'s shapes and shardings."""
    import orbax.checkpoint as ocp

    try:
        return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    except ValueError as e:
        if "shape" not in str(e).lower():
            raise
        raise UserError(f"the checkpoint in {ckpt_dir} was saved with another layout (its padded groups differ: "
                        f"{str(e).splitlines()[0][:200]}); resume with the same train.sweep_shards or delete it") from None


def _restore_newest_readable(mngr, abstract: dict, ckpt_dir: Path) -> dict:
    """The newest checkpoint that restores, newest first: a torn or unreadable one (a kill during
    its write, a damaged file) is passed over with a warning naming it; none readable is a one-line
    error naming ``--redo train``. A checkpoint of another layout is refused (:func:`_restore`)."""
    steps = sorted(mngr.all_steps(), reverse=True)
    for i, step in enumerate(steps):
        try:
            return _restore(mngr, step, abstract, ckpt_dir)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever Orbax or the file system raised for a torn checkpoint
            why = (str(e).strip().splitlines() or [""])[0][:160]
            then = f"resuming from step {steps[i + 1]} instead" if i + 1 < len(steps) else "no older one is left"
            print(f"warning: the checkpoint of step {step} in {ckpt_dir} cannot be read ({type(e).__name__}: {why}); "
                  f"{then}", flush=True)
    raise UserError(f"no checkpoint in {ckpt_dir} can be read (all are torn or damaged); --redo train (or deleting "
                    "that folder) starts the training again")


def run_settings(st: TrainSettings, arch_cfg: ArchConfig) -> dict:
    """The effective settings a sweep trained with (as JSON reads them back: lists, not tuples)."""
    return json.loads(json.dumps({**dataclasses.asdict(st), "threshold_start_step": arch_cfg.threshold_start_step}))


def evaluate(sae, acts: ActivationArray, n_batches: int = 8, start: int = 0) -> dict:
    """L0 and fraction of variance unexplained of an exported SAE on raw activations."""
    l0, err, var, n = 0.0, 0.0, 0.0, 0
    xs = [np.asarray(acts.batch_at(start + i)) for i in range(min(n_batches, acts.per_epoch))]  # on the host
    mean = np.mean(np.concatenate(xs), axis=0)
    for x in xs:
        f = np.asarray(sae.encode(x))
        x_hat = np.asarray(sae.decode(f))
        l0 += float(np.sum(f != 0))
        err += float(np.sum((x - x_hat) ** 2))
        var += float(np.sum((x - mean) ** 2))
        n += len(x)
    return {"l0": l0 / n, "fvu": err / var}


def diverged_message(name: str, what: str, step: int, last_ckpt: int | None, ckpt_dir: Path) -> str:
    """The one-line error of a NaN / inf stop, naming the SAE, the step and what is kept."""
    kept = (f"the last good checkpoint (step {last_ckpt}) is kept in {ckpt_dir}" if last_ckpt is not None
            else "no checkpoint was saved before it")
    bad = "a non-finite loss" if what == "loss" else "non-finite parameters after the update"
    return (f"training diverged: SAE {name} has {bad} at step {step}; {kept} — "
            "lower the learning rate (or check the activations) and re-run")


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
    st = st.resolved()
    check_sweep(specs, d_in, st.d_sae)
    st, arch_cfg, scaled = effective_recipe(st, arch_cfg or ArchConfig())
    signature = sweep_signature(specs, st, d_in, data_source(acts, metadata), arch_cfg)
    writer = jax.process_index() == 0
    done = _check_out(out, signature)
    barrier("train_sweep: checked the output folder")  # before process 0 writes into it
    if done is not None:
        return done
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "signature.json", signature)
        note = describe_scaled(scaled, st.steps)
        if note:
            print(note, flush=True)
        if mesh is not None:
            print(f"layout: {layout_of(mesh)} over {mesh.size} devices", flush=True)
    scale = norm_scale(acts)
    ckpt_dir = out / "checkpoints"
    mngr = _checkpointer(ckpt_dir)
    first = acts.batch_at(0) / scale
    start = 0
    latest = mngr.latest_step()
    if latest is None:
        state = init_state_sharded(specs, d_in, st, first, arch_cfg, mesh)  # born sharded
    else:
        state = _restore_newest_readable(mngr, abstract_state(specs, d_in, st, arch_cfg, mesh), ckpt_dir)
        start = int(to_host(state["step"]))
    shardings = state_shardings(state, mesh)
    if mesh is not None:  # the batch over "data" (replicated across "feat" and "sweep"), a global array
        data_sharding = NamedSharding(mesh, P("data") if mesh.shape.get("data", 1) > 1 else P())
    else:  # the default device (jax.default_device), where the step runs
        data_sharding = jnp.zeros(()).sharding
    step_fn = make_step(specs, st, arch_cfg, shardings)
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

    def normed(x):
        # a batch already on a device (a streamed harvest) is divided there; finished on this
        # thread, so no computation of the prefetch thread is left queued behind a running step
        # (XLA:CPU can then stall a multi-process step's collectives)
        return jax.block_until_ready(x / scale)

    def batch(step):  # on the prefetch thread: host read + transfer, ahead of the step
        if not data_sharding.is_fully_addressable:
            # each process reads only the rows its devices hold
            return jax.block_until_ready(jax.make_array_from_callback(
                (st.batch, d_in), data_sharding, lambda index: normed(acts.batch_at(step, index[0]))))
        return jax.block_until_ready(jax.device_put(normed(acts.batch_at(step)), data_sharding))

    pending = []  # (step, metrics) of the steps not yet checked for NaN / inf

    def check_finite():
        """Stop with the first SAE and step that went non-finite since the last check (one
        device-to-host read for all of them)."""
        bad = first_bad_step(pending, specs)
        pending.clear()
        if bad is not None:
            raise UserError(diverged_message(*bad, mngr.latest_step(), ckpt_dir))

    prefetch = Prefetcher(batch, steps)
    try:
        for step, x in prefetch:
            # the steady-state step neither reads from nor writes to the host implicitly
            with jax.transfer_guard("disallow") if step > start else contextlib.nullcontext():
                state, met = step_fn(state, x)
            pending.append((step, met))
            done_steps = step + 1
            save = (st.checkpoint_every and done_steps % st.checkpoint_every == 0) or done_steps == stop_after
            if done_steps % st.log_every == 0 or done_steps == st.steps or save:
                check_finite()  # before anything is logged or saved from this state
            if done_steps % st.log_every == 0 or done_steps == st.steps:
                rows = metrics_rows(met, specs, step)  # every process: may be a collective
                if log is not None:
                    for row in rows:
                        log.write(json.dumps(row) + "\n")
                    log.flush()
            if bar is not None:
                tok0 += st.batch
                bar.update(1)
                rate = tok0 / max(time.time() - t0, 1e-9)
                bar.set_postfix(tok_s=f"{rate:,.0f}", sae_tok_s=f"{rate * len(specs):,.0f}")
            if save:
                import orbax.checkpoint as ocp

                # each process its own shards; asynchronous: save() copies the state to host memory
                # (so the next, donating step may reuse its buffers) and writes the files while
                # training goes on (the next save, or close(), waits for it)
                mngr.save(done_steps, args=ocp.args.StandardSave(state))
            if stop_after is not None and done_steps >= stop_after:
                mngr.wait_until_finished()
                return {}
    finally:
        prefetch.close()
        if log is not None:
            log.close()
        if bar is not None:
            bar.close()
        mngr.close()
    md = {"d_sae_width": st.d_sae, **(metadata or {})}
    paths = export_sweep(state, specs, st, scale, d_in, out, md, arch_cfg, scaled)  # every process
    if writer:
        entries = []
        for s in specs:
            ev = evaluate(S.load(paths[s.name]), acts, start=max(0, acts.per_epoch - 8))
            entries.append({"name": s.name, "dir": s.name, "architecture": s.arch, "level": s.level,
                            "level_label": s.level_label, "sparsity": s.sparsity, **ev})
        result = {"signature": signature, "activation_scale": scale, "settings": run_settings(st, arch_cfg),
                  "scaled_down": scaled, "saes": entries}
        atomic_write_json(out / "sweep.json", result)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    barrier("train_sweep: exported")  # the others read what process 0 wrote
    if not writer:
        result = json.loads((out / "sweep.json").read_text())
    return result
