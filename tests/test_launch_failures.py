"""Failures are not results: the smoke sweep through `python -m jaxsae.launch` with an API judge (a
local OpenAI-compatible server) whose requests fail for good. A stage with failed judge requests
stops the run with one line and exit 2, is shown as incomplete, keeps what it made, and a plain
re-run sends only the requests that failed; a judge that answers nothing is an error, not µ = None.
The launcher runs in this process (tests/launcher.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

import launcher
from launcher import STAGES
from test_judge_api import FakeChatServer, default_answer

PROXIES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def kind(body: dict) -> str:
    """"explain", "detect" or "rate": which protocol a request belongs to."""
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "Summarise in one sentence" in system:
        return "explain"
    if "Passages:" in user:
        return "detect"
    return "rate"


def key(body: dict) -> str:
    return hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()


class Answer:
    """Answers every protocol; while ``failing`` names a request kind, a third of those requests
    (by content, so a retry fails again) get no answer at all."""

    def __init__(self):
        self.failing: str | None = None
        self.one_in = 3  # which share of the ``failing`` kind fails: 1 in one_in
        self.ok: set[str] = set()  # requests answered so far

    def __call__(self, body):
        k = kind(body)
        if k == self.failing and int(key(body)[:8], 16) % self.one_in == 0:
            raise ConnectionAbortedError("injected")  # the connection dies: the client retries, then gives up
        self.ok.add(key(body))
        if k == "explain":
            return "This neuron activates on common words."
        if k == "detect":
            return "1, 2"
        return default_answer(body)


def launch(out: Path, url: str, *extra: str, validity: bool = False) -> subprocess.CompletedProcess:
    """The smoke sweep with the API judge at ``url`` (the validity stage skipped unless asked),
    through the launcher in this process (tests/launcher.py), with no proxy in the environment."""
    return launcher.launch("--sweep", "smoke", "--out", str(out), "--judge.kind", "api", "--judge.base-url", url,
                           "--judge.api-key-env", "", "--judge.max-retries", "1", "--judge.timeout-s", "30",
                           "--judge.max-concurrency", "2", *([] if validity else ["--validity.skip"]), *extra,
                           env=dict.fromkeys(PROXIES))


def results(out: Path) -> list[Path]:
    """Every SAE's autointerp.json (not the stage's manifest of the same name)."""
    return [p for p in out.glob("**/autointerp.json") if "manifests" not in p.parts]


def last_line(r: subprocess.CompletedProcess) -> str:
    """The launcher's error: one line, the last of stderr, with no traceback before it."""
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.stderr.strip().splitlines()[-1]


def status(out: Path, url: str, validity: bool = False) -> dict[str, str]:
    r = launch(out, url, "--status", validity=validity)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln.split() for ln in r.stdout.splitlines() if ln.strip()]
    return {ln[0]: ln[1] for ln in lines if len(ln) >= 2 and ln[0] in STAGES}


def sent_since(srv: FakeChatServer, n: int, which: str) -> list[str]:
    return [key(b) for _, b in srv.calls[n:] if kind(b) in which]


@pytest.fixture
def srv():
    answer = Answer()
    s = FakeChatServer(answer=answer)
    s.answer_state = answer
    yield s
    s.close()


def test_failed_requests_leave_the_stage_incomplete_and_a_rerun_retries_only_them(srv, tmp_path):
    out, ans = tmp_path / "run", srv.answer_state

    # 1. a third of the AutoInterp requests fail for good: the run stops at autointerp, one line, exit 2
    ans.failing = "explain"
    r = launch(out, srv.url)
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    err = last_line(r)  # after the client's warning per failed request
    assert "stage 'autointerp' is not done" in err and "AutoInterp judge requests failed" in err, r.stderr[-3000:]
    assert "re-run the same command" in err
    assert not (out / "manifests" / "autointerp.json").exists() and not (out / "manifests" / "steer.json").exists()
    assert len(results(out)) == 4  # what was made is kept
    st = status(out, srv.url)
    assert st["train"] == "done" and st["autointerp"] == "incomplete" and st["steer"] == "todo"
    answered_before = set(ans.ok)

    # 2. a plain re-run: AutoInterp sends only what failed (explanations and the detections they
    #    held back), then a third of the steering ratings fail: the run stops at steer
    ans.failing = "rate"
    n = len(srv.calls)
    r = launch(out, srv.url)
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    assert "stage 'steer' is not done" in r.stderr and "steering rating judge requests failed" in r.stderr
    retried = sent_since(srv, n, ("explain", "detect"))
    assert retried and not set(retried) & answered_before
    assert "autointerp: done" not in r.stdout and (out / "manifests" / "autointerp.json").exists()
    for p in results(out):
        s = json.loads(p.read_text())["summary"]
        assert s["n_request_failed"] == 0 and s["mu"] is not None
    assert status(out, srv.url)["steer"] == "incomplete"
    answered_before = set(ans.ok)

    # 3. the judge recovers (after a rate limit with a positive Retry-After and a completion whose
    #    content is null, both retried): the re-run sends only the failed ratings, the study completes
    ans.failing = None
    srv.plan.extend([(429, "1"), "null"])
    n = len(srv.calls)
    r = launch(out, srv.url)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert not srv.plan  # both were served
    again = sent_since(srv, n, ("explain", "detect", "rate"))
    assert again and not set(again) & answered_before
    assert all(kind(b) == "rate" for _, b in srv.calls[n:])
    for p in out.glob("**/steering/utility.json"):
        assert json.loads(p.read_text())["judge_stats"]["hard_failures"] == 0
    recs = json.loads((out / "results.json").read_text())["records"]
    assert len(recs) == 4 and all(r["mu"] is not None and r["g"] is not None for r in recs)
    assert status(out, srv.url) == dict.fromkeys(STAGES, "done")

    # 3b. the validity stage's ratings fail likewise: incomplete, then retried alone once the judge answers
    ans.failing = "rate"
    answered_before = set(ans.ok)
    r = launch(out, srv.url, "--redo", "validity", validity=True)
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    err = last_line(r)
    assert "stage 'validity' is not done" in err and "judge validity requests failed" in err, err
    assert status(out, srv.url, validity=True)["validity"] == "incomplete"
    answered_before = set(ans.ok)
    ans.failing = None
    n = len(srv.calls)
    r = launch(out, srv.url, "--redo", "validity", validity=True)  # the same command again
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    again = sent_since(srv, n, ("explain", "detect", "rate"))
    assert again and not set(again) & answered_before
    v = json.loads((out / "validity.json").read_text())
    assert v["measured"] and v["request_failures"] == 0 and set(v["criteria"]) == {"concept", "instruction", "fluency"}
    assert status(out, srv.url, validity=True) == dict.fromkeys(STAGES, "done")

    # 4. an unreachable judge stops the stage at its first request (another model name: nothing cached)
    r = launch(out, "http://127.0.0.1:9/v1", "--judge.model", "other-model", "--redo", "autointerp")
    assert r.returncode == 2 and "cannot reach the judge" in last_line(r), (r.stdout[-2000:], r.stderr[-2000:])
    assert not (out / "manifests" / "autointerp.json").exists()

    # 5. a judge that answers but fails every explanation is an error, not a done stage with µ = None
    ans.failing, ans.one_in = "explain", 1
    r = launch(out, srv.url, "--judge.model", "other-model", "--redo", "autointerp")
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    err = last_line(r)
    assert "every one of the" in err and "judge.base_url" in err and "stage 'autointerp' is not done" in err
    assert not (out / "manifests" / "autointerp.json").exists()
    assert all(json.loads(p.read_text())["summary"]["mu"] is None for p in results(out))
