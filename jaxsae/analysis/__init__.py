"""Rank agreement between interpretability µ and steering utility g (Kendall tau_b, psi, Psi) with
permutation p-values and bootstrap intervals, and the feature-selection summaries.

    from jaxsae.analysis import rank_agreement, selection_summary, selection_rank, TauSettings
    table = rank_agreement(records, x="mu", y="g", settings=TauSettings(n_perm=9999, seed=0))

``records``: one dict per SAE (model, architecture, level, mu, g, g_output, g_dtc, ...). Every
output is JSON-serialisable; groups too small for a statistic say so instead of holding NaN.
"""

from .kendall import TauSettings, kendall_tau_b, tau_b_batch, tau_group
from .levels import LEVEL_GROUPINGS, group_levels
from .readings import compare_readings
from .rank import DEFAULT_AXES, psi_from_taus, rank_agreement
from .selection import DEFAULT_METHODS, gain_pct, lift_ci, selection_rank, selection_summary

__all__ = [
    "DEFAULT_AXES",
    "DEFAULT_METHODS",
    "LEVEL_GROUPINGS",
    "TauSettings",
    "compare_readings",
    "gain_pct",
    "group_levels",
    "lift_ci",
    "kendall_tau_b",
    "psi_from_taus",
    "rank_agreement",
    "selection_rank",
    "selection_summary",
    "tau_b_batch",
    "tau_group",
]
