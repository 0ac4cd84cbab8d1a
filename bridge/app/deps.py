"""FastAPI dependencies: typed access to what the app factory put on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from bridge.app.metrics import BridgeMetrics
from bridge.app.security import token_ok
from bridge.app.settings import Settings
from bridge.jobs.store import JobStore
from bridge.runtime import Runtime


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_metrics(request: Request) -> BridgeMetrics:
    return request.app.state.metrics


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
MetricsDep = Annotated[BridgeMetrics, Depends(get_metrics)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _check_bearer(expected: str, authorization: str | None) -> None:
    if not token_ok(expected, authorization):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token (BRIDGE_API_TOKEN)",
                            headers={"WWW-Authenticate": "Bearer"})


def require_token(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Reads: open while BRIDGE_API_TOKEN is unset; with it set, ``Authorization: Bearer <token>``."""
    if settings.api_token and settings.api_token.get_secret_value():
        _check_bearer(settings.api_token.get_secret_value(), authorization)


def require_token_to_change(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Changes (retry, cancel) are never open: refused (403) until BRIDGE_API_TOKEN is set, then bearer."""
    expected = settings.api_token.get_secret_value() if settings.api_token else ""
    if not expected:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "retry and cancel over HTTP are disabled: set BRIDGE_API_TOKEN and send "
                            "'Authorization: Bearer <token>' (or run `bridge jobs retry|cancel ID` on the host)")
    _check_bearer(expected, authorization)
