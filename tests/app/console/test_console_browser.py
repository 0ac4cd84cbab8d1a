"""The console in a real browser (Debian's Chromium through Playwright) against the whole product on
loopback: the CVAT double sends signed webhooks, the bridge's workers run the jobs, the function runs
over HTTP. Every request to a host other than loopback is blocked (and would be reported)."""

from __future__ import annotations

import re
import time

import cv2
import numpy as np
import pytest

from bridge.cvat.types import Shape
from tests.app.console.conftest import screenshot
from tests.doubles.cvat_double import Costs
from tests.e2e.conftest import blobs_png, e2e_function, label_export
from tests.e2e.harness import API_TOKEN, annotate, running_stack

LABELS = [{"name": "coral", "type": "any", "attributes": []}, {"name": "box", "type": "rectangle", "attributes": []},
          *label_export("corner_annotation_example")]
CORNERS = [(40, 30), (200, 40), (210, 180), (30, 170)]


@pytest.fixture(scope="module")
def costs() -> Costs:
    return Costs(concurrency=1)  # one request pays its cost at a time (zero until a test sets one)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, costs):
    with running_stack(tmp_path_factory.mktemp("stack"), {"frame-detector": e2e_function("frame_detector")},
                       costs=costs, partial_tasks=True, write_batch_size=4) as s:
        yield s


def open_console(pg, stack, hash_: str = "#/jobs", token: str | None = API_TOKEN) -> None:
    pg.goto(f"{stack.bridge_url}/{hash_}")
    if token is not None:
        pg.fill("#token", token)
        pg.click("#token-form button")
    pg.wait_for_selector("#view h1")


def detect_task(stack, frames: int, *, white: frozenset[int] = frozenset(), chunk_size: int = 36) -> tuple[int, int]:
    cvat = stack.cvat
    project = cvat.create_project(f"reef {time.monotonic_ns()}", LABELS)
    stack.hook(project, "/detect-model-webhook", ["update:job"], model_name="frame-detector")
    images = [(f"img_{i:03d}.png", blobs_png(100, 90, [(10 + i, 10, 30 + i, 25)], white=i in white))
              for i in range(frames)]
    task = cvat.create_task(project, "quadrats", images, segment_size=frames, chunk_size=chunk_size)
    (job,) = cvat.job_ids(task)
    return project, job


def bridge_job_for(stack, cvat_job: int) -> dict:
    return stack.wait_for(lambda: next(iter(stack.jobs(job_id=cvat_job)), None), what=f"a job for CVAT job {cvat_job}")


def test_docs_and_redoc_render_offline(stack, page, screens):
    pg = page.page
    pg.goto(f"{stack.bridge_url}/docs")
    pg.wait_for_selector(".opblock", timeout=30_000)
    ops = pg.locator(".opblock-summary-path").all_inner_texts()
    assert len(ops) >= 15
    assert any("/jobs/{job_id}/retry" in o for o in ops) and any("/detect-model-webhook" in o for o in ops)
    screenshot(pg, screens, "08-docs")
    pg.goto(f"{stack.bridge_url}/redoc")
    pg.wait_for_selector("h2:has-text('List jobs, newest first')", timeout=30_000)
    screenshot(pg, screens, "09-redoc")
    assert page.blocked == [], f"requests left loopback: {page.blocked}"
    assert page.errors == []


def test_jobs_list_and_live_progress(stack, costs, page, screens):
    pg = page.page
    project, cvat_job = detect_task(stack, 12, chunk_size=1)
    open_console(pg, stack)
    costs.chunk_read = 0.5  # each frame is its own chunk, read in 0.5 s: the job runs for ~6 s
    try:
        stack.cvat.set_job_state(cvat_job, "in progress")
        job = bridge_job_for(stack, cvat_job)
        row = pg.locator(f"tr[data-job='{job['id']}']")
        row.wait_for(timeout=20_000)  # the list refreshes itself: no reload
        assert row.locator("td").nth(2).inner_text() == "detect"
        assert row.locator("td").nth(3).inner_text() == str(project)
        screenshot(pg, screens, "01-jobs")

        row.locator("a").first.click()
        pg.wait_for_selector("#job-progress")
        pg.evaluate("window.__stillTheSamePage = true")
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = pg.locator("#job-progress .progress-text").inner_text()
            if not seen or seen[-1] != text:
                seen.append(text)
                if len(seen) == 2:
                    screenshot(pg, screens, "02-job-running")
            if text == "12/12" and "succeeded" in pg.locator("h1 .badge").first.inner_text():
                break
            time.sleep(0.1)
    finally:
        costs.chunk_read = 0.0
    done = [int(t.split("/")[0]) for t in seen if t.endswith("/12")]
    assert seen[-1] == "12/12", seen
    assert len({d for d in done if 0 < d < 12}) >= 2, f"progress did not advance live: {seen}"
    assert done == sorted(done), seen  # only ever forward
    assert pg.evaluate("window.__stillTheSamePage") is True  # the page updated in place
    assert "Succeeded" in pg.locator("ol.timeline").inner_text()
    assert page.blocked == [] and page.errors == []


