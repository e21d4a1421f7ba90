"""The study's configuration: plain dataclasses, one docstring per field, loaded from
``configs/<sweep>.toml`` and overridable from the command line (``--train.steps 200``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jaxsae.errors import UserError

CONFIG_DIRS = (Path(__file__).resolve().parents[2] / "configs", Path(__file__).resolve().parent.parent / "configs")


@dataclass
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
    dtype: str = "float32"
    """Parameter/activation dtype: float32 or bfloat16."""
    tensor_parallel: int = 0
    """How many of each process's local devices hold the model's weights (split over heads,
    feed-forward and vocabulary): 0 = all of them on GPUs/TPUs (e.g. a TPU host's 4 chips, so
    Gemma-2-9B fits 16 GB v5e chips) and one on CPUs; 1 = one device."""


@dataclass
class DataConfig:
    """Text the SAEs are trained on (the activation stream)."""

    source: str = "embedded"
    """"embedded" (Python's shipped documentation, offline), "hf:<dataset>[:<config>]" (streamed
    with `datasets`), or a path to .txt files / a folder of them."""
    context: int = 128
    """Tokens per context when harvesting."""
    llm_batch: int = 8
    """Contexts per LLM forward when harvesting."""
    store_activations: bool = True
    """Harvest the activations once to <out>/<model>/activations.npy and train from that file
    (re-runs need no model); false streams them from the model during training, chunk by chunk,
    for token budgets that do not fit on disk (the full study: 5e8 tokens x d_model floats)."""
    harvest_shards: int = 8
    """When streaming: row blocks per SAE batch, block h of every batch harvested from its own
    contexts, so that each of P processes (P dividing it) runs the model only on the contexts of
    the rows it trains on. The data order depends on this number, not on how many processes run;
    train.batch must be a multiple of it."""


@dataclass
class TrainConfig:
    """The SAE sweep: architectures × sparsity levels, all trained together."""

    archs: tuple[str, ...] = ("relu", "topk", "batchtopk", "jumprelu", "gated")
    """Architectures to train (relu, topk, batchtopk, jumprelu, gated, matryoshka)."""
    levels: tuple[int, ...] = (1, 3)
    """Indices (0..5) into the paper's six sparsity levels, sparsest first: target L0 {50, 80, 160,
    320, 520, 820} for TopK/BatchTopK/JumpReLU/Matryoshka; L1 {0.06, 0.04, 0.03, 0.02, 0.015,
    0.012} (ReLU) and {0.08, 0.06, 0.04, 0.024, 0.018, 0.012} (Gated): a larger L1 coefficient is
    sparser, so level i pairs the i-th sparsest setting of every architecture."""
    d_sae: int = 2304
    """Dictionary width (the paper: 16384)."""
    batch: int = 1024
    """SAE batch in tokens (the paper: 2048)."""
    tokens: int = 200_000
    """Training tokens per SAE (the paper: 5e8)."""
    lr: float = 3e-4
    """Adam learning rate (the paper's recipe)."""
    warmup_steps: int = 1000
    """Linear LR warmup steps (scaled down automatically when the run is shorter)."""
    sparsity_warmup_steps: int = 5000
    """Sparsity-coefficient warmup steps (scaled down automatically when the run is shorter)."""
    checkpoint_every: int = 1000
    """Steps between Orbax checkpoints."""
    seed: int = 0
    """Seed of initialisation and data order."""


@dataclass
class EvalConfig:
    """Core metrics and the feature-statistics pass on held-out text."""

    metric_tokens: int = 16_384
    """Held-out tokens for L0 / FVU / CE-loss score."""
    stats_tokens: int = 65_536
    """Held-out tokens for per-latent statistics (SAEBench: 2M)."""
    stats_context: int = 128
    """Context length of the statistics pass (SAEBench: 128)."""


@dataclass
class AutoInterpConfig:
    """Interpretability µ(θ): SAEBench AutoInterp."""

    n_latents: int = 1000
    """Alive latents scored per SAE (the paper: 1000)."""
    n_concepts: int = 100
    """CONCEPT100 size: latents drawn (fixed seed) from the scored ones; µ is their mean."""
    seed: int = 0
    """Seed of the latent draws."""
    templates: str = ""
    """A TOML/JSON file replacing the explainer/detector prompts (keys explain_system,
    explain_user, detect_system, detect_user, yes_no; see the README), e.g. SAEBench's own
    wording; "" = ours. Its SHA-256 is recorded in autointerp.json and the stage's hash."""
    temperature: float = 0.0
    """Sampling temperature of the API explainer/detector (ours: 0; SAEBench's calls leave the
    API default, 1.0). The local judge is greedy. Recorded in autointerp.json."""
    max_explanation_tokens: int = 30
    """Token cap on an explanation (SAEBench: 30)."""
    random_labels: Literal["negative", "activation"] = "negative"
    """Labels of the 10 random scoring windows: "negative" (SAEBench's code: built without
    activations) or "activation" (positive when one of its tokens fires above τ). Recorded in
    autointerp.json."""


@dataclass
class SteerConfig:
    """Steering utility g(θ): the AxBench protocol on the SAE's CONCEPT100 (or a concept file)."""

    concepts: str = "concept100"
    """What each SAE steers toward: "concept100" (its own CONCEPT100 with their AutoInterp
    explanations, the paper's protocol) or a path to a concept file used for every SAE: an
    AxBench metadata.jsonl or parquet set (train_data / latent_eval_data, latent ids from
    ``ref`` / ``sae_id``) or a user JSONL of {"feature", "concept"}."""
    n_concepts: int = 100
    """Concepts steered per SAE (the first of CONCEPT100 or of the concept file)."""
    n_instructions: int = 10
    """Instructions per concept, split half dev (factor choice) / half test (score)."""
    factors: tuple[float, ...] = (0.4, 0.8, 1.2, 1.6, 2.0, 3.0)
    """Steering factors α (x += α·m_f·v_f); the paper used 6 unpublished values."""
    max_new_tokens: int = 128
    """New tokens per steered generation."""
    temperature: float = 1.0
    """Sampling temperature (AxBench: 1.0; 0 = greedy)."""
    seed: int = 0
    """Seed of instruction draws and sampling."""
    position: str = "all"
    """Where the steering vector is added: "all" (AxBench: every prompt position and decode step)
    or "last" (Arad et al.: the last position at each step)."""
    instructions_dir: str = ""
    """Offline instruction pool: a folder of AxBench parquet files whose ``input`` column is used
    when AlpacaEval cannot be fetched from the Hub ("" = the bundled list)."""


@dataclass
class JudgeConfig:
    """Who rates steered generations and explains/detects latents."""

    kind: str = "local"
    """"local" (an instruct model run by jaxsae) or "api" (an OpenAI-compatible endpoint)."""
    model: str = "smollm2-135m-instruct"
    """Local: a load_model source. API: the model name (e.g. gpt-4o-mini)."""
    base_url: str = "https://api.openai.com/v1"
    """API base URL (only for kind = "api")."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never written anywhere)."""
    max_concurrency: int = 8
    """Concurrent API requests."""
    temperature: float = 0.0
    """Sampling temperature of the API steering judge (ours: 0, reproducible; AxBench's judge call
    is not pinned in our reference, see the README). The local judge reads the rating's
    probabilities and does not sample. Recorded in utility.json's judge description."""
    max_tokens: int = 256
    """Token cap of one API rating (room for the short justification before "Rating: [[x]]")."""
    templates: str = ""
    """A TOML/JSON file replacing the steering judge's prompts (keys concept / instruction /
    fluency; placeholders {concept}, {instruction}, {fragment}), e.g. AxBench's own templates;
    "" = ours. Its SHA-256 enters the stage's configuration hash and the judge's description."""


@dataclass
class SelectConfig:
    """Feature selection by ΔTC and the output score."""

    prefix: str = "From my experience,"
    """Neutral prefix whose next-token distribution is read."""
    alpha: float = 10.0
    """Amplification α."""
    k: int = 1
    """C_k: number of top probabilities."""
    mode: str = "additive"
    """Reading A's hook, which the output score always uses: "additive" (Arad et al.'s code,
    x + α·max_j a_j·d_f; default) or "decoder" (x + α·m_f·v_f)."""
    reading: Literal["A", "B", "B'"] = "B"
    """ΔTC's intervention (protocol §7): "B" (default; the paper's main text: f's own code scaled
    by α, x + (α − 1)·a_f(x)·d_f, so a latent silent on the prefix has ΔC = 0), "B'" (App. D: f's
    code alone, x + α·a_f(x)·d_f) or "A" (Arad et al.'s hook, as ``mode``). Recorded in dtc.npz,
    results.json and the report."""
    positions: Literal["last", "all"] = "last"
    """Where ΔTC and the output score intervene: "last" (the prefix's last position, as Arad et al.)
    or "all" (every prefix position, each with its own codes)."""
    compare_readings: bool = True
    """Also score ΔTC under the two other readings (dtc.npz ``delta_tc_A`` / ``_B`` / ``_Bp``), for
    the report's table of how the readings rank latents and the selection lift each gives."""
    ranking: Literal["direction", "magnitude"] = "direction"
    """How ΔTC tiers rank latents: "direction" (App. D: UP = largest ΔC, DOWN = most negative, each
    its own tier) or "magnitude" (§4.1: largest |ΔC|, tiers ``abs_top{K}`` and ``abs_q{q}``)."""
    pool: str = "all"
    """Latents scored by ΔTC and output score: "all" (every latent; the default) or "concepts"
    (only the steered concepts). Tiers are always formed over the steered concepts (only they
    have steering scores): top-K among them; a tail-quantile tier takes its threshold from the
    ΔTC distribution of every scored latent (with "all": the SAE's whole ΔTC distribution, so a
    0.99 tier holds the steered concepts in the SAE's top 1 %), with "concepts" from theirs."""
    tier_choice: str = "dev"
    """"dev": tier chosen on dev instructions, reported on test; "eval": the paper's variant
    (best tier by the evaluation itself, optimistic)."""


@dataclass
class AnalysisConfig:
    """Rank agreement statistics."""

    n_perm: int = 9999
    """Permutations per p-value."""
    n_boot: int = 2000
    """Bootstrap resamples per interval."""
    seed: int = 0
    """Seed of permutations and bootstrap."""
    level_grouping: Literal["grid", "l0_rank"] = "grid"
    """Sparsity levels of axis B: "grid" (the i-th sparsest grid setting of every architecture)
    or "l0_rank" (within each model and architecture, the i-th smallest measured L0); recorded
    in results.json."""


@dataclass
class SweepConfig:
    """A whole study: models × architectures × sparsity levels, then µ, g, selection, analysis."""

    name: str = "demo"
    """Sweep name (recorded in results)."""
    models: tuple[ModelSpec, ...] = (ModelSpec(),)
    """LLMs and layers."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    autointerp: AutoInterpConfig = field(default_factory=AutoInterpConfig)
    steer: SteerConfig = field(default_factory=SteerConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)


def _build(cls, data: Any, where: str):
    if not dataclasses.is_dataclass(cls):
        return data
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a table, got {type(data).__name__}; fix the config file")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(known)}")
    kw = {}
    for name, f in known.items():
        if name not in data:
            continue
        v = data[name]
        if name == "models":
            kw[name] = tuple(_build(ModelSpec, m, f"{where}.models[{i}]") for i, m in enumerate(v))
        elif dataclasses.is_dataclass(f.default_factory() if f.default_factory is not dataclasses.MISSING else None):
            kw[name] = _build(type(f.default_factory()), v, f"{where}.{name}")
        elif isinstance(v, list):
            kw[name] = tuple(v)
        else:
            kw[name] = v
    return cls(**kw)


def config_path(sweep: str) -> Path:
    """``configs/<sweep>.toml`` (or ``sweep`` itself when it is a path to a .toml file)."""
    p = Path(sweep)
    if p.suffix == ".toml":
        if not p.exists():
            raise UserError(f"config file {p} does not exist; check the path")
        return p
    for d in CONFIG_DIRS:
        if (d / f"{sweep}.toml").exists():
            return d / f"{sweep}.toml"
    names = sorted({q.stem for d in CONFIG_DIRS if d.exists() for q in d.glob("*.toml")})
    raise UserError(f"unknown sweep {sweep!r}; choose one of {', '.join(names)} or pass a .toml file")


def load_config(sweep: str) -> SweepConfig:
    path = config_path(sweep)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} does not parse as TOML ({e}); fix the file") from None
    return _build(SweepConfig, data, path.name)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def digest(obj: Any) -> str:
    """Stable short hash of a JSON-able object (dataclasses are converted first)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
