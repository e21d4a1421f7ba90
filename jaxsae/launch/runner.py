"""Stages cached in the run folder, each with a manifest, skipped when already done.

A stage's manifest (``<out>/manifests/<stage>.json``) records the hash of the configuration the
stage depends on (its own sections and its upstream stages'), library versions, wall time and its
outputs. It also records the size and SHA-256 of every file the stage wrote and the result ids of the
upstream stages it read (:mod:`jaxsae.launch.integrity`). On a re-run a stage is skipped only when
its hash matches, every recorded file is intact and its upstream stages still hold what it read;
it is redone when outputs were deleted or damaged (an expensive stage stops instead, naming the
file and the ``--redo`` that fixes it), redone when an upstream stage was redone since (stale), and
a changed configuration is refused with a message naming the stage and the changed sections,
instead of mixing results. A stage whose outputs hold judge requests that failed for good
(:attr:`Stage.incomplete`) gets no manifest: the run stops with one line, and a re-run retries them.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from jaxsae.distributed import barrier
from jaxsae.errors import UserError
from jaxsae.io import atomic_write_json
from jaxsae.launch.config import SweepConfig, digest
from jaxsae.launch.integrity import Hasher, RunLock, damaged, file_records, result_id


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the study."""

    name: str
    """Stage name used on the command line and for its manifest."""
    sections: tuple[str, ...]
    """Config sections whose values the stage's results depend on."""
    upstream: tuple[str, ...]
    """Stages whose results this one reads."""
    fn: Callable
    """``fn(run) -> list[str]``: does the work (resuming its own partial progress) and returns the
    output paths, relative to the run folder."""
    help: str = ""
    """One line for --help."""
    collective: bool = False
    """Whether every process of a multi-process run takes part in one computation (training
    sharded over all their devices)."""
    validate: Callable | None = None
    """``validate(run)``: cheap checks of the stage's settings (raising UserError), run before
    anything of the stage is touched, so a bad redo leaves the finished stage as it was."""
    split: bool = False
    """Whether every process of a multi-process run takes its share of the SAEs (:meth:`Run.share`)
    and writes that share's per-SAE files; stages neither collective nor split run on process 0
    alone while the others wait."""
    expensive: bool = False
    """Whether redoing the stage costs hours (training): a damaged output then stops the run with
    one line naming the file and ``--redo`` instead of silently recomputing everything."""
    per_sae: tuple[str, ...] = ()
    """Files the stage writes into each SAE's folder (for ``--status``'s per-SAE table)."""
    incomplete: Callable | None = None
    """``incomplete(run) -> str | None``: read from the stage's outputs once every process has
    written its share, why they are not all results (judge requests that failed for good), or None.
    Such a stage is not done: the run stops with that line, keeps what was made, and a plain re-run
    redoes only what failed."""


VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "transformers", "tokenizers", "safetensors")


