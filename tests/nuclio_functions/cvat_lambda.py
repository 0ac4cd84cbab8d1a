"""What CVAT 2.73's lambda manager does around a function call, for contract tests.

A transcription of ``cvat/apps/lambda_manager/views.py`` (``LambdaFunction.__init__``/``to_dict``,
``invoke`` and ``DetectionResultConverter``) and of Django's ``TimestampSigner``, limited to what
shapes the bodies a function receives and what CVAT does with its answer:

* metadata: ``annotations.type`` must be a known kind (else ``InvalidFunctionMetadataError``:
  "unknown type: None"); ``spec`` labels unique; trackers list ``supported_shape_types``.
* payloads: request values that are ``None`` are dropped; ``threshold`` only when truthy; interactor
  ``image, pos_points, neg_points, obj_bbox``; detector ``image``; tracker ``image, shapes, states``
  with shapes checked against ``supported_shape_types`` and the states unsigned (8 h max age,
  salt ``cvat-tracker-state:<function id>``), null shapes padded when only states are given.
* answers: detector items mapped by label name, attributes checked against the task's, masks turned
  into CVAT RLE (datumaro ``mask_to_rle`` on the raw crop) or, with ``conv_mask_to_poly``, into
  the polygon of ``points``; skeleton elements filled with ``outside`` points; tracker states signed
  (``signer.sign(json.dumps(state, separators=(",", ":")))``).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

KINDS = ("detector", "interactor", "reid", "tracker")
TRACKER_STATE_MAX_AGE_S = 8 * 3600


class InvalidFunctionMetadataError(Exception):
    """CVAT skips the function in listings (logging a traceback); GET /functions/<id> is a 500."""


class ValidationError(Exception):
    """CVAT answers 400 (or the code given) before calling the function."""


class BadSignature(ValidationError):
    pass


# ------------------------------------------------------------------------- Django's signing

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def b62_encode(s: int) -> str:
    if s == 0:
        return "0"
    sign, s, out = ("-" if s < 0 else ""), abs(s), ""
    while s > 0:
        s, r = divmod(s, 62)
        out = _B62[r] + out
    return sign + out


def b62_decode(s: str) -> int:
    if s == "0":
        return 0
    sign = 1
    if s[0] == "-":
        s, sign = s[1:], -1
    n = 0
    for c in s:
        n = n * 62 + _B62.index(c)
    return sign * n


class TimestampSigner:
    """``django.core.signing.TimestampSigner`` (sha256, sep ``:``) for a given key and salt."""

    sep = ":"

    def __init__(self, key: str, salt: str, clock: Any = time.time):
        self.key, self.salt, self.clock = key, salt, clock

    def signature(self, value: str) -> str:
        hasher = hashlib.sha256
        key = hasher((self.salt + "signer").encode() + self.key.encode()).digest()
        digest = hmac.new(key, msg=value.encode(), digestmod=hasher).digest()
        return base64.urlsafe_b64encode(digest).strip(b"=").decode()

    def sign(self, value: str) -> str:
        value = f"{value}{self.sep}{b62_encode(int(self.clock()))}"
        return f"{value}{self.sep}{self.signature(value)}"

    def unsign(self, signed: str, max_age: float | None = None) -> str:
        if not isinstance(signed, str) or self.sep not in signed:
            raise BadSignature(f'No "{self.sep}" found in value')
        value, sig = signed.rsplit(self.sep, 1)
        if not hmac.compare_digest(sig, self.signature(value)):
            raise BadSignature(f'Signature "{sig}" does not match')
        value, stamp = value.rsplit(self.sep, 1)
        if max_age is not None and self.clock() - b62_decode(stamp) > max_age:
            raise BadSignature("Signature age > max_age seconds")
        return value


# ------------------------------------------------------------------------------- metadata

def function_metadata(config: dict[str, Any]) -> dict[str, Any]:
    """``LambdaFunction(gateway, <Nuclio function config>).to_dict()``: what
    ``GET /api/lambda/functions/<id>`` answers; raises ``InvalidFunctionMetadataError`` like CVAT."""
    name = config["metadata"]["name"]
    ann = config["metadata"].get("annotations") or {}
    kind = ann.get("type")
    if kind not in KINDS:
        raise InvalidFunctionMetadataError(f"{name} lambda function has unknown type: {kind!r}")
    spec = json.loads(ann.get("spec") or "[]")

    def parse_labels(labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        parsed = []
        for label in labels:
            attrs = [{"name": a["name"], "input_type": a["input_type"], "values": a["values"]}
                     for a in label.get("attributes", [])]
            if len(attrs) != len({a["name"] for a in attrs}):
                raise InvalidFunctionMetadataError(f"{name} lambda function has non-unique attributes")
            item = {"name": label["name"], "type": label.get("type", "any"), "attributes": attrs}
            if item["type"] == "skeleton":
                item.update(sublabels=parse_labels(label["sublabels"]), svg=label["svg"])
            parsed.append(item)
        if len(parsed) != len({lb["name"] for lb in labels}):
            raise InvalidFunctionMetadataError(f"{name} lambda function has non-unique labels")
        return parsed

    out: dict[str, Any] = {"id": name, "kind": kind, "labels_v2": parse_labels(spec),
                           "description": config["spec"]["description"], "name": ann.get("name", name),
                           "version": int(ann.get("version", "1"))}
    supported = None
    if "supported_shape_types" in ann:
        supported = [t.strip() for t in str(ann["supported_shape_types"]).split(",") if t.strip()]
        if not supported:
            raise InvalidFunctionMetadataError(f"{name!r} lambda function has no supported shape types")
    if kind == "interactor":
        out.update(min_pos_points=int(ann.get("min_pos_points", 1)), min_neg_points=int(ann.get("min_neg_points", -1)),
                   startswith_box=bool(ann.get("startswith_box", False)),
                   startswith_box_optional=bool(ann.get("startswith_box_optional", False)),
                   help_message=ann.get("help_message", ""), animated_gif=ann.get("animated_gif", ""))
    elif kind == "tracker":
        out["supported_shape_types"] = supported or ["rectangle"]
    out["_declared_shape_types"] = supported  # None: the legacy rectangle protocol (not in to_dict)
    return out


# -------------------------------------------------------------------------------- payloads

def _mandatory(data: dict[str, Any], name: str, fid: str) -> Any:
    if name not in data:
        raise ValidationError(f"`{fid}` lambda function was called without mandatory argument: {name}")
    return data[name]


def _common(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    data = {k: v for k, v in data.items() if v is not None}
    payload: dict[str, Any] = {}
    if data.get("threshold"):
        payload["threshold"] = data["threshold"]
    return data, payload


def interactor_payload(meta: dict[str, Any], data: dict[str, Any], image_b64: str) -> dict[str, Any]:
    """``POST /api/lambda/functions/<interactor>`` with ``data`` -> the body the function gets."""
    data, payload = _common(data)
    fid = meta["id"]
    payload.update(image=image_b64, pos_points=_mandatory(data, "pos_points", fid),
                   neg_points=_mandatory(data, "neg_points", fid), obj_bbox=data.get("obj_bbox", None))
    return payload


def detector_payload(data: dict[str, Any], image_b64: str) -> dict[str, Any]:
    """Detector call (``annotate_frame`` or one frame of auto-annotation): ``threshold`` then ``image``."""
    _, payload = _common(data)
    payload["image"] = image_b64
    return payload


def tracker_payload(meta: dict[str, Any], data: dict[str, Any], image_b64: str,
                    signer: TimestampSigner) -> dict[str, Any]:
    data, payload = _common(data)
    fid, declared = meta["id"], meta["_declared_shape_types"]

    def prepare_shape(shape: Any) -> Any:
        if shape is None:
            return None
        if shape["type"] not in (declared or ["rectangle"]):
            raise ValidationError(f"This function does not support shapes of type {shape['type']!r}")
        return shape["points"] if declared is None else shape

    if "states" not in data:
        shapes, states = _mandatory(data, "shapes", fid), []
    elif "shapes" not in data:
        states = _mandatory(data, "states", fid)
        shapes = [None] * len(states)
    else:
        shapes, states = data["shapes"], data["states"]
    payload.update(image=image_b64, shapes=[prepare_shape(s) for s in shapes],
                   states=[None if s is None else json.loads(signer.unsign(s, TRACKER_STATE_MAX_AGE_S))
                           for s in states])
    return payload


def tracker_answer(meta: dict[str, Any], response: dict[str, Any], signer: TimestampSigner) -> dict[str, Any]:
    """What ``POST /api/lambda/functions/<tracker>`` returns to the caller for the function's answer."""
    response = copy.deepcopy(response)
    if "shapes" in response and not meta["_declared_shape_types"]:
        response["shapes"] = [None if p is None else {"type": "rectangle", "points": p} for p in response["shapes"]]
    response["states"] = [signer.sign(json.dumps(s, separators=(",", ":"))) for s in response["states"]]
    return response


