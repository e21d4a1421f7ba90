"""The sweep trainer: every SAE of a sweep updated in one jitted step on the same batch.

SAEs of one architecture are stacked on a leading axis E and their loss, gradient, Adam update and
decoder constraint are ``vmap``ped; all architectures update in the same jitted step. On a mesh
with axes ("sweep", "data") the stacked axis is sharded over "sweep" (where it divides) and the
batch over "data"; the same code runs on 1 device, 8 fake CPU devices, a GPU or a TPU pod slice.

Schedules (dictionary_learning's ``get_lr_schedule`` / ``get_sparsity_warmup_fn``, step for step):
LR linear warmup from 0 (0 at step 0), constant, linear decay to 0 from ``int(decay_start * steps)``;
sparsity coefficient linear warmup from 0. Optimiser (:func:`optimizer`, one optax chain per
architecture, vmapped over its SAEs): unit-norm decoders get the gradient component along each row
removed, global-norm clipping where the recipe clips, Adam with the architecture's betas (eps
1e-8), the LR schedule; unit-norm decoder rows are renormalised after the update.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxsae.distributed import put, to_host
from jaxsae.sae import ARCHS, ArchConfig, init_aux, ops
from jaxsae.sae.arch import decoded_rows
from jaxsae.train.layout import layout_of, leaf_spec, padded
from jaxsae.train.spec import SAESpec, TrainSettings


@dataclasses.dataclass(frozen=True)
class Group:
    """The SAEs of one architecture (static)."""

    arch: str
    names: tuple[str, ...]
    sparsity: tuple[float, ...]


def groups_of(specs: list[SAESpec]) -> tuple[Group, ...]:
    out = []
    for arch in dict.fromkeys(s.arch for s in specs):
        mine = [s for s in specs if s.arch == arch]
        out.append(Group(arch, tuple(s.name for s in mine), tuple(s.sparsity for s in mine)))
    return tuple(out)


def lr_scale_at(step, st: TrainSettings):
    """dictionary_learning's ``get_lr_schedule`` at ``step`` (0-based, the step whose update uses it:
    its ``LambdaLR`` is stepped after each update): ``step / warmup_steps`` while
    ``step < warmup_steps`` (0 at step 0), then ``(steps - step) / (steps - decay)`` from
    ``decay = int(decay_start * steps)`` on, 1 in between."""
    step = jnp.asarray(step, jnp.float32)
    decay = int(st.decay_start * st.steps)
    warm = step / max(st.warmup_steps, 1)
    down = (st.steps - step) / max(st.steps - decay, 1)
    return jnp.where(step < st.warmup_steps, warm, jnp.where(step >= decay, down, 1.0))


def lr_at(step, st: TrainSettings):
    """The learning rate of ``step``'s update: ``st.lr`` times :func:`lr_scale_at`."""
    return st.lr * lr_scale_at(step, st)


def sparsity_scale_at(step, st: TrainSettings):
    """dictionary_learning's ``get_sparsity_warmup_fn``: ``min(step / sparsity_warmup_steps, 1)``
    (1 throughout when the warmup is 0)."""
    if not st.sparsity_warmup_steps:
        return jnp.float32(1.0)
    return jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / st.sparsity_warmup_steps)


# ------------------------------------------------------------------------------- optimiser

ADAM_EPS = 1e-8
"""Adam's eps (torch.optim.Adam's default, which dictionary_learning uses)."""


def project_decoder_grad(eps: float) -> optax.GradientTransformation:
    """Stateless optax transform removing from W_dec's gradient f32[F, D] its component along each
    decoder row (:func:`jaxsae.sae.ops.remove_parallel_grad`; needs ``params`` in ``update``)."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("project_decoder_grad needs the parameters")
        return {**updates, "W_dec": ops.remove_parallel_grad(params["W_dec"], updates["W_dec"], eps=eps)}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def decoder_projection(arch) -> optax.GradientTransformation | None:
    """The recipe's decoder-gradient projection: rows / (norm + 1e-6) for the TopK family and
    JumpReLU (dictionary_learning's ``remove_gradient_parallel_to_decoder_directions``), rows / norm
    for Gated's ConstrainedAdam; None for a free decoder (ReLU)."""
    if arch.decoder == "unit":
        return project_decoder_grad(1e-6)
    if arch.decoder == "unit_bare":
        return project_decoder_grad(0.0)
    return None


def optimizer(arch, st: TrainSettings) -> optax.GradientTransformation:
    """One SAE's update rule: decoder-gradient projection (unit-norm decoders), global-norm clip
    (where ``arch.clip_norm`` is set; optax's g * c / ||g|| differs from torch's c / (||g|| + 1e-6)
    by under 1e-6 relative), Adam with ``arch.betas`` and eps :data:`ADAM_EPS` (torch.optim.Adam's
    update), then ``-lr_at(count)``. Its state (projection, clip: empty; Adam's count, mu, nu; the
    schedule's count) counts the updates taken, so it equals the sweep step."""
    parts = [t for t in (decoder_projection(arch),) if t is not None]
    if arch.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(arch.clip_norm))
    b1, b2 = arch.betas
    parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=ADAM_EPS))
    parts.append(optax.scale_by_learning_rate(lambda count: lr_at(count, st)))
    return optax.chain(*parts)


