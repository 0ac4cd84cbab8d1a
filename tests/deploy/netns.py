"""A few "hosts" on one machine: Linux network namespaces joined by veth pairs to a bridge that
lives in a namespace of its own, so no interface or address is ever added to the machine's own
namespace. Only the private addresses given here exist, and only inside these namespaces.

``Hosts`` is a context manager: every namespace it made is deleted on exit, even after a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    probe = f"cbprobe{os.getpid()}"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if res.returncode != 0:
        return f"`ip netns add` failed: {res.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")


class Hosts:
    """``hosts = {"db": "10.231.0.1", ...}`` on one /24, each in namespace ``<prefix>-<name>``."""

    def __init__(self, hosts: dict[str, str], prefix: str, prefix_len: int = 24):
        self.hosts = hosts
        self.prefix = prefix
        self.prefix_len = prefix_len
        self.switch = f"{prefix}-sw"
        self.made: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def __enter__(self) -> Hosts:
        try:
            self._add(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for host, addr in self.hosts.items():
                ns = self.ns(host)
                self._add(ns)
                # both ends are created inside the namespaces: nothing touches the root namespace
                _ip("-n", self.switch, "link", "add", f"v-{host}", "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("-n", self.switch, "link", "set", f"v-{host}", "master", "br0", "up")
                _ip("-n", ns, "addr", "add", f"{addr}/{self.prefix_len}", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def _add(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def cut(self, host: str) -> None:
        """Unplug ``host``'s cable at the switch: its packets are dropped silently, as in a partition."""
        _ip("-n", self.switch, "link", "set", f"v-{host}", "down")

    def restore(self, host: str) -> None:
        _ip("-n", self.switch, "link", "set", f"v-{host}", "up")

    def popen(self, host: str, cmd: Sequence[str], *, env: dict[str, str], cwd: Path,
              log: IO[bytes]) -> subprocess.Popen[bytes]:
        """Start ``cmd`` inside ``host``'s namespace (``ip netns exec`` execs it: same pid)."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns(host), *cmd], env=env, cwd=cwd,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def run(self, host: str, cmd: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *cmd], capture_output=True, text=True,
                              check=True, **kw)  # type: ignore[call-overload]

    def close(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()
