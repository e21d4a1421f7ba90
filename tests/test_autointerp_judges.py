"""The AutoInterp API judge against a real local HTTP server implementing /v1/chat/completions:
the explanation and detection requests, SAEBench's parsing of the list of activating windows,
malformed replies and failed requests (left unscored and counted), and the on-disk cache (a
re-run makes no requests). Also the reply parsers and the local judge's decision rules."""

from __future__ import annotations

import collections
import dataclasses
import re

import numpy as np
import pytest

from jaxsae.autointerp import AutoInterpConfig, api_roles, decide, run_autointerp
from jaxsae.autointerp.prompts import parse_explanation, parse_predictions
from jaxsae.chat import ChatClient

from test_autointerp_scoring import F, case, token_text  # noqa: F401 - `case` is a fixture
from test_judge_api import no_proxy, server  # noqa: F401 - fixtures (the fake server, no proxy)

CFG = AutoInterpConfig()


class Judge:
    """The server side: explains a latent by its highlighted marker token; for detection, finds
    the passages holding the marker and answers in the format ``formats[f]`` asks for."""

    def __init__(self):
        self.formats = {0: "comma", 1: "none", 2: "brackets", 3: "and", 4: "malformed", 5: "comma"}
        self.broken: set[int] = set()  # latents whose explanation request kills the connection

    def __call__(self, body):
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        if "Summarise in one sentence" in system:
            f = int(collections.Counter(re.findall(r"<< M(\d+)>>", user)).most_common(1)[0][0])
            if f in self.broken:
                raise ConnectionAbortedError("injected")  # no answer: the client retries, then gives up
            return f"This neuron activates on the token M{f}."
        f = int(re.search(r"fires on the token M(\d+)\.", user).group(1))
        passages = re.findall(r"^(\d+)\. (.*)$", user.split("Passages:", 1)[1], re.M)
        truth = [n for n, text in passages if f"M{f}" in text]
        fmt = self.formats[f]
        if fmt == "none" or not truth:
            return "None"
        if fmt == "comma":
            return ", ".join(truth)
        if fmt == "brackets":
            return "[" + ", ".join(truth) + "]"
        if fmt == "and":
            return ", ".join(truth[:-1]) + " and " + truth[-1] + "."
        return f"I think the neuron fires in passage {truth[0]}."


def api_judge(url, cache_dir, cfg=CFG):
    """(explainer, detector) on one cached client of the local server."""
    client = ChatClient(url, "judge-model", api_key_env=None, cache_dir=cache_dir, max_retries=2,
                        timeout_s=10.0)
    return api_roles(client, cfg)


def strip_timing(result):
    out = dict(result, summary={k: v for k, v in result["summary"].items() if k not in ("seconds", "latents_per_s")})
    return out


def test_api_judge_requests_parsing_and_cache(case, server, tmp_path):
    st, _ = case
    answer = Judge()
    srv = server(answer=answer)
    judge = api_judge(srv.url, tmp_path / "cache")
    res = run_autointerp(st, *judge, CFG, token_text)
    assert res["summary"]["judge"] == "api:judge-model" and res["summary"]["detection"] == "list"

    # requests: F explanations, then F detections, with the protocol's parameters
    bodies = [b for _, b in srv.calls]
    expl = [b for b in bodies if "Summarise in one sentence" in b["messages"][0]["content"]]
    det = [b for b in bodies if b not in expl]
    assert len(expl) == F and len(det) == F and len(bodies) == 2 * F
    for b in expl:
        assert b["model"] == "judge-model" and b["temperature"] == 0.0 and b["max_tokens"] == CFG.max_explanation_tokens
        assert [m["role"] for m in b["messages"]] == ["system", "user"]
        user = b["messages"][1]["content"]
        assert len(re.findall(r"^\d+\. ", user, re.M)) == 15 and "<<" in user
    rec = {r["latent"]: r for r in res["latents"]}
    for b in det:
        assert b["temperature"] == 0.0 and b["max_tokens"] == 2 * CFG.n_scoring + 5
        system, user = b["messages"][0]["content"], b["messages"][1]["content"]
        assert "<<" not in user and len(re.findall(r"^\d+\. ", user, re.M)) == CFG.n_scoring
        f = int(re.search(r"fires on the token M(\d+)\.", user).group(1))
        example = re.search(r'for example "([\d, ]+)"', system).group(1)
        assert len(example.split(", ")) == CFG.n_expected_positive
        # the passages sent are the record's scoring windows, in the same order
        sent = re.findall(r"^\d+\. (.*)$", user.split("Passages:", 1)[1], re.M)
        assert sent == [w["text"] for w in rec[f]["scoring"]]

    # parsing: "2, 5, 7", "[2, 5]", "2, 5 and 7." read as the lists they are; "None" is an empty list
    for f in (0, 2, 3):
        assert rec[f]["score"] == 1.0 and rec[f]["predictions"] == rec[f]["labels"]
    assert rec[1]["detection_raw"] == "None" and rec[1]["predictions"] == [] and rec[1]["score"] == pytest.approx(10 / 14)
    assert rec[3]["detection_raw"].endswith(".") and " and " in rec[3]["detection_raw"]
    # a malformed reply: kept as given, not scored, counted
    assert rec[4]["predictions"] is None and rec[4]["score"] is None
    assert rec[4]["detection_raw"].startswith("I think")
    assert all(rec[f]["explanation"] == f"the token M{f}" for f in range(F))
    s = res["summary"]
    assert s["n_scored"] == F - 1 and s["n_failed"] == 1
    assert s["mean_all"] == pytest.approx(np.mean([rec[f]["score"] for f in range(F) if f != 4]))
    assert judge[0].client.stats.hard_failures == 0

    # a re-run on the same cache makes no request and gives the same result
    n = len(srv.calls)
    again = api_judge(srv.url, tmp_path / "cache")
    res2 = run_autointerp(st, *again, CFG, token_text)
    assert len(srv.calls) == n and again[0].client.stats.api_calls == 0 and again[0].client.stats.cache_hits == 2 * F
    assert strip_timing(res2) == strip_timing(res)
    # the cache is keyed by the request: another temperature asks again
    hot = dataclasses.replace(CFG, api_temperature=0.7)
    run_autointerp(st, *api_judge(srv.url, tmp_path / "cache", hot), hot, token_text)
    assert len(srv.calls) == n + 2 * F and srv.calls[-1][1]["temperature"] == 0.7


