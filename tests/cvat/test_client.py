"""CvatClient against the CVAT test double, through the real cvat-sdk HTTP stack."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from cvat_sdk.masks import decode_mask, encode_mask

from bridge.cvat.client import CvatClient
from bridge.cvat.shapes import DetectorConverter
from bridge.cvat.types import Shape, Tag
from bridge.errors import CvatRejected, CvatUnavailable, NotFound, PermanentError
from tests.cvat.label_fixtures import load_export
from tests.cvat.test_connection import free_port

TOKEN = "test-token"


def image_bytes(i: int, ext: str = ".png", size: tuple[int, int] = (24, 16)) -> bytes:
    w, h = size
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:, :, 0] = (i * 37) % 256
    img[: i % h + 1, :, 1] = 200
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def project(cvat) -> int:
    labels = (load_export("corner_annotation_example.json") + load_export("finegained_seg_example.json"))
    return cvat.create_project("reef", labels)


@pytest.fixture()
def client(cvat):
    c = CvatClient(cvat.url, access_token=TOKEN, timeout=10, retries=0)
    yield c
    c.close()


def seed_task(cvat, project, name, n=5, *, segment_size=2, chunk_size=2, subset=""):
    images = [(f"img_{n - i:02d}.png", image_bytes(i)) for i in range(n)]  # not in name order
    task_id = cvat.create_task(project, name, images, segment_size=segment_size, subset=subset,
                               chunk_size=chunk_size)
    return task_id, images


def requests_since(cvat, mark: int) -> list[tuple[str, str]]:
    return list(cvat.requests[mark:])


# --- identity and errors ----------------------------------------------------------------------------
def test_check_with_token_and_with_password(cvat):
    with CvatClient(cvat.url, access_token=TOKEN) as c:
        assert c.check() == {"server_version": "2.73.0", "username": "bridge-bot"}
    with CvatClient(cvat.url, username="bridge-bot", password="bridge-pass") as c:
        assert c.username() == "bridge-bot"
        assert c.check()["username"] == "bridge-bot"
    login_calls = [r for r in cvat.requests if r[0] == "POST" and "/api/auth/login" in r[1]]
    assert login_calls, "password auth must open a session once"


def test_bad_token_is_rejected_with_an_actionable_message(cvat):
    with CvatClient(cvat.url, access_token="wrong") as c:
        with pytest.raises(CvatRejected, match="CVAT rejected the credentials") as err:
            c.check()
    assert not isinstance(err.value, NotFound)


def test_bad_password_is_rejected(cvat):
    with CvatClient(cvat.url, username="bridge-bot", password="nope") as c:
        with pytest.raises(CvatRejected, match="logging in to CVAT"):
            c.username()


def test_connection_refused_is_unavailable():
    with CvatClient(f"http://127.0.0.1:{free_port()}", access_token=TOKEN, retries=0) as c:
        with pytest.raises(CvatUnavailable, match="could not be reached"):
            c.get_job(1)


def test_missing_objects_are_not_found(client):
    for call in (client.get_job, client.get_task, client.get_project):
        with pytest.raises(NotFound, match="404"):
            call(987654)


# --- projects, tasks, jobs, labels ------------------------------------------------------------------
def test_project_task_job_info(cvat, project, client):
    task_id, _ = seed_task(cvat, project, "info", n=5, segment_size=2, subset="train")
    assert client.get_project(project).name == "reef"
    task = client.get_task(task_id)
    assert (task.name, task.project_id, task.size, task.subset, task.segment_size) == (
        "info", project, 5, "train", 2)
    assert task.job_ids == sorted(cvat.job_ids(task_id)) and len(task.job_ids) == 3
    jobs = [client.get_job(j) for j in task.job_ids]
    assert [(j.start_frame, j.stop_frame) for j in jobs] == [(0, 1), (2, 3), (4, 4)]
    assert all(j.task_id == task_id and j.project_id == project and j.type == "annotation" for j in jobs)
    assert jobs[0].state == "new" and jobs[0].stage == "annotation" and jobs[0].frame_count == 2


def test_labels_with_skeleton_sublabels(cvat, project, client):
    labels = {label.name: label for label in client.get_labels(project_id=project)}
    assert len(labels) == 17
    corner = labels["quadrat_corner"]
    assert corner.type == "skeleton"
    assert list(corner.sublabels) == ["1", "2", "3", "4"]
    assert corner.sublabels["3"].id == cvat.label_id(project, "quadrat_corner", "3")
    assert corner.id == cvat.label_id(project, "quadrat_corner")
    conf = labels["Acropora"].attributes["confidence"]
    assert (conf.input_type, conf.values, conf.default_value) == ("number", ["0", "100", "1"], "100")
    task_id, _ = seed_task(cvat, project, "labels", n=1)
    job_id = cvat.job_ids(task_id)[0]
    assert client.get_labels(task_id=task_id) == client.get_labels(project_id=project)
    assert client.get_labels(job_id=job_id) == client.get_labels(project_id=project)
    with pytest.raises(ValueError, match="exactly one"):
        client.get_labels(project_id=project, task_id=task_id)


def test_job_and_task_frames(cvat, project, client):
    task_id, images = seed_task(cvat, project, "frames", n=5, segment_size=2)
    names = [n for n, _ in images]
    frames = client.task_frames(task_id)
    assert [(f.frame, f.name, f.width, f.height) for f in frames] == [
        (i, names[i], 24, 16) for i in range(5)]
    second_job = sorted(cvat.job_ids(task_id))[1]
    mark = len(cvat.requests)
    assert [(f.frame, f.name) for f in client.job_frames(second_job)] == [(2, names[2]), (3, names[3])]
    assert [p for _, p in requests_since(cvat, mark)] == [f"/api/jobs/{second_job}/data/meta"]  # one read
    # a meta without start_frame/stop_frame: the job says where its frames are
    real = client._json
    client._json = lambda what, call, *a, **kw: {k: v for k, v in real(what, call, *a, **kw).items()
                                                 if "frame list" not in what or k not in ("start_frame", "stop_frame")}
    try:
        assert [f.frame for f in client.job_frames(second_job)] == [2, 3]
    finally:
        client._json = real


def test_iter_frames_reads_each_chunk_once_and_never_single_frames(cvat, project, client):
    task_id, images = seed_task(cvat, project, "chunks", n=5, chunk_size=2)
    mark = len(cvat.requests)
    got = list(client.iter_frames(task_id, [0, 1, 2, 3, 4]))
    assert got == [(i, images[i][1]) for i in range(5)]  # original bytes, frame order
    data_reads = [p for _, p in requests_since(cvat, mark) if "/data" in p and "meta" not in p]
    assert len([p for p in data_reads if "type=chunk" in p]) == 3
    assert all("quality=original" in p for p in data_reads)
    assert not [p for p in data_reads if "type=frame" in p]

    mark = len(cvat.requests)
    got = list(client.iter_frames(task_id, [4, 1, 1]))
    assert got == [(1, images[1][1]), (4, images[4][1])]
    chunk_reads = [p for _, p in requests_since(cvat, mark) if "type=chunk" in p]
    assert len(chunk_reads) == 2 and any("number=0" in p for p in chunk_reads) and any(
        "number=2" in p for p in chunk_reads)
    with pytest.raises(ValueError, match="outside task"):
        list(client.iter_frames(task_id, [5]))


def test_create_task_keeps_names_order_subset_and_segment_size(cvat, project, client, tmp_path: Path):
    names = ["b.png", "a.png", "c10.png", "c2.png", "z.jpg"]
    paths = []
    for i, name in enumerate(names):
        path = tmp_path / name
        path.write_bytes(image_bytes(i, Path(name).suffix))
        paths.append(path)
    task = client.create_task(project, "made by bridge", paths, subset="validation", segment_size=2)
    assert (task.name, task.project_id, task.size, task.subset, task.segment_size) == (
        "made by bridge", project, 5, "validation", 2)
    assert len(task.job_ids) == 3
    assert cvat.frame_names(task.id) == names
    assert [f.name for f in client.task_frames(task.id)] == names
    assert [b for _, b in client.iter_frames(task.id, range(5))] == [p.read_bytes() for p in paths]
    assert client.find_task(project, "made by bridge") == task
    assert client.find_task(project, "made by") is None


def test_create_task_refuses_duplicate_basenames_before_calling_cvat(cvat, project, client, tmp_path):
    (tmp_path / "x").mkdir()
    for folder in (tmp_path, tmp_path / "x"):
        (folder / "same.png").write_bytes(image_bytes(1))
    mark = len(cvat.requests)
    with pytest.raises(PermanentError, match="file names must be unique"):
        client.create_task(project, "dupes", [tmp_path / "same.png", tmp_path / "x" / "same.png"])
    assert requests_since(cvat, mark) == []


# --- annotations -----------------------------------------------------------------------------------
def test_create_read_and_delete_shapes_in_batches(cvat, project, client):
    task_id, _ = seed_task(cvat, project, "shapes", n=2, segment_size=2)
    job_id = cvat.job_ids(task_id)[0]
    labels = client.get_labels(project_id=project)
    conv = DetectorConverter(labels).convert(
        [
            {"label": "Acropora", "type": "polygon", "points": [1, 1, 10, 1, 10, 10], "confidence": 0.87},
            {"label": "Fungia", "type": "polygon", "points": [2, 2, 12, 2, 12, 12]},
            {"label": "quadrat_corner", "type": "skeleton",
             "elements": [{"label": str(k), "type": "points", "points": [k, k]} for k in (1, 2, 3)]},
        ],
        frame=1, image_size=(24, 16),
    )
    assert conv.dropped == [] and conv.unmatched_labels == {}
    fungia = cvat.label_id(project, "Fungia")
    crop = np.zeros((16, 24), dtype=bool)
    crop[3:9, 4:11] = True
    mask = Shape(type="mask", label_id=fungia, frame=0, points=[float(v) for v in encode_mask(crop)])
    tag = Tag(label_id=fungia, frame=0)
    mark = len(cvat.requests)
    ids = client.create_shapes(job_id, conv.shapes + [mask], [tag], batch_size=5)
    writes = [p for m, p in requests_since(cvat, mark) if m == "PATCH"]
    # weights: 1, 1, 1+4 (skeleton), 1 → batches [poly, poly], [skeleton], [mask]; then the tag
    assert len(writes) == 4 and all("action=create" in p for p in writes)
    assert len(ids) == 5 and len(set(ids)) == 5

    stored = client.get_annotations(job_id=job_id)
    by_id = {s.id: s for s in stored.shapes}
    assert [by_id[i].type for i in ids[:4]] == ["polygon", "polygon", "skeleton", "mask"]
    acropora = by_id[ids[0]]
    assert acropora.source == "auto" and acropora.score == pytest.approx(0.87)
    assert list(acropora.attributes.values()) == ["87"]
    skeleton = by_id[ids[2]]
    assert skeleton.points == [] and [e.outside for e in skeleton.elements] == [False, False, False, True]
    assert {e.label_id for e in skeleton.elements} == {
        cvat.label_id(project, "quadrat_corner", str(k)) for k in range(1, 5)}
    assert np.array_equal(decode_mask(by_id[ids[3]].points, image_width=24, image_height=16), crop)
    assert [t.id for t in stored.tags] == [ids[4]]
    assert len(client.get_annotations(task_id=task_id).shapes) == 4

    client.delete_shapes(job_id, [ids[1], ids[2], 999999])
    left = {s["id"] for s in cvat.shapes(job_id=job_id)}
    assert left == {ids[0], ids[3]}
    deletes = [p for m, p in requests_since(cvat, mark) if m == "PATCH" and "action=delete" in p]
    assert len(deletes) == 1


def test_invalid_write_carries_cvats_reason(cvat, project, client):
    task_id, _ = seed_task(cvat, project, "bad write", n=1)
    job_id = cvat.job_ids(task_id)[0]
    bad = Shape(type="polygon", label_id=cvat.label_id(project, "Fungia"), frame=0, points=[1, 1, 2, 2])
    with pytest.raises(CvatRejected, match="400") as err:
        client.create_shapes(job_id, [bad])
    assert not isinstance(err.value, NotFound)
    with pytest.raises(NotFound):
        client.get_annotations(job_id=987654)
    assert client.create_shapes(job_id, []) == []


def test_job_state_and_issue(cvat, project, client):
    task_id, _ = seed_task(cvat, project, "state", n=3, segment_size=3)
    job_id = cvat.job_ids(task_id)[0]
    client.set_job_state(job_id, "in progress")
    assert client.get_job(job_id).state == "in progress"
    with pytest.raises(ValueError, match="job state"):
        client.set_job_state(job_id, "in_progress")
    issue_id = client.create_issue(job_id, 2, "grid corners not found")
    (issue,) = cvat.issues(job_id=job_id)
    assert issue["id"] == issue_id and issue["frame"] == 2
    assert issue["position"] == [0.0, 0.0, 24.0, 16.0]
    client.create_issue(job_id, 1, "here", position=[1, 2, 3, 4])
    assert cvat.issues(job_id=job_id)[-1]["position"] == [1.0, 2.0, 3.0, 4.0]


def test_from_settings(cvat, tmp_path):
    from bridge.config import Settings

    settings = Settings(_env_file=None, cvat_url=cvat.url, cvat_access_token=TOKEN, cvat_timeout=5,
                        allow_unsigned=True, data_dir=tmp_path)
    with CvatClient.from_settings(settings) as c:
        assert c.timeout == 5 and c.cache_dir == tmp_path / "cache"
        assert c.username() == "bridge-bot"


# --- threads -----------------------------------------------------------------------------------------
def test_one_sdk_client_per_thread_and_close_closes_all(cvat):
    client = CvatClient(cvat.url, access_token=TOKEN)
    names: list[str] = []
    threads = [threading.Thread(target=lambda: names.append(client.username())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert names == ["bridge-bot"] * 3
    assert len(client._clients) == 3
    client.close()
    assert client._clients == []
    with pytest.raises(RuntimeError, match="closed"):
        client.username()


def test_session_login_can_write(cvat, project):
    """Password auth uses the session cookie and CSRF header on writes, not basic auth."""
    task_id, _ = seed_task(cvat, project, "session", n=1)
    job_id = cvat.job_ids(task_id)[0]
    with CvatClient(cvat.url, username="bridge-bot", password="bridge-pass") as c:
        c.set_job_state(job_id, "completed")
        (new_id,) = c.create_shapes(job_id, [Shape(type="points", label_id=cvat.label_id(project, "Fungia"),
                                                   frame=0, points=[3.0, 4.0])])
        assert c.get_job(job_id).state == "completed"
    assert [s["id"] for s in cvat.shapes(job_id=job_id)] == [new_id]


def test_chunk_files_go_to_the_cache_dir_and_are_removed(cvat, project, tmp_path, monkeypatch):
    import tempfile

    task_id, images = seed_task(cvat, project, "tmp chunks", n=3, chunk_size=2)
    made: list[str] = []
    real = tempfile.TemporaryFile

    def recording(*args, **kwargs):
        made.append(kwargs["dir"])
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)
    with CvatClient(cvat.url, access_token=TOKEN, cache_dir=tmp_path) as c:
        frames = c.iter_frames(task_id, [0, 1, 2])
        assert next(frames) == (0, images[0][1])
        deadline = time.monotonic() + 5  # chunk 1 is asked for once chunk 0 is in: let it start
        while not any(f"/tasks/{task_id}/data?" in p and "number=1" in p for _, p in cvat.requests):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        frames.close()  # stopping early closes the chunk file
        assert [f for f, _ in c.iter_frames(task_id, [0, 1, 2])] == [0, 1, 2]
    # one file per chunk download: chunk 1 was already prefetched when the first read stopped early
    assert made == [str(tmp_path / "chunks")] * 4
    assert list((tmp_path / "chunks").iterdir()) == []


def test_next_chunks_download_while_the_current_one_is_read(cvat, project):
    task_id, images = seed_task(cvat, project, "prefetch", n=6, chunk_size=2)
    with CvatClient(cvat.url, access_token=TOKEN) as c:
        frames = c.iter_frames(task_id, range(6), prefetch=2)
        assert next(frames) == (0, images[0][1])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk_reads = [p for m, p in cvat.requests if f"/tasks/{task_id}/data?" in p and "chunk" in p]
            if len(chunk_reads) >= 3:
                break
            time.sleep(0.01)
        assert len(chunk_reads) == 3  # chunk 0 being read, chunks 1 and 2 fetched ahead, not more
        assert [f for f, _ in frames] == [1, 2, 3, 4, 5]
        assert [d for f, d in c.iter_frames(task_id, [5, 1], prefetch=0)] == [images[1][1], images[5][1]]


def test_frame_metadata_pairing_skips_deleted_frames():
    from bridge.cvat.client import _frames

    entries = [{"name": f"f{i}", "width": 10 + i, "height": 5} for i in range(4)]
    job_meta = {"frames": entries[2:4], "deleted_frames": [3]}
    assert [(f.frame, f.name, f.width) for f in _frames(job_meta, [2, 3], "job")] == [(2, "f2", 12)]
    task_meta = {"frames": entries, "deleted_frames": [0]}
    assert [f.frame for f in _frames(task_meta, [1, 2], "job")] == [1, 2]  # task-wide list
    video = {"frames": [{"name": "v.mp4", "width": 640, "height": 480}], "deleted_frames": []}
    assert [(f.frame, f.width) for f in _frames(video, [7, 8], "job")] == [(7, 640), (8, 640)]
    with pytest.raises(CvatRejected, match="no frame metadata"):
        _frames({"frames": []}, [0], "job")


def test_failed_upload_is_rejected_and_the_half_made_task_removed(cvat, project, client, tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"plain text, not a PNG")
    with pytest.raises(CvatRejected, match="not a supported image"):
        client.create_task(project, "broken upload", [bad])
    assert client.find_task(project, "broken upload") is None
    assert not [t for t in cvat.tasks(project) if t["name"] == "broken upload"]


def test_waiting_for_cvat_processing_fails_or_times_out_clearly(cvat, project, client):
    """Drives the request records of the double (``cvat.state.requests``) to the other outcomes."""
    task_id, _ = seed_task(cvat, project, "waiting", n=1)
    rq_id = next(k for k, v in cvat.state.requests.items() if v["operation"]["task_id"] == task_id)
    record = cvat.state.requests[rq_id]
    client._wait_request(rq_id, "creating X", wait_timeout=1, poll_seconds=0.01)  # finished
    record["status"], record["message"] = "failed", "Traceback ...\nValueError: bad archive"
    with pytest.raises(CvatRejected, match="failed to process the data: Traceback ... ValueError: bad archive"):
        client._wait_request(rq_id, "creating X", wait_timeout=1, poll_seconds=0.01)
    record["status"] = "started"
    with pytest.raises(CvatUnavailable, match=r"did not finish processing within 0.2 s \(request .* is started\)"):
        client._wait_request(rq_id, "creating X", wait_timeout=0.2, poll_seconds=0.05)
    with pytest.raises(NotFound):
        client._wait_request("no-such-request", "creating X", wait_timeout=1, poll_seconds=0.01)
