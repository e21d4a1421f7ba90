"""The report's figures, drawn with matplotlib's Agg backend and written as PNG atomically.

Each ``*_figure`` function returns a Figure, or None when there is nothing to draw (the report
then says so instead). Missing values (None, NaN) are skipped, never drawn. matplotlib is imported
inside the functions, so importing :mod:`jaxsae.report` does not touch the backend.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxsae.io import atomic_write_bytes

from .fmt import finite

METHOD_NAMES = {"none": "no selection", "output": "output score", "dtc": "ΔTC"}
"""Display names of :data:`jaxsae.analysis.DEFAULT_METHODS`."""

_MARKERS = "osD^vPX*<>ph"


def _new_figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _palette(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def save_png(fig, path: Path) -> Path:
    """Render ``fig`` to PNG and write it via a temporary file in the same folder + os.replace."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _unique(values) -> list[str]:
    out: list[str] = []
    for v in values:
        if str(v) not in out:
            out.append(str(v))
    return out


def mu_vs_g_figure(records: Sequence[Mapping[str, Any]],
                   panels: Sequence[tuple[str, str]] = (("g", "no selection"), ("g_dtc", "after ΔTC selection"))):
    """µ against the steering score, one panel per score key in ``panels`` that has points;
    colour = architecture, marker = model."""
    from matplotlib.lines import Line2D

    pts = {}
    for key, _ in panels:
        pts[key] = [(r, finite(r.get("mu")), finite(r.get(key))) for r in records]
        pts[key] = [p for p in pts[key] if p[1] is not None and p[2] is not None]
    panels = [(k, t) for k, t in panels if pts[k]]
    if not panels:
        return None
    archs = _unique(r.get("architecture") for r in records)
    models = _unique(r.get("model") for r in records)
    colour = dict(zip(archs, _palette(len(archs))))
    marker = {m: _MARKERS[i % len(_MARKERS)] for i, m in enumerate(models)}

    fig = _new_figure(3.9 * len(panels) + 1.7, 3.6)
    axs = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (key, title) in zip(axs, panels):
        for a in archs:
            for m in models:
                rs = [(r, x, y) for r, x, y in pts[key] if str(r.get("architecture")) == a and str(r.get("model")) == m]
                xy = [(x, y) for _, x, y in rs]
                if xy:
                    x, y = zip(*xy)
                    xe = [finite(r.get("mu_se")) or 0.0 for r, _, _ in rs]  # SE over the CONCEPT latents' scores
                    ye = [finite(r.get(f"{key}_se")) or 0.0 for r, _, _ in rs]  # SE over the steered concepts
                    if any(xe) or any(ye):
                        ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="none", ecolor=colour[a], elinewidth=0.8, alpha=0.6,
                                    capsize=2)
                    ax.scatter(x, y, color=colour[a], marker=marker[m], s=40, edgecolor="black", linewidth=0.4)
        ax.set_title(f"{title} (n={len(pts[key])} SAEs; bars: ±SE)", fontsize=10)
        ax.set_xlabel("AutoInterp µ")
        ax.grid(alpha=0.3)
    axs[0].set_ylabel("steering score")
    handles = [Line2D([], [], ls="", marker="o", color=colour[a], label=a) for a in archs]
    if len(models) > 1:
        handles += [Line2D([], [], ls="", marker=marker[m], color="grey", label=m) for m in models]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return fig


def _ok_tau(st: Any) -> float | None:
    if not isinstance(st, Mapping) or st.get("status", "ok") != "ok":
        return None
    return finite(st.get("tau_b"))


