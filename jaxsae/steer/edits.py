"""Steering edits: x <- x + Σ_f c_{b,f} · v_f at the SAE's layer, over a set of selected latents f.

v_f are unit decoder directions; c_{b,f} = α_b · m_f per batch row b (so one generate call can
hold several steering factors). AxBench's addition applies at every position, including the
prompt, and at every decode step (``all_positions=True``); Arad et al.'s variant applies at the
last position only (in decode steps the new token is the last position).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxsae.models import Edit


def _add_all(args, resid_btd, positions_bt):
    return resid_btd + jnp.einsum("bf,fd->bd", args["coef_bf"], args["dirs_fd"])[:, None, :]


def _add_last(args, resid_btd, positions_bt):
    return resid_btd.at[:, -1].add(jnp.einsum("bf,fd->bd", args["coef_bf"], args["dirs_fd"]))


def _add_rows_all(args, resid_btd, positions_bt):
    return resid_btd + args["delta_bd"][:, None, :]


def _add_rows_last(args, resid_btd, positions_bt):
    return resid_btd.at[:, -1].add(args["delta_bd"])


def unit_directions(sae, features) -> np.ndarray:
    """f32[F, D]: the unit decoder directions v_f of ``features`` (F of them)."""
    w = np.asarray(sae.params["W_dec"])[np.asarray(features, np.int64)]
    return (w / np.maximum(np.linalg.norm(w, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def steering_edit(layer: int, dirs_fd, coef_bf, *, all_positions: bool = True) -> Edit:
    """An edit adding Σ_f coef[b, f] · dirs[f] to row b of the residual after block ``layer``.

    Same shapes give the same compiled program: changing factors or features never recompiles."""
    args = {"dirs_fd": jnp.asarray(dirs_fd, jnp.float32), "coef_bf": jnp.asarray(coef_bf, jnp.float32)}
    return Edit(int(layer), _add_all if all_positions else _add_last, args)


def feature_edit(layer: int, sae, features, max_acts, alphas_b, *, all_positions: bool = True) -> Edit:
    """Row b steered by α_b · m_f · v_f summed over ``features`` (a selected set, or one feature)."""
    feats = np.atleast_1d(np.asarray(features, np.int64))
    m = np.asarray(max_acts, np.float32)[feats]
    coef = np.asarray(alphas_b, np.float32)[:, None] * m[None, :]
    return steering_edit(layer, unit_directions(sae, feats), coef, all_positions=all_positions)


def row_edit(layer: int, delta_bd, *, all_positions: bool = True) -> Edit:
    """An edit adding its own vector ``delta_bd[b]`` (e.g. α_b · m_b · v_b of any feature of any
    SAE steered at ``layer``) to row b: rows of many concepts and factors share one batch, and
    changing the vectors never recompiles."""
    args = {"delta_bd": jnp.asarray(delta_bd, jnp.float32)}
    return Edit(int(layer), _add_rows_all if all_positions else _add_rows_last, args)
