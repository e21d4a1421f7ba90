"""``python -m jaxsae.launch --status``: what each stage holds, per stage and per SAE.

A stage is running (a live launcher holds the folder's lock and the stage has started),
interrupted (started, no live launcher), incomplete (some judge requests failed for good: a re-run
retries them), done, damaged (a recorded output file is missing or
differs from its recorded hash), stale (an upstream stage was redone since), changed (run with
another configuration) or todo; with the time it took across all its attempts.
"""

from __future__ import annotations

import json
from pathlib import Path

from jaxsae.launch.integrity import RunLock
from jaxsae.launch.runner import Run


def stage_lines(run: Run) -> list[str]:
    """One line per stage: its state, time across attempts, and the first damaged files."""
    live = RunLock.held(run.out)
    lines = []
    for n in run.order:
        st = run.status(n)
        m = run.manifest(n) or {}
        started = run._read(run.started_path(n)) or {}
        if st == "interrupted" and live:
            st = "running"
        note = ""
        if m:
            note = f"{float(m.get('seconds_total', m.get('seconds', 0))):.0f}s"
            if int(m.get("attempts", 1)) > 1:
                note += f" over {m['attempts']} attempts"
        elif started:
            before = float(started.get("seconds_before", 0))
            ran = max(0.0, float(started.get("alive", 0)) - float(started.get("started", 0)))
            note = f"{before + ran:.0f}s so far (attempt {started.get('attempts', 1)})"
        lines.append(f"{n:15s} {st:16s} {note}".rstrip())
        if st == "damaged":
            for f, why in list(run.damaged_files(n).items())[:3]:
                lines.append(f"{'':15s}   {f}: {why}")
    return lines


def sae_table(run: Run, sweep_dirs: list[Path]) -> list[str]:
    """Per SAE (rows) and per-SAE stage (columns): ok (recorded and intact), damaged, written (the
    stage has not finished, this SAE's file is there) or - (not yet)."""
    cols = [run.stages[n] for n in run.order if run.stages[n].per_sae]
    rows = []
    for sweep in sweep_dirs:
        try:
            entries = json.loads((sweep / "sweep.json").read_text())["saes"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for e in entries:
            d = sweep / e["dir"]
            cells = []
            for stage in cols:
                m = run.manifest(stage.name) or {}
                bad = run.damaged_files(stage.name) if m else {}
                files = [str((d / f).relative_to(run.out)) for f in stage.per_sae]
                if any(f in bad or any(b.startswith(f + "/") for b in bad) for f in files):
                    cells.append("damaged")
                elif m and all(f in m.get("outputs", []) for f in files):
                    cells.append("ok")
                elif all((run.out / f).exists() for f in files):
                    cells.append("written")
                else:
                    cells.append("-")
            rows.append((str(d.relative_to(run.out)), cells))
    if not rows:
        return []
    width = max(len(r[0]) for r in rows)
    head = f"{'SAE':{width}s}  " + "  ".join(f"{s.name:>14s}" for s in cols)
    return [head] + [f"{name:{width}s}  " + "  ".join(f"{c:>14s}" for c in cells) for name, cells in rows]
