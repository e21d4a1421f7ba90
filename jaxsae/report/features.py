"""``report/features.html``: one self-contained page to look at the CONCEPT latents of every SAE.

One table row per (SAE, latent) for the latents of each SAE's CONCEPT draw (``autointerp.json``'s
``concept100``) and the latents it steered (``steering/concepts.jsonl``): the explanation and
AutoInterp score, the explanation windows with the highlighted tokens (activation above τ) marked,
ΔTC and the output score (``dtc.npz``), the steering factor chosen on dev, the test score (mean
HM) and one steered test generation with its concept / instruction / fluency ratings.

The page has inline CSS and a small inline script, no server and no network. Clicking a score's
column header sorts by it (again: the other direction); ``features.html?sort=<key>&dir=asc|desc``
opens it sorted. Without JavaScript the rows stay in SAE order, then latent order. Every text
(explanations, windows, generations, concepts come from models) is HTML-escaped.

    from jaxsae.report.features import features_page
    path = features_page(run_dir)            # -> run_dir/report/features.html
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from jaxsae.io import atomic_write_text

from . import artefacts as A

PAGE_FILE = "report/features.html"
"""Where the page goes, relative to the run folder."""


@dataclasses.dataclass(frozen=True)
class FeaturesPageSettings:
    """What the features page shows."""

    n_windows: int = 5
    """Explanation windows shown per latent (strongest first)."""
    max_chars: int = 400
    """Longest text shown for a window or generation (longer ones are cut, marked with …)."""
    include_steered: bool = True
    """Also list steered latents that are not in the CONCEPT draw (a concept file may name them)."""


COLUMNS = (
    # key, header, numeric
    ("sae", "SAE", False),
    ("latent", "latent", True),
    ("explanation", "explanation", False),
    ("autointerp", "AutoInterp", True),
    ("dtc", "ΔTC", True),
    ("output_score", "output score", True),
    ("factor", "factor", True),
    ("steer_score", "steering HM", True),
    ("concept", "C", True),
    ("instruction", "I", True),
    ("fluency", "F", True),
    ("generation", "steered generation", False),
    ("windows", "top windows", False),
)
"""The table's columns; numeric ones sort."""


def _num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(0, n - 1)] + "…"


def _highlight(text: str, n: int) -> str:
    """Escaped window text with the ``<<token>>`` marks of :func:`jaxsae.autointerp.prompts.render_window`
    shown as ``<mark>`` (tokens whose activation is above the latent's threshold τ)."""
    out = []
    for k, part in enumerate(re.split(r"<<(.*?)>>", _cut(text, n), flags=re.S)):
        out.append(f"<mark>{html.escape(part)}</mark>" if k % 2 else html.escape(part))
    return "".join(out)


def _dtc_maps(arrays) -> tuple[dict[int, float], dict[int, float]]:
    if arrays is None:
        return {}, {}
    feats = [int(f) for f in arrays.get("features", range(len(arrays["delta_tc"])))]
    dtc = dict(zip(feats, (float(v) for v in arrays["delta_tc"])))
    out = dict(zip(feats, (float(v) for v in arrays["output_score"]))) if "output_score" in arrays else {}
    return dtc, out


def _sae_label(rec: Mapping[str, Any], folder: str) -> str:
    parts = [str(rec[k]) for k in ("model", "architecture") if rec.get(k)]
    lvl = rec.get("level_label")
    if lvl:
        parts.append(str(lvl))
    return " ".join(parts) or folder


