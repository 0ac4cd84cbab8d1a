"""The REST endpoints of the double: request parsing, auth, costs, and calls into ``State``."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .media import Frame, chunk_zip, compressed, default_chunk_size, mime_type, read_frame
from .state import Actor, Job, State, Task, User, natural_key
from .util import ApiError, bad_request, not_found, paginate, parse_int
from .webhooks import PROJECT_EVENTS, Sender


@dataclass
class Costs:
    """Delays that give the double CVAT's cost shape (cvat-performance.md §6); all default 0.

    ``chunk_build_first`` is paid by the first read of each chunk (CVAT builds chunks lazily, one
    by one); a single-frame read costs the read (and first build) of the chunk holding it."""

    request: float = 0.0
    write_fixed: float = 0.0
    write_per_shape: float = 0.0
    chunk_read: float = 0.0
    chunk_build_first: float = 0.0
    #: how many requests pay their costs at the same time (0: unlimited). CVAT is CPU-bound: four
    #: client threads were only 1.15-1.7x faster than one (cvat-performance.md §1), so 1-2 is realistic.
    concurrency: int = 0


@dataclass
class Ctx:
    """One parsed request."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    files: list[tuple[str, str, bytes]]  # (field, filename, data) of a multipart body
    fields: dict[str, str]  # non-file multipart fields
    base: str
    actor: Actor | None = None

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise ApiError(400, f"JSON parse error - {e}") from e


@dataclass
class Reply:
    status: int = 200
    data: Any = None
    raw: bytes | None = None
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)


@dataclass
class TusFile:
    task_id: int
    filename: str
    length: int
    data: bytearray = field(default_factory=bytearray)


def public_delivery(record: dict) -> dict:
    """A delivery record as the API shows it (private ``_`` keys dropped)."""
    return {k: copy.deepcopy(v) for k, v in record.items() if not k.startswith("_")}


_ANON = {("GET", "/api/server/about"), ("POST", "/api/auth/login")}
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


