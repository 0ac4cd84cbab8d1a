"""``CvatClient``: everything the pipelines ask of CVAT, in plain types (``bridge.cvat.types``).

Sync and thread-safe: each thread lazily gets its own cvat-sdk client (cookies and headers are
per client); ``close()`` closes them all. Reads go through the SDK's generated endpoints with
``_parse_response=False`` and are decoded here (no model (de)serialisation cost, tolerant of
server schema drift); every request carries the client's timeout and every failure is mapped to
``bridge.errors`` by :func:`bridge.cvat.connection.map_errors`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cvat_sdk import Client
from cvat_sdk.core.uploading import DataUploader

from bridge.config import CvatSettings, Settings
from bridge.cvat.connection import check_url, make_sdk_client, map_errors
from bridge.cvat.shapes import (
    shape_from_request_json,
    shape_to_json,
    tag_from_json,
    tag_to_json,
    track_from_json,
    track_to_json,
)
from bridge.cvat.types import (
    Annotations,
    AttributeSpec,
    FrameInfo,
    JobInfo,
    LabelSpec,
    ProjectInfo,
    Shape,
    Tag,
    TaskInfo,
    Track,
)
from bridge.errors import BridgeError, ConfigError, CvatRejected, CvatUnavailable, NotFound, PermanentError

log = logging.getLogger(__name__)

JOB_STATES = ("new", "in progress", "completed", "rejected")
_PAGE_SIZE = 500
_COPY_BUFFER = 1024 * 1024
CHUNK_THREADS = 4  # chunk downloads in flight for the whole client (CVAT serves ~2 at once)
PREFETCH_TTL = 300.0  # seconds a prefetched chunk waits for its ``iter_frames`` before it is dropped


class CvatClient:
    """A CVAT connection shared by the worker threads (one SDK client per thread)."""

    def __init__(
        self,
        url: str,
        *,
        access_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        org: str | None = None,
        timeout: float = 60.0,
        cache_dir: Path | None = None,
        retries: int = 3,
        status_check_period: float = 1.0,
    ) -> None:
        if not access_token and not (username and password):
            raise ConfigError(
                "no CVAT credentials: set CVAT_ACCESS_TOKEN (a personal access token) "
                "or CVAT_USERNAME and CVAT_PASSWORD"
            )
        self.url = check_url(url)
        self.timeout = float(timeout)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._connect: Callable[[], Client] = lambda: make_sdk_client(
            self.url,
            access_token=access_token,
            username=username,
            password=password,
            org=org,
            timeout=timeout,
            cache_dir=self.cache_dir,
            retries=retries,
            status_check_period=status_check_period,
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Client] = []
        self._closed = False
        self._chunks: ThreadPoolExecutor | None = None
        self._prefetched: dict[int, tuple[float, Future[_Prefetch]]] = {}

    @classmethod
    def from_settings(cls, settings: CvatSettings | Settings) -> CvatClient:
        """Build from its part of the settings (``Settings.cvat``)."""
        cfg = settings.cvat if isinstance(settings, Settings) else settings
        return cls(cfg.url, access_token=cfg.access_token, username=cfg.username, password=cfg.password,
                   org=cfg.org, timeout=cfg.timeout, cache_dir=cfg.cache_dir)

    # --- plumbing -------------------------------------------------------------------------------
    def _sdk(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            if self._closed:
                raise RuntimeError("CvatClient is closed")
            client = self._connect()
            with self._lock:
                self._clients.append(client)
            self._local.client = client
        return client

    def _chunk_pool(self) -> ThreadPoolExecutor:
        """Long-lived threads for chunk prefetch (each keeps its SDK client: no login per job)."""
        with self._lock:
            if self._chunks is None:
                self._chunks = ThreadPoolExecutor(max_workers=CHUNK_THREADS, thread_name_prefix="cvat-chunks")
            return self._chunks

    def _json(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one SDK endpoint without model parsing and decode its JSON body."""
        with map_errors(what):
            _, response = call(*args, _parse_response=False, **kwargs)
            try:
                raw = response.data
            finally:
                response.release_conn()
        return _decode(what, raw)

    def _send(self, what: str, endpoint: Any, path_params: dict[str, Any], body: Any,
              query: list[tuple[str, Any]] | None = None) -> Any:
        """Send a JSON body to one SDK endpoint (its path, method and auth) without building models.

        Plain dicts skip the generated models' per-field validation, which costs ~0.2 ms per shape
        and cannot be bypassed through the generated methods.
        """
        settings = endpoint.settings
        with map_errors(what):
            _, response = self._sdk().api_client.call_api(
                settings["endpoint_path"], settings["http_method"], path_params, query or [],
                {"Content-Type": "application/json", "Accept": "application/vnd.cvat+json, application/json"},
                body=body, auth_settings=settings["auth"], _parse_response=False,
            )
            try:
                raw = response.data
            finally:
                response.release_conn()
        return _decode(what, raw)

    def _pages(self, what: str, call: Callable[..., Any], **filters: Any) -> list[dict]:
        results: list[dict] = []
        page = 1
        while True:
            data = self._json(what, call, page=page, page_size=_PAGE_SIZE, **filters)
            if isinstance(data, list):  # an unpaginated answer
                return results + data
            results.extend(data.get("results") or [])
            if not data.get("next"):
                return results
            page += 1

    def close(self) -> None:
        """Close every per-thread SDK client (they are not reopened)."""
        with self._lock:
            clients, self._clients = self._clients, []
            self._closed = True
            pool, self._chunks = self._chunks, None
            prefetched, self._prefetched = self._prefetched, {}
        for _, fut in prefetched.values():
            _drop_prefetch(fut)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        for client in clients:
            try:
                client.close()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the others
                log.warning("closing a CVAT client failed: %s", exc)

    def __enter__(self) -> CvatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- server and identity ----------------------------------------------------------------------
    def check(self) -> dict:
        """``{"server_version", "username"}``; raises with an actionable message on failure."""
        api = self._sdk().api_client
        about = self._json(f"reading CVAT's version at {self.url}", api.server_api.retrieve_about)
        me = self._json(f"checking the CVAT credentials at {self.url}", api.users_api.retrieve_self)
        return {"server_version": str((about or {}).get("version", "")), "username": me["username"]}

    def username(self) -> str:
        api = self._sdk().api_client
        return str(self._json("reading the CVAT user", api.users_api.retrieve_self)["username"])

    # --- projects, tasks, jobs --------------------------------------------------------------------
    def get_project(self, project_id: int) -> ProjectInfo:
        data = self._json(f"reading project {project_id}", self._sdk().api_client.projects_api.retrieve,
                          project_id)
        return ProjectInfo(id=int(data["id"]), name=str(data["name"]))

    def get_job(self, job_id: int) -> JobInfo:
        data = self._json(f"reading job {job_id}", self._sdk().api_client.jobs_api.retrieve, job_id)
        return _job_info(data)

    def get_task(self, task_id: int) -> TaskInfo:
        api = self._sdk().api_client
        data = self._json(f"reading task {task_id}", api.tasks_api.retrieve, task_id)
        return self._task_info(data)

    def _task_info(self, data: dict) -> TaskInfo:
        task_id = int(data["id"])
        jobs = self._pages(f"listing the jobs of task {task_id}", self._sdk().api_client.jobs_api.list,
                           task_id=task_id)
        return TaskInfo(
            id=task_id,
            name=str(data["name"]),
            project_id=data.get("project_id"),
            size=int(data.get("size") or 0),
            subset=str(data.get("subset") or ""),
            segment_size=int(data.get("segment_size") or 0),
            status=str(data.get("status") or ""),
            job_ids=sorted(int(j["id"]) for j in jobs),
        )

    def list_task_ids(self, project_id: int) -> list[int]:
        """Ids of every task of ``project_id``, ascending."""
        api = self._sdk().api_client
        rows = self._pages(f"listing the tasks of project {project_id}", api.tasks_api.list, project_id=project_id)
        return sorted(int(t["id"]) for t in rows if t.get("project_id") in (None, project_id))

    def find_task(self, project_id: int, name: str) -> TaskInfo | None:
        """The task of ``project_id`` named exactly ``name`` (lowest id if several), or None."""
        found = self.find_tasks(project_id, name)
        return found[0] if found else None

    def find_tasks(self, project_id: int, name: str) -> list[TaskInfo]:
        """Every task of ``project_id`` named exactly ``name``, lowest id first."""
        api = self._sdk().api_client
        found = [
            t for t in self._pages(f"searching task {name!r} in project {project_id}", api.tasks_api.list,
                                   project_id=project_id, name=name)
            if t.get("name") == name and t.get("project_id") in (None, project_id)
        ]
        return [self._task_info(t) for t in sorted(found, key=lambda t: int(t["id"]))]

    def create_task(
        self,
        project_id: int,
        name: str,
        files: Sequence[Path],
        *,
        subset: str = "",
        segment_size: int | None = None,
        image_quality: int = 95,
        wait_timeout: float = 900.0,
        poll_seconds: float = 1.0,
        on_created: Callable[[int], None] | None = None,
    ) -> TaskInfo:
        """Create a task in ``project_id`` from local images, in the given order, and wait for it.

        Frame names are the file basenames (``sorting_method="predefined"``), so they must be
        unique. Returns the task with its job ids once CVAT has processed the data (polled every
        ``poll_seconds`` for at most ``wait_timeout``). If the upload or the processing fails, the
        new task is deleted again (best effort) so that ``find_task`` does not return a broken one.
        ``on_created(task_id)`` runs as soon as CVAT has created the (still empty) task, so a caller can
        record it before the upload: a process killed during the upload leaves a task it can recognise.
        """
        paths = [Path(f) for f in files]
        if not paths:
            raise PermanentError(f"task {name!r}: no files to upload")
        seen: set[str] = set()
        for path in paths:  # messages name the files, never the server's directories
            if path.name in seen:
                raise PermanentError(
                    f"task {name!r}: file names must be unique (they become frame names): {path.name!r} twice"
                )
            seen.add(path.name)
            if not path.is_file():
                raise PermanentError(f"task {name!r}: {path.name!r} is not a file")
        if not 1 <= image_quality <= 100:
            raise ValueError(f"image_quality must be within 1..100, got {image_quality}")
        if segment_size is not None and segment_size < 1:
            raise ValueError(f"segment_size must be positive, got {segment_size}")
        spec: dict[str, Any] = {"name": name, "project_id": project_id}
        if subset:
            spec["subset"] = subset
        if segment_size:
            spec["segment_size"] = segment_size
        what = f"creating task {name!r} in project {project_id}"
        sdk = self._sdk()
        created = self._send(what, sdk.api_client.tasks_api.create_endpoint, {}, spec)
        task_id = int(created["id"])
        try:
            if on_created is not None:
                on_created(task_id)
            with map_errors(f"uploading {len(paths)} files to task {task_id}"):
                url = sdk.api_map.make_endpoint_url(
                    sdk.api_client.tasks_api.create_data_endpoint.path, kwsub={"id": task_id}
                )
                response = DataUploader(sdk).upload_files(
                    url, paths, image_quality=image_quality, sorting_method="predefined"
                )
            rq_id = (_decode(what, response.data) or {}).get("rq_id")
            if not rq_id:
                raise CvatRejected(f"{what}: CVAT did not return a request id for the data upload")
            self._wait_request(rq_id, what, wait_timeout, poll_seconds)
        except BaseException:
            self._delete_task_quietly(task_id)
            raise
        return self.get_task(task_id)

    def _wait_request(self, rq_id: str, what: str, wait_timeout: float, poll_seconds: float) -> None:
        """Poll ``/api/requests/{rq_id}`` until finished; failed → CvatRejected, too slow → CvatUnavailable."""
        api = self._sdk().api_client
        deadline = time.monotonic() + wait_timeout
        while True:
            request = self._json(f"{what} (waiting for {rq_id})", api.requests_api.retrieve, rq_id) or {}
            status = str(request.get("status", ""))
            if status == "finished":
                return
            if status == "failed":
                message = " ".join(str(request.get("message") or "no message").split())[:500]
                raise CvatRejected(f"{what}: CVAT failed to process the data: {message}")
            if time.monotonic() >= deadline:
                raise CvatUnavailable(f"{what}: CVAT did not finish processing within {wait_timeout:g} s "
                                      f"(request {rq_id} is {status or 'unknown'})")
            time.sleep(min(poll_seconds, max(deadline - time.monotonic(), 0.0)))

    def delete_task(self, task_id: int) -> None:
        """Delete a task (a missing one is not an error)."""
        try:
            self._json(f"deleting task {task_id}", self._sdk().api_client.tasks_api.destroy, task_id)
        except NotFound:
            log.info("task %s is already gone", task_id)

    def _delete_task_quietly(self, task_id: int) -> None:
        """Remove a half-created task so that a retry does not find it by name."""
        try:
            self._json(f"deleting the unfinished task {task_id}",
                       self._sdk().api_client.tasks_api.destroy, task_id)
        except BridgeError as exc:
            log.warning("could not delete the unfinished task %s: %s", task_id, exc)

    def set_job_state(self, job_id: int, state: str) -> None:
        if state not in JOB_STATES:
            raise ValueError(f"job state must be one of {JOB_STATES}, got {state!r}")
        self._send(f"setting job {job_id} to {state!r}",
                   self._sdk().api_client.jobs_api.partial_update_endpoint, {"id": job_id}, {"state": state})

    def create_issue(self, job_id: int, frame: int, message: str, position: list[float] | None = None) -> int:
        """Open an issue on ``frame`` (task-relative) of ``job_id``; the whole frame by default."""
        if not message.strip():
            raise ValueError("an issue needs a message")
        if position is None:
            info = {f.frame: f for f in self.job_frames(job_id)}.get(frame)
            if info is None:
                raise NotFound(f"frame {frame} is not a frame of job {job_id}")
            position = [0.0, 0.0, float(info.width), float(info.height)]
        if len(position) < 2 or len(position) % 2:
            raise ValueError(f"issue position must be an even list of coordinates, got {position}")
        body = {"job": job_id, "frame": frame, "position": [float(v) for v in position], "message": message}
        data = self._send(f"creating an issue on job {job_id} frame {frame}",
                          self._sdk().api_client.issues_api.create_endpoint, {}, body)
        return int(data["id"])

    # --- labels -------------------------------------------------------------------------------------
    def get_labels(
        self, *, project_id: int | None = None, task_id: int | None = None, job_id: int | None = None
    ) -> list[LabelSpec]:
        """Top-level labels of exactly one of project/task/job, with skeleton sublabels nested."""
        given = {k: v for k, v in (("project_id", project_id), ("task_id", task_id), ("job_id", job_id))
                 if v is not None}
        if len(given) != 1:
            raise ValueError("get_labels needs exactly one of project_id, task_id, job_id")
        (key, value), = given.items()
        raw = self._pages(f"reading the labels of {key.removesuffix('_id')} {value}",
                          self._sdk().api_client.labels_api.list, **given)
        return [_label_spec(d) for d in raw if not d.get("parent_id") and not d.get("has_parent")]

    # --- frames ---------------------------------------------------------------------------------------
    def job_frames(self, job_id: int) -> list[FrameInfo]:
        """Frames of the job's segment (task-relative numbers), deleted frames skipped. One request: the
        job's data meta says its first and last frame (the job is read only when it does not)."""
        meta = self._json(f"reading the frame list of job {job_id}",
                          self._sdk().api_client.jobs_api.retrieve_data_meta, job_id)
        numbers = meta.get("included_frames")
        if not numbers:
            start, stop = meta.get("start_frame"), meta.get("stop_frame")
            if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop):
                job = self.get_job(job_id)
                start, stop = job.start_frame, job.stop_frame
            numbers = range(start, stop + 1)
        return _frames(meta, [int(n) for n in numbers], f"job {job_id}")

    def task_frames(self, task_id: int) -> list[FrameInfo]:
        meta = self._json(f"reading the frame list of task {task_id}",
                          self._sdk().api_client.tasks_api.retrieve_data_meta, task_id)
        size = int(meta.get("size") or len(meta.get("frames") or []))
        return _frames(meta, list(range(size)), f"task {task_id}")

    def prefetch_frames(self, task_id: int, frame: int, *, chunk_size: int | None = None) -> None:
        """Start reading the original chunk that holds ``frame`` now, in the background (CVAT builds a chunk
        on its first read, ~1 s): the next ``iter_frames`` of ``task_id`` whose first chunk it is takes it
        instead of asking again. One prefetch per task; an untaken one is dropped after ``PREFETCH_TTL`` s.
        ``chunk_size`` (what the webhook said) starts the chunk's read before the task's layout is read
        (which then checks it). Errors surface (again) in ``iter_frames``, which then reads the usual way."""
        pool = self._chunk_pool()
        now = time.monotonic()
        with self._lock:
            for key, (since, fut) in list(self._prefetched.items()):
                if now - since > PREFETCH_TTL:
                    del self._prefetched[key]
                    _drop_prefetch(fut)
            if task_id not in self._prefetched:
                fut = (self._prefetch_hinted(pool, task_id, int(frame), chunk_size) if chunk_size
                       else pool.submit(self._prefetch, task_id, int(frame)))
                self._prefetched[task_id] = (now, fut)

    def _prefetch(self, task_id: int, frame: int) -> _Prefetch:
        size, chunk_size = self._check_frame(task_id, frame)
        chunk = frame // chunk_size
        return _Prefetch(size, chunk_size, chunk, self._download_chunk(task_id, chunk))

    def _check_frame(self, task_id: int, frame: int) -> tuple[int, int]:
        size, chunk_size = self._task_layout(task_id)
        if not 0 <= frame < size:
            raise ValueError(f"frame {frame} is outside task {task_id} (0..{size - 1})")
        return size, chunk_size

    def _prefetch_hinted(self, pool: ThreadPoolExecutor, task_id: int, frame: int, hint: int) -> Future[_Prefetch]:
        """The chunk the hint points to and the task's layout, read at the same time; the layout checks
        the hint (a wrong one: the right chunk is read then)."""
        out: Future[_Prefetch] = Future()
        download = pool.submit(self._download_chunk, task_id, frame // hint)
        layout = pool.submit(self._check_frame, task_id, frame)
        waiting = [2]
        lock = threading.Lock()

        def finish(_: Future[Any]) -> None:
            with lock:
                waiting[0] -= 1
                if waiting[0]:
                    return
            if not out.set_running_or_notify_cancel():  # dropped meanwhile
                _close_download(download)
                return
            try:
                size, chunk_size = layout.result()
                chunk = frame // chunk_size
                if chunk_size != hint:
                    log.info("task %s: chunks of %d frames, not %d as announced; reading chunk %d", task_id,
                             chunk_size, hint, chunk)
                    _close_download(download)
                    file = self._download_chunk(task_id, chunk)
                else:
                    file = download.result()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the prefetch
                _close_download(download)
                out.set_exception(exc)
            else:
                out.set_result(_Prefetch(size, chunk_size, chunk, file))

        download.add_done_callback(finish)
        layout.add_done_callback(finish)
        return out

    def _take_prefetch(self, task_id: int) -> _Prefetch | None:
        with self._lock:
            entry = self._prefetched.pop(task_id, None)
        if entry is None:
            return None
        try:
            return entry[1].result()
        except Exception as exc:  # noqa: BLE001 - read again the usual way; a real problem raises there
            log.info("prefetch of task %s failed (%s); reading it again", task_id, exc)
            return None

    def _task_layout(self, task_id: int) -> tuple[int, int]:
        """``(size, chunk size)`` of an image task whose data is ready; PermanentError otherwise."""
        api = self._sdk().api_client
        task = self._json(f"reading task {task_id}", api.tasks_api.retrieve, task_id)
        size = int(task.get("size") or 0)
        chunk_size = int(task.get("data_chunk_size") or 0)
        if size and not chunk_size:
            meta = self._json(f"reading task {task_id} meta", api.tasks_api.retrieve_data_meta, task_id)
            chunk_size = int((meta or {}).get("chunk_size") or 0)
        if not size or not chunk_size:
            raise PermanentError(f"task {task_id} has no data yet (size {size}, chunk size {chunk_size})")
        if task.get("data_original_chunk_type", "imageset") != "imageset":
            raise PermanentError(
                f"task {task_id} stores video chunks; only image tasks can be read frame by frame "
                "from original chunks"
            )
        return size, chunk_size

    def iter_frames(self, task_id: int, frames: Sequence[int], *, prefetch: int = 2) -> Iterator[tuple[int, bytes]]:
        """Yield ``(frame, original encoded bytes)`` in ascending frame order (duplicates once).

        Each needed original-quality chunk (a zip of the uploaded files) is downloaded once, to a
        temporary file, and its members are read one at a time, so memory holds one frame. The first
        chunk is requested alone (CVAT builds two chunks at a time: asked together, the first could wait
        behind the next ones); once it is in, up to ``prefetch`` following chunks download in the
        background while its frames are used (CVAT builds a chunk on its first read, ~1 s; without this
        the consumers would idle through every build). A chunk started by ``prefetch_frames`` is used.
        """
        wanted = sorted({int(f) for f in frames})
        if not wanted:
            return
        early = self._take_prefetch(task_id)
        size, chunk_size = (early.size, early.chunk_size) if early is not None else self._task_layout(task_id)
        bad = [f for f in wanted if not 0 <= f < size]
        if bad:
            if early is not None:
                early.file.close()
            raise ValueError(f"frames {bad[:10]} are outside task {task_id} (0..{size - 1})")

        runs: list[tuple[int, list[int]]] = []
        for frame in wanted:
            chunk = frame // chunk_size
            if runs and runs[-1][0] == chunk:
                runs[-1][1].append(frame)
            else:
                runs.append((chunk, [frame]))
        ahead = max(0, int(prefetch))
        pool = self._chunk_pool()
        pending: deque[Future[IO[bytes]]] = deque()
        if early is not None:
            if early.chunk == runs[0][0]:
                pending.append(_done(early.file))
            else:
                early.file.close()
        try:
            for i, (chunk, run) in enumerate(runs):
                if not pending:  # the first chunk: asked for alone
                    pending.append(pool.submit(self._download_chunk, task_id, chunk))
                tmp = pending.popleft().result()
                with tmp:
                    # in: now keep up to ``ahead`` next chunks downloading while this one is read
                    while len(pending) < min(ahead, len(runs) - i - 1):
                        pending.append(pool.submit(self._download_chunk, task_id, runs[i + 1 + len(pending)][0]))
                    yield from self._read_chunk(tmp, task_id, chunk, chunk_size, run)
        finally:
            for fut in pending:
                if not fut.cancel():
                    fut.add_done_callback(_close_download)

    def warm_chunk(self, task_id: int, chunk: int) -> None:
        """Make CVAT build original chunk ``chunk`` of ``task_id`` (it answers once the chunk is built);
        the body is not read: the connection is dropped instead of transferring the chunk."""
        what = f"warming original chunk {chunk} of task {task_id}"
        with map_errors(what):
            _, response = self._sdk().api_client.tasks_api.retrieve_data(
                task_id, type="chunk", number=chunk, quality="original", _parse_response=False
            )
            response.close()  # unread body: this connection cannot be reused, the pool opens another
            response.release_conn()

    def _download_chunk(self, task_id: int, chunk: int) -> IO[bytes]:
        """The original chunk ``chunk`` of ``task_id`` in a temporary file (deleted when closed)."""
        what = f"downloading original chunk {chunk} of task {task_id}"
        api = self._sdk().api_client
        tmp = tempfile.TemporaryFile(dir=self._tmp_dir(), prefix=f"chunk-{task_id}-{chunk}-")
        try:
            with map_errors(what):
                _, response = api.tasks_api.retrieve_data(
                    task_id, type="chunk", number=chunk, quality="original", _parse_response=False
                )
                try:
                    shutil.copyfileobj(response, tmp, _COPY_BUFFER)
                finally:
                    response.release_conn()
        except BaseException:
            tmp.close()
            raise
        tmp.seek(0)
        return tmp

    @staticmethod
    def _read_chunk(
        tmp: IO[bytes], task_id: int, chunk: int, chunk_size: int, run: list[int]
    ) -> Iterator[tuple[int, bytes]]:
        what = f"reading original chunk {chunk} of task {task_id}"
        try:
            archive = zipfile.ZipFile(tmp)
        except zipfile.BadZipFile as exc:
            raise CvatRejected(f"{what}: the chunk is not a zip archive") from exc
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            for frame in run:
                position = frame - chunk * chunk_size
                if position >= len(members):
                    raise CvatRejected(f"{what}: frame {frame} missing (the chunk holds {len(members)} files)")
                yield frame, archive.read(members[position])

    def _tmp_dir(self) -> str | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / "chunks"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    # --- annotations -------------------------------------------------------------------------------
    def get_annotations(self, *, job_id: int | None = None, task_id: int | None = None) -> Annotations:
        """Shapes and tags of a job or a task (tracks are not read)."""
        raw = self._raw_annotations(job_id=job_id, task_id=task_id)
        return Annotations(
            shapes=[shape_from_request_json(s) for s in raw.get("shapes") or []],
            tags=[tag_from_json(t) for t in raw.get("tags") or []],
        )

    def _raw_annotations(self, *, job_id: int | None, task_id: int | None) -> dict:
        if (job_id is None) == (task_id is None):
            raise ValueError("give exactly one of job_id, task_id")
        api = self._sdk().api_client
        if job_id is not None:
            return self._json(f"reading the annotations of job {job_id}",
                              api.jobs_api.retrieve_annotations, job_id) or {}
        return self._json(f"reading the annotations of task {task_id}",
                          api.tasks_api.retrieve_annotations, task_id) or {}

    def create_shapes(
        self, job_id: int, shapes: list[Shape], tags: Sequence[Tag] = (), *, batch_size: int = 1000
    ) -> list[int]:
        """Add shapes then tags to ``job_id`` with ``PATCH ?action=create`` in batches.

        A batch holds at most ``batch_size`` objects, counting skeleton elements (a single
        larger shape still goes alone). Returns the new ids, shapes first, then tags.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for shape in shapes:
            if shape.id is not None:
                raise ValueError(f"shape {shape.id} already has an id; action=create needs new shapes")
        api = self._sdk().api_client
        shape_ids: list[int] = []
        tag_ids: list[int] = []
        for kind, batch in _batches(shapes, list(tags), batch_size):
            body = {"shapes": [], "tags": [], "tracks": []}
            body[kind] = [shape_to_json(o) if kind == "shapes" else tag_to_json(o) for o in batch]
            data = self._send(
                f"writing {len(batch)} {kind} to job {job_id}",
                api.jobs_api.partial_update_annotations_endpoint, {"id": job_id}, body,
                query=[("action", "create")],
            ) or {}
            created = data.get(kind) or []
            if len(created) != len(batch):
                raise CvatRejected(
                    f"writing {kind} to job {job_id}: CVAT echoed {len(created)} of {len(batch)} objects"
                )
            (shape_ids if kind == "shapes" else tag_ids).extend(int(o["id"]) for o in created)
        return shape_ids + tag_ids

    def get_tracks(self, job_id: int) -> list[Track]:
        """The tracks of ``job_id``."""
        raw = self._raw_annotations(job_id=job_id, task_id=None)
        return [track_from_json(t) for t in raw.get("tracks") or []]

    def create_tracks(self, job_id: int, tracks: Sequence[Track], *, batch_size: int = 1000) -> list[int]:
        """Add tracks to ``job_id`` (``PATCH ?action=create``), at most ``batch_size`` keyframes a request."""
        api = self._sdk().api_client
        ids: list[int] = []
        batch: list[Track] = []
        weight = 0

        def send(items: list[Track]) -> None:
            data = self._send(f"writing {len(items)} tracks to job {job_id}",
                              api.jobs_api.partial_update_annotations_endpoint, {"id": job_id},
                              {"shapes": [], "tags": [], "tracks": [track_to_json(t) for t in items]},
                              query=[("action", "create")]) or {}
            created = data.get("tracks") or []
            if len(created) != len(items):
                raise CvatRejected(f"writing tracks to job {job_id}: CVAT echoed {len(created)} of {len(items)}")
            ids.extend(int(t["id"]) for t in created)

        for track in tracks:
            cost = max(1, len(track.shapes))
            if batch and weight + cost > batch_size:
                send(batch)
                batch, weight = [], 0
            batch.append(track)
            weight += cost
        if batch:
            send(batch)
        return ids

    def delete_tracks(self, job_id: int, track_ids: Sequence[int]) -> None:
        """Delete exactly these tracks of ``job_id``; ids already gone are skipped."""
        wanted = {int(i) for i in track_ids}
        if not wanted:
            return
        raw = self._raw_annotations(job_id=job_id, task_id=None)
        doomed = [t for t in raw.get("tracks") or [] if t.get("id") in wanted]
        if doomed:
            self._send(f"deleting {len(doomed)} tracks of job {job_id}",
                       self._sdk().api_client.jobs_api.partial_update_annotations_endpoint, {"id": job_id},
                       {"shapes": [], "tags": [], "tracks": doomed}, query=[("action", "delete")])

    def delete_shapes(self, job_id: int, shape_ids: Sequence[int]) -> None:
        """Delete exactly these shapes of ``job_id`` (``PATCH ?action=delete``); unknown ids are logged."""
        wanted = {int(i) for i in shape_ids}
        if not wanted:
            return
        raw = self._raw_annotations(job_id=job_id, task_id=None)
        doomed = [s for s in raw.get("shapes") or [] if s.get("id") in wanted]
        missing = wanted - {s["id"] for s in doomed}
        if missing:
            log.warning("job %s: shapes %s are already gone; not deleting them", job_id, sorted(missing))
        if not doomed:
            return
        self._send(f"deleting {len(doomed)} shapes of job {job_id}",
                   self._sdk().api_client.jobs_api.partial_update_annotations_endpoint, {"id": job_id},
                   {"shapes": doomed, "tags": [], "tracks": []}, query=[("action", "delete")])


# --- decoding CVAT JSON into plain types ------------------------------------------------------------
def _decode(what: str, raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise CvatRejected(f"{what}: CVAT answered something that is not JSON: {raw[:200]!r}") from exc


def _job_info(data: dict) -> JobInfo:
    return JobInfo(
        id=int(data["id"]),
        task_id=int(data["task_id"]),
        project_id=data.get("project_id"),
        start_frame=int(data["start_frame"]),
        stop_frame=int(data["stop_frame"]),
        frame_count=int(data.get("frame_count") or (int(data["stop_frame"]) - int(data["start_frame"]) + 1)),
        type=str(data.get("type") or "annotation"),
        state=str(data.get("state") or ""),
        stage=str(data.get("stage") or ""),
        status=str(data.get("status") or ""),
    )


def _attribute_spec(d: dict) -> AttributeSpec:
    return AttributeSpec(
        id=int(d["id"]),
        name=str(d["name"]),
        input_type=str(d.get("input_type") or "text"),
        values=[str(v) for v in d.get("values") or []],
        default_value=str(d.get("default_value") or ""),
        mutable=bool(d.get("mutable", False)),
    )


def _label_spec(d: dict) -> LabelSpec:
    return LabelSpec(
        id=int(d["id"]),
        name=str(d["name"]),
        type=str(d.get("type") or "any"),
        attributes={a["name"]: _attribute_spec(a) for a in d.get("attributes") or []},
        sublabels={s["name"]: _label_spec(s) for s in d.get("sublabels") or []},
    )


def _frames(meta: dict, numbers: list[int], what: str) -> list[FrameInfo]:
    """Pair frame numbers with ``meta["frames"]``.

    ``meta["frames"]`` lists either one entry per number (job or task meta), the whole task
    (indexed by frame number), or a single entry (video: every frame has the same size).
    Deleted frames keep their entry but are skipped.
    """
    entries = meta.get("frames") or []
    deleted = {int(f) for f in meta.get("deleted_frames") or []}
    if not entries:
        raise CvatRejected(f"{what}: CVAT returned no frame metadata (does the task have data?)")
    result = []
    for position, n in enumerate(numbers):
        if n in deleted:
            continue
        if len(entries) == len(numbers):
            entry = entries[position]
        elif len(entries) == 1:
            entry = entries[0]
        elif 0 <= n < len(entries):
            entry = entries[n]
        else:
            raise CvatRejected(f"{what}: frame metadata has {len(entries)} entries for {len(numbers)} frames")
        result.append(FrameInfo(frame=n, name=str(entry.get("name", "")), width=int(entry["width"]),
                                height=int(entry["height"])))
    return result


def _batches(shapes: list[Shape], tags: list[Tag], batch_size: int) -> Iterator[tuple[str, list]]:
    batch: list[Shape] = []
    weight = 0
    for shape in shapes:
        cost = 1 + len(shape.elements)
        if batch and weight + cost > batch_size:
            yield "shapes", batch
            batch, weight = [], 0
        batch.append(shape)
        weight += cost
    if batch:
        yield "shapes", batch
    for start in range(0, len(tags), batch_size):
        yield "tags", tags[start : start + batch_size]


def _close_download(fut: Future[IO[bytes]]) -> None:
    """Delete the temp file of a prefetched chunk nobody will read (the generator was closed)."""
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


@dataclass(frozen=True)
class _Prefetch:
    """A chunk read ahead by ``prefetch_frames``, with the task layout read for it."""

    size: int
    chunk_size: int
    chunk: int
    file: IO[bytes]


def _drop_prefetch(fut: Future[_Prefetch]) -> None:
    """Delete the chunk of a prefetch nobody took (now, or when its download ends)."""
    def close(done: Future[_Prefetch]) -> None:
        if not done.cancelled() and done.exception() is None:
            done.result().file.close()

    if not fut.cancel():
        fut.add_done_callback(close)


def _done(value: IO[bytes]) -> Future[IO[bytes]]:
    fut: Future[IO[bytes]] = Future()
    fut.set_result(value)
    return fut

