"""A disk-cached client for any OpenAI-compatible chat-completions endpoint (the ``openai``
package does the HTTP, retries, timeouts and concurrency), under both API judges: the steering
judge (:class:`jaxsae.judge.APIJudge`) and AutoInterp's explainer and detector
(:class:`jaxsae.autointerp.ApiExplainer`, :class:`jaxsae.autointerp.ApiDetector`).

Guarantees:
  * The API key is read from an environment variable (only when a request actually goes out), sent
    as ``Authorization: Bearer ...`` and never logged, written, or part of a cache key.
  * Every successful answer is cached on disk, one file per request, written atomically, keyed by
    the SHA-256 of the exact request body (model, messages, parameters). A crash loses nothing
    already answered; a re-run pays for nothing already answered. Failures are never cached.
  * At most ``max_concurrency`` requests in flight (``openai.AsyncOpenAI``); identical requests in
    one call are sent once.
  * The ``openai`` client retries with exponential backoff (and ``Retry-After``) on 408/409/429,
    5xx, timeouts and dropped connections; this client retries malformed answers (a 200 that is
    not a chat completion) the same number of times. Other 4xx fail that request at once.
    401/403/404, or an endpoint that cannot be connected to at all, raise a
    :class:`~jaxsae.errors.UserError` naming the fix.
  * A request that still fails after ``max_retries`` retries comes back as None and is counted in
    ``stats.hard_failures``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Sequence

from jaxsae.errors import UserError
from jaxsae.io import atomic_write_json, provenance_hash

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Version of the cache file layout (stored in each file)."""


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


def _counting_transport(stats: ClientStats, lock: threading.Lock):
    """An HTTP transport for the openai client that counts every attempt, retry and timeout."""
    import httpx2

    class Counting(httpx2.AsyncHTTPTransport):
        async def handle_async_request(self, request):
            with lock:
                stats.api_calls += 1
                stats.retries += request.headers.get("x-stainless-retry-count", "0") != "0"
            try:
                return await super().handle_async_request(request)
            except httpx2.TimeoutException:
                with lock:
                    stats.timeouts += 1
                raise

    return Counting()


class _Malformed(Exception):
    """A 200 answer that is not a chat completion."""


class ChatClient:
    """Chat completions from an OpenAI-compatible endpoint (``openai.AsyncOpenAI``), cached on disk.

    ``base_url``: the API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``
    (a URL ending in ``/chat/completions`` is reduced to its root). ``model``: the model name sent
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
    ):
        base = base_url.rstrip("/").removesuffix("/chat/completions")
        self.base_url = base
        self.url = base + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env or None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
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
        return provenance_hash(body, length=None)

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

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise UserError(
                f"environment variable {self.api_key_env} is not set: export it with the judge's API key "
                "(or configure the judge with no API key variable for an endpoint without authentication)"
            )
        return key

    def _openai(self):
        """A fresh ``openai.AsyncOpenAI`` (one per :meth:`chat_many` call: it lives in that call's event loop)."""
        import httpx2
        import openai

        http = openai.DefaultAsyncHttpxClient(transport=_counting_transport(self.stats, self._lock),
                                              timeout=httpx2.Timeout(self.timeout_s))
        key = self._api_key()
        return openai.AsyncOpenAI(api_key=key or "unused", base_url=self.base_url, timeout=self.timeout_s,
                                  max_retries=self.max_retries, http_client=http)

    async def _post(self, api, body: dict) -> dict:
        """One request through the openai client (its retries included) -> {"content", "model",
        "usage", "finish_reason"}; raises the openai errors, or _Malformed."""
        import openai

        known = {"model", "messages", "temperature", "max_tokens", "top_p", "seed", "n", "stop"}
        try:
            no_auth = {"Authorization": openai.Omit()} if not self.api_key_env else None  # an endpoint without auth
            resp = await api.chat.completions.create(**{k: v for k, v in body.items() if k in known},
                                                     extra_body={k: v for k, v in body.items() if k not in known} or None,
                                                     extra_headers=no_auth)
        except (openai.APIResponseValidationError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _Malformed(str(e)) from None
        try:
            choice = resp.choices[0]
            content = choice.message.content
        except (AttributeError, IndexError, TypeError):
            raise _Malformed("not a chat completion") from None
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise _Malformed("content is not a string")
        usage = resp.usage.model_dump() if getattr(resp, "usage", None) is not None else None
        return {"content": content, "model": getattr(resp, "model", None), "usage": usage,
                "finish_reason": getattr(choice, "finish_reason", None)}

    async def _call(self, api, key: str, body: dict, slots: asyncio.Semaphore) -> str | None:
        """Answer one distinct request: cache, else the API; None on a hard failure."""
        import httpx2
        import openai

        cached = self._cache_get(key, body)
        if cached is not None:
            with self._lock:
                self.stats.cache_hits += 1
            return cached
        last = ""
        for attempt in range(self.max_retries + 1):  # the openai client retries HTTP failures; this, malformed answers
            if attempt:
                with self._lock:
                    self.stats.retries += 1
            try:
                async with slots:
                    response = await self._post(api, body)
            except _Malformed as e:
                last = f"malformed answer ({e})"
                continue
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                raise UserError(
                    f"the judge at {self.url} refused the request (HTTP {e.status_code}): set "
                    f"{self.api_key_env or 'the API key variable'} to a valid key for model {self.model!r}"
                ) from None
            except openai.NotFoundError:
                raise UserError(
                    f"the judge at {self.url} answered HTTP 404: check the judge base URL (the API root, "
                    f"usually ending in /v1) and the model name {self.model!r}"
                ) from None
            except openai.APIConnectionError as e:
                if isinstance(e.__cause__, httpx2.ConnectError):
                    raise UserError(f"cannot reach the judge at {self.url} ({e.__cause__}) after {self.max_retries + 1} "
                                    "attempts: start the judge server or fix the judge base URL") from None
                last = "timed out" if isinstance(e, openai.APITimeoutError) else f"connection failed ({e})"
                break
            except openai.APIStatusError as e:
                last = f"HTTP {e.status_code}"
                break
            self._cache_put(key, body, response)
            return response["content"]
        with self._lock:
            self.stats.hard_failures += 1
        log.warning("judge request failed for good (%s); it is not cached and a re-run retries it", last)
        return None

    async def _call_all(self, unique: dict[str, dict]) -> dict[str, str | None]:
        slots = asyncio.Semaphore(self.max_concurrency)
        api = None
        if any(self._cache_get(k, b) is None for k, b in unique.items()):
            api = self._openai()  # reads the key: only when a request actually goes out
        try:
            async with asyncio.TaskGroup() as group:  # a UserError in one request cancels the others
                tasks = {k: group.create_task(self._call(api, k, b, slots)) for k, b in unique.items()}
        except BaseExceptionGroup as eg:
            raise eg.exceptions[0] from None
        finally:
            if api is not None:
                await api.close()
        return {k: t.result() for k, t in tasks.items()}

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
        results = asyncio.run(self._call_all(unique))
        return [results[k] for k in keys]