class Api:
    """Routes requests to handlers; every handler returns a ``Reply`` or raises ``ApiError``."""

    def __init__(
        self,
        state: State,
        *,
        username: str,
        password: str,
        token: str,
        costs: Costs,
        sender: Sender,
        request_log: list[tuple[str, str]],
    ):
        self.state = state
        self.username, self.password, self.token = username, password, token
        self.costs = costs
        self.sender = sender
        self.request_log = request_log
        self.sessions: dict[str, tuple[int, str]] = {}  # sessionid -> (user id, csrftoken)
        self.login_keys: dict[str, int] = {}
        self.tus: dict[str, TusFile] = {}
        self._cost_lock = threading.Lock()
        self._chunk_builds: dict[tuple, threading.Event] = {}  # set once built (CVAT's media cache)
        self._busy = threading.Semaphore(costs.concurrency) if costs.concurrency > 0 else None
        p = r"(?P<id>\d+)"
        table: list[tuple[str, str, Callable[..., Reply]]] = [
            ("GET", "/api/server/about", self.about),
            ("POST", "/api/auth/login", self.login),
            ("POST", "/api/auth/logout", self.logout),
            ("GET", "/api/users/self", self.user_self),
            ("GET", "/api/users", self.users),
            ("GET", f"/api/users/{p}", self.user),
            ("GET", "/api/projects", self.projects),
            ("POST", "/api/projects", self.project_create),
            ("GET", f"/api/projects/{p}", self.project),
            ("PATCH", f"/api/projects/{p}", self.project_update),
            ("GET", "/api/labels", self.labels),
            ("GET", f"/api/labels/{p}", self.label),
            ("GET", "/api/tasks", self.tasks),
            ("POST", "/api/tasks", self.task_create),
            ("GET", f"/api/tasks/{p}", self.task),
            ("PATCH", f"/api/tasks/{p}", self.task_patch),
            ("DELETE", f"/api/tasks/{p}", self.task_delete),
            ("GET", f"/api/tasks/{p}/data/meta", self.task_meta),
            ("GET", f"/api/tasks/{p}/data", self.task_data),
            ("POST", f"/api/tasks/{p}/data", self.task_upload),
            ("HEAD", f"/api/tasks/{p}/data/(?P<file_id>[0-9a-f-]{{36}})", self.tus_head),
            ("PATCH", f"/api/tasks/{p}/data/(?P<file_id>[0-9a-f-]{{36}})", self.tus_patch),
            ("GET", f"/api/tasks/{p}/annotations", self.task_annotations),
            ("PUT", f"/api/tasks/{p}/annotations", self.task_annotations_write),
            ("PATCH", f"/api/tasks/{p}/annotations", self.task_annotations_write),
            ("DELETE", f"/api/tasks/{p}/annotations", self.task_annotations_write),
            ("GET", "/api/jobs", self.jobs),
            ("GET", f"/api/jobs/{p}", self.job),
            ("PATCH", f"/api/jobs/{p}", self.job_patch),
            ("GET", f"/api/jobs/{p}/data/meta", self.job_meta),
            ("GET", f"/api/jobs/{p}/data", self.job_data),
            ("GET", f"/api/jobs/{p}/annotations", self.job_annotations),
            ("PUT", f"/api/jobs/{p}/annotations", self.job_annotations_write),
            ("PATCH", f"/api/jobs/{p}/annotations", self.job_annotations_write),
            ("DELETE", f"/api/jobs/{p}/annotations", self.job_annotations_write),
            ("GET", "/api/issues", self.issues),
            ("POST", "/api/issues", self.issue_create),
            ("GET", f"/api/issues/{p}", self.issue),
            ("GET", "/api/requests/(?P<rq_id>[^/]+)", self.request),
            ("GET", "/api/webhooks", self.webhooks),
            ("POST", "/api/webhooks", self.webhook_create),
            ("GET", "/api/webhooks/events", self.webhook_events),
            ("GET", f"/api/webhooks/{p}", self.webhook),
            ("PATCH", f"/api/webhooks/{p}", self.webhook_patch),
            ("PUT", f"/api/webhooks/{p}", self.webhook_patch),
            ("DELETE", f"/api/webhooks/{p}", self.webhook_delete),
            ("POST", f"/api/webhooks/{p}/ping", self.webhook_ping),
            ("GET", f"/api/webhooks/{p}/deliveries", self.deliveries),
            ("GET", f"/api/webhooks/{p}/deliveries/(?P<did>\\d+)", self.delivery),
            ("POST", f"/api/webhooks/{p}/deliveries/(?P<did>\\d+)/redelivery", self.redelivery),
        ]
        self.routes = [(m, re.compile(pat + r"\Z"), fn) for m, pat, fn in table]

    # -- dispatch -------------------------------------------------------------------------------
    def handle(self, ctx: Ctx, logged: str) -> Reply:
        self.request_log.append((ctx.method, logged))
        self.pay(self.costs.request)
        try:
            methods = []
            for method, rx, fn in self.routes:
                m = rx.match(ctx.path)
                if not m:
                    continue
                methods.append(method)
                if method == ctx.method:
                    if (method, ctx.path) not in _ANON:
                        ctx.actor = Actor(self.authenticate(ctx), ctx.base)
                    kwargs = {k: (int(v) if k in ("id", "did") else v) for k, v in m.groupdict().items()}
                    return fn(ctx, **kwargs)
            if methods:
                raise ApiError(405, f'Method "{ctx.method}" not allowed.')
            raise not_found()
        except ApiError as e:
            return Reply(e.status, e.body)

    def authenticate(self, ctx: Ctx) -> User:
        auth = ctx.headers.get("authorization", "")
        scheme, _, cred = auth.partition(" ")
        if scheme == "Bearer":
            if not secrets.compare_digest(cred, self.token):
                raise ApiError(401, "Invalid token.")
            return self.state.bot
        if scheme == "Token":
            if cred not in self.login_keys:
                raise ApiError(401, "Invalid token.")
            return self.state.users[self.login_keys[cred]]
        if scheme == "Basic":
            try:
                user, _, pw = base64.b64decode(cred).decode().partition(":")
            except ValueError as e:
                raise ApiError(401, "Invalid basic header. Credentials not correctly base64 encoded.") from e
            if user != self.username or pw != self.password:
                raise ApiError(401, "Invalid username/password.")
            return self.state.bot
        if auth:
            raise ApiError(401, f"Unsupported authorization scheme {scheme!r}.")
        cookies = dict(c.strip().split("=", 1) for c in ctx.headers.get("cookie", "").split(";") if "=" in c)
        session = self.sessions.get(cookies.get("sessionid", ""))
        if session is None:
            raise ApiError(401, "Authentication credentials were not provided.")
        uid, csrf = session
        if ctx.method in _UNSAFE and (
            ctx.headers.get("x-csrftoken") != csrf or cookies.get("csrftoken") != csrf
        ):
            raise ApiError(403, "CSRF Failed: CSRF token missing or incorrect.")
        return self.state.users[uid]

    def pay(self, seconds: float) -> None:
        """Spend server time (at most ``costs.concurrency`` requests at once)."""
        if seconds <= 0:
            return
        if self._busy is None:
            time.sleep(seconds)
            return
        with self._busy:
            time.sleep(seconds)

    @staticmethod
    def _sorted(items: list, query: dict[str, str], default: str = "-id") -> list:
        key = query.get("sort", default)
        reverse = key.startswith("-")
        attr = key.lstrip("-")
        if attr not in ("id", "name", "updated_date", "created_date"):
            raise bad_request(f"Unsupported sort field {attr!r}", "sort")
        return sorted(items, key=lambda x: x[attr], reverse=reverse)

    def _page(self, ctx: Ctx, items: list, default_sort: str = "-id") -> Reply:
        return Reply(
            200, paginate(self._sorted(items, ctx.query, default_sort), ctx.query, ctx.base, ctx.path)
        )

    # -- server, auth, users --------------------------------------------------------------------
    def about(self, ctx: Ctx) -> Reply:
        return Reply(
            200,
            {
                "name": "Computer Vision Annotation Tool",
                "description": "CVAT (test double)",
                "version": self.state.version,
                "logo_url": f"{ctx.base}/static/logo.svg",
                "subtitle": "Open Data Annotation Platform",
            },
        )

    def login(self, ctx: Ctx) -> Reply:
        data = ctx.json()
        user = data.get("username") or data.get("email", "").split("@")[0] if isinstance(data, dict) else None
        if not isinstance(data, dict) or user != self.username or data.get("password") != self.password:
            raise bad_request("Unable to log in with provided credentials.", "non_field_errors")
        sid, csrf, key = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(20)
        self.sessions[sid] = (self.state.bot.id, csrf)
        self.login_keys[key] = self.state.bot.id
        return Reply(200, {"key": key}, cookies={"csrftoken": csrf, "sessionid": sid})

    def logout(self, ctx: Ctx) -> Reply:
        cookies = dict(c.strip().split("=", 1) for c in ctx.headers.get("cookie", "").split(";") if "=" in c)
        self.sessions.pop(cookies.get("sessionid", ""), None)
        return Reply(200, {"detail": "Successfully logged out."})

    def user_self(self, ctx: Ctx) -> Reply:
        return Reply(200, self.state.user_json(ctx.actor.user, ctx.base))

    def users(self, ctx: Ctx) -> Reply:
        users = [
            self.state.user_json(u, ctx.base)
            for u in self.state.users.values()
            if "username" not in ctx.query or u.username == ctx.query["username"]
        ]
        return self._page(ctx, users, "id")

    def user(self, ctx: Ctx, id: int) -> Reply:
        if id not in self.state.users:
            raise not_found()
        return Reply(200, self.state.user_json(self.state.users[id], ctx.base))

    # -- projects and labels --------------------------------------------------------------------
    def projects(self, ctx: Ctx) -> Reply:
        with self.state.lock:
            items = [
                self.state.project_json(p, ctx.base)
                for p in self.state.projects.values()
                if ctx.query.get("name", p.name) == p.name
                and ctx.query.get("search", "").lower() in p.name.lower()
            ]
        return self._page(ctx, items)

    def project_create(self, ctx: Ctx) -> Reply:
        data = ctx.json()
        if not isinstance(data, dict):
            raise bad_request("Invalid data. Expected a dictionary.", "non_field_errors")
        with self.state.action():
            p = self.state.create_project(data.get("name"), data.get("labels"), ctx.actor)
            return Reply(201, self.state.project_json(p, ctx.base))

    def project(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            return Reply(200, self.state.project_json(self.state.project(id), ctx.base))

    def project_update(self, ctx: Ctx, id: int) -> Reply:
        data = ctx.json()
        if not isinstance(data, dict):
            raise bad_request("Invalid data. Expected a dictionary.", "non_field_errors")
        with self.state.action():
            p = self.state.patch_project(self.state.project(id), data, ctx.actor)
            return Reply(200, self.state.project_json(p, ctx.base))

    def labels(self, ctx: Ctx) -> Reply:
        given = [k for k in ("project_id", "task_id", "job_id") if k in ctx.query]
        if len(given) > 1:
            raise bad_request("project_id, task_id and job_id filters are mutually exclusive")
        st = self.state
        with st.lock:
            if not given:
                labs = [lab for lab in st.labels.values() if lab.parent_id is None]
            else:
                oid = parse_int(ctx.query[given[0]], given[0])
                pid = {
                    "project_id": lambda: st.project(oid).id,
                    "task_id": lambda: st.task(oid).project_id,
                    "job_id": lambda: st.task(st.job(oid).task_id).project_id,
                }[given[0]]()
                labs = st.project_labels(pid)
            items = [st.label_json(lab) for lab in labs]
        return self._page(ctx, items, "id")

    def label(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            return Reply(200, self.state.label_json(self.state.label(id)))

    # -- tasks ----------------------------------------------------------------------------------
    def tasks(self, ctx: Ctx) -> Reply:
        q = ctx.query
        pid = parse_int(q["project_id"], "project_id") if "project_id" in q else None
        with self.state.lock:
            items = [
                self.state.task_json(t, ctx.base)
                for t in self.state.tasks.values()
                if (pid is None or t.project_id == pid)
                and q.get("name", t.name) == t.name
                and q.get("search", "").lower() in t.name.lower()
                and q.get("subset", t.subset) == t.subset
                and q.get("status", t.status) == t.status
            ]
        return self._page(ctx, items)

    def task_create(self, ctx: Ctx) -> Reply:
        data = ctx.json()
        if not isinstance(data, dict):
            raise bad_request("Invalid data. Expected a dictionary.", "non_field_errors")
        with self.state.action():
            t = self.state.create_task(data, ctx.actor)
            return Reply(201, self.state.task_json(t, ctx.base))

    def task(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            return Reply(200, self.state.task_json(self.state.task(id), ctx.base))

    def task_patch(self, ctx: Ctx, id: int) -> Reply:
        data = ctx.json()
        with self.state.action():
            t = self.state.task(id)
            self.state.patch_task(t, data, ctx.actor)
            return Reply(200, self.state.task_json(t, ctx.base))

    def task_delete(self, ctx: Ctx, id: int) -> Reply:
        with self.state.action():
            self.state.delete_task(self.state.task(id), ctx.actor)
        return Reply(204)

    # -- task data upload (CVAT's TUS dialect) --------------------------------------------------
    def task_upload(self, ctx: Ctx, id: int) -> Reply:
        h = ctx.headers
        with self.state.lock:
            t = self.state.task(id)
            if t.phase != "new":
                raise bad_request("Adding more data to a task is not supported", "client_files")
            if "upload-start" in h:
                t.uploads, t.upload_started = [], True
                return Reply(202, {})
            if "upload-multiple" in h:
                if not t.upload_started:
                    raise bad_request("Upload-Multiple before Upload-Start")
                t.uploads += [
                    (os.path.basename(name), data)
                    for f, name, data in ctx.files
                    if f.startswith("client_files[")
                ]
                return Reply(200, {})
            if "tus-resumable" in h and "upload-length" in h:
                return self._tus_create(ctx, t)
            finishing = "upload-finish" in h
        if finishing:
            if not t.upload_started:
                raise bad_request("Upload-Finish before Upload-Start")
            return self._finish_upload(ctx, t, ctx.json())
        # one-shot request: multipart with client_files, or a JSON DataRequest
        if ctx.files:
            t.uploads = [
                (os.path.basename(name), data) for f, name, data in ctx.files if f.startswith("client_files[")
            ]
            fields: dict[str, Any] = dict(ctx.fields)
            if "upload_file_order" in fields:
                fields["upload_file_order"] = fields["upload_file_order"].split(",")
            return self._finish_upload(ctx, t, fields)
        data = ctx.json()
        unsupported = [k for k in ("remote_files", "server_files", "cloud_storage_id") if data.get(k)]
        raise bad_request(
            f"The double supports local uploads only (got {unsupported or 'no files'})", "client_files"
        )

    def _tus_create(self, ctx: Ctx, t: Task) -> Reply:
        meta = {}
        for item in ctx.headers.get("upload-metadata", "").split(","):
            k, _, v = item.strip().partition(" ")
            if k:
                meta[k] = base64.b64decode(v).decode() if v else ""
        if not meta.get("filename"):
            raise bad_request("Upload-Metadata must carry a filename")
        length = parse_int(ctx.headers["upload-length"], "Upload-Length")
        file_id = str(uuid.uuid4())
        self.tus[file_id] = TusFile(task_id=t.id, filename=os.path.basename(meta["filename"]), length=length)
        return Reply(
            201,
            raw=b"",
            headers={
                "Location": f"{ctx.base}/api/tasks/{t.id}/data/{file_id}",
                "Upload-Filename": meta["filename"],
                "Tus-Resumable": "1.0.0",
            },
        )

    def tus_head(self, ctx: Ctx, id: int, file_id: str) -> Reply:
        f = self.tus.get(file_id)
        if f is None or f.task_id != id:
            raise not_found()
        return Reply(
            200,
            raw=b"",
            headers={
                "Upload-Offset": str(len(f.data)),
                "Upload-Length": str(f.length),
                "Tus-Resumable": "1.0.0",
            },
        )

    def tus_patch(self, ctx: Ctx, id: int, file_id: str) -> Reply:
        f = self.tus.get(file_id)
        if f is None or f.task_id != id:
            raise not_found()
        offset = parse_int(ctx.headers.get("upload-offset"), "Upload-Offset")
        if offset != len(f.data):
            raise ApiError(409, "Upload-Offset does not match the stored offset")
        if offset + len(ctx.body) > f.length:
            raise bad_request("Chunk goes past Upload-Length")
        f.data += ctx.body
        if len(f.data) == f.length:
            with self.state.lock:
                self.state.task(id).uploads.append((f.filename, bytes(f.data)))
        return Reply(204, raw=b"", headers={"Upload-Offset": str(len(f.data)), "Tus-Resumable": "1.0.0"})

    def _finish_upload(self, ctx: Ctx, t: Task, fields: Any) -> Reply:
        if not isinstance(fields, dict):
            raise bad_request("Invalid data. Expected a dictionary.", "non_field_errors")
        unsupported = {
            "job_file_mapping",
            "frame_filter",
            "start_frame",
            "stop_frame",
            "validation_params",
            "remote_files",
            "server_files",
            "cloud_storage_id",
            "filename_pattern",
        }
        used = sorted(k for k in unsupported if fields.get(k) not in (None, "", [], 0))
        if used:
            raise bad_request(f"Data parameters {used} are not supported by the CVAT double")
        quality = parse_int(fields.get("image_quality", 70), "image_quality")
        if not 0 <= quality <= 100:
            raise bad_request("Ensure this value is less than or equal to 100.", "image_quality")
        method = fields.get("sorting_method", "lexicographical")
        uploads = list(t.uploads)
        names = [n for n, _ in uploads]
        if len(set(names)) != len(names):
            raise bad_request("Uploaded file names must be unique", "client_files")
        if method == "predefined":
            order = fields.get("upload_file_order")
            if not isinstance(order, list) or sorted(order) != sorted(names):
                raise bad_request(
                    "upload_file_order must list exactly the uploaded file names", "upload_file_order"
                )
            by_name = dict(uploads)
            uploads = [(n, by_name[n]) for n in order]
        elif method == "lexicographical":
            uploads.sort(key=lambda u: u[0])
        elif method == "natural":
            uploads.sort(key=lambda u: natural_key(u[0]))
        elif method == "random":
            self.sender.rng.shuffle(uploads)
        else:
            raise bad_request(f'"{method}" is not a valid choice.', "sorting_method")
        frames = [read_frame(n, d) for n, d in uploads]
        chunk_size = fields.get("chunk_size")
        chunk_size = (
            parse_int(chunk_size, "chunk_size")
            if chunk_size not in (None, "")
            else default_chunk_size(frames[0])
            if frames
            else 36
        )
        if chunk_size < 1:
            raise bad_request("Ensure this value is greater than or equal to 1.", "chunk_size")
        with self.state.action():
            request = self.state.process_data(
                t, frames, chunk_size=chunk_size, image_quality=quality, actor=ctx.actor
            )
            t.uploads, t.upload_started = [], False
        return Reply(202, {"rq_id": request["id"]})

    # -- frames and chunks ----------------------------------------------------------------------
    def _chunk_cost(self, t: Task, start: int, stop: int, quality: str) -> None:
        key = (t.id, start, stop, quality)
        with self._cost_lock:
            first = key not in self.state.chunks_seen
            self.state.chunks_seen.add(key)
            built = self._chunk_builds.setdefault(key, threading.Event())
        if first:  # CVAT builds a chunk once; a reader arriving during the build waits for it
            try:
                self.pay(self.costs.chunk_read + self.costs.chunk_build_first)
            finally:
                built.set()
            return
        built.wait()
        self.pay(self.costs.chunk_read)

    @staticmethod
    def _quality(ctx: Ctx) -> str:
        quality = ctx.query.get("quality", "compressed")
        if quality not in ("compressed", "original"):
            raise bad_request(f'"{quality}" is not a valid choice.', "quality")
        return quality

    def _frame_reply(self, t: Task, frame: Frame, quality: str) -> Reply:
        if quality == "original":
            return Reply(200, raw=frame.data, media_type=mime_type(frame.name))
        return Reply(200, raw=compressed(frame, t.image_quality), media_type="image/jpeg")

    def _chunk_reply(self, t: Task, start: int, stop: int, quality: str) -> Reply:
        self._chunk_cost(t, start, stop, quality)
        data = chunk_zip(t.frames[start : stop + 1], original=quality == "original", quality=t.image_quality)
        return Reply(200, raw=data, media_type="application/zip")

    def _ready_task(self, tid: int) -> Task:
        with self.state.lock:
            t = self.state.task(tid)
        if t.phase != "ready":
            raise bad_request("The task has no data")
        return t

    def task_data(self, ctx: Ctx, id: int) -> Reply:
        t = self._ready_task(id)
        kind = ctx.query.get("type")
        quality = self._quality(ctx)
        number = parse_int(ctx.query.get("number"), "number")
        size, cs = len(t.frames), t.chunk_size
        if kind == "frame":
            if not 0 <= number < size:
                raise bad_request(f"The frame number should be in the [0, {size - 1}] range", "number")
            start = number // cs * cs
            self._chunk_cost(t, start, min(start + cs, size) - 1, quality)
            return self._frame_reply(t, t.frames[number], quality)
        if kind == "chunk":
            if not 0 <= number * cs < size:
                raise bad_request(
                    f"The chunk number should be in the [0, {(size - 1) // cs}] range", "number"
                )
            return self._chunk_reply(t, number * cs, min((number + 1) * cs, size) - 1, quality)
        raise bad_request(f'"{kind}" is not a valid choice.', "type")

    def job_data(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            j = self.state.job(id)
        t = self._ready_task(j.task_id)
        kind = ctx.query.get("type")
        quality = self._quality(ctx)
        cs = t.chunk_size
        if kind == "frame":
            number = parse_int(ctx.query.get("number"), "number")
            if not j.start <= number <= j.stop:
                raise bad_request(f"Incorrect requested frame number: {number}")
            start = j.start + (number - j.start) // cs * cs
            self._chunk_cost(t, start, min(start + cs - 1, j.stop), quality)
            return self._frame_reply(t, t.frames[number], quality)
        if kind == "chunk":
            if "index" in ctx.query:
                index = parse_int(ctx.query["index"], "index")
                start = j.start + index * cs
                if index < 0 or start > j.stop:
                    raise bad_request(f"Incorrect requested chunk index: {index}", "index")
                return self._chunk_reply(t, start, min(start + cs - 1, j.stop), quality)
            number = parse_int(ctx.query.get("number"), "number")
            start, stop = max(number * cs, j.start), min((number + 1) * cs - 1, j.stop)
            if number < 0 or start > stop:
                raise bad_request(f"Incorrect requested chunk number: {number}", "number")
            return self._chunk_reply(t, start, stop, quality)
        raise bad_request(f'"{kind}" is not a valid choice.', "type")

    def task_meta(self, ctx: Ctx, id: int) -> Reply:
        t = self._ready_task(id)
        return Reply(200, self.state.meta_json(t, 0, len(t.frames) - 1))

    def job_meta(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            j = self.state.job(id)
        t = self._ready_task(j.task_id)
        return Reply(200, self.state.meta_json(t, j.start, j.stop))

    # -- jobs -----------------------------------------------------------------------------------
    def jobs(self, ctx: Ctx) -> Reply:
        q = ctx.query
        tid = parse_int(q["task_id"], "task_id") if "task_id" in q else None
        pid = parse_int(q["project_id"], "project_id") if "project_id" in q else None
        with self.state.lock:
            items = []
            for j in self.state.jobs.values():
                t = self.state.tasks[j.task_id]
                if (
                    (tid is None or j.task_id == tid)
                    and (pid is None or t.project_id == pid)
                    and q.get("stage", j.stage) == j.stage
                    and q.get("state", j.state) == j.state
                ):
                    items.append(self.state.job_json(j, ctx.base))
        return self._page(ctx, items)

    def job(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            return Reply(200, self.state.job_json(self.state.job(id), ctx.base))

    def job_patch(self, ctx: Ctx, id: int) -> Reply:
        data = ctx.json()
        with self.state.action():
            j = self.state.job(id)
            self.state.patch_job(j, data, ctx.actor)
            return Reply(200, self.state.job_json(j, ctx.base))

    # -- annotations ----------------------------------------------------------------------------
    def job_annotations(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            return Reply(200, self.state.read_annotations([self.state.job(id)]))

    def task_annotations(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            t = self.state.task(id)
            return Reply(200, self.state.read_annotations([self.state.jobs[j] for j in t.job_ids]))

    def _write(self, ctx: Ctx, jobs_of: Callable[[], list[Job]]) -> Reply:
        data = None if ctx.method == "DELETE" else ctx.json()
        if data is not None:
            n = 0
            for key in ("tags", "shapes", "tracks"):
                for obj in (data.get(key) or []) if isinstance(data, dict) else []:
                    n += 1 + (len(obj.get("elements") or []) if isinstance(obj, dict) else 0)
            self.pay(self.costs.write_fixed + self.costs.write_per_shape * n)
        else:
            self.pay(self.costs.write_fixed)
        with self.state.action():
            jobs = jobs_of()
            if not jobs:
                raise bad_request("The task has no jobs yet")
            out = self.state.write_annotations(jobs, ctx.method, ctx.query.get("action"), data, ctx.actor)
        return Reply(204 if ctx.method == "DELETE" else 200, None if ctx.method == "DELETE" else out)

    def job_annotations_write(self, ctx: Ctx, id: int) -> Reply:
        return self._write(ctx, lambda: [self.state.job(id)])

    def task_annotations_write(self, ctx: Ctx, id: int) -> Reply:
        return self._write(ctx, lambda: [self.state.jobs[j] for j in self.state.task(id).job_ids])

    # -- issues ---------------------------------------------------------------------------------
    def issues(self, ctx: Ctx) -> Reply:
        jid = parse_int(ctx.query["job_id"], "job_id") if "job_id" in ctx.query else None
        with self.state.lock:
            items = [
                self.state.issue_json(i, ctx.base)
                for i in self.state.issues.values()
                if jid is None or i.job_id == jid
            ]
        return self._page(ctx, items)

    def issue_create(self, ctx: Ctx) -> Reply:
        data = ctx.json()
        with self.state.action():
            issue = self.state.create_issue(data, ctx.actor)
            return Reply(201, self.state.issue_json(issue, ctx.base))

    def issue(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            if id not in self.state.issues:
                raise not_found()
            return Reply(200, self.state.issue_json(self.state.issues[id], ctx.base))

    def request(self, ctx: Ctx, rq_id: str) -> Reply:
        with self.state.lock:
            if rq_id not in self.state.requests:
                raise not_found()
            return Reply(200, copy.deepcopy(self.state.requests[rq_id]))

    # -- webhooks -------------------------------------------------------------------------------
    def webhooks(self, ctx: Ctx) -> Reply:
        pid = parse_int(ctx.query["project_id"], "project_id") if "project_id" in ctx.query else None
        with self.state.lock:
            items = [
                self.state.webhook_json(h, ctx.base)
                for h in self.state.webhooks.values()
                if (pid is None or h.project_id == pid)
                and ctx.query.get("target_url", h.target_url) == h.target_url
            ]
        return self._page(ctx, items)

    def webhook_create(self, ctx: Ctx) -> Reply:
        data = ctx.json()
        with self.state.action():
            hook = self.state.create_webhook(data, ctx.actor)
            return Reply(201, self.state.webhook_json(hook, ctx.base))

    def webhook_events(self, ctx: Ctx) -> Reply:
        kind = ctx.query.get("type", "all")
        if kind not in ("all", "project", "organization"):
            raise bad_request(f'"{kind}" is not a valid choice.', "type")
        events = [{"key": k, "group": {"display_name": g}} for k, g in sorted(PROJECT_EVENTS.items())]
        return Reply(200, {"webhook_type": kind, "events": events})

    def webhook(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            return Reply(200, self.state.webhook_json(self.state.webhook(id), ctx.base))

    def webhook_patch(self, ctx: Ctx, id: int) -> Reply:
        data = ctx.json()
        if not isinstance(data, dict):
            raise bad_request("Invalid data. Expected a dictionary.", "non_field_errors")
        with self.state.action():
            hook = self.state.webhook(id)
            for k, v in self.state.webhook_fields(data, creating=False, hook=hook).items():
                setattr(hook, k, v)
            hook.updated_date = self.state.clock.now()
            return Reply(200, self.state.webhook_json(hook, ctx.base))

    def webhook_delete(self, ctx: Ctx, id: int) -> Reply:
        with self.state.action():
            self.state.webhook(id)
            del self.state.webhooks[id]
        return Reply(204)

    def webhook_ping(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            hook = self.state.webhook(id)
            payload = {
                "event": "ping",
                "webhook": self.state.webhook_json(hook, ctx.base, for_ping=True),
                "sender": ctx.actor.sender(),
            }
        self.sender.send(hook, "ping", json.dumps(payload).encode())
        with self.state.lock:
            return Reply(200, public_delivery(hook.deliveries[-1]))

    def deliveries(self, ctx: Ctx, id: int) -> Reply:
        with self.state.lock:
            items = [public_delivery(d) for d in self.state.webhook(id).deliveries]
        return self._page(ctx, items)

    def delivery(self, ctx: Ctx, id: int, did: int) -> Reply:
        with self.state.lock:
            for d in self.state.webhook(id).deliveries:
                if d["id"] == did:
                    return Reply(200, public_delivery(d))
        raise not_found()

    def redelivery(self, ctx: Ctx, id: int, did: int) -> Reply:
        with self.state.lock:
            hook = self.state.webhook(id)
            d = next((d for d in hook.deliveries if d["id"] == did), None)
            if d is None:
                raise not_found()
            payload = d["_payload"]
        # CVAT re-sends the stored payload with its keys in another order (different bytes)
        self.sender.submit([(hook, d["event"], dict(reversed(list(payload.items()))))])
        return Reply(200, {})
