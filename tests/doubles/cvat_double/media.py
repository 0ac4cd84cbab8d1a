"""Frame data like CVAT serves it: image sizes, original/compressed frames, chunk zips."""

from __future__ import annotations

import io
import mimetypes
import os
import zipfile
from dataclasses import dataclass

from PIL import Image

from .util import bad_request


@dataclass
class Frame:
    """One uploaded image."""

    name: str
    data: bytes
    width: int
    height: int


def read_frame(name: str, data: bytes) -> Frame:
    """Parse an uploaded file; a non-image gets a 400 as CVAT's media checks give."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Exception as e:  # noqa: BLE001 - PIL (or a plugin patching Image.open, e.g. ultralytics) refused it
        raise bad_request(f"File {name!r} is not a supported image") from e
    return Frame(name=name, data=data, width=width, height=height)


def default_chunk_size(frame: Frame) -> int:
    """CVAT's default chunk size: about 36 Full-HD frames' worth of pixels, 2..72 frames."""
    return max(2, min(72, 36 * 1920 * 1080 // max(1, frame.width * frame.height)))


def compressed(frame: Frame, quality: int) -> bytes:
    """The frame re-encoded as JPEG at the task's image quality (CVAT's ``compressed`` quality)."""
    with Image.open(io.BytesIO(frame.data)) as im:
        rgb = im.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def mime_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def chunk_zip(frames: list[Frame], *, original: bool, quality: int) -> bytes:
    """A chunk zip as CVAT writes it: members ``000000.ext`` in frame order (relative to the chunk)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, frame in enumerate(frames):
            if original:
                zf.writestr(f"{i:06d}{os.path.splitext(frame.name)[1]}", frame.data)
            else:
                zf.writestr(f"{i:06d}.jpeg", compressed(frame, quality))
    return out.getvalue()
