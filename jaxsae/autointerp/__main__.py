"""python -m jaxsae.autointerp --sae DIR --model SOURCE --judge local:SOURCE|api:URL [--layer L] ...

Scores one SAE folder, or every SAE folder under a sweep folder, and writes beside each SAE:
``feature_stats/`` (the held-out statistics, reused by later runs and by steering: m_f) and
``autointerp.json`` (µ over CONCEPT100, mean ± SE over all scored latents, and per latent its
explanation, windows, predictions, labels and score).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Literal

from jaxsae.autointerp.config import AutoInterpConfig
from jaxsae.errors import UserError, cli_errors
from jaxsae.features import FeatureStatsConfig


@dataclasses.dataclass
class Args:
    """Score SAEs with SAEBench's AutoInterp protocol."""

    sae: Path
    """An SAE folder (SAELens layout: cfg.json + sae_weights.safetensors), or a sweep folder holding several."""
    model: str
    """The model the SAE reads: "smollm2-135m-instruct", a Hugging Face folder, a .gguf file or a Hub id."""
    judge: str
    """"local:SOURCE" (an instruct model loaded like --model; "local:" alone reuses --model) or
    "api:URL" (an OpenAI-compatible endpoint, e.g. api:https://api.openai.com/v1)."""
    layer: int | None = None
    """The SAE's block; default: read from the SAE's cfg (metadata.hook_layer / hook_name)."""
    judge_model: str = "gpt-4o-mini"
    """Model name sent to an API judge."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable that holds the API key (empty for an endpoint without one)."""
    cache_dir: Path | None = None
    """Where API answers are cached; default: .judge_cache inside --sae."""
    text: tuple[Path, ...] = ()
    """Held-out text files (.txt: one document each; .jsonl: a "text" per line); default: the
    offline Python-documentation corpus."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights/activation dtype of the model(s)."""
    recompute_stats: bool = False
    """Recompute the feature statistics even when saved ones match."""
    progress: bool = True
    """Show a progress bar for the statistics pass."""
    stats: FeatureStatsConfig = dataclasses.field(default_factory=FeatureStatsConfig)
    autointerp: AutoInterpConfig = dataclasses.field(default_factory=AutoInterpConfig)


def sae_dirs(root: Path) -> list[Path]:
    """``root`` itself when it is an SAE folder, else every SAE folder below it (sorted)."""
    if (root / "cfg.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob("cfg.json") if (p.parent / "sae_weights.safetensors").is_file())
    if not found:
        raise UserError(f"{root} holds no SAE folder (cfg.json + sae_weights.safetensors); pass an SAE or sweep folder")
    return found


def make_judge(args: Args, lm, cfg: AutoInterpConfig):
    from jaxsae.autointerp.judges import ApiJudge, LocalJudge

    kind, _, where = args.judge.partition(":")
    if kind == "local":
        if not where or where == args.model:
            judge_lm = lm
        else:
            import jax.numpy as jnp

            from jaxsae.models import load_model

            judge_lm = load_model(where, dtype=getattr(jnp, args.dtype))
        return LocalJudge(judge_lm, cfg)
    if kind == "api" and where:
        from jaxsae.judge.api import ChatClient

        cache = args.cache_dir if args.cache_dir is not None else args.sae / ".judge_cache"
        client = ChatClient(where, args.judge_model, api_key_env=args.api_key_env or None, cache_dir=cache)
        return ApiJudge(client, cfg)
    raise UserError(f"--judge {args.judge!r} is neither local:SOURCE nor api:URL")


def main(argv: list[str] | None = None) -> int:
    import tyro

    args = tyro.cli(Args, args=argv)
    with cli_errors():
        return run(args)


def run(args: Args) -> int:
    import jax.numpy as jnp

    import jaxsae.sae as S
    from jaxsae.autointerp.prompts import TokenText
    from jaxsae.autointerp.run import RESULTS_FILE, run_autointerp, sae_layer, save_results, stats_for_sae
    from jaxsae.features import held_out_tokens
    from jaxsae.features.compute import residual_cache
    from jaxsae.features.corpus import read_texts
    from jaxsae.models import load_model

    dirs = sae_dirs(args.sae)
    texts = read_texts(args.text) if args.text else None
    lm = load_model(args.model, dtype=getattr(jnp, args.dtype))
    judge = make_judge(args, lm, args.autointerp)
    token_text = TokenText(lm.tokenizer)
    tokens, _ = held_out_tokens(lm, args.stats, texts)  # tokenised once; residuals once per layer
    resid_at = residual_cache(lm, tokens, args.stats.batch_size)
    for d in dirs:
        sae = S.load(d)
        layer = args.layer if args.layer is not None else sae_layer(sae.cfg)
        if layer is None:
            raise UserError(f"{d}/cfg.json names no hook layer; pass --layer")
        if sae.d_in != lm.config.d_model:
            raise UserError(f"{d} reads {sae.d_in}-wide activations but {args.model} has d_model={lm.config.d_model}; pass the SAE's model")
        stats = stats_for_sae(d, sae, lm, layer, args.stats, texts=texts, tokens=tokens, recompute=args.recompute_stats,
                              progress=args.progress, resid_ntd=functools.partial(resid_at, layer))
        result = run_autointerp(stats, judge, args.autointerp, token_text)
        result["sae"] = str(d)
        save_results(result, d / RESULTS_FILE)
        s = result["summary"]
        print(
            f"{d}: mu(CONCEPT{s['n_concept']}, {s['n_concept_requested']} asked) = {s['mu']:.4f}; mean over "
            f"{s['n_scored']} scored = {s['mean_all']:.4f} ± {s['se_all']:.4f} (SE); {s['n_failed']} failed; "
            f"{s['n_alive']}/{s['d_sae']} alive; {s['held_out_tokens']:,} held-out tokens -> {d / RESULTS_FILE}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
