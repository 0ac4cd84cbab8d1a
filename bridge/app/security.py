"""Webhook signature check (HMAC-SHA256 over the raw body) and the API bearer token."""

from __future__ import annotations

import hashlib
import hmac
import re

SIGNATURE_HEADER = "X-Signature-256"
_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")


def sign(secret: bytes, body: bytes) -> str:
    """The header value CVAT sends: ``sha256=<lowercase hex>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_header_problem(secret: bytes | None, header: str | None) -> str | None:
    """Checked before the body is read: None when the header may be verified, else why not (401).
    A header that is not exactly ``sha256=`` + 64 hex digits is refused without any HMAC work."""
    if secret is None:
        return None
    if not header:
        return f"missing {SIGNATURE_HEADER} header (the CVAT webhook has no secret, or a different one)"
    if not _SIGNATURE.fullmatch(header.strip()):
        return (f"malformed {SIGNATURE_HEADER} header ({len(header)} characters): expected "
                f"'sha256=' followed by 64 hex digits")
    return None


def verify_signature(secret: bytes | None, body: bytes, header: str | None) -> str | None:
    """None when the request may pass; otherwise the reason it may not (answered 401)."""
    problem = signature_header_problem(secret, header)
    if problem or secret is None:
        return problem
    expected = sign(secret, body)
    if not hmac.compare_digest(expected.encode(), (header or "").strip().lower().encode()):
        return f"{SIGNATURE_HEADER} does not match: the webhook secret in CVAT differs from WEBHOOK_SECRET"
    return None


def token_ok(expected: str | None, authorization: str | None) -> bool:
    if not expected:
        return True
    if not authorization or not authorization.lower().startswith("bearer "):
        return False
    return hmac.compare_digest(authorization[7:].strip().encode(), expected.encode())
