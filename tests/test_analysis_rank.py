"""Kendall tau_b, psi/Psi, permutation p-values and bootstrap intervals (jaxsae.analysis)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import scipy.stats

from jaxsae.analysis import TauSettings, kendall_tau_b, psi_from_taus, rank_agreement, tau_b_batch
from jaxsae.analysis import paper
from jaxsae.analysis.kendall import bootstrap_ci, permutation_test, tau_group
from jaxsae.analysis.rank import _psi_over_groups
from jaxsae.errors import UserError

FAST = TauSettings(n_perm=999, n_boot=999, seed=0)


def _naive_tau_b(x, y):
    """Direct transcription: (P - Q) / sqrt((P + Q + T_x_only) (P + Q + T_y_only))."""
    P = Q = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tx += 1
        elif dy == 0:
            ty += 1
        elif dx == dy:
            P += 1
        else:
            Q += 1
    return (P - Q) / math.sqrt((P + Q + tx) * (P + Q + ty))


def test_hand_computed_taus():
    # one discordant pair out of 6: (5 - 1) / 6
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # P=4, Q=0, one pair tied only in x, one only in y: 4 / sqrt(5 * 5)
    x, y = [1, 1, 2, 3], [1, 2, 2, 3]
    assert kendall_tau_b(x, y) == pytest.approx(0.8)
    assert _naive_tau_b(np.array(x), np.array(y)) == pytest.approx(0.8)
    assert tau_b_batch(np.array(x, float), np.array(y, float)) == pytest.approx(0.8)
    assert kendall_tau_b([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)


def test_vectorised_tau_matches_scipy_and_naive():
    rng = np.random.default_rng(1)
    for n in (3, 7, 18, 30, 90):
        x_bn = rng.integers(0, 6, size=(5, n)).astype(float)  # heavy ties
        y_bn = rng.normal(size=(5, n)).round(1)
        got = tau_b_batch(x_bn, y_bn)
        for b in range(5):
            ref = scipy.stats.kendalltau(x_bn[b], y_bn[b], variant="b").statistic
            if np.isnan(ref):
                assert np.isnan(got[b])
            else:
                assert got[b] == pytest.approx(ref, abs=1e-12)
                assert got[b] == pytest.approx(_naive_tau_b(x_bn[b], y_bn[b]), abs=1e-12)
    # broadcasting a shared x against many y's, and a constant row -> NaN
    x = rng.normal(size=10)
    y_bn = rng.normal(size=(4, 10))
    y_bn[2] = 1.0
    got = tau_b_batch(x, y_bn)
    assert got.shape == (4,) and np.isnan(got[2])
    assert got[0] == pytest.approx(scipy.stats.kendalltau(x, y_bn[0]).statistic)


def test_paper_table1_psi_arithmetic_and_uncertainty():
    """psi = mean of group taus; the paper's SE/CI come from the group taus alone."""
    for table in (paper.TABLE1_MU_VS_G, paper.TABLE3_MU_VS_GAIN):
        psis = []
        for axis in "ABC":
            taus = np.array([g["tau_b"] for g in table[axis]["groups"].values()])
            psi = psi_from_taus(taus)
            assert psi == pytest.approx(table[axis]["psi"], abs=6e-5)
            psis.append(psi)
        assert np.mean(psis) == pytest.approx(table["Psi"], abs=1e-4)
    # Table 1 spelled out: psi_A = mean(0.3203, -0.2026, 0.4248, 0.3595, 0.3856) = 0.2575
    assert psi_from_taus([0.3203, -0.2026, 0.4248, 0.3595, 0.3856]) == pytest.approx(0.2575, abs=1e-4)
    # SE = sd(ddof=1)/sqrt(k) and the percentile CI of the resampled mean reproduce Table 1
    settings = TauSettings(n_boot=20000)
    for axis in "ABC":
        t = paper.TABLE1_MU_VS_G[axis]
        taus = np.array([g["tau_b"] for g in t["groups"].values()])
        u = _psi_over_groups(taus, settings, np.random.default_rng(0))
        assert u["se_over_groups"] == pytest.approx(t["se"], abs=2e-4)
        assert u["ci_over_groups"] == pytest.approx(t["ci"], abs=3e-3)
    # with 3 groups the 2.5 % / 97.5 % points are exactly the min and max (1/27 > 2.5 %)
    c = paper.TABLE1_MU_VS_G["C"]
    taus = np.array([g["tau_b"] for g in c["groups"].values()])
    assert _psi_over_groups(taus, settings, np.random.default_rng(3))["ci_over_groups"] == c["ci"]


