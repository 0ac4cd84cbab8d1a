"""Building an authenticated cvat-sdk client and mapping SDK failures to ``bridge.errors``.

This is the only place that knows how cvat-sdk authenticates and how it reports errors:
everything else gets a ready ``cvat_sdk.Client`` (with a default timeout on every request)
and catches ``CvatUnavailable`` / ``NotFound`` / ``CvatRejected``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from cvat_sdk import Client, Config
from cvat_sdk.api_client import exceptions as api_exc
from cvat_sdk.core.client import AccessTokenCredentials, PasswordCredentials
from cvat_sdk.core.exceptions import BackgroundRequestException, CvatSdkException

from bridge.errors import BridgeError, ConfigError, CvatRejected, CvatUnavailable, NotFound, PermanentError

_MAX_REASON_CHARS = 500
_CONNECT_TIMEOUT_MAX = 10.0


def check_url(url: str) -> str:
    """``url`` without a trailing slash; ``ConfigError`` unless it is an explicit http(s) URL."""
    url = (url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"CVAT URL {url!r} needs an explicit http:// or https:// scheme and a host "
            "(cvat-sdk silently turns a bare host into https://), e.g. http://cvat-server:8080"
        )
    return url


def _install_default_timeout(client: Client, timeout: float) -> None:
    """Make every SDK request use ``(connect, read)`` timeouts unless the caller gives one.

    The generated client has no default timeout (``_request_timeout=None`` waits forever), and
    an explicit ``None`` would override a pool-level default, so the REST object's ``request``
    is wrapped on this instance.
    """
    default = (min(timeout, _CONNECT_TIMEOUT_MAX), timeout)
    rest = client.api_client.rest_client
    original = rest.request

    def request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return original(
            *args, _request_timeout=default if _request_timeout is None else _request_timeout, **kwargs
        )

    rest.request = request


def make_sdk_client(
    url: str,
    *,
    access_token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    org: str | None = None,
    timeout: float = 60.0,
    cache_dir: Path | None = None,
    retries: int = 3,
    status_check_period: float = 1.0,
) -> Client:
    """Return a logged-in ``cvat_sdk.Client`` for ``url`` (explicit http(s) scheme required).

    A personal access token (``Authorization: Bearer``) is preferred; otherwise username and
    password open a session once (never basic auth per request). ``org`` sets the
    ``X-Organization`` context. No server version check is made (an older server only gets
    a log line from the SDK anyway); call ``CvatClient.check()`` to verify connectivity.
    ``retries`` bounds urllib3's own retries of connection errors and 502/503/504 on reads;
    ``status_check_period`` is how often background requests (task creation) are polled.
    Bad arguments raise ``ConfigError``; a failed login raises ``CvatRejected``/``CvatUnavailable``.
    """
    url = check_url(url)
    if timeout <= 0:
        raise ConfigError(f"CVAT timeout must be positive, got {timeout}")
    if not access_token and not (username and password):
        raise ConfigError(
            "no CVAT credentials: set CVAT_ACCESS_TOKEN (a personal access token) "
            "or CVAT_USERNAME and CVAT_PASSWORD"
        )
    config = Config(allow_unsupported_server=True, status_check_period=status_check_period)
    if cache_dir is not None:
        config.cache_dir = Path(cache_dir)
    client = Client(url, config=config, check_server_version=False)
    try:
        client.api_client.configuration.retries = urllib3.Retry(
            total=retries, connect=retries, read=retries, status=retries,
            status_forcelist=(502, 503, 504), backoff_factor=0.5, raise_on_status=False,
        )
        # The REST object copied the retry policy at construction: rebuild its pools.
        rest = client.api_client.rest_client
        rest.__init__(client.api_client.configuration)
        _install_default_timeout(client, timeout)
        if org:
            client.organization_slug = org
        if access_token:
            client.login(AccessTokenCredentials(access_token))
        else:
            with map_errors(f"logging in to CVAT at {url} as {username!r}"):
                client.login(PasswordCredentials(username or "", password or ""))
    except BaseException:
        client.close()
        raise
    return client


def reason_of(exc: api_exc.ApiException) -> str:
    """CVAT's own explanation from an error response body, shortened to one line."""
    body: Any = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    text = ""
    if body:
        try:
            parsed = json.loads(body)
        except (ValueError, TypeError):
            text = str(body)
        else:
            if isinstance(parsed, dict) and set(parsed) == {"detail"}:
                text = str(parsed["detail"])
            else:
                text = json.dumps(parsed, ensure_ascii=False)
    if not text:
        text = str(exc.reason or "")
    text = " ".join(text.split())
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 3] + "..."
    return text


def translate(exc: BaseException, what: str) -> BridgeError | None:
    """The ``bridge.errors`` exception for an SDK/HTTP failure, or None if it is not one."""
    if isinstance(exc, BridgeError):
        return None
    if isinstance(exc, api_exc.ApiException):
        status = exc.status or 0
        reason = reason_of(exc)
        if status == 0:
            return CvatUnavailable(f"{what}: CVAT could not be reached ({reason})")
        if status == 401:
            return CvatRejected(
                f"{what}: CVAT rejected the credentials (401 {reason}); check CVAT_ACCESS_TOKEN "
                "or CVAT_USERNAME/CVAT_PASSWORD"
            )
        if status == 403:
            return CvatRejected(
                f"{what}: CVAT refused permission (403 {reason}); the bridge user needs access "
                "to this project/task/job (and the right CVAT_ORG)"
            )
        if status == 404:
            return NotFound(f"{what}: not found in CVAT (404 {reason})")
        if status >= 500 or status in (408, 429):
            return CvatUnavailable(f"{what}: CVAT answered {status} ({reason})")
        return CvatRejected(f"{what}: CVAT rejected the request ({status} {reason})")
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return CvatUnavailable(f"{what}: CVAT could not be reached ({exc.reason or exc})")
    if isinstance(exc, urllib3.exceptions.HTTPError | socket.timeout | ConnectionError | TimeoutError):
        return CvatUnavailable(f"{what}: CVAT could not be reached ({type(exc).__name__}: {exc})")
    if isinstance(exc, BackgroundRequestException):
        return CvatRejected(f"{what}: CVAT's background request failed: {exc}")
    if isinstance(exc, api_exc.OpenApiException | CvatSdkException):
        return PermanentError(f"{what}: cvat-sdk could not handle CVAT's data ({type(exc).__name__}: {exc})")
    if isinstance(exc, OSError):
        return CvatUnavailable(f"{what}: CVAT could not be reached ({type(exc).__name__}: {exc})")
    return None


@contextmanager
def map_errors(what: str = "CVAT request") -> Iterator[None]:
    """Context manager (also usable as a decorator) turning SDK failures into bridge errors.

    Connection problems, timeouts and 5xx → ``CvatUnavailable``; 404 → ``NotFound``; any other
    4xx → ``CvatRejected`` carrying CVAT's reason text. ``what`` prefixes the message.
    """
    try:
        yield
    except Exception as exc:
        mapped = translate(exc, what)
        if mapped is None:
            raise
        raise mapped from exc
