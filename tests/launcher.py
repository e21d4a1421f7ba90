"""`python -m jaxsae.launch ARGS` (or another entry point) run inside the test process: the module's
own ``__main__`` code, with stdout and stderr captured, the exit status taken from ``SystemExit``
and an uncaught exception's traceback written to stderr with status 1, as the interpreter does.

Why in-process: a launch in a fresh interpreter spends most of its time importing and compiling
programs the test process has compiled already (the smoke sweep: about 22 s in a subprocess, 11 s
here once its programs are cached). What needs a process of its own (a kill, other device counts,
several processes, the interpreter's real exit status) keeps ``subprocess``; each of those has a
test of its own.

What differs from a fresh interpreter: a process keeps its compiled programs, the models of
``jaxsae.launch.resources`` (keyed by source, dtype and tensor_parallel; read-only) and the library's
other per-process caches; output written below Python (XLA's C++ logging to fd 2) and warnings
issued before the call (at import) are not captured, and anything another thread of this process
prints during the call is. A launch that outlives ``timeout`` seconds raises TimeoutError."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import runpy
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _like_a_fresh_interpreter(stderr: io.StringIO):
    """Warnings and log records written to ``stderr`` in order, with Python's default filters
    (each warning once per place, deprecations hidden), as ``python -m`` shows them."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stderr)  # logging's last-resort handler: WARNING and above, bare message
    handler.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.resetwarnings()  # then Python's default filters; anything else: once per place
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = lambda msg, cat, file, line, f=None, ln=None: stderr.write(
            warnings.formatwarning(msg, cat, file, line, ln))
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)


def python_m(module: str, *args: str, cwd: Path | None = None, env: dict[str, str | None] | None = None,
             timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m module *args`` in this process (``runpy`` runs the module's ``__main__`` as the
    interpreter does), from ``cwd`` (default: the repository root) with ``env`` added to (None:
    removed from) the environment. Returns what ``subprocess.run(..., capture_output=True,
    text=True)`` would: args, returncode, stdout, stderr."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    code = 0

    def too_long(signum, frame):
        raise TimeoutError(f"python -m {module} {' '.join(argv)} ran over {timeout} s")

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            _like_a_fresh_interpreter(err):
        try:  # everything set here is undone when the block leaves
            for k, v in (env or {}).items():
                if v is None:
                    mp.delenv(k, raising=False)
                else:
                    mp.setenv(k, v)
            mp.chdir(cwd or ROOT)
            mp.setattr(sys, "argv", [module, *argv])
            spec = importlib.util.find_spec(module)
            if spec is not None:  # as in a fresh interpreter: the __main__ module not imported yet
                mp.delitem(sys.modules, module + ".__main__" if spec.submodule_search_locations is not None else module,
                           raising=False)
            previous = signal.signal(signal.SIGALRM, too_long)
            signal.alarm(timeout)
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, previous)
        except SystemExit as e:
            if isinstance(e.code, str):
                err.write(e.code + "\n")
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception:  # noqa: BLE001 - the interpreter prints it and exits 1
            err.write(traceback.format_exc())
            code = 1
    return subprocess.CompletedProcess(["python", "-m", module, *argv], code, out.getvalue(), err.getvalue())


def in_a_fresh_interpreter(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The same as :func:`python_m`, but a real ``python -m module *args`` from the repository root."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


def launch(*args: str, cwd: Path | None = None, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """``python -m jaxsae.launch *args`` in this process (see :func:`python_m`)."""
    return python_m("jaxsae.launch", *args, cwd=cwd, env=env)


STAGES = ["train", "metrics", "autointerp", "validity", "steer", "select", "steer_selected", "analysis", "report"]
NO_AXBENCH = () if (ROOT.parent / "shared" / "axbench").is_dir() else ("--validity.skip",)
"""Without the AxBench data beside the repository the validity stage is skipped by its setting
(the tests of that stage then skip; under CI the data is required)."""


def smoke(out: Path, *args: str) -> subprocess.CompletedProcess:
    """The smoke sweep into ``out`` with ``args`` (see :func:`launch`)."""
    return launch("--sweep", "smoke", "--out", str(out), *NO_AXBENCH, *args)


def ran(stdout: str) -> list[str]:
    """Stages that did work in this invocation (not skipped)."""
    return [line.split("] ", 1)[1].split(":", 1)[0] for line in stdout.splitlines()
            if line.startswith("[") and ": finished in " in line]


def smoke_ok(out: Path, *args: str) -> str:
    """stdout of a smoke launch that must succeed."""
    r = smoke(out, *args)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return r.stdout
