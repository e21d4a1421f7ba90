"""The sections of report.md, each a function from (part of) results.json to markdown text.

The rank and selection tables are :mod:`jaxsae.analysis.tables`' renderings beside
:mod:`jaxsae.analysis.paper`'s published values; this module adds the per-SAE table, notes on
groups without a statistic, the example generations, explanations and timings.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from jaxsae.analysis import paper
from jaxsae.analysis.tables import AXIS_TITLES, rank_table_markdown, selection_table_markdown

from .fmt import MIN_N_TEST, MISSING, cell, duration, finite, num, table
from .labels import level_legend, too_few, with_level_names
from .plots import METHOD_NAMES, tau_groups


def note(text: str) -> str:
    """A blockquoted remark (its own paragraph)."""
    return f"> {text}\n\n"


def guarded(what: str, fn: Callable[..., str], *args, **kwargs) -> str:
    """``fn(*args, **kwargs)``, or a note saying ``what`` could not be rendered from malformed
    input (a report is still written when one part of results.json is off)."""
    try:
        return fn(*args, **kwargs)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        return note(f"{what} could not be rendered ({type(e).__name__}: {e}).")


def image(rel_path: str, alt: str, caption: str = "") -> str:
    return f"![{alt}]({rel_path})\n" + (f"\n_{caption}_\n" if caption else "")


# ------------------------------------------------------------------------------- header, SAEs


def _models(records: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for r in records:
        m = f"{r.get('model', MISSING)} (layer {r['layer']})" if r.get("layer") is not None else str(r.get("model"))
        if m not in out:
            out.append(m)
    return out


def header(results: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> str:
    sweep = results.get("sweep") or "(unnamed)"
    models = ", ".join(cell(m, 80) for m in _models(records)) or MISSING
    return (f"# jaxsae report: {cell(sweep, 80)}\n\n"
            f"Sweep **{cell(sweep, 80)}**, created {cell(results.get('created'), 40)} · "
            f"**{len(records)} SAEs** · models: {models}.\n\n"
            "A reimplementation of arXiv 2510.03659. µ is the AutoInterp score over CONCEPT100; g the "
            "AxBench steering score without selection; g_output / g_dtc the score after selecting "
            "features by output score / ΔTC. Paper values are from v1 (Tables 1–3).\n")


SAE_HEAD = ["SAE", "model", "architecture", "level", "L0", "FVU", "CE-loss score", "µ ± SE (n latents)",
            "g ± SE (n concepts)", "g (argmax)",
            "g_output", "g_dtc", "tier (output / ΔTC)", "tier chosen"]

TIER_CHOICE = {"dev": "on dev", "eval": "by eval (paper)"}
"""Short labels of select.tier_choice for the per-SAE table (the note below it spells them out)."""


def sae_row(r: Mapping[str, Any]) -> list[str]:
    """One row of the per-SAE table (the numbers as :func:`num` formats them)."""
    name = Path(str(r["sae_dir"])).name if r.get("sae_dir") else MISSING
    tiers = f"{cell(r.get('tier_output'), 30)} / {cell(r.get('tier_dtc'), 30)}"
    choice = r.get("tier_choice")
    return [cell(name, 60), cell(r.get("model"), 60), cell(r.get("architecture"), 30),
            cell(r.get("level_label") or r.get("level"), 30), num(r.get("l0"), 1), num(r.get("fvu")),
            num(r.get("ce_loss_score")), with_se(r.get("mu"), r.get("mu_se"), r.get("mu_n")),
            with_se(r.get("g"), r.get("g_se"), r.get("g_n")), num(r.get("g_argmax")),
            num(r.get("g_output")), num(r.get("g_dtc")), tiers, cell(TIER_CHOICE.get(choice, choice), 30)]


def with_se(value: Any, se: Any, n: Any) -> str:
    """``0.714 ± 0.143 (n = 2)``; without an SE (n < 2) ``0.714 (n = 1)``; without n the number alone."""
    if finite(value) is None:
        return MISSING
    text = num(value) + (f" ± {num(se)}" if finite(se) is not None else "")
    return text + (f" (n = {int(n)})" if isinstance(n, (int, float)) and not isinstance(n, bool) else "")


def sae_table(records: Sequence[Mapping[str, Any]]) -> str:
    if not records:
        return note("No SAE records in results.json.")
    return table(SAE_HEAD, [sae_row(r) for r in records])


def _total(records: Sequence[Mapping[str, Any]], key: str) -> int:
    return sum(int((r.get("judge_stats") or {}).get(key) or 0) for r in records)


def judge_note(records: Sequence[Mapping[str, Any]]) -> str:
    """One line on the steering judge: ratings made, those without a valid rating (scored 0) and
    why, the local judge's digit mass; empty when no SAE recorded judge statistics."""
    rs = [r for r in records if isinstance(r.get("judge_stats"), Mapping)]
    if not rs:
        return ""
    judges = sorted({str(r.get("judge")) for r in rs if r.get("judge")})
    line = (f"Steering judge {', '.join(cell(j, 120) for j in judges) or MISSING}: {_total(rs, 'ratings')} ratings, "
            f"{_total(rs, 'failed')} without a valid rating and scored 0 ({_total(rs, 'parse_failures')} unparseable "
            f"answers, {_total(rs, 'hard_failures')} failed requests)")
    mass = [(finite(r["judge_stats"].get("mean_digit_mass")), int(r["judge_stats"].get("ratings") or 0)) for r in rs]
    mass = [(m, n) for m, n in mass if m is not None and n]
    if mass:  # the local judge: how much probability went to a valid rating at all
        mean = sum(m * n for m, n in mass) / sum(n for _, n in mass)
        least = min(finite(r["judge_stats"].get("min_digit_mass")) or 0.0 for r in rs)
        line += f"; mean probability on the digits 0/1/2 at the rating slot {num(mean)} (least {num(least)})"
    return line + ". g (argmax) scores the same test generations with the argmax rating instead of the expected one."


