"""Published values of arXiv 2510.03659 v1 (Tables 1–3), for reports and checks.

Transcribed from the paper (https://arxiv.org/abs/2510.03659v1, Tables 1–3). Group keys follow the
paper's labels; ``level`` keys are the target L0 values.
"""

from __future__ import annotations

TABLE1_MU_VS_G = {
    "overall": {"n": 90, "tau_b": 0.2979, "ci": [0.1590, 0.4191]},
    "A": {
        "groups": {
            "BatchTopK": {"tau_b": 0.3203, "p": 0.0712},
            "Gated": {"tau_b": -0.2026, "p": 0.2577},
            "JumpReLU": {"tau_b": 0.4248, "p": 0.0160},
            "ReLU": {"tau_b": 0.3595, "p": 0.0392},
            "TopK": {"tau_b": 0.3856, "p": 0.0272},
        },
        "psi": 0.2575, "se": 0.1163, "ci": [0.0222, 0.3961],
    },
    "B": {
        "groups": {
            "50": {"tau_b": 0.5429, "p": 0.0034},
            "80": {"tau_b": 0.3524, "p": 0.0740},
            "160": {"tau_b": 0.1810, "p": 0.3821},
            "320": {"tau_b": 0.1810, "p": 0.3673},
            "520": {"tau_b": -0.2190, "p": 0.2837},
            "820": {"tau_b": -0.0476, "p": 0.8484},
        },
        "psi": 0.1651, "se": 0.1112, "ci": [-0.0286, 0.3587],
    },
    "C": {
        "groups": {
            "Gemma-2-2B": {"tau_b": 0.2184, "p": 0.0980},
            "Qwen-2.5-3B": {"tau_b": 0.4575, "p": 0.0008},
            "Gemma-2-9B": {"tau_b": 0.3057, "p": 0.0166},
        },
        "psi": 0.3272, "se": 0.0698, "ci": [0.2184, 0.4575],
    },
    "Psi": 0.2499,
}
"""Table 1: µ vs g before selection."""

TABLE2_STEERING = {
    "Gemma-2-2B": {"none": 0.133, "output": 0.233, "dtc": 0.328},
    "Qwen-2.5-3B": {"none": 0.171, "output": 0.292, "dtc": 0.399},
    "Gemma-2-9B": {"none": 0.142, "output": 0.255, "dtc": 0.289},
}
"""Table 2: mean steering score over the 30 SAEs per model (no selection / output score / ΔTC)."""

TABLE3_MU_VS_GAIN = {
    "overall": {"n": 90, "tau_b": -0.0692, "ci": [-0.2019, 0.0666]},
    "A": {
        "groups": {
            "BatchTopK": {"tau_b": -0.2288, "p": 0.200},
            "Gated": {"tau_b": 0.0327, "p": 0.879},
            "JumpReLU": {"tau_b": -0.0065, "p": 1.000},
            "ReLU": {"tau_b": -0.2810, "p": 0.110},
            "TopK": {"tau_b": 0.1242, "p": 0.499},
        },
        "psi": -0.0719, "se": 0.0781, "ci": [-0.2078, 0.0614],
    },
    "B": {
        "groups": {
            "50": {"tau_b": 0.0476, "p": 0.847},
            "80": {"tau_b": 0.1619, "p": 0.444},
            "160": {"tau_b": 0.0095, "p": 1.000},
            "320": {"tau_b": 0.0476, "p": 0.845},
            "520": {"tau_b": -0.1810, "p": 0.380},
            "820": {"tau_b": -0.0095, "p": 1.000},
        },
        "psi": 0.0127, "se": 0.0457, "ci": [-0.0762, 0.0889],
    },
    "C": {
        "groups": {
            "Gemma-2-2B": {"tau_b": -0.1402, "p": 0.291},
            "Qwen-2.5-3B": {"tau_b": -0.1448, "p": 0.278},
            "Gemma-2-9B": {"tau_b": -0.0483, "p": 0.716},
        },
        "psi": -0.1111, "se": 0.0314, "ci": [-0.1448, -0.0483],
    },
    "Psi": -0.0568,
}
"""Table 3 (v1): µ vs the steering gain L(θ) after ΔTC selection."""