def _records(seed=0, n_models=3, archs=("BatchTopK", "Gated", "JumpReLU", "ReLU", "TopK"),
             levels=(50, 80, 160, 320, 520, 820), noise=1.0):
    rng = np.random.default_rng(seed)
    out = []
    for m in range(n_models):
        for a in archs:
            for lv in levels:
                mu = rng.random()
                out.append({"model": f"m{m}", "architecture": a, "level": lv, "mu": mu,
                            "g": 0.5 * mu + noise * rng.random()})
    return out


def test_rank_agreement_against_direct_computation():
    recs = _records()
    res = rank_agreement(recs, settings=FAST)
    json.dumps(res, allow_nan=False)
    mu = np.array([r["mu"] for r in recs])
    g = np.array([r["g"] for r in recs])
    assert res["n"] == 90 and res["n_dropped"] == 0
    assert res["overall"]["tau_b"] == pytest.approx(scipy.stats.kendalltau(mu, g).statistic)
    psis = []
    for axis, key in (("A", "architecture"), ("B", "level"), ("C", "model")):
        entry = res["axes"][axis]
        assert entry["key"] == key
        taus = []
        for name, stats in entry["groups"].items():
            sel = np.array([str(r[key]) == name for r in recs])
            ref = scipy.stats.kendalltau(mu[sel], g[sel]).statistic
            assert stats["tau_b"] == pytest.approx(ref)
            assert stats["n"] == sel.sum()
            lo, hi = stats["ci"]
            assert lo <= stats["tau_b"] <= hi
            taus.append(ref)
        assert entry["psi"] == pytest.approx(np.mean(taus))
        assert entry["n_groups_used"] == len(taus)
        assert entry["se_over_groups"] == pytest.approx(np.std(taus, ddof=1) / math.sqrt(len(taus)))
        assert entry["se_bootstrap"] > 0 and entry["ci_bootstrap"][0] < entry["ci_bootstrap"][1]
        psis.append(entry["psi"])
    assert list(res["axes"]["B"]["groups"]) == ["50", "80", "160", "320", "520", "820"]  # numeric order
    assert res["Psi"]["value"] == pytest.approx(np.mean(psis))
    lo, hi = res["Psi"]["ci_bootstrap"]
    assert lo < res["Psi"]["value"] < hi


def test_too_small_and_constant_groups_are_reported_not_nan():
    recs = _records(n_models=1, archs=("TopK", "ReLU"), levels=(50, 80, 160))
    recs.append({"model": "m0", "architecture": "Gated", "level": 50, "mu": 0.3, "g": 0.2})
    recs.append({"model": "m0", "architecture": "Gated", "level": 80, "mu": 0.4, "g": 0.1})
    for lv in (50, 80, 160):  # a constant-mu architecture
        recs.append({"model": "m0", "architecture": "JumpReLU", "level": lv, "mu": 0.5, "g": lv / 1000})
    recs.append({"model": "m0", "architecture": "TopK", "level": 999, "mu": float("nan"), "g": 0.1})
    res = rank_agreement(recs, settings=FAST)
    json.dumps(res, allow_nan=False)  # no NaN anywhere
    assert res["n_dropped"] == 1
    groups = res["axes"]["A"]["groups"]
    assert groups["Gated"] == {"status": "too small", "n": 2}
    assert groups["JumpReLU"] == {"status": "constant", "n": 3}
    assert groups["TopK"]["status"] == "ok"
    assert res["axes"]["A"]["n_groups_used"] == 2  # ReLU and TopK
    # one model: psi_C is that model's tau, with no spread across groups
    c = res["axes"]["C"]
    assert c["psi"] == pytest.approx(c["groups"]["m0"]["tau_b"]) and c["se_over_groups"] is None
    # an axis with no usable group, and a pool too small for anything
    tiny = [{"model": "a", "architecture": "x", "level": 1, "mu": 0.1, "g": 0.2},
            {"model": "b", "architecture": "y", "level": 2, "mu": 0.2, "g": 0.1}]
    res = rank_agreement(tiny, settings=FAST)
    json.dumps(res, allow_nan=False)
    assert res["overall"] == {"status": "too small", "n": 2}
    assert res["axes"]["A"]["status"] == "too small" and res["axes"]["A"]["psi"] is None
    assert res["Psi"]["value"] is None