def _ci_err(st: Mapping[str, Any], tau: float) -> tuple[float, float]:
    ci = st.get("ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        lo, hi = finite(ci[0]), finite(ci[1])
        if lo is not None and hi is not None:
            return max(0.0, tau - lo), max(0.0, hi - tau)
    return 0.0, 0.0


def tau_groups(result: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(axis, group, stats) of a rank_agreement result: ("pooled", "all", overall) then every
    group of every axis, in order."""
    out = [("pooled", "all", result.get("overall") or {})]
    axes = result.get("axes")
    for axis, entry in (axes.items() if isinstance(axes, Mapping) else ()):
        groups = entry.get("groups") if isinstance(entry, Mapping) else None
        for name, st in (groups.items() if isinstance(groups, Mapping) else ()):
            out.append((str(axis), str(name), st))
    return out


def tau_figure(series: Mapping[str, Mapping[str, Any]]):
    """tau_b with its CI per axis group (pooled first), one marker series per rank_agreement
    result in ``series`` (label -> result), the axis psi's as dashed segments. Groups without a
    statistic in any series ("too small", "constant") are left off the axis."""
    by_axis: dict[str, list[str]] = {}
    n_of: dict[tuple[str, str], Any] = {}
    for res in series.values():
        for axis, name, st in tau_groups(res):
            names = by_axis.setdefault(axis, [])
            if _ok_tau(st) is not None and name not in names:
                names.append(name)
                n_of[(axis, name)] = st.get("n")
    cats = [(a, n) for a, names in by_axis.items() for n in names]
    if not cats:
        return None
    cats.sort(key=lambda c: c[0] != "pooled")  # stable: pooled first, each axis kept together
    pos = {c: i for i, c in enumerate(cats)}
    colours = _palette(len(series))
    k = len(series)
    width = 0.7 / max(k, 1)

    fig = _new_figure(max(4.5, 0.55 * len(cats) * max(1, k * 0.7) + 2.0), 3.9)
    ax = fig.subplots()
    ax.axhline(0.0, color="black", lw=0.8)
    for j, (label, res) in enumerate(series.items()):
        off = (j - (k - 1) / 2) * width
        xs, ys, lo, hi = [], [], [], []
        for axis, name, st in tau_groups(res):
            tau = _ok_tau(st)
            if tau is None:
                continue
            e = _ci_err(st, tau)
            xs.append(pos[(axis, name)] + off), ys.append(tau), lo.append(e[0]), hi.append(e[1])
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt=_MARKERS[j % len(_MARKERS)], color=colours[j], capsize=3,
                        ms=5, lw=1, label=label)
        axes = res.get("axes")
        for axis, entry in (axes.items() if isinstance(axes, Mapping) else ()):
            psi = finite(entry.get("psi")) if isinstance(entry, Mapping) else None
            idx = [pos[c] for c in cats if c[0] == str(axis)]
            if psi is not None and idx:
                ax.hlines(psi, min(idx) - 0.4, max(idx) + 0.4, colors=[colours[j]], linestyles="dashed", lw=1)
    axes_seen = _unique(c[0] for c in cats)
    for a in axes_seen[1:]:
        ax.axvline(min(pos[c] for c in cats if c[0] == a) - 0.5, color="grey", lw=0.6, ls=":")
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels([("pooled" if a == "pooled" else f"{a}: {n}") + f" (n={n_of.get((a, n), '?')})" for a, n in cats],
                       rotation=40, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(cats) - 0.4)
    ax.set_ylim(-1.08, 1.08)
    ax.set_ylabel("Kendall τ_b (CI)")
    ax.set_title("rank agreement per group (dashed: ψ of the axis)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=max(1, k), fontsize=8, frameon=False)
    return fig


def selection_figure(groups: Mapping[str, Mapping[str, Any]], methods: Sequence[str]):
    """Grouped bars: the mean steering score of each selection method (``methods``) per group, with
    ±SE over the group's SAEs as error bars and each bar's n (SAEs) in its label. ``groups``: name ->
    a :func:`jaxsae.analysis.selection_summary` group, ``{"mean": {method: v}, "se": {method: v},
    "n": {method: k}}`` (a missing mean is not drawn, a missing SE draws no error bar)."""
    def field(n: str, key: str, m: str):
        entry = groups[n].get(key)
        return entry.get(m) if isinstance(entry, Mapping) else None

    names = [n for n in groups if any(finite(field(n, "mean", m)) is not None for m in methods)]
    if not names:
        return None
    k = len(methods)
    width = 0.8 / k
    colours = _palette(k)
    fig = _new_figure(max(4.5, 1.0 + 0.45 * k * len(names)), 3.9)
    ax = fig.subplots()
    for i, m in enumerate(methods):
        bars = [(j + (i - (k - 1) / 2) * width, finite(field(n, "mean", m)), finite(field(n, "se", m)) or 0.0,
                 field(n, "n", m)) for j, n in enumerate(names)]
        bars = [b for b in bars if b[1] is not None]
        if bars:
            x, y, se, n = zip(*bars)
            drawn = ax.bar(x, y, width, yerr=se, color=colours[i], label=METHOD_NAMES.get(m, m),
                           error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "black"})
            ax.bar_label(drawn, labels=[f"{v:.3f} (n={c if c is not None else '?'})" for v, c in zip(y, n)],
                         fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=9)
    ax.set_ylabel("mean steering score (±SE)")
    ax.margins(y=0.25)
    ax.set_title("steering score per selection method\n(error bars: ±SE over SAEs; n: SAEs)", fontsize=9)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def dtc_figure(arrays: Mapping[str, np.ndarray], title: str, chosen: Sequence[int] = (),
               chosen_label: str = "chosen ΔTC tier", pool: Sequence[int] = ()):
    """Histogram of one SAE's ΔTC over its scored latents; ``pool`` (the steered concepts) as a
    rug, ``chosen`` (the selected tier's latents) as dashed lines."""
    dtc = np.asarray(arrays.get("delta_tc", []), dtype=np.float64).ravel()
    feats = np.asarray(arrays.get("features", np.arange(dtc.size))).ravel()
    ok = np.isfinite(dtc)
    if not ok.any():
        return None
    vals = dtc[ok]
    at = {int(f): float(v) for f, v in zip(feats, dtc) if math.isfinite(float(v))} if feats.size == dtc.size else {}
    fig = _new_figure(5.6, 3.4)
    ax = fig.subplots()
    ax.hist(vals, bins=int(np.clip(np.sqrt(vals.size) * 1.5, 10, 80)), color="#7a9cc6", edgecolor="white", lw=0.4)
    if vals.size >= 2000:
        ax.set_yscale("log")
    rug = [at[int(f)] for f in pool if int(f) in at]
    if rug:
        ax.plot(rug, np.full(len(rug), 0.03), "|", color="black", ms=14, mew=1.4, zorder=5,
                transform=ax.get_xaxis_transform(), label=f"steered concepts ({len(rug)})")
    for i, v in enumerate(at[int(f)] for f in chosen[:20] if int(f) in at):
        ax.axvline(v, color="crimson", ls="--", lw=1, label=chosen_label if i == 0 else None)
    ax.set_xlabel("ΔTC (change in top-k token confidence)")
    ax.set_ylabel("latents")
    ax.set_title(f"{title} ({vals.size} latents)", fontsize=10)
    if rug or chosen:
        ax.legend(fontsize=8)
    return fig
