"""A cached, retrying, concurrent client for any OpenAI-compatible ``/v1/chat/completions``
endpoint (standard library only), and :class:`APIJudge` on top of it.

Guarantees:
  * The API key is read from an environment variable (only when a request actually goes out), sent
    as ``Authorization: Bearer ...`` and never logged, written, or part of a cache key.
  * Every successful answer is cached on disk, one file per request, written atomically, keyed by
    the SHA-256 of the exact request body (model, messages, parameters). A crash loses nothing
    already answered; a re-run pays for nothing already answered. Failures are never cached.
  * At most ``max_concurrency`` requests in flight (a thread pool); identical requests in one call
    are sent once.
  * Retries with exponential backoff (and ``Retry-After`` when the server sends it) on 408/409/429,
    5xx, timeouts, dropped connections and malformed 200 answers. Other 4xx fail that request at
    once. 401/403/404, or an endpoint that cannot be connected to at all, raise a
    :class:`~jaxsae.errors.UserError` naming the fix.
  * A request that still fails after ``max_retries`` retries comes back as None and is counted in
    ``stats.hard_failures``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import random
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from jaxsae.errors import UserError
from jaxsae.io import atomic_write_json

from .base import Judge, Rating, RatingRequest
from .rubric import judge_messages, parse_rating, prompt_digest

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Version of the cache file layout (stored in each file)."""

_RETRY_STATUS = frozenset({408, 409, 429})


@dataclasses.dataclass
class ClientStats:
    """Counters of a :class:`ChatClient` (cumulative over its lifetime)."""

    requests: int = 0
    """Requests asked for (before de-duplication)."""
    cache_hits: int = 0
    """Distinct requests answered from the disk cache."""
    api_calls: int = 0
    """HTTP attempts made (first tries and retries)."""
    retries: int = 0
    """Attempts that were retries after a transient failure."""
    timeouts: int = 0
    """Attempts that timed out."""
    hard_failures: int = 0
    """Distinct requests that failed for good (returned as None)."""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Transient(Exception):
    """A failure worth retrying. ``connect`` marks failures to connect at all."""

    def __init__(self, msg: str, *, connect: bool = False, retry_after: float | None = None):
        super().__init__(msg)
        self.connect = connect
        self.retry_after = retry_after


class _Permanent(Exception):
    """A failure of this request that retrying will not fix (e.g. HTTP 400)."""


def _retry_after(headers) -> float | None:
    try:
        v = headers.get("Retry-After") if headers is not None else None
        return max(0.0, float(v)) if v is not None else None
    except (TypeError, ValueError):
        return None


