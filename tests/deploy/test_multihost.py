"""The bridge spread over four "hosts" (network namespaces on one machine):

    db   10.231.0.1  PostgreSQL (a fresh cluster), the CVAT double, the test functions
    api  10.231.0.2  `bridge serve --workers 0`  (webhooks in, jobs stored)
    w1   10.231.0.3  `bridge worker --workers 2`
    w2   10.231.0.4  `bridge worker --workers 2`

A 200-frame detect job and the 3-stage quadrat chain run while the worker holding the detect job is
cut off the network (its cable unplugged at the switch) and plugged back in after the other worker
took the job over. Every job must finish exactly once: one bridge job per trigger, every frame's
shapes written once, one task per chain stage. Traffic stays on the private addresses above, inside
namespaces the test creates and always deletes.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import blobs_png, label_export

from .netns import Hosts, unavailable_reason

REPO = Path(__file__).resolve().parents[2]
HOSTS = {"db": "10.231.0.1", "api": "10.231.0.2", "w1": "10.231.0.3", "w2": "10.231.0.4"}
DB, API = HOSTS["db"], HOSTS["api"]
API_URL = f"http://{API}:8000"
SECRET = "multihost-webhook-secret"
LEASE = 5.0
FRAMES = 200
DETECT_LABELS = [
    {"name": "coral", "type": "any", "attributes": []},
    {"name": "box", "type": "rectangle", "attributes": []},
    *label_export("corner_annotation_example"),
]
CORAL_LABELS = [{"name": "coral", "type": "polygon", "attributes": []}, {"name": "box", "type": "rectangle"}]
CORNERS = [(40, 30), (200, 40), (210, 180), (30, 170)]  # TL, TR, BR, BL on a 240×200 photo
TERMINAL = {"succeeded", "failed", "cancelled"}


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    reason = unavailable_reason()
    if reason:
        return reason
    if _pg_bin() is None:
        return "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin"
    if shutil.which("runuser") is None:
        return "needs runuser to start PostgreSQL as the postgres user"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres system user"
    return None


# --- what runs where ----------------------------------------------------------------------------
class Control:
    """Calls into the launcher (CVAT double) over its Unix socket."""

    def __init__(self, path: Path):
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://launcher",
                                 timeout=120)

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        resp = self.http.post("/call", json={"method": method, "args": list(args), "kwargs": kwargs})
        body = resp.json()
        if not body.get("ok"):
            raise AssertionError(f"launcher {method}: {body.get('error')}")
        return body["result"]


@dataclass
class Cluster:
    hosts: Hosts
    work: Path
    ctl: Control
    pg_socket: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def jobs(self) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(host=str(self.pg_socket), user="postgres", dbname="postgres", autocommit=True,
                             row_factory=dict_row) as conn:
            return conn.execute(
                "SELECT id, pipeline, status, attempts, worker_id, cvat_job_id, task_id, progress_done, "
                "progress_total, error, summary FROM bridge_jobs ORDER BY id").fetchall()

    def sessions(self) -> list[tuple[Any, ...]]:
        """PostgreSQL's sessions from the bridge hosts: who is idle inside a transaction, holding locks."""
        import psycopg

        with psycopg.connect(host=str(self.pg_socket), user="postgres", dbname="postgres", autocommit=True) as conn:
            return conn.execute(
                "SELECT client_addr::text, state, now() - state_change, left(query, 80) FROM pg_stat_activity "
                "WHERE client_addr IS NOT NULL ORDER BY client_addr, state").fetchall()

    def host_of(self, worker_id: str | None) -> str | None:
        pid = int(worker_id.split(":")[1]) if worker_id else None
        return next((h for h, p in self.procs.items() if p.pid == pid), None)

    def logs(self, lines: int = 40) -> str:
        out = []
        for log in sorted(self.work.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; jobs: {self.jobs()}\n"
                                     f"sessions: {self.sessions()}\n{self.logs()}")
            time.sleep(0.2)


