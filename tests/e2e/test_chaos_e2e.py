"""Exactly-once under kill -9 and lost answers (issue 11: "must show").

``bridge serve`` runs as a real process against the CVAT double (behind a ``FaultProxy``) and a detector
served over HTTP. Round after round, new detect jobs and crop-quadrat tasks are triggered; then the
bridge is killed with SIGKILL — at a random moment, or at the exact request right after CVAT applied a
shape write, a task creation or a data upload — and started again, while 504s, held-back answers and
resets hit other writes. At the end CVAT must hold exactly what a fault-free run writes: every shape
once, none missing, one complete next task per source task, every acknowledged event finished.

A second test freezes a worker (SIGSTOP) past its lease on PostgreSQL while another takes over.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bridge.app.security import sign
from tests.doubles.cvat_double import Costs, CvatDouble
from tests.doubles.fault_proxy import FaultProxy
from tests.doubles.function_server import free_port, serve_in_thread
from tests.e2e.conftest import blobs_png, e2e_function, label_export
from tests.e2e.harness import SECRET, annotate_with
from tests.e2e.processes import BridgeProcess, bridge_env
from tests.e2e.test_detect_e2e import LABELS
from tests.e2e.test_lost_answers_e2e import CREATE, _key
from tests.e2e.test_quadrat_chain_e2e import corner_skeleton, quadrat_photo

KILLS = 20
TASK_CREATE = r"^/api/tasks/?$"
UPLOAD = r"^/api/tasks/\d+/data/?$"
JOB_STATE = r"^/api/jobs/\d+/?$"
FRAMES = {i: [(5 + 7 * i, 5, 20 + 7 * i, 25), (30, 40 + 3 * i, 55, 60 + 3 * i)] for i in range(6)}


def _images() -> list[tuple[str, bytes]]:
    return [(f"img_{i:03d}.png", blobs_png(100, 90, FRAMES[i])) for i in sorted(FRAMES)]


class World:
    """The CVAT double with a detect project and a corners → quadrat project pair."""

    def __init__(self, cvat: CvatDouble, bridge_url: str, proxy_url: str):
        self.cvat = cvat
        self.proxy_url = proxy_url
        self.detect_project = cvat.create_project("reef", LABELS)
        cvat.add_webhook(self.detect_project, f"{bridge_url}/detect-model-webhook?model_name=frame-detector",
                         ["update:job"], secret=SECRET)
        self.corners = cvat.create_project("1 corners", label_export("corner_annotation_example"))
        self.quadrats = cvat.create_project("2 quadrats", label_export("grid_annotation_example"))
        cvat.add_webhook(self.corners, f"{bridge_url}/crop-quadrat-and-create-new-task-webhook?"
                         f"target_proj_id={self.quadrats}", ["update:task"], secret=SECRET)
        self.detect_jobs: list[int] = []
        self.sources: list[tuple[int, list[str]]] = []

    def add_detect_task(self, n: int) -> list[int]:
        task = self.cvat.create_task(self.detect_project, f"quadrats {n}", _images(), segment_size=3)
        return self.cvat.job_ids(task)

    def add_source_task(self, n: int) -> int:
        names = [f"r{n}_a.png", f"r{n}_b.png"]
        task = self.cvat.create_task(self.corners, f"site {n}", [(nm, quadrat_photo(i)) for i, nm in enumerate(names)],
                                     segment_size=2)
        for job_id in self.cvat.job_ids(task):
            job = self.cvat.job(job_id)
            annotate_with(self.proxy_url, job_id, [corner_skeleton(self.cvat, self.corners, f)
                                                   for f in range(job["start_frame"], job["stop_frame"] + 1)])
        self.sources.append((task, names))
        return task

    def trigger(self, jobs: list[int], source: int) -> None:
        for job_id in jobs:
            self.cvat.set_job_state(job_id, "in progress")
        self.detect_jobs += jobs
        self.cvat.complete_task(source)
        self.cvat.wait_idle(timeout=30)


def _retry_failed_deliveries(cvat: CvatDouble, retried: set[int]) -> int:
    """What CVAT does for a delivery that got no 2xx (the bridge was down): send the identical body again."""
    sent = 0
    for index, d in enumerate(list(cvat.deliveries)):
        if d["status_code"] in (200, 202) or index in retried:
            continue
        resp = httpx.post(d["url"], content=d["body"], timeout=10,
                          headers={"Content-Type": "application/json",
                                   "X-Signature-256": sign(SECRET.encode(), d["body"])})
        assert resp.status_code in (200, 202), (resp.status_code, resp.text)
        retried.add(index)
        sent += 1
    return sent


def _jobs(url: str) -> list[dict]:
    items, offset = [], 0
    while True:
        page = httpx.get(f"{url}/jobs", params={"limit": 500, "offset": offset}, timeout=10).json()
        items += page["items"]
        offset += len(page["items"])
        if offset >= page["total"]:
            return items


@pytest.mark.timeout(600)
def test_twenty_kill_9_and_lost_answers_leave_cvat_exactly_as_a_clean_run(tmp_path: Path) -> None:
    rng = random.Random(11)
    costs = Costs(request=0.002, write_fixed=0.05, write_per_shape=0.002, chunk_read=0.02)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with CvatDouble(costs=costs) as cvat, \
            serve_in_thread({"frame-detector": e2e_function("frame_detector")}, max_workers=2) as fn_url, \
            FaultProxy(int(cvat.url.rsplit(":", 1)[1])) as proxy:
        env = bridge_env(tmp_path, cvat_url=proxy.url, functions_url=fn_url,
                         database_url=f"sqlite:///{tmp_path / 'jobs.db'}", BRIDGE_LEASE_SECONDS="3",
                         BRIDGE_WRITE_BATCH_SIZE="3", CVAT_TIMEOUT="3", BRIDGE_WORKERS="2")
        bridge = BridgeProcess(["serve", "--port", str(port)], env, tmp_path / "bridge.log").start()
        bridge.wait_healthy(url)
        world = World(cvat, url, proxy.url)

        # the reference: one detect task run without any fault
        reference_jobs = world.add_detect_task(0)
        for job_id in reference_jobs:
            cvat.set_job_state(job_id, "in progress")
        cvat.wait_idle(timeout=30)
        deadline = time.monotonic() + 60
        while not all(j["status"] == "succeeded" for j in _jobs(url)) or len(_jobs(url)) < len(reference_jobs):
            assert time.monotonic() < deadline, _jobs(url)
            time.sleep(0.1)
        reference = Counter()
        for job_id in reference_jobs:
            reference.update(_key(s) for s in cvat.shapes(job_id=job_id))
        frames_per_job = {j: cvat.job(j)["stop_frame"] - cvat.job(j)["start_frame"] + 1 for j in reference_jobs}
        assert sum(reference.values()) > 20

        kills = exact = redelivered = 0
        retried: set[int] = set()
        faults = ["504", "timeout", "reset"]
        round_no = 0
        while kills < KILLS:
            round_no += 1
            jobs = world.add_detect_task(round_no)
            source = world.add_source_task(round_no)
            # a lost answer somewhere in this round's writes
            proxy.arm("PATCH", CREATE, rng.choice(faults))
            mode = rng.choice(["timer", "timer", "shapes", "task", "upload"])
            victim = bridge

            def kill_now(victim=victim) -> None:
                victim.kill()

            if mode != "timer":
                path = {"shapes": CREATE, "task": TASK_CREATE, "upload": UPLOAD}[mode]
                method = "PATCH" if mode == "shapes" else "POST"
                proxy.arm(method, path, kill_now)
            world.trigger(jobs, source)
            wait_until = time.monotonic() + rng.uniform(0.2, 2.0)
            while time.monotonic() < wait_until and bridge.alive():
                time.sleep(0.02)
            if bridge.alive():
                bridge.kill()
            else:
                exact += 1
            kills += 1
            proxy.disarm()
            bridge = BridgeProcess(["serve", "--port", str(port)], env, tmp_path / "bridge.log").start()
            bridge.wait_healthy(url)
            redelivered += _retry_failed_deliveries(cvat, retried)

        # let the last bridge finish everything
        deadline = time.monotonic() + 240
        while True:
            items = _jobs(url)
            if all(j["status"] in ("succeeded", "failed", "cancelled") for j in items):
                break
            assert time.monotonic() < deadline, [(j["id"], j["status"], j["error"]) for j in items
                                                 if j["status"] != "succeeded"]
            time.sleep(0.2)
        bridge.stop()
        log = (tmp_path / "bridge.log").read_text()

        # every acknowledged event finished, once
        failed = [(j["id"], j["pipeline"], j["attempts"], j["error"]) for j in items if j["status"] != "succeeded"]
        assert failed == [], log[-3000:]
        assert len([j for j in items if j["pipeline"] == "detect"]) == len(world.detect_jobs) + len(reference_jobs)
        assert len([j for j in items if j["pipeline"] == "crop_quadrat"]) == len(world.sources)
        # every detect job holds the reference's shapes: none twice, none missing
        for start in range(0, len(world.detect_jobs), len(reference_jobs)):
            got = Counter()
            for job_id in world.detect_jobs[start:start + len(reference_jobs)]:
                got.update(_key(s) for s in cvat.shapes(job_id=job_id))
            assert got == reference, f"detect task {start // len(reference_jobs) + 1}: {got - reference} extra, " \
                                     f"{reference - got} missing"
        # one complete quadrat task per source task, its jobs started
        tasks = cvat.tasks(world.quadrats)
        assert len(tasks) == len(world.sources), [(t["id"], t["name"]) for t in tasks]
        for task_id, names in world.sources:
            (made,) = [t for t in tasks if t["name"].endswith(f"(from task #{task_id})")]
            assert cvat.frame_names(made["id"]) == names
            assert all(cvat.job(j)["state"] == "in progress" for j in cvat.job_ids(made["id"]))
        assert kills == KILLS and exact >= 3, (kills, exact)
        print(f"chaos: {kills} kills ({exact} at an exact request), {len(proxy.log)} faults applied, "
              f"{redelivered} deliveries retried, {len(items)} jobs")
        assert frames_per_job  # the reference covered every job shape


@pytest.mark.timeout(300)
def test_a_worker_frozen_past_its_lease_writes_nothing_more(tmp_path: Path, postgres_url: str) -> None:
    """Case 3: SIGSTOP one worker mid-job on PostgreSQL; another takes over; the frozen one wakes."""
    costs = Costs(write_fixed=0.25)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with CvatDouble(costs=costs) as cvat, \
            serve_in_thread({"frame-detector": e2e_function("frame_detector")}, max_workers=2) as fn_url:
        env = bridge_env(tmp_path, cvat_url=cvat.url, functions_url=fn_url, database_url=postgres_url,
                         BRIDGE_LEASE_SECONDS="2", BRIDGE_WRITE_BATCH_SIZE="2")
        api = BridgeProcess(["serve", "--port", str(port), "--workers", "0"], env, tmp_path / "api.log").start()
        api.wait_healthy(url)
        first = BridgeProcess(["worker", "--workers", "1"], env, tmp_path / "first.log").start()
        project = cvat.create_project("reef", LABELS)
        cvat.add_webhook(project, f"{url}/detect-model-webhook?model_name=frame-detector", ["update:job"],
                         secret=SECRET)
        task = cvat.create_task(project, "quadrats", _images(), segment_size=6)
        (job_id,) = cvat.job_ids(task)
        cvat.set_job_state(job_id, "in progress")
        cvat.wait_idle(timeout=30)
        deadline = time.monotonic() + 60
        while len(cvat.shapes(job_id=job_id)) < 4:  # the first worker is writing
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.02)
        first.signal(signal.SIGSTOP)
        frozen_at = len(cvat.shapes(job_id=job_id))
        second = BridgeProcess(["worker", "--workers", "1"], env, tmp_path / "second.log").start()
        try:
            while _jobs(url)[0]["status"] != "succeeded":
                assert time.monotonic() < deadline + 60, _jobs(url)
                time.sleep(0.1)
            done = Counter(_key(s) for s in cvat.shapes(job_id=job_id))
            first.signal(signal.SIGCONT)  # wakes with batches it never wrote
            time.sleep(4)
            after = Counter(_key(s) for s in cvat.shapes(job_id=job_id))
            (job,) = _jobs(url)
        finally:
            first.signal(signal.SIGCONT)
            for p in (first, second, api):
                p.stop()
        assert after == done and max(done.values()) == 1  # nothing written twice, nothing after waking
        assert frozen_at < sum(done.values())  # it was frozen with work left
        log = (tmp_path / "first.log").read_text()
        assert "lease" in log and ("stopping without writing" in log or "lease lost" in log), log[-3000:]
        assert job["status"] == "succeeded" and job["attempts"] == 2
