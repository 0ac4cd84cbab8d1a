"""cvat-bridge: CVAT webhooks -> durable jobs -> Nuclio functions -> CVAT."""

__version__ = "0.1.0"
