"""The run's last lines: a short headline table read from results.json.

    from jaxsae.report.headline import headline_lines
    print("\\n".join(headline_lines(json.loads(Path("runs/demo/results.json").read_text()))))

Rows: τ_b(µ, g) pooled over SAEs with its CI, p-value and n ("too few (n = 5)" below
:data:`jaxsae.report.fmt.MIN_N_TEST` SAEs); Ψ with its bootstrap CI; the lift of each selection
method over no selection with its paired bootstrap CI and n; the judge's validity per criterion
(AUROC, CI, n per class) and its verdict. A value results.json lacks shows as "–" or "not
measured", never an error.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .fmt import MIN_N_TEST, finite

_METHODS = {"output": "output score", "dtc": "ΔTC"}


def _ci(ci: Any, level: Any, fmt: str = "+.2f") -> str:
    lo, hi = (finite(ci[0]), finite(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    if lo is None or hi is None:
        return "–"
    return f"{round(100 * (finite(level) or 0.95))}% CI [{lo:{fmt}}, {hi:{fmt}}]"


def tau_row(st: Any, level: Any) -> tuple[str, str, str]:
    """(value, uncertainty, n) of one tau_group result: "too few (n = 5)" below MIN_N_TEST pairs."""
    if not isinstance(st, Mapping):
        return "–", "", ""
    n = st.get("n")
    tau = finite(st.get("tau_b"))
    if st.get("status", "ok") != "ok" or tau is None:
        return f"{st.get('status', 'no statistic')} (n = {n})", "", f"n = {n}"
    if n is None or n < MIN_N_TEST:
        return f"too few (n = {n})", "", f"n = {n}"
    p = finite(st.get("p_perm"))
    return f"{tau:+.3f}", _ci(st.get("ci"), level) + (f", p = {p:.3g}" if p is not None else ""), f"n = {n}"


def _validity_rows(v: Any) -> list[tuple[str, str, str, str]]:
    if not isinstance(v, Mapping) or not v.get("measured", "criteria" in v):
        why = v.get("reason") if isinstance(v, Mapping) else "no validity stage result"
        return [("judge validity", "not measured", str(why or ""), "")]
    crits = dict(v.get("criteria") or {})
    if isinstance(v.get("detector"), Mapping):
        crits["detector"] = v["detector"]
    rows = []
    for c, r in crits.items():
        auc = finite(r.get("auroc"))
        rows.append((f"judge AUROC: {c}", "–" if auc is None else f"{auc:.2f}",
                     _ci([r.get("ci_low"), r.get("ci_high")], r.get("ci_level"), ".2f"),
                     f"n = {r.get('n_pos', 0)}/{r.get('n_neg', 0)}"))
    return rows


def headline_rows(results: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(statistic, value, uncertainty, n) rows of the headline (see the module docstring)."""
    tau = results.get("tau") if isinstance(results.get("tau"), Mapping) else {}
    level = (tau.get("settings") or {}).get("ci_level", 0.95)
    rows = [("τ_b(µ, g) pooled", *tau_row(tau.get("overall"), level))]
    psi = tau.get("Psi") if isinstance(tau.get("Psi"), Mapping) else {}
    val = finite(psi.get("value"))
    rows.append(("Ψ", "not available (needs every ψ)" if val is None else f"{val:+.3f}",
                 _ci(psi.get("ci_bootstrap"), level) if val is not None else "",
                 f"n = {tau.get('n')} SAEs" if tau.get("n") is not None else ""))
    lifts = results.get("selection_lift") if isinstance(results.get("selection_lift"), Mapping) else {}
    for m, r in lifts.items():
        lift = finite((r or {}).get("lift_pct"))
        rows.append((f"lift of {_METHODS.get(m, m)} selection", "–" if lift is None else f"{lift:+.1f} %",
                     _ci((r or {}).get("ci"), (r or {}).get("ci_level"), "+.1f"), f"n = {(r or {}).get('n')} SAEs"))
    return rows + _validity_rows(results.get("judge_validity"))


def headline_lines(results: Mapping[str, Any]) -> list[str]:
    """The headline as aligned text lines, the judge's verdict (when it has one) last."""

    rows = [("statistic", "value", "uncertainty", "n"), *headline_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

    out = [line(rows[0]), "  ".join("-" * w for w in widths), *(line(r) for r in rows[1:])]
    v = results.get("judge_validity")
    if isinstance(v, Mapping) and v.get("measured", "criteria" in v):
        out.append("judge: " + short_verdict(v))
    return out


def short_verdict(v: Mapping[str, Any]) -> str:
    """:func:`jaxsae.judge.validate.verdict` in one short line: the criteria the judge cannot tell
    apart (their numbers are in the rows above), a low digit mass, and what is not interpretable."""
    from jaxsae.judge.validate import _fails, verdict

    full = verdict(v)
    if not full:
        return "separates every measured criterion (each CI excludes 0.5)"
    crits = dict(v.get("criteria") or {})
    if isinstance(v.get("detector"), Mapping):
        crits["detector"] = v["detector"]
    bad = [c for c, r in crits.items() if _fails(r)]
    parts = [f"cannot tell {', '.join(bad)} apart (CI includes 0.5 or AUROC ≤ 0.5)"] if bad else []
    parts += [p for p in full.split("; ") if p.startswith("the judge puts only")]
    return "; ".join([*parts, full.rsplit("; ", 1)[-1]])
