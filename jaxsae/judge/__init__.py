"""AxBench-style judges: rate steered generations for concept, instruction and fluency (0–2 each),
combined per generation by the zero-guarded harmonic mean.

    from jaxsae.chat import ChatClient
    from jaxsae.judge import LocalJudge, APIJudge
    judge = LocalJudge(load_model("smollm2-135m-instruct"))          # next-token distribution
    judge = APIJudge(ChatClient("https://api.openai.com/v1", "gpt-4o-mini", cache_dir="runs/judge"))
    C, I, F, HM = judge.rate_generations_full(concepts, instructions, outputs).expected

The local judge is imported lazily (it needs JAX and the model code); the rest is plain Python.
"""

from .api import APIJudge
from .base import (GenerationRatings, Judge, RatedGenerations, Rating, RatingRequest, combine, generation_requests,
                   rating_record)
from .rubric import (CRITERIA, MAX_SCORE, RATING_PREFIX, harmonic_mean, judge_messages, judge_prompt, parse_rating,
                     prompt_digest)

__all__ = [
    "APIJudge", "CRITERIA", "GenerationRatings", "Judge", "LocalJudge",
    "MAX_SCORE", "RATING_PREFIX", "RatedGenerations", "Rating", "RatingRequest", "combine", "generation_requests",
    "harmonic_mean", "judge_messages", "judge_prompt", "parse_rating", "prompt_digest", "rating_record",
]


def __getattr__(name):
    if name == "LocalJudge":
        from .local import LocalJudge

        return LocalJudge
    raise AttributeError(f"module 'jaxsae.judge' has no attribute {name!r}")
