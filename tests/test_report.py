"""jaxsae.report: report.md and its plots from a synthetic run folder in the real file formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxsae.analysis import TauSettings, lift_ci, rank_agreement, selection_rank, selection_summary
from jaxsae.report import PLOT_FILES, write_report
from jaxsae.report.fmt import cell

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SETTINGS = TauSettings(n_perm=99, n_boot=50, seed=0)
NASTY = "Sure | here *is* <b>it</b>\nline two `code` " + "x" * 400


def _records() -> list[dict]:
    """2 models x 2 architectures x 3 levels, one µ missing and one g_dtc missing."""
    recs = []
    for m, model in enumerate(("Gemma-2-2B", "Qwen-2.5-3B")):
        for a, arch in enumerate(("topk", "relu")):
            for lv, (l0, l1) in enumerate(((50, 0.06), (80, 0.04), (160, 0.03))):
                i = len(recs)
                recs.append({
                    "model": model, "layer": 12, "architecture": arch, "level": lv,
                    "level_label": f"L0={l0}" if arch == "topk" else f"l1={l1:g}",
                    "sae_dir": f"{model}/sweep/{arch}-{lv}", "l0": l0 * (1.1 + 0.01 * i), "fvu": 0.2 + 0.01 * i,
                    "ce_loss_score": 0.9 - 0.01 * i, "mu": 0.5 + 0.037 * ((5 * i) % 7),
                    "mu_all": 0.5, "mu_all_se": 0.02, "g": 0.1 + 0.013 * ((3 * i) % 11),
                    "g_output": 0.2 + 0.011 * ((2 * i) % 5), "g_dtc": 0.3 + 0.009 * ((7 * i) % 13),
                    "tier_output": "up_top2", "tier_dtc": "down_q0.95", "g_argmax": 0.05 + 0.01 * i,
                    "tier_choice": "dev", "tier_choice_label": "chosen on dev instructions, reported on test",
                    "judge": "local:smollm2:float32:prompt=abc", "m_f_fallbacks": i % 2,
                    "judge_stats": {"ratings": 90, "failed": i % 3, "parse_failures": 0, "hard_failures": 0,
                                    "mean_digit_mass": 0.5 + 0.01 * i, "min_digit_mass": 0.1 + 0.01 * i},
                })
    recs[3]["mu"] = None
    recs[5]["g_dtc"] = None
    recs[0].update(mu_se=0.05, mu_n=20, g_se=0.125, g_n=8)  # n and SE of µ and g (the analysis stage's)
    recs[1].update(mu_n=1, g_n=1)  # one latent / concept: no SE
    return recs


def _results(records: list[dict]) -> dict:
    return {
        "sweep": "synthetic", "created": "2026-01-01T00:00:00", "records": records,
        "tau": rank_agreement(records, x="mu", y="g", settings=SETTINGS),
        "tau_after": {"g_dtc": rank_agreement(records, x="mu", y="g_dtc", settings=SETTINGS),
                      "gain_dtc": selection_rank(records, settings=SETTINGS)},
        "selection": selection_summary(records),
        "selection_lift": lift_ci(records, settings=SETTINGS),
        "timings": {"train": 3725.0, "metrics": 12.5, "analysis": 0.25},
    }


def _sae_files(d: Path, n_latents: int = 64) -> None:
    """The per-SAE artefacts as the stages write them (concepts.jsonl, selected.json, dtc.npz,
    autointerp.json)."""
    (d / "steering").mkdir(parents=True)
    concepts = []
    for f, factor in ((3, 1.0), (7, 4.0), (11, 4.0), (19, 1.0)):
        gens = [{"split": split, "factor": fac, "instruction": f"Instruction {split} {fac}",
                 "output": NASTY if f == 3 and split == "test" else f"steered text of {f} at {fac}",
                 "concept_score": 1.5, "instruction_score": 1.25, "fluency_score": 1.0, "hm": 1.2162162}
                for split, fac in (("dev", 1.0), ("dev", 4.0), ("test", factor))]
        concepts.append({"feature": f, "concept": f"concept of latent {f}", "m_f": 2.5, "dev_means": {},
                         "factor": factor, "dev_score": 0.5, "test_score": 0.25, "generations": gens})
    (d / "steering" / "concepts.jsonl").write_text("".join(json.dumps(c) + "\n" for c in concepts) + "not json\n")
    (d / "steering" / "selected.json").write_text(json.dumps(
        {"pool": [3, 7, 11, 19], "g_dtc": 0.3, "tier_dtc": "down_top1",
         "dtc": {"tier": "down_top1", "score": 0.3, "size": 1, "features": [7]}}))
    rng = np.random.default_rng(0)
    dtc = rng.normal(0.0, 0.2, n_latents).astype(np.float32)
    dtc[5] = np.nan
    np.savez(d / "dtc.npz", features=np.arange(n_latents), delta_tc=dtc,
             output_score=rng.random(n_latents).astype(np.float32))
    latents = [{"latent": f, "in_concept100": f in (3, 7), "explanation": f"explanation {f} | pipes",
                "score": s, "frequency": 0.01, "max_act": 3.0} for f, s in ((3, 0.75), (7, None), (9, 0.0), (40, 0.9))]
    (d / "autointerp.json").write_text(json.dumps(
        {"summary": {"mu": 0.6, "n_concept": 2, "mean_all": 0.7, "se_all": 0.05, "n_scored": 3, "n_failed": 1,
                     "judge": "local:test", "detection": "rank"}, "concept100": [3, 7], "latents": latents}))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    records = _records()
    _sae_files(run / records[0]["sae_dir"])
    results = _results(records)
    path = write_report(run, results)
    return run, records, path.read_text()


def _table_rows(md: str, first_header: str, *, with_header: bool = False) -> list[list[str]]:
    """The body rows of the first markdown table whose header starts with ``first_header`` (the
    header row first with ``with_header``)."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} |"))
    rows = [[c.strip() for c in lines[start].strip("|").split(" | ")]] if with_header else []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split(" | ")])
    return rows


