"""Parsing Nuclio function configs as the dashboard returns them."""

import json
from pathlib import Path

import pytest

from bridge.nuclio.metadata import parse_duration, parse_function_config

REPO = Path(__file__).resolve().parents[2]

LABELS = [{"id": 1, "name": "quadrat_corner", "type": "skeleton", "sublabels": [{"name": "1"}],
           "svg": "<circle/>"}, {"name": "Acropora", "type": "polygon"}]


def config(spec=json.dumps(LABELS), kind="detector", trigger=None, event_timeout="30s"):
    trigger = trigger if trigger is not None else {
        "kind": "http", "maxWorkers": 2, "attributes": {"maxRequestBodySize": 33554432}}
    return {"metadata": {"name": "pth-yolo-gridcorners", "annotations": {"type": kind, "spec": spec}},
            "spec": {"eventTimeout": event_timeout, "triggers": {"myHttpTrigger": trigger}}}


def test_good_config():
    info = parse_function_config(config(), "pth-yolo-gridcorners")
    assert info == {"name": "pth-yolo-gridcorners", "type": "detector", "spec": LABELS, "max_workers": 2,
                    "event_timeout": 30.0, "max_body": 33554432, "problems": []}


def test_wrapped_config_and_num_workers():
    trig = {"kind": "http", "numWorkers": 3}
    info = parse_function_config({"f": config(trigger=trig)}, "f")
    assert info["max_workers"] == 3 and info["max_body"] is None


@pytest.mark.parametrize(("spec", "problem"), [
    ("[{bad json", "not valid JSON"),
    (json.dumps({"name": "x"}), "must be a JSON list"),
    (json.dumps([{"name": "a"}, {"name": "a"}]), "appears twice"),
    (json.dumps([{"name": "k", "type": "skeleton"}]), "needs 'sublabels' and 'svg'"),
    (json.dumps([{"type": "polygon"}]), "has no 'name'"),
    (json.dumps([{"name": "z", "type": "blob"}]), "unknown type 'blob'"),
    (None, "spec is missing"),
])
def test_spec_problems_are_reported_not_raised(spec, problem):
    info = parse_function_config(config(spec=spec), "f")
    assert any(problem in p for p in info["problems"]), info["problems"]


def test_unknown_type_is_a_problem():
    info = parse_function_config(config(kind="segmenter"), "f")
    assert "CVAT lists only" in info["problems"][0]


def test_a_function_only_the_bridge_calls_has_no_problems():
    """The shipped pth-lama: no type and no labels (kept out of the project CVAT lists) is not flagged;
    a missing type beside labels is."""
    import yaml

    lama = yaml.safe_load((REPO / "nuclio_functions" / "lama" / "function.yaml").read_text())
    info = parse_function_config(lama, "pth-lama")
    assert info["type"] is None and info["problems"] == []
    assert "CVAT lists only" in parse_function_config(config(kind=None), "f")["problems"][0]


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), (45, 45.0), ("soon", None), ("", None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds
