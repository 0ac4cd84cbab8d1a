"""The only code that speaks to Nuclio (see ``client.NuclioClient``)."""

from bridge.nuclio.client import NuclioClient

__all__ = ["NuclioClient"]
