"""The import rules of ARCHITECTURE.md, checked on the code: a room imports only the rooms below it
that it is allowed to know, and the third-party clients stay in their one room each."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BRIDGE = Path(__file__).resolve().parents[1] / "bridge"

# room → the rooms it may import (ARCHITECTURE.md, "Rooms and what each may import")
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": set(),
    "logs": set(),
    "labels": {"errors"},
    "geometry": {"errors"},
    "events": {"errors"},
    "jobs": {"errors", "logs"},
    "metrics": {"jobs"},
    "cvat": {"errors", "config", "geometry"},
    "nuclio": {"errors", "config", "geometry"},
    "reports": {"errors", "config", "geometry", "labels", "cvat"},
    "pipelines": {"errors", "config", "events", "geometry", "cvat", "nuclio", "reports"},
    "setup": {"errors", "config", "labels", "cvat", "pipelines"},
    "runtime": {"errors", "config", "events", "jobs", "metrics", "cvat", "nuclio", "pipelines"},
    "app": {"errors", "config", "logs", "events", "geometry", "jobs", "metrics", "pipelines", "runtime"},
    "cli": {"errors", "config", "logs", "events", "jobs", "pipelines", "runtime", "app", "setup", "reports"},
}
# third-party packages that belong to one room (or a few) only
OWNED = {"fastapi": {"app"}, "starlette": {"app"}, "uvicorn": {"cli"}, "cvat_sdk": {"cvat"},
         "httpx": {"nuclio"}, "httpcore": {"nuclio"}, "sqlalchemy": {"jobs", "app"}, "alembic": {"jobs"}}


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "bridge"


def imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute import of a file, TYPE_CHECKING and function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def modules() -> list[Path]:
    return sorted(p for p in BRIDGE.rglob("*.py") if "migrations" not in p.parts)


def violations(paths: list[Path]) -> list[str]:
    bad = []
    for path in paths:
        module = ".".join(path.relative_to(BRIDGE.parent).with_suffix("").parts)
        room = room_of(module)
        allowed = ALLOWED.get(room)
        for line, name in imports(path):
            where = f"{path.relative_to(BRIDGE.parent)}:{line}"
            top = name.split(".")[0]
            if top in OWNED and room not in OWNED[top]:
                bad.append(f"{where}: {room} imports {name} (only {', '.join(sorted(OWNED[top]))} may)")
            if not name.startswith("bridge.") or room == "bridge":
                continue
            target = room_of(name)
            if target == room or name == "bridge":
                continue
            if allowed is None:
                bad.append(f"{where}: {room} is not a known room (add it to ARCHITECTURE.md and ALLOWED)")
            elif target not in allowed:
                bad.append(f"{where}: {room} imports {name}, a room it may not know")
    return bad


def test_every_room_imports_only_what_it_may():
    assert violations(modules()) == []


def test_every_room_is_declared():
    rooms = {room_of(".".join(p.relative_to(BRIDGE.parent).with_suffix("").parts)) for p in modules()}
    assert rooms - {"bridge", "__init__"} <= set(ALLOWED)


@pytest.mark.parametrize(("room", "line"), [
    ("geometry", "from bridge.cvat.client import CvatClient"),   # pure math knows no client
    ("jobs", "from bridge.pipelines.registry import ROUTES"),     # the queue knows no pipeline
    ("pipelines", "from fastapi import Request"),                  # pipelines know no HTTP
    ("cvat", "from bridge.nuclio.client import NuclioClient"),    # one client knows nothing of the other
    ("config", "from bridge.app.deps import AppState"),           # settings sit at the bottom
])
def test_the_rule_catches_an_upward_import(tmp_path, room, line):
    fake = tmp_path / "bridge" / room / "sneaky.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"{line}\n", encoding="utf-8")
    global BRIDGE
    saved, BRIDGE = BRIDGE, tmp_path / "bridge"
    try:
        assert len(violations([fake])) == 1
    finally:
        BRIDGE = saved
