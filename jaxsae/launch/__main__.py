"""`python -m jaxsae.launch --sweep NAME [--out DIR] [--stages ...] [--redo ...] [overrides]`

Runs the whole study as one resumable command: train the SAE sweep → core metrics → feature
statistics + AutoInterp (µ) → steering utility without selection (g) → ΔTC and output-score
scoring → steering with selected tiers → rank analysis → report. Each stage is cached in the run
folder with a manifest and skipped when done; a killed run resumes where it stopped.

Sweeps live in jaxsae/configs/<NAME>.toml (full, cpu-study, debug, demo, smoke) or pass a .toml path. Any config
value can be overridden, e.g. `--train.tokens 50000 --train.steps 200 --steer.factors 0.5 1.0`; run
`python -m jaxsae.launch --sweep demo --help` to see every option with the sweep's values.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jaxsae.distributed import init_distributed, report_failure
from jaxsae.errors import UserError, cli_errors
from jaxsae.launch.compile_cache import use_compile_cache


def _parser(prog: str = "python -m jaxsae.launch", doc: str = __doc__) -> argparse.ArgumentParser:
    from jaxsae.launch.stages import STAGES

    names = ", ".join(s.name for s in STAGES)
    ap = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 add_help=False)
    ap.add_argument("--sweep", default="demo", help="sweep name (jaxsae/configs/<NAME>.toml) or a .toml path (default: demo)")
    ap.add_argument("--out", default=None, help="run folder (default: runs/<sweep>); re-running with the same folder resumes")
    ap.add_argument("--stages", default="all", help=f"comma-separated stages to run, in order (default: all): {names}")
    ap.add_argument("--redo", default="", help="comma-separated stages to recompute even if done, with every stage "
                    "downstream of them (e.g. after a config change)")
    ap.add_argument("--status", action="store_true", help="print each stage's status in the run folder and exit")
    ap.add_argument("--compile-cache", default=None, metavar="DIR",
                    help="folder of JAX's persistent compilation cache: programs compiled by one launch (those taking "
                    "1 s or more) are read back by the next (a resumed or repeated run, another stage) instead of "
                    "compiled again (default: $JAX_COMPILATION_CACHE_DIR when set, else $XDG_CACHE_HOME/jaxsae/xla, "
                    "i.e. ~/.cache/jaxsae/xla; 'none': compile everything anew)")
    ap.add_argument("-h", "--help", action="store_true", help="show this help and every config option with the sweep's values")
    return ap


def _stage_list(spec: str, all_names: list[str], what: str) -> list[str]:
    if spec in ("", "none"):
        return []
    if spec == "all":
        return list(all_names)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in all_names]
    if bad:
        raise UserError(f"unknown {what} {', '.join(bad)}; choose from {', '.join(all_names)}")
    return [n for n in all_names if n in names]


def _writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"  # one per process: several may probe at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to the output folder {out} ({e.strerror}); pass a writable --out") from None


def run_stage(stage: str, prog: str, doc: str, argv: list[str] | None = None) -> None:
    """A stage's own entry point (``python -m jaxsae.train``): the launcher with ``--stages STAGE``."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--stages" or a.startswith("--stages=") for a in argv):
        raise UserError(f"{prog} runs the {stage} stage only; use python -m jaxsae.launch --stages ... for others")
    main(["--stages", stage, *argv], prog=prog, doc=doc)


def _overridden(cls, cfg, args: list[str], prog: str):
    """``cfg`` with the command line's overrides (tyro); a bad one is a one-line error naming it
    (tyro's boxed message, flattened), not a box."""
    import contextlib
    import io

    import tyro

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            return tyro.cli(cls, default=cfg, args=args, prog=prog)
    except SystemExit as e:
        if not e.code:
            raise
        what, title = [], None
        for ln in err.getvalue().splitlines():
            ln = ln.strip(" \t│╭╮╰╯┃")
            if title is None:
                title = ln or None  # e.g. "Value error", "Invalid choice"
            elif set(ln) <= set("-─━ "):
                if what:
                    break  # the message ends at the box's next rule
            elif ln.startswith(("Argument helptext", "For full helptext")):
                break
            else:
                what.append(ln)
        what = " ".join(what) or title or "bad option"
        text = err.getvalue()
        if "Perhaps you meant" in text:  # tyro's suggestions: the options named after it
            near = [ln.split()[0] for ln in text.split("Perhaps you meant", 1)[1].splitlines()
                    if ln.strip().startswith("--") and not set(ln.strip()) <= set("-")]
            if near:
                what += f" (did you mean {' or '.join(dict.fromkeys(near))}?)"
        raise UserError(f"{what.rstrip('.')}; see {prog} --help for the options and their types") from None


def main(argv: list[str] | None = None, *, prog: str = "python -m jaxsae.launch", doc: str = __doc__) -> None:
    import tyro

    from jaxsae.launch.config import SweepConfig, load_config
    from jaxsae.launch.runner import Run
    from jaxsae.launch.stages import STAGES

    argv = sys.argv[1:] if argv is None else argv
    ap = _parser(prog, doc)
    args, rest = ap.parse_known_args(argv)
    if args.help:
        ap.print_help()
        print("\nStages:\n" + "\n".join(f"  {s.name:15s} {s.help}" for s in STAGES))
        print(f"\nConfig options (values of sweep {args.sweep!r}):")
    cfg = load_config(args.sweep)
    if args.help:
        tyro.cli(SweepConfig, default=cfg, args=["--help"], prog=prog)  # prints, exits 0
    cfg = _overridden(SweepConfig, cfg, rest, prog)
    names = [s.name for s in STAGES]
    todo = _stage_list(args.stages, names, "stage(s)")
    redo = _stage_list(args.redo, names, "stage(s) in --redo")
    out = Path(args.out or Path("runs") / cfg.name)
    if args.status:
        from jaxsae.launch.layout import sweep_dir
        from jaxsae.launch.status import sae_table, stage_lines

        run = Run(out, cfg, STAGES)
        print("\n".join(stage_lines(run)))
        table = sae_table(run, [sweep_dir(run, spec) for spec in cfg.models])
        if table:
            print("\n" + "\n".join(table))
        return
    _writable(out)
    use_compile_cache(args.compile_cache)
    index, count = init_distributed()
    if count > 1:
        import jax

        print(f"process {index} of {count}: {jax.local_device_count()} local of {jax.device_count()} devices"
              + (" (writes the run folder)" if index == 0 else ""), flush=True)
    run = Run(out, cfg, STAGES, process_index=index, process_count=count)
    selected = [n for n in names if n in todo or n in redo]
    try:
        run.execute(selected, redo)
    except BaseException as e:
        if count > 1:  # the others stop at their next barrier instead of waiting for this process
            report_failure(f"{type(e).__name__}: {e}")
        raise
    if index == 0:
        print(f"\nrun folder: {out}" + (f"\nreport: {out / 'report.md'}" if (out / "report.md").exists() else ""))
        _print_headline(run)


def _print_headline(run) -> None:
    """The headline table (jaxsae.report.headline) as the run's last lines, when results.json is
    current (the analysis stage is done in this configuration)."""
    import json

    from jaxsae.report.headline import headline_lines

    if run.status("analysis") != "done":
        return
    try:
        results = json.loads((run.out / "results.json").read_text())
    except (OSError, ValueError):
        return
    print("\n" + "\n".join(headline_lines(results)), flush=True)


if __name__ == "__main__":
    with cli_errors():
        main()
