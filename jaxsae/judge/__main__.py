"""``python -m jaxsae.judge validate``: measure whether a rating judge can tell what it rates.

    python -m jaxsae.judge validate --axbench ../shared/axbench                      # embedded SmolLM2
    python -m jaxsae.judge validate --axbench ../shared/axbench --judge api \\
        --model gpt-4o-mini --base-url https://api.openai.com/v1 --api-key-env OPENAI_API_KEY

Prints one line per criterion (AUROC, CI, n per class, digit mass, agreement), the verdict, and
writes the JSON result (``--out``). See :mod:`jaxsae.judge.validate` for what is measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxsae.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jaxsae.judge", description="Tools for the AxBench-style judges.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser(
        "validate", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="measure how well a judge separates labelled examples (AUROC with a bootstrap CI per criterion)",
        description="Rate labelled AxBench examples (concept present vs absent, instruction followed vs not, "
                    "fluent vs shuffled/repeated text) and report per criterion the AUROC with a bootstrap CI, "
                    "n per class, the digit mass and the expected/argmax agreement (local judges), and a verdict.",
        epilog="AUROC: P(rating of a positive > rating of a negative) + half the ties; the CI resamples each "
               "class on its own. Digit mass: mean probability the judge puts on the digits 0/1/2 at the rating "
               "slot. Agreement: fraction of ratings whose argmax digit equals the expected rating rounded. "
               "The verdict flags every criterion whose CI includes 0.5 (or whose AUROC is at most 0.5) and a "
               "digit mass below --min-digit-mass: then g (or, for the detector, µ) is not interpretable.")
    v.add_argument("--axbench", required=True, metavar="DIR",
                   help="folder of AxBench concept sets (train_data.parquet / latent_eval_data.parquet, searched "
                        "recursively; every set found is pooled), e.g. ../shared/axbench")
    v.add_argument("--judge", choices=("local", "api"), default="local",
                   help="local: an instruct model run by jaxsae (reads its digit distribution); api: an "
                        "OpenAI-compatible /v1/chat/completions endpoint")
    v.add_argument("--model", default="smollm2-135m-instruct",
                   help="local: a load_model source (the embedded SmolLM2 by default); api: the model name")
    v.add_argument("--dtype", default="float32", help="local: parameter dtype of the judge model")
    v.add_argument("--batch-size", type=int, default=8, help="local: rating prompts per forward pass")
    v.add_argument("--base-url", default="https://api.openai.com/v1", help="api: the endpoint's base URL")
    v.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="api: environment variable holding the key ('' for none); the key is never written")
    v.add_argument("--max-concurrency", type=int, default=8, help="api: requests in flight")
    v.add_argument("--cache-dir", default="",
                   help="api: folder of the request cache; '' puts it in judge_cache beside --out")
    v.add_argument("--n-per-class", type=int, default=24, help="examples per class and criterion")
    v.add_argument("--criteria", default="concept,instruction,fluency", help="comma-separated criteria to measure")
    v.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the AUROC")
    v.add_argument("--ci-level", type=float, default=0.95, help="confidence level of the interval")
    v.add_argument("--seed", type=int, default=0, help="seed of the example draw and the bootstrap")
    v.add_argument("--min-digit-mass", type=float, default=0.5,
                   help="flag a local judge whose mean probability on the digits 0/1/2 is below this")
    v.add_argument("--feature-stats", default="", metavar="DIR",
                   help="also measure the AutoInterp detector: a feature_stats folder (or an SAE folder holding one) "
                        "whose latents' activating windows are told from random ones")
    v.add_argument("--text-model", default="",
                   help="load_model source whose tokenizer turns the windows' token ids into text (default: the "
                        "model recorded in the feature statistics)")
    v.add_argument("--detector-latents", type=int, default=8, help="latents whose scoring windows test the detector")
    v.add_argument("--out", default="judge_validity.json", help="where the JSON result is written (atomically)")
    return p


def _judge(a):
    """(rating judge, AutoInterp roles maker): the maker builds the explainer and detector on the same model."""
    if a.judge == "local":
        import jax.numpy as jnp

        from jaxsae.judge.local import LocalJudge
        from jaxsae.models import load_model

        try:
            dtype = jnp.dtype(a.dtype)
        except TypeError as e:
            raise UserError(f"--dtype {a.dtype!r} is not a dtype; use float32 or bfloat16") from e
        lm = load_model(a.model, dtype=dtype)

        def roles(cfg):
            from jaxsae.autointerp.roles import local_roles

            return local_roles(lm, cfg)

        return LocalJudge(lm, batch_size=a.batch_size), roles
    from jaxsae.chat import ChatClient
    from jaxsae.judge import APIJudge

    cache = Path(a.cache_dir) if a.cache_dir else Path(a.out).resolve().parent / "judge_cache"
    client = ChatClient(a.base_url, a.model, api_key_env=a.api_key_env or None, cache_dir=cache,
                        max_concurrency=a.max_concurrency)

    def roles(cfg):
        from jaxsae.autointerp.roles import api_roles

        return api_roles(client, cfg)

    return APIJudge(client), roles


def _stats(a):
    """The feature statistics of --feature-stats and the token-to-text function of their model."""
    from jaxsae.autointerp.prompts import TokenText
    from jaxsae.features import load
    from jaxsae.models import load_model

    d = Path(a.feature_stats)
    if (d / "feature_stats").is_dir():
        d = d / "feature_stats"
    if not (d / "stats.json").is_file():
        raise UserError(f"--feature-stats {a.feature_stats!r} holds no stats.json; pass a feature_stats folder "
                        "(the autointerp stage writes one beside each SAE)")
    stats = load(d)
    source = a.text_model or stats.meta.get("model")
    if not source:
        raise UserError("the feature statistics do not name their model; pass --text-model")
    return stats, TokenText(load_model(str(source)).tokenizer)


def _line(name: str, r: dict) -> str:
    def num(v):
        return "  n/a" if v is None else f"{v:5.2f}"

    extra = ""
    if r.get("digit_mass") is not None:
        extra += f"  digit mass {r['digit_mass']:.2f}"
    if r.get("agreement") is not None:
        extra += f"  argmax agreement {r['agreement']:.2f}"
    kinds = "  ".join(f"vs {k} {num(v['auroc']).strip()} (n={v['n_neg']})"
                      for k, v in (r.get("by_negative_kind") or {}).items())
    return (f"{name:<12} AUROC {num(r.get('auroc'))}  {round(100 * r['ci_level'])}% CI "
            f"[{num(r.get('ci_low')).strip()}, {num(r.get('ci_high')).strip()}]  n = {r['n_pos']}/{r['n_neg']}"
            f"{extra}  {kinds}")


def validate_main(a) -> int:
    from jaxsae.io import atomic_write_json
    from jaxsae.judge.validate import ValiditySettings, labelled_examples, validate_judge, verdict

    criteria = tuple(c.strip() for c in a.criteria.split(",") if c.strip())
    s = ValiditySettings(axbench_dir=a.axbench, n_per_class=a.n_per_class, criteria=criteria, n_boot=a.n_boot,
                         ci_level=a.ci_level, seed=a.seed, min_digit_mass=a.min_digit_mass,
                         detector_latents=a.detector_latents)
    if not 0.0 < s.ci_level < 1.0:
        raise UserError(f"--ci-level must lie strictly between 0 and 1, got {s.ci_level}")
    examples = labelled_examples(s.axbench_dir, n_per_class=s.n_per_class, seed=s.seed, criteria=s.criteria)
    stats = _stats(a) if a.feature_stats else None
    judge, roles = _judge(a)
    res = validate_judge(judge, examples, settings=s)
    res["judge_stats"] = judge.stats()
    if stats is not None:
        from jaxsae.autointerp.config import AutoInterpConfig
        from jaxsae.autointerp.validate import validate_detector

        cfg = AutoInterpConfig()
        res["detector"] = validate_detector(*roles(cfg), stats[0], stats[1], cfg, settings=s)
    atomic_write_json(a.out, res)
    print(f"judge {res['judge']}  ({res['seconds']:.1f} s, data {res['data']}, key {res['cache_key']})")
    for name, r in [*res["criteria"].items(), *([("detector", res["detector"])] if "detector" in res else [])]:
        print(_line(name, r))
    print(verdict(res) or "the judge separates every measured criterion (each CI excludes 0.5)")
    print(f"wrote {a.out}")
    return 0


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    try:
        if a.command == "validate":
            return validate_main(a)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
