"""A TCP proxy on loopback that loses CVAT's answers *after* CVAT applied the request.

It sits between the bridge and the CVAT double, relays bytes both ways, and watches the request lines
going in. A request matching an armed fault is passed to the double in full; when the double's answer
starts to come back (it has applied the request by then), the proxy does what a network or a reverse
proxy really does instead of relaying it:

- ``"reset"``: closes the client's connection with a TCP RST (``SO_LINGER 0``);
- ``"timeout"``: holds the answer back until the client gives up;
- ``"504"``: answers ``504 Gateway Timeout`` like nginx/traefik in front of CVAT, and closes;
- a callable: calls it (e.g. ``kill -9`` of the bridge process), then resets.

``outage()`` makes CVAT unreachable (every connection reset) until ``restore()``.

HTTP/1.1 without pipelining (what urllib3 speaks): the answer after a request belongs to it.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

Fault = str | Callable[[], None]
_GATEWAY_TIMEOUT = (b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/html\r\nContent-Length: 58\r\n"
                    b"Connection: close\r\n\r\n<html><body><h1>504 Gateway Time-out</h1></body></html>\r\n\r\n")


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    fault: Fault
    times: int
    hits: int = 0


@dataclass
class _Conn:
    client: socket.socket
    upstream: socket.socket
    fault: Fault | None = None
    closed: threading.Event = field(default_factory=threading.Event)


class FaultProxy:
    """``with FaultProxy(port) as proxy:`` — point the bridge at ``proxy.url``; ``proxy.arm(...)``."""

    def __init__(self, upstream_port: int, *, host: str = "127.0.0.1"):
        self.upstream = (host, upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self.url = f"http://{host}:{self._listener.getsockname()[1]}"
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._down = threading.Event()
        self._conns: list[_Conn] = []
        self.log: list[tuple[str, str, str]] = []  # (method, path, fault name) of every fault applied
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")

    # --- control ------------------------------------------------------------------------------
    def arm(self, method: str, path: str, fault: Fault, *, times: int = 1) -> Rule:
        """Apply ``fault`` to the next ``times`` requests ``method`` whose path+query matches ``path``."""
        rule = Rule(method.upper(), re.compile(path), fault, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def outage(self) -> None:
        """CVAT goes away: open connections are reset, new ones refused, until ``restore()``."""
        self._down.set()
        with self._lock:
            conns, self._conns = list(self._conns), []
        for conn in conns:
            _reset(conn.client)
            _close(conn)

    def restore(self) -> None:
        self._down.clear()

    def disarm(self) -> None:
        with self._lock:
            self._rules.clear()

    def _match(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.hits < rule.times and rule.method == method and rule.path.search(target):
                    rule.hits += 1
                    name = rule.fault if isinstance(rule.fault, str) else getattr(rule.fault, "__name__", "call")
                    self.log.append((method, target, name))
                    return rule.fault
        return None

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            _close(conn)

    # --- relaying -----------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client, upstream)
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._requests, args=(conn,), daemon=True, name="proxy-in").start()
            threading.Thread(target=self._answers, args=(conn,), daemon=True, name="proxy-out").start()

    def _requests(self, conn: _Conn) -> None:
        """Client → CVAT: relay, and note the fault of each request as its head goes by."""
        buf = b""
        body_left = 0
        blind = False  # a chunked request body: relay the rest of the connection unparsed
        try:
            while not conn.closed.is_set():
                data = conn.client.recv(65536)
                if not data:
                    break
                if blind:
                    conn.upstream.sendall(data)
                    continue
                buf += data
                while buf:
                    if body_left:
                        n = min(body_left, len(buf))
                        conn.upstream.sendall(buf[:n])
                        buf, body_left = buf[n:], body_left - n
                        continue
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break  # wait for the whole head
                    head, buf = buf[: end + 4], buf[end + 4:]
                    method, target, length = _parse_head(head)
                    fault = self._match(method, target)
                    if fault is not None:
                        conn.fault = fault  # before the request goes on: its answer is the next one back
                    conn.upstream.sendall(head)
                    if length < 0:
                        conn.upstream.sendall(buf)
                        buf, blind = b"", True
                        break
                    body_left = length
        except OSError:
            pass  # noqa: S110 - a connection closed by either side ends the relay
        finally:
            _close(conn)

    def _answers(self, conn: _Conn) -> None:
        """CVAT → client: relay, unless the answer belongs to a faulted request."""
        try:
            while not conn.closed.is_set():
                data = conn.upstream.recv(65536)
                if not data:
                    break
                fault = conn.fault
                if fault is None:
                    conn.client.sendall(data)
                    continue
                # CVAT has applied the request: its answer is lost
                if fault == "504":
                    conn.client.sendall(_GATEWAY_TIMEOUT)
                    break
                if fault == "timeout":
                    conn.upstream.close()
                    conn.client.settimeout(300)
                    while conn.client.recv(65536):  # until the client gives up and closes
                        pass
                    break
                if callable(fault):
                    fault()
                _reset(conn.client)
                break
        except OSError:
            pass  # noqa: S110 - a connection closed by either side ends the relay
        finally:
            _close(conn)


def _parse_head(head: bytes) -> tuple[str, str, int]:
    lines = head.decode("latin-1").split("\r\n")
    method, target = (lines[0].split(" ") + ["", ""])[:2]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip() or 0)
        elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
            return method.upper(), target, -1
    return method.upper(), target, length


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        return
    sock.close()


def _close(conn: _Conn) -> None:
    conn.closed.set()
    for s in (conn.client, conn.upstream):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # noqa: S110 - already closed
        s.close()
