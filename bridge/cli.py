"""Command line: ``bridge serve | worker | jobs | check | setup``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from bridge import __version__
from bridge.reports.cli import add_arguments as add_report_arguments
from bridge.setup.cli import add_arguments as add_setup_arguments


def _settings(args: argparse.Namespace, *, needs_secret: bool = True):
    """Settings, or ``StartupError`` (one line, printed by ``main``). Only commands that receive webhooks
    need WEBHOOK_SECRET; ``bridge jobs`` and ``bridge report`` never do."""
    import os

    from bridge.app.startup import ignored_environment, load_settings

    for warning in ignored_environment(os.environ):
        print(f"bridge: warning: {warning}", file=sys.stderr)
    return load_settings(needs_secret=needs_secret)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bridge.app.startup import open_store
    from bridge.logs import setup_logging

    settings = _settings(args)
    store = open_store(settings)  # a bad database URL is one line, before anything else is logged
    setup_logging(settings.log_level, settings.log_json)
    workers = args.workers if args.workers is not None else settings.workers
    processes = _api_processes(args.processes, settings)
    host = args.host or settings.host
    _warn_bind(host, settings)
    # h11 (not httptools) because it bounds the request line + headers: httptools buffers any size.
    options: dict[str, Any] = dict(host=host, port=args.port or settings.port, http="h11",
                                   h11_max_incomplete_event_size=settings.max_header_bytes,
                                   log_config=None, access_log=False, timeout_graceful_shutdown=30)
    if processes == 1:
        from bridge.app.factory import create_app

        uvicorn.run(create_app(settings, store=store, workers=workers), **options)
        return 0
    return _serve_processes(settings, store, workers, processes, options)


def _serve_processes(settings: Any, store: Any, workers: int, processes: int, options: dict[str, Any]) -> int:
    """``processes`` HTTP processes sharing the socket (uvicorn's supervisor, each child building its app
    with ``bridge.app.factory:app_from_env`` from the same environment, without workers) and the
    ``workers`` job workers here, in the supervisor: one pool as with a single process (shared clients,
    function concurrency per process unchanged). The processes coordinate through the job store only."""
    import logging
    import os
    import shutil
    import tempfile

    # Metrics of every process in one directory (prometheus_client's multiprocess mode): chosen before
    # prometheus_client is first imported, here and in the children (they inherit the environment).
    own_metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_metrics_dir = tempfile.mkdtemp(prefix="bridge-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_metrics_dir
    if "prometheus_client" in sys.modules:  # too late for this process: its own counters stay its own
        logging.getLogger("bridge.serve").warning("prometheus_client was imported before bridge serve chose "
                                                  "its multiprocess mode; the supervisor's job metrics are "
                                                  "not in /metrics")

    import uvicorn

    from bridge.app.factory import SUPERVISOR_ENV, SUPERVISOR_WORKERS_ENV
    from bridge.jobs.wake import WAKE_ENV, WakeListener
    from bridge.runtime import build

    os.environ["BRIDGE_WORKERS"] = "0"  # the HTTP children; this process keeps the workers it was given
    os.environ[SUPERVISOR_ENV] = str(os.getpid())  # children die with this process (kill -9 included)
    os.environ[SUPERVISOR_WORKERS_ENV] = str(workers)  # what their /health says of the job workers
    bridge = build(settings, store=store)
    pool = bridge.worker_pool(workers) if workers else None
    settings.warn_unsafe()
    listener = None
    if pool:
        pool.start()
        listener = WakeListener(pool.wake)  # a child that commits a job wakes these workers at once
        os.environ[WAKE_ENV] = listener.path
    logging.getLogger("bridge.serve").info("serving HTTP from %d processes; %d job workers in the supervisor "
                                           "process %d", processes, workers, os.getpid())
    try:
        uvicorn.run("bridge.app.factory:app_from_env", factory=True, workers=processes, **options)
    finally:
        if listener is not None:
            listener.close()
        if pool:
            pool.stop()
        bridge.close()
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)
    return 0


def _api_processes(given: int | None, settings: Any) -> int:
    """HTTP processes of ``bridge serve``: ``--processes``, else BRIDGE_API_PROCESSES (``Settings``), else one
    per CPU this process may use, up to 2. An in-memory SQLite store cannot be shared: one process then."""
    import logging
    import os

    from bridge.app.startup import StartupError

    count = given if given is not None else settings.api_processes
    if count is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        count = min(2, cpus or 1)  # the CPUs this process may use (taskset, cpusets), not the machine's
    elif not 1 <= count <= 64:
        raise StartupError(f"--processes {count}: give a whole number of HTTP processes from 1 to 64")
    url = settings.resolved_database_url
    if count > 1 and (url in ("sqlite://", "sqlite:///") or ":memory:" in url or "mode=memory" in url):
        logging.getLogger("bridge.serve").warning("an in-memory SQLite job store lives in one process: serving "
                                                  "from 1 process instead of %d", count)
        count = 1
    return count


def _warn_bind(host: str, settings: Any) -> None:
    import logging

    log = logging.getLogger("bridge.serve")
    if host in ("127.0.0.1", "localhost", "::1"):
        log.info("listening on %s only (loopback): CVAT in Docker cannot reach it; set BRIDGE_HOST=0.0.0.0 "
                 "(the container image does)", host)
    elif not settings.api_token:
        log.warning("listening on %s without BRIDGE_API_TOKEN: GET /jobs is readable by anyone who reaches "
                    "the port, and retry/cancel over HTTP are disabled", host)


def cmd_worker(args: argparse.Namespace) -> int:
    from bridge.app.startup import open_store
    from bridge.logs import setup_logging
    from bridge.runtime import build

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_json)
    settings.warn_unsafe()
    bridge = build(settings, store=open_store(settings))
    count = args.workers if args.workers is not None else max(1, settings.store.workers)
    pool = bridge.worker_pool(count)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    pool.start()
    print(f"bridge worker: {count} workers on {bridge.store.dialect}; Ctrl-C to stop", file=sys.stderr)
    stop.wait()
    pool.stop()
    bridge.close()
    return 0


def _print_job(job: Any) -> None:
    from bridge.app.routers.jobs import job_out

    print(json.dumps(job_out(job).model_dump(mode="json"), indent=2))


def cmd_run(args: argparse.Namespace) -> int:
    """Run a pipeline on a CVAT job or task without a webhook: queued for the workers (visible in
    /jobs and the console), ``--wait`` for its outcome, or ``--inline`` right here (not stored)."""
    import time
    import uuid

    from pydantic import ValidationError

    from bridge.app.startup import open_store
    from bridge.events import Trigger
    from bridge.pipelines.registry import Registry, flight_key

    settings = _settings(args, needs_secret=False)
    registry = Registry(settings.extra_pipelines)
    spec = registry.spec(args.pipeline)
    bad = [item for item in args.param if "=" not in item]
    if bad:
        raise SystemExit(f"bridge run: --param needs KEY=VALUE, got {bad[0]!r}")
    try:
        params = spec.parse(dict(item.split("=", 1) for item in args.param))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SystemExit(f"bridge run: {'.'.join(map(str, first['loc'])) or 'params'}: {first['msg']}") from None
    kind = spec.trigger_for(params)
    store = open_store(settings)
    from bridge.runtime import Runtime

    runtime = Runtime(settings, store, registry=registry)
    try:
        if kind.startswith("job"):
            if args.job is None:
                raise SystemExit(f"bridge run: {spec.name} acts on a job: give --job ID")
            job = runtime.cvat.get_job(args.job)
            trigger = Trigger(kind=kind, resource="job", resource_id=job.id, project_id=job.project_id,
                              task_id=job.task_id, job_id=job.id, event="bridge run")
        else:
            if args.task is None:
                raise SystemExit(f"bridge run: {spec.name} acts on a task: give --task ID")
            task = runtime.cvat.get_task(args.task)
            trigger = Trigger(kind=kind, resource="task", resource_id=task.id, project_id=task.project_id,
                              task_id=task.id, event="bridge run")
        params_dict = params.model_dump(mode="json", exclude_none=True)
        if args.inline:
            import threading

            from bridge.jobs.models import Job
            from bridge.pipelines.base import MemoryProgress

            # an id above every stored one: the run replaces what earlier runs on this resource wrote
            row = Job(id=2**31 - 1, pipeline=spec.name, params=params_dict, trigger=trigger.to_dict(), objects=[],
                      notes={}, attempts=1)
            progress = MemoryProgress()
            summary = runtime.run_job(row, progress, threading.Event())
            print(summary)
            for frame, reason in sorted(progress.errors.items()):
                print(f"  frame {frame}: {reason}")
            return 0
        res = store.enqueue(pipeline=spec.name, params=params_dict, trigger=trigger.to_dict(),
                            dedupe_key=f"run:{uuid.uuid4().hex}",
                            flight_key=flight_key(spec.name, trigger.resource, trigger.resource_id),
                            max_attempts=settings.store.max_attempts)
        print(f"job {res.job_id} queued ({spec.name} on {trigger.resource} {trigger.resource_id})")
        if not args.wait:
            return 0
        while (row := store.get(res.job_id)) is not None and row.status not in ("succeeded", "failed", "cancelled"):
            time.sleep(1.0)
        print(f"job {res.job_id} {row.status}: {row.summary or row.error or ''}" if row else "job vanished")
        return 0 if row is not None and row.status == "succeeded" else 1
    finally:
        runtime.close()


def cmd_jobs(args: argparse.Namespace) -> int:
    from bridge.app.startup import open_store
    from bridge.jobs.store import JobFilter

    settings = _settings(args, needs_secret=False)
    store = open_store(settings)
    if args.action == "list":
        rows, total = store.list(JobFilter(status=args.status, pipeline=args.pipeline, task_id=args.task_id,
                                           cvat_job_id=args.job_id), limit=args.limit)
        print(f"{'id':>6}  {'status':<10} {'pipeline':<13} {'progress':>9}  {'errors':>6}  trigger / reason")
        for j in rows:
            trig = j.trigger or {}
            where = f"{trig.get('resource', '?')} {trig.get('resource_id', '?')}"
            print(f"{j.id:>6}  {j.status:<10} {j.pipeline:<13} {j.progress_done:>4}/{j.progress_total:<4}"
                  f"  {len(j.frame_errors or {}):>6}  {where}  {j.error or j.summary or ''}"[:200])
        print(f"({len(rows)} of {total})")
        return 0
    job_id = args.id
    if args.action == "show":
        job = store.get(job_id)
    elif args.action == "retry":
        job = store.retry(job_id)
    else:
        job = store.request_cancel(job_id)
    if job is None:
        print(f"bridge: job {job_id} not found", file=sys.stderr)
        return 1
    _print_job(job)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Configuration and connectivity report in plain words; non-zero exit when something is wrong."""
    from bridge.app.startup import StartupError, open_store
    from bridge.errors import BridgeError
    from bridge.runtime import Runtime

    settings = _settings(args)
    ok = True
    print(f"cvat-bridge {__version__}")
    print(f"  config ........ ok (CVAT {settings.cvat_url}, Nuclio {settings.nuclio_invoke_method})")
    print("  signature ..... " + ("WEBHOOK_SECRET set" if settings.secret_bytes()
                                   else "UNSIGNED webhooks accepted (BRIDGE_ALLOW_UNSIGNED=true)"))
    try:
        store = open_store(settings)
        print(f"  database ...... ok ({store.dialect})")
    except StartupError as exc:
        ok = False
        print(f"  database ...... FAILED: {exc}")
        store = None
    runtime = Runtime(settings, store)
    try:
        info = runtime.cvat.check()
        print(f"  cvat .......... ok (server {info.get('server_version')}, user {info.get('username')})")
    except BridgeError as exc:
        ok = False
        print(f"  cvat .......... FAILED: {exc}")
    for name in args.function or []:
        reachable = runtime.nuclio.ping(name)
        ok = ok and reachable
        verdict = "ok" if reachable else "NOT REACHABLE (deployed? on cvat_cvat? the name is case-sensitive)"
        print(f"  function {name} ... {verdict}")
    runtime.close()
    return 0 if ok else 1


