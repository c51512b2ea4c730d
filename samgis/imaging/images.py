"""Images in: base64 / file bytes → (H, W, 3) uint8 RGB, bounded before decoding; content digests.

Rows run top to bottom and the EXIF orientation is applied, so pixel (row, col) is what a viewer shows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from samgis.errors import ImageTooLarge, InvalidRequest

IMAGE_FORMATS = ("PNG", "JPEG")
DEFAULT_MAX_PIXELS = 4096 * 4096


def image_bytes(data, field_name: str = "image") -> bytes:
    """The bytes of a base64 image: a string, a `data:` URL or `{"b64": "..."}`; whitespace is ignored."""
    if isinstance(data, dict) and set(data) == {"b64"}:
        data = data["b64"]
    if not isinstance(data, str):
        raise InvalidRequest(field_name, "expected a base64 string (or {\"b64\": \"...\"})")
    text = data.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if text.startswith(("http://", "https://")):
        raise InvalidRequest(field_name, "image URLs are not fetched; send the image itself, base64-encoded")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(field_name, f"not valid base64 ({exc})") from None


def decode_image(data, field_name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a base64 PNG/JPEG, rows top to bottom, EXIF orientation applied.

    Raises `InvalidRequest(field_name, …)` for anything undecodable and `ImageTooLarge` when W × H is over
    `max_pixels` (checked from the header, before any pixel is decoded).
    """
    return read_image(image_bytes(data, field_name), field_name, max_pixels)


def read_image(raw: bytes, field_name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB of PNG/JPEG file bytes; as `decode_image` without the base64 step."""
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageTooLarge(field_name, f"the image is {w} × {h} = {w * h} pixels, over the limit of "
                                                f"{max_pixels} pixels; send a smaller image")
            im.load()
            rgb = ImageOps.exif_transpose(im).convert("RGB")
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(field_name, str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidRequest(field_name, f"not a decodable PNG or JPEG image ({_no_reprs(exc)})") from None
    return np.asarray(rgb, dtype=np.uint8)


def _no_reprs(exc: Exception) -> str:
    """An exception's message without object reprs such as "<_io.BytesIO object at 0x7f…>"."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", str(exc)) or type(exc).__name__


def image_digest(image: np.ndarray) -> str:
    """SHA-256 of an (H, W, C) uint8 image's shape and pixels: the embedding cache key of plain images."""
    h = hashlib.sha256(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()
