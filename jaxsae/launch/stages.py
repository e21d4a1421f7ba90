"""The study's stages, in order. Each takes the :class:`~jaxsae.launch.runner.Run`, reads what
its upstream stages wrote (:mod:`jaxsae.launch.layout`), computes on the models and judges of
:mod:`jaxsae.launch.resources`, and returns its outputs (paths relative to the run folder)."""

from __future__ import annotations

import functools
import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np

from jaxsae.errors import UserError
from jaxsae.io import atomic_write_bytes, atomic_write_json
from jaxsae.launch.layout import (VALIDITY_CACHE, VALIDITY_FILE, collect_records, dtc_by_reading, model_dir, read_json,
                                  reading_key, rel, sae_path, sweep_dir, sweep_entries, with_uncertainty)
from jaxsae.launch.resources import (chat_client, check_templates, held_out, load_lm, make_judge_lm, make_rating_judge,
                                     progress, spec_lm, texts_for, validity_judges)
from jaxsae.launch.runner import Run, Stage


def discard_training(run: Run, spec) -> None:
    """Remove a model's trained sweep, checkpoints and stored activations before the train stage is
    redone (``--redo train`` or a config change): nothing of the old configuration is resumed."""
    import shutil

    shutil.rmtree(sweep_dir(run, spec), ignore_errors=True)
    (model_dir(run, spec) / "activations.npy").unlink(missing_ok=True)
    (model_dir(run, spec) / "activations.npy.json").unlink(missing_ok=True)


def validate_train(run: Run) -> None:
    """Every model's layer and the sweep's sparsity settings against its width, before the train
    stage removes anything (loads the models, which the stage then reuses)."""
    from jaxsae.train.spec import check_sweep, resolve_matmul_dtype

    c = run.cfg
    resolve_matmul_dtype(c.train.matmul_dtype)  # a bad value stops before anything is removed
    if not c.data.store_activations and c.train.batch % c.data.harvest_shards:
        raise UserError(f"train.batch ({c.train.batch}) must be a multiple of data.harvest_shards "
                        f"({c.data.harvest_shards}) when streaming; change one of them")
    specs = c.train.sweep()
    for spec in c.models:
        lm = spec_lm(run, spec)
        lm.check_layer(spec.layer)
        check_sweep(specs, lm.config.d_model, c.train.d_sae)


def cached_activations(path: Path, expected: dict):
    """The harvested activations at ``path``, memory-mapped, after checking them against their
    record: what they were harvested from must be ``expected`` (model, layer, text, context, tokens
    asked) and the array must have the recorded shape; anything else is refused in one line."""
    from jaxsae.train import load_activations
    from jaxsae.train.shards import read_record

    fix = f"delete {path} (it is harvested again) or --redo train"
    rec = read_record(path)
    if rec is None:
        raise UserError(f"cached activations {path} have no record of what they were harvested from; {fix}")
    diff = [k for k in expected if rec.get("source", {}).get(k) != expected[k]]
    if diff:
        k = diff[0]
        raise UserError(f"cached activations {path} were harvested with {k} = {rec['source'].get(k)!r}, this run asks "
                        f"for {expected[k]!r}; {fix}")
    arr = load_activations(path)
    if list(arr.shape) != list(rec.get("shape", [])):
        raise UserError(f"cached activations {path} hold {arr.shape[0]} x {arr.shape[1]} values but their record says "
                        f"{rec.get('shape')}; the file was replaced or damaged: {fix}")
    return arr


