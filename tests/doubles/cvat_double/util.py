"""Small helpers shared by the CVAT double: errors, timestamps, URL validation, pagination."""

from __future__ import annotations

import itertools
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode


class ApiError(Exception):
    """An HTTP error answer, rendered as CVAT renders DRF errors (``detail`` or a field map)."""

    def __init__(self, status: int, detail: Any):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.body = detail if isinstance(detail, dict | list) else {"detail": detail}


def bad_request(message: str, field: str | None = None) -> ApiError:
    """A 400 like DRF's ValidationError: ``{"field": ["msg"]}`` or ``["msg"]``."""
    return ApiError(400, {field: [message]} if field else [message])


def not_found() -> ApiError:
    return ApiError(404, "Not found.")


class Clock:
    """Strictly increasing UTC timestamps rendered like Django REST (``...123456Z``)."""

    def __init__(self) -> None:
        self._last = datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> str:
        with self._lock:
            t = datetime.now(UTC)
            if t <= self._last:
                t = self._last + timedelta(microseconds=1)
            self._last = t
            return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Counter:
    """Thread-safe id sequence."""

    def __init__(self, start: int = 1) -> None:
        self._it = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._it)


# Django's URLValidator (5.2) host rules: localhost, IPv4, [IPv6], or a dotted name whose labels are
# [a-z0-9-] (no edge hyphens, no underscores) and whose TLD is alphabetic (2-63 chars) or punycode.
_UL = "\u00a1-\uffff"
_OCTET = r"(?:0|25[0-5]|2[0-4][0-9]|1[0-9]?[0-9]?|[1-9][0-9]?)"
_IPV4 = _OCTET + r"(?:\." + _OCTET + "){3}"
_IPV6 = r"\[[0-9a-f:.]+\]"
_HOSTNAME = rf"[a-z{_UL}0-9](?:[a-z{_UL}0-9-]{{0,61}}[a-z{_UL}0-9])?"
_DOMAIN = rf"(?:\.(?!-)[a-z{_UL}0-9-]{{1,63}}(?<!-))*"
_TLD = rf"\.(?!-)(?:[a-z{_UL}-]{{2,63}}|xn--[a-z0-9]{{1,59}})(?<!-)\.?"
_HOST = "(" + _HOSTNAME + _DOMAIN + _TLD + "|localhost)"
_URL_RE = re.compile(
    r"^(?:http|ftp)s?://"
    r"(?:[^\s:@/]+(?::[^\s:@/]*)?@)?"
    r"(?:" + _IPV4 + "|" + _IPV6 + "|" + _HOST + ")"
    r"(?::[0-9]{1,5})?"
    r"(?:[/?#][^\s]*)?\Z",
    re.IGNORECASE,
)


def validate_target_url(url: str) -> None:
    """Reject what Django's URLValidator rejects (single-label hosts, underscores, bad schemes)."""
    if not isinstance(url, str) or not url or len(url) > 8192 or not _URL_RE.match(url):
        raise bad_request("Enter a valid URL.", "target_url")


def paginate(items: list[Any], query: dict[str, str], base_url: str, path: str) -> dict:
    """CVAT's page-number pagination: ``{"count","next","previous","results"}``."""
    try:
        page = int(query.get("page", "1"))
        page_size = int(query.get("page_size", "10"))
    except ValueError as e:
        raise ApiError(404, "Invalid page.") from e
    if page < 1 or page_size < 1:
        raise ApiError(404, "Invalid page.")
    page_size = min(page_size, 1000)
    count = len(items)
    start = (page - 1) * page_size
    if start >= count and page != 1:
        raise ApiError(404, "Invalid page.")

    def link(p: int) -> str:
        rest = {k: v for k, v in query.items() if k != "page"}
        rest["page"] = str(p)
        return f"{base_url}{path}?{urlencode(rest)}"

    return {
        "count": count,
        "next": link(page + 1) if start + page_size < count else None,
        "previous": link(page - 1) if page > 1 else None,
        "results": items[start : start + page_size],
    }


def parse_int(value: Any, field: str) -> int:
    """An integer from a query/body value, or a 400 naming the field."""
    if isinstance(value, bool):
        raise bad_request("A valid integer is required.", field)
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise bad_request("A valid integer is required.", field) from e
