"""Sparsity levels pair the i-th sparsest SAE of every architecture (protocol §3): the L1 grids
run in descending order beside ascending target L0; optionally levels follow the measured-L0 rank
within each architecture."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsae.analysis import group_levels
from jaxsae.report.markdown import levels_note
from jaxsae.train.spec import sweep_from_l0, sweep_from_levels


def test_l1_grids_pair_sparsest_with_smallest_target_l0():
    specs = sweep_from_levels(["relu", "gated", "topk"], range(6))
    by = {a: [s.sparsity for s in specs if s.arch == a] for a in ("relu", "gated", "topk")}
    assert by["topk"] == [50, 80, 160, 320, 520, 820]
    assert by["relu"] == [0.06, 0.04, 0.03, 0.02, 0.015, 0.012]  # a larger L1 coefficient is sparser
    assert by["gated"] == [0.08, 0.06, 0.04, 0.024, 0.018, 0.012]
    assert np.all(np.diff(by["relu"]) < 0) and np.all(np.diff(by["gated"]) < 0)
    # the L0 form of a sweep pairs the same way: L0 50 <-> the largest coefficient
    l0 = sweep_from_l0(["relu", "jumprelu"], [50, 820])
    assert [s.sparsity for s in l0 if s.arch == "relu"] == [0.06, 0.012]


def _rec(arch, level, l0, model="m"):
    return {"model": model, "architecture": arch, "level": level, "l0": l0, "level_label": f"{arch}{level}"}


def test_l0_rank_grouping_reorders_within_each_architecture():
    recs = [_rec("relu", 0, 90.0), _rec("relu", 1, 40.0), _rec("relu", 3, 60.0),
            _rec("topk", 0, 50.0), _rec("topk", 1, 80.0), _rec("topk", 3, 320.0),
            _rec("gated", 0, 10.0), _rec("gated", 1, None)]  # an unknown L0: the group keeps its grid levels
    grid = group_levels(recs, "grid")
    assert [r["level"] for r in grid] == [r["level"] for r in recs]
    assert all(r["grid_level"] == r["level"] for r in grid)
    ranked = group_levels(recs, "l0_rank")
    relu = {r["grid_level"]: r["level"] for r in ranked if r["architecture"] == "relu"}
    assert relu == {1: 0, 3: 1, 0: 3}  # L0 40 < 60 < 90 takes levels 0, 1, 3
    assert [r["level"] for r in ranked if r["architecture"] == "topk"] == [0, 1, 3]
    assert [r["level"] for r in ranked if r["architecture"] == "gated"] == [0, 1]
    assert recs[0]["level"] == 0  # inputs untouched
    with pytest.raises(ValueError, match="grouping"):
        group_levels(recs, "nope")


def test_report_names_the_grouping():
    recs = [_rec("relu", 0, 40.0)]
    assert "l0_rank" in levels_note(recs, "l0_rank")
    assert "grid" in levels_note(recs, "grid") and "descending" in levels_note(recs)


def test_levels_are_shown_with_their_measured_l0():
    recs = [_rec("relu", 0, 41.2), _rec("topk", 0, 50.0), _rec("gated", 0, 77.0), _rec("relu", 1, 80.4),
            _rec("gated", 1, None)]
    text = levels_note(recs)
    assert "(measured L0 41–77, n = 3)" in text and "(measured L0 80, n = 1)" in text
