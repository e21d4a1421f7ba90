"""Steering batched across concepts and SAEs (``run_utility_many``) against the per-concept path
(``steer_concept``): the same records, the rows of many concepts, factors and SAEs in a batch each
steered by its own vector, prompts of many lengths, and batches of several sizes."""

from __future__ import annotations

import json

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
