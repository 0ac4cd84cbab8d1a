"""The CVAT double driven by the real cvat-sdk 2.80 (its strict models are the fidelity check)."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from cvat_sdk import Client, Config, make_client
from cvat_sdk.api_client import models
from cvat_sdk.api_client.exceptions import ApiException
from cvat_sdk.core.client import AccessTokenCredentials
from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction
from cvat_sdk.core.proxies.tasks import ResourceType
from cvat_sdk.core.uploading import DataUploader
from cvat_sdk.datasets import TaskDataset
from cvat_sdk.masks import decode_mask, encode_mask
from PIL import Image

from tests.doubles.cvat_double import Costs, CvatDouble

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # copies of ../shared (real CVAT exports)
SECRET = "bridge-secret"

CORNER_LABELS = [
    {
        "name": "quadrat_corner",
        "type": "skeleton",
        "color": "#19fdf3",
        "sublabels": [{"name": str(i), "type": "points", "attributes": []} for i in range(1, 5)],
        "svg": "".join(
            f'<circle r="0.75" cx="{10 * i}" cy="10" data-type="element node" data-element-id="{i}" '
            f'data-node-id="{i}" data-label-name="{i}"></circle>'
            for i in range(1, 5)
        ),
        "attributes": [
            {"name": "confidence", "input_type": "number", "mutable": True, "values": ["0", "100", "1"],
             "default_value": "100"}
        ],
    },
    {
        "name": "Acropora",
        "type": "polygon",
        "attributes": [
            {"name": "confidence", "input_type": "number", "mutable": True, "values": ["0", "100", "1"],
             "default_value": "100"}
        ],
    },
    {"name": "anything", "type": "any", "attributes": []},
]


def png(w: int, h: int, value: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (value, value // 2, 255 - value)).save(out, "PNG")
    return out.getvalue()


class Receiver:
    """A tiny webhook receiver that keeps the raw bytes and checks the signature over them."""

    def __init__(self, status: int = 200):
        self.got: list[tuple[dict, bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.got.append((dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cvat-webhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payloads(self) -> list[dict]:
        with self.lock:
            return [json.loads(b) for _, b in self.got]

    def events(self) -> list[str]:
        return [p["event"] for p in self.payloads()]

    def all_signed(self, secret: str = SECRET) -> bool:
        with self.lock:
            return all(
                hmac.compare_digest(
                    h["X-Signature-256"], "sha256=" + hmac.new(secret.encode(), b, hashlib.sha256).hexdigest()
                )
                for h, b in self.got
            )

    def clear(self) -> None:
        with self.lock:
            self.got.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cvat():
    with CvatDouble() as double:
        yield double


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def client(cvat, tmp_path):
    c = Client(cvat.url, config=Config(status_check_period=0.01, cache_dir=tmp_path / "cache"))
    c.login(AccessTokenCredentials("test-token"))
    yield c
    c.close()


def sample(name: str) -> dict:
    path = next((FIXTURES / "cvat-samples").glob(f"{name}*.json"))
    return json.loads(path.read_text())["body"]


def make_task(cvat: CvatDouble, n: int = 3, segment_size: int = 2) -> tuple[int, int]:
    pid = cvat.create_project("reef", CORNER_LABELS)
    tid = cvat.create_task(pid, "quadrats", [(f"img_{i}.png", png(12, 8, 40 * i)) for i in range(n)],
                           segment_size=segment_size)
    return pid, tid


def sdk_model(client: Client, cls: type, data: dict):
    """Deserialize a payload object with the SDK's strict model (raises on a missing/mistyped field)."""
    return cls._from_openapi_data(**data, _spec_property_naming=True, _check_type=True,
                                  _configuration=client.api_client.configuration)


