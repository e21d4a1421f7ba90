"""Markdown renderings of the rank and selection tables beside the paper's values."""

from __future__ import annotations

from jaxsae.analysis import TauSettings, paper, rank_agreement, selection_summary
from jaxsae.analysis.tables import rank_table_markdown, selection_table_markdown

from test_analysis_selection import TABLE2_LIFT_PCT


def test_tables_render_with_paper_values_and_statuses():
    recs = []
    for m in ("Gemma-2-2B", "Qwen-2.5-3B"):
        for k, a in enumerate(("TopK", "ReLU", "Gated")):
            for lv in (50, 80, 160):
                mu = (k * 7 + lv) % 11 / 10
                recs.append({"model": m, "architecture": a, "level": lv, "mu": mu,
                             "g": (mu * 3 + lv / 100) % 1, "g_dtc": 0.3 + mu / 10})
    recs.append({"model": "Gemma-2-2B", "architecture": "JumpReLU", "level": 50, "mu": 0.2, "g": 0.1})
    res = rank_agreement(recs, settings=TauSettings(n_perm=99, n_boot=99))
    md = rank_table_markdown(res, paper.TABLE1_MU_VS_G)
    assert "| JumpReLU | 1 | too small |" in md
    assert "0.3856" in md and "0.2575 (SE 0.1163, CI [0.0222, 0.3961])" in md  # paper's TopK, psi_A
    assert "**Ψ**" in md and all(line.startswith("|") for line in md.splitlines()[2:])
    assert "paper" not in rank_table_markdown(res)
    sel = selection_summary(recs, methods={"none": "g", "dtc": "g_dtc"})
    md = selection_table_markdown(sel, paper.TABLE2_STEERING)
    assert "| Qwen-2.5-3B |" in md and "0.399" in md and "**average**" in md
    # the paper's ΔTC lift (Fig. 8: +133.3 % for Qwen) beside ours, derived from its Table 2 means
    assert "paper dtc lift %" in md.splitlines()[0]
    qwen = next(line for line in md.splitlines() if line.startswith("| Qwen-2.5-3B |"))
    assert qwen.rstrip(" |").endswith("%.1f" % TABLE2_LIFT_PCT["Qwen-2.5-3B"])
