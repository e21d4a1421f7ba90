"""Several processes, one run: joining, barriers, one writer, global arrays and host copies.

A multi-process run (Slurm nodes, a TPU pod's hosts, or two local processes in a test) trains the
sweep as one computation over every process's devices; process 0 alone writes files, and the
others wait at a barrier wherever they would read something process 0 writes. With one process
every helper here is a no-op or the plain single-process call.
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np

_BARRIERS = itertools.count()
_DEFAULT_BARRIER_TIMEOUT_S = 7 * 24 * 3600  # process 0 may run hours-long stages alone


def init_distributed() -> tuple[int, int]:
    """Join a multi-process run when the environment says there is one; (process index, count).

    JAXSAE_COORDINATOR (host:port), JAXSAE_NUM_PROCESSES and JAXSAE_PROCESS_ID configure it
    explicitly (Slurm, local tests); JAXSAE_DISTRIBUTED=auto lets JAX detect it (TPU pods).
    Must run before anything touches a JAX device."""
    import jax

    n = int(os.environ.get("JAXSAE_NUM_PROCESSES", "1"))
    if n > 1 or os.environ.get("JAXSAE_DISTRIBUTED") == "auto":
        # CPU devices of different processes talk over gloo (TCP); GPUs and TPUs ignore this
        if jax.config.jax_cpu_collectives_implementation is None:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if n > 1:
        from jaxsae.errors import UserError

        missing = [k for k in ("JAXSAE_COORDINATOR", "JAXSAE_PROCESS_ID") if not os.environ.get(k)]
        if missing:
            raise UserError(f"JAXSAE_NUM_PROCESSES={n} also needs {' and '.join(missing)} (coordinator host:port, this process's rank)")
        jax.distributed.initialize(
            coordinator_address=os.environ["JAXSAE_COORDINATOR"], num_processes=n,
            process_id=int(os.environ["JAXSAE_PROCESS_ID"]),
        )
    elif os.environ.get("JAXSAE_DISTRIBUTED") == "auto":
        jax.distributed.initialize()
    return jax.process_index(), jax.process_count()


def _client():
    """The coordination service's client. JAX has no public API for its key-value store
    (``multihost_utils`` itself reads this private handle); the public barrier,
    ``multihost_utils.sync_global_devices``, is a device collective, which would time out while
    process 0 runs a long stage alone and cannot carry another process's failure message."""
    from jax._src import distributed as _dist

    return _dist.global_state.client


_FAILED_KEY = "jaxsae/failed"


def report_failure(message: str) -> None:
    """Tell the other processes that this one failed, so that they stop at their next barrier
    instead of waiting for it (no-op with one process)."""
    import jax

    client = _client() if jax.process_count() > 1 else None
    if client is not None:
        try:
            client.key_value_set(_FAILED_KEY, f"process {jax.process_index()}: {message}", allow_overwrite=True)
        except Exception:  # noqa: BLE001 - the coordinator may be gone already
            pass


def barrier(name: str, timeout_s: float | None = None) -> None:
    """Wait until every process reaches this point (no-op with one process).

    Every process must call the same barriers in the same order. Uses the coordination service's
    key-value store (no device collective), so a long wait — process 0 running a stage alone —
    cannot time out a collective; a process that failed (:func:`report_failure`) stops the others
    here with its message; the timeout (default a week, or JAXSAE_BARRIER_TIMEOUT seconds) only
    catches a process that hangs."""
    import jax

    if jax.process_count() == 1:
        return
    from jaxsae.errors import UserError

    n, key = jax.process_count(), f"jaxsae/barrier/{next(_BARRIERS)}"
    timeout_s = timeout_s or float(os.environ.get("JAXSAE_BARRIER_TIMEOUT", _DEFAULT_BARRIER_TIMEOUT_S))
    client = _client()
    if client is None:  # initialised by other means: fall back to a device collective
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"{key}/{name}")
        return
    client.key_value_set(f"{key}/{jax.process_index()}", name)
    deadline, poll = time.monotonic() + timeout_s, 0.01
    while True:
        arrived = client.key_value_dir_get(f"{key}/")
        if len(arrived) >= n:
            names = sorted({v for _, v in arrived})
            if len(names) > 1:
                raise RuntimeError(f"processes diverged: barrier {key} reached as {names}")
            return
        try:  # doubles as the sleep between polls
            failed = client.blocking_key_value_get(_FAILED_KEY, int(poll * 1000))
        except Exception:  # noqa: BLE001 - not set: nobody failed
            failed = None
        if failed is not None:
            raise UserError(f"stopping: {failed}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for the other processes at {name!r}")
        poll = min(poll * 2, 1.0)


def put(value, sharding):
    """``value`` (the same host value on every process) placed with ``sharding``; each process
    supplies only its addressable shards, so the sharding may span processes."""
    import jax

    if isinstance(value, jax.Array) and value.sharding == sharding:
        return value
    if sharding.is_fully_addressable:
        return jax.device_put(value, sharding)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(tree):
    """Numpy copy of a pytree of arrays on every process: arrays this process holds entirely are
    copied; sharded arrays spanning processes are all-gathered first
    (``multihost_utils.process_allgather``, a collective: every process must call it)."""
    import jax
    from jax.experimental import multihost_utils

    def host(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
            return multihost_utils.process_allgather(a, tiled=True)  # the global array, on every process
        return np.asarray(jax.device_get(a))

    return jax.tree.map(host, tree)