# -- auth ------------------------------------------------------------------------------------------
def test_auth_token_password_basic_and_rejections(cvat):
    pid = cvat.create_project("p", CORNER_LABELS)
    with make_client(cvat.url, access_token="test-token") as c:
        assert c.users.retrieve_current_user().username == "bridge-bot"
    with make_client(cvat.url, credentials=("bridge-bot", "bridge-pass")) as c:
        assert c.projects.retrieve(pid).name == "p"
        hook = c.api_client.webhooks_api.create(models.WebhookWriteRequest(
            target_url="http://cvat-bridge.internal:8000/hook", type=models.WebhookType("project"),
            project_id=pid, events=[models.EventsEnum("update:job")]))[0]
        assert hook.id > 0  # an unsafe method through the session works (X-CSRFToken sent)
    basic = httpx.get(f"{cvat.url}/api/users/self", auth=("bridge-bot", "bridge-pass"),
                      headers={"X-Organization": "reef"})
    assert basic.status_code == 200 and basic.json()["username"] == "bridge-bot"
    assert httpx.get(f"{cvat.url}/api/users/self").status_code == 401
    assert httpx.get(f"{cvat.url}/api/projects", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{cvat.url}/api/projects", auth=("bridge-bot", "wrong")).status_code == 401
    login = httpx.post(f"{cvat.url}/api/auth/login", json={"username": "bridge-bot", "password": "x"})
    assert login.status_code == 400
    s = httpx.Client(base_url=cvat.url)
    assert s.post("/api/auth/login", json={"username": "bridge-bot", "password": "bridge-pass"}).json()["key"]
    assert s.get("/api/users/self").status_code == 200
    assert s.post("/api/issues", json={}).status_code == 403  # session without X-CSRFToken
    assert httpx.get(f"{cvat.url}/api/server/about").json()["version"] == "2.73.0"


# -- projects and labels ---------------------------------------------------------------------------
def test_project_labels_with_skeleton_sublabels(cvat, client):
    pid = cvat.create_project("reef", CORNER_LABELS)
    labels = {lab.name: lab for lab in client.projects.retrieve(pid).get_labels()}
    assert set(labels) == {"quadrat_corner", "Acropora", "anything"}
    skel = labels["quadrat_corner"]
    assert skel.type == "skeleton" and not skel.has_parent
    subs = {s.name: s.id for s in skel.sublabels}
    assert subs == {str(i): cvat.label_id(pid, "quadrat_corner", str(i)) for i in range(1, 5)}
    for name, sid in subs.items():
        assert f'data-label-id="{sid}"' in skel.svg and f'data-label-name="{name}"' not in skel.svg
    assert skel.attributes[0].name == "confidence" and skel.attributes[0].id > 0
    assert str(skel.attributes[0].input_type) == "number"
    sub = client.api_client.labels_api.retrieve(subs["2"])[0]
    assert sub.has_parent and sub.parent_id == skel.id
    assert cvat.label_id(pid, "Acropora") == labels["Acropora"].id
    with pytest.raises(KeyError):
        cvat.label_id(pid, "Porites")
    # the real export (escaped SVG with stale ids) is stored verbatim, as CVAT does
    real = json.loads((FIXTURES / "labels/corner_annotation_example.json").read_text())
    pid2 = cvat.create_project("verbatim", real)
    (lab,) = client.projects.retrieve(pid2).get_labels()
    assert lab.svg == real[0]["svg"]
    with pytest.raises(ApiException) as e:
        client.api_client.labels_api.list(project_id=pid, task_id=1)
    assert e.value.status == 400


def test_project_create_and_filter_over_rest(cvat, client):
    body = {"name": "via-api", "labels": [{"name": "coral", "type": "polygon"}]}
    r = httpx.post(f"{cvat.url}/api/projects", json=body, headers={"Authorization": "Bearer test-token"})
    assert r.status_code == 201
    assert [p.id for p in client.projects.list()] == [r.json()["id"]]
    bad = httpx.post(f"{cvat.url}/api/projects", headers={"Authorization": "Bearer test-token"},
                     json={"name": "x", "labels": [{"name": "s", "type": "skeleton"}]})
    assert bad.status_code == 400 and "sublabels" in bad.text
    found = client.api_client.projects_api.list(name="via-api")[0]
    assert found.count == 1 and client.api_client.projects_api.list(name="via")[0].count == 0


# -- task creation from files ----------------------------------------------------------------------
def test_create_task_from_files_predefined_order(cvat, client, receiver, tmp_path):
    pid = cvat.create_project("reef", CORNER_LABELS)
    cvat.add_webhook(pid, receiver.url, ["create:task", "update:task", "create:job",
                                         "completed:request[create:task]"])
    names = ["z_last.png", "a_first.png", "m_mid.png"]
    paths = []
    for i, name in enumerate(names):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(png(20 + i, 10, 60 * i))
    task = client.tasks.create_from_data(
        spec=models.TaskWriteRequest(name="upload", project_id=pid, segment_size=2, subset="train"),
        resources=paths, resource_type=ResourceType.LOCAL,
        data_params={"sorting_method": "predefined", "image_quality": 80})
    assert task.size == 3 and task.subset == "train" and task.image_quality == 80
    assert cvat.frame_names(task.id) == names
    meta = task.get_meta()
    assert [f.name for f in meta.frames] == names and meta.frames[1].width == 21 and meta.size == 3
    jobs = sorted(task.get_jobs(), key=lambda j: j.start_frame)
    assert [(j.start_frame, j.stop_frame) for j in jobs] == [(0, 1), (2, 2)]
    assert [j.id for j in jobs] == cvat.job_ids(task.id)
    assert jobs[1].get_meta().frames[0].name == "m_mid.png"
    assert jobs[0].get_frame(1, quality="original").getvalue() == paths[1].read_bytes()
    assert Image.open(jobs[0].get_frame(0, quality="compressed")).format == "JPEG"
    assert Image.open(task.get_frame(0)).format == "JPEG"  # the default quality is compressed
    with pytest.raises(ApiException) as e:
        jobs[1].get_frame(0, quality="original")
    assert e.value.status == 400 and "Incorrect requested frame number" in e.value.body
    chunk = io.BytesIO()
    task.download_chunk(0, chunk, quality="original")
    with zipfile.ZipFile(chunk) as zf:
        assert zf.namelist() == ["000000.png", "000001.png", "000002.png"]
        assert zf.read("000002.png") == paths[2].read_bytes()
    dataset = TaskDataset(client, task.id, load_annotations=False)
    assert [s.frame_name for s in dataset.samples] == names
    assert dataset.samples[1].media.load_image().size == (21, 10)
    cvat.wait_idle()
    assert receiver.events() == ["create:task", "update:task", "update:task", "create:job", "create:job",
                                 "update:task", "completed:request[create:task]"]
    assert receiver.all_signed()
    payloads = receiver.payloads()
    assert "size" not in payloads[0]["task"] and payloads[0]["sender"]["username"] == "bridge-bot"
    assert set(payloads[3]["sender"]) == {"id", "username", "email"}  # the import worker
    done = payloads[-1]
    assert "sender" not in done and done["request"]["status"] == "finished"
    assert done["request"]["operation"]["task_id"] == task.id
    sdk_model(client, models.TaskRead, payloads[-2]["task"])


def test_tus_upload_of_big_files(cvat, client, tmp_path):
    pid = cvat.create_project("reef", CORNER_LABELS)
    task = client.tasks.create(models.TaskWriteRequest(name="tus", project_id=pid))
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"big_{i}.png")
        paths[-1].write_bytes(png(30, 30, 90 * i))
    url = client.api_map.make_endpoint_url(task.api.create_data_endpoint.path, kwsub={"id": task.id})
    response = DataUploader(client, max_request_size=10).upload_files(url, paths, image_quality=70)
    client.wait_for_completion(json.loads(response.data)["rq_id"], status_check_period=0.01)
    assert cvat.frame_names(task.id) == ["big_0.png", "big_1.png"]
    assert cvat.frame_bytes(task.id, 1) == paths[1].read_bytes()
    assert any(m == "PATCH" and "/data/" in p for m, p in cvat.requests)  # really went through TUS


