"""How a sweep's state and batches are laid out over devices: the ("sweep", "data", "feat") mesh.

Axes:
  sweep  the stacked SAE axis E of every architecture group (whole SAEs per device). A group whose
         size the axis does not divide is padded with masked SAEs (trained alongside, never logged,
         checked or exported).
  feat   every SAE's latent axis F: W_enc columns, W_dec rows, b_enc, thresholds, gates, Adam
         moments and dead-latent counters. The batch is replicated across it; the step's
         reductions over F (top-k counts, L0, norms) become all-reduces over "feat". On
         accelerators with at least 16 latent shards the decoder's partial sums are instead
         reduced into row shards: each device gets the reconstruction of B / (data x feat) rows
         (:func:`jaxsae.train.trainer.decoded_rows_sharding`) and computes their error, loss and
         gradient, which is gathered back for the weight gradients; elsewhere they are
         all-reduced.
  data   the batch rows (the state is replicated across it; gradients are all-reduced over it).

The launcher's rule (:func:`choose_layout`), for ``n`` devices, groups of sizes ``g_1..g_m``,
width F and batch B, with any axis the user fixed kept as given:

  1. sweep = the largest divisor of n that divides every group size (no padding, whole SAEs per
     device: each device's decoder all-reduce shrinks with the SAEs it holds);
  2. feat  = the largest divisor of n / sweep that divides F and leaves at least
     ``MIN_FEAT_SHARD`` latents per device (thinner shards are all collective, no matmul);
  3. data  = what is left, n / (sweep * feat); it must divide B.

For the paper's sweep (5 groups of 6, F 16384): 8 devices -> sweep 2 x feat 4; 64 devices ->
sweep 2 x feat 32. A layout that cannot shard as asked (sizes whose product is not n, feat not
dividing F, data not dividing B) is refused with a one-line error, never silently replicated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxsae.errors import UserError

AXES = ("sweep", "data", "feat")
MIN_FEAT_SHARD = 256
"""Fewest latents per device the automatic rule gives the "feat" axis."""


@dataclass(frozen=True)
class Layout:
    """Mesh sizes of the three axes (their product is the device count)."""

    sweep: int = 1
    """Shards of each group's stacked SAE axis (groups padded to a multiple)."""
    feat: int = 1
    """Shards of every SAE's latent axis F."""
    data: int = 1
    """Shards of the batch."""

    @property
    def size(self) -> int:
        return self.sweep * self.feat * self.data

    def __str__(self) -> str:
        return f"sweep {self.sweep} x feat {self.feat} x data {self.data}"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_layout(n_devices: int, group_sizes, d_sae: int, batch: int, sweep: int = 0, feat: int = 0,
                  data: int = 0) -> Layout:
    """The layout for ``n_devices`` (see the module docstring); nonzero ``sweep`` / ``feat`` /
    ``data`` are kept as given and the others chosen by the rule."""
    sizes = [int(g) for g in group_sizes] or [1]
    for name, v in (("sweep", sweep), ("feat", feat), ("data", data)):
        if v < 0 or (v and n_devices % v):
            raise UserError(f"train.{name}_shards = {v} does not divide the {n_devices} devices; "
                            f"choose a divisor of {n_devices} (or 0 for the automatic layout)")
    if not sweep:
        rest = n_devices // max(feat, 1) // max(data, 1)
        sweep = max(d for d in _divisors(rest) if all(g % d == 0 for g in sizes))
    if not feat:
        rest = n_devices // sweep // max(data, 1)
        fits = [d for d in _divisors(rest) if d_sae % d == 0 and (d == 1 or d_sae // d >= MIN_FEAT_SHARD)]
        feat = max(fits)
    if not data:
        data = max(1, n_devices // (sweep * feat))
    lay = Layout(sweep, feat, data)
    check_layout(lay, n_devices, d_sae, batch)
    return lay


def check_layout(lay: Layout, n_devices: int, d_sae: int, batch: int) -> None:
    """Refuse (one line) a layout that cannot shard the sweep as asked."""
    if lay.size != n_devices:
        raise UserError(f"layout {lay} uses {lay.size} devices but there are {n_devices}; "
                        f"choose train.sweep_shards / feat_shards / data_shards whose product is {n_devices}")
    if d_sae % lay.feat:
        raise UserError(f"train.feat_shards = {lay.feat} does not divide d_sae = {d_sae}; choose a divisor of it")
    if batch % lay.data:
        raise UserError(f"train.data_shards = {lay.data} does not divide the batch of {batch} tokens; choose a divisor of it")


def padded(n: int, sweep: int) -> int:
    """``n`` rounded up to a multiple of ``sweep`` (the stacked size of a padded group)."""
    return -(-n // sweep) * sweep


def mesh_of(lay: Layout, devices=None):
    """The ("sweep", "data", "feat") mesh of ``lay`` over ``devices`` (default: every process's)."""
    import jax
    from jax.sharding import Mesh

    devices = np.asarray(jax.devices() if devices is None else devices)
    if devices.size != lay.size:
        raise UserError(f"layout {lay} needs {lay.size} devices, not {devices.size}")
    return Mesh(devices.reshape(lay.sweep, lay.data, lay.feat), AXES)


def layout_of(mesh) -> Layout:
    """The layout of a mesh (axes it lacks have size 1)."""
    if mesh is None:
        return Layout()
    return Layout(mesh.shape.get("sweep", 1), mesh.shape.get("feat", 1), mesh.shape.get("data", 1))


# Leaves of a group's state whose F axis is not axis 1 of the stacked [E, ...] array, or that have none.
_F_AXIS = {"W_enc": 2, "b_dec": None}


def feat_axis(key: str, ndim: int) -> int | None:
    """Axis of the latent dimension F in a stacked state leaf named ``key`` with ``ndim`` axes
    (W_enc [E, D, F] -> 2; W_dec [E, F, D], biases / thresholds / gates / since_fired [E, F] -> 1;
    b_dec [E, D], per-SAE scalars [E] -> None)."""
    if key in _F_AXIS:
        return _F_AXIS[key]
    return 1 if ndim >= 2 else None


def leaf_spec(key: str, shape, lay: Layout):
    """PartitionSpec of a stacked group leaf: E over "sweep", F over "feat" (an axis of size 1 is
    left out); refuses a leaf the layout cannot divide."""
    from jax.sharding import PartitionSpec as P

    parts: list = [None] * len(shape)
    if len(shape) >= 1 and lay.sweep > 1:
        if shape[0] % lay.sweep:
            raise UserError(f"{key}: {shape[0]} stacked SAEs do not divide over sweep = {lay.sweep} (groups must be padded)")
        parts[0] = "sweep"
    ax = feat_axis(key, len(shape))
    if ax is not None and lay.feat > 1:
        if shape[ax] % lay.feat:
            raise UserError(f"{key}: latent axis of {shape[ax]} does not divide over feat = {lay.feat}")
        parts[ax] = "feat"
    return P(*parts)
