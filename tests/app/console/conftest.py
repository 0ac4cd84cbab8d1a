"""Browser fixtures: Debian's Chromium driven by Playwright (no browser download), with every request
that is not to loopback blocked and recorded, and a folder collecting the screenshots of each page."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
_SCREENS: list[Path] = []


def chromium_path() -> str | None:
    """Debian's Chromium (``apt-get install chromium``; scripts/test.sh installs it), or $BRIDGE_CHROMIUM."""
    given = os.environ.get("BRIDGE_CHROMIUM")
    if given:
        return given if Path(given).exists() else None
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                   "(it is in the dev extra: pip install -e '.[dev]')")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found: scripts/test.sh installs Debian's package (apt-get install chromium); "
                    "or set BRIDGE_CHROMIUM to a Chromium binary")
    args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=args, headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Page:
    """A page of a fresh browser context, plus what the context refused to fetch and the JS errors seen."""

    page: object
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    out = Page(page=None)

    def only_loopback(route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOOPBACK:
            out.blocked.append(url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", only_loopback)
    pg = context.new_page()
    pg.on("pageerror", lambda exc: out.errors.append(str(exc)))
    out.page = pg
    try:
        yield out
    finally:
        context.close()


@pytest.fixture(scope="session")
def screens(tmp_path_factory) -> Path:
    """Where the tests put their screenshots (the pytest temp dir; printed at the end of the run)."""
    return tmp_path_factory.mktemp("console-screens")


def screenshot(pg, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    _SCREENS.append(path)
    return path


def pytest_terminal_summary(terminalreporter) -> None:
    if _SCREENS:
        terminalreporter.write_line(f"console screenshots ({len(_SCREENS)}): {_SCREENS[0].parent}")