def test_sections_and_paper_values(report):
    run, _, md = report
    assert (run / "report.md").exists()
    for title in ("# jaxsae report: synthetic", "## 1. SAEs", "## 2. Interpretability vs steering utility",
                  "## 3. Feature selection", "## 4. After selection", "## 5. Example steered generations",
                  "## 6. AutoInterp explanations", "## 7. Stage timings"):
        assert title in md
    assert "**12 SAEs**" in md and "Gemma-2-2B (layer 12), Qwen-2.5-3B (layer 12)" in md
    assert "0.2979" in md and "0.2575 (SE 0.1163" in md  # Table 1 overall, psi_A
    assert "| L0≈50 | 3 |" in md and "0.5429" in md  # level index 0 shown as L0≈50, beside the paper's
    assert "-0.0692" in md and "0.0823" not in md  # Table 3 (gain); no unchecked ICLR values
    assert "0.399" in md and "**average**" in md  # Table 2
    assert "| train | 1 h 02 min | 3725.0 |" in md and "**total**" in md


def test_per_sae_table_matches_records(report):
    _, records, md = report
    head, *rows = _table_rows(md, "SAE", with_header=True)
    assert len(rows) == len(records)
    for row, r in zip(rows, records):
        want = {"model": r["model"], "architecture": r["architecture"], "level": cell(r["level_label"]),
                "L0": f"{r['l0']:.1f}", "FVU": f"{r['fvu']:.3f}", "CE-loss score": f"{r['ce_loss_score']:.3f}",
                "µ ± SE (n latents)": "–" if r["mu"] is None else f"{r['mu']:.3f}",
                "g ± SE (n concepts)": f"{r['g']:.3f}",
                "g (argmax)": f"{r['g_argmax']:.3f}", "g_output": f"{r['g_output']:.3f}",
                "g_dtc": "–" if r["g_dtc"] is None else f"{r['g_dtc']:.3f}", "tier chosen": "on dev"}
        if r.get("mu_n") is not None:  # n beside µ and g, with the SE where there are 2 or more
            se = lambda k: f" ± {r[k]:.3f}" if k in r else ""  # noqa: E731
            want["µ ± SE (n latents)"] += f"{se('mu_se')} (n = {r['mu_n']})"
            want["g ± SE (n concepts)"] += f"{se('g_se')} (n = {r['g_n']})"
        got = dict(zip(head, row))
        assert {k: got[k] for k in want} == want
    assert rows[0][7:9] == [f"{records[0]['mu']:.3f} ± 0.050 (n = 20)", f"{records[0]['g']:.3f} ± 0.125 (n = 8)"]
    assert rows[1][7] == f"{records[1]['mu']:.3f} (n = 1)"


