"""Markdown renderings of the analysis tables, optionally beside the paper's published values."""

from __future__ import annotations

from typing import Any, Mapping

AXIS_TITLES = {"A": "architecture", "B": "sparsity level", "C": "model"}


def _f(v: Any, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _ci(v: Any, digits: int = 4) -> str:
    return "–" if not v else f"[{v[0]:.{digits}f}, {v[1]:.{digits}f}]"


def _p(v: Any) -> str:
    return "–" if v is None else (f"{v:.4f}" if v >= 1e-4 else f"{v:.1e}")


def _lookup(groups: Mapping[str, Any] | None, name: str) -> Any:
    """The paper's entry for one of our group names (case-insensitive; "L0≈50" style levels)."""
    if not groups:
        return None
    key = name.lower().replace("l0≈", "")
    for k, v in groups.items():
        if k.lower() == key:
            return v
    return None


def _row(label: str, st: Mapping[str, Any], paper: Mapping[str, Any] | None, with_paper: bool) -> str:
    if st.get("status", "ok") != "ok":
        cells = [label, str(st.get("n", "")), st["status"], "–", "–", "–"]
    else:
        cells = [label, str(st["n"]), _f(st["tau_b"]), _p(st["p_perm"]),
                 f"{_ci(st['ci'])} ({st['ci_method']})", _ci(st.get("perm_null_band"))]
    if with_paper:
        cells += [_f(paper.get("tau_b")) if paper else "–", _p(paper.get("p")) if paper and "p" in paper else "–"]
    return "| " + " | ".join(cells) + " |"


def rank_table_markdown(result: Mapping[str, Any], paper: Mapping[str, Any] | None = None) -> str:
    """A Table-1-style markdown table of :func:`jaxsae.analysis.rank_agreement`'s result.

    ``paper``: one of :mod:`jaxsae.analysis.paper`'s tables to show beside ours (groups matched by
    name, case-insensitively). Group CIs are bootstrap intervals of tau_b; the "null band" column
    is the central interval of tau_b under the permutation null (what the paper's subgroup "CI"s
    appear to be).
    """
    with_paper = paper is not None
    head = ["group", "n", "τ_b", "p (perm.)", "CI", "null band"] + (["paper τ_b", "paper p"] if with_paper else [])
    lines = [f"τ_b between {result['x']} and {result['y']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append(_row("**overall**", result["overall"], paper.get("overall") if paper else None, with_paper))
    for axis, entry in result["axes"].items():
        pa = paper.get(axis) if paper else None
        for name, st in entry["groups"].items():
            lines.append(_row(name, st, _lookup(pa.get("groups") if pa else None, name), with_paper))
        psi = (f"**{_f(entry['psi'])}** (SE {_f(entry['se_over_groups'])}, CI {_ci(entry['ci_over_groups'])}; "
               f"SAE bootstrap SE {_f(entry['se_bootstrap'])}, CI {_ci(entry['ci_bootstrap'])})")
        cells = [f"**ψ_{axis}** ({AXIS_TITLES.get(axis, entry['key'])}, {entry['n_groups_used']} groups)", "", psi, "", "", ""]
        if with_paper:
            cells += [f"{_f(pa.get('psi'))} (SE {_f(pa.get('se'))}, CI {_ci(pa.get('ci'))})" if pa else "–", ""]
        lines.append("| " + " | ".join(cells) + " |")
    big = result["Psi"]
    cells = ["**Ψ**", "", f"**{_f(big['value'])}** (bootstrap CI {_ci(big.get('ci_bootstrap'))})", "", "", ""]
    if with_paper:
        cells += [_f(paper.get("Psi")), ""]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paper_lift_pct(values: Mapping[str, Any], base: str, method: str) -> float | None:
    """The paper's lift of ``method`` over ``base`` in % (Fig. 8 for ΔTC), from its Table 2 means."""
    if values.get(base) is None or values.get(method) is None:
        return None
    return 100.0 * (values[method] / values[base] - 1.0)


def selection_table_markdown(summary: Mapping[str, Any], paper: Mapping[str, Any] | None = None) -> str:
    """A Table-2-style markdown table of :func:`jaxsae.analysis.selection_summary`'s result
    (per group: n, the SAEs with a score (per method, "4/4/3", where they differ); mean steering
    score per method, lift over no selection in %)."""
    methods = list(summary["methods"])
    sel = methods[1:]
    head = [summary["by"], "n (SAEs)"] + [f"{m} (mean)" for m in methods] + [f"{m} lift %" for m in sel]
    if paper is not None:
        head += [f"paper {m}" for m in methods] + [f"paper {m} lift %" for m in sel]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = list(summary["groups"].items()) + [("**average**", summary["average"])]
    total = {m: sum(int((g.get("n") or {}).get(m) or 0) for g in summary["groups"].values()) for m in methods}
    for name, g in rows:
        n = g.get("n") or total  # the average row: every group's SAEs
        counts = sorted({int(n.get(m) or 0) for m in methods})
        n_cell = str(counts[0]) if len(counts) == 1 else "/".join(str(int(n.get(m) or 0)) for m in methods)
        cells = [name, n_cell] + [_f(g["mean"].get(m), 3) for m in methods] + [_f(g["lift_pct"].get(m), 1) for m in sel]
        if paper is not None:
            pv = _lookup(paper, name)
            cells += [_f(pv.get(m), 3) if pv else "–" for m in methods]
            cells += [_f(paper_lift_pct(pv, methods[0], m), 1) if pv else "–" for m in sel]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
