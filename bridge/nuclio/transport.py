"""HTTP plumbing for ``NuclioClient``: a transport whose every socket operation honours a deadline,
and a bounded reader for answers.

httpx timeouts are per socket operation: a server trickling one byte per second never trips a 40 s
read timeout. ``DeadlineClock`` holds the deadline of the call running on the current thread (a
``threading.local``: an httpx ``Client`` does its I/O on the calling thread), and the network
backend below clamps the timeout of each connect, ``recv`` and ``send`` (sent in 64 KiB pieces) to
the time left, raising httpcore's own timeout errors (httpx maps them to ``httpx.ConnectTimeout`` /
``ReadTimeout`` / ``WriteTimeout``) once it has passed. Name resolution is the one step it cannot
bound (``getaddrinfo`` takes no timeout).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

WRITE_PIECE = 64 * 1024


class DeadlineClock:
    """The monotonic deadline of the HTTP call running on this thread, or ``None`` (no clamp)."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def deadline(self) -> float | None:
        return getattr(self._local, "deadline", None)

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self._local.deadline = value

    def clamp(self, timeout: float | None, error: type[Exception]) -> float | None:
        """``timeout`` shortened to the time left; ``error`` when none is left."""
        deadline = self.deadline
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise error("deadline passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, clock: DeadlineClock):
        self._stream = stream
        self._clock = clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._clock.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        for start in range(0, len(view), WRITE_PIECE):
            self._stream.write(view[start:start + WRITE_PIECE],  # type: ignore[arg-type]
                               self._clock.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname,
                                     self._clock.clamp(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls, self._clock)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, clock: DeadlineClock):
        self._backend = httpcore.SyncBackend()
        self._clock = clock

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(host, port, self._clock.clamp(timeout, httpcore.ConnectTimeout),
                                           local_address, socket_options)
        return _DeadlineStream(stream, self._clock)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(path, self._clock.clamp(timeout, httpcore.ConnectTimeout),
                                                   socket_options)
        return _DeadlineStream(stream, self._clock)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connections use the deadline-clamping backend.

    httpx takes no network backend, so the connection pool it built is swapped for one made with the
    same settings; proxies from the environment are not used (Nuclio is reached on the internal network).
    """

    def __init__(self, limits: httpx.Limits, clock: DeadlineClock):
        ssl_context = httpx.create_ssl_context()
        super().__init__(verify=ssl_context, limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.ConnectionPool):
            raise RuntimeError("httpx.HTTPTransport no longer keeps its pool in _pool; update DeadlineTransport")
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend(clock),
        )


@dataclass(frozen=True)
class Answer:
    """A function's HTTP answer, read whole (2xx, up to the size limit) or in part (errors)."""

    status: int
    content_type: str
    content: bytes | bytearray
    truncated: bool = False

    def text(self, limit: int) -> str:
        """The body as one line of at most ``limit`` characters, ``...`` when cut."""
        text = self.content.decode("utf-8", errors="replace").strip().replace("\n", " ")
        cut = self.truncated or len(text) > limit
        return text[:limit] + ("..." if cut else "")


class AnswerTooLarge(Exception):
    """The body went past ``limit`` bytes (``declared`` is its Content-Length when one was sent)."""

    def __init__(self, limit: int, declared: int | None):
        super().__init__(f"answer larger than {limit} bytes")
        self.limit = limit
        self.declared = declared


class DeadlinePassed(Exception):
    """The deadline passed while the body was still arriving (``received`` bytes so far)."""

    def __init__(self, received: int):
        super().__init__(f"deadline passed after {received} bytes of the answer")
        self.received = received


def read_answer(resp: httpx.Response, limit: int, deadline: float, error_limit: int = 64 * 1024) -> Answer:
    """Read ``resp`` (opened with ``stream``) chunk by chunk, checking the clock between chunks;
    ``DeadlinePassed`` when it passes (or a read times out: reads are clamped to it).

    A 2xx body over ``limit`` bytes raises ``AnswerTooLarge`` (at once when its Content-Length says
    so); any other status is read for its excerpt only, up to ``error_limit`` bytes.
    """
    ok = 200 <= resp.status_code < 300
    cap = limit if ok else error_limit
    declared = _content_length(resp)
    if ok and declared is not None and declared > limit and not resp.headers.get("content-encoding"):
        raise AnswerTooLarge(limit, declared)
    content = bytearray()  # grown in place: no second copy of a big answer, as joining chunks would make
    size = 0
    truncated = False
    try:
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if time.monotonic() > deadline:
                raise DeadlinePassed(size)
            if size > cap:
                if ok:
                    raise AnswerTooLarge(limit, declared)
                content += chunk[: len(chunk) - (size - cap)]
                truncated = True
                break
            content += chunk
    except httpx.TimeoutException:  # reads are clamped to the deadline: this is it passing
        raise DeadlinePassed(size) from None
    return Answer(resp.status_code, resp.headers.get("content-type", ""), content, truncated)


def _content_length(resp: httpx.Response) -> int | None:
    try:
        return int(resp.headers["content-length"])
    except (KeyError, ValueError):
        return None
