"""Selection tiers on hand-built score arrays: top-K UP/DOWN, tail quantiles, size-matched output
score tiers, and the choice of the best tier (on dev, or the paper's best-by-evaluation variant)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsae.select import CHOICE_LABELS, QUANTILES, TOP_K, choose_tier, dtc_tiers, size_matched_tiers

# ten candidate features (ids 100..109) with distinct ΔC scores
FEATS = np.arange(100, 110)
DTC = np.array([0.5, -1.0, 2.0, 0.0, -3.0, 1.0, 0.1, -0.2, 0.3, -0.4])
# by ΔC descending: 102 (2.0), 105 (1.0), 100 (0.5), 108 (0.3), 106 (0.1), 103, 107, 109, 101, 104 (-3.0)
UP_ORDER = [102, 105, 100, 108, 106, 103, 107, 109, 101, 104]


def as_sets(tiers):
    return {k: sorted(int(x) for x in v) for k, v in tiers.items()}


def test_constants_are_the_papers():
    assert TOP_K == (1, 2, 3, 4, 5)
    assert QUANTILES == (0.99, 0.95, 0.90, 0.80)


def test_top_k_up_and_down():
    t = dtc_tiers(DTC, FEATS)
    for k in range(1, 6):
        assert list(t[f"up_top{k}"]) == UP_ORDER[:k]  # ordered by ΔC, largest first
        assert list(t[f"down_top{k}"]) == UP_ORDER[::-1][:k]  # most negative first
    assert list(t["down_top3"]) == [104, 101, 109]


def test_tail_quantiles_small_pool():
    # n = 10: the q-quantile sits at index q·9 of the sorted scores (linear interpolation), so
    # q ∈ {0.99, 0.95, 0.90} keep only the extreme (index 8.91 / 8.55 / 8.1 -> above the 2nd largest)
    # and q = 0.80 (index 7.2) keeps the two largest; DOWN mirrors it.
    t = as_sets(dtc_tiers(DTC, FEATS))
    for q in ("0.99", "0.95", "0.90"):
        assert t[f"up_q{q}"] == [102]
        assert t[f"down_q{q}"] == [104]
    assert t["up_q0.80"] == [102, 105]
    assert t["down_q0.80"] == [101, 104]
    assert set(t) == {f"{d}_top{k}" for d in ("up", "down") for k in TOP_K} | {
        f"{d}_q{q:.2f}" for d in ("up", "down") for q in QUANTILES}


def test_tail_quantiles_pool_of_100():
    # scores 0..99 in shuffled order: the tails hold 1 / 5 / 10 / 20 features (the CONCEPT100 pool size)
    rng = np.random.default_rng(0)
    scores = rng.permutation(100).astype(np.float64)
    feats = np.arange(1000, 1100)
    t = as_sets(dtc_tiers(scores, feats))
    for q, n in ((0.99, 1), (0.95, 5), (0.90, 10), (0.80, 20)):
        assert t[f"up_q{q:.2f}"] == sorted(int(f) for f in feats[scores >= 100 - n])
        assert t[f"down_q{q:.2f}"] == sorted(int(f) for f in feats[scores < n])


def test_tail_quantiles_from_a_reference_distribution():
    # the pool (4 steered concepts) sits inside a reference of 1000 scored latents 0..999 (plus a NaN):
    # q tails take the reference's thresholds (0.99 -> >= 989.01, 0.80 -> >= 799.2; DOWN mirrored),
    # top-K stays within the pool
    ref = np.append(np.arange(1000, dtype=np.float64), np.nan)
    pool_scores = np.array([995.0, 850.0, 500.0, 3.0])
    pool = np.array([7, 8, 9, 10])
    t = as_sets(dtc_tiers(pool_scores, pool, reference=ref))
    assert t["up_q0.99"] == [7] and t["up_q0.95"] == [7] and t["up_q0.90"] == [7] and t["up_q0.80"] == [7, 8]
    assert t["down_q0.99"] == [10] and t["down_q0.80"] == [10]
    assert t["up_top2"] == [7, 8] and t["down_top1"] == [10]
    # a pool in the middle of the reference has no tail tiers at all (empty tiers are dropped)
    t = dtc_tiers(np.array([400.0, 600.0]), np.array([1, 2]), reference=ref)
    assert not [k for k in t if "_q" in k] and set(t) == {"up_top1", "up_top2", "down_top1", "down_top2"}
    # the pool's own scores as reference = no reference
    assert as_sets(dtc_tiers(DTC, FEATS, reference=DTC)) == as_sets(dtc_tiers(DTC, FEATS))
    with pytest.raises(ValueError, match="no finite"):
        dtc_tiers(DTC, FEATS, reference=np.array([np.nan]))


@pytest.mark.parametrize("n", [11, 21, 31])
def test_tails_are_mirrored_exactly(n):
    # np.quantile(s, 1 - q) rounds 1 - q (1 - 0.9 = 0.0999…) and used to drop a boundary member of
    # the DOWN tail that the UP tail of the mirrored scores keeps (n = 11, q = 0.8: 3 up, 2 down)
    s = np.arange(n, dtype=np.float64)
    up = dtc_tiers(s, np.arange(n))
    down = dtc_tiers(-s, np.arange(n))
    for q in QUANTILES:
        assert sorted(up[f"up_q{q:.2f}"]) == sorted(down[f"down_q{q:.2f}"])
        assert sorted(up[f"down_q{q:.2f}"]) == sorted(down[f"up_q{q:.2f}"])
    t = dtc_tiers(s, np.arange(n))
    assert len(t["up_q0.80"]) == len(t["down_q0.80"])


def test_small_pools_and_ties():
    # fewer candidates than K: only the top-K tiers that fit
    t = dtc_tiers(np.array([1.0, -1.0, 0.0]), np.array([7, 8, 9]))
    assert {k for k in t if "top" in k} == {"up_top1", "up_top2", "up_top3", "down_top1", "down_top2", "down_top3"}
    # ties keep pool order in both directions
    t = dtc_tiers(np.array([1.0, 1.0, -2.0, -2.0]), np.array([1, 2, 3, 4]))
    assert list(t["up_top1"]) == [1] and list(t["down_top1"]) == [3]
    # all equal: every quantile tail holds the whole pool
    t = dtc_tiers(np.zeros(4), np.array([1, 2, 3, 4]))
    assert as_sets(t)["up_q0.99"] == [1, 2, 3, 4] == as_sets(t)["down_q0.80"]
    assert dtc_tiers(np.array([]), np.array([], np.int64)) == {}


def test_non_finite_scores_are_left_out():
    scores = np.array([np.nan, 1.0, -1.0, np.inf, 0.5, -np.inf])
    feats = np.array([10, 11, 12, 13, 14, 15])
    t = dtc_tiers(scores, feats)
    assert list(t["down_top1"]) == [12] and list(t["up_top1"]) == [11]
    assert all(not set(v) & {10, 13, 15} for v in t.values())
    s = size_matched_tiers(scores, feats, {"a": 2})
    assert list(s["a"]) == [11, 14]
    with pytest.raises(ValueError, match="shape"):
        dtc_tiers(np.zeros(3), np.arange(4))


def test_size_matched_output_tiers_have_equal_sizes():
    out = np.array([0.05, 0.9, 0.0, 0.3, 0.7, 0.01, 0.2, 0.6, 0.1, 0.4])
    # by output score descending: 101, 104, 107, 109, 103, 106, 108, 100, 105, 102
    t_dtc = dtc_tiers(DTC, FEATS)
    sizes = {k: len(v) for k, v in t_dtc.items()}
    t_out = size_matched_tiers(out, FEATS, sizes)
    assert set(t_out) == set(t_dtc)
    assert all(len(t_out[k]) == len(t_dtc[k]) for k in t_dtc)
    assert list(t_out["up_top3"]) == [101, 104, 107]
    assert list(t_out["up_q0.80"]) == [101, 104]
    assert list(t_out["down_q0.99"]) == [101]
    assert size_matched_tiers(out, FEATS, {"none": 0, "all": 50})["all"].tolist() == [
        101, 104, 107, 109, 103, 106, 108, 100, 105, 102]
    assert "none" not in size_matched_tiers(out, FEATS, {"none": 0})


# per-feature steering scores on dev and test instructions
DEV = {1: 0.9, 2: 0.1, 3: 0.5, 4: 0.2}
TEST = {1: 0.2, 2: 0.8, 3: 0.6, 4: 0.3}
TIERS = {"a": np.array([1]), "b": np.array([2]), "c": np.array([1, 3]), "d": np.array([3, 4])}


def test_choose_tier_on_dev_reports_test():
    r = choose_tier(TIERS, DEV, TEST)
    # dev means: a 0.9, b 0.1, c 0.7, d 0.35 -> a; its test score 0.2
    assert r["tier"] == "a" and r["score"] == pytest.approx(0.2) and r["size"] == 1 and r["features"] == [1]
    assert r["choice"] == "dev" and "dev" in r["choice_label"] and "paper" not in r["choice_label"]
    rows = {row["tier"]: row for row in r["tiers"]}
    assert rows["c"]["dev"] == pytest.approx(0.7) and rows["c"]["test"] == pytest.approx(0.4)
    assert rows["d"]["dev"] == pytest.approx(0.35) and rows["d"]["test"] == pytest.approx(0.45)


def test_choose_tier_paper_variant_is_labelled():
    r = choose_tier(TIERS, DEV, TEST, choice="eval")
    # test means: a 0.2, b 0.8, c 0.4, d 0.45 -> b
    assert r["tier"] == "b" and r["score"] == pytest.approx(0.8)
    assert r["choice"] == "eval"
    assert "paper" in r["choice_label"] and "optimistic" in r["choice_label"]
    # the best-by-evaluation score is never below the held-out one
    assert r["score"] >= choose_tier(TIERS, DEV, TEST)["score"]
    with pytest.raises(ValueError, match="dev"):
        choose_tier(TIERS, DEV, TEST, choice="test")


def test_choose_tier_ties_missing_and_empty():
    # equal dev means: the smaller tier wins, then the first listed
    tiers = {"big": np.array([1, 2]), "small": np.array([3]), "small2": np.array([4])}
    dev = {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5}
    test = {1: 1.0, 2: 1.0, 3: 0.0, 4: 2.0}
    assert choose_tier(tiers, dev, test)["tier"] == "small"
    # features without scores are dropped from their tier; tiers left empty are skipped
    r = choose_tier({"x": np.array([1, 99]), "y": np.array([98])}, DEV, TEST)
    assert r["tier"] == "x" and r["features"] == [1] and [row["tier"] for row in r["tiers"]] == ["x"]
    assert choose_tier({"y": np.array([98])}, DEV, TEST) == {"tier": None, "score": None, "choice": "dev",
                                                             "choice_label": CHOICE_LABELS["dev"], "tiers": []}
    assert choose_tier({}, DEV, TEST, choice="eval")["tier"] is None


def test_selection_end_to_end_on_hand_scores():
    # ΔTC tiers and size-matched output tiers over the same pool, each chosen on dev
    dev = {int(f): float(s) for f, s in zip(FEATS, [0.1, 0.0, 1.0, 0.2, 0.0, 0.8, 0.3, 0.1, 0.2, 0.0])}
    test = {int(f): float(s) for f, s in zip(FEATS, [0.2, 0.1, 0.9, 0.1, 0.1, 0.7, 0.2, 0.0, 0.1, 0.1])}
    t_dtc = dtc_tiers(DTC, FEATS)
    r = choose_tier(t_dtc, dev, test)
    # up_top1 = {102}: dev 1.0, the best; ties with up_q0.99 etc. (same size 1): first listed wins
    assert r["tier"] == "up_top1" and r["features"] == [102] and r["score"] == pytest.approx(0.9)
    out = np.array([0.05, 0.9, 0.0, 0.3, 0.7, 0.01, 0.2, 0.6, 0.1, 0.4])
    r_out = choose_tier(size_matched_tiers(out, FEATS, {k: len(v) for k, v in t_dtc.items()}), dev, test)
    # output-score order 101, 104, 107, 109, 103, ...; sizes on offer 1..5 (and 1, 2 from the tails):
    # dev means of the prefixes 0, 0, 0.1/3, 0.1/4, 0.3/5 -> the top 5
    assert r_out["size"] == 5 and r_out["features"] == [101, 104, 107, 109, 103]
    assert r_out["score"] == pytest.approx(np.mean([0.1, 0.1, 0.0, 0.1, 0.1]))


def test_magnitude_ranking_orders_by_absolute_delta_c():
    """§4.1's ranking: top-K and tail quantiles of |ΔC|, whatever the sign."""
    t = dtc_tiers(DTC, FEATS, ranking="magnitude")
    # |ΔC|: 104 (3.0), 102 (2.0), 101 (1.0), 105 (1.0; after 101 in pool order), 100 (0.5), 109 (0.4) ...
    assert list(t["abs_top5"]) == [104, 102, 101, 105, 100]
    assert list(t["abs_top1"]) == [104]
    assert not any(k.startswith(("up_", "down_")) for k in t)
    # q = 0.80 of |ΔC| over ten values (index 7.2 of the sorted |ΔC|): the two largest magnitudes
    assert as_sets(t)["abs_q0.80"] == [102, 104]
    # thresholds from a reference distribution (e.g. every latent's ΔC)
    ref = np.concatenate([DTC, np.zeros(90)])
    assert as_sets(dtc_tiers(DTC, FEATS, ref, ranking="magnitude"))["abs_q0.90"] == sorted(
        int(f) for f, s in zip(FEATS, DTC) if abs(s) >= np.quantile(np.abs(ref), 0.9))
    with pytest.raises(ValueError, match="ranking"):
        dtc_tiers(DTC, FEATS, ranking="sideways")