def steering_notes(records: Sequence[Mapping[str, Any]]) -> str:
    """Notes under the per-SAE table: the judge's failure counts, how the tiers were chosen, and
    steered latents that never fired (steered with the fallback m_f)."""
    out = [judge_note(records)]
    labels = {str(r["tier_choice"]): r.get("tier_choice_label") for r in records if r.get("tier_choice")}
    if labels:
        out.append("Selection tiers: " + "; ".join(f"{cell(TIER_CHOICE.get(k, k), 30)}: {cell(v, 120)}"
                                                  for k, v in sorted(labels.items())) + ".")
    fallbacks = sum(int(r.get("m_f_fallbacks") or 0) for r in records)
    if fallbacks:
        from jaxsae.steer.utility import DEAD_M_F

        out.append(f"{fallbacks} steered latent(s) never fired on the held-out text (m_f = 0) and were steered with "
                   f"the fallback m_f = {DEAD_M_F:g} (AxBench's).")
    return "".join(note(s) for s in out if s)


def levels_note(records: Sequence[Mapping[str, Any]], grouping: str | None = None) -> str:
    """The SAEs of each sparsity level, sparsest first, and how levels were formed."""
    legend = level_legend(records)
    if not legend:
        return ""
    ordered = sorted(legend.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)
    measured: dict[str, list[float]] = {}
    for r in records:
        if r.get("level") is not None and isinstance(r.get("l0"), (int, float)):
            measured.setdefault(str(r["level"]), []).append(float(r["l0"]))

    def l0_range(k: str) -> str:  # what the level's SAEs measure, beside what they were set to
        v = measured.get(k)
        if not v:
            return ""
        lo, hi = min(v), max(v)
        span = f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}–{hi:.0f}"
        return f" (measured L0 {span}, n = {len(v)})"

    parts = [f"{k}: {', '.join(cell(v, 30) for v in vs)}{l0_range(k)}" for k, vs in ordered]
    how = ("the i-th smallest measured L0 of each architecture (analysis.level_grouping = \"l0_rank\")"
           if grouping == "l0_rank" else
           "grid position: the i-th sparsest setting of each architecture, L1 coefficients descending "
           "(analysis.level_grouping = \"grid\")")
    return (f"Sparsity levels, sparsest first (axis B groups by level index, {how}; named L0≈N after the "
            "L0-targeted SAEs): " + " · ".join(parts) + ".\n")



