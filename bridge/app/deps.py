"""FastAPI dependencies: the one typed object the app factory puts on ``app.state`` and typed access
to its parts. Routes reach application state only through these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request, status

from bridge.app.security import token_ok
from bridge.config import Settings
from bridge.jobs.store import JobStore
from bridge.jobs.worker import WorkerPool
from bridge.metrics import BridgeMetrics
from bridge.pipelines.registry import Registry
from bridge.runtime import Bridge, Runtime

if TYPE_CHECKING:
    from bridge.app.routers.health import ComponentChecks


@dataclass
class AppState:
    """Everything the routes use: the composition root's ``Bridge`` plus what only HTTP needs."""

    bridge: Bridge
    checks: ComponentChecks
    watch_functions: list[str] = field(default_factory=list)
    own_username: str | None = None
    pool: WorkerPool | None = None
    supervisor_workers: int | None = None
    """Job workers of the ``bridge serve`` supervisor this HTTP process belongs to (None: not a child)."""

    @property
    def settings(self) -> Settings:
        return self.bridge.settings

    @property
    def store(self) -> JobStore:
        return self.bridge.store


def app_state(app: FastAPI) -> AppState:
    """The app's state (for the factory, the lifespan and tests; routes use the dependencies)."""
    return app.state.bridge


def get_state(request: Request) -> AppState:
    return app_state(request.app)


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.bridge.settings


def get_store(state: StateDep) -> JobStore:
    return state.bridge.store


def get_metrics(state: StateDep) -> BridgeMetrics:
    return state.bridge.metrics


def get_runtime(state: StateDep) -> Runtime:
    return state.bridge.runtime


def get_registry(state: StateDep) -> Registry:
    return state.bridge.registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
MetricsDep = Annotated[BridgeMetrics, Depends(get_metrics)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
RegistryDep = Annotated[Registry, Depends(get_registry)]


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
