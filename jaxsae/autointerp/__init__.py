"""SAEBench AutoInterp: the interpretability score µ(θ) of an SAE, with a local or API judge.

    from jaxsae.autointerp import AutoInterpConfig, local_roles, run_autointerp
    explainer, detector = local_roles(judge_lm, cfg)     # or api_roles(ChatClient(...), cfg), or a mix
    result = run_autointerp(stats, explainer, detector, cfg, TokenText(lm.tokenizer))
    result["summary"]["mu"]        # mean score over CONCEPT100

Per latent: an explanation from 10 top + 5 importance-weighted windows (tokens above 1% of the
max activation highlighted), then detection on 2 top + 2 IW + 10 random shuffled windows;
score = accuracy over the 14. CLI: ``python -m jaxsae.autointerp --help``.
"""

from jaxsae.autointerp.config import AutoInterpConfig
from jaxsae.autointerp.roles import (ApiDetector, ApiExplainer, Detection, Detector, Explainer, LocalDetector,
                                    LocalExplainer, api_roles, decide, local_roles)
from jaxsae.autointerp.prompts import TokenText
from jaxsae.autointerp.run import run_autointerp, sae_layer, save_results, stats_for_sae
from jaxsae.autointerp.sampling import LatentExamples, Selection, Window, latent_examples, select_latents
from jaxsae.autointerp.scoring import accuracy, summarize

__all__ = [
    "ApiDetector", "ApiExplainer", "AutoInterpConfig", "Detection", "Detector", "Explainer", "LatentExamples",
    "LocalDetector", "LocalExplainer", "Selection", "api_roles", "local_roles",
    "TokenText", "Window", "accuracy", "decide", "latent_examples", "run_autointerp", "sae_layer",
    "save_results", "select_latents", "stats_for_sae", "summarize",
]
