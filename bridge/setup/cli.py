"""``bridge setup``: options and the entry point the ``bridge`` CLI calls.

    bridge setup [--layout 3-stage|2-stage|1-stage | --layout-file F] [--prefix P]
                 [--labels-file [KEY=]F ...] [--model [KEY=]FUNCTION ...]
                 [--public-url URL] [--check | --dry-run]

Exit status: 0 done (or all checks ok), 1 something missing, conflicting or failing a ping,
2 bad options or configuration.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from bridge.config import Settings
from bridge.cvat.admin import CvatAdmin
from bridge.cvat.connection import make_sdk_client
from bridge.errors import BridgeError, ConfigError
from bridge.labels import load_label_file
from bridge.setup.apply import Mode, SetupReport, apply_layout, validate_urls
from bridge.setup.check import ping_all
from bridge.setup.presets import (
    LAYOUTS,
    Layout,
    builtin_layout,
    load_layout_file,
    with_cover_report,
    with_labels,
    with_models,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Define the options of ``bridge setup`` on ``parser``."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="3-stage",
        help="built-in layout: 3-stage corners->grid->coral (5 webhooks), 2-stage corners->coral "
        "(3 webhooks), 1-stage coral detection only (default: %(default)s)",
    )
    which.add_argument("--layout-file", metavar="FILE", help="custom layout JSON (see docs/deployment.md)")
    parser.add_argument(
        "--prefix", default="", help="prepended to every project name, e.g. 'banggai_' (default: none)"
    )
    parser.add_argument(
        "--labels-file",
        action="append",
        default=[],
        metavar="[KEY=]FILE",
        help="CVAT label export to use for project KEY (corner, grid, coral, or a custom key); "
        "without KEY= the layout's last project (repeatable)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[KEY=]FUNCTION",
        help="Nuclio function for project KEY's detection webhook; without KEY= the last project "
        "(e.g. --model pth-yolo-coralsegbanggai) (repeatable)",
    )
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="URL CVAT uses to reach the bridge (default: BRIDGE_PUBLIC_URL, e.g. http://cvat-bridge.internal:8000)",
    )
    parser.add_argument(
        "--cover-report",
        metavar="QUADRAT_CM",
        type=float,
        help="also add the cover-report webhook to the last project (coral stage); the quadrat side in cm "
        "(0: report in pixels only)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="change nothing: verify projects, labels and webhooks, and ping every webhook through CVAT",
    )
    mode.add_argument("--dry-run", action="store_true", help="change nothing: print what would be done")


def build_layout(args: argparse.Namespace) -> Layout:
    """The layout chosen by the options, with label and model overrides applied."""
    prefix = args.prefix or ""
    layout = (
        load_layout_file(args.layout_file, prefix)
        if args.layout_file
        else builtin_layout(args.layout, prefix)
    )
    last = layout.projects[-1].key
    labels = {}
    for item in args.labels_file:
        key, path = _split_key(item, last, "--labels-file")
        labels[key] = load_label_file(path)
    if labels:
        layout = with_labels(layout, labels)
    models = dict(_split_key(item, last, "--model") for item in args.model)
    if any(not m.strip() for m in models.values()):
        raise ConfigError("--model needs a function name, e.g. --model coral=pth-yolo-coralsegv4")
    if models:
        layout = with_models(layout, models)
    if getattr(args, "cover_report", None) is not None:
        query = {"quadrat_cm": args.cover_report} if args.cover_report > 0 else {}
        layout = with_cover_report(layout, last, **query)
    return layout


def _split_key(item: str, default_key: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if sep and key and "/" not in key and "\\" not in key:
        return key, value
    if not item:
        raise ConfigError(f"{option} needs a value")
    return default_key, item


def run_setup(settings: Settings, args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run ``bridge setup`` with parsed ``args``; print the report to ``out``; return the exit status."""
    out = out or sys.stdout
    mode: Mode = "check" if args.check else "dry-run" if args.dry_run else "apply"
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    public_url = (args.public_url or settings.public_url).rstrip("/")
    try:
        layout = build_layout(args)
        validate_urls(layout, public_url)
    except ConfigError as exc:
        print(f"bridge setup: {exc}", file=out)
        return EXIT_CONFIG
    print(
        f"bridge setup ({mode}): layout {layout.name}, CVAT {settings.cvat_url}, "
        f"bridge reached at {public_url}",
        file=out,
    )
    if not secret:
        print("warning: WEBHOOK_SECRET is empty; webhooks are created without a secret", file=out)
    report = SetupReport()
    try:
        client = make_sdk_client(
            settings.cvat_url,
            access_token=settings.cvat_access_token.get_secret_value()
            if settings.cvat_access_token
            else None,
            username=settings.cvat_login,
            password=settings.cvat_secret_password,
            org=settings.cvat_org,
            timeout=settings.cvat_timeout,
        )
    except ConfigError as exc:
        print(f"bridge setup: {exc}", file=out)
        return EXIT_CONFIG
    except BridgeError as exc:
        print(f"bridge setup: cannot connect to CVAT: {exc}", file=out)
        return EXIT_FAILED
    try:
        admin = CvatAdmin(client)
        apply_layout(admin, layout, public_url=public_url, secret=secret, mode=mode, report=report)
        if mode == "check":
            ping_all(admin, report.webhooks, report)
    except ConfigError as exc:
        _print_report(report, out)
        print(f"bridge setup: {exc}", file=out)
        return EXIT_CONFIG
    except BridgeError as exc:
        _print_report(report, out)
        print(f"bridge setup failed: {exc}", file=out)
        return EXIT_FAILED
    finally:
        client.close()
    _print_report(report, out)
    return EXIT_FAILED if report.failed else EXIT_OK


def _print_report(report: SetupReport, out: TextIO) -> None:
    for outcome in report.outcomes:
        print(outcome.line(), file=out)
    counts: dict[str, int] = {}
    for outcome in report.outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    if counts:
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        print(f"summary: {summary}", file=out)
