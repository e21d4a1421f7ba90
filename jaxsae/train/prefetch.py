"""Batches prepared ahead of the step loop: a background thread reads each step's batch from the
host and puts it on the devices (``device_put`` / ``make_array_from_callback``) up to ``depth``
batches ahead, so the host read and the transfer overlap the running step.

The batch of step ``i`` is ``make(i)`` whatever the timing, so a resumed run reads exactly the
batches an uninterrupted one would. An error in ``make`` is raised in the consumer at the step it
belongs to; closing the prefetcher (or leaving its ``with`` block, also on an error) stops and joins
the thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

_POLL_S = 0.05  # how often a blocked producer looks whether it was told to stop


class Prefetcher:
    """Iterate ``(step, make(step))`` over ``steps`` with a thread running ``depth`` batches ahead."""

    def __init__(self, make: Callable[[int], Any], steps: range, depth: int = 2):
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._make, self._steps = make, steps
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="jaxsae-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        for step in self._steps:
            if self._stop.is_set():
                return
            try:
                item = (step, self._make(step), None)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                self._put((step, None, e))
                return
            if not self._put(item):
                return

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        for _ in self._steps:
            step, batch, err = self._queue.get()
            if err is not None:
                raise err
            yield step, batch

    def close(self) -> None:
        """Stop the thread and wait for it (a batch being made is finished first, then dropped)."""
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a producer waiting on a full queue
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=_POLL_S)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
