"""``PipelineSpec``: the one declaration a pipeline module makes.

Everything else is derived from the specs (``bridge.pipelines.registry``): the webhook routes and
their OpenAPI docs, the trigger decision, the Nuclio functions ``/health`` watches, the events
``bridge setup`` subscribes each route to, and how a run recognises its own earlier results.
A new pipeline is one new module under ``bridge/pipelines/`` that defines ``SPEC`` (or, outside
the package, a module named in ``BRIDGE_EXTRA_PIPELINES``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from bridge.events import Envelope, TriggerKind, first_chunk

if TYPE_CHECKING:
    from bridge.config import PipelineSettings
    from bridge.pipelines.base import PipelineResult, StepContext

JOB_EVENTS = ("update:job",)
TASK_EVENTS = ("update:task", "update:job")  # a task's status follows its jobs' states


@dataclass(frozen=True)
class Route:
    """A webhook route of a pipeline: its path, what it does, query values it fixes."""

    path: str
    summary: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    legacy: bool = False


@dataclass(frozen=True)
class RouteSpec:
    """A route resolved against its pipeline (what the HTTP layer and ``bridge setup`` read)."""

    path: str
    pipeline: str
    params_model: type[BaseModel]
    summary: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    legacy: bool = False
    events: tuple[str, ...] = JOB_EVENTS

    @property
    def needs_target(self) -> bool:
        """The route creates a task in another project (``target_proj_id``)."""
        return "target_proj_id" in self.params_model.model_fields and "target_proj_id" not in self.fixed


def _no_functions(_params: Any, _settings: PipelineSettings) -> Iterable[str]:
    return ()


def _never(_earlier: Mapping[str, Any], _params: Any, _settings: PipelineSettings) -> bool:
    return False


@dataclass(frozen=True)
class PipelineSpec:
    """What a pipeline is and needs.

    - ``trigger``: the CVAT transition that starts it, or a function of its parameters choosing one;
    - ``functions(params, settings)``: the Nuclio functions a run with these parameters calls;
    - ``same_results(earlier_params, params, settings)``: whether an earlier job of this pipeline on
      the same resource made the results this run replaces (e.g. the same detector);
    - ``events``: the CVAT webhook events its routes need;
    - ``reads``: which frames a run reads first, ``"job"`` (the triggering job's) or ``"task"`` (the whole
      task's, from frame 0); the process that acknowledges the webhook has CVAT build that chunk while
      the job is queued (``first_chunk``). None: the run reads no frames.
    """

    name: str
    params_model: type[BaseModel]
    run: Callable[[StepContext], PipelineResult]
    routes: tuple[Route, ...]
    trigger: TriggerKind | Callable[[Any], TriggerKind]
    events: tuple[str, ...] = JOB_EVENTS
    functions: Callable[[Any, PipelineSettings], Iterable[str]] = _no_functions
    same_results: Callable[[Mapping[str, Any], Any, PipelineSettings], bool] = _never
    summary: str = ""
    reads: Literal["job", "task"] | None = None

    def first_chunk(self, env: Envelope) -> tuple[int, int] | None:
        """``(task_id, chunk)`` a run started by ``env`` reads first, when the payload says (see ``reads``)."""
        return None if self.reads is None else first_chunk(env, whole_task=self.reads == "task")

    def trigger_for(self, params: BaseModel) -> TriggerKind:
        return self.trigger(params) if callable(self.trigger) else self.trigger

    def parse(self, raw: Mapping[str, Any]) -> BaseModel:
        return self.params_model.model_validate(dict(raw))

    def functions_for(self, raw: Mapping[str, Any], settings: PipelineSettings) -> list[str]:
        """Function names a stored job's parameters use (none when they no longer parse)."""
        try:
            params = self.parse(raw)
        except ValueError:
            return []
        return sorted({f for f in self.functions(params, settings) if f})

    def route_specs(self) -> tuple[RouteSpec, ...]:
        return tuple(RouteSpec(r.path, self.name, self.params_model, r.summary, dict(r.fixed), r.legacy, self.events)
                     for r in self.routes)
