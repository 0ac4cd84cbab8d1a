"""``bridge setup --check``: ping every managed webhook through CVAT and explain the result.

CVAT sends the ping from inside ``cvat_server`` (through its Smokescreen proxy), so a ping tests
the whole path CVAT's deliveries take: URL, network, proxy allowance, the bridge's route and its
signature check (cvat-contract.md §1.9, §2.3).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from bridge.cvat.admin import CvatAdmin, PingResult
from bridge.errors import BridgeError
from bridge.setup.apply import ManagedWebhook, SetupReport

_SMOKESCREEN_HINT = "X-Smokescreen-Error"
_MAX_RESPONSE = 200


def explain_ping(status: int | None, response: str, target_url: str) -> tuple[bool, str]:
    """(ok, plain-words explanation) for a ping delivery's status code and response body."""
    host = urlsplit(target_url).hostname or target_url
    body = " ".join((response or "").split())
    if len(body) > _MAX_RESPONSE:
        body = body[: _MAX_RESPONSE - 3] + "..."
    said = f" (bridge said: {body})" if body else ""
    if status is None:
        return False, "CVAT recorded no status for the ping; look at the delivery in CVAT's webhook page"
    if 200 <= status < 300:
        return True, f"ok ({status})"
    if status == 407 or _SMOKESCREEN_HINT in (response or ""):
        return False, (
            f"denied by Smokescreen (407): add the bridge's IP to SMOKESCREEN_OPTS of cvat_server and "
            f"cvat_worker_webhooks (--allow-address=<IP of {host}>, IPs only, no host names), "
            "then restart them"
        )
    if status in (502, 504):
        what = "connect" if status == 502 else "get an answer in time"
        return False, (
            f"CVAT could not {what} to {host} ({status}): check extra_hosts / network — is the bridge "
            f"running, does {host} resolve inside cvat_server (extra_hosts, network alias on cvat_cvat), "
            "is the port right"
        )
    if status in (401, 403):
        return False, (
            f"bridge rejected the signature ({status}): WEBHOOK_SECRET differs between the bridge and the "
            f"webhook; run `bridge setup` again with the bridge's WEBHOOK_SECRET{said}"
        )
    if status == 404:
        return False, f"the bridge has no such route (404): BRIDGE_PUBLIC_URL points at something else{said}"
    if status in (400, 422):
        return False, f"the bridge rejected the webhook's URL or query ({status}){said}"
    if 300 <= status < 400:
        return False, f"redirected ({status}): point the webhook at the exact URL, no redirects"
    if status >= 500:
        return False, f"the bridge failed ({status}); see its logs{said}"
    return False, f"unexpected answer {status}{said}"


def ping_all(admin: CvatAdmin, webhooks: list[ManagedWebhook], report: SetupReport) -> list[PingResult]:
    """Ping each webhook once; add one ``ping`` outcome per webhook to ``report``."""
    results = []
    for hook in webhooks:
        subject = f"{hook.project} {urlsplit(hook.target_url).path} (webhook {hook.webhook_id})"
        try:
            result = admin.ping_webhook(hook.webhook_id)
        except BridgeError as exc:
            report.add("ping", subject, "failed", f"CVAT could not ping it: {exc}")
            continue
        results.append(result)
        ok, text = explain_ping(result.status_code, result.response, hook.target_url)
        report.add("ping", subject, "ok" if ok else "failed", text)
    return results
