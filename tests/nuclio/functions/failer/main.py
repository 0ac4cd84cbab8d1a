"""Test function that fails on demand. Body ``{"mode": ...}``:

``raise`` → handler exception (HTTP 500); ``status`` → ``{"error"}`` with ``code``; ``text`` → 200
with a body that is not JSON; ``value`` → answers ``body["value"]`` as JSON;
``busy_first`` → 503 for the first ``n`` calls, then ``{"ok": true}``.
"""

import json


def init_context(context):
    context.user_data.calls = 0


def handler(context, event):
    context.user_data.calls += 1
    body = event.body
    mode = body.get("mode")
    if mode == "raise":
        raise RuntimeError("boom on demand")
    if mode == "status":
        return context.Response(body=json.dumps({"error": body.get("message", "failed on demand")}),
                                status_code=int(body["code"]), content_type="application/json")
    if mode == "text":
        return context.Response(body="<html>not json</html>", status_code=200,
                                content_type="application/json")
    if mode == "value":
        return body["value"]
    if mode == "busy_first":
        if context.user_data.calls <= int(body["n"]):
            return context.Response(body="no available worker", status_code=503)
        return {"ok": True, "calls": context.user_data.calls}
    return context.Response(body=f"unknown mode {mode!r}", status_code=400)
