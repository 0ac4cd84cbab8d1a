"""Target URL checks (Django URLValidator rules), layouts, ping explanations and the init.d hook."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.setup.apply import hook_url, secret_fingerprint, validate_urls
from bridge.setup.check import explain_ping
from bridge.setup.cli import add_arguments, build_layout
from bridge.setup.presets import (
    CROP_ROUTE,
    DETECT_ROUTE,
    REMOVE_GRID_ROUTE,
    builtin_layout,
    layout_from_dict,
    load_layout_file,
)
from bridge.setup.urls import build_target_url, check_target_url, loopback_warning

HOOK_SCRIPT = Path(__file__).resolve().parents[2] / "bridge" / "cvat-init.d" / "allow-bridge.sh"


@pytest.mark.parametrize(
    "url",
    [
        "http://cvat-bridge.internal:8000/detect-model-webhook?model_name=pth-yolo-gridcorners",
        "http://bridge.gateway:8000/health",
        "http://host.docker.internal:8000/x",
        "http://localhost:8000/x",
        "http://127.0.0.1:9/x",
        "http://[::1]:8000/x",
        "https://bridge.example.org/hook",
        "http://xn--bcher-kva.example/x",
    ],
)
def test_urls_cvat_accepts(url: str) -> None:
    assert check_target_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://bridge:8000/hook", "single-label"),
        ("http://webhook-bridge:8000/hook", "single-label"),
        ("http://cvat_bridge.internal:8000/x", "underscores"),
        ("http://cvat_server:8080/x", "underscores"),
        ("ftp://bridge.internal/x", "http:// or https://"),
        ("cvat-bridge.internal:8000/x", "http:// or https://"),
        ("http://bridge.l0cal:8000/x", "URLValidator"),
        ("http://-bridge.internal/x", "URLValidator"),
        ("http://bridge.internal/a b", "URLValidator"),
        ("http://bridge.internal:99999/x", "invalid port"),
    ],
)
def test_urls_cvat_rejects(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        check_target_url(url)


def test_build_target_url_keeps_query_order_and_booleans() -> None:
    url = build_target_url(
        "http://cvat-bridge.internal:8000/",
        "detect-model-webhook",
        {"model_name": "m", "conv_mask_to_poly": True},
    )
    assert url == "http://cvat-bridge.internal:8000/detect-model-webhook?model_name=m&conv_mask_to_poly=true"
    assert loopback_warning("http://127.0.0.1:8000/x") and loopback_warning("http://localhost/x")
    assert loopback_warning(url) is None


def _hooks(layout) -> list[tuple[str, str, dict, tuple, str | None]]:
    return [(p.key, h.route, h.query_dict(), h.events, h.target) for p in layout.projects for h in p.webhooks]


def test_three_stage_layout_matches_the_reference_table() -> None:
    layout = builtin_layout("3-stage", prefix="criobe_")
    assert [p.name for p in layout.projects] == [
        "criobe_corner_detection",
        "criobe_grid_detection",
        "criobe_coral_segmentation",
    ]
    job, task = ("update:job",), ("update:task", "update:job")
    assert _hooks(layout) == [
        ("corner", DETECT_ROUTE, {"model_name": "pth-yolo-gridcorners"}, job, None),
        ("corner", CROP_ROUTE, {}, task, "grid"),
        ("grid", DETECT_ROUTE, {"model_name": "pth-yolo-gridpose"}, job, None),
        ("grid", REMOVE_GRID_ROUTE, {}, task, "coral"),
        ("coral", DETECT_ROUTE, {"model_name": "pth-yolo-coralsegv4", "conv_mask_to_poly": True}, job, None),
    ]
    ids = {"corner": 1, "grid": 2, "coral": 3}
    urls = [hook_url("http://cvat-bridge.internal:8000", h, ids) for p in layout.projects for h in p.webhooks]
    assert (
        urls[1]
        == "http://cvat-bridge.internal:8000/crop-quadrat-and-create-new-task-webhook?target_proj_id=2"
    )
    assert urls[3].endswith("/remove-grid-and-create-new-task-webhook?target_proj_id=3")
    assert urls[4].endswith("/detect-model-webhook?model_name=pth-yolo-coralsegv4&conv_mask_to_poly=true")


def test_two_and_one_stage_layouts() -> None:
    two = builtin_layout("2-stage")
    assert [p.key for p in two.projects] == ["corner", "coral"]
    assert len(_hooks(two)) == 3 and _hooks(two)[1][4] == "coral"
    one = builtin_layout("1-stage")
    assert [(p.key, len(p.webhooks)) for p in one.projects] == [("coral", 1)]
    with pytest.raises(ConfigError, match="unknown layout"):
        builtin_layout("4-stage")


def test_custom_layout_file_with_relative_labels(tmp_path: Path) -> None:
    (tmp_path / "mine.json").write_text(json.dumps([{"name": "Coral", "type": "mask"}]))
    layout_file = tmp_path / "layout.json"
    layout_file.write_text(
        json.dumps(
            {
                "projects": [
                    {
                        "key": "raw",
                        "name": "raw_quadrats",
                        "labels": "quadrat_corner",
                        "webhooks": [{"route": "/crop-quadrat-and-create-new-task-webhook", "target": "seg"}],
                    },
                    {
                        "key": "seg",
                        "name": "sam_refined",
                        "labels": "mine.json",
                        "webhooks": [
                            {
                                "route": "/sam2-refine-webhook",
                                "query": {"function": "pth-sam2", "labels": "Coral"},
                            }
                        ],
                    },
                ]
            }
        )
    )
    layout = load_layout_file(layout_file, prefix="x_")
    assert [p.name for p in layout.projects] == ["x_raw_quadrats", "x_sam_refined"]
    assert layout.project("seg").labels == [{"name": "Coral", "type": "mask", "attributes": []}]
    assert layout.project("seg").webhooks[0].events == ("update:job",)
    assert layout.project("raw").webhooks[0].events == ("update:task", "update:job")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "projects"),
        ({"projects": [{"key": "a", "labels": "grid"}]}, "needs a 'name'"),
        ({"projects": [{"name": "a", "labels": 5}]}, "'labels' must be"),
        ({"projects": [{"name": "a", "labels": "grid", "webhooks": [{"route": "/x"}]}]}, "unknown route"),
        (
            {"projects": [{"name": "a", "labels": "grid", "webhooks": [{"route": DETECT_ROUTE}]}]},
            "model_name",
        ),
        (
            {"projects": [{"name": "a", "labels": "grid", "webhooks": [{"route": CROP_ROUTE}]}]},
            "needs 'target'",
        ),
        (
            {
                "projects": [
                    {
                        "key": "a",
                        "name": "a",
                        "labels": "grid",
                        "webhooks": [{"route": CROP_ROUTE, "target": "a"}],
                    }
                ]
            },
            "cannot target itself",
        ),
        (
            {
                "projects": [
                    {"name": "a", "labels": "grid", "webhooks": [{"route": CROP_ROUTE, "target": "zz"}]}
                ]
            },
            "not a project of this layout",
        ),
        (
            {
                "projects": [
                    {
                        "name": "a",
                        "labels": "grid",
                        "webhooks": [{"route": "/x", "events": ["create:membership"]}],
                    }
                ]
            },
            "cannot subscribe to create:membership",
        ),
        (
            {
                "projects": [
                    {
                        "name": "a",
                        "labels": "grid",
                        "webhooks": [
                            {"route": DETECT_ROUTE, "query": {"model_name": "m1"}},
                            {"route": DETECT_ROUTE, "query": {"model_name": "m2"}},
                        ],
                    }
                ]
            },
            "only one detection webhook",
        ),
        (
            {"projects": [{"name": "a", "labels": "grid"}, {"name": "a", "labels": "grid"}]},
            "duplicate project",
        ),
    ],
)
def test_bad_layouts_are_explained(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        layout_from_dict(data)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_overrides_labels_and_models(tmp_path: Path) -> None:
    labels = tmp_path / "banggai.json"
    labels.write_text(json.dumps([{"name": n, "type": "polygon"} for n in ("Acropora", "Group1")]))
    layout = build_layout(
        _args("--layout", "2-stage", "--labels-file", str(labels), "--model", "pth-yolo-coralsegbanggai")
    )
    coral = layout.project("coral")
    assert [label["name"] for label in coral.labels] == ["Acropora", "Group1"]
    assert coral.webhooks[0].query_dict()["model_name"] == "pth-yolo-coralsegbanggai"
    layout = build_layout(_args("--model", "corner=my-corners"))
    assert layout.project("corner").webhooks[0].query_dict() == {"model_name": "my-corners"}
    with pytest.raises(ConfigError, match="no project 'nope'"):
        build_layout(_args("--model", "nope=x"))
    with pytest.raises(ConfigError, match="function name"):
        build_layout(_args("--model", "coral="))
    with pytest.raises(SystemExit):
        _args("--check", "--dry-run")


def test_validate_urls_rejects_a_single_label_public_url() -> None:
    layout = builtin_layout("1-stage")
    with pytest.raises(ConfigError, match="single-label"):
        validate_urls(layout, "http://bridge:8000")
    assert validate_urls(layout, "http://cvat-bridge.internal:8000") == []
    assert "loopback" in validate_urls(layout, "http://127.0.0.1:8000")[0]


def test_secret_fingerprint_changes_with_the_secret_and_hides_it() -> None:
    a, b = secret_fingerprint("a" * 32), secret_fingerprint("b" * 32)
    assert a != b and "a" * 8 not in a and secret_fingerprint(None) == "no secret"
    assert secret_fingerprint("a" * 32) == a


@pytest.mark.parametrize(
    ("status", "ok", "words"),
    [
        (200, True, "ok"),
        (204, True, "ok"),
        (407, False, "denied by Smokescreen: add the bridge's IP to SMOKESCREEN_OPTS"),
        (502, False, "CVAT could not connect to cvat-bridge.internal (502): check extra_hosts / network"),
        (504, False, "check extra_hosts / network"),
        (401, False, "bridge rejected the signature (401): WEBHOOK_SECRET differs"),
        (403, False, "WEBHOOK_SECRET differs"),
        (404, False, "no such route"),
        (422, False, "rejected the webhook's URL or query"),
        (302, False, "no redirects"),
        (500, False, "see its logs"),
        (None, False, "no status"),
    ],
)
def test_ping_results_in_plain_words(status: int | None, ok: bool, words: str) -> None:
    got_ok, text = explain_ping(status, "", "http://cvat-bridge.internal:8000/detect-model-webhook")
    assert got_ok is ok
    assert words.replace(" (407)", "") in text.replace(" (407)", "")


def test_ping_explains_smokescreen_header_even_without_407() -> None:
    ok, text = explain_ping(
        403,
        "X-Smokescreen-Error: Egress proxying is denied to host 'x': Deny: Private Range.",
        "http://a.b/x",
    )
    assert not ok and "Smokescreen" in text


@pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("getent") is None, reason="needs bash and getent"
)
def test_init_hook_appends_the_resolved_ip_and_never_fails() -> None:
    script = (
        'set -eu; SMOKESCREEN_OPTS="--allow-address=172.17.0.1"; . "$1"; '
        'printf "\nOPTS=%s" "$SMOKESCREEN_OPTS"'
    )
    ok = subprocess.run(
        ["bash", "-c", script, "hook", str(HOOK_SCRIPT)],
        env={"PATH": "/usr/bin:/bin", "BRIDGE_ALIAS": "localhost", "BRIDGE_ALIAS_WAIT": "0"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert ok.returncode == 0, ok.stderr
    assert "Smokescreen allows localhost" in ok.stdout
    opts = ok.stdout.rsplit("OPTS=", 1)[1].split()
    assert opts[0] == "--allow-address=172.17.0.1" and opts[1] in (
        "--allow-address=127.0.0.1",
        "--allow-address=::1",
    )
    missing = subprocess.run(
        ["bash", "-c", script, "hook", str(HOOK_SCRIPT)],
        env={"PATH": "/usr/bin:/bin", "BRIDGE_ALIAS": "no-such-bridge.invalid", "BRIDGE_ALIAS_WAIT": "0"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert missing.returncode == 0 and missing.stdout.rsplit("OPTS=", 1)[1] == "--allow-address=172.17.0.1"
    assert "did not resolve" in missing.stderr