def _bridge_env(work: Path, host: str) -> dict[str, str]:
    data = work / f"data-{host}"
    data.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),
        "WEBHOOK_SECRET": SECRET,
        "CVAT_URL": f"http://{DB}:8080", "CVAT_USERNAME": "bridge-bot", "CVAT_PASSWORD": "bridge-pass",
        "CVAT_TIMEOUT": "10",
        "BRIDGE_DATABASE_URL": f"postgresql://postgres@{DB}:5432/postgres",
        "BRIDGE_PUBLIC_URL": API_URL,
        "NUCLIO_FUNCTION_URL": f"http://{DB}:8081/{{name}}",
        "NUCLIO_DASHBOARD_URL": f"http://{DB}:8082",  # nothing there: function specs unknown, as in e2e
        "NUCLIO_CONCURRENCY": "2", "NUCLIO_TIMEOUT": "10",
        "BRIDGE_INPAINT_FUNCTION": "fill-inpainter",
        "BRIDGE_LEASE_SECONDS": str(LEASE), "BRIDGE_POLL_SECONDS": "0.2",
        "BRIDGE_RETRY_BASE_SECONDS": "0.2", "BRIDGE_RETRY_MAX_SECONDS": "1",
        # small batches: the cut-off worker has written (and checkpointed) part of the job, and is
        # likely to be mid-write when its cable is pulled
        "BRIDGE_WRITE_BATCH_SIZE": "50",
        "BRIDGE_DATA_DIR": str(data), "LOG_LEVEL": "INFO",
    }


def _start_postgres(hosts: Hosts, work: Path) -> tuple[Path, Callable[[], None]]:
    pg_bin = _pg_bin()
    assert pg_bin is not None
    data, sock = work / "pgdata", work / "pgsock"
    for d in (data, sock):
        d.mkdir()
        shutil.chown(d, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"listen_addresses = '{DB}'\nport = 5432\nunix_socket_directories = '{sock}'\n"
                   "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all 10.231.0.0/24 trust\n")
    log = work / "postgres.log"
    log.touch()
    shutil.chown(log, "postgres", "postgres")
    try:
        hosts.run("db", [*as_postgres, str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                         "start"])
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{log.read_text(errors='replace')}") from exc

    def stop() -> None:
        subprocess.run([*as_postgres, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)

    return sock, stop


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="bridge-multihost-"))
    work.chmod(0o755)  # the postgres user reaches its data and socket directories
    stop_pg: Callable[[], None] | None = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: list[Any] = []
    try:
        with Hosts(HOSTS, prefix=f"cbmh{os.getpid() % 100000}") as hosts:
            try:
                pg_socket, stop_pg = _start_postgres(hosts, work)
                control = work / "control.sock"

                def start(name: str, host: str, cmd: list[str]) -> subprocess.Popen[bytes]:
                    log = (work / f"{name}.log").open("wb")
                    logs.append(log)
                    procs[name] = hosts.popen(host, cmd, env=_bridge_env(work, name), cwd=work, log=log)
                    return procs[name]

                start("launcher", "db", [sys.executable, "-m", "tests.deploy.launcher", "--host", DB,
                                         "--slots", "4", "--latency", "0.1", "--control", str(control)])
                c = Cluster(hosts, work, Control(control), pg_socket, procs)
                c.wait_for(control.exists, 60, "the CVAT double and the functions")
                bridge = str(Path(sys.executable).with_name("bridge"))
                start("api", "api", [bridge, "serve", "--host", API, "--port", "8000", "--workers", "0"])
                c.wait_for(lambda: c.ctl("probe", f"{API_URL}/health?deep=false")["status"] == 200, 90,
                           "bridge serve (it creates the job table)")
                for w in ("w1", "w2"):
                    start(w, w, [bridge, "worker", "--workers", "2"])
                yield c
            finally:
                for proc in procs.values():
                    proc.terminate()
                for proc in procs.values():
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)
                if stop_pg is not None:
                    stop_pg()
    finally:
        for log in logs:
            log.close()
        shutil.rmtree(work, ignore_errors=True)


