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


def require_token(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """When BRIDGE_API_TOKEN is set, the job API needs ``Authorization: Bearer <token>``."""
    expected = settings.api_token.get_secret_value() if settings.api_token else None
    if not token_ok(expected, authorization):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token (BRIDGE_API_TOKEN)",
                            headers={"WWW-Authenticate": "Bearer"})
