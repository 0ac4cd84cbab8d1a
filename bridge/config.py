"""One typed ``Settings`` for the whole bridge, read from the environment (and ``.env``), and the
typed parts each room receives.

``Settings()`` is built once by the composition root (``bridge.runtime``) and split there: the CVAT
client gets ``settings.cvat``, the Nuclio client ``settings.nuclio``, the job store and workers
``settings.store``, the pipelines ``settings.pipelines``. No other module reads ``os.environ``.
Unsafe or inconsistent values fail fast with a message saying what to fix. This module sits at the
bottom of the import graph: it imports nothing of the bridge.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

_PLACEHOLDER_SECRETS = {"changeme", "change-me", "changethis", "secret", "xxx", "todo"}


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def check_service_url(value: str, what: str, env_name: str) -> str:
    """Reject URLs the SDK or Django would mangle: no scheme, underscores in the host."""
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{env_name}={value!r}: {what} needs an explicit http:// or https:// scheme and a host "
            f"(cvat-sdk silently turns a bare host into https://), e.g. http://cvat-server:8080"
        )
    if "_" in parts.hostname:
        raise ValueError(
            f"{env_name}={value!r}: host names with underscores are rejected by Django "
            f"(DisallowedHost); use the hyphenated alias, e.g. http://cvat-server:8080"
        )
    return value


@dataclass(frozen=True)
class CvatSettings:
    """What the CVAT client needs."""

    url: str
    access_token: str | None = None
    username: str | None = None
    password: str | None = None
    org: str | None = None
    timeout: float = 60.0
    cache_dir: Path | None = None


@dataclass(frozen=True)
class NuclioSettings:
    """What the Nuclio client needs. ``dashboard_url`` is None when no dashboard is configured."""

    invoke_method: Literal["direct", "dashboard"] = "direct"
    function_url: str = "http://nuclio-nuclio-{name}:8080"
    dashboard_url: str | None = None
    namespace: str = "nuclio"
    project: str = "cvat"
    timeout: float = 120.0
    function_timeouts: dict[str, float] = field(default_factory=dict)
    concurrency: int = 2
    function_concurrency: dict[str, int] = field(default_factory=dict)
    max_body_bytes: int = 32 * 1024 * 1024
    max_response_bytes: int = 128 * 1024 * 1024
    retries: int = 4


@dataclass(frozen=True)
class StoreSettings:
    """The job store and the workers that drain it."""

    database_url: str
    workers: int = 2
    lease_seconds: float = 60.0
    poll_seconds: float = 0.5
    max_attempts: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    retry_window_seconds: float = 4 * 86400.0


@dataclass(frozen=True)
class PipelineSettings:
    """What pipeline steps may read (``StepContext.settings``)."""

    resolved_cache_dir: Path
    auto_ann_timeout: float = 900.0
    frame_concurrency: int = 4
    write_batch_size: int = 1000
    polygon_tolerance: float = 0.0
    report_issues: bool = True
    partial_tasks: bool = False
    warp_size: int | None = None
    grid_line_width: int = 30
    grid_mask_dilation: int = 0
    inpaint_function: str = "pth-lama"
    inpaint_fallback: Literal["telea", "none"] = "telea"
    sam2_function: str = "pth-sam2"
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = 95
    data_dir: Path = Path("data")


class Settings(BaseSettings):
    """Every knob of the bridge. Environment names are given per field (reference names accepted)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True,
        # Names as documented (WEBHOOK_SECRET, BRIDGE_DATABASE_URL): case-insensitive matching would let
        # generic variables of other programs (DATABASE_URL, HOST, PORT) switch the bridge's settings.
        case_sensitive=True,
    )

    # --- CVAT -------------------------------------------------------------------------------
    cvat_url: str = Field("http://cvat-server:8080", validation_alias=_env("CVAT_URL", "cvat_url"))
    cvat_access_token: SecretStr | None = Field(
        None, validation_alias=_env("CVAT_ACCESS_TOKEN", "CVAT_TOKEN", "cvat_access_token")
    )
    cvat_username: str | None = Field(None, validation_alias=_env("CVAT_USERNAME", "cvat_username"))
    cvat_user: str | None = Field(None, validation_alias=_env("CVAT_USER", "cvat_user"))
    cvat_password: SecretStr | None = Field(None, validation_alias=_env("CVAT_PASSWORD", "cvat_password"))
    cvat_pwd: SecretStr | None = Field(None, validation_alias=_env("CVAT_PWD", "cvat_pwd"))
    cvat_org: str | None = Field(None, validation_alias=_env("CVAT_ORG", "cvat_org"))
    cvat_timeout: float = Field(60.0, gt=0, validation_alias=_env("CVAT_TIMEOUT", "cvat_timeout"))
    cvat_ui_url: str | None = Field(None, validation_alias=_env("BRIDGE_CVAT_UI_URL", "cvat_ui_url"))
    """Where people open CVAT in a browser (the console's links); default CVAT_URL."""
    warm_chunks: int = Field(1, ge=0, le=8, validation_alias=_env("BRIDGE_WARM_CHUNKS", "warm_chunks"))
    """Threads per process that have CVAT build a queued job's first chunk when its webhook is acknowledged
    (CVAT builds a chunk on its first read, ~1 s); 0 turns it off."""

    # --- webhooks and API ---------------------------------------------------------------------
    webhook_secret: SecretStr | None = Field(None, validation_alias=_env("WEBHOOK_SECRET", "webhook_secret"))
    allow_unsigned: bool = Field(False, validation_alias=_env("BRIDGE_ALLOW_UNSIGNED", "allow_unsigned"))
    api_token: SecretStr | None = Field(None, validation_alias=_env("BRIDGE_API_TOKEN", "api_token"))
    ignore_own_events: bool = Field(
        False, validation_alias=_env("BRIDGE_IGNORE_OWN_EVENTS", "ignore_own_events")
    )
    public_url: str = Field(
        "http://cvat-bridge.internal:8000", validation_alias=_env("BRIDGE_PUBLIC_URL", "public_url")
    )
    host: str = Field("127.0.0.1", validation_alias=_env("BRIDGE_HOST", "host"))
    """Loopback by default; the container image sets BRIDGE_HOST=0.0.0.0 (CVAT must reach it)."""
    port: int = Field(8000, ge=1, le=65535, validation_alias=_env("BRIDGE_PORT", "port"))
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, le=1024**3, validation_alias=_env("BRIDGE_MAX_BODY_BYTES", "max_body_bytes")
    )
    """Largest request body accepted (413 above; real CVAT deliveries are ~1.5 KB)."""
    max_header_bytes: int = Field(
        32 * 1024, ge=4096, le=1024 * 1024,
        validation_alias=_env("BRIDGE_MAX_HEADER_BYTES", "max_header_bytes"),
    )
    """Largest request line + headers accepted (``bridge serve``: h11 limit; the app answers 431 above)."""
    api_processes: int | None = Field(None, ge=1, le=64, validation_alias=_env("BRIDGE_API_PROCESSES", "api_processes"))
    """HTTP processes of ``bridge serve`` (``--processes`` wins); unset: one per usable CPU, at most 2."""

    # --- job store and workers ----------------------------------------------------------------
    data_dir: Path = Field(Path("data"), validation_alias=_env("BRIDGE_DATA_DIR", "data_dir"))
    database_url: str | None = Field(
        None, validation_alias=_env("BRIDGE_DATABASE_URL", "database_url")
    )
    workers: int = Field(2, ge=0, le=256, validation_alias=_env("BRIDGE_WORKERS", "workers"))
    lease_seconds: float = Field(60.0, gt=1, validation_alias=_env("BRIDGE_LEASE_SECONDS", "lease_seconds"))
    poll_seconds: float = Field(0.5, gt=0, validation_alias=_env("BRIDGE_POLL_SECONDS", "poll_seconds"))
    max_attempts: int = Field(5, ge=1, le=100, validation_alias=_env("BRIDGE_MAX_ATTEMPTS", "max_attempts"))
    retry_base_seconds: float = Field(
        2.0, ge=0, validation_alias=_env("BRIDGE_RETRY_BASE_SECONDS", "retry_base_seconds")
    )
    retry_max_seconds: float = Field(
        300.0, ge=0, validation_alias=_env("BRIDGE_RETRY_MAX_SECONDS", "retry_max_seconds")
    )
    retry_window_seconds: float = Field(
        4 * 86400.0, ge=0, validation_alias=_env("BRIDGE_RETRY_WINDOW_SECONDS", "retry_window_seconds")
    )
    """How long a job keeps retrying through a CVAT/Nuclio outage (CVAT retries webhooks ~4 days)."""
    auto_ann_timeout: float = Field(
        900.0, gt=0, validation_alias=_env("AUTO_ANN_TIMEOUT", "auto_ann_timeout")
    )
    cache_dir: Path | None = Field(None, validation_alias=_env("CACHE_DIR", "cache_dir"))

    # --- Nuclio -------------------------------------------------------------------------------
    nuclio_invoke_method: Literal["direct", "dashboard"] = Field(
        "direct", validation_alias=_env("NUCLIO_INVOKE_METHOD", "nuclio_invoke_method")
    )
    nuclio_function_url: str = Field(
        "http://nuclio-nuclio-{name}:8080",
        validation_alias=_env("NUCLIO_FUNCTION_URL", "nuclio_function_url"),
    )
    nuclio_dashboard_url: str | None = Field(
        None, validation_alias=_env("NUCLIO_DASHBOARD_URL", "nuclio_dashboard_url")
    )
    nuclio_host: str = Field("nuclio", validation_alias=_env("NUCLIO_HOST", "nuclio_host"))
    nuclio_port: int = Field(8070, validation_alias=_env("NUCLIO_PORT", "nuclio_port"))
    nuclio_namespace: str = Field("nuclio", validation_alias=_env("NUCLIO_NAMESPACE", "nuclio_namespace"))
    nuclio_project: str = Field("cvat", validation_alias=_env("NUCLIO_PROJECT", "nuclio_project"))
    nuclio_timeout: float = Field(120.0, gt=0, validation_alias=_env("NUCLIO_TIMEOUT", "nuclio_timeout"))
    nuclio_function_timeouts: dict[str, float] = Field(
        default_factory=dict, validation_alias=_env("NUCLIO_FUNCTION_TIMEOUTS", "nuclio_function_timeouts")
    )
    nuclio_concurrency: int = Field(
        2, ge=1, le=64, validation_alias=_env("NUCLIO_CONCURRENCY", "nuclio_concurrency")
    )
    nuclio_function_concurrency: dict[str, int] = Field(
        default_factory=dict,
        validation_alias=_env("NUCLIO_FUNCTION_CONCURRENCY", "nuclio_function_concurrency"),
    )
    nuclio_max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, validation_alias=_env("NUCLIO_MAX_BODY_BYTES", "nuclio_max_body_bytes")
    )
    nuclio_retries: int = Field(4, ge=0, le=20, validation_alias=_env("NUCLIO_RETRIES", "nuclio_retries"))
    nuclio_max_response_bytes: int = Field(  # LaMa's PNG answer for a 20 MP frame is ~40-55 MiB
        128 * 1024 * 1024, ge=1024,
        validation_alias=_env("NUCLIO_MAX_RESPONSE_BYTES", "nuclio_max_response_bytes"),
    )

    # --- pipelines ----------------------------------------------------------------------------
    frame_concurrency: int = Field(
        4, ge=1, le=64, validation_alias=_env("BRIDGE_FRAME_CONCURRENCY", "frame_concurrency")
    )
    write_batch_size: int = Field(
        1000, ge=1, validation_alias=_env("BRIDGE_WRITE_BATCH_SIZE", "write_batch_size")
    )
    polygon_tolerance: float = Field(
        0.0, ge=0, validation_alias=_env("BRIDGE_POLYGON_TOLERANCE", "polygon_tolerance")
    )
    report_issues: bool = Field(True, validation_alias=_env("BRIDGE_REPORT_ISSUES", "report_issues"))
    partial_tasks: bool = Field(False, validation_alias=_env("BRIDGE_PARTIAL_TASKS", "partial_tasks"))
    warp_size: int | None = Field(None, ge=16, validation_alias=_env("BRIDGE_WARP_SIZE", "warp_size"))
    grid_line_width: int = Field(30, ge=1, le=500, validation_alias=_env("BRIDGE_GRID_LINE_WIDTH", "grid_line_width"))
    grid_mask_dilation: int = Field(
        0, ge=0, le=200, validation_alias=_env("BRIDGE_GRID_MASK_DILATION", "grid_mask_dilation")
    )
    inpaint_function: str = Field("pth-lama", validation_alias=_env("BRIDGE_INPAINT_FUNCTION", "inpaint_function"))
    inpaint_fallback: Literal["telea", "none"] = Field(
        "telea", validation_alias=_env("BRIDGE_INPAINT_FALLBACK", "inpaint_fallback")
    )
    sam2_function: str = Field("pth-sam2", validation_alias=_env("BRIDGE_SAM2_FUNCTION", "sam2_function"))
    image_format: Literal["jpeg", "png"] = Field(
        "jpeg", validation_alias=_env("BRIDGE_IMAGE_FORMAT", "image_format")
    )
    jpeg_quality: int = Field(95, ge=50, le=100, validation_alias=_env("BRIDGE_JPEG_QUALITY", "jpeg_quality"))

    extra_pipelines: dict[str, str] = Field(
        default_factory=dict, validation_alias=_env("BRIDGE_EXTRA_PIPELINES", "extra_pipelines")
    )
    """Custom pipelines, ``{"name": "python.module"}``; the module exposes ``PIPELINE``."""

    # --- logging ------------------------------------------------------------------------------
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL", "log_level"))
    log_json: bool = Field(False, validation_alias=_env("LOG_JSON", "log_json"))

    # ------------------------------------------------------------------------------------------
    @field_validator("cvat_url")
    @classmethod
    def _cvat_url(cls, v: str) -> str:
        return check_service_url(v, "the CVAT URL", "CVAT_URL")

    @field_validator("nuclio_function_timeouts", "nuclio_function_concurrency", "extra_pipelines", mode="before")
    @classmethod
    def _json_map(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip()
            if not v:
                return {}
            try:
                return json.loads(v)
            except json.JSONDecodeError as exc:
                raise ValueError(f'expected a JSON object such as {{"pth-lama": 1}}: {exc}') from exc
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        v = v.upper()
        if v not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.cvat_username and self.cvat_user and self.cvat_username != self.cvat_user:
            raise ValueError(
                "CVAT_USERNAME and CVAT_USER are both set and differ; set only one of them"
            )
        if self.cvat_password and self.cvat_pwd and (
            self.cvat_password.get_secret_value() != self.cvat_pwd.get_secret_value()
        ):
            raise ValueError("CVAT_PASSWORD and CVAT_PWD are both set and differ; set only one of them")
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        if not secret and not self.allow_unsigned:
            raise ValueError(
                "WEBHOOK_SECRET is not set. Set it to the secret configured on the CVAT webhooks "
                "(e.g. `openssl rand -hex 32`), or set BRIDGE_ALLOW_UNSIGNED=true to accept unsigned "
                "webhooks (development only)"
            )
        if secret and secret.lower() in _PLACEHOLDER_SECRETS:
            raise ValueError(f"WEBHOOK_SECRET={secret!r} is a placeholder; use a random value")
        if self.nuclio_invoke_method == "direct" and "{name}" not in self.nuclio_function_url:
            raise ValueError("NUCLIO_FUNCTION_URL must contain '{name}', e.g. http://nuclio-nuclio-{name}:8080")
        check_service_url(self.nuclio_function_url.replace("{name}", "x"), "the function URL", "NUCLIO_FUNCTION_URL")
        if self.nuclio_dashboard_url:
            self.nuclio_dashboard_url = check_service_url(
                self.nuclio_dashboard_url, "the Nuclio dashboard URL", "NUCLIO_DASHBOARD_URL"
            )
        self.public_url = check_service_url(self.public_url, "the bridge's public URL", "BRIDGE_PUBLIC_URL")
        return self

    # --- derived values -------------------------------------------------------------------------
    @property
    def cvat_login(self) -> str | None:
        return self.cvat_username or self.cvat_user

    @property
    def cvat_secret_password(self) -> str | None:
        pw = self.cvat_password or self.cvat_pwd
        return pw.get_secret_value() if pw else None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'bridge.db').as_posix()}"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or (self.data_dir / "cache")

    @property
    def resolved_dashboard_url(self) -> str:
        return self.nuclio_dashboard_url or f"http://{self.nuclio_host}:{self.nuclio_port}"

    def secret_bytes(self) -> bytes | None:
        if self.webhook_secret is None or not self.webhook_secret.get_secret_value():
            return None
        return self.webhook_secret.get_secret_value().encode("utf-8")

    # --- the parts each room receives ----------------------------------------------------------
    @property
    def cvat(self) -> CvatSettings:
        token = self.cvat_access_token.get_secret_value() if self.cvat_access_token else None
        return CvatSettings(url=self.cvat_url, access_token=token or None, username=self.cvat_login,
                            password=self.cvat_secret_password, org=self.cvat_org, timeout=self.cvat_timeout,
                            cache_dir=self.resolved_cache_dir)

    @property
    def nuclio(self) -> NuclioSettings:
        return NuclioSettings(
            invoke_method=self.nuclio_invoke_method, function_url=self.nuclio_function_url,
            dashboard_url=self.configured_dashboard_url, namespace=self.nuclio_namespace,
            project=self.nuclio_project, timeout=self.nuclio_timeout,
            function_timeouts=dict(self.nuclio_function_timeouts), concurrency=self.nuclio_concurrency,
            function_concurrency=dict(self.nuclio_function_concurrency), max_body_bytes=self.nuclio_max_body_bytes,
            max_response_bytes=self.nuclio_max_response_bytes, retries=self.nuclio_retries,
        )

    @property
    def store(self) -> StoreSettings:
        return StoreSettings(
            database_url=self.resolved_database_url, workers=self.workers, lease_seconds=self.lease_seconds,
            poll_seconds=self.poll_seconds, max_attempts=self.max_attempts,
            retry_base_seconds=self.retry_base_seconds, retry_max_seconds=self.retry_max_seconds,
            retry_window_seconds=self.retry_window_seconds,
        )

    @property
    def pipelines(self) -> PipelineSettings:
        return PipelineSettings(
            resolved_cache_dir=self.resolved_cache_dir, auto_ann_timeout=self.auto_ann_timeout,
            frame_concurrency=self.frame_concurrency, write_batch_size=self.write_batch_size,
            polygon_tolerance=self.polygon_tolerance, report_issues=self.report_issues,
            partial_tasks=self.partial_tasks, warp_size=self.warp_size, grid_line_width=self.grid_line_width,
            grid_mask_dilation=self.grid_mask_dilation, inpaint_function=self.inpaint_function,
            inpaint_fallback=self.inpaint_fallback, sam2_function=self.sam2_function,
            image_format=self.image_format, jpeg_quality=self.jpeg_quality, data_dir=self.data_dir,
        )

    @property
    def configured_dashboard_url(self) -> str | None:
        """The Nuclio dashboard to consult, or None when none is configured for direct invocation.

        Dashboard invocation always has one. Direct invocation consults the dashboard (for labels,
        ``maxWorkers``, ``maxRequestBodySize``, ``eventTimeout``) only when ``NUCLIO_DASHBOARD_URL``,
        ``NUCLIO_HOST`` or ``NUCLIO_PORT`` is set, or when ``NUCLIO_FUNCTION_URL`` is left at its default
        (CVAT's serverless layout, where the dashboard is ``nuclio:8070`` next to ``nuclio-nuclio-{name}``).
        """
        explicit = self.model_fields_set
        if (self.nuclio_invoke_method == "dashboard" or self.nuclio_dashboard_url
                or {"nuclio_host", "nuclio_port"} & explicit or "nuclio_function_url" not in explicit):
            return self.resolved_dashboard_url
        return None

    def warn_unsafe(self) -> None:
        """Log loudly about settings that are allowed but risky."""
        if self.secret_bytes() is None:
            log.warning("BRIDGE_ALLOW_UNSIGNED=true: webhooks are accepted WITHOUT a signature check")
        elif len(self.secret_bytes() or b"") < 16:
            log.warning("WEBHOOK_SECRET is shorter than 16 characters; use `openssl rand -hex 32`")
        if not self.cvat_access_token and not (self.cvat_login and self.cvat_secret_password):
            log.warning("no CVAT credentials (CVAT_ACCESS_TOKEN or CVAT_USERNAME/CVAT_PASSWORD): "
                        "pipelines will fail until they are set")
