"""Held-out text: for an ``hf:`` data source it is streamed with ``datasets`` from the part of the
dataset the training stream never reads (its validation split, else the first documents of train,
which training then skips); a local dataset folder stands in for the Hub, loaded through the same
``load_dataset`` call. When any held-out corpus gives fewer tokens than asked, one warning says so
and the statistics record the count they rest on."""

from __future__ import annotations

import json
import warnings

import datasets
import numpy as np
import pytest

from jaxsae import features
from jaxsae.errors import UserError
from jaxsae import text as corpus
from jaxsae.features.compute import HeldOutShortWarning
from jaxsae.launch import resources
from jaxsae.launch.config import DataConfig, SweepConfig
from jaxsae.launch.runner import Run
from jaxsae.sae.random import calibrated_sae
from jaxsae.train import data, texts_from

DOCS = corpus.pydoc_texts()
TRAIN, VALID = DOCS[:12], DOCS[40:70]


def write_split(folder, split, docs):
    datasets.Dataset.from_dict({"text": list(docs)}).to_json(str(folder / f"{split}.jsonl"))


@pytest.fixture
def with_validation(tmp_path):
    write_split(tmp_path, "train", TRAIN)
    write_split(tmp_path, "validation", VALID)
    return f"hf:{tmp_path}"


@pytest.fixture
def train_only(tmp_path, monkeypatch):
    write_split(tmp_path, "train", TRAIN)
    monkeypatch.setattr(data, "HELD_OUT_DOCS", 5)
    return f"hf:{tmp_path}"


def run_on(source, tmp_path) -> Run:
    return Run(tmp_path / "run", SweepConfig(data=DataConfig(source=source)), [])


def test_held_out_is_the_validation_split(with_validation):
    assert list(data.hf_held_out_texts(with_validation)) == VALID
    assert list(data.iter_texts(with_validation)) == TRAIN  # training reads all of train
    assert texts_from(with_validation, max_chars=10**9) == TRAIN


def test_local_files_hold_out_the_last_tenth_of_every_document(tmp_path):
    (tmp_path / "a.txt").write_text(DOCS[0])
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[1:4]))
    source = f"{tmp_path / 'a.txt'},{tmp_path / 'b.jsonl'}"
    train, held = texts_from(source, max_chars=10**9), resources.texts_for(run_on(source, tmp_path))
    assert len(train) == len(held) == 4
    for doc, t, h in zip(DOCS[:4], train, held):
        assert t + h == doc and h and t  # disjoint, and together the whole document
        assert abs(len(h) - 0.1 * len(doc)) < 0.05 * len(doc) + 50 and (not h or h[0].isspace())
    assert list(data.iter_texts(source)) == train
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no .txt files"):
        resources.texts_for(run_on(str(tmp_path / "empty"), tmp_path))


def test_without_a_split_training_skips_the_held_out_documents(train_only):
    assert list(data.hf_held_out_texts(train_only)) == TRAIN[:5]
    assert list(data.iter_texts(train_only)) == TRAIN[5:]
    assert texts_from(train_only, max_chars=10**9) == TRAIN[5:]
    assert texts_from(train_only, max_chars=1) == TRAIN[5:6]


def test_launch_stats_and_metrics_read_the_held_out_part(with_validation, tiny_llama, tmp_path):
    run = run_on(with_validation, tmp_path)
    cfg = features.FeatureStatsConfig(context_len=64, total_tokens=20 * 64)
    want, _ = features.held_out_tokens(tiny_llama, cfg, VALID)
    got, _ = features.held_out_tokens(tiny_llama, cfg, resources.texts_for(run))  # the autointerp stage's text
    np.testing.assert_array_equal(got, want)
    tokens, counted = resources.held_out(run, tiny_llama, 20 * 64, 64)  # the metrics stage's
    np.testing.assert_array_equal(tokens, want)
    assert counted.shape == tokens.shape and not counted[:, 0].any()
    train_tokens, _ = features.held_out_tokens(tiny_llama, cfg, TRAIN)
    assert not np.array_equal(train_tokens[:1], tokens[:1])


def test_short_held_out_text_warns_and_records_the_count(with_validation, tiny_llama, tmp_path):
    run = run_on(with_validation, tmp_path)
    n_valid = sum(len(t) for t in tiny_llama.tokenizer(VALID, add_special_tokens=False)["input_ids"]) + len(VALID)
    cfg = features.FeatureStatsConfig(context_len=64, total_tokens=10**6, batch_size=8)
    with pytest.warns(HeldOutShortWarning, match=r"gave only [\d,]+ held-out tokens of the 1,000,000 asked for"):
        tokens, _ = features.held_out_tokens(tiny_llama, cfg, resources.texts_for(run))
    assert tokens.size == n_valid // 64 * 64  # all of the validation split, in whole contexts
    sae = calibrated_sae(tiny_llama, 1, 16, tokens[:2], fire=0.05)
    with pytest.warns(HeldOutShortWarning):
        stats = features.compute_feature_stats(tiny_llama, 1, *features.sae_encoder(sae), cfg, texts=VALID)
    assert stats.meta["n_tokens"] == tokens.size and stats.meta["config"]["total_tokens"] == 10**6


def test_the_warning_is_given_once_and_only_when_short(tiny_llama):
    short = features.FeatureStatsConfig(context_len=64, total_tokens=10**6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own: once per message and place
        features.held_out_tokens(tiny_llama, short, VALID)
        features.held_out_tokens(tiny_llama, short, VALID)
        features.held_out_tokens(tiny_llama, features.FeatureStatsConfig(context_len=64, total_tokens=10 * 64 + 5), VALID)
    assert [type(w.message) for w in caught] == [HeldOutShortWarning]


def test_the_embedded_corpus_warns_too(tiny_llama):
    cfg = features.FeatureStatsConfig(context_len=128, total_tokens=2_000_000)
    with pytest.warns(HeldOutShortWarning, match="pydoc_data.topics"):
        tokens, _ = features.held_out_tokens(tiny_llama, cfg)
    assert 50_000 < tokens.size < 2_000_000


def test_a_binary_corpus_file_is_refused(tmp_path):
    (tmp_path / "weights.txt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(UserError, match="is not UTF-8 text"):
        texts_from(str(tmp_path / "weights.txt"), max_chars=10**9)
    (tmp_path / "nul.txt").write_bytes(b"plain words\x00 and a NUL")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        texts_from(str(tmp_path / "nul.txt"), max_chars=10**9)
    (tmp_path / "ok.txt").write_bytes("mostly fine text ".encode() * 40 + b"\xff")  # one stray byte is tolerated
    assert texts_from(str(tmp_path / "ok.txt"), max_chars=10**9)[0].startswith("mostly fine")
