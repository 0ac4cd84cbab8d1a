"""A new pipeline is one new module and nothing else (issue 16): a toy pipeline written in a test gets
its webhook route, its OpenAPI entry, its trigger decision, a worker running it, and its function
watched by /health — from its ``SPEC`` alone."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from bridge.app.deps import app_state
from bridge.app.factory import create_app
from bridge.app.routers.health import functions_in_use
from tests.conftest import load_sample, signed

TOY = '''
"""A toy pipeline: counts the frames of the job that triggered it (no CVAT call)."""
from pydantic import BaseModel, ConfigDict

from bridge.pipelines.base import PipelineResult, StepContext
from bridge.pipelines.spec import PipelineSpec, Route


class ToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    function: str = "toy-function"
    frames: int = 3


RUNS = []


def run(ctx: StepContext) -> PipelineResult:
    p = ctx.params
    RUNS.append((ctx.trigger.job_id, p.frames, type(ctx.settings).__name__))
    ctx.progress.set_total(p.frames)
    ctx.progress.advance(p.frames)
    return PipelineResult(summary=f"toy counted {p.frames} frames of job {ctx.trigger.job_id}")


SPEC = PipelineSpec(
    name="toy",
    params_model=ToyParams,
    run=run,
    routes=(Route("/webhooks/toy", "Count frames (a toy)"),),
    trigger="job_in_progress",
    functions=lambda p, _s: [p.function],
)
'''


def test_a_toy_pipeline_needs_only_its_own_module(tmp_path, monkeypatch, make_settings):
    (tmp_path / "toy_counter.py").write_text(TOY, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = make_settings(extra_pipelines={"toy": "toy_counter"})
    app = create_app(settings, workers=1)
    with TestClient(app) as client:
        sample = load_sample("10-")  # CVAT's real "job state new → in progress" delivery
        body, headers = signed(sample["raw_body"])
        resp = client.post("/webhooks/toy?frames=7&function=toy-model", content=body, headers=headers)
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["job_id"]
        deadline = time.monotonic() + 20
        while (job := client.get(f"/jobs/{job_id}").json())["status"] != "succeeded":
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["pipeline"] == "toy" and job["summary"].startswith("toy counted 7 frames")
        assert job["progress"] == {"done": 7, "total": 7}
        # the same delivery of another event kind is ignored by its trigger decision
        other, headers = signed(load_sample("14-")["raw_body"])
        assert client.post("/webhooks/toy", content=other, headers=headers).json()["status"] == "ignored"
        # documented, and its function watched by /health
        assert "/webhooks/toy" in client.get("/openapi.json").json()["paths"]
        assert "toy-model" in functions_in_use(app_state(app))
    import toy_counter

    assert toy_counter.RUNS == [(toy_counter.RUNS[0][0], 7, "PipelineSettings")]  # only its part of the settings
