"""The launcher's persistent compilation cache (``--xla-cache``): where it goes, that a second
process reads back what the first compiled, that ``none`` and JAX's own environment setting are
honoured, and the errors. Each case runs in a fresh interpreter (the pytest session has a cache of
its own, set before JAX started)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_PROGRAM = """
import sys, jax, jax.numpy as jnp
hits = []
jax.monitoring.register_event_listener(lambda event, **_: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
from jaxsae.errors import cli_errors
from jaxsae.launch.compile_cache import use_compile_cache
with cli_errors():
    print("folder:", use_compile_cache(None if sys.argv[1] == "-" else sys.argv[1]))
jax.jit(lambda x: jnp.sin(x) * 3 + 1)(jnp.arange(7.0)).block_until_ready()
print("hits:", len(hits))
"""


def _run(tmp_path: Path, folder: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAXSAE_TESTS_XLA", "XDG_CACHE"))}
    base.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **env)
    return subprocess.run([sys.executable, "-c", _PROGRAM, folder], env=base, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)


def _hits(r: subprocess.CompletedProcess) -> int:
    """Programs the process read back from the cache."""
    return int(r.stdout.split("hits:")[1])


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")] if folder.exists() else []


def test_default_folder_is_written_and_read_back_by_the_next_process(tmp_path):
    xdg = tmp_path / "xdg"
    first = _run(tmp_path, "-", XDG_CACHE_HOME=str(xdg))
    assert first.returncode == 0, first.stderr
    assert f"folder: {xdg / 'jaxsae' / 'xla'}" in first.stdout and _hits(first) == 0
    assert _entries(xdg / "jaxsae" / "xla")
    second = _run(tmp_path, "-", XDG_CACHE_HOME=str(xdg))
    assert second.returncode == 0, second.stderr
    assert _hits(second) >= 1


def test_a_folder_given_wins_over_the_environment_and_none_turns_it_off(tmp_path):
    given, env_dir = tmp_path / "given", tmp_path / "env"
    r = _run(tmp_path, str(given), JAX_COMPILATION_CACHE_DIR=str(env_dir))
    assert r.returncode == 0, r.stderr
    assert _entries(given) and not _entries(env_dir)
    # unset: JAX's own environment setting is used as it is
    r = _run(tmp_path, "-", JAX_COMPILATION_CACHE_DIR=str(env_dir))
    assert r.returncode == 0 and "folder: None" in r.stdout, r.stderr
    assert _entries(env_dir)
    # none: nothing read or written, even with the environment's folder set and holding the program
    before = sorted(_entries(env_dir))
    r = _run(tmp_path, "none", JAX_COMPILATION_CACHE_DIR=str(env_dir))
    assert r.returncode == 0 and _hits(r) == 0, r.stderr
    assert sorted(_entries(env_dir)) == before


def test_an_unwritable_folder_given_is_a_one_line_error_and_the_default_is_skipped(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = _run(tmp_path, str(blocker / "xla"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: cannot write the XLA compilation cache folder")
    assert "--xla-cache" in r.stderr and "Traceback" not in r.stderr
    # the default folder unwritable: a warning, and the program runs without the cache
    r = _run(tmp_path, "-", XDG_CACHE_HOME=str(blocker))
    assert r.returncode == 0, r.stderr
    assert "XLA compilation cache off" in r.stderr and "folder: None" in r.stdout