def test_failed_explanation_is_not_scored_and_retried_on_rerun(case, server, tmp_path):
    st, _ = case
    answer = Judge()
    answer.broken = {2}
    srv = server(answer=answer)
    judge = api_judge(srv.url, tmp_path / "cache")
    res = run_autointerp(st, *judge, CFG, token_text)
    rec = {r["latent"]: r for r in res["latents"]}
    assert rec[2]["explanation"] is None and rec[2]["explanation_raw"] is None
    assert rec[2]["score"] is None and rec[2]["predictions"] is None
    assert judge[0].client.stats.hard_failures == 1
    dets = [b for _, b in srv.calls if "Summarise in one sentence" not in b["messages"][0]["content"]]
    assert len(dets) == F - 1  # no detection request for the latent without an explanation
    assert res["summary"]["n_failed"] == 2 and res["summary"]["n_scored"] == F - 2  # + latent 4's malformed reply
    # the server recovers: the re-run asks only the failed explanation and its detection
    answer.broken = set()
    n = len(srv.calls)
    res2 = run_autointerp(st, *api_judge(srv.url, tmp_path / "cache"), CFG, token_text)
    assert len(srv.calls) == n + 2
    assert {r["latent"]: r for r in res2["latents"]}[2]["score"] == 1.0
    assert res2["summary"]["n_failed"] == 1


@pytest.mark.parametrize("raw, want", [
    ("2, 5, 7", [2, 5, 7]),
    ("2,5,7", [2, 5, 7]),
    (" 3 ", [3]),
    ("None", []),
    ("None.", []),
    ("", []),
    ("[2, 5]", [2, 5]),
    ("(1, 14)", [1, 14]),
    ("2, 5 and 7.", [2, 5, 7]),
    ("2 and 5", [2, 5]),
    ("1,2,,3", [1, 2, 3]),
    ("none", None),  # SAEBench only knows "None"
    ("Answer: 1", None),
    ("1 2", None),
    ("3, candle", None),
    ("None of them", None),
    ("1, ²", None),  # a digit int() cannot read: unparseable, not a crash
    ("-1", None),
])
def test_parse_predictions(raw, want):
    assert parse_predictions(raw) == want


@pytest.mark.parametrize("raw, want", [
    ("This neuron activates on the word 'cat'.", "the word 'cat'"),
    ('"This neuron activates on verbs about deciding."', "verbs about deciding"),
    ("1. This neuron responds to numbers in tables.\n2. something else", "numbers in tables"),
    ("\n\nIt fires on closing brackets", "closing brackets"),
    ("Python keywords", "Python keywords"),
    ("The neuron activates on <<def>> and <<class>>.", "def and class"),
    ("", ""),
])
def test_parse_explanation(raw, want):
    assert parse_explanation(raw) == want


def test_local_decision_rules():
    p = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.6, 0.95] + [0.0] * 7)
    assert decide(p, CFG) == [1, 3, 5, 7]  # rank: the 4 highest P(yes)
    assert decide(np.full(14, 0.99), CFG) == [1, 2, 3, 4]  # ties: first windows, always exactly 4
    thr = dataclasses.replace(CFG, detection="threshold")
    assert decide(p, thr) == [1, 3, 5, 6, 7]
    assert decide(np.full(14, 0.49), thr) == []
    assert decide(np.full(14, 0.5), thr) == list(range(1, 15))
