"""Transition rules on the real CVAT 2.73 deliveries and on pre-2.73 shapes."""

from __future__ import annotations

import json

import pytest

from bridge.events import MAX_DEPTH, MAX_ID, PayloadError, decide, dedupe_key, parse_envelope
from tests.conftest import all_samples, load_sample


def _env(name: str):
    return parse_envelope(load_sample(name)["raw_body"].encode())


@pytest.mark.parametrize("path", all_samples(), ids=lambda p: p.stem)
def test_every_sample_parses(path):
    env, data = parse_envelope(json.loads(path.read_text())["raw_body"].encode())
    assert env.event == data["event"]


def test_job_in_progress_triggers_detect():
    env, _ = _env("10-")
    d = decide(env, kind="job_in_progress", pipeline="detect", params={"model_name": "m"})
    assert d.action == "trigger" and d.trigger.job_id == env.job.id and d.trigger.task_id == env.job.task_id


def test_task_completed_triggers_crop():
    env, _ = _env("14-")
    d = decide(env, kind="task_completed", pipeline="crop_quadrat", params={"target_proj_id": 2})
    assert d.action == "trigger" and d.trigger.resource == "task" and d.trigger.resource_id == env.task.id


@pytest.mark.parametrize("name", ["05-", "06-"])
def test_updated_date_only_is_ignored(name):
    env, _ = _env(name)
    for kind in ("job_in_progress", "task_completed"):
        d = decide(env, kind=kind, pipeline="x", params={})
        assert d.action == "ignore"
    assert "updated_date" in decide(env, kind="job_in_progress" if env.job else "task_completed",
                                    pipeline="x", params={}).reason


@pytest.mark.parametrize("name", ["02-", "03-", "04-", "07-update_task-during-data-processing-data_id",
                                  "11-", "12-", "13-", "15-"])
def test_non_transitions_are_ignored(name):
    env, _ = _env(name)
    assert decide(env, kind="job_in_progress", pipeline="d", params={}).action == "ignore"
    assert decide(env, kind="task_completed", pipeline="c", params={}).action == "ignore"


def test_job_completed_kind():
    env, _ = _env("12-")
    assert decide(env, kind="job_completed", pipeline="sam2_refine", params={}).action == "trigger"


def test_ping():
    env, _ = _env("01-")
    assert decide(env, kind="job_in_progress", pipeline="d", params={}).action == "ping"


def _pre_273(body: dict) -> dict:
    """A CVAT < 2.73 update: no `changes`; `before_update` holds the old serialized values."""
    old = {k: v["from"] for k, v in body["changes"].items()}
    out = {k: v for k, v in body.items() if k != "changes"}
    out["before_update"] = old
    return out


def test_pre_273_job_transition():
    body = load_sample("10-")["body"]
    env, _ = parse_envelope(json.dumps(_pre_273(body)).encode())
    assert env.changes is None
    assert decide(env, kind="job_in_progress", pipeline="d", params={}).action == "trigger"


def test_pre_273_task_completion_and_touch():
    body = load_sample("14-")["body"]
    env, _ = parse_envelope(json.dumps(_pre_273(body)).encode())
    assert decide(env, kind="task_completed", pipeline="c", params={}).action == "trigger"
    touch = {k: v for k, v in body.items() if k != "changes"}
    touch["before_update"] = {"updated_date": "2026-01-01T00:00:00Z"}
    env, _ = parse_envelope(json.dumps(touch).encode())
    assert decide(env, kind="task_completed", pipeline="c", params={}).action == "ignore"
    no_diff = {k: v for k, v in body.items() if k not in ("changes", "before_update")}
    env, _ = parse_envelope(json.dumps(no_diff).encode())
    assert decide(env, kind="task_completed", pipeline="c", params={}).action == "ignore"


def test_sender_shapes():
    body = load_sample("10-")["body"]
    rq = dict(body, sender={"id": 1, "username": "bot", "email": "b@x"})
    env, _ = parse_envelope(json.dumps(rq).encode())
    assert env.sender.username == "bot"
    legacy = dict(body, sender="admin")
    env, _ = parse_envelope(json.dumps(legacy).encode())
    assert env.sender.username == "admin"
    env, _ = _env("04-")  # completed:request has no sender at all
    assert env.sender is None


