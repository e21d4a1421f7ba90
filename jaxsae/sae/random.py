"""A random-direction SAE calibrated on real activations: a baseline for AutoInterp and steering
(what do features look like when the dictionary learned nothing?) and a fixture for tests and
benchmarks that need an SAE of any width without training one."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxsae.sae.saelens import SAE, make_cfg


def calibrated_sae(lm, layer: int, d_sae: int, tokens_bt, *, fire: float, seed: int = 0) -> SAE:
    """A standard (ReLU) SAE whose latents fire on about ``fire`` of the tokens.

    W_enc f32[D, d_sae] has random Gaussian columns (scale 1/sqrt(D)), W_dec = W_enc^T, b_dec is
    the mean residual of ``tokens_bt`` at ``layer`` and each b_enc is minus the (1 - fire) quantile
    of that latent's pre-activation over those tokens.
    """
    D = lm.config.d_model
    rng = np.random.default_rng(seed)
    w_df = (rng.normal(size=(D, d_sae)) / np.sqrt(D)).astype(np.float32)
    x_nd = np.asarray(lm.residual(tokens_bt, layer)).reshape(-1, D)
    b_dec = x_nd.mean(0)
    b_enc = -np.quantile((x_nd - b_dec) @ w_df, 1 - fire, axis=0)
    cfg = make_cfg("standard", D, d_sae, apply_b_dec_to_input=True, metadata=dict(hook_layer=layer))
    params = dict(W_enc=jnp.asarray(w_df), b_enc=jnp.asarray(b_enc, jnp.float32), W_dec=jnp.asarray(w_df.T.copy()),
                  b_dec=jnp.asarray(b_dec))
    return SAE(cfg=cfg, params=params)
