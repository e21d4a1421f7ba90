"""The study's configuration: one tree of settings dataclasses, each section the library's own
(``[train]`` is :class:`jaxsae.train.TrainSettings`, ``[steer]`` :class:`jaxsae.steer.SteerSettings`,
...), loaded strictly from ``jaxsae/configs/<sweep>.toml`` (an unknown key or a value of the wrong
type is a one-line error naming it) and overridable from the command line with tyro
(``--train.steps 200``, ``--steer.factors 0.5 1.0``)."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jaxsae.analysis.kendall import TauSettings
from jaxsae.autointerp.config import AutoInterpConfig
from jaxsae.errors import UserError
from jaxsae.io import provenance_hash
from jaxsae.judge.config import JudgeConfig
from jaxsae.judge.validate import ValiditySettings
from jaxsae.select.config import SelectConfig
from jaxsae.steer.utility import SteerSettings
from jaxsae.train.data import DataConfig
from jaxsae.train.spec import TrainSettings

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
"""The bundled sweeps (``jaxsae/configs/<sweep>.toml``), shipped inside the package and its wheel."""


@dataclass(frozen=True)
class ModelSpec:
    """One LLM of the study and the residual-stream layer its SAEs read and steer."""

    name: str = "SmolLM2-135M-Instruct"
    """Display name used in tables (e.g. Gemma-2-2B)."""
    source: str = "smollm2-135m-instruct"
    """Where to load it: an alias, a checkpoint folder, a .gguf file or a Hub id."""
    layer: int = 15
    """Block whose output (resid_post) the SAEs are trained on and steered at (0-based)."""
    steer_source: str = ""
    """Model to steer and generate with (e.g. the -it variant); empty: the same as ``source``."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Parameter/activation dtype."""
    tensor_parallel: int = 0
    """How many of each process's local devices hold the model's weights (split over heads,
    feed-forward and vocabulary): 0 = all of them on GPUs/TPUs (e.g. a TPU host's 4 chips, so
    Gemma-2-9B fits 16 GB v5e chips) and one on CPUs; 1 = one device."""


@dataclass(frozen=True)
class EvalConfig:
    """Core metrics and the feature-statistics pass on held-out text."""

    metric_tokens: int = 16_384
    """Held-out tokens for L0 / FVU / CE-loss score."""
    stats_tokens: int = 65_536
    """Held-out tokens for per-latent statistics (SAEBench: 2M)."""
    stats_context: int = 128
    """Context length of the statistics pass (SAEBench: 128)."""


@dataclass(frozen=True)
class SweepConfig:
    """A whole study: models × architectures × sparsity levels, then µ, g, selection, analysis."""

    name: str = "demo"
    """Sweep name (recorded in results)."""
    models: tuple[ModelSpec, ...] = (ModelSpec(),)
    """LLMs and layers."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalConfig = field(default_factory=EvalConfig)
    autointerp: AutoInterpConfig = field(default_factory=AutoInterpConfig)
    steer: SteerSettings = field(default_factory=SteerSettings)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    validity: ValiditySettings = field(default_factory=ValiditySettings)
    """Judge validity measured on labelled AxBench data (the ``validity`` stage, before steering)."""
    select: SelectConfig = field(default_factory=SelectConfig)
    analysis: TauSettings = field(default_factory=TauSettings)


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _value(tp: Any, v: Any, where: str) -> Any:
    """``v`` (a parsed TOML value) as type ``tp``, or a UserError naming ``where``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, where)
    if origin is Literal:
        if v not in args:
            raise UserError(f"{where} = {v!r} must be one of {', '.join(map(repr, args))}")
        return v
    if origin in (typing.Union, types.UnionType):  # TOML has no null: the value is one of the others
        options = [a for a in args if a is not type(None)]
        for a in options[:-1]:
            try:
                return _value(a, v, where)
            except UserError:
                pass
        return _value(options[-1], v, where)
    if origin is tuple:
        if not isinstance(v, list):
            raise UserError(f"{where} = {v!r} must be a list, e.g. [{v!r}]")
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item is None and len(v) != len(args):
            raise UserError(f"{where} must be a list of {len(args)} values, got {len(v)}")
        return tuple(_value(item or args[i], x, f"{where}[{i}]") for i, x in enumerate(v))
    if tp is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if tp in _KINDS and (not isinstance(v, tp) or (tp is int and isinstance(v, bool))):
        raise UserError(f"{where} = {v!r} must be {_KINDS[tp]}")
    return v


def _build(cls, data: Any, where: str):
    """The dataclass ``cls`` from a TOML table, every key known and every value of its type."""
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a table ([{where}]), got {data!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(known))
    if unknown:
        table = f"[{where}]" if where else "the top level"
        raise UserError(f"unknown key(s) {', '.join(unknown)} in {table}; valid keys: {', '.join(known)}")
    return cls(**{k: _value(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()})


def config_path(sweep: str) -> Path:
    """``jaxsae/configs/<sweep>.toml`` (or ``sweep`` itself when it is a path to a .toml file)."""
    p = Path(sweep)
    if p.suffix == ".toml":
        if not p.exists():
            raise UserError(f"config file {p} does not exist; check the path")
        return p
    if (CONFIG_DIR / f"{sweep}.toml").exists():
        return CONFIG_DIR / f"{sweep}.toml"
    names = sorted(q.stem for q in CONFIG_DIR.glob("*.toml"))
    raise UserError(f"unknown sweep {sweep!r}; choose one of {', '.join(names)} or pass a .toml file")


def load_config(sweep: str) -> SweepConfig:
    """The sweep's TOML loaded strictly into :class:`SweepConfig` (defaults for what it omits)."""
    path = config_path(sweep)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} does not parse as TOML ({e}); fix the file") from None
    try:
        return _build(SweepConfig, data, "")
    except UserError as e:
        raise UserError(f"{path}: {e}; fix the file") from None


digest = provenance_hash
"""Stable short hash of a configuration (:func:`jaxsae.io.provenance_hash`)."""