def stage_train(run: Run) -> list[str]:
    """Harvest the layer's residuals from the training text and train the whole sweep together
    (with several processes: one computation over all their devices, see :func:`train_sweep`)."""
    from jaxsae.distributed import barrier
    from jaxsae.train import ActivationArray, harvest, texts_from, train_sweep
    from jaxsae.train.data import harvest_source, iter_texts
    from jaxsae.train.run import auto_mesh
    from jaxsae.train.stream import ActivationStream

    c = run.cfg
    outputs = []
    specs = c.train.sweep()
    for spec in c.models:
        lm = spec_lm(run, spec)  # checked by validate_train
        if not run.resume_ok and run.is_writer:  # redone, or interrupted under another configuration
            discard_training(run, spec)
        barrier(f"train: {spec.name} ready to train")
        if c.data.store_activations:
            acts_path = model_dir(run, spec) / "activations.npy"
            if run.is_writer and not acts_path.exists():
                texts = texts_from(c.data.source, max_chars=c.train.tokens * 8)
                harvest(lm, spec.layer, texts, c.train.tokens, acts_path, context=c.data.context,
                        llm_batch=c.data.llm_batch, text=c.data.source)
            barrier(f"train: activations of {spec.name} written")
            arr = cached_activations(acts_path, harvest_source(lm, spec.layer, text=c.data.source, context=c.data.context,
                                                               n_tokens=c.train.tokens))
            st = c.train.resolved(available_tokens=len(arr))
            acts = ActivationArray(arr, st.batch, st.seed)
        else:  # harvested on the fly, chunk by chunk (each process harvests the row blocks it trains on)
            st = c.train.resolved()
            acts = ActivationStream(lm, spec.layer, functools.partial(iter_texts, c.data.source), st.batch, st.steps,
                                    context=c.data.context, llm_batch=c.data.llm_batch, seed=st.seed,
                                    shards=c.data.harvest_shards)
        md = {"model_name": spec.name, "model_source": spec.source, "hook_layer": spec.layer,
              "context_size": c.data.context, "dataset_path": c.data.source}
        mesh = auto_mesh(specs, st)  # the layout rule over every process's devices (jaxsae.train.layout)
        train_sweep(specs, acts, st, sweep_dir(run, spec),
                    mesh=mesh, metadata=md)
        outputs.append(rel(run, sweep_dir(run, spec) / "sweep.json"))
        outputs += [rel(run, sae_path(run, spec, e) / f) for e in sweep_entries(run, spec)
                    for f in ("cfg.json", "sae_weights.safetensors")]
    return outputs


def stage_metrics(run: Run) -> list[str]:
    """Core metrics (L0, FVU, cosine, L2 ratio, dead/dense, CE-loss and KL scores) per SAE; the
    model's clean and zero-ablated passes are shared by all SAEs of a model."""
    import jaxsae.sae as S
    from jaxsae.metrics import core_metrics_many

    c = run.cfg
    outputs = []
    for spec in c.models:
        lm = spec_lm(run, spec)
        dirs = [sae_path(run, spec, e) for e in sweep_entries(run, spec)]
        outputs += [rel(run, d / "metrics.json") for d in dirs]
        mine = run.share(dirs)
        if not mine:
            continue
        tokens, counted = held_out(run, lm, c.eval.metric_tokens, c.eval.stats_context)
        from tqdm import tqdm

        with tqdm(total=len(tokens), desc=f"metrics {spec.name} ({len(mine)} SAEs)", unit="ctx", dynamic_ncols=True) as bar:
            results = core_metrics_many(lm, [S.load(d) for d in mine], spec.layer, tokens, counted, progress=bar.update)
        for d, m in zip(mine, results):
            atomic_write_json(d / "metrics.json", m)
    return outputs


STATS_SAES_PER_PASS = 10
"""SAEs whose feature statistics one pass gathers together (their encoders and statistics share
the device with the model)."""


def stage_autointerp(run: Run) -> list[str]:
    """Feature statistics (m_f, top windows) and AutoInterp scores µ for every SAE; the held-out
    text is tokenised once per model, and the statistics of its SAEs gathered in one pass (the
    model runs once per batch for all of them)."""
    from jaxsae.autointerp.roles import api_roles, local_roles
    from jaxsae.autointerp.prompts import TokenText
    from jaxsae.autointerp.run import RESULTS_FILE, request_failures, run_autointerp, save_results, stats_for_saes
    from jaxsae.features import FeatureStatsConfig, held_out_tokens

    c = run.cfg
    ai = c.autointerp
    stats_cfg = FeatureStatsConfig(context_len=c.eval.stats_context, total_tokens=c.eval.stats_tokens)
    text_source = None if c.data.source == "embedded" else c.data.source  # provenance of the held-out text
    explainer, detector = local_roles(make_judge_lm(run), ai) if c.judge.kind == "local" else api_roles(chat_client(run), ai)
    outputs = []
    for spec in c.models:
        lm = spec_lm(run, spec)
        token_text = TokenText(lm.tokenizer)
        entries = sweep_entries(run, spec)
        outputs += [rel(run, sae_path(run, spec, e) / f) for e in entries for f in (RESULTS_FILE, "feature_stats")]
        todo = []
        for entry in run.share(entries):
            d = sae_path(run, spec, entry)
            out = d / RESULTS_FILE
            if out.exists() and run.resume_ok:
                try:  # finished before an interruption, every judge request answered: keep it
                    if not request_failures(json.loads(out.read_text())["latents"]):
                        continue
                except (KeyError, TypeError, json.JSONDecodeError):
                    pass
            todo.append(d)
        if not todo:
            continue
        tokens, _ = held_out_tokens(lm, stats_cfg, texts_for(run))  # once per model
        groups = [todo[g : g + STATS_SAES_PER_PASS] for g in range(0, len(todo), STATS_SAES_PER_PASS)]
        with residuals_for_passes(run, lm, spec.layer, tokens, passes=len(groups)) as resid:
            for group in groups:  # every statistic first, so the residuals on disk go before the judging
                stats_for_saes(group, None, lm, spec.layer, stats_cfg, tokens=tokens, text_source=text_source,
                               progress=True, resid_ntd=resid)
        for group in groups:
            all_stats = stats_for_saes(group, None, lm, spec.layer, stats_cfg, tokens=tokens,
                                       text_source=text_source)  # read back (fingerprints checked)
            for d, stats in zip(progress(group, f"autointerp {spec.name}"), all_stats):
                result = run_autointerp(stats, explainer, detector, ai, token_text)
                result["sae"] = rel(run, d)
                save_results(result, d / RESULTS_FILE)
    return outputs


