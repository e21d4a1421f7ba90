"""The comparison of the three ΔTC readings (Kendall tau_b between their rankings, share of
ΔC = 0, selection lift) and the report's protocol-choice lines."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from jaxsae.analysis import compare_readings
from jaxsae.report import write_report
from jaxsae.report.markdown import choices_note, readings_table


def _per_sae():
    r = np.random.default_rng(0)
    out = []
    for i in range(3):
        a = r.standard_normal(50)
        b = np.where(r.random(50) < 0.4, 0.0, a + 0.5 * r.standard_normal(50))
        bp = 1.2 * b
        rec = {"g": 0.5 + 0.1 * i, "g_dtc_by_reading": {"A": 0.6 + 0.1 * i, "B": 0.7 + 0.1 * i, "B'": None}}
        out.append((rec, {"A": a, "B": b, "B'": bp}))
    return out


def test_compare_readings_by_hand():
    per = _per_sae()
    got = compare_readings(per, used="B")
    assert got["readings"] == ["A", "B", "B'"] and got["used"] == "B" and got["n_saes"] == 3
    want_tau = np.mean([scipy.stats.kendalltau(a["A"], a["B"], variant="b").statistic for _, a in per])
    assert got["tau_b"]["A|B"] == pytest.approx(want_tau)
    assert got["tau_b"]["B|B'"] == pytest.approx(1.0)  # B' is B scaled: the same ranking
    assert got["zero_share"]["B"] == pytest.approx(np.mean([np.mean(a["B"] == 0) for _, a in per]))
    assert got["zero_share"]["A"] == 0.0
    assert got["lift"]["A"] == pytest.approx(0.1) and got["lift"]["B"] == pytest.approx(0.2)
    assert got["g_selected"]["B'"] is None and got["lift"]["B'"] is None
    assert compare_readings([({}, {"B": np.zeros(3)})]) is None  # one reading: nothing to compare


def test_report_shows_readings_and_label_choices(tmp_path):
    cmp = compare_readings(_per_sae(), used="B")
    md = readings_table(cmp)
    assert "B (f's code × α) · used" in md and "share ΔC = 0" in md and "lift over g" in md
    results = {"sweep": "t", "records": [], "level_grouping": "grid", "random_labels": "negative",
               "select": {"reading": "B", "positions": "last", "mode": "additive", "ranking": "direction"},
               "templates": {"judge": {"path": "ax.toml", "sha256": "abcdef0123456789"}, "autointerp": None},
               "dtc_readings": cmp}
    note = choices_note(results)
    assert "ΔTC reading **B" in note and "**last**" in note and "labelled **negative** (SAEBench)" in note
    assert "judge prompts from ax.toml (sha256 abcdef012345)" in note
    text = write_report(tmp_path, results).read_text()
    assert "### ΔTC readings" in text and "Protocol choices:" in text and "B′ (f's code alone)" in text
