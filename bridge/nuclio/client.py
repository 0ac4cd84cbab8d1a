"""The only code that speaks to Nuclio: invocation, retries, concurrency limits, body-size budget.

One ``NuclioClient`` is shared by the worker threads. Each call:

1. fits the image into ``max_body_bytes`` (``images.fit_images``: JPEG q=90, then downscale),
2. takes one of the function's slots (``concurrency_for``; the oldest job first, ``slots``) for each
   HTTP attempt,
3. POSTs directly (``http://nuclio-nuclio-{name}:8080/``) or through the dashboard,
4. retries connection errors, timeouts, 408/502/503/504 with full-jitter exponential backoff,
5. checks the JSON shape and maps results back to the original resolution (``scaling``).

Time: one attempt (connect, send, wait, read) gets at most the function's timeout in total, the
whole call at most ``attempts x timeout`` (backoff included), and never more than the caller's
``deadline`` (a ``time.monotonic()`` value: per call, or for every call of a ``with_deadline`` view).
Answers are streamed and refused past ``max_response_bytes``. The dashboard is asked for metadata
only when one is configured (``dashboard_url``; ``from_settings`` decides, see ``configured_dashboard``).

Errors: ``FunctionUnavailable`` (transient: unreachable, busy, timed out, deadline passed) and
``FunctionFailed`` (permanent: 4xx/5xx, invalid JSON, wrong shape, body too large even after
shrinking, answer too large).
"""

from __future__ import annotations

import binascii
import contextlib
import copy
import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import httpx
import numpy as np

from bridge.config import NuclioSettings, Settings
from bridge.errors import BadImage, FunctionFailed, FunctionUnavailable
from bridge.geometry.rle import crop_to_cvat_rle
from bridge.nuclio import images, scaling
from bridge.nuclio.metadata import parse_function_config
from bridge.nuclio.scaling import Scale
from bridge.nuclio.slots import Slots
from bridge.nuclio.transport import (
    Answer,
    AnswerTooLarge,
    DeadlineClock,
    DeadlinePassed,
    DeadlineTransport,
    read_answer,
)

log = logging.getLogger(__name__)

_RETRY_REASONS: dict[int, tuple[str, Literal["unreachable", "busy", "timeout"]]] = {
    503: ("busy (503, no free worker)", "busy"),
    504: ("gateway timeout (504)", "timeout"),
    408: ("request timeout (408)", "timeout"),
    502: ("bad gateway (502)", "unreachable"),
}
RETRY_STATUSES = frozenset(_RETRY_REASONS)
NUCLIO_DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_MAX_RESPONSE = 128 * 1024 * 1024  # LaMa's PNG of a 20 MP frame is ~40-55 MiB as base64


class Body:
    """A JSON request body as parts sent one after the other: the payload's JSON with each image's base64
    spliced in where its placeholder was. The base64 never goes through ``json.dumps`` (which scans and
    copies every character of an 8 MB string twice) nor is copied into one buffer (httpx sends the parts
    with the given Content-Length)."""

    def __init__(self, payload: Any, blobs: Mapping[str, bytes]):
        text = json.dumps(payload, separators=(",", ":")).encode()
        spots = sorted((text.find(token.encode()), token.encode(), data) for token, data in blobs.items())
        if any(at < 0 for at, _, _ in spots):
            raise ValueError("the payload does not carry the image it was built with")
        parts: list[bytes] = []
        done = 0
        for at, token, data in spots:  # base64's alphabet needs no escaping inside a JSON string
            parts += [text[done:at], data]
            done = at + len(token)
        parts.append(text[done:])
        self.parts = tuple(parts)
        self.length = sum(len(p) for p in parts)

    def __len__(self) -> int:
        return self.length

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)
CONNECT_TIMEOUT = 5.0
DASHBOARD_MARGIN = 5.0  # the dashboard needs a little longer than the invoke timeout it relays
INFO_TIMEOUT = 5.0
UNKNOWN_TTL = 60.0  # seconds before asking the dashboard again about a function it did not know
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_EXCERPT = 300
_Kind = Literal["unreachable", "busy", "timeout", "deadline"]


class _Retryable(Exception):
    """One failed attempt; ``reason`` ends up in ``FunctionUnavailable``.

    ``kind`` is ``"unreachable"``, ``"busy"``, ``"timeout"`` or ``"deadline"`` (the caller's
    deadline passed: not retried) and picks the advice given.
    """

    def __init__(self, reason: str, kind: _Kind):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class _BodyTooLarge(Exception):
    """The function (or a proxy) answered 413 to a body of ``sent`` bytes."""

    def __init__(self, sent: int, excerpt: str):
        super().__init__(f"413 for {sent} bytes")
        self.sent = sent
        self.excerpt = excerpt