# -- annotations -----------------------------------------------------------------------------------
def test_write_and_read_every_shape_type(cvat, client):
    pid, tid = make_task(cvat)
    job = client.jobs.retrieve(cvat.job_ids(tid)[0])
    acropora, anything = cvat.label_id(pid, "Acropora"), cvat.label_id(pid, "anything")
    skel = cvat.label_id(pid, "quadrat_corner")
    conf = next(lab for lab in job.get_labels() if lab.id == acropora).attributes[0].id
    mask = np.zeros((8, 12), dtype=bool)
    mask[2:5, 3:9] = True
    shapes = [
        models.LabeledShapeRequest(type="rectangle", label_id=anything, frame=0, points=[1, 1, 5, 5]),
        models.LabeledShapeRequest(type="polygon", label_id=acropora, frame=1, points=[0, 0, 4, 0, 4, 4],
                                   source="auto", score=0.75,
                                   attributes=[models.AttributeValRequest(spec_id=conf, value="87")]),
        models.LabeledShapeRequest(type="polyline", label_id=anything, frame=0, points=[0, 0, 3, 3]),
        models.LabeledShapeRequest(type="points", label_id=anything, frame=0, points=[2, 2]),
        models.LabeledShapeRequest(type="ellipse", label_id=anything, frame=0, points=[5, 5, 7, 6]),
        models.LabeledShapeRequest(type="cuboid", label_id=anything, frame=0, points=list(range(16))),
        models.LabeledShapeRequest(type="mask", label_id=anything, frame=1, points=encode_mask(mask),
                                   source="semi-auto"),
        models.LabeledShapeRequest(
            type="skeleton", label_id=skel, frame=0, points=[], source="auto",
            elements=[models.SubLabeledShapeRequest(type="points", frame=0, points=[float(i), 2.0],
                                                    label_id=cvat.label_id(pid, "quadrat_corner", str(i)),
                                                    outside=i == 4)
                      for i in range(1, 5)]),
    ]
    tag = models.LabeledImageRequest(label_id=anything, frame=1)
    job.update_annotations(models.PatchedLabeledDataRequest(shapes=shapes, tags=[tag]),
                           action=AnnotationUpdateAction.CREATE)
    got = job.get_annotations()
    assert [str(s.type) for s in got.shapes] == [s.type.value for s in shapes]
    assert len({s.id for s in got.shapes}) == 8 and len(got.tags) == 1
    poly = got.shapes[1]
    assert poly.source == "auto" and poly.score == 0.75 and poly.attributes[0].value == "87"
    assert decode_mask(got.shapes[6].points, image_width=12, image_height=8).tolist() == mask.tolist()
    sk = got.shapes[7]
    assert len(sk.elements) == 4 and sk.elements[3].outside and sk.points == []
    assert cvat.shapes(job_id=job.id) == [s.to_dict() for s in got.shapes]
    assert len(client.tasks.retrieve(tid).get_annotations().shapes) == 8
    # update one shape in place, delete two by id, then replace all with PUT, then clear
    moved = models.LabeledShapeRequest(**{**got.shapes[0].to_dict(), "points": [2.0, 2.0, 6.0, 6.0]})
    job.update_annotations(models.PatchedLabeledDataRequest(shapes=[moved]), action=AnnotationUpdateAction.UPDATE)
    assert cvat.shapes(job_id=job.id)[0]["points"] == [2.0, 2.0, 6.0, 6.0]
    job.remove_annotations(ids=[got.shapes[2].id, got.shapes[3].id])
    assert len(cvat.shapes(job_id=job.id)) == 6
    job.set_annotations(models.LabeledDataRequest(shapes=[shapes[0]]))
    assert len(cvat.shapes(job_id=job.id)) == 1 and cvat.tags(job_id=job.id) == []
    job.remove_annotations()
    assert cvat.shapes(task_id=tid) == []


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        ({"type": "rectangle", "points": [1, 2, 3]}, "not valid for a rectangle"),
        ({"type": "polygon", "points": [0, 0, 1, 1]}, "not valid for a polygon"),
        ({"type": "mask", "points": [3, 1, 1, 0, 0, 2, 2]}, "does not cover its bbox"),
        ({"type": "rectangle", "frame": 2}, "outside the job's frame range [0, 1]"),
        ({"type": "rectangle", "label_id": 999}, "is not a label of this project"),
        ({"type": "rectangle", "id": 5}, "ids must not be set"),
        ({"type": "rectangle", "attributes": [{"spec_id": "conf", "value": "101"}]}, "numeric string in [0, 100]"),
        ({"type": "rectangle", "attributes": [{"spec_id": "conf", "value": "high"}]}, "numeric string"),
        ({"type": "skeleton", "points": [], "elements": [{"type": "points", "points": [1, 1], "label_id": "acro"}]},
         "is not a label of this project"),
        ({"type": "polygon", "points": [0, 0, 4, 0, 4, 4], "elements": [{"type": "points", "points": [1, 1]}]},
         "only skeletons may have elements"),
        ({"type": "hexagon"}, "not a valid choice"),
    ],
)
def test_annotation_validation_errors(cvat, shape, reason):
    pid, tid = make_task(cvat)
    acropora = cvat.label_id(pid, "Acropora")
    conf = next(lab for lab in cvat.state.project_labels(pid) if lab.id == acropora).attributes[0]["id"]
    body = {"label_id": acropora, "frame": 0, "points": [1, 1, 5, 5], **shape}
    body["attributes"] = [{**a, "spec_id": conf} for a in body.get("attributes", [])]
    if body["type"] == "skeleton":
        body["label_id"] = cvat.label_id(pid, "quadrat_corner")
        body["elements"][0]["label_id"] = acropora
    r = httpx.patch(f"{cvat.url}/api/jobs/{cvat.job_ids(tid)[0]}/annotations/?action=create",
                    json={"shapes": [body]}, headers={"Authorization": "Bearer test-token"})
    assert r.status_code == 400, r.text
    assert reason in r.text
    assert cvat.shapes(task_id=tid) == []


