"""Webhook target URLs: building them from ``BRIDGE_PUBLIC_URL`` and checking them like CVAT does.

CVAT validates ``target_url`` with Django's ``URLValidator``, which rejects single-label host
names (``http://bridge:8000``) and host names with underscores. ``check_target_url`` applies the
same rules before anything is sent, with a reason a person can act on.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from bridge.errors import ConfigError

# Django 5.2 django.core.validators.URLValidator, http(s) only.
_UL = "\u00a1-\uffff"
_IPV4 = (
    r"(?:0|25[0-5]|2[0-4][0-9]|1[0-9]?[0-9]?|[1-9][0-9]?)"
    r"(?:\.(?:0|25[0-5]|2[0-4][0-9]|1[0-9]?[0-9]?|[1-9][0-9]?)){3}"
)
_IPV6 = r"\[[0-9a-f:.]+\]"
_HOSTNAME = r"[a-z" + _UL + r"0-9](?:[a-z" + _UL + r"0-9-]{0,61}[a-z" + _UL + r"0-9])?"
_DOMAIN = r"(?:\.(?!-)[a-z" + _UL + r"0-9-]{1,63}(?<!-))*"
_TLD = r"\.(?!-)(?:[a-z" + _UL + r"-]{2,63}|xn--[a-z0-9]{1,59})(?<!-)\.?"
_HOST = "(" + _HOSTNAME + _DOMAIN + _TLD + "|localhost)"
_DJANGO_URL_RE = re.compile(
    r"^(?:[a-z0-9.+-]*)://"
    r"(?:[^\s:@/]+(?::[^\s:@/]*)?@)?"
    r"(?:" + _IPV4 + "|" + _IPV6 + "|" + _HOST + ")"
    r"(?::[0-9]{1,5})?"
    r"(?:[/?#][^\s]*)?"
    r"\Z",
    re.IGNORECASE,
)
_MAX_LENGTH = 2048


def check_target_url(url: str) -> str:
    """Return ``url`` if CVAT will accept it as a webhook target, else raise ``ConfigError`` saying why."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"webhook URL {url!r} must start with http:// or https://")
    if not host:
        raise ConfigError(f"webhook URL {url!r} has no host name")
    if len(url) > _MAX_LENGTH:
        raise ConfigError(f"webhook URL is {len(url)} characters long; CVAT accepts at most {_MAX_LENGTH}")
    if "_" in host:
        raise ConfigError(
            f"webhook URL {url!r}: CVAT rejects host names with underscores ({host!r}); "
            "use a hyphenated dotted alias such as cvat-bridge.internal"
        )
    if not _is_ip(host) and host.lower() != "localhost" and "." not in host.rstrip("."):
        raise ConfigError(
            f"webhook URL {url!r}: CVAT rejects single-label host names ({host!r}); give the bridge a "
            "dotted network alias (cvat-bridge.internal) or use bridge.gateway via the host gateway"
        )
    if not _DJANGO_URL_RE.match(url):
        raise ConfigError(
            f"webhook URL {url!r} is not a valid URL for CVAT (Django URLValidator): the last label of "
            "the host must be letters only (e.g. .internal), labels may not start or end with '-', "
            "and the URL may not contain spaces"
        )
    if _is_ip(host):
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError as exc:
            raise ConfigError(f"webhook URL {url!r}: {host!r} is not a valid IP address") from exc
    try:
        _ = parts.port
    except ValueError as exc:
        raise ConfigError(f"webhook URL {url!r}: invalid port ({exc})") from exc
    return url


def loopback_warning(url: str) -> str | None:
    """A warning when the target is loopback: inside CVAT's containers that is CVAT itself."""
    host = (urlsplit(url).hostname or "").lower()
    loopback = host == "localhost"
    if _is_ip(host):
        try:
            loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = False
    if loopback:
        return (
            f"{url} points at loopback: from inside CVAT's containers that is CVAT itself, not the bridge "
            "(fine only when CVAT runs on this host outside Docker, e.g. in tests)"
        )
    return None


def build_target_url(public_url: str, route: str, query: Mapping[str, object] | None = None) -> str:
    """``public_url`` + ``route`` + the query in the given order (booleans as true/false)."""
    base = public_url.rstrip("/")
    if not route.startswith("/"):
        route = "/" + route
    url = base + route
    items = [(k, _query_value(v)) for k, v in (query or {}).items() if v is not None]
    if items:
        url += "?" + urlencode(items, safe=",")
    return url


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _is_ip(host: str) -> bool:
    h = host.strip("[]")
    try:
        ipaddress.ip_address(h)
    except ValueError:
        return False
    return True