def _excerpt(resp: httpx.Response) -> str:
    text = resp.text.strip().replace("\n", " ")
    return text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else "")


class NuclioClient:
    """Call Nuclio functions over HTTP (thread-safe; one instance shared by the workers)."""

    def __init__(
        self,
        *,
        invoke_method: Literal["direct", "dashboard"] = "direct",
        function_url: str = "http://nuclio-nuclio-{name}:8080",
        dashboard_url: str | None = "http://nuclio:8070",
        namespace: str = "nuclio",
        project: str = "cvat",
        timeout: float = 120.0,
        function_timeouts: Mapping[str, float] = _EMPTY,
        concurrency: int = 2,
        function_concurrency: Mapping[str, int] = _EMPTY,
        max_body_bytes: int = 32 * 1024 * 1024,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE,
        retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ):
        if invoke_method not in ("direct", "dashboard"):
            raise ValueError(f"invoke_method must be 'direct' or 'dashboard', not {invoke_method!r}")
        if timeout <= 0 or concurrency < 1 or retries < 0 or max_body_bytes < 1024 or max_response_bytes < 1024:
            raise ValueError(
                f"need timeout > 0, concurrency >= 1, retries >= 0, max_body_bytes >= 1024, "
                f"max_response_bytes >= 1024 (got {timeout}, {concurrency}, {retries}, {max_body_bytes}, "
                f"{max_response_bytes})"
            )
        if invoke_method == "dashboard" and not dashboard_url:
            raise ValueError("invoke_method 'dashboard' needs a dashboard_url")
        bad = {k: v for k, v in function_concurrency.items() if int(v) < 1}
        if bad:
            raise ValueError(f"function_concurrency values must be >= 1: {bad}")
        self.invoke_method = invoke_method
        self.function_url = function_url.rstrip("/")
        self.dashboard_url = dashboard_url.rstrip("/") if dashboard_url else None
        self.namespace = namespace
        self.project = project
        self.timeout = float(timeout)
        self.function_timeouts = {k: float(v) for k, v in function_timeouts.items()}
        self.concurrency = int(concurrency)
        self.function_concurrency = {k: int(v) for k, v in function_concurrency.items()}
        self.max_body_bytes = int(max_body_bytes)
        self.max_response_bytes = int(max_response_bytes)
        self.retries = int(retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        pool = max(16, 2 * (self.concurrency + sum(self.function_concurrency.values())))
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        self._clock = DeadlineClock()
        self._http = httpx.Client(
            transport=transport if transport is not None else DeadlineTransport(limits, self._clock),
            limits=limits,
            timeout=httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout)),
        )
        self._deadline: float | None = None  # set on ``with_deadline`` views
        self._priority: float = 0.0  # ditto: the job's place in the queue for the function's slots
        self._owner = True
        self._lock = threading.Lock()
        self._slots: dict[str, Slots] = {}
        self._info: dict[str, tuple[float, dict[str, Any] | None]] = {}

    @classmethod
    def from_settings(cls, settings: NuclioSettings | Settings, **overrides: Any) -> NuclioClient:
        """Build from its part of the settings (``Settings.nuclio``); keyword overrides (e.g. ``transport``) win."""
        cfg = settings.nuclio if isinstance(settings, Settings) else settings
        kwargs: dict[str, Any] = {
            "invoke_method": cfg.invoke_method,
            "function_url": cfg.function_url,
            "dashboard_url": cfg.dashboard_url,
            "namespace": cfg.namespace,
            "project": cfg.project,
            "timeout": cfg.timeout,
            "function_timeouts": cfg.function_timeouts,
            "concurrency": cfg.concurrency,
            "function_concurrency": cfg.function_concurrency,
            "max_body_bytes": cfg.max_body_bytes,
            "max_response_bytes": cfg.max_response_bytes,
            "retries": cfg.retries,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    # --- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connections (a ``with_deadline`` view leaves them to the client it came from)."""
        if self._owner:
            self._http.close()

    def with_deadline(self, deadline: float | None, *, priority: float = 0.0) -> NuclioClient:
        """A view of this client whose every call ends by ``deadline`` (``time.monotonic()``), e.g. a
        job attempt's end, and waits for a function's slot as ``priority`` (the job id: the oldest job
        is served first, ``bridge.nuclio.slots``). It shares connections, slots and metadata with this
        client, holds no thread state (safe to hand to pool threads) and closing it is a no-op."""
        view = copy.copy(self)
        view._deadline = deadline
        view._priority = float(priority)
        view._owner = False
        return view

    @property
    def priority(self) -> float:
        """Where this view's calls queue for a function's slots (lower first; 0 unless set)."""
        return self._priority

    def __enter__(self) -> NuclioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- addresses and limits -------------------------------------------------------------------
    def url_for(self, function: str) -> str:
        """Where a call for ``function`` goes (the function itself, or the dashboard)."""
        if self.invoke_method == "dashboard":
            return f"{self.dashboard_url}/api/function_invocations"
        return self.function_url.format(name=function) + "/"

    def timeout_for(self, function: str) -> float:
        return self.function_timeouts.get(function, self.timeout)

    def concurrency_for(self, function: str) -> int:
        """Configured value, else the function's ``maxWorkers`` (dashboard), else ``concurrency``."""
        if function in self.function_concurrency:
            return self.function_concurrency[function]
        info = self.function_info(function)
        workers = info.get("max_workers") if info else None
        return int(workers) if isinstance(workers, int) and workers >= 1 else self.concurrency

    def _slot(self, function: str) -> Slots:
        with self._lock:
            slot = self._slots.get(function)
        if slot is not None:
            return slot
        size = self.concurrency_for(function)  # may ask the dashboard: outside the lock
        info = self.function_info(function)
        for problem in self._limit_problems(function, info) if info else ():
            log.warning("%s", problem)
        with self._lock:
            if function not in self._slots:
                self._slots[function] = Slots(size)
                log.debug("function %s: at most %d calls in flight", function, size)
            return self._slots[function]

    # --- discovery ------------------------------------------------------------------------------
    def _dashboard_headers(self, function: str | None = None) -> dict[str, str]:
        headers = {
            "x-nuclio-project-name": self.project,
            "x-nuclio-function-namespace": self.namespace,
        }
        if function is not None:
            headers["x-nuclio-function-name"] = function
        return headers

    def function_info(self, function: str, *, refresh: bool = False) -> dict[str, Any] | None:
        """The function's metadata from the dashboard, or ``None`` when unreachable or unknown there.

        Shape: ``{"name", "type", "spec" (labels list or None), "max_workers", "event_timeout"
        (seconds or None), "max_body" (bytes or None), "problems" (list of strings)}``.
        Answers are cached for the client's life, ``None`` for ``UNKNOWN_TTL`` seconds. Without a
        configured dashboard (``dashboard_url`` None) it is ``None`` at once, without a request.
        """
        if self.dashboard_url is None:
            return None
        now = time.monotonic()
        with self._lock:
            cached = self._info.get(function)
        if cached is not None and not refresh and (cached[1] is not None or now - cached[0] < UNKNOWN_TTL):
            return cached[1]
        info = self._fetch_info(function)
        with self._lock:
            self._info[function] = (now, info)
        return info

    def _fetch_info(self, function: str) -> dict[str, Any] | None:
        url = f"{self.dashboard_url}/api/functions/{function}"
        try:
            resp = self._http.get(url, headers=self._dashboard_headers(), timeout=INFO_TIMEOUT)
        except httpx.HTTPError as exc:
            log.info("Nuclio dashboard not reachable at %s (%s); function %s metadata unknown",
                     self.dashboard_url, exc.__class__.__name__, function)
            return None
        if resp.status_code == 404:
            log.warning("Nuclio dashboard %s does not know function %r (namespace %s; names are "
                        "case-sensitive)", self.dashboard_url, function, self.namespace)
            return None
        if resp.status_code != 200:
            log.warning("Nuclio dashboard answered %d for function %r: %s", resp.status_code, function,
                        _excerpt(resp))
            return None
        try:
            config = resp.json()
        except ValueError:
            log.warning("Nuclio dashboard sent invalid JSON for function %r: %s", function, _excerpt(resp))
            return None
        return parse_function_config(config, function)

    def dashboard_functions(self) -> list[str] | None:
        """Names of the functions the Nuclio dashboard lists for this project, None when it does not answer
        (or none is configured: then without a request)."""
        if self.dashboard_url is None:
            return None
        try:
            resp = self._http.get(f"{self.dashboard_url}/api/functions", headers=self._dashboard_headers(),
                                  timeout=INFO_TIMEOUT)
            body = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            log.info("Nuclio dashboard not reachable at %s: %s", self.dashboard_url, exc.__class__.__name__)
            return None
        return sorted(body) if isinstance(body, dict) else None

    def ping(self, function: str) -> bool:
        """Is the function reachable? Direct: any HTTP answer to a GET but 404 (an ingress or gateway
        in front of the functions answers 404 for one that is not deployed). Dashboard: it is known there."""
        if self.invoke_method == "dashboard":
            return self.function_info(function, refresh=True) is not None
        try:
            resp = self._http.get(self.url_for(function), timeout=INFO_TIMEOUT)
        except (httpx.ReadTimeout, httpx.PoolTimeout):
            return True  # connected: the function is there, only busy (a GET waits for a worker)
        except httpx.HTTPError as exc:
            log.info("function %s not reachable at %s: %s", function, self.url_for(function), exc)
            return False
        return resp.status_code != 404

    def diagnose(self, function: str) -> list[str]:
        """Problems that will make calls to ``function`` fail or misbehave; empty when all is well.

        Checks reachability, the dashboard metadata (type, labels spec) and that the client's timeout
        and concurrency fit the function's ``eventTimeout`` and ``maxWorkers`` (the body budget follows
        ``maxRequestBodySize`` by itself). Meant for start-up checks and ``/health``.
        """
        problems: list[str] = []
        if self.invoke_method == "direct" and not self.ping(function):
            problems.append(
                f"function '{function}' not reachable at {self.url_for(function)}: is it deployed and on "
                f"the cvat_cvat network? name is case-sensitive"
            )
        info = self.function_info(function, refresh=True)
        if info is None:
            if self.invoke_method == "dashboard":
                problems.append(
                    f"the Nuclio dashboard at {self.dashboard_url} cannot be reached or does not know "
                    f"'{function}': is it deployed in namespace '{self.namespace}'? name is case-sensitive"
                )
            return problems
        problems.extend(f"function '{function}': {p}" for p in info["problems"])
        problems.extend(self._limit_problems(function, info))
        return problems

    def _limit_problems(self, function: str, info: dict[str, Any]) -> list[str]:
        problems = []
        timeout, event_timeout = self.timeout_for(function), info.get("event_timeout")
        if event_timeout and timeout < event_timeout:
            problems.append(
                f"function '{function}': client timeout {timeout:g} s is shorter than its eventTimeout "
                f"{event_timeout:g} s; raise NUCLIO_FUNCTION_TIMEOUTS for it"
            )
        workers, configured = info.get("max_workers"), self.function_concurrency.get(function)
        if workers and configured and configured > workers:
            problems.append(
                f"function '{function}': NUCLIO_FUNCTION_CONCURRENCY {configured} exceeds its maxWorkers "
                f"{workers}; extra calls wait for a worker and may get 503"
            )
        return problems

    # --- raw invocation -------------------------------------------------------------------------
    def invoke(self, function: str, payload: dict, *, timeout: float | None = None,
               deadline: float | None = None) -> Any:
        """POST ``payload`` as JSON; return the decoded JSON answer (see the module docstring)."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            return self._invoke_body(function, body, timeout, deadline)
        except _BodyTooLarge as exc:
            raise FunctionFailed(
                f"body too large: function '{function}' refused {exc.sent} bytes (HTTP 413: {exc.excerpt}); "
                f"raise its maxRequestBodySize (32 MiB) or send less"
            ) from None

    def _caller_deadline(self, deadline: float | None) -> float | None:
        """The earlier of the call's ``deadline`` and this view's."""
        given = [d for d in (deadline, self._deadline) if d is not None]
        return min(given) if given else None

    @staticmethod
    def _check_deadline(function: str, caller: float | None) -> None:
        if caller is not None and time.monotonic() >= caller:
            raise FunctionUnavailable(f"function '{function}' not called: the caller's deadline has passed "
                                      f"(the job attempt's time, AUTO_ANN_TIMEOUT, is spent)")

    def _invoke_body(self, function: str, body: bytes | Body, timeout: float | None,
                     deadline: float | None) -> Any:
        if len(body) > self.max_body_bytes:
            raise FunctionFailed(
                f"body too large: {len(body)} bytes for function '{function}' exceeds "
                f"NUCLIO_MAX_BODY_BYTES={self.max_body_bytes}"
            )
        seconds = float(timeout) if timeout is not None else self.timeout_for(function)
        url = self.url_for(function)
        caller = self._caller_deadline(deadline)
        self._check_deadline(function, caller)
        slot = self._slot(function)
        attempts = self.retries + 1
        per_attempt = seconds + (DASHBOARD_MARGIN if self.invoke_method == "dashboard" else 0.0)
        end_of_call: float | None = None  # attempts x per_attempt from the first attempt's start
        for done in range(1, attempts + 1):
            try:
                with self._slot_taken(slot, caller):
                    start = time.monotonic()
                    end_of_call = end_of_call or start + attempts * per_attempt
                    which, end = _earliest(attempt=start + per_attempt, call=end_of_call, caller=caller)
                    answer = self._attempt(function, url, body, seconds, start, which, end)
                return self._decode(function, answer)
            except _Retryable as exc:
                last = exc
            if last.kind == "deadline" or done == attempts:
                break
            pause = random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (done - 1)))  # noqa: S311
            if time.monotonic() + pause >= _earliest(call=end_of_call, caller=caller)[1]:
                break
            log.info("function %s attempt %d/%d failed (%s); retrying in %.2f s", function, done, attempts,
                     last.reason, pause)
            time.sleep(pause)
        raise FunctionUnavailable(self._unavailable_message(function, url, last, done)) from None

    def _unavailable_message(self, function: str, url: str, exc: _Retryable, attempts: int) -> str:
        tried = f"{exc.reason} after {attempts} attempt(s)"
        if exc.kind == "deadline":
            return (f"function '{function}' at {url} stopped: {tried}; the job attempt's time limit "
                    f"(AUTO_ANN_TIMEOUT) is spent")
        if exc.kind == "busy":
            return (f"function '{function}' at {url} stayed busy: {tried}; keep its concurrency "
                    f"(NUCLIO_FUNCTION_CONCURRENCY) at or below its maxWorkers, or give it more workers")
        if exc.kind == "timeout":
            return (f"function '{function}' at {url} timed out: {tried}; raise its timeout "
                    f"(NUCLIO_FUNCTION_TIMEOUTS) to at least the function's eventTimeout, or check that "
                    f"it is not stuck")
        if self.invoke_method == "dashboard":
            return (f"function '{function}' not reachable through the Nuclio dashboard at {url}: {tried}; "
                    f"is the dashboard up, and the function deployed in namespace '{self.namespace}', "
                    f"project '{self.project}'? name is case-sensitive")
        return (f"function '{function}' not reachable at {url}: {tried}; is it deployed and on the "
                f"cvat_cvat network? name is case-sensitive")

    @contextlib.contextmanager
    def _slot_taken(self, slot: Slots, caller: float | None) -> Iterator[None]:
        """Hold a free slot (this view's priority); wait for one no longer than the caller's deadline."""
        timeout = None if caller is None else max(0.0, caller - time.monotonic())
        if not slot.acquire(self._priority, timeout):
            raise _Retryable("the caller's deadline passed while waiting for a free slot", "deadline")
        try:
            yield
        finally:
            slot.release(self._priority)

    def _attempt(self, function: str, url: str, body: bytes | Body, seconds: float, start: float, which: str,
                 end: float) -> Answer:
        """One POST, all of it (connect, send, wait, read) done by ``end``: the end of the attempt, of the
        call or the caller's deadline, as ``which`` says."""
        left = end - start
        if left <= 0:  # the call's time was spent waiting for a slot
            raise _Retryable("no time left for another attempt", "deadline" if which == "caller" else "timeout")
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        content: bytes | tuple[bytes, ...] = body if isinstance(body, bytes) else body.parts
        if isinstance(body, Body):
            headers["Content-Length"] = str(len(body))  # parts, sent as they are: not chunked
        if self.invoke_method == "dashboard":
            headers.update(self._dashboard_headers(function))
            headers.update({
                "x-nuclio-path": "/",
                "x-nuclio-invoke-via": "domain-name",
                "X-Nuclio-Invoke-Timeout": f"{math.ceil(min(seconds, left))}s",
            })
        http_timeout = httpx.Timeout(left, connect=min(CONNECT_TIMEOUT, left))
        self._clock.deadline = end
        try:
            with self._http.stream("POST", url, content=content, headers=headers, timeout=http_timeout) as resp:
                answer = read_answer(resp, self.max_response_bytes, end)
        except httpx.ConnectTimeout as exc:
            raise self._late(which, start, end, exc, "unreachable",
                             f"connect timed out ({exc.__class__.__name__})") from exc
        except httpx.TimeoutException as exc:
            raise self._late(which, start, end, exc, "timeout", "") from exc
        except DeadlinePassed as exc:
            raise self._late(which, start, end, exc, "timeout",
                             f"no complete answer within {left:g} s ({exc.received} bytes received)") from None
        except AnswerTooLarge as exc:
            raise FunctionFailed(self._too_large_message(function, exc)) from None
        except httpx.TransportError as exc:
            raise _Retryable(f"{exc.__class__.__name__}: {exc}", "unreachable") from exc
        finally:
            self._clock.deadline = None
        if answer.status in RETRY_STATUSES:
            what, kind = _RETRY_REASONS[answer.status]
            raise _Retryable(f"{what}: {answer.text(_EXCERPT)}", kind)
        if answer.status == 413:
            raise _BodyTooLarge(len(body), answer.text(_EXCERPT))
        return answer

    @staticmethod
    def _late(which: str, start: float, end: float, exc: Exception, kind: _Kind, reason: str) -> _Retryable:
        """A timed-out attempt: the caller's deadline (not retried), else ``kind`` with ``reason``."""
        if which == "caller":
            return _Retryable(f"the caller's deadline passed {time.monotonic() - start:.1f} s into the attempt "
                              f"({exc.__class__.__name__})", "deadline")
        return _Retryable(reason or f"no answer within {end - start:g} s ({exc.__class__.__name__})", kind)

    def _too_large_message(self, function: str, exc: AnswerTooLarge) -> str:
        said = f" (Content-Length {exc.declared})" if exc.declared is not None else ""
        return (f"function '{function}' answer larger than {exc.limit} bytes{said}; stopped reading it. "
                f"Raise NUCLIO_MAX_RESPONSE_BYTES if the function really answers that much")

    @staticmethod
    def _decode(function: str, answer: Answer) -> Any:
        if answer.status == 404:
            raise FunctionFailed(f"function '{function}' answered HTTP 404: {answer.text(_EXCERPT)} (is it "
                                 f"deployed under exactly that name? names are case-sensitive)")
        if answer.status >= 400:
            raise FunctionFailed(f"function '{function}' answered HTTP {answer.status}: {answer.text(_EXCERPT)}")
        try:
            return json.loads(answer.content)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            raise FunctionFailed(
                f"function '{function}' answered HTTP {answer.status} with invalid JSON "
                f"({answer.content_type or 'no content type'}): {answer.text(_EXCERPT)}"
            ) from None

    # --- calls carrying an image ----------------------------------------------------------------
    def _invoke_image(
        self,
        function: str,
        image: bytes,
        build: Callable[[str, str | None, Scale], dict],
        mask: bytes | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> tuple[Any, images.FittedImages]:
        """Fit ``image`` (and ``mask``) into the body budget, call, and on 413 shrink once more.

        ``build(image_b64, mask_b64, scale)`` returns the payload with prompts in sent coordinates.
        """
        if not image:
            raise BadImage(f"empty image for function '{function}'")
        self._check_deadline(function, self._caller_deadline(deadline))  # before any image work
        budget = self.body_budget(function)
        for attempt in (1, 2):
            overhead = len(json.dumps(build("", "" if mask is not None else None, Scale.identity()),
                                      separators=(",", ":")))
            room = budget - overhead - 1024  # prompts change length a little once scaled
            if room <= 0:
                raise FunctionFailed(f"body too large: the payload for '{function}' without the image "
                                     f"already takes {overhead} of {budget} bytes")
            fitted = images.fit_images(image, room, mask)
            if fitted.reencoded:
                log.debug("function %s: sending %dx%d instead of %dx%d (scale %.4f, %d bytes budget)",
                          function, fitted.scale.sent_width, fitted.scale.sent_height, fitted.scale.width,
                          fitted.scale.height, fitted.scale.factor, budget)
            image_token, mask_token = _placeholder("image"), _placeholder("mask")
            blobs = {image_token: images.b64_bytes(fitted.image)}
            if fitted.mask is not None:
                blobs[mask_token] = images.b64_bytes(fitted.mask)
            body = Body(build(image_token, mask_token if fitted.mask is not None else None, fitted.scale), blobs)
            try:
                return self._invoke_body(function, body, timeout, deadline), fitted
            except _BodyTooLarge as exc:
                if attempt == 2:
                    raise FunctionFailed(
                        f"body too large: function '{function}' refused {exc.sent} bytes even after "
                        f"shrinking the image (HTTP 413: {exc.excerpt}); raise its maxRequestBodySize "
                        f"to 33554432 in function.yaml"
                    ) from None
                budget = self._smaller_budget(function, exc.sent)
                log.warning("function %s refused %d bytes (413); retrying once within %d bytes",
                            function, exc.sent, budget)
        raise AssertionError("unreachable")

    def body_budget(self, function: str) -> int:
        """Request-body bytes allowed: ``max_body_bytes``, lowered to the function's
        ``maxRequestBodySize`` when the dashboard reports it."""
        info = self.function_info(function)
        known = info.get("max_body") if info else None
        if isinstance(known, int) and 1024 < known < self.max_body_bytes:
            return known
        return self.max_body_bytes

    def _smaller_budget(self, function: str, sent: int) -> int:
        info = self.function_info(function)
        known = info.get("max_body") if info else None
        if isinstance(known, int) and 1024 < known < sent:
            return known
        return min(sent // 2, NUCLIO_DEFAULT_MAX_BODY)  # Nuclio's default limit is 4 MiB

    def detect(self, function: str, image: bytes, *, threshold: float | None = None,
               extra: dict | None = None, deadline: float | None = None) -> list[dict]:
        """Detector call → CVAT detector items at the original resolution.

        ``extra`` keys are added to the body as they are (not rescaled). ``deadline`` (here and in every
        call): a ``time.monotonic()`` value the whole call must end by, retries included.
        """

        if extra and "image" in extra:
            raise ValueError("extra must not carry 'image': pass the frame as the image argument")

        def build(img: str, _mask: str | None, _scale: Scale) -> dict:
            payload: dict[str, Any] = {"image": img}
            if threshold is not None:
                payload["threshold"] = float(threshold)
            payload.update(extra or {})
            return payload

        result, fitted = self._invoke_image(function, image, build, deadline=deadline)
        if not isinstance(result, list):
            raise FunctionFailed(
                f"detector '{function}' must answer a JSON list of shapes, got {type(result).__name__}: "
                f"{json.dumps(result)[:_EXCERPT]}"
            )
        scale = fitted.scale
        return [scaling.scale_detection(item, scale) for item in result]

    def interact(self, function: str, image: bytes, *, pos_points: Sequence[Sequence[float]] = (),
                 neg_points: Sequence[Sequence[float]] = (),
                 obj_bbox: Sequence[Sequence[float]] | None = None, deadline: float | None = None) -> dict:
        """Interactor call (CVAT 2.60+ protocol) → ``{"shapes": [...]}`` at the original resolution.

        A legacy ``{"mask": [[0/1, ...], ...]}`` answer is converted to one RLE ``mask`` shape.
        """

        def build(img: str, _mask: str | None, scale: Scale) -> dict:
            return {
                "image": img,
                "pos_points": [scale.down_point(p) for p in pos_points],
                "neg_points": [scale.down_point(p) for p in neg_points],
                "obj_bbox": [scale.down_point(p) for p in obj_bbox] if obj_bbox is not None else None,
            }

        result, fitted = self._invoke_image(function, image, build, deadline=deadline)
        if isinstance(result, dict) and "shapes" not in result and isinstance(result.get("mask"), list):
            result = {"shapes": [_legacy_mask_shape(function, result["mask"])]}
        if not isinstance(result, dict) or not isinstance(result.get("shapes"), list):
            raise FunctionFailed(
                f"interactor '{function}' must answer {{\"shapes\": [...]}}, got: "
                f"{json.dumps(result)[:_EXCERPT]}"
            )
        scale = fitted.scale
        return {**result, "shapes": [scaling.scale_shape(s, scale) for s in result["shapes"]]}

    def segment_prompts(self, function: str, image: bytes, prompts: list[dict], *,
                        deadline: float | None = None) -> list[dict]:
        """SAM 2 batch: one result per prompt, same order.

        Each result is ``{"mask": RLE + [l,t,r,b], "polygons": [[x,y,...]], "score"}`` or ``{"error"}``.
        """
        clean = [_check_prompt(i, p) for i, p in enumerate(prompts)]

        def build(img: str, _mask: str | None, scale: Scale) -> dict:
            sent = [scaling.scale_prompt_down(p, scale) for p in clean]
            return {"image": img, "prompts": sent, "multimask_output": False}

        result, fitted = self._invoke_image(function, image, build, deadline=deadline)
        results = result.get("results") if isinstance(result, dict) else None
        if not isinstance(results, list) or len(results) != len(prompts):
            raise FunctionFailed(
                f"SAM 2 function '{function}' must answer {{\"results\": [...]}} with {len(prompts)} "
                f"entries, got: {json.dumps(result)[:_EXCERPT]}"
            )
        scale = fitted.scale
        return [scaling.scale_sam_result(r, scale) for r in results]

    def track(self, function: str, image: bytes, *, shapes: Sequence[dict | None] | None = None,
              states: Sequence[Any] | None = None, deadline: float | None = None) -> tuple[list, list]:
        """Tracker call (CVAT's protocol: ``shapes`` to start, ``states`` to continue, index-aligned) →
        ``(shapes, states)`` at the original resolution; a shape is ``None`` when the object is lost.

        Start shapes are ``{"type": "rectangle"|"polygon", "points"}`` in image coordinates. The states
        are the function's own (opaque, small); the bridge keeps them between frames as CVAT's UI does.
        """
        n = len(shapes if shapes is not None else states or [])
        if not n:
            raise ValueError("track needs shapes (to start) or states (to continue)")

        def build(img: str, _mask: str | None, scale: Scale) -> dict:
            payload: dict[str, Any] = {"image": img}
            if shapes is not None:
                payload["shapes"] = [None if s is None else {**s, "points": scale.down_flat(s["points"])}
                                     for s in shapes]
            payload["states"] = list(states) if states is not None else []
            return payload

        result, fitted = self._invoke_image(function, image, build, deadline=deadline)
        out_shapes = result.get("shapes") if isinstance(result, dict) else None
        out_states = result.get("states") if isinstance(result, dict) else None
        if not isinstance(out_shapes, list) or not isinstance(out_states, list) or \
                len(out_shapes) != n or len(out_states) != n:
            raise FunctionFailed(f"tracker '{function}' must answer {{\"shapes\": [...], \"states\": [...]}} "
                                 f"with {n} entries each, got: {json.dumps(result)[:_EXCERPT]}")
        scale = fitted.scale
        return [None if s is None else scaling.scale_shape(s, scale) for s in out_shapes], out_states

    def inpaint(self, function: str, image: bytes, mask_png: bytes, *, deadline: float | None = None) -> bytes:
        """LaMa: fill the mask's nonzero pixels; PNG bytes at the original resolution.

        When the image had to be re-encoded or downscaled (or the function answered another size), its
        output is resized back and used only inside the mask; pixels outside it are the original's.
        """
        if not mask_png:
            raise BadImage(f"empty mask for function '{function}'")

        def build(img: str, mask: str | None, _scale: Scale) -> dict:
            return {"image": img, "mask": mask}

        result, fitted = self._invoke_image(function, image, build, mask=mask_png, deadline=deadline)
        if not isinstance(result, dict) or not isinstance(result.get("image"), str):
            raise FunctionFailed(
                f"inpainting function '{function}' must answer {{\"image\": <base64 PNG>, ...}}, got: "
                f"{json.dumps(result)[:_EXCERPT]}"
            )
        try:
            data = images.b64_decode(result["image"])
        except (binascii.Error, ValueError) as exc:
            raise FunctionFailed(f"inpainting function '{function}' returned invalid base64: {exc}") from None
        try:
            out_size = images.image_size(data, "the inpainted image")
        except BadImage as exc:
            raise FunctionFailed(f"inpainting function '{function}': {exc}") from None
        if not fitted.reencoded and out_size == images.image_size(image):
            return data
        return images.restore_inpainted(image, mask_png, data)


def _placeholder(what: str) -> str:
    """A string no payload holds by chance, replaced by the base64 of ``what`` in the sent body."""
    return f"@@bridge-{what}-{uuid.uuid4().hex}@@"


def _earliest(**ends: float | None) -> tuple[str, float]:
    """The name and time of the earliest of the ``ends`` given (``None``: no such end)."""
    return min(((name, end) for name, end in ends.items() if end is not None), key=lambda item: item[1])


def _legacy_mask_shape(function: str, mask: list) -> dict:
    """Legacy interactor answer: a full-image 2D 0/1 array → an RLE ``mask`` shape."""
    try:
        arr = np.asarray(mask, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FunctionFailed(f"interactor '{function}' legacy 'mask' is not a 2D number array") from exc
    if arr.ndim != 2 or arr.size == 0:
        raise FunctionFailed(f"interactor '{function}' legacy 'mask' must be 2D, got shape {arr.shape}")
    return {"type": "mask", "points": crop_to_cvat_rle(arr > 0, 0, 0), "group": 0, "source": "semi-auto",
            "attributes": [], "occluded": False, "rotation": 0}


def _check_prompt(index: int, prompt: Any) -> dict:
    """A SAM 2 prompt with all three keys; ``ValueError`` naming the prompt when malformed.

    An empty prompt (no box, no points) is passed on: the function answers ``{"error"}`` for it.
    """
    if not isinstance(prompt, dict):
        raise ValueError(f"prompt {index} must be an object, got {prompt!r:.120}")
    bbox = prompt.get("bbox")
    if bbox is not None and (not isinstance(bbox, list | tuple) or len(bbox) != 4):
        raise ValueError(f"prompt {index}: bbox must be [x1, y1, x2, y2] or null, got {bbox!r:.120}")
    out = {**prompt, "bbox": list(bbox) if bbox is not None else None}
    for key in ("pos_points", "neg_points"):
        points = prompt.get(key) or []
        if not all(isinstance(p, list | tuple) and len(p) == 2 for p in points):
            raise ValueError(f"prompt {index}: {key} must be a list of [x, y] pairs, got {points!r:.120}")
        out[key] = [list(p) for p in points]
    return out


def configured_dashboard(settings: Settings) -> str | None:
    """The dashboard URL the client built from ``settings`` uses (``Settings.configured_dashboard_url``)."""
    return settings.configured_dashboard_url