def test_writes_fire_updated_date_only_events(cvat, client, receiver):
    pid, tid = make_task(cvat)
    cvat.add_webhook(pid, receiver.url, ["update:job", "update:task", "update:project"])
    job = client.jobs.retrieve(cvat.job_ids(tid)[0])
    job.update_annotations(models.PatchedLabeledDataRequest(shapes=[models.LabeledShapeRequest(
        type="rectangle", label_id=cvat.label_id(pid, "anything"), frame=0, points=[0, 0, 2, 2])]),
        action=AnnotationUpdateAction.CREATE)
    cvat.wait_idle()
    payloads = receiver.payloads()
    assert [p["event"] for p in payloads] == ["update:job", "update:task", "update:project"]
    for p in payloads:
        assert list(p["changes"]) == ["updated_date"] and list(p["before_update"]) == ["updated_date"]
        assert p["sender"]["username"] == "bridge-bot"
    assert payloads[0]["job"]["updated_date"] == payloads[0]["changes"]["updated_date"]["to"]
    assert receiver.all_signed()
    sdk_model(client, models.JobRead, payloads[0]["job"])
    sdk_model(client, models.ProjectRead, payloads[2]["project"])


# -- job state, task status ------------------------------------------------------------------------
def test_job_patch_and_complete_task(cvat, client, receiver):
    pid, tid = make_task(cvat)
    cvat.add_webhook(pid, receiver.url, ["update:job", "update:task"])
    first, second = cvat.job_ids(tid)
    job = client.jobs.retrieve(first)
    job.update({"state": "in progress"})
    assert job.state == "in progress" and job.status == "annotation"
    job.update(models.PatchedJobWriteRequest(stage="validation"))
    assert job.state == "new" and job.status == "validation"  # changing the stage resets the state
    cvat.wait_idle()
    p = receiver.payloads()
    assert [x["event"] for x in p] == ["update:job", "update:task", "update:job", "update:task"]
    assert p[0]["changes"]["state"] == {"from": "new", "to": "in progress"}
    assert p[0]["before_update"]["state"] == "new"
    assert list(p[2]["changes"]) == ["updated_date", "status", "stage", "state"]
    assert "status" not in p[1]["changes"]  # task stays in annotation (second job still annotating)
    bad = httpx.patch(f"{cvat.url}/api/jobs/{first}", json={"state": "done"},
                      headers={"Authorization": "Bearer test-token"})
    assert bad.status_code == 400 and "not a valid choice" in bad.text
    receiver.clear()
    cvat.set_job_state(second, "in progress", user="diver")
    cvat.complete_task(tid)
    cvat.wait_idle()
    p = receiver.payloads()
    assert p[0]["sender"]["username"] == "diver" and p[0]["job"]["id"] == second
    status_changes = [x["changes"]["status"] for x in p if x["event"] == "update:task" and "status" in x["changes"]]
    assert status_changes == [{"from": "annotation", "to": "completed"}]  # only once every job is done
    assert p[-1]["task"]["status"] == "completed" and p[-1]["task"]["jobs"]["completed"] == 2
    assert client.tasks.retrieve(tid).status == "completed"
    sdk_model(client, models.TaskRead, p[-1]["task"])


