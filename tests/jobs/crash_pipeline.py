"""A pipeline for the crash test: slow, checkpointed, with idempotent per-frame effects on disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel

from bridge.pipelines.base import PipelineResult, StepContext
from bridge.pipelines.spec import PipelineSpec


class CrashParams(BaseModel):
    out_dir: str
    frames: int = 6
    delay: float = 0.3


def run(ctx: StepContext) -> PipelineResult:
    p: CrashParams = ctx.params  # type: ignore[assignment]
    out = Path(p.out_dir)
    (out / "effects").mkdir(parents=True, exist_ok=True)
    with open(out / "log.txt", "a") as f:
        f.write(f"start pid={os.getpid()}\n")
    ctx.progress.set_total(p.frames)
    for i in range(p.frames):
        ctx.check_cancelled()
        effect = out / "effects" / f"frame_{i}"
        if effect.exists():  # written by an earlier attempt: never twice
            ctx.progress.advance()
            continue
        time.sleep(p.delay)
        fd = os.open(effect, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        with open(out / "log.txt", "a") as f:
            f.write(f"frame {i}\n")
        ctx.progress.advance()
    with open(out / "log.txt", "a") as f:
        f.write("done\n")
    return PipelineResult(summary=f"{p.frames} frames", frames_total=p.frames)


SPEC = PipelineSpec(name="crashy", params_model=CrashParams, run=run, routes=(), trigger="job_in_progress")