def constrain_decoder(arch, params: dict) -> dict:
    """The post-update decoder renormalisation: rows / (norm + eps32) (``set_decoder_norm_to_unit_norm``)
    for "unit", rows / norm for "unit_bare" (ConstrainedAdam), unchanged for a free decoder."""
    if arch.decoder == "unit":
        return {**params, "W_dec": ops.unit_norm_rows(params["W_dec"], eps=float(jnp.finfo(jnp.float32).eps))}
    if arch.decoder == "unit_bare":
        return {**params, "W_dec": ops.unit_norm_rows(params["W_dec"])}
    return params


# ----------------------------------------------------------------------------------- state


def init_state(specs: list[SAESpec], d_in: int, st: TrainSettings, first_batch_bd, arch_cfg: ArchConfig,
               sweep: int = 1) -> dict:
    """Per architecture group its stacked params, aux, optax state ("opt", see :func:`optimizer`,
    vmapped over the group) and sparsity settings, plus the step counter.

    Each group is padded to a multiple of ``sweep`` SAEs with masked copies of its last SAE
    (fresh initialisations, same sparsity): they train alongside and are never logged, checked or
    exported (those read only the first ``len(group.names)`` rows)."""
    key = jax.random.key(st.seed)
    state = {"step": jnp.int32(0), "groups": {}}
    x = jnp.asarray(first_batch_bd, jnp.float32)
    gm = None
    for g in groups_of(specs):
        arch = ARCHS[g.arch]
        n = padded(len(g.names), sweep)
        names = list(g.names) + [f"{g.names[-1]}#pad{j}" for j in range(n - len(g.names))]
        sparsity = list(g.sparsity) + [g.sparsity[-1]] * (n - len(g.names))
        keys = [jax.random.fold_in(key, zlib.crc32(nm.encode()) % (1 << 30)) for nm in names]
        params = [arch.init(k, d_in, st.d_sae, arch_cfg) for k in keys]
        if arch.gm_init:
            gm = ops.geometric_median(x) if gm is None else gm
            params = [{**p, "b_dec": gm} for p in params]
        params = jax.tree.map(lambda *a: jnp.stack(a), *params)
        aux = jax.tree.map(lambda *a: jnp.stack(a), *[init_aux(arch, st.d_sae) for _ in names])
        opt = jax.vmap(optimizer(arch, st).init)(params)
        state["groups"][g.arch] = {"params": params, "aux": aux, "opt": opt,
                                   "sparsity": jnp.asarray(sparsity, jnp.float32)}
    return state


def state_shardings(state: dict, mesh: Mesh | None) -> dict | None:
    """Per leaf: the stacked SAE axis over "sweep" and the latent axis F over "feat" (see
    :mod:`jaxsae.train.layout`); refuses a leaf the mesh cannot divide. ``state`` may be abstract.
    The optax state ("opt") is laid out like the params: Adam's moments are named after the
    parameter they follow (mu/W_enc like W_enc), its per-SAE counts (i32[E]) go over "sweep"."""
    if mesh is None:
        return None
    lay = layout_of(mesh)

    def spec(path, a):
        last = path[-1]  # DictKey (params, aux, moments) or GetAttrKey (an optax state's count)
        name = getattr(last, "key", getattr(last, "name", last))
        return NamedSharding(mesh, leaf_spec(str(name), np.shape(a), lay))

    return {"step": NamedSharding(mesh, P()),
            "groups": jax.tree_util.tree_map_with_path(spec, state["groups"])}


def abstract_state(specs: list[SAESpec], d_in: int, st: TrainSettings, arch_cfg: ArchConfig,
                   mesh: Mesh | None = None) -> dict:
    """The state's ``ShapeDtypeStruct``s (with their shardings on ``mesh``); nothing is allocated."""
    sweep = layout_of(mesh).sweep
    x = jax.ShapeDtypeStruct((st.batch, d_in), jnp.float32)
    shapes = jax.eval_shape(lambda x_bd: init_state(specs, d_in, st, x_bd, arch_cfg, sweep), x)
    shardings = state_shardings(shapes, mesh)
    if shardings is None:
        return shapes
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)


