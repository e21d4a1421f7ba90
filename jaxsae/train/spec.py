"""Sweep specs: which SAEs (architecture × sparsity level) one training run holds, and the
training hyperparameters they share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from jaxsae.errors import UserError
from jaxsae.sae import ARCHS, PAPER_L0, PAPER_L1


@dataclass(frozen=True)
class SAESpec:
    """One SAE of a sweep."""

    arch: str
    """Training architecture (a key of ``jaxsae.sae.ARCHS``)."""
    level: int
    """Index of the sparsity level (0..5 for the paper's levels; position in the list otherwise)."""
    sparsity: float
    """L1 coefficient (relu, gated), k (topk family) or target L0 (jumprelu)."""

    @property
    def name(self) -> str:
        kind = ARCHS[self.arch].sparsity_kind
        tag = {"l1": "l1", "k": "k", "target_l0": "l0"}[kind]
        value = f"{self.sparsity:g}" if kind == "l1" else f"{int(round(self.sparsity))}"
        return f"{self.arch}-{tag}{value}"

    @property
    def level_label(self) -> str:
        kind = ARCHS[self.arch].sparsity_kind
        return f"l1={self.sparsity:g}" if kind == "l1" else f"L0={int(round(self.sparsity))}"


Arch = Literal["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"]
"""The trainable architectures (the keys of ``jaxsae.sae.ARCHS``)."""


@dataclass(frozen=True)
class TrainSettings:
    """The SAE sweep (architectures × sparsity levels, all trained together) and the
    hyperparameters its SAEs share (the paper's recipe by default); a sweep's ``[train]`` section."""

    archs: tuple[Arch, ...] = ("relu", "topk", "batchtopk", "jumprelu", "gated")
    """Architectures to train."""
    levels: tuple[int, ...] = (1, 3)
    """Indices (0..5) into the paper's six sparsity levels, sparsest first: target L0 {50, 80, 160,
    320, 520, 820} for TopK/BatchTopK/JumpReLU/Matryoshka; L1 {0.06, 0.04, 0.03, 0.02, 0.015,
    0.012} (ReLU) and {0.08, 0.06, 0.04, 0.024, 0.018, 0.012} (Gated): a larger L1 coefficient is
    sparser, so level i pairs the i-th sparsest setting of every architecture."""
    d_sae: int = 16384
    """Dictionary width (the paper: 16384)."""
    batch: int = 2048
    """Tokens per step (the paper: 2048)."""
    tokens: int = 2_048_000
    """Training tokens per SAE (the paper: 5e8); fewer when stored activations hold fewer."""
    steps: int = 0
    """Optimiser steps; 0: ``tokens // batch`` (see :meth:`resolved`)."""
    lr: float = 3e-4
    """Peak Adam learning rate."""
    warmup_steps: int = 1000
    """Linear LR warmup from 0 over this many steps (0: none; capped at 10% of the run for short runs)."""
    decay_start: float = 0.8
    """Fraction of the run after which the LR decays linearly to 0 (from step int(decay_start * steps);
    1.0: no decay)."""
    sparsity_warmup_steps: int = 5000
    """Linear warmup of the sparsity coefficient from 0 (0: none; capped at 20% of the run for short runs)."""
    dead_tokens: int = 10_000_000
    """A latent is dead after this many tokens without firing (capped at half the run's tokens)."""
    seed: int = 0
    """Seed of initialisation and data order."""
    checkpoint_every: int = 1000
    """Steps between Orbax checkpoints (0: none, so an interrupted run starts again from step 0)."""
    log_every: int = 10
    """Steps between metric log lines (and NaN/inf checks: a diverged SAE stops training within
    this many steps, naming the step it diverged at)."""
    matmul_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Operand dtype of the SAE encoder / decoder matmuls: "float32", "bfloat16" (bf16 operands,
    f32 accumulation, f32 weights and Adam state) or "auto" (bfloat16 on GPU/TPU, float32 on CPU);
    sweep.json records the one used."""
    sweep_shards: int = 0
    """Devices the stacked SAE axis of every group is split over (groups padded to a multiple with
    masked SAEs); 0: the launcher's rule (``jaxsae.train.layout``)."""
    feat_shards: int = 0
    """Devices every SAE's latent axis F is split over (must divide d_sae); 0: the launcher's rule."""
    data_shards: int = 0
    """Devices the batch is split over (must divide the batch); 0: the devices left by the other two."""

    def __post_init__(self):
        for name in ("d_sae", "batch", "tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"train.{name} must be a positive number, got {getattr(self, name)}; set a size >= 1")
        if self.steps < 0:
            raise UserError(f"train.steps must be >= 0 (0: tokens // batch), got {self.steps}")
        for name in ("archs", "levels"):
            if not getattr(self, name):
                raise UserError(f"train.{name} is empty: the sweep would train no SAE; name at least one")

    def resolved(self, available_tokens: int | None = None) -> "TrainSettings":
        """These settings with ``steps`` set: as given, else ``min(tokens, available_tokens) // batch``
        (at least 1)."""
        if self.steps:
            return self
        tokens = self.tokens if available_tokens is None else min(self.tokens, available_tokens)
        return dataclasses.replace(self, steps=max(1, tokens // self.batch))

    def sweep(self) -> list["SAESpec"]:
        """The SAEs of :attr:`archs` × :attr:`levels` (:func:`sweep_from_levels`)."""
        return sweep_from_levels(self.archs, self.levels)

    def effective(self) -> "TrainSettings":
        """Warmups and the dead window scaled down for runs shorter than the recipe assumes."""
        self = self.resolved()
        return dataclasses.replace(
            self,
            warmup_steps=min(self.warmup_steps, max(1, self.steps // 10)),
            sparsity_warmup_steps=min(self.sparsity_warmup_steps, max(1, self.steps // 5)),
            dead_tokens=min(self.dead_tokens, max(self.batch, self.steps * self.batch // 2)),
        )

    def recipe(self) -> dict:
        """The schedule and dead-window values (what :meth:`effective` may scale down)."""
        return {"warmup_steps": self.warmup_steps, "decay_start": self.decay_start,
                "sparsity_warmup_steps": self.sparsity_warmup_steps, "dead_tokens": self.dead_tokens}


MATMUL_DTYPES = ("auto", "float32", "bfloat16")


def resolve_matmul_dtype(value: str, backend: str | None = None) -> str:
    """"float32" or "bfloat16" for a ``matmul_dtype`` setting; "auto" picks bfloat16 on a GPU/TPU
    ``backend`` (default: ``jax.default_backend()``) and float32 on CPU."""
    if value not in MATMUL_DTYPES:
        raise UserError(f"matmul_dtype {value!r} is not one of {', '.join(MATMUL_DTYPES)}; fix the setting")
    if value != "auto":
        return value
    if backend is None:
        import jax

        backend = jax.default_backend()
    return "float32" if backend == "cpu" else "bfloat16"


def scaled_down(asked: dict, used: dict) -> dict[str, list]:
    """{name: [asked, used]} of the values that differ between two recipe dicts."""
    return {k: [asked[k], used[k]] for k in asked if asked[k] != used.get(k)}


def describe_scaled(scaled: dict[str, list], steps: int) -> str | None:
    """One line naming what a short run scaled down, or None when nothing was."""
    if not scaled:
        return None
    labels = {"warmup_steps": "LR warmup {} -> {} steps", "sparsity_warmup_steps": "sparsity warmup {} -> {} steps",
              "dead_tokens": "dead window {:,} -> {:,} tokens", "threshold_start_step": "threshold EMA start {} -> {} steps"}
    parts = [labels.get(k, k + " {} -> {}").format(*v) for k, v in scaled.items()]
    return f"short run ({steps} steps), recipe scaled down: {', '.join(parts)} (recorded in sweep.json)"


def paper_sparsity(arch: str, level: int) -> float:
    """The paper's sparsity setting of ``arch`` at level index 0..5."""
    if not 0 <= level < len(PAPER_L0):
        raise UserError(f"sparsity level {level} is out of range; the paper has levels 0..{len(PAPER_L0) - 1}")
    kind = ARCHS[arch].sparsity_kind
    return float(PAPER_L1[arch][level]) if kind == "l1" else float(PAPER_L0[level])


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    return arch


def sweep_from_levels(archs, levels) -> list[SAESpec]:
    """Every architecture at every paper level index."""
    levels = [int(lv) for lv in levels]
    return [SAESpec(a, lv, paper_sparsity(a, lv)) for a in map(check_arch, archs) for lv in levels]


def sweep_from_l0(archs, l0s) -> list[SAESpec]:
    """Every architecture at each target L0. L0-targeted architectures use the value itself;
    L1 architectures (relu, gated) use the paper's coefficient at the same level index."""
    out = []
    for a in map(check_arch, archs):
        kind = ARCHS[a].sparsity_kind
        for i, l0 in enumerate(l0s):
            if kind == "l1":
                idx = PAPER_L0.index(int(l0)) if int(l0) in PAPER_L0 else min(i, len(PAPER_L0) - 1)
                out.append(SAESpec(a, i, float(PAPER_L1[a][idx])))
            else:
                out.append(SAESpec(a, i, float(l0)))
    return out


def check_sweep(specs: list[SAESpec], d_in: int, d_sae: int) -> None:
    for s in specs:
        kind = ARCHS[s.arch].sparsity_kind
        if kind in ("k", "target_l0") and not 1 <= s.sparsity <= d_sae:
            raise UserError(f"{s.name}: k/target L0 = {s.sparsity:g} must be between 1 and d_sae = {d_sae}; lower it or widen the SAE")
        if kind == "l1" and s.sparsity < 0:
            raise UserError(f"{s.name}: the L1 coefficient must be >= 0")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError(f"the sweep lists the same SAE twice ({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
    if d_in < 1 or d_sae < 1:
        raise UserError("d_in and d_sae must be positive")