def test_n_beside_every_statistic_and_small_groups_untested(report):
    _, records, md = report
    # Table 1: groups of fewer than 8 SAEs show "too few (n = k)", no tau, p-value nor CI; the pooled row is tested
    rows = {r[0]: r for r in _table_rows(md, "group")}
    assert rows["relu"][1:6] == ["5", "too few (n = 5)", "–", "–", "–"]  # one relu µ is missing
    assert rows["L0≈80"][1:3] == ["4", "too few (n = 4)"]
    overall = rows["**overall**"]
    assert overall[1] == "11" and overall[2] not in ("–",) and not overall[2].startswith("too few")
    assert "Groups of fewer than 8 SAEs are not tested" in md
    # Table 2: n per group; the pooled lifts with their CI and n
    sel = _table_rows(md, "model", with_header=True)
    assert sel[0][1] == "n (SAEs)" and [r[1] for r in sel[1:]] == ["6/6/5", "6", "12/12/11"]  # recs[5] has no g_dtc
    lift = lift_ci(records, settings=SETTINGS)["dtc"]
    assert (f"ΔTC {lift['lift_pct']:.1f} %, 95% CI [{lift['ci'][0]:.1f}, {lift['ci'][1]:.1f}] % (n = 11 SAEs)"
            in md)


def test_steering_notes_under_the_sae_table(report):
    _, records, md = report
    # judge failure counts summed over SAEs, the digit mass weighted by ratings, the tier choice spelt out
    failed = sum(r["judge_stats"]["failed"] for r in records)
    assert f"> Steering judge local:smollm2:float32:prompt=abc: 1080 ratings, {failed} without a valid rating" in md
    assert "(0 unparseable answers, 0 failed requests)" in md and "(least 0.100)" in md
    assert "> Selection tiers: on dev: chosen on dev instructions, reported on test." in md
    assert f"> {sum(r['m_f_fallbacks'] for r in records)} steered latent(s) never fired" in md
    # the paper's variant is labelled in the table and in the note; no judge statistics, no judge line
    recs = [{**r, "tier_choice": "eval", "tier_choice_label": "paper variant: best tier by the evaluation itself",
             "judge_stats": None, "m_f_fallbacks": 0} for r in records]
    from jaxsae.report.markdown import sae_table, steering_notes

    assert "| by eval (paper) |" in sae_table(recs)
    notes = steering_notes(recs)
    assert notes == "> Selection tiers: by eval (paper): paper variant: best tier by the evaluation itself.\n\n"


def test_plots_are_valid_pngs_linked_from_the_report(report):
    run, _, md = report
    for name in PLOT_FILES.values():
        p = run / "plots" / name
        data = p.read_bytes()
        assert len(data) > 1000 and data[:8] == PNG_MAGIC, name
        assert f"](plots/{name})" in md
    assert not list((run / "plots").glob(".*"))  # no temporary files left behind