def test_missing_axis_key_is_a_user_error():
    with pytest.raises(UserError, match="'level'"):
        rank_agreement([{"model": "a", "architecture": "x", "mu": 1.0, "g": 1.0}], settings=FAST)


def test_permutation_pvalue_exact_matches_scipy_exact_null():
    rng = np.random.default_rng(5)
    for n in (5, 7):
        x, y = rng.normal(size=n), rng.normal(size=n)
        p, null, exact = permutation_test(x, y, math.factorial(n), rng)
        assert exact and null.size == math.factorial(n)
        ref = scipy.stats.kendalltau(x, y, method="exact").pvalue
        assert p == pytest.approx(ref, abs=1e-12)
        # the null by hand: tau_b of y in every order against x
        by_hand = sorted(kendall_tau_b(x, y[list(q)]) for q in itertools.permutations(range(n)))
        np.testing.assert_allclose(np.sort(null), by_hand, atol=1e-12)


def test_perfect_concordance_n8_has_tiny_pvalue():
    x = np.arange(8.0)
    y = x**2
    exact = tau_group(x, y, TauSettings(n_perm=40320, n_boot=200), np.random.default_rng(0))
    assert exact["tau_b"] == pytest.approx(1.0) and exact["p_exact"]
    assert exact["p_perm"] == pytest.approx(2 / math.factorial(8))  # only the identity and reversal
    mc = tau_group(x, y, TauSettings(n_perm=999, n_boot=200), np.random.default_rng(0))
    assert not mc["p_exact"] and 1 / 1000 <= mc["p_perm"] <= 3 / 1000
    # the bootstrap distribution is degenerate (every resample has tau = 1): percentile fallback
    assert mc["ci"] == pytest.approx([1.0, 1.0]) and mc["ci_method"] == "percentile"
    # independent data: a large p-value, inside (0, 1]
    rng = np.random.default_rng(2)
    ind = tau_group(rng.normal(size=30), rng.normal(size=30), FAST, rng)
    assert 0.01 < ind["p_perm"] <= 1.0
    lo, hi = ind["perm_null_band"]
    assert -0.4 < lo < 0 < hi < 0.4


def test_bca_interval_equals_scipy_with_the_plain_statistic():
    """The vectorised statistic inside scipy's BCa gives the same interval as scipy.kendalltau."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=14), rng.normal(size=14)
    y = 0.6 * x + y
    s = TauSettings(n_boot=400)
    ours = bootstrap_ci(x, y, s, np.random.default_rng(11))
    ref = scipy.stats.bootstrap(
        (x, y), lambda a, b: scipy.stats.kendalltau(a, b).statistic, paired=True,
        vectorized=False, n_resamples=400, method="BCa", rng=np.random.default_rng(11))
    assert ours["ci_method"] == "BCa"
    assert ours["ci"] == pytest.approx([ref.confidence_interval.low, ref.confidence_interval.high])
    assert ours["se"] == pytest.approx(ref.standard_error)


def test_determinism_with_seed():
    recs = _records(seed=3)
    a = rank_agreement(recs, settings=FAST)
    b = rank_agreement(list(reversed(recs)), settings=FAST)  # order of records does not matter
    assert a == b
    c = rank_agreement(recs, settings=TauSettings(n_perm=999, n_boot=999, seed=1))
    assert c["overall"]["tau_b"] == a["overall"]["tau_b"]
    assert c["overall"]["ci"] != a["overall"]["ci"]


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_perm_null_band_equals_the_quantiles_of_every_permutation(level):
    """The permutation null band is the central ``ci_level`` interval (numpy's linear quantiles) of
    tau_b over every reordering of y, computed here by scipy on each permutation; one group without
    ties and one with ties in x and y (n = 7: 5040 permutations)."""
    rng = np.random.default_rng(4)
    cases = [(rng.normal(size=7), rng.normal(size=7)),
             (np.array([1.0, 2, 2, 3, 4, 4, 5]), np.array([3.0, 1, 4, 1, 5, 9, 2]))]
    for x, y in cases:
        taus = [scipy.stats.kendalltau(x, y[list(p)]).statistic for p in itertools.permutations(range(len(y)))]
        a = (1 - level) / 2
        want = np.quantile(taus, [a, 1 - a])
        got = tau_group(x, y, TauSettings(n_perm=math.factorial(len(x)), n_boot=50, ci_level=level),
                        np.random.default_rng(0))
        assert got["p_exact"]
        assert got["perm_null_band"] == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert want[0] < -0.2 and want[1] > 0.2  # a band wide enough that a shifted quantile moves it
