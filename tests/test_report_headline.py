"""The run's last lines (jaxsae.report.headline) from hand-made results.json, and the pooled
selection lift with its paired bootstrap CI (jaxsae.analysis.lift_ci)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsae.analysis import TauSettings, lift_ci
from jaxsae.report.headline import headline_lines, headline_rows

VALIDITY = {
    "measured": True, "min_digit_mass": 0.5,
    "criteria": {
        "concept": {"auroc": 0.91, "ci_low": 0.80, "ci_high": 0.99, "ci_level": 0.95, "n_pos": 24, "n_neg": 24,
                    "digit_mass": 0.9},
        "fluency": {"auroc": 0.55, "ci_low": 0.38, "ci_high": 0.71, "ci_level": 0.95, "n_pos": 24, "n_neg": 24,
                    "digit_mass": 0.9},
    },
}


def results(overall: dict, **extra) -> dict:
    return {"tau": {"n": overall.get("n"), "settings": {"ci_level": 0.9}, "overall": overall,
                    "Psi": {"value": 0.125, "ci_bootstrap": [-0.05, 0.3]}},
            "selection_lift": {"dtc": {"lift_pct": 25.0, "ci": [3.0, 51.5], "n": 12, "ci_level": 0.9}},
            **extra}


def rows(res: dict) -> dict:
    return {r[0]: r[1:] for r in headline_rows(res)}


def test_every_headline_statistic_with_its_uncertainty_and_n():
    ok = {"status": "ok", "n": 12, "tau_b": 0.25, "p_perm": 0.04, "ci": [-0.1, 0.6]}
    r = rows(results(ok, judge_validity=VALIDITY))
    assert r["τ_b(µ, g) pooled"] == ("+0.250", "90% CI [-0.10, +0.60], p = 0.04", "n = 12")
    assert r["Ψ"] == ("+0.125", "90% CI [-0.05, +0.30]", "n = 12 SAEs")
    assert r["lift of ΔTC selection"] == ("+25.0 %", "90% CI [+3.0, +51.5]", "n = 12 SAEs")
    assert r["judge AUROC: concept"] == ("0.91", "95% CI [0.80, 0.99]", "n = 24/24")
    lines = headline_lines(results(ok, judge_validity=VALIDITY))
    assert lines[0].split() == ["statistic", "value", "uncertainty", "n"]
    assert lines[-1] == ("judge: cannot tell fluency apart (CI includes 0.5 or AUROC ≤ 0.5); g is not interpretable")
    good = {**VALIDITY, "criteria": {"concept": VALIDITY["criteria"]["concept"]}}
    assert headline_lines(results(ok, judge_validity=good))[-1].startswith("judge: separates every measured criterion")


@pytest.mark.parametrize("n", [3, 5, 7])
def test_groups_too_small_to_test_show_no_p_value_nor_ci(n):
    small = {"status": "ok", "n": n, "tau_b": -0.95, "p_perm": 0.033, "ci": [-1.0, -0.71]}
    assert rows(results(small))["τ_b(µ, g) pooled"] == (f"too few (n = {n})", "", f"n = {n}")
    text = "\n".join(headline_lines(results(small)))
    assert "0.033" not in text and "-0.95" not in text
    assert rows(results({"status": "too small", "n": 2}))["τ_b(µ, g) pooled"] == ("too small (n = 2)", "", "n = 2")


def test_missing_parts_say_so_instead_of_failing():
    r = rows({})
    assert r["τ_b(µ, g) pooled"][0] == "–" and r["Ψ"][0].startswith("not available")
    assert r["judge validity"][0] == "not measured"
    skipped = rows({"judge_validity": {"measured": False, "reason": "validity.skip = true"}})
    assert skipped["judge validity"][:2] == ("not measured", "validity.skip = true")
    assert headline_lines({"tau": None, "selection_lift": {"dtc": None}})  # malformed parts: still lines


def test_lift_ci_is_the_ratio_of_paired_means_with_a_bootstrap_interval():
    recs = [{"g": 1.0, "g_dtc": 2.0, "g_output": 1.0}, {"g": 1.0, "g_dtc": 1.0, "g_output": None},
            {"g": 2.0, "g_dtc": 2.0, "g_output": 3.0}, {"g": None, "g_dtc": 9.0, "g_output": 9.0}]
    res = lift_ci(recs, settings=TauSettings(n_boot=2000, seed=0))
    assert res["dtc"]["n"] == 3 and res["dtc"]["lift_pct"] == pytest.approx(100 * (5 / 4 - 1))
    assert res["output"]["n"] == 2 and res["output"]["lift_pct"] == pytest.approx(100 * (4 / 3 - 1))
    # the interval: percentiles of the same ratio over paired resamples of the 3 SAEs
    g, s = np.array([1.0, 1.0, 2.0]), np.array([2.0, 1.0, 2.0])
    idx = np.random.default_rng([0, 2]).integers(0, 3, size=(2000, 3))
    boot = 100 * (s[idx].mean(1) / g[idx].mean(1) - 1)
    assert res["dtc"]["ci"] == pytest.approx(list(np.quantile(boot, [0.025, 0.975])))
    lo, hi = res["dtc"]["ci"]
    assert lo <= res["dtc"]["lift_pct"] <= hi and lo >= 0.0 and hi <= 100.0
    one = lift_ci(recs[:1])
    assert one["dtc"]["n"] == 1 and one["dtc"]["ci"] is None and one["dtc"]["lift_pct"] == pytest.approx(100.0)
