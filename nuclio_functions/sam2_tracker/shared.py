"""The modules this function shares with ``../sam2``: ``model.py``, ``protocol.py``, ``cache.py``.

``../deploy.sh`` copies them next to this file (``shared-modules.txt``); in a source checkout they
are loaded from ``../sam2``. Either way under private module names, so they never shadow another
function's module of the same name.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SHARED_DIR = "sam2"  # sibling function dir holding the shared modules in a source checkout


def load_shared(name: str) -> ModuleType:
    """Import ``<name>.py`` from this directory (deployed) or from ``../sam2`` (source checkout)."""
    private = f"sam2_tracker_shared_{name}"
    if private in sys.modules:
        return sys.modules[private]
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent / SHARED_DIR):
        path = folder / f"{name}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(private, path)
            if spec is None or spec.loader is None:
                break
            module = importlib.util.module_from_spec(spec)
            sys.modules[private] = module  # dataclasses look their module up there
            spec.loader.exec_module(module)
            return module
    raise ImportError(f"{name}.py not found next to {here} nor in ../{SHARED_DIR}: deploy with "
                      "nuclio_functions/deploy.sh, which copies the shared modules")


model = load_shared("model")
protocol = load_shared("protocol")
cache = load_shared("cache")