@contextlib.contextmanager
def residuals_for_passes(run: Run, lm, layer: int, tokens, *, passes: int):
    """Yields what the statistics passes of one model read instead of running it: with one pass,
    None (the pass runs the model); with several, a function giving the held-out contexts'
    residuals at ``layer``, which runs the model once, on the first pass that needs it, into a
    temporary file of the run folder (:func:`jaxsae.features.compute.residuals_on_disk`; the
    model's dtype, bfloat16 on GPUs/TPUs), removed on leaving (and at the next start if a kill left
    it)."""
    from jaxsae.features.compute import residuals_on_disk

    folder = run.out / f".residuals-{run.process_index}"
    shutil.rmtree(folder, ignore_errors=True)
    if passes <= 1:
        yield None
        return

    @functools.cache
    def resid():
        folder.mkdir(parents=True)
        return residuals_on_disk(lm, layer, tokens, folder / f"layer{layer}.bin")

    try:
        yield resid
    finally:
        resid.cache_clear()
        shutil.rmtree(folder, ignore_errors=True)


def _failed_requests(run: Run, rel_file: str, count) -> tuple[int, int, list[str]]:
    """(requests failed for good, requests, SAEs with failures) over every SAE's ``rel_file``;
    ``count(record) -> (failed, total)``."""
    failed = total = 0
    where = []
    for spec in run.cfg.models:
        for entry in sweep_entries(run, spec):
            path = sae_path(run, spec, entry) / rel_file
            try:
                f, t = count(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a missing or unreadable file is the runner's concern (missing / damaged outputs)
            failed, total = failed + f, total + t
            if f:
                where.append(rel(run, path.parent))
    return failed, total, where


def _incomplete_message(what: str, failed: int, total: int, where: list[str]) -> str | None:
    """None when no request failed; else the one line that stops the run (all failed: the judge is
    unreachable or refuses; some failed: a plain re-run retries only those)."""
    if not failed:
        return None
    if failed >= total:
        return (f"every one of the {total} {what} judge requests failed for good: no result was made; check that "
                "the judge answers (judge.base_url, judge.model, the key in judge.api_key_env), then re-run")
    return (f"{failed} of {total} {what} judge requests failed for good (in {len(where)} SAE(s), e.g. {where[0]}); "
            "they are not results: re-run the same command to retry only them (the answered ones are cached)")


def autointerp_incomplete(run: Run) -> str | None:
    """Whether some AutoInterp explanation or detection request failed for good (the stage is not done)."""
    from jaxsae.autointerp.run import RESULTS_FILE, request_failures

    def count(res):
        lat = res["latents"]
        return request_failures(lat), len(lat) + sum(r.get("explanation") is not None for r in lat)

    return _incomplete_message("AutoInterp", *_failed_requests(run, RESULTS_FILE, count))


def steer_incomplete(run: Run) -> str | None:
    """Whether some steering rating request failed for good (the stage is not done)."""
    def count(util):
        js = util["judge_stats"]
        return int(js.get("hard_failures", 0)), int(js.get("ratings", 0))

    return _incomplete_message("steering rating", *_failed_requests(run, "steering/utility.json", count))


def stage_select(run: Run) -> list[str]:
    """ΔTC and output score of every latent (``select.pool = "all"``) or of the steered concepts
    only (``"concepts"``: the concepts ``steer.concepts`` names, see :func:`concept_features`),
    dtc.npz beside the SAE. In decoder mode a latent that never fired is scaled by the steering
    fallback m_f (jaxsae.steer.DEAD_M_F), as it is steered."""
    import jaxsae.sae as S
    from jaxsae.select.dtc import READINGS, feature_scores
    from jaxsae.steer import DEAD_M_F, steering_scales

    c = run.cfg.select
    outputs = []
    for spec in run.cfg.models:
        lm = spec_lm(run, spec)
        entries = sweep_entries(run, spec)
        outputs += [rel(run, sae_path(run, spec, e) / "dtc.npz") for e in entries]
        for entry in progress(run.share(entries), f"ΔTC {spec.name}"):
            d = sae_path(run, spec, entry)
            sae = S.load(d)
            feats = None
            if c.pool == "concepts":
                feats = np.asarray([x.feature for x in concept_features(run, d, sae.d_sae)], np.int64)
            max_acts = None
            if c.mode == "decoder":
                from jaxsae.features import load as load_stats

                max_acts = steering_scales(load_stats(d / "feature_stats").max_act, DEAD_M_F)[0]
            kw = dict(prefix=c.prefix, alpha=c.alpha, k=c.k, features=feats, mode=c.mode, positions=c.positions,
                      max_acts=max_acts)
            scores = feature_scores(lm, sae, spec.layer, reading=c.reading, **kw)
            scores[reading_key(c.reading)] = scores["delta_tc"]
            if not c.compare_readings:
                scores.pop("delta_tc_A", None)
            for other in (r for r in READINGS if r != c.reading and c.compare_readings
                          and reading_key(r) not in scores):  # A comes with the output score's pass
                scores[reading_key(other)] = feature_scores(lm, sae, spec.layer, reading=other, output_score=False,
                                                            **kw)["delta_tc"]
            scores.update(reading=np.str_(c.reading), positions=np.str_(c.positions), mode=np.str_(c.mode))
            buf = io.BytesIO()
            np.savez(buf, **scores)
            atomic_write_bytes(d / "dtc.npz", buf.getvalue())
    return outputs


def stage_steer(run: Run) -> list[str]:
    """Steering utility g(θ) without selection: AxBench protocol on each SAE's steered concepts
    (``steer.concepts``: its CONCEPT100, or a concept file); utility.json holds g and g_argmax,
    the judge and model, and the judge's failure counts (``judge_stats``)."""
    import jaxsae.sae as S
    from jaxsae.features import load as load_stats
    from jaxsae.steer import SteerJob, instructions, run_utility_many

    from jaxsae.distributed import barrier

    c = run.cfg
    st = c.steer
    judge = make_rating_judge(run)
    # one instruction pool for every process (the Hub may answer one and not another)
    pool_path = run.out / "steer_instructions.json"
    if run.is_writer:
        atomic_write_json(pool_path, instructions(axbench_dir=c.steer.instructions_dir or None))
    barrier("steer: instruction pool written")
    pool = json.loads(pool_path.read_text())
    outputs = ["steer_instructions.json"]
    for spec in c.models:
        lm = spec_lm(run, spec, steer=True)
        entries = sweep_entries(run, spec)
        outputs += [rel(run, sae_path(run, spec, e) / "steering" / "utility.json") for e in entries]
        jobs = []  # every SAE of the model this process handles, steered in shared batches
        for entry in run.share(entries):
            d = sae_path(run, spec, entry)
            sae = S.load(d)
            if not run.resume_ok:  # partial results of another configuration
                for name in ("concepts.jsonl", "dev.jsonl"):
                    (d / "steering" / name).unlink(missing_ok=True)
            jobs.append(SteerJob(sae, spec.layer, concept_features(run, d, sae.d_sae),
                                 load_stats(d / "feature_stats").max_act, pool, d / "steering"))
        if jobs:
            run_utility_many(lm, judge, jobs, st)  # rows per batch: st.batch (0: DEFAULT_BATCH, 256)
    return outputs


def validate_steer(run: Run) -> None:
    """Steering settings, the concept file and the instruction folder, before any model loads."""
    from jaxsae.steer import CONCEPT100, from_file

    c = run.cfg.steer
    check_templates(run)
    if c.concepts != CONCEPT100:
        from_file(c.concepts)
    if c.instructions_dir and not Path(c.instructions_dir).is_dir():
        raise UserError(f"steer.instructions_dir {c.instructions_dir!r} is not a folder; pass a folder of AxBench parquet "
                        "files or ''")


def stage_steer_selected(run: Run) -> list[str]:
    """Selection tiers by ΔTC and (size-matched) output score over the steered concepts (the only
    latents with steering scores): top-K among them, tail quantiles at the thresholds of every
    scored latent's ΔTC (see ``select.pool``); the tier is chosen on dev instructions and scored
    on test (or the paper's variant, ``select.tier_choice = "eval"``, labelled so)."""
    from jaxsae.select import CHOICE_LABELS, choose_tier, dtc_tiers, size_matched_tiers

    choice = run.cfg.select.tier_choice
    ranking = run.cfg.select.ranking
    outputs = []
    for spec in run.cfg.models:
        for entry in sweep_entries(run, spec):
            d = sae_path(run, spec, entry)
            lines = (d / "steering" / "concepts.jsonl").read_text().splitlines()
            recs = [json.loads(ln) for ln in lines if ln.strip()]
            dev = {int(r["feature"]): float(r["dev_score"]) for r in recs}
            test = {int(r["feature"]): float(r["test_score"]) for r in recs}
            with np.load(d / "dtc.npz") as z:
                all_feats, dtc, outsc = z["features"], z["delta_tc"], z["output_score"]
                reading = str(z["reading"]) if "reading" in z.files else "A"  # files of before the readings: Arad's hook
                positions = str(z["positions"]) if "positions" in z.files else "last"
                by_reading = {r: z[reading_key(r)] for r in ("A", "B", "B'") if reading_key(r) in z.files}
            pos = {int(f): i for i, f in enumerate(all_feats)}
            unscored = [f for f in dev if f not in pos]
            if unscored:
                raise UserError(f"{d / 'dtc.npz'} has no ΔTC for steered latent(s) {', '.join(map(str, unscored[:5]))} "
                                "(the steered concepts changed since the select stage ran); use --redo select")
            pool = np.asarray(list(dev), np.int64)
            sel = {"pool": [int(f) for f in pool], "tier_choice": choice, "tier_choice_label": CHOICE_LABELS[choice],
                   "quantile_reference": f"ΔTC of the {len(all_feats)} scored latents (select.pool = {run.cfg.select.pool!r})",
                   "reading": reading, "positions": positions, "ranking": ranking}
            if len(pool):
                idx = np.asarray([pos[int(f)] for f in pool])
                t_dtc = dtc_tiers(dtc[idx], pool, reference=dtc, ranking=ranking)
                t_out = size_matched_tiers(outsc[idx], pool, {k: len(v) for k, v in t_dtc.items()})
                r_dtc = choose_tier(t_dtc, dev, test, choice=choice)
                r_out = choose_tier(t_out, dev, test, choice=choice)
                sel.update(g_dtc=r_dtc["score"], tier_dtc=r_dtc["tier"], g_output=r_out["score"],
                           tier_output=r_out["tier"], dtc=r_dtc, output=r_out)
                # the selection each ΔTC reading would give (the report's comparison of the readings)
                sel["by_reading"] = {
                    r: {k: v for k, v in choose_tier(dtc_tiers(sc[idx], pool, reference=sc, ranking=ranking), dev, test,
                                                     choice=choice).items() if k in ("tier", "score", "size")}
                    for r, sc in by_reading.items()}
            if run.is_writer:
                atomic_write_json(d / "steering" / "selected.json", sel)
            outputs.append(rel(run, d / "steering" / "selected.json"))
    return outputs


def concept_features(run: Run, sae_dir: Path, d_sae: int) -> list:
    """The concepts one SAE is steered toward (``steer.concepts``: its CONCEPT100 from
    autointerp.json, or a concept file; the first ``steer.n_concepts``), each latent checked
    against the SAE's width. Used by the steer stage and by ``select.pool = "concepts"``."""
    from jaxsae.steer import from_source

    c = run.cfg.steer
    concepts = from_source(c.concepts, sae_dir / "autointerp.json", c.n_concepts)
    wide = [x.feature for x in concepts if x.feature >= d_sae]
    if wide:
        raise UserError(f"steer.concepts {c.concepts!r} names latent {wide[0]} but the SAE {sae_dir.name} has {d_sae} "
                        "latents; use a concept file of this SAE's latents or steer.concepts = 'concept100'")
    return concepts


# ------------------------------------------------------------------------------ judge validity


def check_validity(run: Run) -> None:
    """The validity stage's data folder, before any model loads: a missing one is one line naming
    ``validity.axbench_dir`` and ``validity.skip`` (unless ``validity.required`` is false)."""
    v = run.cfg.validity
    if v.skip:
        return
    problem = validity_data_problem(v)
    if problem is not None and v.required:
        raise UserError(f"{problem}; or skip measuring the judge with --validity.skip")
    if not 0.0 < v.ci_level < 1.0:
        raise UserError(f"validity.ci_level must lie strictly between 0 and 1, got {v.ci_level}")


def validity_data_problem(v) -> str | None:
    """What is wrong with the validity stage's AxBench data (one line naming the setting), or None."""
    from jaxsae.judge.validate import labelled_examples

    if not v.axbench_dir:
        return ("validity.axbench_dir is empty: set it (--validity.axbench-dir DIR) to a folder of AxBench "
                "concept sets, e.g. ../shared/axbench")
    try:
        labelled_examples(v.axbench_dir, n_per_class=v.n_per_class, seed=v.seed, criteria=v.criteria)
    except UserError as e:
        return f"validity: {e}"
    return None


def stage_validity(run: Run) -> list[str]:
    """Judge validity on labelled AxBench data (:func:`jaxsae.judge.validate.validate_cached`):
    per criterion the AUROC with its bootstrap CI, digit mass and argmax agreement, and the
    AutoInterp detector on the first SAE's feature statistics (``validity.detector_latents``
    latents); cached per judge in ``judge_validity/`` (key: the judge's description, the data's
    hash and the sizes), written to ``validity.json`` with its verdict. With ``validity.skip``
    the file says the judge was not measured."""
    from jaxsae.judge.validate import validate_cached, verdict

    v = run.cfg.validity
    path = run.out / VALIDITY_FILE
    if not run.is_writer:
        return [VALIDITY_FILE]
    if v.skip:
        atomic_write_json(path, {"measured": False, "reason": "validity.skip = true"})
        return [VALIDITY_FILE]
    problem = validity_data_problem(v)
    if problem is not None:  # validity.required = false (else check_validity stopped the run)
        print(f"validity: not measured ({problem})", flush=True)
        atomic_write_json(path, {"measured": False, "reason": f"{problem} (validity.required = false)"})
        return [VALIDITY_FILE]
    judge, (explainer, detector) = validity_judges(run)
    kw = {}
    if v.detector_latents > 0:
        from jaxsae.autointerp.prompts import TokenText
        from jaxsae.autointerp.validate import DetectorCheck
        from jaxsae.features import load as load_stats

        spec = run.cfg.models[0]
        first = sae_path(run, spec, sweep_entries(run, spec)[0])
        lm = load_lm(spec.source, spec.dtype, spec.tensor_parallel)
        kw = dict(detector=DetectorCheck(explainer, detector, load_stats(first / "feature_stats"), TokenText(lm.tokenizer),
                                         run.cfg.autointerp, v))
    res = validate_cached(judge, v, run.out / VALIDITY_CACHE, **kw)
    client = getattr(judge, "client", None)  # an API judge: the rating judge and the detector share it
    failed = int(client.stats.hard_failures) if client is not None else 0
    if failed:  # not a result: the cached file goes (the chat cache keeps every answered request)
        (run.out / VALIDITY_CACHE / f"{res['cache_key']}.json").unlink(missing_ok=True)
    if "detector" in res:
        res["detector"]["sae"] = rel(run, first)
    res.update(measured=True, verdict=verdict(res), request_failures=failed)
    atomic_write_json(path, res)
    return [VALIDITY_FILE]


def validity_incomplete(run: Run) -> str | None:
    """Whether some of the validity stage's judge requests failed for good (the stage is not done)."""
    res = read_json(run.out / VALIDITY_FILE) or {}
    n = int(res.get("request_failures") or 0)
    if not n:
        return None
    return (f"{n} judge validity requests failed for good; they are not results: re-run the same command to retry "
            "only them (the answered ones are cached), or check the judge (judge.base_url, judge.model)")


def stage_analysis(run: Run) -> list[str]:
    """Kendall tau_b / psi / Psi of µ vs g (and after selection), selection summaries -> results.json."""
    import time

    from jaxsae.analysis import compare_readings, group_levels, lift_ci, rank_agreement, selection_rank, selection_summary
    from jaxsae.templates import describe as describe_templates

    a = settings = run.cfg.analysis
    records = group_levels(with_uncertainty(run, collect_records(run)), a.level_grouping)
    results = {
        "sweep": run.cfg.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "level_grouping": a.level_grouping,
        "records": records,
        "tau": rank_agreement(records, x="mu", y="g", settings=settings),
        "tau_after": {
            "g_dtc": rank_agreement(records, x="mu", y="g_dtc", settings=settings),
            "gain_dtc": selection_rank(records, settings=settings),
        },
        "selection": selection_summary(records),
        "selection_lift": lift_ci(records, settings=settings),
        "select": {"reading": run.cfg.select.reading, "positions": run.cfg.select.positions,
                   "mode": run.cfg.select.mode, "ranking": run.cfg.select.ranking},
        "dtc_readings": compare_readings(dtc_by_reading(run, records), used=run.cfg.select.reading),
        "templates": {"judge": describe_templates(run.cfg.judge.templates),
                      "autointerp": describe_templates(run.cfg.autointerp.templates)},
        "random_labels": run.cfg.autointerp.random_labels,
        "judge_validity": read_json(run.out / VALIDITY_FILE),
        "timings": dict(run.timings),
    }
    if run.is_writer:
        atomic_write_json(run.out / "results.json", results)
    return ["results.json"]


def stage_report(run: Run) -> list[str]:
    """report.md with tables beside the paper's values, plots, example generations, and
    report/features.html (every CONCEPT latent of every SAE on one sortable page), linked from it."""
    from jaxsae.report import write_report
    from jaxsae.report.features import PAGE_FILE, features_page

    path = run.out / "results.json"
    results = read_json(path)
    if results is None:
        raise UserError(f"{path} is missing or unreadable: run the analysis stage first")
    results["timings"] = {**results.get("timings", {}), **run.timings}
    if not run.is_writer:
        return ["report.md", PAGE_FILE]
    page = features_page(run.out)  # before report.md, which links to it
    out = write_report(run.out, results)
    plots = sorted(rel(run, p) for p in (run.out / "plots").glob("*.png"))
    return [rel(run, out), rel(run, page), *plots]


STAGES: list[Stage] = [
    Stage("train", ("models", "data", "train"), (), stage_train, "harvest activations and train the SAE sweep",
          collective=True, validate=validate_train, expensive=True,
          per_sae=("cfg.json", "sae_weights.safetensors")),
    Stage("metrics", ("eval",), ("train",), stage_metrics, "core metrics: L0, FVU, CE-loss and KL scores",
          split=True, per_sae=("metrics.json",)),
    Stage("autointerp", ("eval", "autointerp", "judge"), ("train",), stage_autointerp,
          "feature statistics and AutoInterp scores (µ, CONCEPT100)", split=True, validate=check_templates,
          per_sae=("autointerp.json",), incomplete=autointerp_incomplete),
    Stage("validity", ("validity", "judge"), ("autointerp",), stage_validity,
          "judge validity on labelled AxBench data (AUROC with CIs), cached per judge", validate=check_validity,
          incomplete=validity_incomplete),
    Stage("steer", ("steer", "judge"), ("autointerp",), stage_steer, "steering utility g without selection (AxBench)",
          split=True, validate=validate_steer, per_sae=("steering/utility.json",), incomplete=steer_incomplete),
    # after "steer": with select.pool = "concepts" the scored latents are the steered concepts
    Stage("select", ("select",), ("autointerp", "steer"), stage_select, "ΔTC and output score of every latent",
          split=True, per_sae=("dtc.npz",)),
    Stage("steer_selected", ("select",), ("steer", "select"), stage_steer_selected,
          "selection tiers by ΔTC and output score, chosen on dev, scored on test", per_sae=("steering/selected.json",)),
    Stage("analysis", ("analysis",), ("metrics", "steer_selected", "validity"), stage_analysis,
          "Kendall tau_b / psi / Psi, selection summaries -> results.json"),
    Stage("report", (), ("analysis",), stage_report,
          "report.md with tables beside the paper's, plots, examples; report/features.html"),
]
