"""Which route runs which pipeline, with which parameters, on which CVAT transition — all derived
from the pipeline modules' ``SPEC`` declarations (``bridge.pipelines.spec``).

Built-in pipelines are the modules of this package that define ``SPEC``; ``BRIDGE_EXTRA_PIPELINES``
(``{"name": "python.module"}``) adds others. ``Registry`` is built once per app/worker; the module
level names below describe the built-in set (what the docs and ``bridge setup`` use).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import BaseModel

from bridge.errors import ConfigError, PermanentError
from bridge.events import TriggerKind
from bridge.pipelines.spec import PipelineSpec, RouteSpec

__all__ = ["ROUTES", "Registry", "RouteSpec", "builtin_specs", "flight_key", "load_pipeline", "parse_params",
           "trigger_kind"]


@cache
def builtin_specs() -> tuple[PipelineSpec, ...]:
    """Every module of ``bridge.pipelines`` that declares ``SPEC``, in module-name order."""
    import bridge.pipelines as package

    specs = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, PipelineSpec):
            specs.append(spec)
    return tuple(specs)


class Registry:
    """The pipelines a process knows: built-in ones plus ``extra`` (name → module defining ``SPEC``)."""

    def __init__(self, extra: Mapping[str, str] | None = None):
        specs = {s.name: s for s in builtin_specs()}
        for name, module in (extra or {}).items():
            try:
                spec = importlib.import_module(module).SPEC
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"BRIDGE_EXTRA_PIPELINES: {name!r} → {module!r}: the module must import and "
                                  f"define SPEC ({exc})") from exc
            if spec.name != name:
                raise ConfigError(f"BRIDGE_EXTRA_PIPELINES: {module!r} declares pipeline {spec.name!r}, not {name!r}")
            specs[name] = spec
        self.specs: dict[str, PipelineSpec] = specs
        routes = [r for spec in specs.values() for r in spec.route_specs()]
        paths = [r.path for r in routes]
        duplicated = sorted({p for p in paths if paths.count(p) > 1})
        if duplicated:
            raise ConfigError(f"two pipelines declare the same route(s): {', '.join(duplicated)}")
        self.routes: tuple[RouteSpec, ...] = tuple(routes)

    def spec(self, name: str) -> PipelineSpec:
        if name not in self.specs:
            raise PermanentError(f"unknown pipeline {name!r}; known: {', '.join(sorted(self.specs))}")
        return self.specs[name]

    def parse_params(self, pipeline: str, raw: Mapping[str, Any]) -> BaseModel:
        return self.spec(pipeline).parse(raw)

    def trigger_kind(self, pipeline: str, params: BaseModel) -> TriggerKind:
        return self.spec(pipeline).trigger_for(params)


@cache
def _builtin() -> Registry:
    return Registry()


def flight_key(pipeline: str, resource: str, resource_id: int) -> str:
    return f"{pipeline}:{resource}:{resource_id}"


def load_pipeline(name: str, extra: Mapping[str, str] | None = None) -> PipelineSpec:
    return (Registry(extra) if extra else _builtin()).spec(name)


def parse_params(pipeline: str, raw: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> BaseModel:
    return load_pipeline(pipeline, extra).parse(raw)


def trigger_kind(pipeline: str, params: BaseModel) -> TriggerKind:
    return _builtin().trigger_kind(pipeline, params)


ROUTES: tuple[RouteSpec, ...] = _builtin().routes
"""The built-in pipelines' routes."""
