"""Webhook signature check (HMAC-SHA256 over the raw body) and the API bearer token."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Signature-256"


def sign(secret: bytes, body: bytes) -> str:
    """The header value CVAT sends: ``sha256=<lowercase hex>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes | None, body: bytes, header: str | None) -> str | None:
    """None when the request may pass; otherwise the reason it may not (answered 401)."""
    if secret is None:
        return None
    if not header:
        return f"missing {SIGNATURE_HEADER} header (the CVAT webhook has no secret, or a different one)"
    expected = sign(secret, body)
    if not hmac.compare_digest(expected.encode(), header.strip().encode()):
        return f"{SIGNATURE_HEADER} does not match: the webhook secret in CVAT differs from WEBHOOK_SECRET"
    return None


def token_ok(expected: str | None, authorization: str | None) -> bool:
    if not expected:
        return True
    if not authorization or not authorization.lower().startswith("bearer "):
        return False
    return hmac.compare_digest(authorization[7:].strip().encode(), expected.encode())