def test_failed_frame_reason_thumbnail_and_retry_needs_token(stack, page, screens):
    pg = page.page
    _, cvat_job = detect_task(stack, 3, white=frozenset({1}))
    stack.cvat.set_job_state(cvat_job, "in progress")
    job = bridge_job_for(stack, cvat_job)
    stack.wait_for(lambda: stack.job(job["id"])["status"] == "succeeded", what="the detect job")

    open_console(pg, stack, f"#/jobs/{job['id']}")
    row = pg.locator("#frame-errors tr[data-frame='1']")
    row.wait_for()
    assert "all-white" in row.locator("td.reason").inner_text()
    img = row.locator("img.thumb")
    img.wait_for(timeout=20_000)
    size = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert size == [100, 90]  # the 100×90 frame itself (thumbnails only shrink larger frames)
    pixels = img.evaluate("""(i) => {
        const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(i, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data; let s = 0;
        for (let k = 0; k < d.length; k += 4) s += d[k]; return s / (d.length / 4); }""")
    assert pixels > 240  # it shows the all-white frame that failed
    assert pg.locator("h1").inner_text().count("partial") == 1
    screenshot(pg, screens, "03-job-failed-frame")

    # retry without the token: refused, nothing changes
    before = stack.job(job["id"])
    pg.click("#retry")
    pg.fill("#action-token", "")
    pg.click("#confirm-action")
    alert = pg.locator("#action-message .alert.error")
    alert.wait_for()
    assert "401" in alert.inner_text() and "bearer token" in alert.inner_text()
    pg.fill("#action-token", "not-the-token")
    pg.click("#confirm-action")
    pg.wait_for_function("() => document.querySelector('#action-message .alert.error')?.textContent.includes('401')")
    screenshot(pg, screens, "04-retry-refused")
    after = stack.job(job["id"])
    assert (after["status"], after["attempts"], after["finished_at"]) == (
        before["status"], before["attempts"], before["finished_at"])

    # with the token: the job runs again and the page follows it to the end
    pg.fill("#action-token", API_TOKEN)
    pg.click("#confirm-action")
    pg.locator("#action-message .alert.ok").wait_for()
    stack.wait_for(lambda: (j := stack.job(job["id"]))["status"] == "succeeded" and j["finished_at"] != before[
        "finished_at"], what="the retried job")
    pg.wait_for_function("() => document.querySelector('ol.timeline').textContent.includes('Succeeded')")
    assert page.blocked == [] and page.errors == []


def _photo(seed: int) -> bytes:
    img = np.full((200, 240, 3), 15, np.uint8)
    cv2.fillPoly(img, [np.array(CORNERS, np.int32)], (90, 100, 80 + seed * 40))
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()


def _corners(cvat, project: int, frame: int) -> Shape:
    elements = [Shape(type="points", label_id=cvat.label_id(project, "quadrat_corner", str(i + 1)), frame=frame,
                      points=[float(x), float(y)], source="manual") for i, (x, y) in enumerate(CORNERS)]
    return Shape(type="skeleton", label_id=cvat.label_id(project, "quadrat_corner"), frame=frame, points=[],
                 source="manual", elements=elements)


def test_warp_before_after_pipeline_view_and_health(stack, page, screens):
    cvat = stack.cvat
    p1 = cvat.create_project("corners", label_export("corner_annotation_example"))
    p2 = cvat.create_project("grid", label_export("grid_annotation_example"))
    stack.hook(p1, "/crop-quadrat-and-create-new-task-webhook", ["update:task"], target_proj_id=p2, size=64)
    src = cvat.create_task(p1, "site 7", [(f"q{i}.png", _photo(i)) for i in range(3)], segment_size=3)
    (job_id,) = cvat.job_ids(src)
    annotate(stack, job_id, [_corners(cvat, p1, f) for f in (0, 2)])  # frame 1 has no corners: it fails alone
    cvat.complete_task(src)
    (job,) = [j for j in stack.settle() if j["pipeline"] == "crop_quadrat"]
    assert job["status"] == "succeeded" and [e["frame"] for e in job["frame_errors"]] == [1]
    (made,) = cvat.tasks(p2)

    pg = page.page
    open_console(pg, stack, f"#/jobs/{job['id']}")
    pairs = pg.locator("#frames .pair")
    pairs.first.wait_for()
    assert [p.get_attribute("data-frame") for p in pairs.all()] == ["0", "2"]
    second = pg.locator("#frames .pair[data-frame='2']")
    assert f"task {made['id']} · frame 1" in second.inner_text()  # frame 2 is frame 1 of the new task
    pg.wait_for_function("() => document.querySelectorAll('#frames img.thumb').length === 4", timeout=20_000)
    sizes = [i.evaluate("i => [i.naturalWidth, i.naturalHeight]") for i in pg.locator("#frames img.thumb").all()]
    assert sizes == [[240, 200], [64, 64], [240, 200], [64, 64]]  # before: the photo, after: the 64 px warp
    assert "skeleton" in pg.locator("#frame-errors tr[data-frame='1'] td.reason").inner_text()
    pg.locator("#frame-errors tr[data-frame='1'] img.thumb").wait_for()
    assert pg.locator(f"a[href$='/tasks/{made['id']}']").count() >= 1  # link into CVAT
    screenshot(pg, screens, "05-warp-before-after")

    pg.goto(f"{stack.bridge_url}/#/projects/{p1}")
    stage = pg.locator(".stage").first
    stage.wait_for()
    assert stage.locator("h2").inner_text() == f"crop_quadrat · → project {p2}"
    assert "/crop-quadrat-and-create-new-task-webhook" in stage.inner_text()
    assert re.search(r"succeeded 1", stage.locator(".stage-head").inner_text())
    assert pg.locator(f".flow a[href='#/projects/{p2}']").count() == 1
    screenshot(pg, screens, "06-pipeline")

    pg.goto(f"{stack.bridge_url}/#/health")
    cvat_card = pg.locator("[data-component='cvat']")
    cvat_card.wait_for(timeout=30_000)
    assert "ok" in cvat_card.locator("h2").inner_text() and "bridge-bot" in cvat_card.inner_text()
    pg.locator("[data-component='nuclio'] tr[data-function='frame-detector']").wait_for()
    assert "ok" in pg.locator("[data-function='frame-detector']").inner_text()
    screenshot(pg, screens, "07-health")
    assert page.blocked == [] and page.errors == []
