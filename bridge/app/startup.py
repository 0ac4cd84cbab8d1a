"""Start-up problems as one line that says what to fix, instead of a traceback.

The command line calls these before it serves or reads anything: ``load_settings`` (the environment
and ``.env``), ``open_store`` (the job store: URL scheme, driver, reachability, migrations) and
``require_cvat_credentials`` (commands that must log in to CVAT). Each raises ``StartupError`` whose
message is a single line; ``bridge.cli.main`` prints it and exits with status 2. Errors that are not
configuration or connectivity problems (bugs) keep their traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.jobs.store import JobStore

EXIT_STARTUP = 2
SUPPORTED_DATABASES = "sqlite:///path/to/bridge.db or postgresql://user:password@host:5432/database"
_SECRET_NAMES = re.compile(r"SECRET|TOKEN|PASSWORD|PWD", re.IGNORECASE)


class StartupError(Exception):
    """A configuration or connectivity problem found at start; ``str()`` is one line."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


def one_line(text: str, limit: int = 600) -> str:
    """``text`` with all whitespace runs (newlines included) collapsed, cut at ``limit`` characters."""
    flat = re.sub(r"\s+", " ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- settings ------------------------------------------------------------------------------------------
def describe_settings_error(exc: ValidationError) -> str:
    """Every problem of a ``Settings`` validation, each as ``NAME='value': what is wrong``, joined by '; '."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if where and not msg.startswith(where):
            shown = "" if _SECRET_NAMES.search(where) or "input" not in err else f"={err['input']!r}"
            msg = f"{where}{shown}: {msg}"
        parts.append(msg)
    return "; ".join(parts) or "invalid settings"


def load_settings(*, needs_secret: bool = True, **overrides: Any) -> Settings:
    """``Settings()`` from the environment and ``.env``. ``needs_secret=False`` (commands that never
    receive a webhook: ``bridge jobs``, ``bridge report``) ignores WEBHOOK_SECRET entirely."""
    from bridge.config import Settings

    if not needs_secret:
        overrides = {"webhook_secret": None, "allow_unsigned": True, **overrides}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise StartupError(f"configuration error: {describe_settings_error(exc)}") from None


def ignored_environment(environ: Mapping[str, str]) -> list[str]:
    """Warnings for variables that look like bridge settings but are not read (one line each)."""
    out = []
    if environ.get("DATABASE_URL") and not environ.get("BRIDGE_DATABASE_URL"):
        out.append("DATABASE_URL is set but ignored: the job store reads BRIDGE_DATABASE_URL (a generic DATABASE_URL "
                   "belongs to other programs); set BRIDGE_DATABASE_URL to use that database")
    return out


# --- job store -----------------------------------------------------------------------------------------
def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown without anything that could be a password
        return re.sub(r"//[^@/]*@", "//***@", url)


def check_database_url(url: str) -> None:
    """Refuse URLs the job store cannot use, before any connection is tried."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = _masked(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StartupError(f"BRIDGE_DATABASE_URL={shown!r} is not a database URL: use {SUPPORTED_DATABASES}") from None
    backend, _, driver = parsed.drivername.partition("+")  # no dialect is loaded (an unknown one would raise)
    if backend == "postgres":
        raise StartupError(f"BRIDGE_DATABASE_URL={shown!r}: write postgresql:// (SQLAlchemy does not accept "
                           "postgres://), e.g. postgresql://user:password@host:5432/database")
    if backend not in ("sqlite", "postgresql"):
        raise StartupError(f"BRIDGE_DATABASE_URL={shown!r}: unsupported database {backend!r}; the job store runs on "
                           f"{SUPPORTED_DATABASES}")
    if backend == "postgresql" and driver not in ("", "psycopg"):
        raise StartupError(f"BRIDGE_DATABASE_URL={shown!r}: driver {driver!r} is not installed with the bridge; "
                           "use postgresql:// or postgresql+psycopg://")


def describe_store_error(url: str, exc: BaseException) -> str:
    """One line about why the job store at ``url`` could not be opened, with what to check."""
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    shown = _masked(url)
    sqlite = url.startswith("sqlite")
    if isinstance(exc, OSError) and not isinstance(exc, SQLAlchemyError):
        where = getattr(exc, "filename", None) or url
        return (f"cannot create the job store at {shown!r}: {exc.strerror or exc} ({where}); set BRIDGE_DATA_DIR or "
                "BRIDGE_DATABASE_URL to a writable place")
    reason = one_line(str(getattr(exc, "orig", None) or exc).split("\n(Background")[0], 300)
    if isinstance(exc, OperationalError):
        hint = ("is its folder writable and on a local disk?" if sqlite else
                "is PostgreSQL running and reachable from here, and are the user, password and database right?")
        return f"cannot open the job store at {shown!r}: {reason} — {hint}"
    return f"job store at {shown!r} is not usable: {type(exc).__name__}: {reason}"


def open_store(settings: Settings) -> JobStore:
    """The job store of ``settings`` (created and migrated), or ``StartupError`` saying what to fix."""
    from sqlalchemy.exc import SQLAlchemyError

    from bridge.jobs.store import JobStore

    url = settings.resolved_database_url
    check_database_url(url)
    try:
        store = JobStore(url)
        store.ping()
    except (SQLAlchemyError, OSError) as exc:
        raise StartupError(describe_store_error(url, exc)) from None
    except Exception as exc:
        if type(exc).__module__.startswith("alembic"):  # e.g. a database migrated by a newer bridge
            raise StartupError(f"job store at {_masked(url)!r}: migration failed: {exc} — is this bridge older "
                               "than the one that created the database?") from None
        raise
    return store


# --- CVAT ----------------------------------------------------------------------------------------------
def require_cvat_credentials(settings: Settings) -> None:
    """Commands that log in to CVAT (``setup``, ``report``) refuse to start without credentials."""
    if settings.cvat_access_token and settings.cvat_access_token.get_secret_value():
        return
    if settings.cvat_login and settings.cvat_secret_password:
        return
    if settings.cvat_login or settings.cvat_secret_password:
        missing = "CVAT_PASSWORD" if settings.cvat_login else "CVAT_USERNAME"
        raise StartupError(f"CVAT credentials incomplete: set {missing} too (or use CVAT_ACCESS_TOKEN instead)")
    raise StartupError("no CVAT credentials: set CVAT_ACCESS_TOKEN (CVAT ≥ 2.27: Profile → Security → Access "
                       "tokens), or CVAT_USERNAME and CVAT_PASSWORD, in the environment or .env")
