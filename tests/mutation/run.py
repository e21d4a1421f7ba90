"""Mutation testing of the core formulas, on demand (not part of the normal suite).

    python tests/mutation/run.py                 # every mutation in tests/mutation/mutations.py
    python tests/mutation/run.py --only adam-eps --only gm-is-mean
    python tests/mutation/run.py --list

The tracked and untracked (not ignored) files of the repository are copied to a scratch folder
once; the mutations are applied there one at a time (never in place), the named tests run with that
copy first on the import path, and the file is restored. A mutation whose tests still pass
*survived*: some wrong formula would ship. Prints a table and exits 1 when any mutation survived,
was stale (its original text is not found exactly once) or errored (the tests could not run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from mutations import MUTATIONS, Mutation  # noqa: E402


def copy_tree(dst: Path) -> None:
    """The files git would commit (tracked plus untracked, not ignored), copied to ``dst``."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def env_for(scratch: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(scratch) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def run_tests(scratch: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, float, str]:
    """(pytest exit code, seconds, last lines of output); -1 on timeout."""
    t0 = time.time()
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        r = subprocess.run(cmd, cwd=scratch, env=env_for(scratch), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, time.time() - t0, "timeout"
    tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-3:])
    return r.returncode, time.time() - t0, tail


def check_imports_from(scratch: Path) -> None:
    r = subprocess.run([sys.executable, "-c", "import jaxsae, sys; sys.stdout.write(jaxsae.__file__)"], cwd=scratch,
                       env=env_for(scratch), capture_output=True, text=True, check=True)
    if not Path(r.stdout).resolve().is_relative_to(scratch.resolve()):
        sys.exit(f"jaxsae is imported from {r.stdout}, not from the scratch copy {scratch}; cannot mutate safely")


def mutate(scratch: Path, m: Mutation, timeout: float) -> tuple[str, float, str]:
    """('killed' | 'SURVIVED' | 'stale' | 'error', seconds, detail)."""
    path = scratch / m.file
    text = path.read_text()
    if text.count(m.original) != 1:
        return "stale", 0.0, f"original text found {text.count(m.original)} times in {m.file}"
    path.write_text(text.replace(m.original, m.mutated))
    try:
        code, secs, tail = run_tests(scratch, m.tests, timeout)
    finally:
        path.write_text(text)
    if code == 1:
        return "killed", secs, ""
    if code == 0:
        return "SURVIVED", secs, tail
    return "error", secs, f"pytest exit {code}: {tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="run only this mutation (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutation's tests")
    ap.add_argument("--no-baseline", action="store_true", help="skip running the selected tests unmutated first")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = ap.parse_args(argv)
    names = [m.name for m in MUTATIONS]
    if len(set(names)) != len(names):
        sys.exit("duplicate mutation names in mutations.py")
    todo = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only) - set(names)
    if unknown:
        sys.exit(f"unknown mutation(s): {', '.join(sorted(unknown))}; see --list")
    if args.list:
        for m in todo:
            print(f"{m.name:32s} {m.file:28s} {' '.join(m.tests)}")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="jaxsae-mutation-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still removes its scratch copy
    try:
        copy_tree(scratch)
        check_imports_from(scratch)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in todo for t in m.tests))
            code, secs, tail = run_tests(scratch, tests, args.timeout * 3)
            print(f"baseline: {len(tests)} test selections, exit {code}, {secs:.0f} s", flush=True)
            if code != 0:
                print(tail)
                return 1
        rows = []
        for i, m in enumerate(todo, 1):
            status, secs, detail = mutate(scratch, m, args.timeout)
            rows.append((m, status, secs, detail))
            print(f"[{i}/{len(todo)}] {m.name:32s} {status:8s} {secs:6.1f} s {detail}", flush=True)
    finally:
        if args.keep:
            print(f"scratch copy kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    bad = [r for r in rows if r[1] != "killed"]
    print("\n| mutation | file | result | s |\n|---|---|---|---|")
    for m, status, secs, _ in rows:
        print(f"| {m.name} | {m.file} | {status} | {secs:.0f} |")
    print(f"\n{len(rows) - len(bad)} of {len(rows)} mutations killed, {sum(r[1] == 'SURVIVED' for r in rows)} survived, "
          f"{sum(r[1] in ('stale', 'error') for r in rows)} stale or errored")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
