"""What a finished stage left behind, verified before it is reused, and who is running in a folder.

A stage's manifest records the size and SHA-256 of every file it wrote (:func:`file_records`); a
later run reuses the stage only when :func:`damaged` finds every file as recorded. A run folder has
one lock (:class:`RunLock`, an ``flock`` held by the launcher's process 0, released by the kernel
when that process dies), so ``--status`` can tell a running stage from an interrupted one, and two
launchers never write into one folder at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path

from jaxsae.errors import UserError
from jaxsae.io import atomic_write_json

_CHUNK = 1 << 20


class Hasher:
    """SHA-256 of files, remembered per (path, size, mtime) so a folder is read once per run."""

    def __init__(self):
        self._seen: dict[tuple[str, int, int], str] = {}

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._seen:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(_CHUNK):
                    h.update(block)
            self._seen[key] = h.hexdigest()
        return self._seen[key]


def expand(root: Path, outputs: list[str]) -> list[str]:
    """The files behind ``outputs`` (paths relative to ``root``; a folder stands for every file
    under it), sorted; hidden temporaries of atomic writes are left out."""
    files = set()
    for o in outputs:
        p = root / o
        if p.is_dir():
            files.update(str(q.relative_to(root)) for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
        elif p.exists():
            files.add(o)
    return sorted(files)


def file_records(root: Path, outputs: list[str], hasher: Hasher) -> dict[str, dict]:
    """{relative path: {"size", "sha256"}} of every file behind ``outputs``."""
    return {f: {"size": (root / f).stat().st_size, "sha256": hasher.sha256(root / f)} for f in expand(root, outputs)}


def damaged(root: Path, records: dict[str, dict], hasher: Hasher) -> dict[str, str]:
    """{relative path: what is wrong} for the recorded files that are missing or differ."""
    bad = {}
    for f, rec in records.items():
        p = root / f
        if not p.is_file():
            bad[f] = "missing"
        elif p.stat().st_size != rec["size"]:
            bad[f] = f"{p.stat().st_size} bytes, {rec['size']} recorded"
        elif hasher.sha256(p) != rec["sha256"]:
            bad[f] = "contents differ from the recorded hash"
    return bad


def result_id(manifest: dict) -> str:
    """A fingerprint of what a finished stage produced: its configuration hash and its files'
    hashes. A downstream stage records its upstream stages' ids; when one changes (the upstream
    stage was redone and wrote something else), the downstream results are stale."""
    payload = {"config_hash": manifest.get("config_hash"),
               "files": {k: v["sha256"] for k, v in sorted(manifest.get("files", {}).items())}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class RunLock:
    """The run folder's lock (``<out>/manifests/run.lock``), held while a launcher runs stages.

    ``acquire`` refuses (one line) when another live launcher holds it. While held, a heartbeat
    thread stamps the running stage's progress file every ``beat_s`` seconds, so the time an
    interrupted attempt ran is known on resume."""

    def __init__(self, out: Path, beat_s: float = 10.0):
        self.path = Path(out) / "manifests" / "run.lock"
        self.beat_s = beat_s
        self._fd: int | None = None
        self._beat: tuple[threading.Thread, threading.Event] | None = None

    @staticmethod
    def held(out: Path) -> bool:
        """Whether a live process holds the lock of run folder ``out`` now."""
        path = Path(out) / "manifests" / "run.lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = self.path.read_text().strip() or "another process"
            raise UserError(f"another launcher is running in {self.path.parents[1]} ({who}); wait for it to "
                            "finish (see --status) or pass a new --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd

    def beat(self, progress_file: Path, record: dict) -> None:
        """Stamp ``record["alive"]`` into ``progress_file`` now and every ``beat_s`` seconds until
        :meth:`stop_beat` (or :meth:`release`)."""
        self.stop_beat()
        stop = threading.Event()

        def loop():
            while True:
                try:
                    atomic_write_json(progress_file, {**record, "alive": time.time()})
                except OSError:
                    pass  # the stage may have finished and removed it meanwhile
                if stop.wait(self.beat_s):
                    return

        t = threading.Thread(target=loop, name="jaxsae-heartbeat", daemon=True)
        t.start()
        self._beat = (t, stop)

    def stop_beat(self) -> None:
        if self._beat is not None:
            t, stop = self._beat
            stop.set()
            t.join()
            self._beat = None

    def release(self) -> None:
        self.stop_beat()
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
