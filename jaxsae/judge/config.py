"""The judge section of a sweep: who rates steered generations and explains/detects latents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class JudgeConfig:
    """Who rates steered generations (AxBench) and explains / detects latents (AutoInterp)."""

    kind: Literal["local", "api"] = "local"
    """"local" (an instruct model run by jaxsae) or "api" (an OpenAI-compatible endpoint)."""
    model: str = "smollm2-135m-instruct"
    """Local: a load_model source. API: the model name (e.g. gpt-4o-mini)."""
    base_url: str = "https://api.openai.com/v1"
    """API base URL (only for kind = "api")."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never written anywhere; empty: no key)."""
    max_concurrency: int = 8
    """Concurrent API requests."""
    max_retries: int = field(default=5, metadata={"hashed": False})
    """API: retries of one request (exponential backoff, ``Retry-After`` honoured) before it counts
    as failed for good; such a request is not a result: its stage stays incomplete and a re-run
    retries it."""
    timeout_s: float = field(default=60.0, metadata={"hashed": False})
    """API: seconds one request may take before it is retried."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Local judge weights and activations: "auto" (bfloat16 on GPU / TPU, float32 on a CPU),
    "float32" or "bfloat16"."""
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
