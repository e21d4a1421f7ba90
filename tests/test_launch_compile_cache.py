"""The launcher's persistent compilation cache (``--compile-cache``): where it goes, that a second
process reads back what the first compiled, that ``none`` and JAX's own environment setting are
honoured, its size limit and permissions, the errors, and that the launcher sets it up before
anything runs. The cases run in fresh interpreters (the pytest session has a cache of its own, set
before JAX started)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

_PROGRAM = """
import sys, jax, jax.numpy as jnp
hits = []
jax.monitoring.register_event_listener(lambda event, **_: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
from jaxsae.errors import cli_errors
from jaxsae.launch.compile_cache import use_compile_cache
if len(sys.argv) > 2:  # a program compiled first, as by an earlier launch in the same process
    jax.jit(lambda x: jnp.cos(x) - 2)(jnp.arange(5.0)).block_until_ready()
with cli_errors():
    print("folder:", use_compile_cache(None if sys.argv[1] == "-" else sys.argv[1]))
jax.jit(lambda x: jnp.sin(x) * 3 + 1)(jnp.arange(7.0)).block_until_ready()
print("hits:", len(hits))
print("max:", jax.config.jax_compilation_cache_max_size)
"""


def _run(tmp_path: Path, folder: str, *, early: bool = False, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAXSAE_TESTS_XLA", "XDG_CACHE"))}
    base.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **env)
    argv = [sys.executable, "-c", _PROGRAM, folder] + ["early"] * early
    return subprocess.run(argv, env=base, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def _hits(r: subprocess.CompletedProcess) -> int:
    """Programs the process read back from the cache."""
    return int(r.stdout.split("hits:")[1].split()[0])


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")] if folder.exists() else []


def test_default_folder_is_written_and_read_back_by_the_next_process(tmp_path):
    xdg = tmp_path / "xdg"
    folder = xdg / "jaxsae" / "xla"
    first = _run(tmp_path, "-", XDG_CACHE_HOME=str(xdg))
    assert first.returncode == 0, first.stderr
    assert f"folder: {folder}" in first.stdout and _hits(first) == 0
    assert _entries(folder)
    assert f"max: {4 << 30}" in first.stdout and (folder / ".lockfile").exists()  # a size: evicted and locked
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # trusted code: the owner's alone
    second = _run(tmp_path, "-", XDG_CACHE_HOME=str(xdg))
    assert second.returncode == 0, second.stderr
    assert _hits(second) >= 1


def test_a_folder_given_wins_over_the_environment_and_none_turns_it_off(tmp_path):
    given, env_dir = tmp_path / "given", tmp_path / "env"
    r = _run(tmp_path, str(given), JAX_COMPILATION_CACHE_DIR=str(env_dir))
    assert r.returncode == 0, r.stderr
    assert _entries(given) and not _entries(env_dir)
    # unset: JAX's own environment setting is used as it is, with the size limit
    r = _run(tmp_path, "-", JAX_COMPILATION_CACHE_DIR=str(env_dir))
    assert r.returncode == 0 and "folder: None" in r.stdout and f"max: {4 << 30}" in r.stdout, r.stderr
    assert _entries(env_dir)
    # set after another program was compiled with the environment's folder: the new folder is used
    later = tmp_path / "later"
    r = _run(tmp_path, str(later), early=True, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "first"))
    assert r.returncode == 0, r.stderr
    assert len(_entries(later)) == len(_entries(given)) and _entries(tmp_path / "first")
    # none: nothing read or written, even with the environment's folder set and holding the program
    before = sorted(_entries(env_dir))
    r = _run(tmp_path, "none", JAX_COMPILATION_CACHE_DIR=str(env_dir))
    assert r.returncode == 0 and _hits(r) == 0, r.stderr
    assert sorted(_entries(env_dir)) == before and not (tmp_path / "none").exists()


def test_errors_and_warnings(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = _run(tmp_path, str(blocker / "xla"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: cannot write the compilation cache folder")
    assert "--compile-cache" in r.stderr and "Traceback" not in r.stderr
    # the default folder unwritable: a warning, and the program runs without the cache
    r = _run(tmp_path, "-", XDG_CACHE_HOME=str(blocker))
    assert r.returncode == 0, r.stderr
    assert "XLA compilation cache off" in r.stderr and "folder: None" in r.stdout
    # a folder others can write: used, with a warning
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    r = _run(tmp_path, str(shared))
    assert r.returncode == 0 and "writable by other users" in r.stderr, r.stderr


def test_the_launcher_sets_the_cache_up_before_anything_runs(tmp_path, monkeypatch):
    import jaxsae.launch.__main__ as launch

    calls = []

    class Stop(Exception):
        pass

    def init_distributed():
        calls.append("init_distributed")
        raise Stop

    monkeypatch.setattr(launch, "use_compile_cache", lambda folder: calls.append(("cache", folder)))
    monkeypatch.setattr(launch, "init_distributed", init_distributed)
    for argv, folder in ((["--compile-cache", str(tmp_path / "c")], str(tmp_path / "c")), ([], None)):
        calls.clear()
        try:
            launch.main(["--sweep", "smoke", "--out", str(tmp_path / "run"), *argv])
        except Stop:
            pass
        assert calls == [("cache", folder), "init_distributed"]
