"""A misbehaving HTTP "function" on loopback: faults no Nuclio handler can produce, at the socket level.

Modes (``serve_faults(mode, ...)`` yields ``(state, url)``):

* ``trickle_body``: status and headers at once (Content-Length 10 000), then the body one byte per
  second;
* ``trickle_all``: the whole response, status line included, one byte per second;
* ``silent_after_headers``: status and headers, then nothing;
* ``no_read``: never reads the request body nor answers (the client's send blocks);
* ``huge``: an answer (``status``, 200 by default) of ``size`` bytes streamed from a generator (never
  held in memory), chunked or with its Content-Length (``declare=True``);
* ``body``: answers ``body`` (bytes) with status 200, with its Content-Length or ``chunked``.

``state.requests`` counts the requests that arrived; every handler stops when the server closes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from socketserver import BaseRequestHandler, ThreadingTCPServer

CHUNK = 64 * 1024


@dataclass
class FaultState:
    mode: str
    size: int = 0
    status: int = 200
    declare: bool = False
    body: bytes = b""
    chunked: bool = False
    requests: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            return data
        data += part
    return data


def _read_request(sock: socket.socket) -> None:
    head = _read_head(sock)
    header, _, rest = head.partition(b"\r\n\r\n")
    length = 0
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    left = length - len(rest)
    while left > 0:
        part = sock.recv(min(left, 1 << 20))
        if not part:
            return
        left -= len(part)


def _trickle(sock: socket.socket, data: bytes, state: FaultState) -> None:
    for i in range(len(data)):
        if state.stop.wait(1.0 if i else 0):
            return
        sock.sendall(data[i:i + 1])


def _huge(sock: socket.socket, state: FaultState) -> None:
    piece = b"[" + b"0," * (CHUNK // 2 - 1) + b"0"  # never valid JSON as a whole: it must not be decoded
    status = b"HTTP/1.1 %d Whatever\r\nContent-Type: application/json\r\n" % state.status
    if state.declare:
        sock.sendall(status + b"Content-Length: %d\r\n\r\n" % state.size)
    else:
        sock.sendall(status + b"Transfer-Encoding: chunked\r\n\r\n")
    sent = 0
    while sent < state.size and not state.stop.is_set():  # each piece is sent, then forgotten
        part = piece[: min(len(piece), state.size - sent)]
        sock.sendall(part if state.declare else b"%x\r\n%s\r\n" % (len(part), part))
        sent += len(part)
    if not state.declare:
        sock.sendall(b"0\r\n\r\n")


def _respond(sock: socket.socket, state: FaultState) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    if state.mode == "no_read":
        state.stop.wait()
        return
    _read_request(sock)
    if state.mode == "trickle_body":
        sock.sendall(head % 10_000)
        _trickle(sock, b"[" + b" " * 9_998 + b"]", state)
    elif state.mode == "trickle_all":
        _trickle(sock, head % 2 + b"[]", state)
    elif state.mode == "silent_after_headers":
        sock.sendall(head % 2)
        state.stop.wait()
    elif state.mode == "huge":
        _huge(sock, state)
    elif state.mode == "body" and state.chunked:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(state.body), CHUNK):
            part = state.body[i:i + CHUNK]
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        sock.sendall(b"0\r\n\r\n")
    elif state.mode == "body":
        sock.sendall(head % len(state.body) + state.body)
    else:
        raise ValueError(f"unknown mode {state.mode!r}")


class _Server(ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


@contextlib.contextmanager
def serve_faults(mode: str, **kwargs) -> Iterator[tuple[FaultState, str]]:
    state = FaultState(mode, **kwargs)

    class Handler(BaseRequestHandler):
        def handle(self) -> None:
            with state.lock:
                state.requests += 1
            # The client hanging up mid-answer is what the tests provoke.
            with contextlib.suppress(OSError):
                _respond(self.request, state)

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()