def test_own_events_are_ignored_only_when_asked():
    body = load_sample("14-")["body"]
    env, _ = parse_envelope(json.dumps(body).encode())
    user = env.sender.username
    assert decide(env, kind="task_completed", pipeline="c", params={}, own_username=user).action == "ignore"
    assert decide(env, kind="task_completed", pipeline="c", params={}, own_username="other").action == "trigger"
    # the bridge moving its own jobs to "in progress" must still trigger the next stage
    env10, _ = _env("10-")
    assert decide(env10, kind="job_in_progress", pipeline="d", params={},
                  own_username=env10.sender.username).action == "trigger"


def test_dedupe_key_is_content_based():
    sample = load_sample("10-")
    env_a, data = parse_envelope(sample["raw_body"].encode())
    reordered = json.dumps(dict(reversed(list(data.items()))))  # manual redelivery reorders keys
    env_b, _ = parse_envelope(reordered.encode())
    assert reordered.encode() != sample["raw_body"].encode()
    assert dedupe_key("d", {"m": 1}, env_a, 5) == dedupe_key("d", {"m": 1}, env_b, 5)
    assert dedupe_key("d", {"m": 1}, env_a, 5) != dedupe_key("d", {"m": 2}, env_a, 5)
    other_hook = dict(data, webhook_id=999)  # the same transition through a second webhook
    env_c, _ = parse_envelope(json.dumps(other_hook).encode())
    assert dedupe_key("d", {}, env_a, 5) == dedupe_key("d", {}, env_c, 5)
    later = json.loads(sample["raw_body"])
    later["job"]["updated_date"] = "2030-01-01T00:00:00Z"  # the same job moved again later
    env_d, _ = parse_envelope(json.dumps(later).encode())
    assert dedupe_key("d", {}, env_a, 5) != dedupe_key("d", {}, env_d, 5)


@pytest.mark.parametrize("raw,fragment", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"no_event": 1}', "event"),
    (b'{"event": "update:job", "job": {"id": "abc"}}', "job.id"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_malformed_payloads(raw, fragment):
    with pytest.raises(PayloadError, match=fragment):
        parse_envelope(raw)


def _nested(depth: int) -> bytes:
    return b'{"event": "update:job", "deep": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 200_000])
def test_deep_nesting_is_a_payload_error_not_a_recursion_error(depth):
    with pytest.raises(PayloadError, match="nested deeper than") as info:
        parse_envelope(_nested(depth))
    assert info.value.status == 400


def test_nesting_up_to_the_limit_is_accepted():
    env, data = parse_envelope(_nested(MAX_DEPTH))
    assert env.event == "update:job" and isinstance(data["deep"], list)


@pytest.mark.parametrize("raw,fragment", [
    (b'{"event": "ping", "x": NaN}', "NaN is not a JSON number"),
    (b'{"event": "ping", "x": -Infinity}', "not a JSON number"),
    (b'{"event": "ping", "x": 1e999}', "out of range"),
    (b'{"event": "ping", "x": ' + b"7" * 5000 + b"}", "not valid JSON"),  # int digit limit: ValueError
    (b'{"event": "ping", "sender": {"username": "\\ud800"}}', "unpaired UTF-16 surrogate"),
    (b'{"event": "ping", "\\udfff": 1}', "unpaired UTF-16 surrogate"),
])
def test_values_that_cannot_be_stored_or_echoed_are_refused(raw, fragment):
    with pytest.raises(PayloadError, match=fragment) as info:
        parse_envelope(raw)
    assert info.value.status == 400


def _job_event(**overrides) -> bytes:
    data = json.loads(load_sample("10-")["raw_body"])
    for path, value in overrides.items():
        node = data
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize("field", ["job__id", "job__task_id", "job__project_id", "webhook_id", "sender__id"])
@pytest.mark.parametrize("value", [0, -1, MAX_ID + 1, 2**63, 10**30])
def test_ids_outside_the_job_store_range_are_refused_with_a_reason(field, value):
    with pytest.raises(PayloadError, match=f"{field.replace('__', '.')}.*1 to {MAX_ID}") as info:
        parse_envelope(_job_event(**{field: value}))
    assert info.value.status == 422


def test_largest_id_is_accepted():
    env, _ = parse_envelope(_job_event(job__id=MAX_ID, job__task_id=MAX_ID, job__project_id=MAX_ID,
                                       webhook_id=MAX_ID, sender__id=MAX_ID))
    d = decide(env, kind="job_in_progress", pipeline="detect", params={})
    assert d.action == "trigger" and d.trigger.job_id == MAX_ID and d.trigger.project_id == MAX_ID
