"""The mutation list: one wrong version of each core formula and the tests that must catch it.

Each entry changes one constant, term or operator. ``original`` must occur exactly once in
``file`` (the runner reports a stale entry otherwise, so an edited formula cannot silently drop out
of the list). ``tests`` are pytest node ids or files, kept small: each mutation runs them alone.
To add a formula: append a Mutation here and run ``python tests/mutation/run.py --only NAME``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    """One deliberate error in a core formula."""

    name: str
    """Short unique id (``--only`` selects by it)."""
    file: str
    """Path relative to the repository root."""
    original: str
    """Exact text of the formula as it is (must occur once in ``file``)."""
    mutated: str
    """The wrong text that replaces it."""
    tests: tuple[str, ...]
    """pytest node ids / files (relative to the root) that must fail on the mutant."""


DTC = "jaxsae/select/dtc.py"
METRICS = "jaxsae/metrics.py"
KENDALL = "jaxsae/analysis/kendall.py"
TRAINER = "jaxsae/train/trainer.py"
OPS = "jaxsae/sae/ops.py"

T_DTC = "tests/test_select_dtc.py::test_batched_dtc_equals_naive_on_tiny_model"
T_OUT = "tests/test_select_dtc.py::test_output_score_rank_factor_against_naive"
T_DEC = "tests/test_select_dtc.py::test_decoder_mode_equals_naive"
T_READINGS = "tests/test_select_dtc.py::test_every_reading_equals_naive"
T_METRICS = "tests/test_sae_metrics.py::test_reconstruction_and_frequency_metrics_equal_numpy"
T_CORE = "tests/test_sae_metrics.py::test_core_metrics_equal_naive_reference"
T_RANK = "tests/test_analysis_rank.py"
T_REF = "tests/test_train_references.py"
T_RECIPES = "tests/test_sae_recipes.py"

MUTATIONS: list[Mutation] = [
    # ---------------------------------------------------------------- ΔTC and the output score
    Mutation("dtc-rank-factor", DTC, "out = (1.0 - rank / z.shape[-1]) * jnp.exp(z_best - lse)",
             "out = jnp.exp(z_best - lse)", (T_OUT,)),
    Mutation("dtc-rank-ties", DTC, "rank = jnp.sum(z > z_best[:, None], axis=1)",
             "rank = jnp.sum(z >= z_best[:, None], axis=1) + 100", (T_OUT,)),
    Mutation("dtc-pbest-unnormalised", DTC, "(1.0 - rank / z.shape[-1]) * jnp.exp(z_best - lse)",
             "(1.0 - rank / z.shape[-1]) * jnp.exp(z_best)", (T_OUT,)),
    Mutation("dtc-confidence-sign", DTC, "    return lse_b - top", "    return top - lse_b", (T_DTC,)),
    Mutation("dtc-topk-sum", DTC, "jnp.mean(jax.lax.top_k(logits_bv, k)[0], axis=-1)",
             "jnp.sum(jax.lax.top_k(logits_bv, k)[0], axis=-1)", (T_DTC,)),
    Mutation("dtc-additive-amax", DTC, "alpha * jnp.max(codes_pf, axis=1)[None, :]",
             "alpha * jnp.ones(codes_pf.shape[:1])[None, :]", (T_DTC,)),
    Mutation("dtc-reading-b-scale", DTC, "return (alpha - 1.0) * a_fp if", "return alpha * a_fp if", (T_READINGS,)),
    Mutation("dtc-reading-bp-alone", DTC, 'if reading == "B" else alpha * a_fp', 'if reading == "B" else (alpha - 1.0) * a_fp',
             (T_READINGS,)),
    Mutation("dtc-decoder-unit", DTC,
             "unit = rows / jnp.maximum(jnp.linalg.norm(rows, axis=1, keepdims=True), 1e-12)", "unit = rows", (T_DEC,)),
    # ---------------------------------------------------------------- core metrics
    Mutation("metrics-cossim-denominator", METRICS, "jnp.maximum(nx * nh, 1e-12)", "jnp.maximum(nx * nx, 1e-12)",
             (T_METRICS,)),
    Mutation("metrics-dense-threshold", METRICS, "np.mean(freq > 0.1)", "np.mean(freq > 0.01)", (T_METRICS,)),
    Mutation("metrics-dead-once", METRICS, "np.mean(fired == 0)", "np.mean(fired <= 1)", (T_METRICS,)),
    Mutation("metrics-l2-ratio-inverted", METRICS, "jnp.sum(nh / jnp.maximum(nx, 1e-12) * v_bt)",
             "jnp.sum(nx / jnp.maximum(nh, 1e-12) * v_bt)", (T_METRICS,)),
    Mutation("metrics-mse-per-element", METRICS, '"mse": err / n,', '"mse": err / n / len(sum_x),',
             (T_METRICS,)),
    Mutation("metrics-l0-count", METRICS, "fires = (f != 0) & valid_bt[..., None]", "fires = (f > 1e-3) & valid_bt[..., None]",
             (T_METRICS,)),
    Mutation("metrics-variance-unbiased", METRICS, "float(np.sum(np.asarray(sum_x, np.float64) ** 2)) / n",
             "float(np.sum(np.asarray(sum_x, np.float64) ** 2)) / (n - 1)", (T_METRICS,)),
    Mutation("metrics-kl-reversed", METRICS, "kl = jnp.sum(jnp.exp(lp_clean) * (lp_clean - lp), axis=-1)",
             "kl = jnp.sum(jnp.exp(lp) * (lp - lp_clean), axis=-1)", (T_CORE,)),
    Mutation("metrics-ce-score", METRICS, "(ce_zero - ce_sae) / (ce_zero - ce_clean)",
             "(ce_zero - ce_sae) / (ce_sae - ce_clean)", (T_CORE,)),
    Mutation("metrics-ce-from-counted", METRICS, "jnp.sum(ce * valid_bt[:, :-1].astype(jnp.float32))",
             "jnp.sum(ce * valid_bt[:, 1:].astype(jnp.float32))", (T_CORE,)),
    # ---------------------------------------------------------------- Kendall statistics
    Mutation("kendall-null-band", KENDALL, "np.quantile(null, [a, 1.0 - a])", "np.quantile(null, [a / 2, 1.0 - a / 2])",
             (T_RANK + "::test_perm_null_band_equals_the_quantiles_of_every_permutation",)),
    Mutation("kendall-tau-denominator", KENDALL, "den = np.sqrt(nx.astype(np.float64) * ny)",
             "den = (nx.astype(np.float64) + ny) / 2", (T_RANK + "::test_vectorised_tau_matches_scipy_and_naive",)),
    Mutation("kendall-pvalue-one-sided", KENDALL, 'alternative="two-sided"', 'alternative="greater"',
             (T_RANK + "::test_permutation_pvalue_exact_matches_scipy_exact_null",)),
    Mutation("kendall-pvalue-exact-enumeration", KENDALL, "exact = math.factorial(n) <= n_perm",
             "exact = math.factorial(n) < n_perm", (T_RANK + "::test_perfect_concordance_n8_has_tiny_pvalue",)),
    # ---------------------------------------------------------------- training
    # Adam itself is optax's; what we choose is its betas, eps, the chain's order and the schedule
    Mutation("adam-eps", TRAINER, "ADAM_EPS = 1e-8", "ADAM_EPS = 1e-6", (T_REF,)),
    Mutation("adam-betas-swapped", TRAINER, "b1, b2 = arch.betas", "b2, b1 = arch.betas", (T_REF,)),
    Mutation("lr-schedule-off-by-one", TRAINER, "optax.scale_by_learning_rate(lambda count: lr_at(count, st))",
             "optax.scale_by_learning_rate(lambda count: lr_at(count + 1, st))",
             ("tests/test_anchors.py::test_relu_steps_equal_dictionary_learning_standard_trainer_april_update",)),
    Mutation("clip-skipped", TRAINER, "    if arch.clip_norm is not None:\n        parts.append(optax.clip",
             "    if False:\n        parts.append(optax.clip",
             ("tests/test_anchors.py::test_relu_steps_equal_dictionary_learning_standard_trainer_april_update",)),
    Mutation("gm-is-mean", OPS, "_, guess, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), mean, mean))",
             "guess = mean", (T_REF,)),
    Mutation("gm-unweighted", OPS, "w = 1.0 / jnp.linalg.norm(points_nd - guess, axis=-1)",
             "w = 1.0 / jnp.linalg.norm(points_nd - guess, axis=-1) ** 2", (T_REF,)),
    Mutation("lr-warmup-offset", TRAINER, "warm = step / max(st.warmup_steps, 1)",
             "warm = (step + 1) / max(st.warmup_steps, 1)", ("tests/test_train_schedule.py",)),
    Mutation("relu-l1-decoder-norm", "jaxsae/sae/relu.py", "l1 = jnp.mean(jnp.sum(f_bf * dec_norm_f, axis=-1))",
             "l1 = jnp.mean(jnp.sum(f_bf, axis=-1))", (T_RECIPES + "::test_relu_loss_and_grads",)),
    Mutation("jumprelu-penalty", "jaxsae/sae/jumprelu.py", "jnp.square(l0 / sparsity - 1.0)",
             "jnp.abs(l0 / sparsity - 1.0)", (T_RECIPES + "::test_jumprelu_loss_grads_and_pseudo_gradients",)),
    Mutation("auxk-no-centering", "jaxsae/sae/topk.py",
             "denom = jnp.mean(jnp.sum(jnp.square(e - jnp.mean(e, axis=0, keepdims=True)), axis=-1))",
             "denom = jnp.mean(jnp.sum(jnp.square(e), axis=-1))", (T_RECIPES + "::test_auxk_hand_example",)),
    # ---------------------------------------------------------------- judging and steering
    Mutation("judge-failure-scores-uniform", "jaxsae/judge/local.py", "ratings.append(Rating(score=0.0, argmax=0.0, ok=False,",
             "ratings.append(Rating(score=1.0, argmax=0.0, ok=False,",
             ("tests/test_judge_local.py::test_a_rating_without_digit_mass_fails_and_scores_zero",)),
    Mutation("harmonic-mean-arithmetic", "jaxsae/judge/rubric.py",
             "3.0 / (1.0 / safe[0] + 1.0 / safe[1] + 1.0 / safe[2])", "(safe[0] + safe[1] + safe[2]) / 3.0",
             ("tests/test_judge_rubric.py::test_harmonic_mean_and_zero_guard",)),
    Mutation("steer-direction-not-unit", "jaxsae/steer/edits.py",
             "return (w / np.maximum(np.linalg.norm(w, axis=-1, keepdims=True), 1e-12)).astype(np.float32)",
             "return w.astype(np.float32)", ("tests/test_steer_edits.py::test_unit_directions",)),
    Mutation("shared-prefill-edit-skipped", "jaxsae/models/decoder.py",
             "        x = _edited(x, edit, ctx)", "        x = x",
             ("tests/test_models_decode.py::test_shared_prompt_prefill_equals_the_prefill_of_every_row",)),
    Mutation("shared-prefill-values-misrouted", "jaxsae/models/decoder.py", "cache_u.v_lbksh[:, rows_b]",
             "cache_u.v_lbksh[:, rows_b[::-1]]",
             ("tests/test_models_decode.py::test_shared_prompt_prefill_equals_the_prefill_of_every_row",)),
    Mutation("sample-temperature-ignored", "jaxsae/models/generate.py", "sample_rows(key_b, logits_bv / temperature)",
             "sample_rows(key_b, logits_bv)", ("tests/test_models_decode.py::test_sampling_at_a_low_temperature_is_greedy",)),
    Mutation("row-uniforms-unkeyed", "jaxsae/models/generate.py", "unit_interval(_mix32(_mix32(i[None, :] ^ ab[:, :1]) ^ ab[:, 1:]))",
             "unit_interval(_mix32(_mix32(i[None, :] ^ ab[:1, :1]) ^ ab[:1, 1:]))",
             ("tests/test_models_decode.py::test_each_row_samples_the_softmax_with_its_own_key",
              "tests/test_models_decode.py::test_row_uniforms_are_uniform_and_independent")),
    Mutation("row-uniforms-index-unhashed", "jaxsae/models/generate.py",
             "unit_interval(_mix32(_mix32(i[None, :] ^ ab[:, :1]) ^ ab[:, 1:]))", "unit_interval((i[None, :] << 9) ^ ab[:, :1])",
             ("tests/test_models_decode.py::test_row_uniforms_are_uniform_and_independent",)),
    Mutation("unit-interval-24-bits", "jaxsae/models/generate.py", "((h >> 9).astype(jnp.float32) + 0.5) * jnp.float32(2.0**-23)",
             "((h >> 8).astype(jnp.float32) + 0.5) * jnp.float32(2.0**-24)",
             ("tests/test_models_decode.py::test_row_uniforms_are_uniform_and_independent",)),
    Mutation("exponential-race-inverted", "jaxsae/models/generate.py", "jnp.argmax(p_bv / e_bv, axis=-1)",
             "jnp.argmax(p_bv * e_bv, axis=-1)", ("tests/test_models_decode.py::test_each_row_samples_the_softmax_with_its_own_key",)),
    Mutation("prefix-decode-slot-not-offset", "jaxsae/models/generate.py", "write_at=P + T + i - 1", "write_at=T + i - 1",
             ("tests/test_autointerp_local_judge.py::test_greedy_completions_after_a_shared_prefix_equal_the_whole_prompts",)),
    Mutation("prefix-padding-visible", "jaxsae/models/generate.py",
             "cache.valid_bs.at[:, :P].set(jnp.broadcast_to(prefix.valid_bs, (B, P)))", "cache.valid_bs.at[:, :P].set(True)",
             ("tests/test_autointerp_local_judge.py::test_greedy_completions_after_a_shared_prefix_equal_the_whole_prompts",)),
    Mutation("explainer-batch-not-even", "jaxsae/autointerp/roles.py", "batch=even_batch(len(ids), self.cfg.explain_batch)",
             "batch=self.cfg.explain_batch",
             ("tests/test_autointerp_local_judge.py::test_the_explainer_runs_five_latents_as_one_batch_of_five",)),
    Mutation("prefix-window-check-ignored", "jaxsae/models/generate.py", "return min(cfg.windows) >= slots", "return True",
             ("tests/test_autointerp_local_judge.py::test_greedy_completions_after_a_shared_prefix_equal_the_whole_prompts",)),
    Mutation("complete-ids-prefix-never-shared", "jaxsae/models/lm.py", "n = shared_length(ids) if share_prefix else 0",
             "n = 0", ("tests/test_autointerp_local_judge.py::test_greedy_completions_after_a_shared_prefix_equal_the_whole_prompts",)),
    Mutation("short-prefix-counted-twice", "jaxsae/models/lm.py", "            n = 0  # the prompts run whole", "            pass",
             ("tests/test_autointerp_local_judge.py::test_too_short_a_shared_prefix_is_not_counted_against_the_context",)),
    Mutation("detector-batch-not-even", "jaxsae/autointerp/roles.py", "batch = even_batch(len(ids), self.cfg.detect_batch)",
             "batch = self.cfg.detect_batch", ("tests/test_autointerp_local_judge.py::test_a_latents_14_windows_run_as_one_batch_of_14",)),
    Mutation("decoded-rows-not-split", "jaxsae/sae/arch.py",
             "return x_bd if sharding is None else jax.lax.with_sharding_constraint(x_bd, sharding)", "return x_bd",
             ("tests/test_train_layout.py::test_reconstructions_are_summed_into_row_shards",)),
    Mutation("centred-encoder-no-bdec-grad", "jaxsae/sae/arch.py",
             "return matmul(x_bd - fixed, w_df, cfg) - matmul((b_dec_d - fixed)[None, :], w_df, cfg)",
             "return matmul(x_bd - fixed, w_df, cfg)",
             (T_RECIPES + "::test_relu_loss_and_grads", T_RECIPES + "::test_centred_encoder_takes_b_decs_gradient_the_short_way")),
    Mutation("stream-device-mix-unshuffled", "jaxsae/train/stream.py", "idx[:n] = kept[perm]",
             "idx[:n] = kept[np.sort(perm)]",
             ("tests/test_train_stream.py::test_batches_are_mixed_on_the_device_as_the_host_mixing_would",)),
]

from anchor_mutations import ANCHOR_MUTATIONS  # noqa: E402  (needs the anchors extra)

MUTATIONS += [Mutation(*fields) for fields in ANCHOR_MUTATIONS]