def cmd_setup(args: argparse.Namespace) -> int:
    from bridge.app.startup import require_cvat_credentials
    from bridge.setup.cli import run_setup

    settings = _settings(args)
    require_cvat_credentials(settings)
    return run_setup(settings, args)


def cmd_report(args: argparse.Namespace) -> int:
    from bridge.app.startup import require_cvat_credentials
    from bridge.reports.cli import run_report

    settings = _settings(args, needs_secret=False)
    require_cvat_credentials(settings)
    return run_report(settings, args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bridge", description="CVAT ↔ Nuclio pipeline bridge")
    p.add_argument("--version", action="version", version=f"cvat-bridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="HTTP API + in-process workers")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int, help="in-process workers (default BRIDGE_WORKERS; 0 = API only)")
    s.add_argument("--processes", type=int, help="HTTP processes (default BRIDGE_API_PROCESSES, else one per CPU "
                                                 "up to 2); job workers then run in the supervisor")
    s.set_defaults(fn=cmd_serve)

    w = sub.add_parser("worker", help="run workers only (shared PostgreSQL or SQLite job store)")
    w.add_argument("--workers", type=int)
    w.set_defaults(fn=cmd_worker)

    j = sub.add_parser("jobs", help="inspect and act on jobs")
    jsub = j.add_subparsers(dest="action", required=True)
    jl = jsub.add_parser("list")
    jl.add_argument("--status")
    jl.add_argument("--pipeline")
    jl.add_argument("--task-id", type=int)
    jl.add_argument("--job-id", type=int, help="CVAT job id")
    jl.add_argument("--limit", type=int, default=50)
    for action in ("show", "retry", "cancel"):
        ja = jsub.add_parser(action)
        ja.add_argument("id", type=int)
    j.set_defaults(fn=cmd_jobs)

    c = sub.add_parser("check", help="configuration and connectivity report")
    c.add_argument("--function", action="append", help="also check this Nuclio function (repeatable)")
    c.set_defaults(fn=cmd_check)

    st = sub.add_parser("setup", help="create/verify pipeline projects and webhooks in CVAT")
    add_setup_arguments(st)
    st.set_defaults(fn=cmd_setup)

    r = sub.add_parser("run", help="run a pipeline on a CVAT job or task without a webhook")
    r.add_argument("pipeline", help="pipeline name (detect, propagate, sam2_refine, crop_quadrat, ...)")
    r.add_argument("--job", type=int, help="CVAT job id (pipelines that act on jobs)")
    r.add_argument("--task", type=int, help="CVAT task id (pipelines that act on tasks)")
    r.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a route parameter, e.g. --param model_name=pth-yolo-coralsegv4 (repeatable)")
    how = r.add_mutually_exclusive_group()
    how.add_argument("--wait", action="store_true", help="queue it and wait for its outcome (needs running workers)")
    how.add_argument("--inline", action="store_true", help="run it in this process now (not stored in /jobs)")
    r.set_defaults(fn=cmd_run)

    rp = sub.add_parser("report", help="coral cover report of a task or project (tables, CoralNet points, plot)")
    add_report_arguments(rp)
    rp.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    from bridge.app.startup import EXIT_STARTUP, StartupError

    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except StartupError as exc:  # configuration or connectivity at start: one line, no traceback
        print(f"bridge: {exc}", file=sys.stderr)
        return EXIT_STARTUP


if __name__ == "__main__":
    raise SystemExit(main())
