"""Sweep specs: which SAEs (architecture × sparsity level) one training run holds, and the
training hyperparameters they share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters shared by every SAE of a sweep (the paper's recipe by default)."""

    d_sae: int = 16384
    """Dictionary width."""
    batch: int = 2048
    """Tokens per step."""
    steps: int = 1000
    """Optimiser steps."""
    lr: float = 3e-4
    """Peak Adam learning rate."""
    warmup_steps: int = 1000
    """Linear LR warmup from 0 (capped at 10% of the run for short runs)."""
    decay_start: float = 0.8
    """Fraction of the run after which the LR decays linearly to 0."""
    sparsity_warmup_steps: int = 5000
    """Linear warmup of the sparsity coefficient from 0 (capped at 20% of the run for short runs)."""
    dead_tokens: int = 10_000_000
    """A latent is dead after this many tokens without firing (capped at half the run's tokens)."""
    seed: int = 0
    """Seed of initialisation and data order."""
    checkpoint_every: int = 1000
    """Steps between Orbax checkpoints (0: only at the end)."""
    log_every: int = 10
    """Steps between metric log lines."""

    def effective(self) -> "TrainSettings":
        """Warmups and the dead window scaled down for runs shorter than the recipe assumes."""
        return dataclasses.replace(
            self,
            warmup_steps=min(self.warmup_steps, max(1, self.steps // 10)),
            sparsity_warmup_steps=min(self.sparsity_warmup_steps, max(1, self.steps // 5)),
            dead_tokens=min(self.dead_tokens, max(self.batch, self.steps * self.batch // 2)),
        )


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
    return [SAESpec(check_arch(a), int(lv), paper_sparsity(a, int(lv))) for a in archs for lv in levels]


def sweep_from_l0(archs, l0s, l1: dict[str, list[float]] | None = None) -> list[SAESpec]:
    """Every architecture at each target L0. L0-targeted architectures use the value itself;
    L1 architectures (relu, gated) use the paper's coefficient at the same level index (or the
    explicit ``l1[arch]`` list)."""
    out = []
    for a in map(check_arch, archs):
        kind = ARCHS[a].sparsity_kind
        for i, l0 in enumerate(l0s):
            if kind == "l1":
                if l1 and a in l1:
                    coef = float(l1[a][i])
                else:
                    idx = PAPER_L0.index(int(l0)) if int(l0) in PAPER_L0 else min(i, len(PAPER_L0) - 1)
                    coef = float(PAPER_L1[a][idx])
                out.append(SAESpec(a, i, coef))
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