# --- the scenario ---------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def detect_frames(n: int) -> tuple[list[tuple[str, str]], list[int]]:
    """``n`` small frames with 1-3 bright blobs each; returns (name, base64 PNG) and blob counts."""
    spots = [(8, 8, 28, 24), (40, 50, 62, 80), (70, 10, 95, 30)]
    images, counts = [], []
    for i in range(n):
        k = 1 + i % 3
        images.append((f"f_{i:04d}.png", _b64(blobs_png(100, 90, spots[:k]))))
        counts.append(k)
    return images, counts


def quadrat_photo(seed: int) -> bytes:
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    img = np.full((200, 240, 3), 15, np.uint8)
    cv2.fillPoly(img, [np.array(CORNERS, np.int32)], (90, 100, 80))
    cv2.circle(img, (120 + int(rng.integers(-10, 10)), 105), 12, (240, 240, 240), -1)
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()


def corner_skeleton(ctl: Control, project: int, frame: int) -> dict[str, Any]:
    elements = [{"type": "points", "label_id": ctl("label_id", project, "quadrat_corner", str(i + 1)),
                 "frame": frame, "points": [float(x), float(y)], "source": "manual"}
                for i, (x, y) in enumerate(CORNERS)]
    return {"type": "skeleton", "label_id": ctl("label_id", project, "quadrat_corner"), "frame": frame,
            "points": [], "source": "manual", "elements": elements}


def shape_key(s: dict[str, Any]) -> tuple:
    return (s["frame"], s["type"], s["label_id"], tuple(round(p, 2) for p in s["points"]),
            tuple(sorted((e["label_id"], tuple(e["points"])) for e in s.get("elements", []))))


def duplicates(shapes: list[dict[str, Any]]) -> dict[tuple, list[int]]:
    ids: dict[tuple, list[int]] = {}
    for s in shapes:
        ids.setdefault(shape_key(s), []).append(s["id"])
    return {k: v for k, v in ids.items() if len(v) > 1}