class ChatClient:
    """Chat completions from an OpenAI-compatible endpoint, cached, retried and concurrent.

    ``base_url``: the API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``
    (a URL already ending in ``/chat/completions`` is used as is). ``model``: the model name sent
    in each request. ``api_key_env``: the environment variable holding the key (None or "" for an
    endpoint without authentication). ``cache_dir``: where answers are cached (None: no cache).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        cache_dir: str | os.PathLike | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ):
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env or None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.stats = ClientStats()
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"ChatClient(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    # ------------------------------------------------------------------------------ cache

    def request_body(self, messages: Sequence[dict], **params) -> dict:
        """The exact JSON body sent for ``messages`` (parameters set to None are left out)."""
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages]}
        body.update({k: v for k, v in params.items() if v is not None})
        return body

    @staticmethod
    def cache_key(body: dict) -> str:
        """SHA-256 of the canonical JSON of the request body (the key is not part of the body)."""
        canon = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, key: str, body: dict) -> str | None:
        if self.cache_dir is None:
            return None
        path = self._cache_path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if entry.get("request") != body or not isinstance(entry.get("response", {}).get("content"), str):
            return None
        return entry["response"]["content"]

    def _cache_put(self, key: str, body: dict, response: dict) -> None:
        if self.cache_dir is not None:
            atomic_write_json(self._cache_path(key), {"format": CACHE_FORMAT, "request": body, "response": response})

    # ------------------------------------------------------------------------------ HTTP

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise UserError(
                    f"environment variable {self.api_key_env} is not set: export it with the judge's API key "
                    "(or configure the judge with no API key variable for an endpoint without authentication)"
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post_once(self, body: dict) -> dict:
        """One HTTP attempt -> {"content", "model", "usage", "finish_reason"}; raises _Transient,
        _Permanent or UserError."""
        req = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"),
                                     headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            status = e.code
            detail = ""
            try:
                detail = e.read(300).decode("utf-8", "replace").replace("\n", " ")
            except Exception:  # noqa: BLE001 - the body is only for the message
                pass
            if status in (401, 403):
                raise UserError(
                    f"the judge at {self.url} refused the request (HTTP {status}): set "
                    f"{self.api_key_env or 'the API key variable'} to a valid key for model {self.model!r}"
                ) from None
            if status == 404:
                raise UserError(
                    f"the judge at {self.url} answered HTTP 404: check the judge base URL (the API root, "
                    f"usually ending in /v1) and the model name {self.model!r}"
                ) from None
            if status in _RETRY_STATUS or status >= 500:
                raise _Transient(f"HTTP {status}", retry_after=_retry_after(e.headers)) from None
            raise _Permanent(f"HTTP {status}: {detail}") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                with self._lock:
                    self.stats.timeouts += 1
                raise _Transient(f"connect timeout after {self.timeout_s:g}s", connect=True) from None
            raise _Transient(f"cannot connect ({reason})", connect=True) from None
        except (socket.timeout, TimeoutError):
            with self._lock:
                self.stats.timeouts += 1
            raise _Transient(f"no answer within {self.timeout_s:g}s") from None
        except (ConnectionError, OSError, http.client.HTTPException) as e:  # reset, dropped, bad status line
            raise _Transient(f"connection dropped ({e.__class__.__name__})") from None
        try:
            data = json.loads(raw.decode("utf-8"))
            choice = data["choices"][0]
            content = choice["message"].get("content")
            if content is None:
                content = ""
            if not isinstance(content, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError):
            raise _Transient("malformed answer (not a chat completion)") from None
        return {"content": content, "model": data.get("model"), "usage": data.get("usage"),
                "finish_reason": choice.get("finish_reason")}

    def _call(self, key: str, body: dict, abort: threading.Event) -> str | None:
        """Answer one distinct request: cache, else HTTP with retries; None on a hard failure
        (or when ``abort`` is set because another request of the same call failed fatally)."""
        cached = self._cache_get(key, body)
        if cached is not None:
            with self._lock:
                self.stats.cache_hits += 1
            return cached
        all_connect = True
        last = ""
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                return None
            with self._lock:
                self.stats.api_calls += 1
                if attempt:
                    self.stats.retries += 1
            try:
                response = self._post_once(body)
            except _Permanent as e:
                log.warning("judge request failed for good: %s", e)
                all_connect, last = False, str(e)
                break
            except _Transient as e:
                all_connect = all_connect and e.connect
                last = str(e)
                if attempt == self.max_retries:
                    break
                delay = min(self.backoff_max_s, self.backoff_s * (2.0**attempt)) * (0.5 + 0.5 * random.random())
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, self.backoff_max_s))
                log.info("judge request: %s; retry %d/%d in %.2fs", e, attempt + 1, self.max_retries, delay)
                if abort.wait(delay):
                    return None
                continue
            self._cache_put(key, body, response)
            return response["content"]
        if all_connect:
            raise UserError(
                f"cannot reach the judge at {self.url} ({last}) after {self.max_retries + 1} attempts: "
                "start the judge server or fix the judge base URL"
            )
        with self._lock:
            self.stats.hard_failures += 1
        log.warning("judge request failed after %d attempts (%s); it is not cached and a re-run retries it",
                    self.max_retries + 1, last)
        return None

    # ------------------------------------------------------------------------------ public

    def chat(self, messages: Sequence[dict], **params) -> str | None:
        """One chat completion (see :meth:`chat_many`)."""
        return self.chat_many([messages], **params)[0]

    def chat_many(self, message_lists: Sequence[Sequence[dict]], *, temperature: float = 0.0,
                  max_tokens: int | None = None, **params) -> list[str | None]:
        """The assistant's answer to each message list, in order (None where a request failed
        for good; see the module docstring). Extra ``params`` go into the request body."""
        bodies = [self.request_body(m, temperature=temperature, max_tokens=max_tokens, **params)
                  for m in message_lists]
        keys = [self.cache_key(b) for b in bodies]
        unique = dict(zip(keys, bodies))
        with self._lock:
            self.stats.requests += len(bodies)
        results: dict[str, str | None] = {}
        abort = threading.Event()
        pool = cf.ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="judge")
        try:
            futures = {pool.submit(self._call, k, b, abort): k for k, b in unique.items()}
            for fut in cf.as_completed(futures):
                results[futures[fut]] = fut.result()
        except BaseException:
            abort.set()  # stop sleeping retries; answers already cached stay cached
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return [results[k] for k in keys]


class APIJudge(Judge):
    """Rate through a :class:`ChatClient`: the full AxBench-style prompt (explanation, then
    ``Rating: [[score]]``), parsed with :func:`jaxsae.judge.rubric.parse_rating`.

    A missing or out-of-range rating scores 0 with ``ok=False`` (``parse_failures``); a request
    that failed for good scores 0 with ``ok=False`` and ``text=None`` (``hard_failures``). Both are
    counted in :meth:`stats` and logged as a warning after each :meth:`rate` call.
    """

    def __init__(self, client: ChatClient, *, max_tokens: int | None = 256, temperature: float = 0.0,
                 templates: dict | None = None):
        self.client = client
        self.templates = templates or None
        self.max_tokens = max_tokens
        self.temperature = float(temperature)
        self._ratings = 0
        self._parse_failures = 0
        self._hard_failures = 0

    def rate(self, items: Sequence[RatingRequest]) -> list[Rating]:
        items = list(items)
        msgs = [judge_messages(r.criterion, concept=r.concept, instruction=r.instruction, fragment=r.fragment,
                               templates=self.templates) for r in items]
        texts = self.client.chat_many(msgs, temperature=self.temperature, max_tokens=self.max_tokens)
        out, parse_fail, hard_fail = [], 0, 0
        for t in texts:
            if t is None:
                hard_fail += 1
                out.append(Rating(score=0.0, argmax=0.0, ok=False, text=None))
                continue
            score, ok = parse_rating(t)
            parse_fail += not ok
            out.append(Rating(score=score, argmax=score, ok=ok, text=t))
        self._ratings += len(items)
        self._parse_failures += parse_fail
        self._hard_failures += hard_fail
        if parse_fail or hard_fail:
            log.warning("API judge: %d of %d ratings had no valid 'Rating: [[x]]' and %d requests failed; "
                        "both score 0", parse_fail, len(items), hard_fail)
        return out

    def describe(self) -> str:
        """``api:<endpoint>:<model>:temperature=<t>:max_tokens=<n>:prompt=<hash>`` (never the key)."""
        return (f"api:{self.client.url}:{self.client.model}:temperature={self.temperature:g}:"
                f"max_tokens={self.max_tokens}:prompt={prompt_digest(explain=True, templates=self.templates)}")

    def stats(self) -> dict:
        """``{"ratings", "parse_failures", "hard_failures", "client": ClientStats}``."""
        return {"ratings": self._ratings, "parse_failures": self._parse_failures,
                "hard_failures": self._hard_failures, "client": self.client.stats.as_dict()}