def sae_rows(run_dir: Path, rec: Mapping[str, Any], folder: Path, settings: FeaturesPageSettings) -> list[dict]:
    """The rows of one SAE folder: one dict per CONCEPT (and steered) latent with the column keys
    of :data:`COLUMNS` (None where a stage left nothing) plus the window texts."""
    ai = A.read_json(folder / "autointerp.json")
    ai = ai if isinstance(ai, dict) else {}
    latents = {int(x["latent"]): x for x in ai.get("latents") or [] if isinstance(x, dict) and "latent" in x}
    concept = [int(f) for f in ai.get("concept100") or []]
    steered = {int(r["feature"]): r for r in A.read_jsonl(folder / "steering" / "concepts.jsonl") if "feature" in r}
    dtc, out_score = _dtc_maps(A.load_dtc(folder / "dtc.npz"))
    order = list(dict.fromkeys(concept + (sorted(steered) if settings.include_steered else [])))
    label = _sae_label(rec, rec.get("sae_dir") or folder.name)
    rows = []
    for f in sorted(order):
        lat, st = latents.get(f, {}), steered.get(f, {})
        factor = _num(st.get("factor"))
        test = [g for g in st.get("generations") or [] if g.get("split") == "test"]
        gen = next((g for g in test if _num(g.get("factor")) == factor), test[0] if test else None)
        windows = [w for w in lat.get("generation") or [] if isinstance(w, dict)][: settings.n_windows]
        rows.append({
            "sae": label, "sae_dir": str(rec.get("sae_dir") or folder.name), "latent": f,
            "explanation": lat.get("explanation"), "autointerp": _num(lat.get("score")),
            "dtc": dtc.get(f), "output_score": out_score.get(f), "factor": factor,
            "steer_score": _num(st.get("test_score")), "steered_concept": st.get("concept"),
            "concept": _num(gen.get("concept_score")) if gen else None,
            "instruction": _num(gen.get("instruction_score")) if gen else None,
            "fluency": _num(gen.get("fluency_score")) if gen else None,
            "generation": gen.get("output") if gen else None,
            "gen_instruction": gen.get("instruction") if gen else None,
            "windows": [(str(w.get("text", "")), _num(w.get("max_act"))) for w in windows],
        })
    return rows


def _records(run_dir: Path) -> list[Mapping[str, Any]]:
    """results.json's SAE records; without one, every folder holding an autointerp.json."""
    res = A.read_json(run_dir / "results.json")
    recs = res.get("records") if isinstance(res, dict) else None
    if isinstance(recs, list) and recs:
        return [r for r in recs if isinstance(r, dict)]
    return [{"sae_dir": str(p.parent.relative_to(run_dir))} for p in sorted(run_dir.rglob("autointerp.json"))]