def test_detect_and_quadrat_chain_finish_once_across_hosts_while_a_worker_is_cut_off():
    with cluster() as c:
        ctl, hook = c.ctl, lambda p, route, events: ctl("add_webhook", p, f"{API_URL}{route}", events, secret=SECRET)
        # the 200-frame detect job
        p_det = ctl("create_project", "reef", DETECT_LABELS)
        hook(p_det, "/detect-model-webhook?model_name=frame-detector", ["update:job"])
        images, blobs = detect_frames(FRAMES)
        (det_job,) = ctl("job_ids", ctl("create_task", p_det, "200 frames", images, segment_size=FRAMES))
        # the 3-stage chain: corners → crop into p2 → grid detect → remove grid into p3 → coral detect
        p1 = ctl("create_project", "1 corners", label_export("corner_annotation_example"))
        p2 = ctl("create_project", "2 grid", label_export("grid_annotation_example"))
        p3 = ctl("create_project", "3 corals", CORAL_LABELS)
        hook(p1, f"/crop-quadrat-and-create-new-task-webhook?target_proj_id={p2}", ["update:task"])
        hook(p2, "/detect-model-webhook?model_name=grid-detector", ["update:job"])
        hook(p2, f"/remove-grid-and-create-new-task-webhook?target_proj_id={p3}&line_width=5", ["update:task"])
        hook(p3, "/detect-model-webhook?model_name=coral-detector&conv_mask_to_poly=true", ["update:job"])
        names = ["reef_a.png", "reef_b.png", "reef_c.png"]
        src = ctl("create_task", p1, "site 7", [(n, _b64(quadrat_photo(i))) for i, n in enumerate(names)],
                  segment_size=2)
        for job_id in ctl("job_ids", src):
            job = ctl("job", job_id)
            ctl("annotate", job_id, [corner_skeleton(ctl, p1, f) for f in range(job["start_frame"],
                                                                                job["stop_frame"] + 1)])

        ctl("set_job_state", det_job, "in progress")
        ctl("complete_task", src)

        def detect_row() -> dict[str, Any] | None:
            return next((j for j in c.jobs() if j["pipeline"] == "detect" and j["cvat_job_id"] == det_job), None)

        first = c.wait_for(lambda: (r := detect_row()) and r["status"] == "running" and r["progress_done"] >= 30
                           and r, 90, "the detect job to be part-way")
        victim = c.host_of(first["worker_id"])
        survivor = {"w1": "w2", "w2": "w1"}[victim]
        c.hosts.cut(victim)
        c.wait_for(lambda: (r := detect_row()) and c.host_of(r["worker_id"]) == survivor, 60,
                   f"{survivor} to take the detect job over from the cut-off {victim}")
        time.sleep(2)
        c.hosts.restore(victim)  # the stale worker comes back while the job runs elsewhere
        restored = time.monotonic()

        # stage 2 done (grid detected on the warped task), then the annotator completes it
        def stage_done(project: int) -> dict[str, Any] | None:
            tasks = ctl("tasks", project)
            if len(tasks) != 1:
                return None
            job_ids = set(ctl("job_ids", tasks[0]["id"]))
            rows = [j for j in c.jobs() if j["pipeline"] == "detect" and j["cvat_job_id"] in job_ids]
            return tasks[0] if len(rows) == len(job_ids) and all(j["status"] in TERMINAL for j in rows) else None

        warped = c.wait_for(lambda: stage_done(p2), 90, "the warped task and its grid detection")
        ctl("complete_task", warped["id"])
        clean = c.wait_for(lambda: stage_done(p3), 90, "the grid-free task and its coral detection")

        # settle: every job finished, and the reconnected worker had time to do whatever it would
        c.wait_for(lambda: all(j["status"] in TERMINAL for j in c.jobs()), 90, "all bridge jobs to finish")
        time.sleep(max(0.0, restored + 3 * LEASE + 10 - time.monotonic()))
        ctl("wait_idle", timeout=10)
        jobs = c.jobs()
        context = f"\njobs: {jobs}\n{c.logs()}"

        # --- exactly once: bridge jobs --------------------------------------------------------------
        assert all(j["status"] == "succeeded" for j in jobs), context
        det = [j for j in jobs if j["pipeline"] == "detect" and j["cvat_job_id"] == det_job]
        assert len(det) == 1, context
        assert det[0]["attempts"] >= 2 and c.host_of(det[0]["worker_id"]) == survivor, context
        assert det[0]["progress_done"] == det[0]["progress_total"] == FRAMES, context
        per_trigger = Counter((j["pipeline"], j["cvat_job_id"], j["task_id"]) for j in jobs)
        assert max(per_trigger.values()) == 1, f"a trigger ran twice: {per_trigger}{context}"
        assert Counter(j["pipeline"] for j in jobs) == Counter(
            {"detect": 1 + len(ctl("job_ids", warped["id"])) + len(ctl("job_ids", clean["id"])),
             "crop_quadrat": 1, "remove_grid": 1}), context

        # --- exactly once: what CVAT holds ----------------------------------------------------------
        shapes = ctl("shapes", job_id=det_job)
        dup = duplicates(shapes)
        assert not dup, f"detect job {det_job}: {len(dup)} shapes written twice, e.g. {list(dup.items())[:3]}{context}"
        per_frame = Counter(s["frame"] for s in shapes)
        expected = {f: 2 * blobs[f] + 1 for f in range(FRAMES)}  # a mask and a box per blob, one skeleton
        wrong = {f: (per_frame.get(f, 0), n) for f, n in expected.items() if per_frame.get(f, 0) != n}
        assert not wrong, f"detect job {det_job}: frames with (written, expected) shapes {wrong}{context}"
        assert all(s["source"] == "auto" for s in shapes)
        assert len(ctl("tasks", p2)) == 1 and len(ctl("tasks", p3)) == 1, context
        assert ctl("frame_names", warped["id"]) == names and ctl("frame_names", clean["id"]) == names
        grids = ctl("shapes", task_id=warped["id"])
        assert sorted(s["frame"] for s in grids if s["type"] == "skeleton") == [0, 1, 2], context
        corals = ctl("shapes", task_id=clean["id"])
        assert not duplicates(grids) and not duplicates(corals), context
        assert {s["frame"] for s in corals} == {0, 1, 2}
        coral_counts = Counter((s["frame"], s["type"]) for s in corals)
        assert all(coral_counts[(f, "polygon")] == coral_counts[(f, "rectangle")] >= 1 for f in range(3)), context
