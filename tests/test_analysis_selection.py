"""Selection summaries: per-model means, lifts, and tau_b of µ vs post-selection score and gain."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats

from jaxsae.analysis import TauSettings, gain_pct, selection_rank, selection_summary
from jaxsae.analysis import paper

FAST = TauSettings(n_perm=199, n_boot=199, seed=0)
TABLE2_LIFT_PCT = {"Gemma-2-2B": 146.6, "Qwen-2.5-3B": 133.3, "Gemma-2-9B": 103.5}
"""The paper's Fig. 8: lift of ΔTC over no selection (%), which Table 2's scores must reproduce."""


def _table2_records():
    """Two SAEs per model whose means are the paper's Table 2 values."""
    recs = []
    for model, v in paper.TABLE2_STEERING.items():
        for d in (-0.01, 0.01):
            recs.append({"model": model, "architecture": "TopK", "level": 50, "mu": 0.5,
                         "g": v["none"] + d, "g_output": v["output"] - d, "g_dtc": v["dtc"] + 2 * d})
    return recs


def test_table2_lifts_are_ratios_of_means():
    res = selection_summary(_table2_records())
    json.dumps(res, allow_nan=False)
    for model, v in paper.TABLE2_STEERING.items():
        g = res["groups"][model]
        assert g["n"] == {"none": 2, "output": 2, "dtc": 2}
        assert g["mean"]["dtc"] == pytest.approx(v["dtc"])
        assert g["lift_pct"]["dtc"] == pytest.approx(TABLE2_LIFT_PCT[model], abs=0.05)
        assert g["lift_pct"]["output"] == pytest.approx(100 * (v["output"] / v["none"] - 1))
        assert g["relative_pct"]["dtc_over_output"] == pytest.approx(100 * (v["dtc"] / v["output"] - 1))
    # protocol.md §6: output lifts +75.2 / +70.8 / +79.6; ΔTC over output +40.8 / +36.6 / +13.3
    # (mean ≈ 30.2); mean percentage-point difference ≈ 52.6 (the paper's "52.52 %")
    lifts = [res["groups"][m]["lift_pct"]["output"] for m in paper.TABLE2_STEERING]
    assert lifts == pytest.approx([75.2, 70.8, 79.6], abs=0.05)
    assert res["average"]["relative_pct"]["dtc_over_output"] == pytest.approx(30.2, abs=0.1)
    assert res["average"]["pp_lift_difference"]["dtc_minus_output"] == pytest.approx(52.6, abs=0.1)


def test_summary_by_architecture_and_missing_values():
    recs = [
        {"model": "a", "architecture": "TopK", "g": 0.1, "g_dtc": 0.3},
        {"model": "a", "architecture": "TopK", "g": 0.3, "g_dtc": None},
        {"model": "a", "architecture": "ReLU", "g": 0.0, "g_dtc": 0.2},
    ]
    res = selection_summary(recs, by="architecture", methods={"none": "g", "dtc": "g_dtc"})
    json.dumps(res, allow_nan=False)
    assert list(res["groups"]) == ["ReLU", "TopK"]
    topk = res["groups"]["TopK"]
    assert topk["n"] == {"none": 2, "dtc": 1}
    assert topk["mean"] == {"none": pytest.approx(0.2), "dtc": pytest.approx(0.3)}
    assert topk["lift_pct"]["dtc"] == pytest.approx(50.0)
    assert res["groups"]["ReLU"]["lift_pct"]["dtc"] is None  # baseline mean 0: no lift
    assert res["average"]["lift_pct"]["dtc"] == pytest.approx(50.0)


def test_gain_and_rank_after_selection():
    assert gain_pct(0.3, 0.2) == pytest.approx(50.0)
    assert gain_pct(0.3, 0.0) is None and gain_pct(None, 0.2) is None
    rng = np.random.default_rng(0)
    recs = []
    for m in ("m0", "m1"):
        for a in ("TopK", "ReLU", "Gated"):
            for lv in (50, 160, 520):
                g = float(rng.choice([0.0625, 0.125, 0.25]))  # 1.5 g / g is exact
                recs.append({"model": m, "architecture": a, "level": lv, "mu": float(rng.random()),
                             "g": g, "g_output": g * 1.5, "g_dtc": float(rng.uniform(0.1, 0.5))})
    recs[0]["g"] = 0.0  # gain undefined for this SAE
    res = selection_rank(recs, settings=FAST)
    json.dumps(res, allow_nan=False)
    assert set(res["post"]) == {"output", "dtc"} and set(res["gain"]) == {"output", "dtc"}
    mu = np.array([r["mu"] for r in recs])
    dtc = np.array([r["g_dtc"] for r in recs])
    assert res["post"]["dtc"]["overall"]["tau_b"] == pytest.approx(scipy.stats.kendalltau(mu, dtc).statistic)
    assert res["gain"]["dtc"]["n_dropped"] == 1 and res["gain"]["dtc"]["n"] == len(recs) - 1
    gain = np.array([100 * (r["g_dtc"] - r["g"]) / r["g"] for r in recs[1:]])
    assert res["gain"]["dtc"]["overall"]["tau_b"] == pytest.approx(
        scipy.stats.kendalltau(mu[1:], gain).statistic)
    # a constant gain (every output-score run is exactly 1.5 g): "constant", not NaN
    assert res["gain"]["output"]["overall"]["status"] == "constant"