def test_issue_create_and_list(cvat, client):
    _, tid = make_task(cvat)
    jid = cvat.job_ids(tid)[1]
    issue, _ = client.api_client.issues_api.create(
        models.IssueWriteRequest(frame=2, position=[1.0, 1.0, 4.0, 4.0], job=jid, message="grid missing"))
    assert issue.job == jid and issue.frame == 2
    assert [(i["id"], i["message"]) for i in cvat.issues(job_id=jid)] == [(issue.id, "grid missing")]
    assert client.api_client.issues_api.list(job_id=jid)[0].count == 1
    assert client.jobs.retrieve(jid).issues.count == 1
    with pytest.raises(ApiException) as e:
        client.api_client.issues_api.create(
            models.IssueWriteRequest(frame=0, position=[1.0, 1.0], job=jid, message="x"))
    assert e.value.status == 400


# -- webhooks --------------------------------------------------------------------------------------
def test_webhook_api_ping_and_deliveries(cvat, client, receiver):
    pid, _ = make_task(cvat)
    api = client.api_client.webhooks_api
    for bad in ("http://bridge:8000/hook", "http://cvat_bridge.internal:8000/x", "ftp//x", "http://a.b1/x"):
        with pytest.raises(ApiException) as e:
            api.create(models.WebhookWriteRequest(target_url=bad, type=models.WebhookType("project"),
                                                  project_id=pid, events=[models.EventsEnum("update:job")]))
        assert e.value.status == 400 and "target_url" in e.value.body
    with pytest.raises(ApiException):
        api.create(models.WebhookWriteRequest(target_url=receiver.url, type=models.WebhookType("project"),
                                              project_id=pid, events=[models.EventsEnum("create:project")]))
    hook, resp = api.create(models.WebhookWriteRequest(
        target_url=receiver.url, type=models.WebhookType("project"), project_id=pid, secret=SECRET,
        events=[models.EventsEnum("update:job"), models.EventsEnum("completed:request[create:task]")]))
    assert "secret" not in json.loads(resp.data)
    delivery, _ = api.create_ping(hook.id)
    assert delivery.event == "ping" and delivery.status_code == 200
    (ping,) = receiver.payloads()
    assert set(ping) == {"event", "webhook", "sender"} and ping["webhook"]["id"] == hook.id
    assert receiver.all_signed()
    headers = receiver.got[0][0]
    assert headers["User-Agent"] == "CVAT/2.73.0 python-requests/2.33.1"
    assert headers["Content-Type"] == "application/json"
    assert api.list(project_id=pid)[0].results[0].last_status == 200
    assert api.list_deliveries(hook.id)[0].count == 1
    first = api.list_deliveries(hook.id)[0].results[0]
    api.create_deliveries_redelivery(str(first.id), hook.id)  # the SDK types delivery_id as str
    cvat.wait_idle()
    assert receiver.payloads()[1] == ping and receiver.got[1][1] != receiver.got[0][1]  # keys reordered
    events = api.retrieve_events(type="project")[0]
    assert "completed:request[create:task]" in [e.key for e in events.events]
    api.partial_update(hook.id, patched_webhook_write_request=models.PatchedWebhookWriteRequest(is_active=False))
    cvat.set_job_state(cvat.job_ids(1)[0], "in progress")
    cvat.wait_idle()
    assert len(receiver.got) == 2  # inactive webhooks get nothing
    api.destroy(hook.id)
    with pytest.raises(ApiException) as e:
        api.retrieve(hook.id)
    assert e.value.status == 404


