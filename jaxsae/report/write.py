"""write_report: results.json + the run folder -> report.md and plots/*.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from jaxsae.analysis import DEFAULT_METHODS, paper, selection_summary
from jaxsae.io import atomic_write_text

from . import artefacts as A
from . import markdown as M
from . import plots as P
from .labels import too_few, with_level_names

PLOT_FILES = {
    "mu_vs_g": "mu_vs_g.png",
    "tau": "tau_groups.png",
    "selection": "selection_by_arch.png",
    "dtc": "dtc_hist.png",
}
"""Plot name -> file under ``<run>/plots/``. A plot with no data is not written (and a stale one
from an earlier report is removed), and report.md says why."""

_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)


def _draw(plots_dir: Path, name: str, build: Callable[[], Any]) -> tuple[str | None, str | None]:
    """Build and save one figure: (relative path, None), or (None, why not)."""
    path = plots_dir / PLOT_FILES[name]
    try:
        fig = build()
    except _ERRORS as e:
        fig, why = None, f"could not be drawn ({type(e).__name__}: {e})"
    else:
        why = "no data to plot"
    if fig is None:
        path.unlink(missing_ok=True)
        return None, why
    P.save_png(fig, path)
    return f"plots/{PLOT_FILES[name]}", None


def _plot(drawn: tuple[str | None, str | None], alt: str, caption: str = "") -> str:
    rel_path, why = drawn
    return M.image(rel_path, alt, caption) if rel_path else M.note(f"No plot of {alt}: {why}.")


def _selection_groups(records) -> tuple[dict, dict, list[str]]:
    """(selection_summary by architecture, plot groups incl. all SAEs pooled, method labels)."""
    by_arch = selection_summary([r for r in records if r.get("architecture") is not None], by="architecture")
    pooled = selection_summary([{**r, "_all": "all SAEs"} for r in records], by="_all")
    groups = {**by_arch["groups"], **pooled["groups"]}  # each with its mean, SE and n per method
    return by_arch, groups, list(DEFAULT_METHODS)


def write_report(run_dir: Path, results: Mapping[str, Any]) -> Path:
    """Write ``run_dir/report.md`` and its plots under ``run_dir/plots/`` (atomically).

    Args:
      run_dir: the run folder; the records' ``sae_dir`` are relative to it (example generations,
        explanations and ΔTC scores are read from there).
      results: the analysis stage's results.json (sweep, created, records, tau, tau_after,
        selection, timings). Any value may be missing or None: the affected table or plot is
        replaced by a note.

    Returns:
      The path of report.md.
    """
    run_dir = Path(run_dir)
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    records = [r for r in results.get("records") or [] if isinstance(r, Mapping)]
    tau = results.get("tau") if isinstance(results.get("tau"), Mapping) else None
    after = results.get("tau_after")
    tau_dtc = after.get("g_dtc") if isinstance(after, Mapping) else None

    by_arch, sel_groups, methods = _selection_groups(records)
    series = {f"µ vs {k}": too_few(with_level_names(v, records)) for k, v in (("g", tau), ("g_dtc", tau_dtc))
              if isinstance(v, Mapping)}
    dtc = A.first_dtc(run_dir, records)

    scatter = _draw(plots_dir, "mu_vs_g", lambda: P.mu_vs_g_figure(records))
    taus = _draw(plots_dir, "tau", lambda: P.tau_figure(series))
    bars = _draw(plots_dir, "selection", lambda: P.selection_figure(sel_groups, methods))
    hist = _draw(plots_dir, "dtc", lambda: _dtc_figure(dtc))

    skipped = sorted({g for res in series.values() for g in M.not_plotted(res)})
    if taus[0] is None and skipped:  # say why: every group too few to test, or without a statistic
        taus = (None, f"no group of {M.MIN_N_TEST} or more SAEs has a statistic (" + "; ".join(skipped) + ")")
    tau_caption = ("Markers: tau_b with its bootstrap CI (n: SAEs in the group); dashed: the axis ψ. Groups of fewer "
                   f"than {M.MIN_N_TEST} SAEs are not drawn.")
    if skipped:
        tau_caption += " Not plotted (no statistic): " + "; ".join(skipped) + "."
    dtc_caption = (f"ΔTC of every scored latent of {dtc[0].get('sae_dir')}; rug: the steered concepts, dashed: "
                   "the tier chosen by ΔTC." if dtc else "")

    sections = [
        M.header(results, records), "\n", M.guarded("judge validity", M.validity_banner, results.get("judge_validity")),
        M.guarded("judge validity table", M.validity_table, results.get("judge_validity")), M.features_link(run_dir),
        M.guarded("protocol choices", M.choices_note, results),
        "\n## 1. SAEs\n\n", M.guarded("SAE table", M.sae_table, records), "\n", M.levels_note(records, results.get("level_grouping")),
        "\n", M.guarded("steering notes", M.steering_notes, records),
        "\n## 2. Interpretability vs steering utility (Table 1)\n\n",
        _plot(scatter, "µ against the steering score", "Colour: architecture; marker: model."), "\n",
        M.guarded("Table 1", M.rank_table, tau, paper.TABLE1_MU_VS_G, records), "\n",
        _plot(taus, "tau_b per axis group", tau_caption),
        "\n## 3. Feature selection (Table 2)\n\n",
        M.guarded("selection tables", M.selection_tables, results.get("selection"), by_arch,
                  results.get("selection_lift")), "\n",
        _plot(bars, "mean steering score per selection method and architecture",
              "Bars: mean steering score over the group's SAEs with ±SE (n: SAEs with that score)."), "\n",
        _plot(hist, "the ΔTC distribution", dtc_caption),
        "\n### ΔTC readings\n\n", M.guarded("ΔTC readings", M.readings_table, results.get("dtc_readings")),
        "\n## 4. After selection (Table 3)\n\n",
        M.guarded("post-selection tables", M.after_selection, results, records),
        "\n## 5. Example steered generations\n\n", _examples(run_dir, records),
        "\n## 6. AutoInterp explanations\n\n", _explanations(run_dir, records),
        "\n## 7. Stage timings\n\n", M.guarded("timings", M.timings, results.get("timings")),
    ]
    out = run_dir / "report.md"
    atomic_write_text(out, "".join(sections))
    return out


def _dtc_figure(dtc):
    if dtc is None:
        return None
    record, arrays, sel = dtc
    chosen = (sel or {}).get("dtc") or {}
    return P.dtc_figure(arrays, f"ΔTC, {Path(str(record.get('sae_dir'))).name}",
                        chosen=[int(f) for f in chosen.get("features") or []],
                        chosen_label=f"chosen ΔTC tier ({chosen.get('tier')})",
                        pool=[int(f) for f in (sel or {}).get("pool") or []])


def _examples(run_dir: Path, records) -> str:
    found = A.first_concepts(run_dir, records)
    if found is None:
        return M.note("No steering generations found (steering/concepts.jsonl).")
    return M.guarded("example generations", M.examples, *found)


def _explanations(run_dir: Path, records) -> str:
    found = A.first_autointerp(run_dir, records)
    if found is None:
        return M.note("No AutoInterp explanations found (autointerp.json).")
    return M.guarded("AutoInterp explanations", M.explanations, *found)
