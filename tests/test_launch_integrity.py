"""The run folder can't lie: a redone stage makes everything downstream stale, every output is
verified (size and SHA-256) before it is reused, damaged outputs are redone (or, for an expensive
stage, named with the --redo that fixes them), one launcher per folder, and --status tells running
from interrupted with the time across attempts. Fake stages over a real Run: no model needed."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from jaxsae.errors import UserError
from jaxsae.launch.config import SweepConfig
from jaxsae.launch.integrity import RunLock
from jaxsae.launch.runner import Run, Stage
from jaxsae.launch.status import sae_table, stage_lines


def make_stages(calls: list[str], version: dict):
    """a (expensive) -> b (per-SAE files in two SAE folders, resuming per SAE) -> c."""

    def a(run):
        calls.append("a")
        (run.out / "a.txt").write_text(f"a{version['a']}")
        sweep = run.out / "m" / "sweep"
        sweep.mkdir(parents=True, exist_ok=True)
        (sweep / "sweep.json").write_text(json.dumps({"saes": [{"dir": "s0"}, {"dir": "s1"}]}))
        return ["a.txt", "m/sweep/sweep.json"]

    def b(run):
        outs = []
        for s in ("s0", "s1"):
            d = run.out / "m" / "sweep" / s
            d.mkdir(parents=True, exist_ok=True)
            outs += [f"m/sweep/{s}/b.json", f"m/sweep/{s}/stats"]
            if (d / "b.json").exists() and run.resume_ok:
                continue
            calls.append(f"b:{s}")
            (d / "stats").mkdir(exist_ok=True)
            (d / "stats" / "x.bin").write_bytes(bytes(range(10)))
            (d / "b.json").write_text(json.dumps({"a": (run.out / "a.txt").read_text(), "s": s}))
        return outs

    def c(run):
        calls.append("c")
        vals = [json.loads((run.out / "m" / "sweep" / s / "b.json").read_text())["a"] for s in ("s0", "s1")]
        (run.out / "c.json").write_text(json.dumps(vals))
        return ["c.json"]

    return [Stage("a", ("train",), (), a, "stage a", expensive=True),
            Stage("b", ("eval",), ("a",), b, "stage b", per_sae=("b.json",)),
            Stage("c", (), ("b",), c, "stage c")]


@pytest.fixture
def folder(tmp_path):
    calls: list[str] = []
    version = {"a": 1}
    stages = make_stages(calls, version)

    def run(*names, redo=()):
        r = Run(tmp_path, SweepConfig(), stages)
        calls.clear()
        r.execute(list(names or ("a", "b", "c")), list(redo))
        return list(calls)

    run()
    return tmp_path, run, stages, version


def status(out, stages):
    r = Run(out, SweepConfig(), stages)
    return {n: r.status(n) for n in r.order}


def test_manifest_records_every_file_and_what_it_read(folder):
    out, run, stages, _ = folder
    m = json.loads((out / "manifests" / "b.json").read_text())
    assert set(m["files"]) == {f"m/sweep/{s}/{f}" for s in ("s0", "s1") for f in ("b.json", "stats/x.bin")}
    assert all(len(v["sha256"]) == 64 and v["size"] > 0 for v in m["files"].values())
    assert set(m["upstream_results"]) == {"a"}
    assert set(json.loads((out / "manifests" / "c.json").read_text())["upstream_results"]) == {"a", "b"}
    assert run() == []


def test_redo_of_one_stage_makes_downstream_stale_and_a_plain_run_redoes_it(folder):
    out, run, stages, version = folder
    version["a"] = 2  # the redone stage writes something else
    assert run("a", redo=("a",)) == ["a"]
    assert status(out, stages) == {"a": "done", "b": "stale", "c": "stale"}
    with pytest.raises(UserError, match="'c' reads the results of 'b', which read upstream results that were redone"):
        run("c")
    assert run() == ["b:s0", "b:s1", "c"]  # stale: nothing of the old b is reused
    assert json.loads((out / "c.json").read_text()) == ["a2", "a2"]
    assert status(out, stages) == {"a": "done", "b": "done", "c": "done"}


def test_identical_redo_does_not_invalidate_downstream(folder):
    out, run, stages, _ = folder
    assert run("a", redo=("a",)) == ["a"]
    assert status(out, stages)["b"] == "done"


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_per_sae_output_is_redone_for_that_sae_alone(folder, damage):
    out, run, stages, _ = folder
    victim = out / "m/sweep/s1/stats/x.bin"
    before = (out / "c.json").read_bytes()
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:3])
    elif damage == "flip":
        victim.write_bytes(b"\xff" + victim.read_bytes()[1:])
    else:
        victim.unlink()
    assert status(out, stages)["b"] == "damaged"
    lines = stage_lines(Run(out, SweepConfig(), stages))
    assert any("m/sweep/s1/stats/x.bin" in ln for ln in lines)
    # its SAE's files go together (b.json beside the damaged stats): only s1 is recomputed
    assert run() == ["b:s1"]
    assert (out / "c.json").read_bytes() == before
    assert status(out, stages) == {"a": "done", "b": "done", "c": "done"}


def test_damaged_expensive_output_stops_with_one_line_naming_the_redo(folder):
    out, run, stages, _ = folder
    (out / "a.txt").write_text("garbage!")
    with pytest.raises(UserError) as e:
        run()
    msg = str(e.value)
    assert "a.txt is damaged" in msg and "--redo a" in msg and "\n" not in msg
    assert (out / "a.txt").read_text() == "garbage!"  # nothing touched
    assert run(redo=("a",)) == ["a", "b:s0", "b:s1", "c"]


def test_damaged_manifest_counts_as_not_done(folder):
    out, run, stages, _ = folder
    (out / "manifests" / "c.json").write_text("{trunc")
    assert status(out, stages)["c"] == "todo"
    assert run() == ["c"]


def test_per_sae_status_table(folder):
    out, run, stages, _ = folder
    (out / "m/sweep/s0/b.json").write_text("{}")
    table = sae_table(Run(out, SweepConfig(), stages), [out / "m" / "sweep"])
    assert table[0].split() == ["SAE", "b"]
    assert table[1].split() == ["m/sweep/s0", "damaged"] and table[2].split() == ["m/sweep/s1", "ok"]


def _hold_lock(out: str, ready, stop):
    lock = RunLock(Path(out))
    lock.acquire()
    ready.set()
    stop.wait(30)
    lock.release()


def test_one_launcher_per_folder_and_status_running_vs_interrupted(tmp_path):
    calls: list[str] = []
    stages = make_stages(calls, {"a": 1})
    r = Run(tmp_path, SweepConfig(), stages)
    # an attempt of "b" that ran 40 s and was interrupted
    (tmp_path / "manifests").mkdir()
    r.execute(["a"])
    started = {"stage": "b", "config_hash": r.stage_hash("b"), "started": time.time() - 100,
               "alive": time.time() - 60, "seconds_before": 5.0, "attempts": 2}
    r.started_path("b").write_text(json.dumps(started))
    assert Run(tmp_path, SweepConfig(), stages).status("b") == "interrupted"
    lines = stage_lines(Run(tmp_path, SweepConfig(), stages))
    assert any(ln.split()[:2] == ["b", "interrupted"] and "45s so far (attempt 2)" in ln for ln in lines), lines
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, stop))
    p.start()
    try:
        assert ready.wait(30)
        assert any(ln.split()[:2] == ["b", "running"] for ln in stage_lines(Run(tmp_path, SweepConfig(), stages)))
        with pytest.raises(UserError, match="another launcher is running"):
            Run(tmp_path, SweepConfig(), stages).execute(["b"])
    finally:
        stop.set()
        p.join(30)
    # resumed: the manifest's time counts every attempt
    Run(tmp_path, SweepConfig(), stages).execute(["b"])
    m = json.loads((tmp_path / "manifests" / "b.json").read_text())
    assert m["attempts"] == 3 and m["seconds_total"] >= 45.0 and not r.started_path("b").exists()


def test_every_stage_that_runs_is_validated_before_the_first_stage_writes(tmp_path):
    import dataclasses

    calls: list[str] = []
    version = {"a": 1}
    checked: list[str] = []
    bad = {"c": True}

    def validate_b(run):
        checked.append("b")

    def validate_c(run):
        checked.append("c")
        if bad["c"]:
            raise UserError("c: a bad setting")

    a, b, c = make_stages(calls, version)
    stages = [a, dataclasses.replace(b, validate=validate_b), dataclasses.replace(c, validate=validate_c)]
    with pytest.raises(UserError, match="c: a bad setting"):
        Run(tmp_path, SweepConfig(), stages).execute(["a", "b", "c"])
    assert calls == [] and checked == ["b", "c"] and not (tmp_path / "a.txt").exists()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) in (
        [], ["manifests/run.lock"])  # nothing of any stage (the lock file aside)
    # each runs its check once, before any stage
    bad["c"] = False
    checked.clear()
    Run(tmp_path, SweepConfig(), stages).execute(["a", "b", "c"])
    assert checked == ["b", "c"] and calls == ["a", "b:s0", "b:s1", "c"]
    # done stages are not checked; one made stale mid-run (a redone with new results) is, when it runs
    checked.clear()
    calls.clear()
    version["a"] = 2
    (tmp_path / "a.txt").unlink()
    Run(tmp_path, SweepConfig(), stages).execute(["a", "b", "c"])
    assert calls == ["a", "b:s0", "b:s1", "c"] and checked == ["b", "c"]