def _fmt(v) -> str:
    return "" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _cell(key: str, row: dict, settings: FeaturesPageSettings) -> str:
    v = row.get(key)
    e = html.escape
    if key == "sae":
        return f'<td title="{e(row["sae_dir"])}">{e(str(v))}</td>'
    if key == "explanation":
        return f"<td class=txt>{e(_cut(v, settings.max_chars)) if v else '<i>none</i>'}</td>"
    if key == "generation":
        if v is None:
            return "<td class=txt></td>"
        head = (f"<div class=ins>{e(_cut(row['gen_instruction'] or '', settings.max_chars))}</div>"
                f"<div class=gen>{e(_cut(v, settings.max_chars))}</div>")
        if row.get("steered_concept") and row["steered_concept"] != row.get("explanation"):
            head += f"<div class=ins>concept: {e(_cut(row['steered_concept'], settings.max_chars))}</div>"
        return f"<td class=txt>{head}</td>"
    if key == "windows":
        items = "".join(f"<li><span class=act>{_fmt(a)}</span> {_highlight(t, settings.max_chars)}</li>"
                        for t, a in row["windows"])
        return (f"<td class=txt><details><summary>{len(row['windows'])} windows</summary><ol>{items}</ol>"
                f"</details></td>") if items else "<td class=txt></td>"
    data = "" if v is None else repr(float(v))
    return f'<td class=num data-v="{data}">{e(_fmt(v))}</td>'


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:4px 6px;vertical-align:top}
th{background:#f2f2f2;position:sticky;top:0}
th.sort{cursor:pointer;text-decoration:underline dotted}
th[data-dir=asc]::after{content:" ▲"} th[data-dir=desc]::after{content:" ▼"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.txt{max-width:28em;overflow-wrap:anywhere}
mark{background:#ffd54f;padding:0 1px}
.ins{color:#666;font-size:12px}.gen{margin:2px 0}.act{color:#666;font-size:12px}
ol{margin:0;padding-left:1.4em}
"""

_JS = """
(function(){
  var table=document.getElementById('features'), body=table.tBodies[0];
  function val(tr,col){var v=tr.cells[col].getAttribute('data-v');return v===null||v===''?null:parseFloat(v);}
  function sortBy(key,dir){
    var th=table.querySelector('th[data-key="'+key+'"]'); if(!th||!th.classList.contains('sort'))return;
    var col=th.cellIndex, rows=Array.prototype.slice.call(body.rows), s=dir==='asc'?1:-1;
    rows.sort(function(a,b){var x=val(a,col),y=val(b,col);
      if(x===null&&y===null)return (+a.dataset.i)-(+b.dataset.i); if(x===null)return 1; if(y===null)return -1;
      return x===y?(+a.dataset.i)-(+b.dataset.i):s*(x-y);});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(c){c.removeAttribute('data-dir');});
    th.setAttribute('data-dir',dir); table.setAttribute('data-sorted',key+':'+dir);
  }
  Array.prototype.forEach.call(table.querySelectorAll('th.sort'),function(th){
    th.addEventListener('click',function(){sortBy(th.dataset.key,th.getAttribute('data-dir')==='desc'?'asc':'desc');});});
  var q=new URLSearchParams(window.location.search);
  if(q.get('sort'))sortBy(q.get('sort'),q.get('dir')==='asc'?'asc':'desc');
})();
"""


def render_page(rows: Iterable[dict], *, title: str = "Features", settings: FeaturesPageSettings = FeaturesPageSettings()) -> str:
    """The whole HTML page for ``rows`` (from :func:`sae_rows`), in the given order."""
    rows = list(rows)
    e = html.escape
    head = "".join(f'<th data-key="{k}"{" class=sort" if num else ""}>{e(h)}</th>' for k, h, num in COLUMNS)
    body = "".join(
        f'<tr data-i="{i}" data-sae="{e(r["sae_dir"])}" data-latent="{r["latent"]}">'
        + "".join(_cell(k, r, settings) for k, _, _ in COLUMNS) + "</tr>\n"
        for i, r in enumerate(rows))
    n_sae = len({r["sae_dir"] for r in rows})
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>{e(title)}</h1>\n"
            f"<p>{len(rows)} latents of {n_sae} SAEs: each SAE's CONCEPT latents and the latents it steered. "
            "Click a score's header to sort by it. AutoInterp: detection accuracy of the explanation; ΔTC and "
            "output score: selection scores; factor: steering factor chosen on dev instructions; steering HM: "
            "mean harmonic mean of the three ratings (0–2) on test instructions; C / I / F: the concept, "
            "instruction and fluency ratings of the generation shown. Marked tokens in the windows activate the "
            "latent above its threshold τ; the number before a window is its largest activation.</p>\n"
            f"<table id=features><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"
            f"<script>{_JS}</script></body></html>\n")


def features_page(run_dir: str | Path, *, out: str | Path | None = None,
                  settings: FeaturesPageSettings = FeaturesPageSettings()) -> Path:
    """Write the features page of the run folder ``run_dir`` (atomically) and return its path
    (``run_dir/report/features.html`` unless ``out`` is given). SAEs come from results.json's
    records (or, without one, every folder with an autointerp.json); missing files leave cells
    empty, never an error."""
    run_dir = Path(run_dir)
    rows = []
    for rec, folder in A.sae_folders(run_dir, _records(run_dir)):
        rows += sae_rows(run_dir, rec, folder, settings)
    res = A.read_json(run_dir / "results.json")
    sweep = res.get("sweep") if isinstance(res, dict) else None
    title = f"Features of {sweep if sweep else run_dir.name}"
    path = Path(out) if out is not None else run_dir / PAGE_FILE
    atomic_write_text(path, render_page(rows, title=title, settings=settings))
    return path
