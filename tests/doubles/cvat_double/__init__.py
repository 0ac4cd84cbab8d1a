"""A stateful CVAT 2.73 test double: REST API for cvat-sdk 2.80 plus signed webhooks.

``from tests.doubles.cvat_double import CvatDouble, Costs``."""

from .double import CvatDouble
from .routes import Costs
from .webhooks import signature

__all__ = ["Costs", "CvatDouble", "signature"]
