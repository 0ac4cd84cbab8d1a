"""``propagate`` end to end: an annotator draws a box on a key frame and completes the job → signed
webhook → bridge job → a tracker function (CVAT's tracker protocol) over HTTP → a CVAT track with a
keyframe per frame, closed when the object is gone; re-runs make no duplicates. The last test runs the
real SAM 2 tracker handler (tiny random model) behind the same pipeline."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bridge.cvat.types import Shape
from tests.doubles.function_server import REPO, load_function
from tests.e2e.conftest import e2e_function
from tests.e2e.harness import annotate, running_stack

LABELS = [{"name": "fish", "type": "rectangle", "attributes": []}, {"name": "rock", "type": "any", "attributes": []}]
STEP = 10  # the fish swims 10 px right per frame, then leaves the frame


def _frames(n: int = 6, visible: int = 4) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        img = np.full((80, 120), 15, np.uint8)
        if i < visible:
            img[20:40, 10 + STEP * i:30 + STEP * i] = 230
        ok, data = cv2.imencode(".png", img)
        assert ok
        out.append((f"f_{i:02d}.png", data.tobytes()))
    return out


@pytest.fixture
def stack(tmp_path):
    with running_stack(tmp_path, {"fish-tracker": e2e_function("blob_tracker")}) as s:
        yield s


def _scene(stack, **params):
    cvat = stack.cvat
    project = cvat.create_project("fish", LABELS)
    stack.hook(project, "/webhooks/propagate", ["update:job"], function="fish-tracker", lost_after=2, **params)
    task = cvat.create_task(project, "dive", _frames(), segment_size=6)
    (job,) = cvat.job_ids(task)
    fish = cvat.label_id(project, "fish")
    (prompt,) = annotate(stack, job, [Shape(type="rectangle", label_id=fish, frame=0, points=[10, 20, 30, 40],
                                            source="manual")])
    return cvat, job, fish, prompt


def _complete(stack, job: int, runs: int) -> list[dict]:
    stack.cvat.set_job_state(job, "in progress")
    stack.cvat.set_job_state(job, "completed")
    return stack.settle(expect=runs, timeout=60)


def _tracks(cvat, job: int) -> list[dict]:
    return cvat._jobs(job, None)[0].tracks  # the double's stored tracks


def test_a_drawn_box_becomes_a_track_over_the_following_frames(stack):
    cvat, job, fish, prompt = _scene(stack)
    (run,) = _complete(stack, job, 1)
    assert run["status"] == "succeeded", run
    (track,) = _tracks(cvat, job)
    assert track["label_id"] == fish and track["source"] == "semi-auto" and track["frame"] == 0
    keys = [(s["frame"], s["outside"], s["points"]) for s in track["shapes"]]
    assert keys[:4] == [(i, False, [10.0 + STEP * i, 20.0, 30.0 + STEP * i, 40.0]) for i in range(4)]
    assert keys[4][:2] == (4, True) and len(keys) == 5  # lost on frames 4 and 5: closed right after frame 3
    assert [s["id"] for s in cvat.shapes(job_id=job)] == []  # the drawn box became the track's first keyframe
    assert "1 tracks over 6 frames" in run["summary"]

    # a re-run finds no drawn shape: nothing added, nothing removed
    runs = _complete(stack, job, 2)
    assert runs[0]["status"] == "succeeded" and "no shapes to propagate" in runs[0]["summary"]
    assert [t["id"] for t in _tracks(cvat, job)] == [track["id"]]


def test_with_kept_prompts_a_rerun_replaces_its_tracks(stack):
    cvat, job, fish, prompt = _scene(stack, keep_prompts=True)
    _complete(stack, job, 1)
    first = _tracks(cvat, job)
    runs = _complete(stack, job, 2)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"], runs
    assert "1 earlier tracks replaced" in runs[0]["summary"], runs
    second = _tracks(cvat, job)
    assert len(second) == 1  # replaced, not doubled (the double may hand out the freed id again)
    assert [s["points"] for s in second[0]["shapes"]] == [s["points"] for s in first[0]["shapes"]]
    assert [s["id"] for s in cvat.shapes(job_id=job)] == [prompt]  # the drawn box stays


@pytest.mark.functions
def test_the_real_sam2_tracker_handler_drives_the_pipeline(tmp_path):
    pytest.importorskip("sam2")
    env = {"SAM2_CHECKPOINT": "", "SAM2_DEVICE": "cpu", "SAM2_WARMUP": "0", "SAM2_IMAGE_SIZE": "256",
           "SAM2_TRACKER_MAX_SCALE_CHANGE": "1000", "SAM2_CACHE_MB": "64"}
    tracker = load_function(REPO / "nuclio_functions" / "sam2_tracker", env)
    with running_stack(tmp_path, {"pth-sam2-tracker": tracker}, function_workers=1) as stack:
        cvat = stack.cvat
        project = cvat.create_project("fish", LABELS)
        stack.hook(project, "/webhooks/propagate", ["update:job"], on="in_progress")
        task = cvat.create_task(project, "dive", _frames(4, 4), segment_size=4)
        (job,) = cvat.job_ids(task)
        annotate(stack, job, [Shape(type="rectangle", label_id=cvat.label_id(project, "fish"), frame=1,
                                    points=[20, 20, 40, 40], source="manual")])
        cvat.set_job_state(job, "in progress")
        (run,) = stack.settle(expect=1, timeout=240)
        assert run["status"] == "succeeded", run
        (track,) = _tracks(cvat, job)
        frames = [s["frame"] for s in track["shapes"]]
        assert track["source"] == "semi-auto" and frames[0] == 1 and frames == sorted(frames)
        assert track["shapes"][0]["points"] == [20.0, 20.0, 40.0, 40.0]  # the start frame echoes the box
        assert all(s["type"] == "rectangle" for s in track["shapes"])


def test_bridge_run_propagates_without_a_webhook(stack, monkeypatch, capsys):
    """`bridge run propagate --job J --inline`: the same pipeline, started by hand."""
    from bridge.cli import main

    cvat = stack.cvat
    project = cvat.create_project("fish", LABELS)  # no webhook: nothing fires by itself
    task = cvat.create_task(project, "dive", _frames(), segment_size=6)
    (job,) = cvat.job_ids(task)
    annotate(stack, job, [Shape(type="rectangle", label_id=cvat.label_id(project, "fish"), frame=0,
                                points=[10, 20, 30, 40], source="manual")])
    for name, value in {"CVAT_URL": stack.settings.cvat_url, "CVAT_USERNAME": "bridge-bot",
                        "CVAT_PASSWORD": "bridge-pass", "NUCLIO_FUNCTION_URL": stack.functions_url + "/{name}",
                        "BRIDGE_DATA_DIR": str(stack.settings.data_dir), "BRIDGE_REPORT_ISSUES": "false"}.items():
        monkeypatch.setenv(name, value)
    code = main(["run", "propagate", "--job", str(job), "--param", "function=fish-tracker",
                 "--param", "lost_after=2", "--inline"])
    assert code == 0
    assert "1 tracks over 6 frames" in capsys.readouterr().out
    (track,) = _tracks(cvat, job)
    assert [s["frame"] for s in track["shapes"]] == [0, 1, 2, 3, 4]
    with pytest.raises(SystemExit, match="lost_after"):
        main(["run", "propagate", "--job", str(job), "--param", "lost_after=zero", "--inline"])


@pytest.mark.parametrize("fault", ["504", "timeout", "reset"])
def test_a_lost_answer_to_the_track_write_or_the_prompt_delete_leaves_one_track(tmp_path, fault):
    """CVAT applies the track write (and then the delete of the drawn box) but the answer is lost: the
    track is found by its recorded intent, not written twice; the drawn box is gone once; the track is
    what a fault-free run writes."""
    create = r"^/api/jobs/\d+/annotations/?\?.*action=create"
    delete = r"^/api/jobs/\d+/annotations/?\?.*action=delete"
    with running_stack(tmp_path, {"fish-tracker": e2e_function("blob_tracker")}, cvat_timeout=3) as stack:
        cvat, job, fish, prompt = _scene(stack)
        stack.proxy.arm("PATCH", create, fault, times=1)
        stack.proxy.arm("PATCH", delete, fault, times=1)
        runs = _complete(stack, job, 1)
        assert runs[0]["status"] == "succeeded", runs
        assert sorted(f for _, _, f in stack.proxy.log) == [fault, fault]  # both answers were lost
        (track,) = _tracks(cvat, job)
        keys = [(s["frame"], s["outside"], s["points"]) for s in track["shapes"]]
        assert keys[:4] == [(i, False, [10.0 + STEP * i, 20.0, 30.0 + STEP * i, 40.0]) for i in range(4)]
        assert keys[4][:2] == (4, True) and len(keys) == 5
        assert cvat.shapes(job_id=job) == []
        # the bridge knows the track it wrote: a re-run with kept prompts would replace it, a plain re-run
        # finds nothing to propagate and adds nothing
        runs = _complete(stack, job, 2)
        assert runs[0]["status"] == "succeeded" and [t["id"] for t in _tracks(cvat, job)] == [track["id"]]
