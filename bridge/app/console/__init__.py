"""The web console: a page people look at (``/``), its JSON API (``/console/api``), its static files
(``/console/static``: one HTML page, one script, one stylesheet; no build step, no CDN) and the
offline ``/docs`` and ``/redoc``.

``install(app, settings)`` adds all of it; the app must be built with ``docs_url=None, redoc_url=None``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from bridge.app.console.api import build_router
from bridge.app.console.docs import install_docs
from bridge.app.console.thumbs import ThumbnailCache

STATIC_DIR = Path(str(files(__name__) / "static"))
THUMBNAIL_CACHE_BYTES = 64 * 1024 * 1024
"""Disk used by thumbnails (256 px JPEGs, ~5-20 KB each) before the least recently used go."""
CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
               "connect-src 'self'; frame-ancestors 'none'")
"""The console loads only its own files and talks only to the bridge (links into CVAT are plain links)."""


def install(app: FastAPI, settings: Any) -> ThumbnailCache:
    """Add the console, its API and the offline docs to ``app``; returns the thumbnail cache."""
    thumbs = ThumbnailCache(settings.resolved_cache_dir / "thumbs", max_bytes=THUMBNAIL_CACHE_BYTES,
                            namespace=settings.cvat_url)
    app.include_router(build_router(thumbs))
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    install_docs(app)

    @app.get("/", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache", "Content-Security-Policy": CONSOLE_CSP})

    return thumbs
