"""JAX's persistent compilation cache for launches: the programs one launch compiles (the sweep's
training step, the statistics pass, generation, the judges) are written to a folder and read back
by the next launch that builds the same program (a resumed or repeated run, another stage, another
sweep with the same shapes) instead of being compiled again. JAX keys each entry by the program,
the compile options, the devices and the jax / jaxlib versions, so a changed program is never read
back for another.

``--xla-cache`` (launcher): unset, JAX's own ``JAX_COMPILATION_CACHE_DIR`` when it is set (JAX then
uses it as it is), else :func:`default_folder`; a folder; or ``none`` to compile everything anew.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from jaxsae.errors import UserError

MAX_BYTES = 4 << 30
"""Size the cache folder is kept under (least recently used entries go first) when jaxsae sets it
up; a size also makes JAX lock the folder, so processes sharing it never read a half-written entry."""


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/jaxsae/xla`` (``~/.cache/jaxsae/xla`` when XDG_CACHE_HOME is unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "jaxsae" / "xla"


def use_compile_cache(folder: str | None) -> Path | None:
    """Set up the persistent compilation cache before the first compile (see the module docstring
    for ``folder``). Returns the folder in use (None: off, or JAX's own from the environment).
    A folder given that cannot be written is a one-line error naming the option; the default
    folder, when it cannot be written, leaves the cache off with a warning (the launch does not
    depend on it)."""
    import jax

    if folder is not None and folder.strip().lower() == "none":
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    if folder is None and os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None  # JAX reads it (and its other JAX_* cache settings) itself
    path = Path(folder).expanduser() if folder is not None else default_folder()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        if folder is None:
            warnings.warn(f"XLA compilation cache off: cannot write {path} ({e.strerror}); pass --xla-cache DIR to "
                          "keep compiled programs between launches", stacklevel=2)
            return None
        raise UserError(f"cannot write the XLA compilation cache folder {path} ({e.strerror}); pass --xla-cache "
                        "with a writable folder, or --xla-cache none") from None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    if not os.environ.get("JAX_COMPILATION_CACHE_MAX_SIZE"):
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
