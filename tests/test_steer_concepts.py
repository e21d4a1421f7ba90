"""Concept sources (AxBench metadata and parquet sets, user JSONL, AutoInterp results), the
instruction pool's offline fallbacks, and the seeded dev/test split of instructions."""

from __future__ import annotations

import json

import pytest

import jaxsae.steer.concepts as C
from jaxsae.errors import UserError
from jaxsae.steer import (Concept, draw_instructions, from_autointerp, from_file, from_jsonl, from_parquet, from_source,
                          instructions)

from conftest import AXBENCH

# without the data one placeholder case remains, which the axbench fixture skips (fails under CI=true)
CONCEPT10 = sorted(AXBENCH.glob("concept10/*/metadata.jsonl")) or [AXBENCH / "concept10" / "missing" / "metadata.jsonl"]
needs_axbench = pytest.mark.usefixtures("axbench")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may wait on the network: the Hub is unreachable unless a test says otherwise."""
    monkeypatch.setattr(C, "_hub_reachable", lambda timeout=3.0: False)


# ----------------------------------------------------------------------------------- concepts

@needs_axbench
@pytest.mark.parametrize("path", CONCEPT10, ids=lambda p: p.parent.name)
def test_axbench_concept10_metadata(path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    got = from_jsonl(path)
    assert len(got) == len(rows) == 10
    for c, r in zip(got, rows):
        assert c.feature == int(r["ref"].rsplit("/", 1)[-1]) and c.feature >= 0
        assert c.concept == r["concept"].strip() and c.concept
        assert c.concept_id == r["concept_id"]


@needs_axbench
def test_axbench_concept500_metadata():
    path = AXBENCH / "concept500" / "prod_2b_l20_v1" / "metadata.jsonl"
    got = from_jsonl(path)
    assert len(got) == 500 and [c.concept_id for c in got] == list(range(500))
    assert all(0 <= c.feature < 16384 for c in got)  # Gemma Scope 16k latents


@needs_axbench
@pytest.mark.parametrize("path", CONCEPT10, ids=lambda p: p.parent.name)
@pytest.mark.parametrize("name", ["latent_eval_data.parquet", "train_data.parquet"])
def test_axbench_concept10_parquet(path, name):
    # latent_eval_data carries sae_id / sae_link; train_data has neither and takes the latent ids
    # from the metadata.jsonl beside it; both give the metadata's concepts, in concept_id order
    got = from_parquet(path.parent / name)
    assert got == from_jsonl(path) and len(got) == 10
    assert from_file(path.parent / name) == got


@needs_axbench
def test_parquet_without_latent_ids_or_metadata(tmp_path):
    import pyarrow.parquet as pq

    src = AXBENCH / "concept10" / "prod_2b_l20_v1"
    lone = tmp_path / "data.parquet"  # the Hub layout: <model>/<layer>/train/data.parquet, no metadata
    lone.write_bytes((src / "train_data.parquet").read_bytes())
    with pytest.raises(UserError, match="no sae_id column and no metadata.jsonl beside it; put the set's") as e:
        from_parquet(lone)
    assert "\n" not in str(e.value)
    (tmp_path / "metadata.jsonl").write_text((src / "metadata.jsonl").read_text())
    assert from_parquet(lone) == from_jsonl(src / "metadata.jsonl")
    # a metadata.jsonl of another set lacks some concept ids
    (tmp_path / "metadata.jsonl").write_text("".join((src / "metadata.jsonl").read_text().splitlines(True)[:3]))
    with pytest.raises(UserError, match="no latent id for concept_id 3, 4, 5, 6, 7"):
        from_parquet(lone)
    # sae_link alone is enough
    t = pq.read_table(src / "latent_eval_data.parquet").drop(["sae_id"])
    pq.write_table(t, tmp_path / "links.parquet")
    assert from_parquet(tmp_path / "links.parquet") == from_jsonl(src / "metadata.jsonl")


def test_malformed_parquet_is_a_user_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(UserError, match="does not exist; pass an AxBench parquet set"):
        from_parquet(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_text('{"feature": 1, "concept": "a"}\n')
    with pytest.raises(UserError, match="is not a readable parquet file"):
        from_file(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"input": ["a"], "concept_id": [0]}), tmp_path / "cols.parquet")
    with pytest.raises(UserError, match="lacks the AxBench column\\(s\\) output_concept, category"):
        from_parquet(tmp_path / "cols.parquet")
    pq.write_table(pa.table({"concept_id": [-1, 0], "output_concept": ["EEEEE", "cats"], "category": ["negative", "negative"],
                             "sae_id": [0, 5]}), tmp_path / "neg.parquet")
    with pytest.raises(UserError, match="no positive rows"):
        from_parquet(tmp_path / "neg.parquet")
    pq.write_table(pa.table({"concept_id": [0], "output_concept": ["cats"], "category": ["positive"],
                             "sae_link": ["https://x/gemma/abc"]}), tmp_path / "link.parquet")
    with pytest.raises(UserError, match="does not end in a latent id") as e:
        from_parquet(tmp_path / "link.parquet")
    assert "\n" not in str(e.value)
    # hand-made: positive rows give the concept, hard negatives (same concept_id) do not; one per latent
    pq.write_table(pa.table({"concept_id": [1, 1, 0, -1], "output_concept": ["x//contrast", "dogs", "cats", "EEEEE"],
                             "category": ["hard negative", "positive", "positive", "negative"],
                             "sae_id": [7, 7, 3, 0]}), tmp_path / "ok.parquet")
    assert from_parquet(tmp_path / "ok.parquet") == [Concept(3, "cats", 0), Concept(7, "dogs", 1)]
    pq.write_table(pa.table({"concept_id": [0, 1], "output_concept": ["cats", "dogs"], "category": ["positive"] * 2,
                             "sae_id": [3, 3]}), tmp_path / "dup.parquet")
    with pytest.raises(UserError, match="names latent 3 twice"):
        from_parquet(tmp_path / "dup.parquet")


def test_from_source(tmp_path):
    ai = tmp_path / "autointerp.json"
    ai.write_text(json.dumps({"concept100": [5, 9], "latents": [{"latent": 5, "explanation": "cats"},
                                                                {"latent": 9, "explanation": "numbers"}]}))
    user = tmp_path / "mine.jsonl"
    user.write_text('{"feature": 1, "concept": "a"}\n{"feature": 2, "concept": "b"}\n{"feature": 4, "concept": "c"}\n')
    assert from_source("concept100", ai) == [Concept(5, "cats", 0), Concept(9, "numbers", 1)]
    assert from_source("concept100", ai, 1) == [Concept(5, "cats", 0)]
    assert from_source(str(user), ai) == from_jsonl(user) and from_source(str(user), ai, 2) == from_jsonl(user)[:2]
    with pytest.raises(UserError, match="does not exist"):
        from_source(str(tmp_path / "missing.jsonl"), ai)


def test_duplicate_latents_are_a_user_error(tmp_path):
    p = tmp_path / "dup.jsonl"
    p.write_text('{"feature": 4, "concept": "a"}\n{"feature": 4, "concept": "b"}\n')
    with pytest.raises(UserError, match="names latent 4 twice \\('a' and 'b'\\); steer each latent toward one concept"):
        from_jsonl(p)


def test_user_jsonl(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text('{"feature": 12, "concept": " dogs "}\n\n'
                 '{"feature": "7", "concept": "the colour blue", "concept_id": 40}\n'
                 '{"ref": "https://x/y/gemma/123/", "concept": "code"}\n')
    assert from_jsonl(p) == [Concept(12, "dogs", 0), Concept(7, "the colour blue", 40), Concept(123, "code", 2)]


@pytest.mark.parametrize("text, line", [
    ('{"feature": 1, "concept": "a"}\n{"feature": 2, "concept": \n', 2),  # bad JSON
    ('{"feature": 1}\n', 1),  # missing concept
    ('{"concept": "a"}\n', 1),  # neither feature nor ref
    ('{"ref": "https://x/gemma/abc", "concept": "a"}\n', 1),  # ref not ending in an id
    ('{"feature": 1, "concept": "   "}\n', 1),  # empty concept
    ('{"feature": -3, "concept": "a"}\n', 1),  # negative id
    ('{"feature": [1], "concept": "a"}\n', 1),  # wrong type
    ('{"feature": 1, "concept": "a"}\n{"feature": 2, "concept": "b", "concept_id": "x"}\n', 2),
    ('["feature", "concept"]\n', 1),  # not an object
    ('"just a string"\n', 1),
])
def test_malformed_lines_are_user_errors(tmp_path, text, line):
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    with pytest.raises(UserError) as e:
        from_jsonl(p)
    msg = str(e.value)
    assert "\n" not in msg and f"{p}:{line} " in msg and '"concept"' in msg and '"feature"' in msg


@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_empty_file_is_a_user_error(tmp_path, text):
    p = tmp_path / "empty.jsonl"
    p.write_text(text)
    with pytest.raises(UserError, match="holds no concepts; add one JSON object per line") as e:
        from_jsonl(p)
    assert "\n" not in str(e.value)


def test_missing_or_binary_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist; pass an AxBench metadata.jsonl"):
        from_jsonl(tmp_path / "nope.jsonl")
    p = tmp_path / "bin.jsonl"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="not UTF-8"):
        from_jsonl(p)


def test_from_autointerp(tmp_path):
    p = tmp_path / "autointerp.json"
    p.write_text(json.dumps({
        "concept100": [5, 3, 9, 1],
        "latents": [{"latent": 5, "explanation": " cats "}, {"latent": 3, "explanation": ""},
                    {"latent": 9, "explanation": "numbers"}, {"latent": 1, "explanation": None}],
    }))
    # failed explanations (empty / None) are skipped; concept_id is the position in CONCEPT100
    assert from_autointerp(p) == [Concept(5, "cats", 0), Concept(9, "numbers", 2)]
    assert from_autointerp(p, n=1) == [Concept(5, "cats", 0)]
    p.write_text('{"latents": []}')
    with pytest.raises(UserError, match="re-run the autointerp stage"):
        from_autointerp(p)
    with pytest.raises(UserError, match="re-run the autointerp stage"):
        from_autointerp(tmp_path / "missing.json")


# ------------------------------------------------------------------------------- instructions

def test_offline_without_axbench_gives_the_bundled_list():
    assert instructions() == list(C.BUNDLED_INSTRUCTIONS)
    assert len(set(C.BUNDLED_INSTRUCTIONS)) == len(C.BUNDLED_INSTRUCTIONS) >= 10


@needs_axbench
def test_offline_with_axbench_reads_the_input_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = AXBENCH / "concept10" / "prod_2b_l20_v1"
    pool = instructions(n_pool=50, axbench_dir=d)
    assert len(pool) == 50 and len(set(pool)) == 50
    want = []
    for p in sorted(d.rglob("*.parquet")):
        want.extend(s.strip() for s in pq.read_table(p, columns=["input"]).column("input").to_pylist() if s and s.strip())
    assert pool == list(dict.fromkeys(want))[:50]
    assert set(pool).isdisjoint(C.BUNDLED_INSTRUCTIONS)
    # by default every distinct instruction of the folder
    assert instructions(axbench_dir=d) == list(dict.fromkeys(want))
    assert len(instructions(axbench_dir=AXBENCH)) > 200
    # a folder with other parquet files, or none, falls through to the bundled list
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "other.parquet")
    assert instructions(axbench_dir=tmp_path) == list(C.BUNDLED_INSTRUCTIONS)


def test_online_alpaca_eval_comes_first(tmp_path, monkeypatch):
    import huggingface_hub

    f = tmp_path / "alpaca_eval.json"
    f.write_text(json.dumps([{"instruction": f"task {i}", "output": "x"} for i in range(5)]))
    calls = []

    def fake_download(repo_id, filename, repo_type=None, **kw):
        calls.append((repo_id, filename, repo_type))
        return str(f)

    monkeypatch.setattr(C, "_hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert instructions(n_pool=3, axbench_dir=AXBENCH) == ["task 0", "task 1", "task 2"]
    assert calls == [("tatsu-lab/alpaca_eval", "alpaca_eval.json", "dataset")]
    # by default the whole pool (AlpacaEval has 805 instructions, more than any former cut of 200)
    f.write_text(json.dumps([{"instruction": f"task {i}", "output": "x"} for i in range(805)]))
    assert instructions() == [f"task {i}" for i in range(805)]

    def failing_download(*a, **kw):
        raise OSError("no route")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    assert instructions() == list(C.BUNDLED_INSTRUCTIONS)  # a failed download falls back


def test_hub_reachability_respects_offline_mode(monkeypatch):
    monkeypatch.undo()  # the real check, with the network calls stubbed
    import socket

    def no_network(*a, **kw):
        raise AssertionError("must not connect when HF_HUB_OFFLINE is set")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert C._hub_reachable() is False

    def refused(*a, **kw):
        raise OSError("refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert C._hub_reachable() is False


# -------------------------------------------------------------------------- dev / test split

def test_draw_instructions_split():
    pool = [f"instruction {i}" for i in range(40)]
    dev, test = draw_instructions(pool, 10, seed=123)
    assert len(dev) == len(test) == 5
    assert set(dev).isdisjoint(test) and set(dev) | set(test) <= set(pool)
    assert (dev, test) == draw_instructions(pool, 10, seed=123)  # reproducible
    assert (dev, test) != draw_instructions(pool, 10, seed=124)  # another concept, another draw
    assert draw_instructions(pool, 4, seed=0)[0].__len__() == 2
    # a pool smaller than n: all of it, split in halves
    dev, test = draw_instructions(pool[:7], 10, seed=1)
    assert len(dev) == 3 and len(test) == 4 and sorted(dev + test) == sorted(pool[:7])
    with pytest.raises(UserError, match="at least 2 instructions"):
        draw_instructions(pool, 1, seed=0)


def test_missing_axbench_data_skips_here_and_fails_under_ci(monkeypatch, tmp_path):
    import conftest

    monkeypatch.setattr(conftest, "AXBENCH", tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true requires it"):
        conftest.require_axbench()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="AxBench data not found"):
        conftest.require_axbench()
    monkeypatch.setattr(conftest, "AXBENCH", AXBENCH)
    if AXBENCH.is_dir():
        assert conftest.require_axbench() == AXBENCH
