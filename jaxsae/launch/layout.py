"""The run folder's layout: where each model, sweep and SAE lives, and the per-SAE records read
back from everything the stages wrote.

    <out>/manifests/<stage>.json           one per finished stage (jaxsae.launch.runner)
    <out>/<model>/sweep/sweep.json         the trained sweep (one SAELens folder per SAE)
    <out>/<model>/sweep/<sae>/             cfg.json, sae_weights.safetensors, metrics.json,
                                           feature_stats/, autointerp.json, steering/, dtc.npz
    <out>/validity.json, judge_validity/   the judge's validity (and its cache)
    <out>/results.json, report.md, report/, plots/
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from jaxsae.errors import UserError
from jaxsae.launch.runner import Run


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "model"


def model_dir(run: Run, spec) -> Path:
    return run.out / slug(spec.name)


def sweep_dir(run: Run, spec) -> Path:
    return model_dir(run, spec) / "sweep"


def sweep_entries(run: Run, spec) -> list[dict]:
    """The sweep's SAEs as listed in its sweep.json (each with a ``dir`` relative to the sweep)."""
    path = sweep_dir(run, spec) / "sweep.json"
    if not path.exists():
        raise UserError(f"{path} is missing: run the train stage first (or --redo train)")
    data = json.loads(path.read_text())
    return data["saes"] if isinstance(data, dict) else data


def sae_path(run: Run, spec, entry: dict) -> Path:
    return sweep_dir(run, spec) / entry["dir"]


def rel(run: Run, path: Path) -> str:
    return str(Path(path).relative_to(run.out))


def reading_key(reading: str) -> str:
    """dtc.npz key of ΔC under a reading: delta_tc_A, delta_tc_B, delta_tc_Bp (B')."""
    return "delta_tc_" + reading.replace("'", "p")


VALIDITY_FILE = "validity.json"
"""The validity stage's result in the run folder (read by the analysis stage into results.json)."""


VALIDITY_CACHE = "judge_validity"
"""Folder of the run holding one validity result per cache key (judge, data, sizes)."""


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect_records(run: Run) -> list[dict]:
    """One record per SAE from everything the stages wrote (missing values are None)."""
    records = []
    for spec in run.cfg.models:
        for entry in sweep_entries(run, spec):
            d = sae_path(run, spec, entry)
            metrics = read_json(d / "metrics.json") or {}
            ai = (read_json(d / "autointerp.json") or {}).get("summary", {})
            util = read_json(d / "steering" / "utility.json") or {}
            sel = read_json(d / "steering" / "selected.json") or {}
            judge_stats = {k: v for k, v in (util.get("judge_stats") or {}).items() if k != "this_run"}
            records.append({
                "model": spec.name,
                "layer": spec.layer,
                "architecture": entry["architecture"],
                "level": entry["level"],
                "level_label": entry.get("level_label", str(entry["level"])),
                "sae_dir": rel(run, d),
                "l0": metrics.get("l0", entry.get("l0")),
                "fvu": metrics.get("fvu", entry.get("fvu")),
                "ce_loss_score": metrics.get("ce_loss_score"),
                "mu": ai.get("mu"),
                "mu_all": ai.get("mean_all"),
                "mu_all_se": ai.get("se_all"),
                "g": util.get("g"),
                "g_argmax": util.get("g_argmax"),
                "g_output": sel.get("g_output"),
                "g_dtc": sel.get("g_dtc"),
                "tier_output": sel.get("tier_output"),
                "tier_dtc": sel.get("tier_dtc"),
                "tier_choice": sel.get("tier_choice"),
                "tier_choice_label": sel.get("tier_choice_label"),
                "dtc_reading": sel.get("reading"),
                "dtc_positions": sel.get("positions"),
                "tier_ranking": sel.get("ranking"),
                "g_dtc_by_reading": {r: v.get("score") for r, v in (sel.get("by_reading") or {}).items()} or None,
                "random_labels": ai.get("random_labels"),
                "judge": util.get("judge"),
                "judge_stats": judge_stats or None,
                "m_f_fallbacks": len(util["m_f_fallback"]) if "m_f_fallback" in util else None,
            })
    return records


def dtc_by_reading(run: Run, records: list[dict]) -> list[tuple[dict, dict]]:
    """(record, {reading: ΔC over the scored latents}) of every SAE whose dtc.npz holds readings."""
    out = []
    for r in records:
        try:
            with np.load(run.out / r["sae_dir"] / "dtc.npz") as z:
                arrays = {x: np.asarray(z[reading_key(x)]) for x in ("A", "B", "B'") if reading_key(x) in z.files}
        except (OSError, ValueError, EOFError):
            continue
        out.append((r, arrays))
    return out


def mean_se(values) -> tuple[float | None, float | None, int]:
    """(mean, standard error sd/√n with ddof 1, n) of the finite values; SE None below 2 values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return None, None, 0
    se = float(np.std(v, ddof=1) / np.sqrt(v.size)) if v.size > 1 else None
    return float(v.mean()), se, int(v.size)


def with_uncertainty(run: Run, records: list[dict]) -> list[dict]:
    """Each record with the n and standard error of µ (over the CONCEPT latents' AutoInterp
    scores in autointerp.json) and of g (over the steered concepts' test scores in
    utility.json): ``mu_n``, ``mu_se``, ``g_n``, ``g_se`` (None where a file or score is missing)."""
    out = []
    for r in records:
        d = run.out / r["sae_dir"]
        ai = read_json(d / "autointerp.json") or {}
        mu_scores = [x.get("score") for x in ai.get("latents") or [] if x.get("in_concept100")]
        _, mu_se, mu_n = mean_se([x for x in mu_scores if isinstance(x, (int, float))])
        util = read_json(d / "steering" / "utility.json") or {}
        g_scores = [c.get("test_score") for c in util.get("concepts") or []]
        _, g_se, g_n = mean_se([x for x in g_scores if isinstance(x, (int, float))])
        out.append({**r, "mu_n": mu_n or None, "mu_se": mu_se, "g_n": g_n or None, "g_se": g_se})
    return out
