"""NaN or inf in what the statistics pass, ΔTC, the core metrics and the SAE loader read is a
one-line UserError naming the cause, never a NaN written into the results."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

import jaxsae.sae as S
from jaxsae import features
from jaxsae.errors import UserError
from jaxsae.metrics import core_metrics
from jaxsae.select.dtc import feature_scores
from test_select_dtc import random_sae


def _poisoned(d_in: int, d_sae: int, key: str, row: int = 3):
    sae = random_sae(d_in, d_sae, seed=2)
    w = np.array(sae.params[key])
    w[row] = np.nan
    return S.SAE(cfg=sae.cfg, params={**sae.params, key: jnp.asarray(w)})


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_nan_decoder_row_in_dtc(tiny_llama):
    sae = _poisoned(tiny_llama.config.d_model, 16, "W_dec", row=5)
    with pytest.raises(UserError, match="ΔTC: 1 of 16 features score NaN or inf \\(first: latent 5\\)") as e:
        feature_scores(tiny_llama, sae, 1)
    assert "re-export the SAE" in _one_line(e)


def test_nan_decoder_in_core_metrics(tiny_llama):
    tokens = np.random.default_rng(0).integers(1, 1000, (2, 8)).astype(np.int32)
    counted = np.ones(tokens.shape, bool)
    sae = _poisoned(tiny_llama.config.d_model, 16, "W_dec", row=0)  # (a NaN encoder row hides behind the
    # JumpReLU mask: 0 codes; the loader refuses such weights, see below)
    with pytest.raises(UserError, match="core metrics: SAE 0 of 1 .* NaN or inf codes or reconstructions") as e:
        core_metrics(tiny_llama, sae, 1, tokens, counted)
    assert "retrain or re-export" in _one_line(e)


def test_nan_codes_in_the_statistics_pass():
    cfg = features.FeatureStatsConfig(context_len=16, total_tokens=4 * 16, batch_size=2, n_top=2, buffer=2, n_iw=2,
                                      n_random=2)
    codes = np.abs(np.random.default_rng(1).normal(size=(4, 16, 6))).astype(np.float32)
    codes[2, 5, 4] = np.nan
    tokens = np.ones((4, 16), np.int32)
    counted = np.ones((4, 16), bool)
    with pytest.raises(UserError, match="feature statistics: 1 of 6 latents have NaN or inf activations") as e:
        features.stats_from_codes(codes, tokens, counted, cfg)
    _one_line(e)
    codes[2, 5, 4] = 1.0
    assert features.stats_from_codes(codes, tokens, counted, cfg).max_act.shape == (6,)


def test_nan_weights_are_refused_on_load(tmp_path):
    sae = random_sae(8, 12, seed=1)
    S.save(sae, tmp_path / "ok")
    raw = safetensors.numpy.load_file(str(tmp_path / "ok" / "sae_weights.safetensors"))
    raw["b_dec"][2] = np.inf
    safetensors.numpy.save_file(raw, str(tmp_path / "ok" / "sae_weights.safetensors"))
    with pytest.raises(UserError, match="b_dec holds 1 NaN or inf values; the SAE is corrupt") as e:
        S.load(tmp_path / "ok")
    _one_line(e)