def versions() -> dict:
    """Python, jaxsae and the versions of the packages that shape the results."""
    from importlib.metadata import PackageNotFoundError, version

    import jaxsae

    out = {"jaxsae": jaxsae.__version__, "python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


class Run:
    """A run folder and the stages to execute in it."""

    def __init__(self, out: Path, cfg: SweepConfig, stages: Sequence[Stage], *, process_index: int = 0,
                 process_count: int = 1):
        self.out = Path(out)
        self.cfg = cfg
        self.stages = {s.name: s for s in stages}
        self.order = [s.name for s in stages]
        self.process_index, self.process_count = process_index, process_count
        self.is_writer = process_index == 0
        """Whether this process writes the run-level files (manifests, results, report)."""
        self.timings: dict[str, float] = {}
        self._hasher = Hasher()
        self.resume_ok = True
        """Whether the running stage may keep partial outputs of an interrupted attempt (False when
        it is redone, or the interrupted attempt ran with a different configuration)."""
        self._validated: set[str] = set()
        """Stages whose ``validate`` ran before the run's first stage (:meth:`execute`)."""

    def share(self, items: Sequence) -> list:
        """This process's share of ``items`` (every ``process_count``-th, from ``process_index``):
        a split stage computes and writes only these."""
        return list(items)[self.process_index :: self.process_count]

    # ------------------------------------------------------------------------------- hashes

    def section_values(self, stage: Stage) -> dict:
        """The stage's config sections, less fields marked ``metadata={"hashed": False}`` (settings
        such as batch sizes that do not change results); a section's ``templates`` file also by its
        SHA-256 (an edited file is a changed configuration)."""
        from jaxsae.templates import file_sha256

        d = dataclasses.asdict(self.cfg)
        out = {}
        for s in stage.sections:
            sub = getattr(self.cfg, s)
            skip = {f.name for f in dataclasses.fields(sub) if not f.metadata.get("hashed", True)} \
                if dataclasses.is_dataclass(sub) else set()
            out[s] = {k: v for k, v in d[s].items() if k not in skip} if skip else d[s]
        for v in out.values():
            if isinstance(v, dict) and v.get("templates") and Path(v["templates"]).is_file():
                v["templates_sha256"] = file_sha256(v["templates"])
        return out

    def stage_hash(self, name: str) -> str:
        stage = self.stages[name]
        up = {u: self.stage_hash(u) for u in stage.upstream}
        return digest({"sections": self.section_values(stage), "upstream": up})

    def manifest_path(self, name: str) -> Path:
        return self.out / "manifests" / f"{name}.json"

    def started_path(self, name: str) -> Path:
        return self.out / "manifests" / f"{name}.started.json"

    def manifest(self, name: str) -> dict | None:
        return self._read(self.manifest_path(name))

    @staticmethod
    def _read(p: Path) -> dict | None:
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return None  # an unreadable manifest counts as not done

    STATUSES = {"done": "done", "todo": "has not run", "interrupted": "was interrupted",
                "changed": "was run with a different configuration", "missing-outputs": "has missing outputs",
                "damaged": "has damaged outputs", "stale": "read upstream results that were redone since",
                "incomplete": "has judge requests that failed for good (a re-run retries them)"}

    def status(self, name: str) -> str:
        """One of :attr:`STATUSES`: "done" only when the configuration hash matches, every recorded
        output file is intact and the upstream stages still hold the results it read."""
        m = self.manifest(name)
        if m is None:
            started = self._read(self.started_path(name))
            if started is None:
                return "todo"
            if started.get("config_hash") != self.stage_hash(name):
                return "changed"  # interrupted with another configuration: its partial outputs differ
            return "incomplete" if started.get("incomplete") else "interrupted"
        if m.get("config_hash") != self.stage_hash(name):
            return "changed"
        if not all((self.out / o).exists() for o in m.get("outputs", [])):
            return "missing-outputs"
        if self.damaged_files(name):
            return "damaged"
        for u, rid in m.get("upstream_results", {}).items():
            mu = self.manifest(u)
            if mu is None or result_id(mu) != rid:
                return "stale"
        return "done"

    def _outputs_beside(self, name: str, files) -> list[str]:
        """The stage's outputs in the same folder as the outputs holding ``files`` (an SAE's
        ``autointerp.json`` and ``feature_stats/`` go together: the stage redoes that SAE whole)."""
        outputs = (self.manifest(name) or {}).get("outputs", [])
        holders = {o for o in outputs for f in files if f == o or f.startswith(o + "/")}
        parents = {str(Path(o).parent) for o in holders}
        return sorted(o for o in outputs if str(Path(o).parent) in parents)

    def damaged_files(self, name: str) -> dict[str, str]:
        """{file: what is wrong} for the files the stage's manifest records that are not intact."""
        m = self.manifest(name) or {}
        return damaged(self.out, m.get("files", {}), self._hasher)

    def _changed_sections(self, name: str) -> list[str]:
        m = self.manifest(name) or self._read(self.started_path(name)) or {}
        old = m.get("sections", {})
        new = self.section_values(self.stages[name])
        changed = [s for s in new if old.get(s) != json.loads(json.dumps(new[s], default=str))]
        return changed or ["an upstream stage's configuration"]

    # --------------------------------------------------------------------------------- run

    def check(self, names: Sequence[str], redo: Sequence[str] = ()) -> None:
        """Refuse to mix results: every requested stage whose config changed must be redone
        explicitly (``--redo``) or run in a new folder."""
        for n in names:
            if self.status(n) == "changed" and n not in redo:
                raise UserError(
                    f"stage {n!r} in {self.out} was run with a different configuration (changed: "
                    f"{', '.join(self._changed_sections(n))}); use a new --out folder, or --redo {n} to recompute it"
                )

    def upstream_closure(self, name: str) -> list[str]:
        """Every stage ``name`` reads from, directly or through its upstream stages, in stage order."""
        seen: set[str] = set()
        todo = list(self.stages[name].upstream)
        while todo:
            u = todo.pop()
            if u not in seen:
                seen.add(u)
                todo.extend(self.stages[u].upstream)
        return [n for n in self.order if n in seen]

    def check_upstream(self, names: Sequence[str]) -> None:
        """Refuse to run a stage on upstream results that are missing or were made with another
        configuration, unless those upstream stages run now too."""
        for n in names:
            for u in self.upstream_closure(n):
                st = self.status(u)
                if u not in names and st != "done":
                    raise UserError(f"stage {n!r} reads the results of {u!r}, which {self.STATUSES[st]} in "
                                    f"{self.out}; run --stages {u},{n} (or all stages)")

    def dependents(self, names: Sequence[str]) -> list[str]:
        """``names`` and every stage downstream of them, in stage order."""
        out = set(names)
        for n in self.order:
            if any(u in out for u in self.stages[n].upstream):
                out.add(n)
        return [n for n in self.order if n in out]

    def execute(self, names: Sequence[str], redo: Sequence[str] = ()) -> None:
        """Run ``names`` in order; ``redo`` stages (and those downstream of them, since they read
        what is recomputed) are recomputed even if done. Process 0 holds the run folder's lock
        throughout (a second launcher on the same folder is refused)."""
        redo = [n for n in self.dependents(redo) if n in names]
        self.check(names, redo)
        self.check_upstream(names)
        lock = RunLock(self.out) if self.is_writer else None
        if lock is not None:
            lock.acquire()
        try:
            self._validate_upfront(names, redo)
            for i, n in enumerate(names, 1):
                self._execute_one(i, len(names), n, redo, lock)
        finally:
            if lock is not None:
                lock.release()

    def _validate_upfront(self, names: Sequence[str], redo: Sequence[str]) -> None:
        """Every stage that will run (not done, or redone) checks its settings before the first stage
        does anything: a bad setting of a late stage (missing validity data, a bad concept file)
        stops the run in one line instead of after hours of training."""
        self._validated = set()
        for n in names:
            stage = self.stages[n]
            if stage.validate is not None and (n in redo or self.status(n) != "done"):
                stage.validate(self)
                self._validated.add(n)

    def _execute_one(self, i: int, total: int, n: str, redo: Sequence[str], lock: RunLock | None) -> None:
        stage = self.stages[n]
        st = self.status(n)
        # several processes: all read the status before process 0 changes anything of the stage,
        # and each stage starts after process 0 has written everything of the one before
        barrier(f"stage {n}: status read ({st})")  # processes that see different statuses stop here
        if st == "done" and n not in redo:
            m = self.manifest(n) or {}
            seconds = float(m.get("seconds_total", m.get("seconds", 0.0)))
            print(f"[{i}/{total}] {n}: done ({seconds:.0f}s earlier), skipped", flush=True)
            self.timings[n] = seconds
            return
        bad = self.damaged_files(n) if st == "damaged" and n not in redo else {}
        if bad and stage.expensive:
            f, why = next(iter(bad.items()))
            raise UserError(f"{self.out / f} is damaged ({why}); --redo {n} recomputes it (and what depends on it)")
        reason = {"missing-outputs": " (outputs missing: redoing)", "changed": " (redo requested)",
                  "stale": " (upstream results were redone: redoing)",
                  "incomplete": " (retrying the judge requests that failed)"}.get(st, "")
        if bad:
            reason = f" (damaged: {next(iter(bad))}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}: redoing)"
        if n in redo and st == "done":
            reason = " (redo requested)"
        print(f"[{i}/{total}] {n}: {stage.help}{reason}", flush=True)
        if stage.validate is not None and n not in self._validated:  # done before the run, went stale since
            stage.validate(self)
        self.resume_ok = not (n in redo or st in ("changed", "stale"))
        previous = self._read(self.started_path(n)) or {}
        if not (self.resume_ok and previous.get("config_hash") == self.stage_hash(n)):
            previous = {}
        if self.is_writer:
            for o in self._outputs_beside(n, bad):  # the stage rewrites them; the rest is reused where it resumes
                p = self.out / o
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            if n in redo or st in ("changed", "missing-outputs", "damaged", "stale"):
                self.manifest_path(n).unlink(missing_ok=True)
        earlier = float(previous.get("seconds_before", 0.0)) + max(
            0.0, float(previous.get("alive", 0.0)) - float(previous.get("started", 0.0)))
        attempts = int(previous.get("attempts", 0)) + 1
        sections = json.loads(json.dumps(self.section_values(stage), default=str))
        t0 = time.time()
        started = {"stage": n, "config_hash": self.stage_hash(n), "sections": sections, "started": t0,
                   "seconds_before": round(earlier, 2), "attempts": attempts}
        if lock is not None:
            lock.beat(self.started_path(n), started)
        if self.process_count > 1 and stage.split:
            print(f"[{i}/{total}] {n}: process {self.process_index} of {self.process_count} takes its share "
                  "of the SAEs", flush=True)
        if self.is_writer or stage.collective or stage.split:
            outputs = stage.fn(self)
        else:
            outputs = []
            print(f"[{i}/{total}] {n}: running on process 0", flush=True)
        if stage.split:
            barrier(f"stage {n}: every share done")  # process 0 writes the manifest after all shares
            missing = [o for o in outputs if not (self.out / o).exists()]
            if missing and self.is_writer:
                raise UserError(f"stage {n!r}: {len(missing)} output(s) written by other processes are not visible "
                                f"here (e.g. {missing[0]}); put --out on storage every process sees")
        if stage.incomplete is not None:
            if not stage.split:
                barrier(f"stage {n}: outputs written")
            why = stage.incomplete(self)  # every process reads the same files: all stop, or none
            if why is not None:
                if lock is not None:
                    lock.stop_beat()
                    atomic_write_json(self.started_path(n), {**started, "alive": time.time(), "incomplete": why})
                raise UserError(f"stage {n!r} is not done: {why}")
        seconds = time.time() - t0
        self.timings[n] = earlier + seconds
        if self.is_writer:
            lock.stop_beat()
            outputs = sorted(set(outputs))
            atomic_write_json(
                self.manifest_path(n),
                {
                    "stage": n,
                    "config_hash": self.stage_hash(n),
                    "sections": sections,
                    "upstream": list(stage.upstream),
                    "upstream_results": {u: result_id(self.manifest(u) or {}) for u in self.upstream_closure(n)},
                    "versions": versions(),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "seconds": round(seconds, 2),
                    "seconds_total": round(earlier + seconds, 2),
                    "attempts": attempts,
                    "outputs": outputs,
                    "files": file_records(self.out, outputs, self._hasher),
                },
            )
            self.started_path(n).unlink(missing_ok=True)
        barrier(f"stage {n}: finished")
        print(f"[{i}/{total}] {n}: finished in {time.time() - t0:.1f}s", flush=True)
