"""ChatClient / APIJudge against a real local HTTP server implementing /v1/chat/completions, with
injected failures (429, 5xx, timeouts, garbage bodies, dropped connections, auth errors)."""

from __future__ import annotations

import collections
import contextlib
import http.server
import json
import socket
import threading
import time

import numpy as np
import pytest

from jaxsae.errors import UserError
from jaxsae.chat import ChatClient
from jaxsae.judge import APIJudge, generation_requests, harmonic_mean, prompt_digest

SECRET = "sk-test-THIS-MUST-NEVER-BE-WRITTEN-4242"


def default_answer(body: dict) -> str:
    """A deterministic judge: concept 2, instruction 1, fluency 2."""
    content = body["messages"][-1]["content"]
    if "[Concept Start]" in content:
        return "The concept is clearly present.\nRating: [[2]]"
    if "[Instruction Start]" in content:
        return "Loosely related.\nRating: [[1]]"
    return "Reads naturally.\nRating: [[2]]"


class FakeChatServer:
    """A threaded /v1/chat/completions server on 127.0.0.1 (ephemeral port).

    ``plan``: actions consumed one per request, in arrival order: an int HTTP status, a tuple
    (status, Retry-After value), "timeout" (sleep ``sleep_s`` then answer), "garbage" (200 with a
    non-JSON body), "drop" (close without answering), "null" (a completion whose content is null),
    "ok". When the plan is empty every request is answered by ``answer(body)``.
    """

    def __init__(self, plan=(), answer=default_answer, delay_s=0.0, sleep_s=1.0):
        self.plan = collections.deque(plan)
        self.answer = answer
        self.delay_s = delay_s
        self.sleep_s = sleep_s
        self.calls: list[tuple[dict, dict]] = []  # (headers, lower-cased names; body) of every request
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, payload: bytes, headers=()):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n))
                with server.lock:
                    server.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    action = server.plan.popleft() if server.plan else "ok"
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if self.path != "/v1/chat/completions":
                        return self._send(404, b'{"error": "not found"}')
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    if isinstance(action, tuple):
                        return self._send(action[0], b'{"error": {"message": "injected"}}', [("Retry-After", action[1])])
                    if isinstance(action, int):
                        hdrs = [("Retry-After", "0")] if action == 429 else []
                        return self._send(action, b'{"error": {"message": "injected"}}', hdrs)
                    if action == "garbage":
                        return self._send(200, b"<html>this is not json</html>")
                    if action == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if action == "timeout":
                        time.sleep(server.sleep_s)
                    reply = {
                        "id": "x", "object": "chat.completion", "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant",
                                                 "content": None if action == "null" else server.answer(body)}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                    self._send(200, json.dumps(reply).encode())
                except ConnectionAbortedError:  # raised by ``answer``: the connection dies unanswered
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def make(**kw):
        s = FakeChatServer(**kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Requests to 127.0.0.1 must not be routed through a proxy from the environment."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)


def client(url, cache_dir=None, **kw):
    kw = {"max_retries": 3, "timeout_s": 5.0, **kw}
    return ChatClient(url, "judge-model", api_key_env="JUDGE_TEST_KEY", cache_dir=cache_dir, **kw)


def msgs(text):
    return [{"role": "user", "content": text}]


def _all_bytes(folder):
    files = [p for p in folder.rglob("*") if p.is_file()]
    return files, b"".join(p.read_bytes() for p in files) + "".join(str(p) for p in files).encode()


def test_answers_cache_and_key_never_written(server, tmp_path):
    srv = server()
    c = client(srv.url, tmp_path / "cache")
    answers = c.chat_many([msgs("a"), msgs("b"), msgs("a"), msgs("c")], max_tokens=16)
    assert answers == [default_answer({"messages": msgs(t)}) for t in "abac"]
    assert len(srv.calls) == 3  # the duplicate was sent once
    headers, body = srv.calls[0]
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert body["model"] == "judge-model" and body["temperature"] == 0.0 and body["max_tokens"] == 16
    files, blob = _all_bytes(tmp_path / "cache")
    assert len(files) == 3
    assert SECRET.encode() not in blob and b"JUDGE_TEST_KEY" not in blob
    entry = json.loads(files[0].read_text())
    assert entry["request"]["model"] == "judge-model" and "content" in entry["response"]
    assert SECRET not in repr(c)
    # a fresh client on the same cache pays for nothing
    c2 = client(srv.url, tmp_path / "cache")
    assert c2.chat_many([msgs("c"), msgs("a"), msgs("b")], max_tokens=16) == [answers[3], answers[0], answers[1]]
    assert len(srv.calls) == 3 and c2.stats.cache_hits == 3 and c2.stats.api_calls == 0
    # any change of the request (here: a parameter) is a different cache entry
    c2.chat_many([msgs("a")], max_tokens=32)
    assert len(srv.calls) == 4


def test_retry_on_429_then_success(server, tmp_path):
    srv = server(plan=[429, 429])
    c = client(srv.url, tmp_path)
    assert c.chat(msgs("x")) == default_answer({"messages": msgs("x")})
    assert len(srv.calls) == 3
    assert c.stats.retries == 2 and c.stats.api_calls == 3 and c.stats.hard_failures == 0


def test_persistent_500_is_a_hard_failure_not_cached_and_retried_on_rerun(server, tmp_path):
    srv = server(plan=[500, 503, 502, 500])
    c = client(srv.url, tmp_path, max_retries=3)
    assert c.chat_many([msgs("x")]) == [None]
    assert c.stats.hard_failures == 1 and c.stats.retries == 3 and len(srv.calls) == 4
    assert not list(tmp_path.rglob("*.json"))
    # the server recovered: the re-run asks again (once) and succeeds
    assert c.chat(msgs("x")) is not None
    assert len(srv.calls) == 5 and len(list(tmp_path.rglob("*.json"))) == 1


def test_timeout_then_success(server, tmp_path):
    srv = server(plan=["timeout"], sleep_s=2.5)
    c = client(srv.url, tmp_path, timeout_s=0.6)
    assert c.chat(msgs("x")) is not None
    assert c.stats.timeouts == 1 and c.stats.retries == 1


def test_garbage_and_dropped_answers_are_retried(server, tmp_path):
    srv = server(plan=["garbage", "drop", 502])
    c = client(srv.url, tmp_path)
    assert c.chat(msgs("x")) == default_answer({"messages": msgs("x")})
    assert c.stats.retries == 3 and len(srv.calls) == 4


def test_bad_request_is_not_retried(server, tmp_path):
    srv = server(plan=[400])
    c = client(srv.url, tmp_path)
    assert c.chat(msgs("x")) is None
    assert len(srv.calls) == 1 and c.stats.retries == 0 and c.stats.hard_failures == 1


def test_unreachable_judge_is_a_user_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = client(f"http://127.0.0.1:{port}/v1", max_retries=2)
    t0 = time.time()
    with pytest.raises(UserError, match=rf"cannot reach the judge at http://127.0.0.1:{port}/v1/chat/completions.*base URL"):
        c.chat_many([msgs("a"), msgs("b")])
    assert time.time() - t0 < 10


def test_auth_and_not_found_errors_name_the_fix(server, tmp_path):
    srv = server(plan=[401])
    with pytest.raises(UserError, match="HTTP 401.*JUDGE_TEST_KEY"):
        client(srv.url, tmp_path).chat(msgs("x"))
    srv = server()
    with pytest.raises(UserError, match="HTTP 404.*base URL"):
        client(srv.url.replace("/v1", "/v2"), tmp_path).chat(msgs("x"))


def test_missing_key_variable_is_a_user_error_but_cached_runs_need_no_key(server, tmp_path, monkeypatch):
    srv = server()
    client(srv.url, tmp_path).chat(msgs("x"))
    monkeypatch.delenv("JUDGE_TEST_KEY")
    assert client(srv.url, tmp_path).chat(msgs("x")) is not None  # from the cache
    with pytest.raises(UserError, match="JUDGE_TEST_KEY is not set"):
        client(srv.url, tmp_path).chat(msgs("y"))
    # an endpoint without auth: no header at all
    c = ChatClient(srv.url, "m", api_key_env=None)
    assert c.chat(msgs("z")) is not None
    assert "authorization" not in srv.calls[-1][0]


def test_crash_midway_loses_nothing(server, tmp_path):
    """Answers that came back before a fatal error are on disk; the re-run only asks the rest."""
    srv = server(plan=["ok", "ok", 401])
    c = client(srv.url, tmp_path, max_concurrency=1)
    prompts = [msgs(str(k)) for k in range(5)]
    with pytest.raises(UserError):
        c.chat_many(prompts)
    answered = len(srv.calls) - 1  # every call but the 401 was answered (the worker may have
    cached = len(list(tmp_path.rglob("*.json")))  # started one more before the pool shut down)
    assert cached == answered and 2 <= cached < 5
    before = len(srv.calls)
    assert all(a is not None for a in client(srv.url, tmp_path).chat_many(prompts))
    assert len(srv.calls) - before == 5 - cached


def test_concurrency_is_bounded(server, tmp_path):
    srv = server(delay_s=0.15)
    c = client(srv.url, tmp_path, max_concurrency=3)
    c.chat_many([msgs(str(k)) for k in range(12)])
    assert len(srv.calls) == 12
    assert 2 <= srv.max_in_flight <= 3


def test_api_judge_end_to_end_with_failure_accounting(server, tmp_path):
    def answer(body):
        content = body["messages"][-1]["content"]
        if "nonsense" in content and "[Concept Start]" in content:
            return "I cannot tell."  # no rating -> parse failure
        if "nonsense" in content and "[Instruction Start]" in content:
            return "Rating: [[7]]"  # out of range -> parse failure
        return default_answer(body)

    srv = server(answer=answer)
    judge = APIJudge(client(srv.url, tmp_path))
    C, I, F, HM = judge.rate_generations_full(["cats", "dogs"], ["Write about pets.", "Hi"], ["Cats purr.", "nonsense"]).expected
    assert C.tolist() == [2.0, 0.0] and I.tolist() == [1.0, 0.0] and F.tolist() == [2.0, 2.0]
    assert HM == pytest.approx([harmonic_mean(2, 1, 2), 0.0])
    st = judge.stats()
    assert st["ratings"] == 6 and st["parse_failures"] == 2 and st["hard_failures"] == 0
    assert st["client"]["api_calls"] == 6
    ratings = judge.rate(generation_requests(["cats"], ["Write about pets."], ["Cats purr."]))
    assert [r.ok for r in ratings] == [True, True, True] and ratings[0].text.endswith("[[2]]")
    assert judge.client.stats.cache_hits == 3  # asked before, inside rate_generations_full
    # every request carries the full AxBench-style prompt
    prompt = srv.calls[0][1]["messages"][0]["content"]
    assert prompt.startswith("[System]") and "Rating: [[score]]" in prompt
    assert np.all(np.isfinite(HM))
    # its description names endpoint, model, decoding and prompt version, never the key
    d = judge.describe()
    assert d == f"api:{judge.client.url}:judge-model:temperature=0:max_tokens=256:prompt={prompt_digest()}"
    assert SECRET not in d and d != APIJudge(client(srv.url, tmp_path), temperature=0.7).describe()


def test_a_positive_retry_after_is_waited_for(server, tmp_path):
    """The server's Retry-After (1 s) is honoured by the openai client before its retry."""
    srv = server(plan=[(429, "1")])
    c = client(srv.url, tmp_path)
    t0 = time.monotonic()
    assert c.chat(msgs("x")) == default_answer({"messages": msgs("x")})
    assert time.monotonic() - t0 >= 0.9 and len(srv.calls) == 2 and c.stats.retries == 1


def test_null_content_is_a_parse_failure_that_scores_zero(server, tmp_path):
    """A completion whose content is null is an answer without a rating: 0, not ok, counted."""
    from jaxsae.judge import RatingRequest
    from jaxsae.judge.api import APIJudge

    srv = server(plan=["null"])
    judge = APIJudge(client(srv.url, tmp_path))
    r = judge.rate([RatingRequest("fluency", "cats", "Write.", "Cats purr.")])[0]
    assert r.score == 0.0 and not r.ok and r.text == ""
    assert len(srv.calls) == 1