def init_state_sharded(specs: list[SAESpec], d_in: int, st: TrainSettings, first_batch_bd, arch_cfg: ArchConfig,
                       mesh: Mesh | None = None) -> dict:
    """:func:`init_state` compiled with the state's shardings as ``out_shardings``: every device
    computes only its own shards, so no process or device ever holds the whole sweep state."""
    sweep = layout_of(mesh).sweep
    x = np.asarray(first_batch_bd, np.float32)
    abstract = abstract_state(specs, d_in, st, arch_cfg, mesh)
    shardings = None if mesh is None else jax.tree.map(lambda a: a.sharding, abstract)
    fn = jax.jit(lambda x_bd: init_state(specs, d_in, st, x_bd, arch_cfg, sweep), out_shardings=shardings)
    if mesh is not None:
        x = put(x, NamedSharding(mesh, P()))
    return fn(x)


# ------------------------------------------------------------------------------------ step


def _one_sae(arch, arch_cfg, st, params, aux, opt_state, sparsity, x_bd, step, with_auxk):
    """Loss, gradient and optax update of one SAE (vmapped over the group)."""
    ctx = {"step": step, "sparsity_scale": sparsity_scale_at(step, st)}

    def loss_fn(p):
        return arch.loss(p, aux, x_bd, sparsity, ctx, arch_cfg, with_auxk)

    (total, (terms, new_aux, f_bf)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    project = decoder_projection(arch)
    # logged: the norm of the projected gradient, which the clip sees
    gnorm = ops.global_norm(project.update(grads, optax.EmptyState(), params)[0] if project else grads)
    updates, opt_state = optimizer(arch, st).update(grads, opt_state, params)
    params = constrain_decoder(arch, optax.apply_updates(params, updates))
    lr = lr_at(step, st)
    l0 = jnp.mean(jnp.sum(f_bf > 0, axis=-1).astype(jnp.float32))
    resid = terms.get("mse")
    var = jnp.mean(jnp.sum(jnp.square(x_bd - jnp.mean(x_bd, axis=0)), axis=-1))
    metrics = {"loss": total, **terms, "l0": l0, "fvu": resid / var if resid is not None else jnp.nan,
               "dead_frac": jnp.mean((new_aux["since_fired"] >= arch_cfg.dead_tokens).astype(jnp.float32)),
               "grad_norm": gnorm, "lr": lr, "_params_finite": all_finite(params)}
    return params, new_aux, opt_state, metrics


def make_step(specs: list[SAESpec], st: TrainSettings, arch_cfg: ArchConfig, shardings: dict | None = None, *,
              split_rows: bool | None = None):
    """The jitted sweep step ``(state, x_bd) -> (state, metrics)``; metrics[arch][key] is f32[E]
    (bool[E] for ``_params_finite``; E the group's stacked size, padding included). ``shardings``:
    the state's (from :func:`state_shardings`), kept for the new state; the metrics then come back
    replicated over the mesh, so that reading them is a plain copy. ``split_rows``: whether each
    device takes the reconstruction of its own rows when the latents are split over "feat"
    (:func:`decoded_rows_sharding`; None: its default rule)."""
    groups = groups_of(specs)
    rows = None if shardings is None else decoded_rows_sharding(shardings["step"].mesh, split_rows)
    # the rows' constraint inside a group's vmap keeps that group's SAE axis over "sweep"
    sweep_axis = "sweep" if rows is not None and layout_of(rows.mesh).sweep > 1 else None

    def step_fn(state, x_bd):
        with decoded_rows(rows):
            return _step(state, x_bd)

    def _step(state, x_bd):
        step = state["step"]
        new = {"step": step + 1, "groups": {}}
        metrics = {}
        for g in groups:
            arch = ARCHS[g.arch]
            s = state["groups"][g.arch]
            args = (s["params"], s["aux"], s["opt"], s["sparsity"], x_bd, step)

            def group_step(with_auxk, *a, arch=arch, n=s["sparsity"].shape[0]):
                fn = functools.partial(_one_sae, arch, arch_cfg, st, with_auxk=with_auxk)
                if n == 1:  # a lone SAE runs unbatched: XLA lays its weight gradients out without
                    # the transposes that a size-1 vmap axis costs (2x for JumpReLU on CPU)
                    one = fn(*jax.tree.map(lambda t: t[0], a[:4]), *a[4:])
                    return jax.tree.map(lambda t: t[None], one)
                return jax.vmap(fn, in_axes=(0, 0, 0, 0, None, None), spmd_axis_name=sweep_axis)(*a)

            if arch.has_auxk:
                # The AuxK term is exactly 0 (value and gradient) while no latent of the group can
                # be dead after this batch, so its top-k and decoder matmul are skipped until then
                # (dictionary_learning skips it the same way); one cond for the whole group.
                maybe_dead = jnp.any(s["aux"]["since_fired"] + x_bd.shape[0] >= arch_cfg.dead_tokens)
                params, aux, opt, met = jax.lax.cond(
                    maybe_dead, functools.partial(group_step, True), functools.partial(group_step, False), *args)
            else:
                params, aux, opt, met = group_step(False, *args)
            new["groups"][g.arch] = {"params": params, "aux": aux, "opt": opt, "sparsity": s["sparsity"]}
            metrics[g.arch] = met
        return new, metrics

    if shardings is None:
        return jax.jit(step_fn, donate_argnums=0)
    replicated = NamedSharding(shardings["step"].mesh, P())
    return jax.jit(step_fn, donate_argnums=0, out_shardings=(shardings, replicated))


SPLIT_ROWS_MIN_FEAT = 16
"""Fewest latent shards at which the step splits the reconstructions' rows by default."""


def decoded_rows_sharding(mesh: Mesh, split: bool | None = None) -> NamedSharding | None:
    """Where a decoded [B, D] array lives inside the step on ``mesh``: its rows split over "data"
    and "feat" (see :func:`jaxsae.sae.arch.decoded_rows`), or None: the rows follow the batch's
    layout, when "feat" is not split or ``split`` is False.

    ``split`` None splits on accelerators with at least :data:`SPLIT_ROWS_MIN_FEAT` latent shards.
    The split saves the [B, D] work that every latent shard repeats, and costs slicing the batch
    and gathering the error's gradient back; in the TPU compiler's own count (v5e-64, Gemma-2-2B,
    ``benchmarks/scale.py --target tpu``) it cut a step's HBM traffic by 24% at feat 32 and 3% at
    feat 16, and added 14% at feat 8. XLA:CPU has no reduce-scatter (it all-reduces, then
    slices), so there the split would only add the gather (the CPU compiles of ``scale.py``, the
    tests' fake devices)."""
    lay = layout_of(mesh)
    if split is None:
        split = mesh.devices.flat[0].platform != "cpu" and lay.feat >= SPLIT_ROWS_MIN_FEAT
    if lay.feat == 1 or not split:
        return None
    return NamedSharding(mesh, P(("data", "feat") if lay.data > 1 else "feat", None))


def metrics_rows(metrics: dict, specs: list[SAESpec], step: int) -> list[dict[str, Any]]:
    """Per-SAE JSON-able rows of one step's metrics (a collective when the mesh spans processes);
    internal entries (``_``-prefixed) are left out."""
    rows = []
    host = to_host(metrics)
    for g in groups_of(specs):
        met = host[g.arch]
        for i, name in enumerate(g.names):
            row = {"step": step, "sae": name}
            row.update({k: float(np.asarray(v)[i]) for k, v in met.items() if not k.startswith("_")})
            rows.append(row)
    return rows


def all_finite(tree) -> jax.Array:
    """bool[]: every entry of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


def first_bad_step(pending: list[tuple[int, dict]], specs: list[SAESpec]) -> tuple[str, str, int] | None:
    """(name, what, step) of the earliest of the ``pending`` (step, metrics) pairs, in step order, at
    which an SAE went non-finite (see :func:`first_bad`), or None. One device-to-host read for all
    of them (a collective when the metrics span processes), so the loop checks every ``log_every``
    steps without a per-step sync."""
    keys = ("loss", "_params_finite")
    host = to_host([{a: {k: v for k, v in m[a].items() if k in keys} for a in m} for _, m in pending])
    for (step, _), met in zip(pending, host):
        bad = first_bad(met, specs)
        if bad is not None:
            return (*bad, step)
    return None


def first_bad(metrics: dict, specs: list[SAESpec]) -> tuple[str, str] | None:
    """(name, what) of the first SAE whose loss is NaN or inf (what = "loss") or whose parameters
    hold one after the update (what = "parameters"), or None (the same on every process)."""
    host = to_host({g.arch: {k: metrics[g.arch][k] for k in ("loss", "_params_finite") if k in metrics[g.arch]}
                    for g in groups_of(specs)})
    for g in groups_of(specs):
        met = host[g.arch]
        bad_loss = ~np.isfinite(np.asarray(met["loss"]))
        bad_params = ~np.asarray(met.get("_params_finite", np.ones_like(bad_loss)), bool)
        for i in range(len(g.names)):
            if bad_loss[i] or bad_params[i]:
                return g.names[i], "loss" if bad_loss[i] else "parameters"
    return None
