"""``/docs`` (Swagger UI) and ``/redoc`` served from assets installed with the bridge: no CDN, no
Google Fonts, no remote favicon, so both work on a host without internet.

The Swagger UI and ReDoc bundles come from the ``fastapi-offline`` package (MIT; it ships
``swagger-ui-bundle.js``, ``swagger-ui.css`` and ``redoc.standalone.js``); a Content-Security-Policy
keeps both pages from fetching anything elsewhere. The app must be created
with ``docs_url=None, redoc_url=None`` so these routes replace FastAPI's CDN-based ones.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
FAVICON = "/console/static/favicon.svg"
LOCAL_ONLY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
              "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")
"""Content-Security-Policy of the docs pages: nothing is fetched from another origin (ReDoc's bundle
would load its logo from cdn.redoc.ly; Swagger UI may try validator.swagger.io)."""


def local_only(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = LOCAL_ONLY
    return response


def assets_dir() -> Path:
    """The folder holding the Swagger UI and ReDoc bundles."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add the offline ``/docs``, its OAuth2 redirect page and ``/redoc`` to ``app``."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    oauth2_redirect = f"{docs_url}/oauth2-redirect"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return local_only(get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=FAVICON, oauth2_redirect_url=oauth2_redirect,
        ))

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return local_only(get_swagger_ui_oauth2_redirect_html())

    @app.get(redoc_url, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return local_only(get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} — ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js", redoc_favicon_url=FAVICON, with_google_fonts=False,
        ))
