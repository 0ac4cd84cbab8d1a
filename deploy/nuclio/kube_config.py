"""Build a Nuclio function config for the ``kube`` platform: a base ``function.yaml`` (or
``function-gpu.yaml``) with its overlay ``function-kube.yaml`` (or ``function-kube-gpu.yaml``).

The overlay is a JSON merge patch (RFC 7386) with one addition for Kubernetes-style env lists:

* mappings merge key by key; ``null`` deletes the key (e.g. ``platform: null`` drops the local
  platform's Docker ``network``, ``restartPolicy`` and ``mountMode``);
* ``spec.env`` merges by ``name``: an entry replaces the base entry of the same name, an entry
  whose ``value`` is ``null`` removes it, new names are appended;
* any other list or scalar replaces the base value.

Usage (``nuclio_functions/deploy.sh --platform kube`` runs this):

    python3 deploy/nuclio/kube_config.py nuclio_functions/sam2/function-gpu.yaml \
        nuclio_functions/sam2/function-kube-gpu.yaml > /tmp/pth-sam2.yaml

Needs only PyYAML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

OVERLAYS = {"function.yaml": "function-kube.yaml", "function-gpu.yaml": "function-kube-gpu.yaml"}


class OverlayError(ValueError):
    """The overlay cannot apply to this base (wrong shape, or it names another function)."""


def merge_env(base: list[dict[str, Any]], patch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kubernetes env lists by ``name``; ``value: null`` removes the variable."""
    out = [dict(e) for e in base]
    for entry in patch:
        if not isinstance(entry, dict) or "name" not in entry:
            raise OverlayError(f"spec.env entries need a name: {entry!r}")
        idx = next((i for i, e in enumerate(out) if e.get("name") == entry["name"]), None)
        if "value" in entry and entry["value"] is None and "valueFrom" not in entry:
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(dict(entry))
        else:
            out[idx] = dict(entry)
    return out


def merge_patch(base: Any, patch: Any, path: str = "") -> Any:
    """RFC 7386 merge patch, plus ``spec.env`` merged by name."""
    if not isinstance(patch, dict):
        return patch
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        where = f"{path}.{key}" if path else str(key)
        if value is None:
            out.pop(key, None)
        elif where == "spec.env":
            if not isinstance(value, list):
                raise OverlayError("spec.env in the overlay must be a list")
            out[key] = merge_env(out.get(key) or [], value)
        else:
            out[key] = merge_patch(out.get(key), value, where)
    return out


def build(base_path: Path, overlay_path: Path) -> dict[str, Any]:
    """The merged config; the overlay must name the same function as the base (or none)."""
    base = yaml.safe_load(base_path.read_text(encoding="utf-8"))
    overlay = yaml.safe_load(overlay_path.read_text(encoding="utf-8")) or {}
    if not isinstance(base, dict) or not isinstance(overlay, dict):
        raise OverlayError(f"{base_path} and {overlay_path} must both be YAML mappings")
    name = (base.get("metadata") or {}).get("name")
    other = (overlay.get("metadata") or {}).get("name")
    if other is not None and other != name:
        raise OverlayError(f"{overlay_path} is for function {other!r}, but {base_path} is {name!r}")
    return merge_patch(base, overlay)


def overlay_for(base_path: Path) -> Path:
    """``function.yaml`` → ``function-kube.yaml``, ``function-gpu.yaml`` → ``function-kube-gpu.yaml``."""
    try:
        return base_path.with_name(OVERLAYS[base_path.name])
    except KeyError:
        raise OverlayError(f"no kube overlay is defined for {base_path.name}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", type=Path, help="function.yaml or function-gpu.yaml")
    ap.add_argument("overlay", type=Path, nargs="?", help="default: its function-kube[-gpu].yaml")
    args = ap.parse_args(argv)
    try:
        merged = build(args.base, args.overlay or overlay_for(args.base))
    except (OSError, OverlayError, yaml.YAMLError) as exc:
        print(f"kube_config: {exc}", file=sys.stderr)
        return 2
    yaml.safe_dump(merged, sys.stdout, sort_keys=False, allow_unicode=True, width=1000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