def test_selection_bars_carry_their_se_and_n():
    """The per-architecture selection plot: each bar's ±SE over its group's SAEs as an error bar
    and its n in its label; a group of one SAE has no SE (a zero-length bar)."""
    from matplotlib.container import BarContainer

    from jaxsae.report.plots import selection_figure
    from jaxsae.report.write import _selection_groups

    records = _records()
    records.append({"model": "Gemma-2-2B", "architecture": "gated", "g": 0.2, "g_output": 0.25, "g_dtc": 0.3})
    _, groups, methods = _selection_groups(records)
    assert list(groups) == ["gated", "relu", "topk", "all SAEs"]
    assert groups["relu"]["n"] == {"none": 6, "output": 6, "dtc": 5}  # records[5]: relu without g_dtc
    g = [r["g"] for r in records if r["architecture"] == "topk"]
    assert groups["topk"]["se"]["none"] == pytest.approx(np.std(g, ddof=1) / np.sqrt(6))
    assert groups["gated"]["se"] == dict.fromkeys(methods)
    ax = selection_figure(groups, methods).axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == len(methods)
    for m, c in zip(methods, bars):
        assert c.errorbar is not None, m
        (vertical,) = c.errorbar.lines[2]  # one segment per bar: mean - SE to mean + SE
        half = [(s[1][1] - s[0][1]) / 2 for s in vertical.get_segments()]
        assert half == pytest.approx([groups[n]["se"][m] or 0.0 for n in groups]), m
    labels = [t.get_text() for t in ax.texts]
    assert f"{groups['relu']['mean']['dtc']:.3f} (n=5)" in labels and labels.count("0.300 (n=1)") == 1
    assert sum("(n=" in t for t in labels) == len(methods) * len(groups)
    assert "±SE" in ax.get_title()


def test_examples_and_explanations(report):
    _, _, md = report
    assert "**Feature 3**" in md and "**Feature 11**" in md and "**Feature 19**" not in md  # 3 concepts
    # the test generation at the chosen factor, escaped for a table cell and truncated
    assert "Sure \\| here \\*is\\* \\<b\\>it\\</b\\> ↵ line two \\`code\\` xxx" in md and "x…" in md
    assert "| test | 1.00 | Instruction test 1.0 |" in md and "| 1.500 | 1.250 | 1.000 | 1.216 |" in md
    rows = _table_rows(md, "latent")
    assert [r[0] for r in rows] == ["3", "7", "40", "9"]  # CONCEPT100 first, then best score first
    assert rows[1][2] == "–" and "explanation 3 \\| pipes" in rows[0][5]


def test_missing_values_and_too_small_groups(tmp_path):
    """µ missing everywhere, two SAEs (every group too small), no artefacts on disk: notes, no crash."""
    records = _records()[:2]
    for r in records:
        r["mu"] = None
    results = _results(records)
    results["tau_after"] = None
    results["selection"] = None
    results["timings"] = {"train": None}
    (tmp_path / "plots").mkdir()
    stale = tmp_path / "plots" / PLOT_FILES["mu_vs_g"]
    stale.write_bytes(PNG_MAGIC)
    path = write_report(tmp_path, results)
    md = path.read_text()
    assert "## 7. Stage timings" in md and "| train | – | – |" in md
    assert "No plot of µ against the steering score: no data to plot." in md
    assert "No plot of tau_b per axis group" in md and "No plot of the ΔTC distribution" in md
    assert "No steering generations found" in md and "No AutoInterp explanations found" in md
    assert not stale.exists()  # a plot with no data now is removed, not left stale
    assert (tmp_path / "plots" / PLOT_FILES["selection"]).exists()  # g is there: the bars are drawn

    # pooled tau exists but every group is too small: plotted pooled only, the groups named
    records = [_records()[i] for i in (0, 1, 3, 4)]  # 2 per architecture, 2 per level
    results = _results(records)
    md = write_report(tmp_path, results).read_text()
    assert results["tau"]["axes"]["A"]["groups"]["topk"]["status"] == "too small"
    assert "Groups without a statistic:" not in md  # every group is too few: the table shows them as such
    assert "| topk | 2 | too few (n = 2) | – | – | – |" in md
    # 3 SAEs with µ: too few to test, so nothing is plotted, and the report says why
    assert "No plot of tau_b per axis group: no group of 8 or more SAEs has a statistic (" in md
    assert "pooled (too few (n = 3))" in md  # records[3] has no µ


def test_malformed_results_give_notes():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        results = {"records": [{"model": "m", "sae_dir": 5}], "tau": {"overall": {"status": "ok"}, "axes": 3},
                   "selection": {"groups": {"m": {}}}}
        md = write_report(Path(d), results).read_text()
    assert "Table 1 could not be rendered" in md and "selection tables could not be rendered" in md


def test_import_does_not_load_matplotlib():
    code = "import sys, jaxsae.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
