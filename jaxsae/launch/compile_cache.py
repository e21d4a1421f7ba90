"""JAX's persistent compilation cache for launches: the programs one launch compiles (the sweep's
training step, the statistics pass, generation, the judges) are written to a folder and read back
by the next launch that builds the same program (a resumed or repeated run, another stage, another
sweep with the same shapes) instead of being compiled again. JAX keys each entry by a hash of the
program, the compile options, the devices, the jaxlib version and the XLA flags, so a changed
program is never read back for another. Only programs that took at least
``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` (JAX's default: 1 s) to compile are written; in a
multi-process run, process 0 writes and every process reads.

The cache is trusted code: whoever can write its folder can make a launch run their code (JAX's
own warning). The default folder is made readable and writable by its owner only, and a folder
given that others can write draws a warning.

``--compile-cache`` (launcher): unset, JAX's own ``JAX_COMPILATION_CACHE_DIR`` when it is set, else
:func:`default_folder`; a folder; or ``none`` to compile everything anew.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from jaxsae.errors import UserError

MAX_BYTES = 4 << 30
"""Size the cache folder is kept under (least recently used entries go first) unless
``JAX_COMPILATION_CACHE_MAX_SIZE`` says otherwise; a size also makes JAX lock the folder, so
processes sharing it never read a half-written entry."""


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/jaxsae/xla`` (``~/.cache/jaxsae/xla`` when XDG_CACHE_HOME is unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "jaxsae" / "xla"


def use_compile_cache(folder: str | None) -> Path | None:
    """Set up the persistent compilation cache (see the module docstring for ``folder``), to take
    effect at the next compile. Returns the folder set (None: off, or JAX's own from the
    environment). A folder given that cannot be written is a one-line error naming the option; the
    default folder, when it cannot be written, leaves the cache off with a warning (the launch does
    not depend on it)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if not os.environ.get("JAX_COMPILATION_CACHE_MAX_SIZE"):
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    if folder is not None and folder.strip().lower() == "none":
        jax.config.update("jax_enable_compilation_cache", False)
        compilation_cache.reset_cache()
        return None
    if folder is None and os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None  # JAX reads it (and its other JAX_* cache settings) itself
    path = Path(folder).expanduser() if folder is not None else default_folder()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        if folder is None:
            warnings.warn(f"XLA compilation cache off: cannot write {path} ({e.strerror}); pass --compile-cache DIR to "
                          "keep compiled programs between launches", stacklevel=2)
            return None
        raise UserError(f"cannot write the compilation cache folder {path} ({e.strerror}); pass --compile-cache "
                        "with a writable folder, or --compile-cache none") from None
    if path.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        warnings.warn(f"the compilation cache folder {path} is writable by other users, who could make this launch "
                      "run their code; make it yours alone (chmod 700) or pass another --compile-cache", stacklevel=2)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    compilation_cache.reset_cache()  # a cache set up by an earlier compile in this process is set up anew
    return path
