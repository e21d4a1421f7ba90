"""Mutations that the dictionary_learning step anchors (``tests/test_anchors.py``, the ``anchors``
extra) must kill: each breaks one formula of a training recipe or of the trainer, and only the
anchor test of that architecture is run against it. Each entry holds the fields of
:class:`mutations.Mutation` in order (plain tuples, so that this module imports nothing);
``mutations.py`` appends them to its list."""

from __future__ import annotations

A = "tests/test_anchors.py::test_"
TK, BTK, MAT, JR, GA = (A + n for n in ("topk_steps_equal_dictionary_learning_topk_trainer",
    "batchtopk_steps_equal_dictionary_learning_batch_topk_trainer",
    "matryoshka_steps_equal_dictionary_learning_matryoshka_trainer",
    "jumprelu_steps_equal_dictionary_learning_jumprelu_trainer",
    "gated_steps_equal_dictionary_learning_gated_sae_trainer"))
T, J, G, TR, ARCH = ("jaxsae/sae/topk.py", "jaxsae/sae/jumprelu.py", "jaxsae/sae/gated.py",
                     "jaxsae/train/trainer.py", "jaxsae/sae/arch.py")
ANCHOR_MUTATIONS = [
    ("dl-auxk-coef-1", T, "total = total + cfg.auxk_alpha * aux_term", "total = total + aux_term", (TK,)),
    ("dl-auxk-not-detached", T, "e = jax.lax.stop_gradient(resid_bd)", "e = resid_bd", (TK,)),
    ("dl-kaux-d", T, "jnp.minimum(d_in // 2, n_dead)", "jnp.minimum(d_in, n_dead)", (TK,)),
    ("dl-ema-swapped", T, "b * thr + (1.0 - b) * value", "(1.0 - b) * thr + b * value", (TK,)),
    ("dl-threshold-start", T, 'return _ema(thr, value, ctx["step"] > cfg.threshold_start_step, cfg)',
             'return _ema(thr, value, ctx["step"] >= cfg.threshold_start_step, cfg)', (BTK,)),
    ("dl-dead-boundary", T, "x_bd - x_hat, since >= cfg.dead_tokens,", "x_bd - x_hat, since > cfg.dead_tokens,",
             (TK,)),
    ("dl-topk-thr-rowmax", T, "row_min = jnp.min(", "row_min = jnp.max(", (TK,)),
    ("dl-since-steps", ARCH, "grown = jnp.minimum(since_f + n_tokens, _SATURATE)",
             "grown = jnp.minimum(since_f + 1, _SATURATE)", (TK,)),
    ("dl-gm-mean", TR, "gm = ops.geometric_median(x) if gm is None else gm",
             "gm = jnp.mean(x, axis=0) if gm is None else gm", (TK,)),
    ("dl-adam-eps", TR, "ADAM_EPS = 1e-8", "ADAM_EPS = 1e-6", (TK,)),
    ("dl-btk-thr-half", T, "value = jnp.where(jnp.any(pos), jnp.min(",
             "value = jnp.where(jnp.any(pos), 0.5 * jnp.min(", (BTK,)),
    ("dl-btk-half-k", T, "_k(sparsity) * pre_bf.shape[0]))", "_k(sparsity) * pre_bf.shape[0] // 2))", (BTK,)),
    ("dl-mat-sum-groups", T, "recon = jnp.mean(jnp.stack(group_losses))",
             "recon = jnp.sum(jnp.stack(group_losses))", (MAT,)),
    ("dl-mat-group-weight", T, "group_losses.append(mse(x_bd, x_hat) * w)",
             "group_losses.append(mse(x_bd, x_hat))", (MAT,)),
    ("dl-jr-kernel-width", J, "coef = -(theta_f / eps) * rectangle((z_bf - theta_f) / eps)",
             "coef = -(theta_f / eps) * rectangle((z_bf - theta_f) / (2 * eps))", (JR,)),
    ("dl-jr-step-grad", J, "coef = -(1.0 / eps) * rectangle((v_bf - theta_f) / eps)",
             "coef = -(0.5 / eps) * rectangle((v_bf - theta_f) / eps)", (JR,)),
    ("dl-jr-l0-on-z", J, "l0 = jnp.mean(jnp.sum(step(f,", "l0 = jnp.mean(jnp.sum(step(z,", (JR,)),
    ("dl-jr-no-warmup", J, 'total = recon + penalty * ctx["sparsity_scale"]', "total = recon + penalty", (JR,)),
    ("dl-jr-beta1", J, "encode=infer, betas=(0.0, 0.999), clip_norm=1.0",
             "encode=infer, betas=(0.9, 0.999), clip_norm=1.0", (JR,)),
    ("dl-jr-infer-no-relu", J, 'jnp.where(z > params["threshold"], jax.nn.relu(z), 0.0)',
             'jnp.where(z > params["threshold"], z, 0.0)', (JR,)),
    ("dl-unit-no-projection", TR, "return project_decoder_grad(1e-6)", "return None", (JR,)),
    ("dl-gated-aux-not-detached", G, 'jax.lax.stop_gradient(params["W_dec"]), cfg)', 'params["W_dec"], cfg)', (GA,)),
    ("dl-gated-l1-no-relu", G, "jnp.sum(jnp.abs(gate_acts), axis=-1)", "jnp.sum(jnp.abs(pi_gate), axis=-1)", (GA,)),
    ("dl-gated-no-warmup", G, 'sparsity * ctx["sparsity_scale"] * l1', "sparsity * l1", (GA,)),
    ("dl-gated-clipped", G, "betas=(0.0, 0.999), clip_norm=None", "betas=(0.0, 0.999), clip_norm=1.0", (GA,)),
]