def features_link(run_dir: Path) -> str:
    """A line linking the features page (report/features.html) when the run folder has one."""
    from .features import PAGE_FILE

    if not (Path(run_dir) / PAGE_FILE).is_file():
        return ""
    return (f"\n**Features:** [{PAGE_FILE}]({PAGE_FILE}) shows every CONCEPT latent of every SAE on one page "
            "(explanation, AutoInterp score, top windows, ΔTC, output score, chosen factor, a steered generation "
            "with its ratings), sortable by any score; it opens offline in a browser.\n")


# ------------------------------------------------------------------------------ judge validity


def validity_banner(v: Mapping[str, Any] | None) -> str:
    """The report's first remark: the judge's measured validity (:func:`jaxsae.judge.validate.verdict`),
    or that it was not measured."""
    from jaxsae.judge.validate import verdict

    if not isinstance(v, Mapping) or not v.get("measured", "criteria" in v):
        why = (v or {}).get("reason") if isinstance(v, Mapping) else "no validity.json in results.json"
        return note(f"**Judge validity not measured** ({cell(why, 120)}): nothing here says whether the judge can "
                    "tell a concept from its absence, so g and µ may rest on noise.")
    line = verdict(v)
    if line:
        return note(f"**Warning: {cell(line, 600)}.** (Judge validity on labelled AxBench data, table below.)")
    level = round(100 * float(next(iter((v.get("criteria") or {}).values()), {}).get("ci_level") or 0.95))
    return note(f"**Judge validity:** the judge separates every measured criterion on labelled AxBench data "
                f"(each {level}% CI of the AUROC excludes 0.5; table below).")


def validity_table(v: Mapping[str, Any] | None) -> str:
    """Judge validity per criterion (:func:`jaxsae.judge.validate.markdown_table`) and how it was measured."""
    from jaxsae.judge.validate import markdown_table

    if not isinstance(v, Mapping) or not v.get("measured", "criteria" in v):
        return ""
    det = v.get("detector") if isinstance(v.get("detector"), Mapping) else {}
    what = (f"Judge `{cell(v.get('judge'), 200)}` on labelled AxBench examples (data {cell(v.get('data'), 20)}): "
            "AUROC = P(a positive rates above a negative) + ½ P(tie), percentile bootstrap CI resampling each "
            "class; n = positives/negatives; digit mass = mean probability on 0/1/2 at the rating slot; argmax "
            "agreement = share of ratings whose argmax equals the rounded expected rating.")
    if det:
        what += (f" detector: the AutoInterp detector telling activating from random windows of {det.get('n_explained')} "
                 f"explained latent(s) of {cell(det.get('sae'), 120)}.")
    return "\n### Judge validity\n\n" + "\n".join(markdown_table(v)) + "\n\n" + note(what)


# ------------------------------------------------------------------------------ rank tables


def not_plotted(result: Mapping[str, Any]) -> list[str]:
    """'A: relu (too small, n=2)' for every group of a rank_agreement result without a statistic."""
    out = []
    for axis, name, st in tau_groups(result):
        status = st.get("status", "ok") if isinstance(st, Mapping) else "missing"
        if status != "ok" or finite(st.get("tau_b")) is None:
            where = "pooled" if axis == "pooled" else f"{axis}: {name}"
            if str(status).startswith("too few"):
                out.append(f"{where} ({status})")
            else:
                out.append(f"{where} ({status}, n={st.get('n', '?') if isinstance(st, Mapping) else '?'})")
    return out


def _missing_stats(result: Mapping[str, Any]) -> str:
    lines = []
    groups = [g for g in not_plotted(result) if "too few" not in g]  # those are shown in the table and its note
    if groups:
        lines.append("Groups without a statistic: " + "; ".join(cell(g, 80) for g in groups) + ".")
    psis = [f"ψ_{a} ({AXIS_TITLES.get(a, a)})" for a, e in (result.get("axes") or {}).items()
            if finite((e or {}).get("psi")) is None]
    if psis:
        lines.append(", ".join(psis) + ": no group with a statistic.")
    if finite((result.get("Psi") or {}).get("value")) is None:
        lines.append("Ψ needs all three ψ's: not available.")
    n, dropped = result.get("n"), result.get("n_dropped")
    if dropped:
        lines.append(f"{dropped} SAE(s) left out for a missing {result.get('x')} or {result.get('y')} "
                     f"(n = {n} used).")
    return "".join(note(s) for s in lines)