def test_unsigned_webhook_and_project_isolation(cvat, receiver):
    pid, tid = make_task(cvat)
    other = cvat.create_project("other", CORNER_LABELS)
    cvat.add_webhook(other, receiver.url, ["update:job"])
    cvat.set_job_state(cvat.job_ids(tid)[0], "in progress")
    cvat.wait_idle()
    assert receiver.got == []
    cvat.add_webhook(pid, receiver.url, ["update:job"], secret=None)
    cvat.set_job_state(cvat.job_ids(tid)[0], "completed")
    cvat.wait_idle()
    (headers, body), = receiver.got
    assert "X-Signature-256" not in headers and body == cvat.deliveries[-1]["body"]
    assert body.decode() == json.dumps(json.loads(body))  # stdlib json.dumps defaults


def test_duplicate_and_shuffled_deliveries(cvat, receiver):
    pid, tid = make_task(cvat)
    cvat.add_webhook(pid, receiver.url, ["update:job", "update:task"])
    cvat.duplicate_deliveries = 2
    cvat.set_job_state(cvat.job_ids(tid)[0], "in progress")
    cvat.wait_idle()
    bodies = [b for _, b in receiver.got]
    assert len(bodies) == 4 and bodies[0] == bodies[1] and bodies[2] == bodies[3]
    receiver.clear()
    cvat.duplicate_deliveries = 1
    cvat.shuffle_deliveries = True
    cvat.sender.rng.seed(3)
    for _ in range(4):
        cvat.set_job_state(cvat.job_ids(tid)[0], "new")
    cvat.wait_idle()
    events = receiver.events()
    assert sorted(events) == ["update:job"] * 4 + ["update:task"] * 4
    assert events != ["update:job", "update:task"] * 4


