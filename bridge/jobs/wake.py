"""Waking idle workers in another process of the same ``bridge serve`` when a webhook commits a job.

With several HTTP processes the job workers live in the supervisor; without a signal they find a new
job at their next poll (``BRIDGE_POLL_SECONDS``, 0.5 s by default: 0.25 s of waiting on average). The
supervisor listens on a Unix datagram socket; an HTTP process sends one byte to it after a commit that
created jobs. Best effort: a lost datagram only means the job is claimed at the next poll. Workers in
other machines or ``bridge worker`` processes keep polling.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

WAKE_ENV = "BRIDGE_WAKE_SOCKET"
"""Where the supervisor listens (set by ``bridge serve`` for its HTTP processes)."""


class WakeListener:
    """Binds a Unix datagram socket in a private temporary directory; each datagram calls ``on_wake``."""

    def __init__(self, on_wake: Callable[[], None]):
        self._on_wake = on_wake
        self._dir = tempfile.TemporaryDirectory(prefix="bridge-wake-")
        self.path = str(Path(self._dir.name) / "wake.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._thread = threading.Thread(target=self._run, name="bridge-wake", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self._sock.recv(64)
            except OSError:  # closed: stop listening
                return
            self._on_wake()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=2)
        self._dir.cleanup()


class WakeSender:
    """Sends the wake-up datagram to ``path`` without ever blocking (a full or missing socket drops it)."""

    def __init__(self, path: str):
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def __call__(self) -> None:
        try:
            self._sock.sendto(b"w", self.path)
        except OSError as exc:  # the supervisor is gone or busy: its workers poll anyway
            log.debug("wake-up datagram to %s not sent: %s", self.path, exc)

    def close(self) -> None:
        self._sock.close()
