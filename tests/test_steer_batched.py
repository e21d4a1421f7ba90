"""Steering batched across concepts and SAEs (``run_utility_many``) against the per-concept path
(``steer_concept``): the same records, the rows of many concepts, factors and SAEs in a batch each
steered by its own vector, prompts of many lengths, and batches of several sizes."""

from __future__ import annotations

import json
import threading

import jax
import numpy as np
import pytest

from jaxsae.steer import Concept, SteerJob, SteerSettings, row_edit, run_utility_many, steer_concept, unit_directions
from jaxsae.steer.concepts import BUNDLED_INSTRUCTIONS
from jaxsae.steer.edits import feature_edit

from test_steer_edits import random_sae
from test_steer_utility import TextJudge

LAYER = 1
POOL = list(BUNDLED_INSTRUCTIONS)
CONCEPTS = [Concept(3, "cats", 0), Concept(8, "numbers", 1), Concept(12, "rain", 2)]


def _acts(seed):
    return np.random.RandomState(seed).uniform(0.5, 4.0, 16).astype(np.float32)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batched_records_equal_per_concept_records(tiny_llama, tmp_path, temperature):
    st = SteerSettings(factors=(0.5, 4.0), n_instructions=4, max_new_tokens=6, temperature=temperature, seed=1)
    saes = [random_sae(tiny_llama.config.d_model, seed=s) for s in (0, 1)]
    jobs = [SteerJob(sae, LAYER, CONCEPTS, _acts(k), POOL, tmp_path / f"sae{k}") for k, sae in enumerate(saes)]
    # 2 SAEs x 3 concepts x (4 dev + 2 test) rows in batches of 5: rows of several concepts, SAEs and
    # factors share each batch, batches pad to fixed sizes
    judge = TextJudge()
    sums = run_utility_many(tiny_llama, judge, jobs, st, batch=5, progress=False)
    for job, s in zip(jobs, sums):
        got = {json.loads(x)["feature"]: json.loads(x) for x in (job.out_dir / "concepts.jsonl").read_text().splitlines()}
        for c in CONCEPTS:
            want = json.loads(json.dumps(steer_concept(tiny_llama, TextJudge(), job.sae, LAYER, c, job.max_acts, POOL, st)))
            rec = {k: v for k, v in got[c.feature].items() if k not in ("judge", "model")}
            assert rec == want
        assert s["g"] == pytest.approx(np.mean([got[c.feature]["test_score"] for c in CONCEPTS]))
    # the two SAEs steer with their own directions: the same concept's text differs
    outs = [[g["output"] for g in json.loads((j.out_dir / "concepts.jsonl").read_text().splitlines()[0])["generations"]]
            for j in jobs]
    assert outs[0] != outs[1]
    # judged batch by batch: 24 dev rows in 5 batches, then 12 test rows in 3
    assert judge.calls == 5 + 3


def test_row_edit_equals_feature_edit(tiny_llama):
    sae = random_sae(tiny_llama.config.d_model)
    acts = _acts(0)
    prompts = ["Explain how a rainbow forms.", "Write a poem about the morning."]
    f, alphas = 5, [0.5, 3.0]
    want = tiny_llama.generate_ids(prompts, max_new_tokens=6, steer=feature_edit(LAYER, sae, [f], acts, alphas))
    v = unit_directions(sae, [f])[0]
    delta = np.stack([(np.float32(a) * acts[f]) * v for a in alphas])
    assert tiny_llama.generate_ids(prompts, max_new_tokens=6, steer=row_edit(LAYER, delta)) == want


_GENERATE_COMPILES: list[int] = []
"""The thread of each ``generate_tokens`` compile (a process-wide listener: JAX has no public way to remove one)."""
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, fun_name=None, **_: _GENERATE_COMPILES.append(threading.get_ident())
    if event == "/jax/core/compile/backend_compile_duration" and fun_name == "jit(generate_tokens)" else None)


def test_programs_compile_ahead_and_the_run_reuses_them(tiny_llama, tmp_path, monkeypatch):
    sae = random_sae(tiny_llama.config.d_model, seed=3)
    prompts = ["Explain how a rainbow forms.", "Explain how a rainbow forms.", "Write a poem about the morning.", "Hi"]
    edit = row_edit(LAYER, np.zeros((4, tiny_llama.config.d_model), np.float32))
    n0 = len(_GENERATE_COMPILES)
    tiny_llama.compile_generate(prompts, max_new_tokens=5, temperature=1.0, steer=edit, seed=[1, 2, 3, 4])
    assert len(_GENERATE_COMPILES) == n0 + 1
    # running it with other seeds and edit values compiles nothing
    other = row_edit(LAYER, np.ones((4, tiny_llama.config.d_model), np.float32))
    tiny_llama.generate(prompts, max_new_tokens=5, temperature=1.0, steer=other, seed=[5, 6, 7, 8])
    assert len(_GENERATE_COMPILES) == n0 + 1
    # the stage compiles each batch's program ahead, in the order the batches run (the test batches
    # before their factors are chosen on dev), in another thread: the run itself compiles nothing
    calls = []

    def spy(name):
        method = getattr(tiny_llama, name)

        def call(prompts, **kw):
            calls.append((name, tuple(prompts), kw["max_new_tokens"], kw["temperature"], len(kw["seed"]),
                          kw["steer"].layer, np.shape(kw["steer"].args["delta_bd"])))
            return method(prompts, **kw)
        return call

    for name in ("compile_generate", "generate"):
        monkeypatch.setattr(tiny_llama, name, spy(name))
    st = SteerSettings(factors=(0.5, 4.0), n_instructions=4, max_new_tokens=7, temperature=1.0, seed=2)
    job = SteerJob(sae, LAYER, CONCEPTS, _acts(3), POOL, tmp_path / "sae")
    n1 = len(_GENERATE_COMPILES)
    run_utility_many(tiny_llama, TextJudge(), [job], st, batch=8, progress=False)
    compiles = [c[1:] for c in calls if c[0] == "compile_generate"]
    runs = [c[1:] for c in calls if c[0] == "generate"]
    assert len(runs) == 2 + 1  # 12 dev rows in batches of 8 and 4 (padded to 8), then 6 test rows
    assert compiles == runs
    for i, c in enumerate(calls):
        if c[0] == "generate":
            assert ("compile_generate",) + c[1:] in calls[:i]
    assert threading.get_ident() not in _GENERATE_COMPILES[n1:]