# ------------------------------------------------------------------------- detector answers

def task_label(name: str, type_: str = "any", attributes: Sequence[dict[str, Any]] = (),
               sublabels: Sequence[dict[str, Any]] = (), label_id: int = 0) -> dict[str, Any]:
    """A task label as CVAT stores it; attribute ``values`` joined by newlines like the database."""
    return {"name": name, "type": type_, "id": label_id, "attributes": list(attributes),
            "sublabels": list(sublabels)}


def _compatible(model_type: str, db_type: str) -> bool:
    return (model_type == db_type or (db_type == "any" and model_type != "skeleton")
            or (model_type == "any" and db_type != "skeleton")
            or (model_type in ("mask", "polygon") and db_type in ("mask", "polygon")))


def default_mapping(model_labels: list[dict[str, Any]], task_labels: list[dict[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for ml in model_labels:
        for tl in task_labels:
            if tl["name"] == ml["name"] and _compatible(ml["type"], tl["type"]):
                attrs = {a["name"]: d["name"] for a in ml.get("attributes", []) for d in tl["attributes"]
                         if d["name"] == a["name"]}
                mapping[ml["name"]] = {"name": tl["name"], "attributes": attrs}
                if ml["type"] == "skeleton" and tl["type"] == "skeleton":
                    mapping[ml["name"]]["sublabels"] = default_mapping(ml["sublabels"], tl["sublabels"])
    return mapping


def _check_attr(value: str, db_attr: dict[str, Any]) -> bool:
    kind = db_attr["input_type"]
    if kind == "number":
        low, high, step = map(int, db_attr["values"].split("\n"))
        try:
            v = int(value)
        except ValueError:
            return False
        return low <= v <= high and (v - low) % step == 0
    if kind == "checkbox":
        return value in ("true", "false")
    if kind == "text":
        return True
    if kind in ("select", "radio"):
        return value in db_attr["values"]
    return False


def _attributes(items: list[dict[str, Any]], attr_map: dict[str, str], db_attrs: list[dict[str, Any]]) -> list:
    out = []
    for attr in items:
        if attr["name"] not in attr_map:
            continue
        db = next((d for d in db_attrs if d["name"] == attr_map[attr["name"]]), None)
        if db is not None and _check_attr(attr["value"], db):
            out.append({"name": db["name"], "value": attr["value"]})
    return out


def datumaro_mask_to_rle(binary: np.ndarray) -> list[int]:
    """``datumaro.util.mask_tools.mask_to_rle(...)["counts"]``: runs in column-major order, zeros first."""
    flat = binary.ravel(order="F")
    difs = np.diff(flat, prepend=[1 - flat[0]], append=[1 - flat[-1]])
    (counts,) = np.where(difs != 0)
    counts = np.diff(counts, prepend=[0]) if flat[0] != 0 else np.diff(counts)
    return [int(c) for c in counts]


def convert_detections(meta: dict[str, Any], response: list[dict[str, Any]], task_labels: list[dict[str, Any]],
                       frame: int, mapping: dict[str, Any] | None = None,
                       conv_mask_to_poly: bool = False) -> dict[str, list[dict[str, Any]]]:
    """A detector's answer as CVAT 2.73 stores it (auto-annotation) or returns it (``annotate_frame``):
    ``{"tags": [...], "shapes": [...]}`` of LabeledData, label ids from ``task_labels``."""
    mapping = mapping or default_mapping(meta["labels_v2"], task_labels)
    by_name = {tl["name"]: tl for tl in task_labels}
    kept = []
    for item in copy.deepcopy(response):
        if item["label"] not in mapping:
            continue
        m = mapping[item["label"]]
        db = by_name[m["name"]]
        item["label"] = db["name"]
        item["attributes"] = _attributes(item.get("attributes", []), m.get("attributes", {}), db["attributes"])
        if "elements" in item:
            subs = m["sublabels"]
            item["elements"] = [e for e in item["elements"] if e["label"] in subs]
            for e in item["elements"]:
                model_sub = e["label"]
                sub_db = next(s for s in db["sublabels"] if s["name"] == subs[model_sub]["name"])
                e["label"] = sub_db["name"]
                e["attributes"] = _attributes(e.get("attributes", []), subs[model_sub].get("attributes", {}),
                                              sub_db["attributes"])
        kept.append(item)

    def parse(anno: dict[str, Any], labels: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        label = labels.get(anno["label"])
        if label is None:
            return None
        attr_ids = {a["name"]: a["id"] for a in label["attributes"]}
        attrs = [{"spec_id": attr_ids[a["name"]], "value": a["value"]} for a in anno.get("attributes", [])
                 if a["name"] in attr_ids]
        if anno["type"].lower() == "tag":
            return {"frame": frame, "label_id": label["id"], "source": "auto", "attributes": attrs, "group": None}
        shape = {"frame": frame, "label_id": label["id"], "source": "auto", "attributes": attrs,
                 "group": anno.get("group_id"), "type": anno["type"], "occluded": False,
                 "outside": anno.get("outside", False),
                 "points": anno.get("mask", []) if anno["type"] == "mask" else anno.get("points", []), "z_order": 0}
        if shape["type"] in ("rectangle", "ellipse"):
            shape["rotation"] = anno.get("rotation", 0)
        if anno["type"] == "mask" and "points" in anno and conv_mask_to_poly:
            shape["type"], shape["points"] = "polygon", anno["points"]
        elif anno["type"] == "mask":
            xtl, ytl, xbr, ybr = shape["points"][-4:]
            shape["points"] = datumaro_mask_to_rle(np.array(shape["points"][:-4])[:, np.newaxis]) + [xtl, ytl, xbr, ybr]
        if shape["type"] == "skeleton":
            subs = {s["name"]: s for s in label["sublabels"]}
            elements = [parse(e, subs) for e in anno["elements"]]
            centre = [sum(e["points"][0] for e in elements) / (len(elements) or 1),
                      sum(e["points"][1] for e in elements) / (len(elements) or 1)]
            shape["elements"] = [next((e for e in elements if e["label_id"] == s["id"]), None) or
                                 {"frame": frame, "label_id": s["id"], "source": "auto", "attributes": [],
                                  "group": None, "type": s["type"], "occluded": False, "points": centre,
                                  "outside": True, "z_order": 0} for s in label["sublabels"]]
            if all(e["outside"] for e in shape["elements"]):
                return None
        return shape

    labels = {tl["name"]: tl for tl in task_labels}
    data: dict[str, list[dict[str, Any]]] = {"tags": [], "shapes": []}
    for anno in kept:
        parsed = parse(anno, labels)
        if parsed is not None:
            data["tags" if anno["type"].lower() == "tag" else "shapes"].append(parsed)
    return data
