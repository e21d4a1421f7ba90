"""What the stages run on: the models (loaded once per process and shared), the local device
mesh, held-out text, and the judges the configuration asks for."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from jaxsae.errors import UserError
from jaxsae.launch.runner import Run


_LM_CACHE: dict[tuple[str, str], object] = {}


def local_mesh(tensor_parallel: int = 0):
    """A ("data", "model") mesh over this process's first ``tensor_parallel`` local devices for the
    model's weights (0: all of them on GPUs/TPUs, none on CPUs); None for one device."""
    import jax
    from jax.sharding import Mesh

    devices = jax.local_devices()
    n = (1 if devices[0].platform == "cpu" else len(devices)) if tensor_parallel == 0 else tensor_parallel
    if not 1 <= n <= len(devices):
        raise UserError(f"models.tensor_parallel = {tensor_parallel} but this process has {len(devices)} local "
                        "device(s); use 0 (auto), 1, or at most that many")
    return None if n == 1 else Mesh(np.asarray(devices[:n]).reshape(1, n), ("data", "model"))


def load_lm(source: str, dtype: str = "float32", tensor_parallel: int = 0):
    """Models are loaded once per process and shared by the stages (weights split over
    :func:`local_mesh`'s devices)."""
    import jax.numpy as jnp

    from jaxsae.models import load_model

    key = (source, dtype, tensor_parallel)
    if key not in _LM_CACHE:
        _LM_CACHE[key] = load_model(source, dtype=getattr(jnp, dtype), mesh=local_mesh(tensor_parallel))
    return _LM_CACHE[key]


def shared_lm(run: Run, source: str, dtype: str = "float32", tensor_parallel: int = 0):
    """:func:`load_lm` in a stage every process runs: process 0 loads first (it may fetch or
    convert the checkpoint into a cache), the others after it. Every process must call it."""
    from jaxsae.distributed import barrier

    if run.is_writer:
        load_lm(source, dtype, tensor_parallel)
    barrier(f"model {source} ({dtype}) loaded by process 0")
    return load_lm(source, dtype, tensor_parallel)


def spec_lm(run: Run, spec, *, steer: bool = False):
    """The model of a ``models`` entry (its steering model with ``steer``), via :func:`shared_lm`."""
    source = (spec.steer_source or spec.source) if steer else spec.source
    return shared_lm(run, source, spec.dtype, spec.tensor_parallel)


def progress(items, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="sae", dynamic_ncols=True)


def texts_for(run: Run) -> Iterable[str] | None:
    """Held-out text: None for the embedded corpus (the statistics pass then reads Python's
    documentation topics), the held-out part of an ``hf:`` dataset (streamed lazily, disjoint
    from the training stream), else the last tenth of every local document (training reads the
    rest)."""
    src = run.cfg.data.source
    if src == "embedded":
        return None
    if src.startswith("hf:"):
        from jaxsae.train.data import hf_held_out_texts

        return hf_held_out_texts(src)
    from jaxsae.train.data import local_texts

    return local_texts(src, held_out=True)  # the last tenth of every document, which training skips


def held_out(run: Run, lm, n_tokens: int, context: int):
    """Held-out contexts (the statistics corpus, disjoint from training text) and counted mask."""
    from jaxsae.features import FeatureStatsConfig, held_out_tokens
    from jaxsae.features.compute import special_ids
    from jaxsae.text import counted_mask

    cfg = FeatureStatsConfig(context_len=context, total_tokens=n_tokens)
    tokens, bos = held_out_tokens(lm, cfg, texts_for(run))
    counted = counted_mask(tokens, special_ids(lm), mask_first=not bos)
    return tokens, counted


def judge_dtype(setting: str) -> str:
    """``judge.dtype`` resolved: "auto" is bfloat16 on GPU / TPU (a 9B judge in half the memory,
    at the accelerator's rate; rates within 0.02 of float32, tested) and float32 on a CPU."""
    import jax

    if setting == "auto":
        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    return setting


def make_judge_lm(run: Run):
    j = run.cfg.judge
    if j.kind != "local":
        return None
    return shared_lm(run, j.model, judge_dtype(j.dtype))


def check_templates(run: Run) -> None:
    """Both template files (judge.templates, autointerp.templates): a missing or malformed file
    fails here, before any work (what a type cannot say)."""
    from jaxsae.autointerp.prompts import load_templates as autointerp_templates
    from jaxsae.judge.rubric import load_templates as judge_templates

    judge_templates(run.cfg.judge.templates)
    autointerp_templates(run.cfg.autointerp.templates)


def chat_client(run: Run):
    """The API judge's client (judge.kind = "api"), its request cache in the run folder."""
    from jaxsae.chat import ChatClient

    j = run.cfg.judge
    return ChatClient(j.base_url, j.model, api_key_env=j.api_key_env or None, cache_dir=run.out / "judge_cache",
                      max_concurrency=j.max_concurrency, max_retries=j.max_retries, timeout_s=j.timeout_s)


def make_rating_judge(run: Run):
    """The steering judge (jaxsae.judge) the config asks for."""
    from jaxsae.judge.rubric import load_templates

    j = run.cfg.judge
    templates = load_templates(j.templates)
    if j.kind == "local":
        from jaxsae.judge import LocalJudge

        return LocalJudge(make_judge_lm(run), templates=templates)
    from jaxsae.judge import APIJudge

    return APIJudge(chat_client(run), temperature=j.temperature, max_tokens=j.max_tokens, templates=templates)


def validity_judges(run: Run):
    """(rating judge, (AutoInterp explainer, detector)) of the configuration, loaded on this process
    only (the validity stage runs on process 0 alone, so no barrier)."""
    from jaxsae.autointerp.roles import api_roles, local_roles
    from jaxsae.judge.rubric import load_templates

    j, ai = run.cfg.judge, run.cfg.autointerp
    templates = load_templates(j.templates)
    if j.kind == "local":
        from jaxsae.judge import LocalJudge

        lm = load_lm(j.model, judge_dtype(j.dtype))
        return LocalJudge(lm, templates=templates), local_roles(lm, ai)
    from jaxsae.judge import APIJudge

    client = chat_client(run)
    return (APIJudge(client, temperature=j.temperature, max_tokens=j.max_tokens, templates=templates),
            api_roles(client, ai))