def test_sync_delivery_mode_and_sample_structure():
    with CvatDouble(deliver="sync") as cvat:
        r = Receiver()
        try:
            pid = cvat.create_project("reef", CORNER_LABELS)
            cvat.add_webhook(pid, r.url, ["create:task", "create:job", "update:job", "update:task",
                                          "completed:request[create:task]"])
            tid = cvat.create_task(pid, "t", [("a.png", png(4, 4, 1)), ("b.png", png(4, 4, 2))], segment_size=1)
            cvat.set_job_state(cvat.job_ids(tid)[0], "in progress")
            got = {p["event"]: p for p in r.payloads()}  # sync: already delivered, no wait needed
        finally:
            r.close()
    for name, event in (("02-", "create:task"), ("03-", "create:job"),
                        ("04-", "completed:request[create:task]"), ("10-", "update:job")):
        real = sample(name)
        assert list(got[event]) == list(real), event
        res = "request" if event.startswith("completed") else event.split(":")[1]
        assert list(got[event][res]) == list(real[res]), event
    assert list(got["update:task"]["task"]) == list(sample("14-")["task"])


# -- costs -----------------------------------------------------------------------------------------
def test_costs_chunk_reads_and_writes(tmp_path):
    costs = Costs(chunk_read=0.05, chunk_build_first=0.2, write_fixed=0.1, write_per_shape=0.01)
    with CvatDouble(costs=costs) as cvat:
        pid, tid = make_task(cvat, n=2, segment_size=2)
        jid = cvat.job_ids(tid)[0]
        auth = {"Authorization": "Bearer test-token"}
        with httpx.Client(base_url=cvat.url, headers=auth) as http:
            t0 = time.monotonic()
            http.get(f"/api/jobs/{jid}/data?type=frame&number=0&quality=original").raise_for_status()
            t1 = time.monotonic()
            http.get(f"/api/jobs/{jid}/data?type=frame&number=1&quality=original").raise_for_status()
            t2 = time.monotonic()
            shapes = [{"type": "points", "label_id": cvat.label_id(pid, "anything"), "frame": 0, "points": [1, 1]}]
            http.patch(f"/api/jobs/{jid}/annotations?action=create", json={"shapes": shapes * 10}).raise_for_status()
            t3 = time.monotonic()
    assert t1 - t0 >= 0.25 and 0.05 <= t2 - t1 < 0.25
    assert t3 - t2 >= 0.2
    assert ("GET", f"/api/jobs/{jid}/data?type=frame&number=1&quality=original") in cvat.requests


