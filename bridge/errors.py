"""Error types shared across rooms.

The worker maps them: ``TransientError`` → retry with backoff (bounded), any other
``BridgeError`` → the job fails with the message as its reason. Routes map request
problems to 4xx themselves; these types never reach an HTTP response.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class: a problem the bridge can explain in one sentence."""


class TransientError(BridgeError):
    """Worth retrying later (service down, busy, timeout)."""


class PermanentError(BridgeError):
    """Retrying will not help; the job fails with this reason."""


class ConfigError(BridgeError):
    """The configuration is unusable; the message says what to fix."""


class BadGeometry(PermanentError):
    """Annotations cannot be turned into valid geometry (corners, grid points, masks)."""


class BadAnnotations(PermanentError):
    """Annotations needed by a pipeline are missing or malformed."""


class FunctionUnavailable(TransientError):
    """A Nuclio function cannot be reached, is busy (503) or timed out."""


class FunctionFailed(PermanentError):
    """A Nuclio function answered with an error or an output that is not CVAT-shaped."""


class CvatUnavailable(TransientError):
    """CVAT cannot be reached or answered 5xx."""


class CvatRejected(PermanentError):
    """CVAT refused a request (4xx): bad ids, permissions, validation."""


class NotFound(CvatRejected):
    """A CVAT object (project, task, job, label) does not exist."""


class LabelMismatch(PermanentError):
    """The function's labels and the project's labels do not match."""


class Cancelled(BridgeError):
    """The job was cancelled while it ran."""


class LeaseLost(Cancelled):
    """This worker no longer holds the job's lease (it froze past it, or another worker took the job
    over): it must stop without writing anything more to CVAT or to the job row."""


class BadImage(PermanentError):
    """A frame cannot be decoded or encoded."""
