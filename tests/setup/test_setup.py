"""``bridge setup`` end to end against the CVAT test double, with a local webhook receiver.

The receiver plays the bridge: it answers CVAT's pings, checking ``X-Signature-256`` with the
secret it was given (401 on mismatch), so ``--check`` is exercised through the real ping path.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.cvat.admin import CvatAdmin, WebhookSpec
from bridge.cvat.connection import make_sdk_client
from bridge.errors import CvatRejected, NotFound
from bridge.labels import builtin_labels
from bridge.setup.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, add_arguments, run_setup
from bridge.setup.urls import check_target_url
from tests.doubles.cvat_double import CvatDouble

SECRET = "3f6c1d0e9a8b7c6d5e4f3a2b1c0d9e8f"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
PROJECTS = ["corner_detection", "grid_detection", "coral_segmentation"]


class Receiver:
    """A tiny HTTP server on 127.0.0.1 that answers webhooks like the bridge would."""

    def __init__(self, secret: str | None, status: int = 200) -> None:
        self.secret = secret
        self.status = status
        self.seen: list[tuple[str, dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.seen.append((self.path, dict(self.headers), body))
                status = receiver.status
                if receiver.secret is not None:
                    want = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                    if not hmac.compare_digest(self.headers.get("X-Signature-256", ""), want):
                        status = 401
                text = json.dumps({"status": "ok" if status == 200 else "invalid signature"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cvat() -> Iterator[CvatDouble]:
    with CvatDouble() as double:
        yield double


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(SECRET)
    yield r
    r.close()


def settings_for(
    cvat: CvatDouble, public_url: str, secret: str = SECRET, token: str = "test-token"
) -> Settings:
    return Settings(
        _env_file=None,
        cvat_url=cvat.url,
        cvat_access_token=token,
        webhook_secret=secret,
        public_url=public_url,
    )


def setup(settings: Settings, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = io.StringIO()
    code = run_setup(settings, parser.parse_args(list(argv)), out=out)
    return code, out.getvalue()


def writes(cvat: CvatDouble, since: int = 0) -> list[tuple[str, str]]:
    return [(m, p) for m, p in cvat.requests[since:] if m in WRITES and not p.startswith("/api/webhooks/")]


def admin_for(cvat: CvatDouble) -> CvatAdmin:
    return CvatAdmin(make_sdk_client(cvat.url, access_token="test-token"))


def statuses(out: str, kind: str) -> list[str]:
    return re.findall(rf"^{kind}\s+.*?: ([a-z ]+?)(?: — |$)", out, re.M)


def test_first_run_creates_projects_labels_and_webhooks(cvat: CvatDouble, receiver: Receiver) -> None:
    code, out = setup(settings_for(cvat, receiver.url))
    assert code == EXIT_OK, out
    assert statuses(out, "project") == ["created"] * 3
    assert statuses(out, "webhook") == ["created"] * 5

    admin = admin_for(cvat)
    ids = {}
    for name in PROJECTS:
        project = admin.find_project(name)
        assert project is not None, name
        ids[name] = project.id

    # Skeleton sublabels exist and the stored SVG refers to their new ids, in order.
    [corner] = admin.get_labels(ids["corner_detection"])
    sub_ids = [s["id"] for s in corner["sublabels"]]
    assert [s["name"] for s in corner["sublabels"]] == ["1", "2", "3", "4"]
    assert [int(i) for i in re.findall(r'data-label-id="(\d+)"', corner["svg"])] == sub_ids
    [grid] = admin.get_labels(ids["grid_detection"])
    assert len(grid["sublabels"]) == 117
    assert [int(i) for i in re.findall(r'data-label-id="(\d+)"', grid["svg"])] == [
        s["id"] for s in grid["sublabels"]
    ]
    corals = admin.get_labels(ids["coral_segmentation"])
    assert len(corals) == 16 and {c["type"] for c in corals} == {"polygon"}
    assert corals[0]["attributes"][0]["name"] == "confidence"

    hooks = {name: admin.list_webhooks(pid) for name, pid in ids.items()}
    urls = {name: sorted(h.target_url for h in hs) for name, hs in hooks.items()}
    base = receiver.url
    assert urls["corner_detection"] == sorted(
        [
            f"{base}/detect-model-webhook?model_name=pth-yolo-gridcorners",
            f"{base}/crop-quadrat-and-create-new-task-webhook?target_proj_id={ids['grid_detection']}",
        ]
    )
    assert urls["grid_detection"] == sorted(
        [
            f"{base}/detect-model-webhook?model_name=pth-yolo-gridpose",
            f"{base}/remove-grid-and-create-new-task-webhook?target_proj_id={ids['coral_segmentation']}",
        ]
    )
    assert urls["coral_segmentation"] == [
        f"{base}/detect-model-webhook?model_name=pth-yolo-coralsegv4&conv_mask_to_poly=true"
    ]
    for hs in hooks.values():
        for h in hs:
            check_target_url(h.target_url)
            assert h.is_active and not h.enable_ssl and h.content_type == "application/json"
            want = ("update:job",) if "detect-model" in h.target_url else ("update:job", "update:task")
            assert h.events == want
    # The secret reached CVAT (write-only: seen through the double's state).
    assert {hook.secret for hook in cvat.state.webhooks.values()} == {SECRET}
    assert "loopback" in out  # 127.0.0.1 is CVAT itself from inside its containers: warned


def test_second_run_changes_nothing(cvat: CvatDouble, receiver: Receiver) -> None:
    settings = settings_for(cvat, receiver.url)
    assert setup(settings)[0] == EXIT_OK
    mark = len(cvat.requests)
    code, out = setup(settings)
    assert code == EXIT_OK, out
    assert set(statuses(out, "project")) == {"unchanged"}
    assert set(statuses(out, "labels")) == {"unchanged"}
    assert statuses(out, "webhook") == ["unchanged"] * 5
    assert [r for r in cvat.requests[mark:] if r[0] in WRITES] == []
    assert len(cvat.state.webhooks) == 5 and len(cvat.state.projects) == 3


def test_check_pings_every_webhook_ok(cvat: CvatDouble, receiver: Receiver) -> None:
    settings = settings_for(cvat, receiver.url)
    assert setup(settings)[0] == EXIT_OK
    mark = len(cvat.requests)
    code, out = setup(settings, "--check")
    assert code == EXIT_OK, out
    assert statuses(out, "ping") == ["ok"] * 5
    assert writes(cvat, mark) == []
    pinged = sorted(
        path.split("?")[0] for path, _, body in receiver.seen if json.loads(body)["event"] == "ping"
    )
    assert pinged == sorted(
        ["/detect-model-webhook"] * 3
        + ["/crop-quadrat-and-create-new-task-webhook", "/remove-grid-and-create-new-task-webhook"]
    )


def test_check_explains_a_signature_mismatch(cvat: CvatDouble, receiver: Receiver) -> None:
    assert setup(settings_for(cvat, receiver.url, secret="another-secret-0123456789abcdef"))[0] == EXIT_OK
    code, out = setup(settings_for(cvat, receiver.url, secret="another-secret-0123456789abcdef"), "--check")
    assert code == EXIT_FAILED
    assert statuses(out, "ping") == ["failed"] * 5
    assert out.count("bridge rejected the signature (401): WEBHOOK_SECRET differs") == 5


def test_check_explains_an_unreachable_bridge(cvat: CvatDouble) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    settings = settings_for(cvat, closed)
    assert setup(settings, "--layout", "1-stage")[0] == EXIT_OK
    code, out = setup(settings, "--layout", "1-stage", "--check")
    assert code == EXIT_FAILED
    assert "CVAT could not connect to 127.0.0.1 (502): check extra_hosts / network" in out


def test_changed_secret_and_url_update_webhooks_in_place(cvat: CvatDouble, receiver: Receiver) -> None:
    assert (
        setup(settings_for(cvat, "http://cvat-bridge.internal:8000", secret="old-secret-0123456789abcdef"))[0]
        == 0
    )
    ids_before = sorted(cvat.state.webhooks)
    code, out = setup(settings_for(cvat, receiver.url))
    assert code == EXIT_OK, out
    assert statuses(out, "webhook") == ["updated"] * 5
    assert "target URL http://cvat-bridge.internal:8000/" in out and "secret or description" in out
    assert sorted(cvat.state.webhooks) == ids_before  # updated, not duplicated
    assert {h.secret for h in cvat.state.webhooks.values()} == {SECRET}
    code, out = setup(settings_for(cvat, receiver.url), "--check")
    assert code == EXIT_OK and statuses(out, "ping") == ["ok"] * 5


def test_dry_run_and_check_on_an_empty_cvat_write_nothing(cvat: CvatDouble, receiver: Receiver) -> None:
    settings = settings_for(cvat, receiver.url)
    code, out = setup(settings, "--dry-run")
    assert code == EXIT_OK, out
    assert statuses(out, "project") == ["would create"] * 3
    assert statuses(out, "webhook") == ["would create"] * 5
    code, out = setup(settings, "--check")
    assert code == EXIT_FAILED
    assert statuses(out, "project") == ["missing"] * 3 and "run `bridge setup`" in out
    assert [r for r in cvat.requests if r[0] in WRITES] == []


def test_existing_project_with_conflicting_labels_is_reported(cvat: CvatDouble, receiver: Receiver) -> None:
    cvat.create_project(
        "coral_segmentation",
        [{"name": "Acanthastrea", "type": "rectangle"}] + builtin_labels("coral_finegrained")[1:],
    )
    code, out = setup(settings_for(cvat, receiver.url), "--layout", "1-stage")
    assert code == EXIT_FAILED
    assert "'Acanthastrea' is rectangle, the layout wants polygon" in out


def test_existing_skeleton_missing_sublabels_is_a_conflict(cvat: CvatDouble, receiver: Receiver) -> None:
    [corner] = builtin_labels("quadrat_corner")
    corner["sublabels"] = corner["sublabels"][:3]
    corner["svg"] = "\n".join(corner["svg"].splitlines()[:3])
    cvat.create_project("corner_detection", [corner])
    code, out = setup(settings_for(cvat, receiver.url), "--layout", "2-stage")
    assert code == EXIT_FAILED
    assert "skeleton 'quadrat_corner' lacks sublabels 4" in out


def test_project_missing_some_labels_gets_them_added(cvat: CvatDouble, receiver: Receiver) -> None:
    pid = cvat.create_project("coral_segmentation", builtin_labels("coral_finegrained")[:10])
    code, out = setup(settings_for(cvat, receiver.url), "--layout", "1-stage")
    assert code == EXIT_OK, out
    assert "labels   coral_segmentation: updated — added Montipora, Other" in out
    assert len(admin_for(cvat).get_labels(pid)) == 16
    code, out = setup(settings_for(cvat, receiver.url), "--layout", "1-stage")
    assert set(statuses(out, "labels")) == {"unchanged"}


def test_custom_labels_and_model_for_a_two_stage_layout(
    cvat: CvatDouble, receiver: Receiver, tmp_path: Path
) -> None:
    labels = tmp_path / "banggai.json"
    names = [
        "Acropora",
        "Astreopora",
        "Fungia",
        "Group1",
        "Millepora",
        "Montipora",
        "Other",
        "Pavona/Leptoseris",
        "Pocillopora",
        "Porites",
    ]
    labels.write_text(json.dumps([{"name": n, "type": "polygon"} for n in names]))
    code, out = setup(
        settings_for(cvat, receiver.url),
        "--layout",
        "2-stage",
        "--prefix",
        "banggai_",
        "--labels-file",
        str(labels),
        "--model",
        "pth-yolo-coralsegbanggai",
    )
    assert code == EXIT_OK, out
    admin = admin_for(cvat)
    corner, coral = (
        admin.find_project("banggai_corner_detection"),
        admin.find_project("banggai_coral_segmentation"),
    )
    assert corner and coral and admin.find_project("banggai_grid_detection") is None
    assert sorted(label["name"] for label in admin.get_labels(coral.id)) == sorted(names)
    [crop] = [h for h in admin.list_webhooks(corner.id) if "crop-quadrat" in h.target_url]
    assert crop.target_url.endswith(f"?target_proj_id={coral.id}")
    [detect] = admin.list_webhooks(coral.id)
    assert "model_name=pth-yolo-coralsegbanggai" in detect.target_url


def test_bad_public_url_is_refused_before_contacting_cvat(cvat: CvatDouble) -> None:
    code, out = setup(
        settings_for(cvat, "http://cvat-bridge.internal:8000"), "--public-url", "http://bridge:8000"
    )
    assert code == EXIT_CONFIG and "single-label" in out
    assert cvat.requests == []


def test_wrong_token_is_explained(cvat: CvatDouble, receiver: Receiver) -> None:
    code, out = setup(settings_for(cvat, receiver.url, token="wrong-token"))
    assert code == EXIT_FAILED
    assert "401" in out and "CVAT_ACCESS_TOKEN" in out


def test_admin_maps_errors_and_pings(cvat: CvatDouble, receiver: Receiver) -> None:
    admin = admin_for(cvat)
    with pytest.raises(NotFound):
        admin.get_project(999)
    with pytest.raises(NotFound):
        admin.ping_webhook(999)
    pid = cvat.create_project("p", [{"name": "a"}])
    with pytest.raises(CvatRejected, match="project_id|Invalid|rejected"):
        admin.create_webhook(999, WebhookSpec(target_url=f"{receiver.url}/health", events=("update:job",)))
    hook = admin.create_webhook(
        pid,
        WebhookSpec(
            target_url=f"{receiver.url}/health", events=("update:job",), secret=SECRET, enable_ssl=False
        ),
    )
    result = admin.ping_webhook(hook.id)
    assert result.status_code == 200 and result.delivery_id is not None and "ok" in result.response
    cvat.create_project("twin", [{"name": "a"}])
    cvat.create_project("twin", [{"name": "a"}])
    with pytest.raises(CvatRejected, match="several CVAT projects are named 'twin'"):
        admin.find_project("twin")