def test_task_list_patch_delete_and_job_assignee(cvat, client, receiver):
    pid, tid = make_task(cvat)
    other = cvat.create_task(pid, "quadrats-2", [("x.png", png(4, 4, 3))])
    cvat.add_webhook(pid, receiver.url, ["update:task", "update:job", "delete:task", "delete:job"])
    api = client.api_client.tasks_api
    assert [t.id for t in api.list(project_id=pid)[0].results] == [other, tid]  # newest first, like CVAT
    assert [t.id for t in api.list(name="quadrats")[0].results] == [tid]  # name is an equality filter
    assert api.list(search="quadrats")[0].count == 2
    assert [t["id"] for t in cvat.tasks(pid)] == [tid, other]
    client.tasks.retrieve(tid).update({"name": "renamed"})
    annotator = client.api_client.users_api.list(username="bridge-bot")[0].results[0].id
    jid = cvat.job_ids(tid)[0]
    client.jobs.retrieve(jid).update({"assignee": annotator})
    assert cvat.job(jid)["assignee"]["username"] == "bridge-bot"
    client.tasks.remove_by_ids([other])
    with pytest.raises(ApiException) as e:
        client.tasks.retrieve(other)
    assert e.value.status == 404
    cvat.wait_idle()
    p = receiver.payloads()
    assert p[0]["changes"]["name"] == {"from": "quadrats", "to": "renamed"}
    assert p[1]["changes"]["assignee_id"] == {"from": None, "to": annotator}
    assert [x["event"] for x in p[-2:]] == ["delete:job", "delete:task"]


def test_sdk_auto_annotation_driver_runs_against_the_double(cvat, client):
    import cvat_sdk.auto_annotation as cvataa

    class Detector:
        spec = cvataa.DetectionFunctionSpec(labels=[cvataa.label_spec("Acropora", 0, type="polygon")])

        def detect(self, context, image):
            return [cvataa.polygon(0, [1, 1, 3, 1, 3, 3])]

    pid = cvat.create_project("reef", CORNER_LABELS)
    tid = cvat.create_task(pid, "t", [(f"{i}.png", png(6, 6, i)) for i in range(5)], segment_size=2, chunk_size=3)
    cvataa.annotate_task(client, tid, Detector(), clear_existing=True)
    shapes = cvat.shapes(task_id=tid)
    assert [s["frame"] for s in shapes] == [0, 1, 2, 3, 4]
    assert {s["label_id"] for s in shapes} == {cvat.label_id(pid, "Acropora")}
    chunk_reads = [p for m, p in cvat.requests if m == "GET" and "type=chunk" in p]
    assert chunk_reads == [f"/api/tasks/{tid}/data?number={n}&quality=original&type=chunk" for n in (0, 1)]
    assert ("PUT", f"/api/tasks/{tid}/annotations") in cvat.requests


def test_failed_deliveries_are_recorded(cvat):
    pid, tid = make_task(cvat)
    failing = Receiver(status=500)
    try:
        cvat.add_webhook(pid, failing.url, ["update:job"])
        cvat.add_webhook(pid, "http://127.0.0.1:9/closed-port", ["update:job"])
        cvat.set_job_state(cvat.job_ids(tid)[0], "in progress")
        cvat.wait_idle()
    finally:
        failing.close()
    assert sorted(d["status_code"] for d in cvat.deliveries) == [500, 502]
    assert all(d["event"] == "update:job" for d in cvat.deliveries)


def test_concurrency_limit_serialises_server_time():
    with CvatDouble(costs=Costs(chunk_read=0.1, concurrency=1)) as cvat:
        _, tid = make_task(cvat, n=4, segment_size=4)
        jid = cvat.job_ids(tid)[0]

        def read(frame: int) -> None:
            httpx.get(f"{cvat.url}/api/jobs/{jid}/data?type=frame&number={frame}&quality=original",
                      headers={"Authorization": "Bearer test-token"}).raise_for_status()

        threads = [threading.Thread(target=read, args=(f,)) for f in range(4)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.monotonic() - t0 >= 0.4  # four concurrent frame reads cost four chunk reads
