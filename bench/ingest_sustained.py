"""``bench/ingest.py --sustained``: the bridge as the README starts it, under sustained load.

Per job-store backend (SQLite, PostgreSQL), each against a real ``bridge serve`` started like the
README does (``bridge serve``: default processes, default in-process workers, port and data dir
given), in its own process group:

1. closed loop: ``--conns`` keep-alive connections each send the next signed CVAT body as soon as the
   answer arrives, for ``--seconds``; acks/s, p50/p99, the server's CPU ms per ack, and lost = acked
   triggering events whose job is not in the store after the server was killed with SIGKILL;
   side by side with ``--processes 1`` (the ratio says what the extra process buys);
2. 100k queued: the store is filled with ``--backlog`` queued jobs first, then 200 req/s open loop
   (latency from each request's due time) for ``--seconds``, and ``GET /jobs`` (first page, a deep page
   by offset, the same page by keyset cursor, ``status=queued``) p50/p99;
3. claim latency at 0 / 10k / 100k queued (``bench/_claim_probe.py``, fresh database each).

Workers are on, as in the README; their jobs meet a CVAT that answers 503 after 0.25 s (an outage:
each attempt waits on CVAT, then the job is queued again with backoff), so they load the store as
real jobs do without a real CVAT. ``--bridge-root`` runs another checkout of the bridge (before/after
on the same harness). The machine's load average is printed with every row: this box is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
SECRET = "bench-secret-0123456789"
ROUTE = "/detect-model-webhook?model_name=pth-yolo-gridcorners"


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a CVAT that is down ------------------------------------------------------------------------------
@contextlib.contextmanager
def cvat_outage(delay: float = 0.25) -> Iterator[str]:
    """An HTTP server answering every request with 503 after ``delay`` s (its own thread and loop)."""
    port = free_port()
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(delay)
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 22\r\n\r\n{\"detail\":\"CVAT down\"}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    task = loop.create_task(serve())

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the way it is stopped
            loop.run_until_complete(task)
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)


# --- databases ---------------------------------------------------------------------------------------
@dataclass
class Database:
    backend: str
    url: str
    admin: str | None = None
    name: str | None = None

    def drop(self) -> None:
        if self.admin and self.name:
            import psycopg

            with psycopg.connect(self.admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def new_database(backend: str, pg_admin: str, tmp: Path) -> Database:
    if backend == "sqlite":
        return Database(backend, f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:6]}' / 'bridge.db'}")
    import psycopg

    name = f"bridge_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin, autocommit=True, connect_timeout=3) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return Database(backend, pg_admin.rsplit("/", 1)[0] + "/" + name, pg_admin, name)


def child_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "CVAT_", "NUCLIO_"))}
    env.pop("WEBHOOK_SECRET", None)
    env.update({"PYTHONPATH": str(root), **extra})
    return env


def migrate(db: Database, root: Path) -> None:
    """Create the schema with the bridge under test (its own migrations)."""
    code = f"from bridge.jobs.store import JobStore; JobStore({db.url!r}).close()"
    subprocess.run([sys.executable, "-c", code], env=child_env(root), cwd=str(root), check=True)


def fill(db: Database, n: int) -> float:
    """``n`` queued due jobs on distinct resources, inserted without the bridge (any version's schema)."""
    t0 = time.perf_counter()
    start = datetime.now(UTC) - timedelta(minutes=5)
    trig = '{{"kind":"job_in_progress","resource":"job","resource_id":{i},"job_id":{i},"task_id":1,"project_id":1}}'
    rows = [("detect", '{"model_name":"pth-yolo-gridcorners"}', trig.format(i=900000 + i), f"backlog-{i}",
             f"detect:job:{900000 + i}", "queued", 0, 5, start + timedelta(microseconds=i), False, 1, 1, 900000 + i,
             0, 0, "{}", "[]", "{}", start, start) for i in range(n)]
    cols = ("pipeline, params, trigger, dedupe_key, flight_key, status, attempts, max_attempts, available_at, "
            "cancel_requested, project_id, task_id, cvat_job_id, progress_total, progress_done, frame_errors, "
            "objects, notes, created_at, updated_at")
    if db.backend == "sqlite":
        conn = sqlite3.connect(db.url.split("///", 1)[1])
        with conn:
            conn.executemany(f"INSERT INTO bridge_jobs ({cols}) VALUES ({', '.join('?' * 20)})",
                             [(*r[:8], _sqlite_time(r[8]), *r[9:18], _sqlite_time(r[18]), _sqlite_time(r[19]))
                              for r in rows])
        conn.execute("ANALYZE")
        # as in a store that filled up over time: the bulk insert's WAL written back, not left for the
        # bridge's first commit to copy (a one-off stall of the run being measured)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(db.url) as conn:
            with conn.cursor().copy(f"COPY bridge_jobs ({cols}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
            conn.commit()
            conn.autocommit = True
            conn.execute("ANALYZE bridge_jobs")
    return time.perf_counter() - t0


def _sqlite_time(dt: datetime) -> str:
    """How SQLAlchemy stores a DateTime on SQLite (UTC fields, no offset): compared as text."""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def job_ids_present(db: Database, ids: set[int]) -> int:
    if not ids:
        return 0
    wanted = sorted(ids)
    found = 0
    if db.backend == "sqlite":
        conn = sqlite3.connect(db.url.split("///", 1)[1])
        for lo in range(0, len(wanted), 500):
            part = wanted[lo:lo + 500]
            found += conn.execute(f"SELECT count(*) FROM bridge_jobs WHERE id IN ({','.join('?' * len(part))})",
                                  part).fetchone()[0]
        conn.close()
    else:
        import psycopg

        with psycopg.connect(db.url) as conn:
            found = conn.execute("SELECT count(*) FROM bridge_jobs WHERE id = ANY(%s)", (wanted,)).fetchone()[0]
    return int(found)


# --- the server --------------------------------------------------------------------------------------
@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path

    def tree(self) -> list[psutil.Process]:
        try:
            me = psutil.Process(self.proc.pid)
            return [me, *me.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        return _cpu(self.tree())

    def kill(self) -> None:
        """SIGKILL to the whole process group: what was acknowledged must already be on disk."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(20)


def start_server(root: Path, db: Database, tmp: Path, cvat_url: str, processes: int | None) -> Server:
    """``bridge serve`` as the README starts it: WEBHOOK_SECRET in the environment, everything else default
    (SQLite in the data dir; PostgreSQL through BRIDGE_DATABASE_URL), plus a CVAT that is down."""
    port = free_port()
    data = tmp / f"data-{port}"
    extra = {"WEBHOOK_SECRET": SECRET, "BRIDGE_DATA_DIR": str(data),
             "CVAT_URL": cvat_url, "CVAT_ACCESS_TOKEN": "bench-token"}
    if db.backend == "sqlite":
        data = Path(db.url.split("///", 1)[1]).parent
        extra["BRIDGE_DATA_DIR"] = str(data)
    else:
        extra["BRIDGE_DATABASE_URL"] = db.url
    if processes is not None:
        extra["BRIDGE_API_PROCESSES"] = str(processes)
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--port", str(port)],
                                env=child_env(root, **extra), cwd=str(root), stdout=out, stderr=out,
                                start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(server.url + "/health?deep=false", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("bridge did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.2)
    time.sleep(1.0)  # every process up and accepting (several processes share the socket)
    # steady state: start-up work (imports, clients built ahead in background threads) is over before a
    # phase's clock starts (the server's CPU over half a second says)
    settle = time.monotonic() + 20
    busy = server.cpu_seconds()
    while time.monotonic() < settle:
        time.sleep(0.5)
        now = server.cpu_seconds()
        if now - busy < 0.05:
            break
        busy = now
    return server


# --- load ----------------------------------------------------------------------------------------------
def bodies(n: int, seed: int) -> list[tuple[str, bytes]]:
    """(kind, body): 60 % new transitions (unique), 20 % redeliveries of them, 20 % updated_date noise."""
    samples = BENCH.parent / "tests" / "fixtures" / "cvat-samples"
    trigger = json.loads((samples / "10-update_job-state-new-to-in_progress.json").read_text())["body"]
    noise = json.loads((samples / "05-update_job-updated_date-only-after-annotation-save.json").read_text())
    noise_raw = noise["raw_body"].encode()
    out: list[tuple[str, bytes]] = []
    sent: list[bytes] = []
    for i in range(n):
        r = i % 10
        if r < 6 or not sent:
            b = json.loads(json.dumps(trigger))
            b["job"]["id"] = seed * 10_000_000 + 100000 + i
            b["job"]["updated_date"] = f"2026-11-24T10:{(i // 60) % 60:02d}:{i % 60:02d}.{i:06d}Z"
            raw = json.dumps(b).encode()
            sent.append(raw)
            out.append(("trigger", raw))
        elif r < 8:
            out.append(("duplicate", sent[-1]))
        else:
            out.append(("noise", noise_raw))
    return out


def requests_for(url: str, items: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    from bridge.app.security import sign

    host = url.removeprefix("http://")
    out = []
    for kind, body in items:
        head = (f"POST {ROUTE} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"X-Signature-256: {sign(SECRET.encode(), body)}\r\nContent-Length: {len(body)}\r\n\r\n")
        out.append((kind, head.encode() + body))
    return out


Result = tuple[str, int, float, int | None]


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> tuple[int, Any]:
    writer.write(raw)
    await writer.drain()
    code = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    data = await reader.readexactly(length)
    return code, json.loads(data) if data else None


async def closed_loop(url: str, reqs: list[tuple[str, bytes]], seconds: float,
                      conns: int) -> tuple[list[Result], float]:
    """Each connection sends its next request when the previous answer arrived, until ``seconds`` pass."""
    host, port = url.removeprefix("http://").split(":")
    results: list[Result] = []
    it = iter(reqs)
    stop_at = 0.0

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < stop_at:
                try:
                    kind, raw = next(it)
                except StopIteration:
                    return
                t0 = time.perf_counter()
                try:
                    code, body = await _exchange(reader, writer, raw)
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    results.append((kind, 0, time.perf_counter() - t0, None))
                    return
                job = body.get("job_id") if code == 202 and isinstance(body, dict) else None
                results.append((kind, code, time.perf_counter() - t0, job))
        finally:
            writer.close()

    stop_at = time.perf_counter() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(conns)))
    return results, time.perf_counter() - t0


async def open_loop(url: str, reqs: list[tuple[str, bytes]], rate: float, conns: int = 64) -> list[Result]:
    """Request ``i`` is due at ``t0 + i / rate``; its latency counts from then (no coordinated omission)."""
    host, port = url.removeprefix("http://").split(":")
    queue: asyncio.Queue[tuple[str, bytes, float] | None] = asyncio.Queue()
    results: list[Result] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while (item := await queue.get()) is not None:
                kind, raw, due = item
                try:
                    code, body = await _exchange(reader, writer, raw)
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    code, body = 0, None
                job = body.get("job_id") if code == 202 and isinstance(body, dict) else None
                results.append((kind, code, time.perf_counter() - due, job))
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(conns)]
    t0 = time.perf_counter() + 0.2
    for i, (kind, raw) in enumerate(reqs):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((kind, raw, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return results


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def summarize(results: list[Result], wall: float) -> dict[str, Any]:
    lat = [d * 1000 for _, _, d, _ in results]
    acked = [r for r in results if r[1] in (200, 202)]
    return {"requests": len(results), "acks_per_s": len(acked) / wall, "p50_ms": statistics.median(lat) if lat else 0,
            "p99_ms": pct(lat, 0.99), "max_ms": max(lat) if lat else 0,
            "non_2xx": len(results) - len(acked),
            "trigger_ids": {j for k, code, _, j in results if k == "trigger" and code == 202 and j is not None}}


# --- the phases ----------------------------------------------------------------------------------------
@dataclass
class Row:
    label: str
    values: dict[str, Any] = field(default_factory=dict)


def sustained(root: Path, backend: str, pg_admin: str, tmp: Path, cvat_url: str, *, seconds: float, conns: int,
              processes: int | None) -> dict[str, Any]:
    db = new_database(backend, pg_admin, tmp)
    try:
        migrate(db, root)
        server = start_server(root, db, tmp, cvat_url, processes)
        try:
            reqs = requests_for(server.url, bodies(int(seconds * 4000), seed=1))
            before = server.cpu_seconds()
            started_load = load()
            results, wall = asyncio.run(closed_loop(server.url, reqs, seconds, conns))
            cpu = server.cpu_seconds() - before
            n_proc = len(server.tree())
        finally:
            server.kill()
        out = summarize(results, wall)
        acked = out.pop("trigger_ids")
        out["server_cpu_ms_per_ack"] = cpu * 1000 / max(1, out["requests"] - out["non_2xx"])
        out["lost"] = len(acked) - job_ids_present(db, acked)
        out["processes"] = n_proc
        out["load"] = started_load + " -> " + load()
        return out
    finally:
        db.drop()


def jobs_api(url: str, n: int = 100) -> dict[str, Any]:
    """p50/p99 of ``GET /jobs`` variants on the filled store."""
    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=30) as c:
        first = c.get("/jobs", params={"limit": 50}).json()
        keyset = "next_before_id" in first  # the bridge under test pages by keyset
        depth = min(50000, first["total"] // 2)
        deep = c.get("/jobs", params={"limit": 50, "offset": depth}).json()
        deep_cursor = deep["items"][0]["id"] + 1
        variants: dict[str, dict[str, Any] | None] = {
            "first page": {"limit": 50},
            f"offset {depth}": {"limit": 50, "offset": depth},
            f"cursor at {depth}": {"limit": 50, "before_id": deep_cursor} if keyset else None,
            "status=queued": {"limit": 50, "status": "queued"},
        }
        for name, params in variants.items():
            if params is None:
                out[name] = None
                continue
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                r = c.get("/jobs", params=params)
                times.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
            out[name] = (statistics.median(times), pct(times, 0.99))
    return out


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def backlog(root: Path, backend: str, pg_admin: str, tmp: Path, cvat_url: str, *, n: int, rate: float,
            seconds: float) -> dict[str, Any]:
    db = new_database(backend, pg_admin, tmp)
    try:
        migrate(db, root)
        fill_s = fill(db, n)
        server = start_server(root, db, tmp, cvat_url, None)
        try:
            reqs = requests_for(server.url, bodies(int(rate * seconds), seed=2))
            started_load = load()
            root_proc = server.tree()[:1]
            before, sup_before = server.cpu_seconds(), _cpu(root_proc)
            results = asyncio.run(open_loop(server.url, reqs, rate))
            cpu, sup_cpu = server.cpu_seconds() - before, _cpu(root_proc) - sup_before
            api = jobs_api(server.url)
        finally:
            server.kill()
        out = summarize(results, seconds)
        acked = out.pop("trigger_ids")
        out["lost"] = len(acked) - job_ids_present(db, acked)
        out["fill_s"] = fill_s
        out["server_cpu_s"], out["supervisor_cpu_s"] = cpu, sup_cpu
        out["jobs_api"] = api
        out["load"] = started_load + " -> " + load()
        return out
    finally:
        db.drop()


def claim_latency(root: Path, backend: str, pg_admin: str, tmp: Path, sizes: list[int]) -> dict[int, Any]:
    out = {}
    for size in sizes:
        db = new_database(backend, pg_admin, tmp)
        try:
            proc = subprocess.run([sys.executable, str(BENCH / "_claim_probe.py"), "--url", db.url,
                                   "--backlog", str(size)], env=child_env(root), cwd=str(root),
                                  capture_output=True, text=True, timeout=900)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-3000:])
            out[size] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": load()}
        finally:
            db.drop()
    return out


def run(args: Any) -> None:
    root = Path(args.bridge_root).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sustained-"))
    try:
        _run(args, root, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args: Any, root: Path, tmp: Path) -> None:
    backends = args.backends.split(",")
    print(f"sustained ingest: bridge under test {root}; {os.cpu_count()} CPUs; {load()}")
    with cvat_outage() as cvat_url:
        for backend in backends:
            print(f"\n=== {backend} ===", flush=True)
            if "closed" in args.phases:
                rows = {}
                for label, processes in (("1 process", 1), ("README default", None)):
                    rows[label] = sustained(root, backend, args.postgres_url, tmp, cvat_url, seconds=args.seconds,
                                            conns=args.conns, processes=processes)
                print(f"closed loop, {args.conns} connections, {args.seconds:.0f} s, workers on (README defaults)")
                keys = ["processes", "requests", "acks_per_s", "p50_ms", "p99_ms", "max_ms", "non_2xx",
                        "server_cpu_ms_per_ack", "lost"]
                print(f"{'':24}" + "".join(f"{k:>18}" for k in rows))
                for k in keys:
                    print(f"{k:24}" + "".join(f"{r[k]:>18.1f}" if isinstance(r[k], float) else f"{r[k]:>18}"
                                              for r in rows.values()))
                for label, r in rows.items():
                    print(f"  {label}: {r['load']}")
                a, b = rows["README default"], rows["1 process"]
                print(f"acks/s README default / 1 process: {a['acks_per_s'] / max(1e-9, b['acks_per_s']):.2f}")
                goal = 1000 if backend == "sqlite" else 800
                ok = a["acks_per_s"] >= goal and a["lost"] == 0
                print(f"goal >= {goal} durable acks/s and 0 lost ({backend}): {'met' if ok else 'NOT met'}", flush=True)
            if "backlog" in args.phases:
                r = backlog(root, backend, args.postgres_url, tmp, cvat_url, n=args.backlog, rate=args.rate,
                            seconds=args.seconds)
                print(f"\n{args.rate:.0f} req/s open loop for {args.seconds:.0f} s with {args.backlog} jobs queued "
                      f"(filled in {r['fill_s']:.1f} s), workers on; {r['load']}")
                print(f"  requests {r['requests']}  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
                      f"max {r['max_ms']:.1f} ms  non-2xx {r['non_2xx']}  lost {r['lost']}; server CPU "
                      f"{r['server_cpu_s']:.1f} s (supervisor and its workers {r['supervisor_cpu_s']:.1f} s)")
                ok = r["p99_ms"] < 50 and r["lost"] == 0
                print(f"  goal p99 < 50 ms and 0 lost: {'met' if ok else 'NOT met'}")
                for name, v in r["jobs_api"].items():
                    shown = "not supported" if v is None else f"p50 {v[0]:.1f} ms  p99 {v[1]:.1f} ms"
                    print(f"  GET /jobs {name:<18} {shown}", flush=True)
            if "claim" in args.phases:
                sizes = [0, 10_000, args.backlog]
                res = claim_latency(root, backend, args.postgres_url, tmp, sizes)
                print("\nclaim latency (200 claims, 4 jobs running, each claimed job finished at once)")
                for size, v in res.items():
                    print(f"  {size:>7} queued: p50 {v['p50_ms']:.2f} ms  p95 {v['p95_ms']:.2f} ms  "
                          f"max {v['max_ms']:.2f} ms   ({v['load']})")
                ratio = res[sizes[-1]]["p50_ms"] / max(1e-9, res[0]["p50_ms"])
                print(f"  p50 {sizes[-1]} / 0 queued: {ratio:.2f}  goal <= 2: {'met' if ratio <= 2 else 'NOT met'}",
                      flush=True)
