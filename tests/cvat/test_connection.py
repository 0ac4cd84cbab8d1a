"""make_sdk_client and map_errors: URL/credential checks, timeouts, error mapping."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from cvat_sdk.api_client import exceptions as api_exc
from cvat_sdk.core.exceptions import BackgroundRequestException

from bridge.cvat.connection import make_sdk_client, map_errors, translate
from bridge.errors import ConfigError, CvatRejected, CvatUnavailable, NotFound, PermanentError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_error(status: int, body: str = "", reason: str = "Reason") -> api_exc.ApiException:
    exc = api_exc.ApiException(status=status, reason=reason)
    exc.body = body
    return exc


@pytest.mark.parametrize("url", ["cvat-server:8080", "ftp://cvat", "http://", ""])
def test_url_needs_an_explicit_http_scheme(url):
    with pytest.raises(ConfigError, match="explicit http"):
        make_sdk_client(url, access_token="t")


def test_credentials_are_required():
    with pytest.raises(ConfigError, match="no CVAT credentials"):
        make_sdk_client("http://cvat-server:8080", username="u")


def test_token_client_sends_bearer_and_org_header_without_contacting_the_server():
    client = make_sdk_client("http://127.0.0.1:9/", access_token="abc", org="reef")
    try:
        assert client.api_client.configuration.access_token == "abc"
        assert client.organization_slug == "reef"
        assert client.api_client.configuration.host == "http://127.0.0.1:9"
    finally:
        client.close()


def test_connection_refused_is_cvat_unavailable():
    client = make_sdk_client(f"http://127.0.0.1:{free_port()}", access_token="t", retries=0)
    with pytest.raises(CvatUnavailable, match="reading job 1: CVAT could not be reached"):
        with map_errors("reading job 1"):
            client.jobs.retrieve(1)
    client.close()


def test_password_login_to_a_dead_server_is_cvat_unavailable():
    with pytest.raises(CvatUnavailable, match="logging in to CVAT"):
        make_sdk_client(f"http://127.0.0.1:{free_port()}", username="u", password="p", retries=0)


def test_every_request_gets_the_default_timeout():
    """A server that accepts but never answers must not hang the caller."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    client = make_sdk_client(f"http://127.0.0.1:{server.getsockname()[1]}", access_token="t",
                             timeout=0.5, retries=0)
    try:
        started = time.monotonic()
        with pytest.raises(CvatUnavailable, match="could not be reached"):
            with map_errors("reading job 1"):
                client.jobs.retrieve(1)
        assert time.monotonic() - started < 3
    finally:
        stop.set()
        thread.join()
        client.close()
        for conn in accepted:
            conn.close()
        server.close()


@pytest.mark.parametrize(
    "status, body, kind, text",
    [
        (401, '{"detail": "Invalid token."}', CvatRejected, "rejected the credentials (401 Invalid token.)"),
        (403, '{"detail": "nope"}', CvatRejected, "refused permission (403 nope)"),
        (404, '{"detail": "Not found."}', NotFound, "not found in CVAT (404 Not found.)"),
        (400, '{"points": ["too few"]}', CvatRejected, 'rejected the request (400 {"points": ["too few"]})'),
        (409, "plain text", CvatRejected, "(409 plain text)"),
        (500, "", CvatUnavailable, "CVAT answered 500 (Reason)"),
        (503, "", CvatUnavailable, "answered 503"),
        (429, "", CvatUnavailable, "answered 429"),
        (0, "", CvatUnavailable, "could not be reached"),
    ],
)
def test_http_statuses_map_to_bridge_errors(status, body, kind, text):
    mapped = translate(api_error(status, body), "doing X")
    assert type(mapped) is kind
    assert str(mapped).startswith("doing X: ") and text in str(mapped)


def test_long_reasons_are_shortened():
    mapped = translate(api_error(400, "x" * 5000), "w")
    assert len(str(mapped)) < 700 and str(mapped).endswith("...)")


def test_other_sdk_failures_are_mapped():
    assert isinstance(translate(BackgroundRequestException("boom"), "w"), CvatRejected)
    assert isinstance(translate(api_exc.ApiTypeError("bad type"), "w"), PermanentError)
    assert isinstance(translate(ConnectionResetError("reset"), "w"), CvatUnavailable)
    assert translate(KeyError("x"), "w") is None
    assert translate(NotFound("already ours"), "w") is None


def test_map_errors_works_as_a_decorator_and_passes_other_errors():
    @map_errors("fetching thing")
    def fails(exc: Exception) -> None:
        raise exc

    with pytest.raises(NotFound, match="fetching thing"):
        fails(api_error(404))
    with pytest.raises(KeyError):
        fails(KeyError("not an SDK error"))
    with pytest.raises(NotFound, match="fetching thing"):  # reusable
        fails(api_error(404))