def rank_table(result: Mapping[str, Any] | None, paper_table: Mapping[str, Any] | None,
               records: Sequence[Mapping[str, Any]]) -> str:
    """A rank_agreement result as jaxsae.analysis.tables renders it (axis B groups named by
    target L0 so the paper's levels line up), then what had no statistic."""
    if not isinstance(result, Mapping) or "overall" not in result:
        return note("Not computed in results.json.")
    res = too_few(with_level_names(result, records))
    small = (f"Groups of fewer than {MIN_N_TEST} SAEs are not tested (\"too few\"): their τ_b, p-value and CI "
             "would say nothing; ψ and Ψ still average every group with a τ_b.")
    return rank_table_markdown(res, paper_table) + "\n" + note(small) + _missing_stats(res)


def after_selection(results: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> str:
    """The post-selection readings (tau_after): µ vs the gain (v1 Table 3), µ vs g_dtc (ICLR),
    and the output-score readings (no published values)."""
    after = results.get("tau_after") or {}
    sel = after.get("gain_dtc") or {}
    gain, post = sel.get("gain") or {}, sel.get("post") or {}
    out = ["### µ vs the per-SAE gain of ΔTC selection, L(θ) = 100 (g_dtc − g) / g (v1 Table 3)\n\n",
           guarded("Table 3", rank_table, gain.get("dtc"), paper.TABLE3_MU_VS_GAIN, records),
           "\n### µ vs the post-selection score g_dtc (the ICLR version's reading; no published values here)\n\n",
           guarded("post-selection table", rank_table, after.get("g_dtc") or post.get("dtc"), None, records)]
    for m, res in post.items():
        if m == "dtc":
            continue
        name = METHOD_NAMES.get(m, m)
        for title, r in ((f"µ vs the post-selection score ({name})", res),
                         (f"µ vs the gain of {name} selection", gain.get(m))):
            out += [f"\n<details><summary>{title} (no published values)</summary>\n\n",
                    guarded(title, rank_table, r, None, records), "\n</details>\n"]
    return "".join(out)


# ------------------------------------------------------------------------------- selection


def lift_line(lifts: Mapping[str, Any] | None) -> str:
    """The pooled lift of each selection method with its paired bootstrap CI and n (results.json's
    ``selection_lift``); empty when there is none."""
    parts = []
    for m, r in (lifts or {}).items():
        if not isinstance(r, Mapping) or finite(r.get("lift_pct")) is None:
            continue
        ci = r.get("ci")
        ci_text = (f", {round(100 * (finite(r.get('ci_level')) or 0.95))}% CI [{num(ci[0], 1)}, {num(ci[1], 1)}] %"
                   if isinstance(ci, (list, tuple)) and len(ci) == 2 else ", no CI")
        parts.append(f"{cell(METHOD_NAMES.get(m, m), 40)} {num(r['lift_pct'], 1)} %{ci_text} (n = {r.get('n')} SAEs)")
    if not parts:
        return ""
    return note("Lift over no selection, pooled over SAEs (100 (mean g_sel / mean g − 1), paired bootstrap CI over "
                "SAEs): " + "; ".join(parts) + ".")


def selection_tables(summary: Mapping[str, Any] | None, by_arch: Mapping[str, Any] | None,
                     lifts: Mapping[str, Any] | None = None) -> str:
    out = []
    if isinstance(summary, Mapping) and summary.get("groups"):
        out += ["Mean steering score per model (beside the paper's Table 2):\n\n",
                selection_table_markdown(summary, paper.TABLE2_STEERING)]
        avg = summary.get("average") or {}
        extra = [f"{cell(k, 40)} {num(v, 1)} %" for k, v in (avg.get("relative_pct") or {}).items()]
        extra += [f"{cell(k, 40)} {num(v, 1)} pp of lift" for k, v in (avg.get("pp_lift_difference") or {}).items()]
        if extra:
            out.append("\nAveraged over models: " + "; ".join(extra) + " (the paper's \"+52.52 %\" most likely "
                       "is the difference in percentage-point lift between the paper's Table 2 columns).\n")
    else:
        out.append(note("No selection summary in results.json."))
    out.append("\n" + lift_line(lifts) if lift_line(lifts) else "")
    if isinstance(by_arch, Mapping) and by_arch.get("groups"):
        out += ["\nPer architecture (the paper shows these only as figures):\n\n", selection_table_markdown(by_arch)]
    return "".join(out)


# -------------------------------------------------------------------------------- examples


def _pick_generations(concept: Mapping[str, Any], n: int) -> list[Mapping[str, Any]]:
    """Test-split generations at the factor chosen on dev, else any test, else dev at that factor."""
    gens = [g for g in concept.get("generations") or [] if isinstance(g, Mapping)]
    f = finite(concept.get("factor"))
    for keep in (lambda g: g.get("split") == "test" and finite(g.get("factor")) == f,
                 lambda g: g.get("split") == "test",
                 lambda g: finite(g.get("factor")) == f,
                 lambda g: True):
        picked = [g for g in gens if keep(g)]
        if picked:
            return picked[:n]
    return []


GEN_HEAD = ["split", "factor", "instruction", "generation", "concept", "instruction", "fluency", "HM", "HM (argmax)"]


def examples(record: Mapping[str, Any], concepts: Sequence[Mapping[str, Any]], n_concepts: int = 3,
             n_generations: int = 3, limit: int = 300) -> str:
    """Up to ``n_concepts`` steered concepts of one SAE with their generations and ratings."""
    out = [f"SAE `{record.get('sae_dir')}` ({cell(record.get('architecture'), 30)}, "
           f"{cell(record.get('level_label') or record.get('level'), 30)}): {min(n_concepts, len(concepts))} of "
           f"{len(concepts)} steered concepts. Generations on the test instructions at the factor chosen on "
           "dev; ratings by the steering judge (expected scores), HM = their harmonic mean (0 if any is 0), "
           "HM (argmax) the same from argmax ratings.\n"]
    for c in concepts[:n_concepts]:
        out.append(f"\n**Feature {cell(c.get('feature'), 20)}**: {cell(c.get('concept'), 160)}  \n"
                   f"factor {num(c.get('factor'), 2)} · dev score {num(c.get('dev_score'))} · "
                   f"test score {num(c.get('test_score'))} · m_f {num(c.get('m_f'))}\n\n")
        rows = [[cell(g.get("split"), 10), num(g.get("factor"), 2), cell(g.get("instruction"), 120),
                 cell(g.get("output"), limit), num(g.get("concept_score")), num(g.get("instruction_score")),
                 num(g.get("fluency_score")), num(g.get("hm")), num(g.get("hm_argmax"))]
                for g in _pick_generations(c, n_generations)]
        out.append(table(GEN_HEAD, rows) if rows else note("No generations recorded."))
    return "".join(out)


def explanations(record: Mapping[str, Any], ai: Mapping[str, Any], n: int = 6, limit: int = 200) -> str:
    """A few AutoInterp explanations of one SAE with their detection scores (CONCEPT100 first)."""
    s = ai.get("summary") or {}
    lat = [x for x in ai.get("latents") or [] if isinstance(x, Mapping)]

    def order(x: Mapping[str, Any]) -> tuple[bool, float]:
        score = finite(x.get("score"))
        return not x.get("in_concept100"), -score if score is not None else math.inf

    lat.sort(key=order)
    head = (f"SAE `{record.get('sae_dir')}`: µ = {num(s.get('mu'))} over CONCEPT100 "
            f"(n = {s.get('n_concept', MISSING)}); "
            f"mean over all scored latents {num(s.get('mean_all'))} ± {num(s.get('se_all'))} (SE, n = "
            f"{s.get('n_scored', MISSING)}, {s.get('n_failed', 0)} failed); judge {cell(s.get('judge'), 60)}, "
            f"detection {cell(s.get('detection'), 20)}.\n\n")
    rows = [[cell(x.get("latent"), 12), "yes" if x.get("in_concept100") else "no", num(x.get("score")),
             num(x.get("frequency"), 4), num(x.get("max_act")), cell(x.get("explanation"), limit)] for x in lat[:n]]
    return head + table(["latent", "CONCEPT100", "score", "frequency", "max act", "explanation"], rows)


# --------------------------------------------------------------------------------- timings


def timings(t: Mapping[str, Any] | None) -> str:
    items = [(k, finite(v)) for k, v in (t or {}).items()]
    if not items:
        return note("No stage timings recorded.")
    rows = [[cell(k, 40), duration(v), num(v, 1)] for k, v in items]
    total = sum(v for _, v in items if v is not None)
    rows.append(["**total**", f"**{duration(total)}**", num(total, 1)])
    return table(["stage", "wall time", "seconds"], rows)


# ------------------------------------------------------------------------------ protocol choices

READING_NAMES = {"A": "A (Arad's hook)", "B": "B (f's code × α)", "B'": "B′ (f's code alone)"}


def choices_note(results: Mapping[str, Any]) -> str:
    """The run's resolutions of the paper's ambiguities: ΔTC reading and positions, tier ranking,
    AutoInterp random-window labels, level grouping, template files."""
    sel = results.get("select") or {}
    tpl = results.get("templates") or {}
    parts = []
    if sel:
        parts.append(f"ΔTC reading **{READING_NAMES.get(sel.get('reading'), cell(sel.get('reading'), 20))}** at "
                     f"**{cell(sel.get('positions'), 10)}** prefix position(s); the output score uses reading A "
                     f"({cell(sel.get('mode'), 20)}); tiers ranked by **{cell(sel.get('ranking'), 20)}**")
    if results.get("random_labels"):
        lab = results["random_labels"]
        parts.append(f"AutoInterp random windows labelled **{cell(lab, 20)}**"
                     + (" (SAEBench)" if lab == "negative" else " (by their activations)"))
    if results.get("level_grouping"):
        parts.append(f"sparsity levels grouped by **{cell(results['level_grouping'], 20)}**")
    for what, d in tpl.items():
        if isinstance(d, Mapping):
            parts.append(f"{what} prompts from {cell(d.get('path'), 80)} (sha256 {cell(str(d.get('sha256'))[:12], 20)})")
    return ("\nProtocol choices: " + "; ".join(parts) + ".\n") if parts else ""


def readings_table(cmp: Mapping[str, Any] | None) -> str:
    """How the three ΔTC readings rank latents (Kendall tau_b between them, share of ΔC = 0) and
    the steering score of the tier each selects, means over SAEs."""
    if not isinstance(cmp, Mapping) or not cmp.get("readings"):
        return note("ΔTC readings not compared (select.compare_readings = false, or no dtc.npz).")
    readings = list(cmp["readings"])
    tau = cmp.get("tau_b") or {}

    def tau_of(x, y):
        if x == y:
            return "1"
        return num(tau.get(f"{x}|{y}", tau.get(f"{y}|{x}")))

    head = ["reading", "share ΔC = 0", *[f"τ_b vs {READING_NAMES.get(y, y).split(' ')[0]}" for y in readings],
            "g after ΔTC selection", "lift over g"]
    rows = []
    for x in readings:
        name = READING_NAMES.get(x, x) + (" · used" if x == cmp.get("used") else "")
        rows.append([name, num((cmp.get("zero_share") or {}).get(x)), *[tau_of(x, y) for y in readings],
                     num((cmp.get("g_selected") or {}).get(x)), num((cmp.get("lift") or {}).get(x))])
    return (table(head, rows) + "\n"
            + note(f"Means over {cmp.get('n_saes')} SAE(s): τ_b between the latent rankings each reading gives, the "
                   "share of scored latents with ΔC exactly 0 (silent on the prefix under B / B′), and the test "
                   "score of the tier each reading selects (g_dtc) minus g. The paper is ambiguous between "
                   "these readings (protocol §7)."))
