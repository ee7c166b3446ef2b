"""What a downloaded body is, judged from its own bytes: PNG, JPEG or WebP, and whole.

A file's extension comes from here, never from the URL it was fetched from: a URL ending in ``.py``
still stores ``<name>.png`` when the bytes are a PNG, and a body that is not a whole image is never
stored at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_doitong.client.errors import DoitongBadImage


@dataclass(frozen=True)
class ImageType:
    """One image format the provider stores: its name, file extension and media type."""

    name: str
    extension: str
    media_type: str


PNG = ImageType("PNG", "png", "image/png")
JPEG = ImageType("JPEG", "jpg", "image/jpeg")
WEBP = ImageType("WebP", "webp", "image/webp")
IMAGE_TYPES: tuple[ImageType, ...] = (PNG, JPEG, WEBP)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The IEND chunk every PNG ends with: zero length, type, CRC.
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: Bytes after IEND tolerated (some encoders pad); anything longer is not one PNG.
PNG_TRAILER_SLACK = 1024
JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
WEBP_CHUNKS = (b"VP8 ", b"VP8L", b"VP8X")


def sniff_image_type(data: bytes) -> ImageType | None:
    """The image format the first bytes announce (magic numbers only), or ``None``."""
    if data.startswith(PNG_SIGNATURE):
        return PNG
    if data.startswith(JPEG_SOI):
        return JPEG
    if len(data) >= 16 and data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] in WEBP_CHUNKS:
        return WEBP
    return None


def _describe(data: bytes) -> str:
    """What a non-image body looks like, in a few words (never echoing it)."""
    head = data[:64].lstrip().lower()
    if not data:
        return "an empty body"
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        return "an HTML or XML page"
    if head.startswith((b"{", b"[")):
        return "a JSON document"
    return f"{len(data)} bytes that are not a PNG, JPEG or WebP image"


def _whole(kind: ImageType, data: bytes) -> str | None:
    """Why an image of a known type is not whole, or ``None`` if it is."""
    if kind is PNG:
        end = data.rfind(PNG_IEND)
        if end < len(PNG_SIGNATURE) or len(data) - (end + len(PNG_IEND)) > PNG_TRAILER_SLACK:
            return "a truncated PNG (no IEND chunk at its end)"
    elif kind is JPEG:
        if not data.rstrip(b"\x00").endswith(JPEG_EOI):
            return "a truncated JPEG (no end-of-image marker)"
    elif kind is WEBP:
        declared = int.from_bytes(data[4:8], "little") + 8
        if declared != len(data):
            return f"a truncated WebP (its RIFF header declares {declared} bytes, {len(data)} came)"
    return None


def check_image(data: bytes, *, what: str = "image download") -> ImageType:
    """The type of a whole PNG, JPEG or WebP image.

    :raises DoitongBadImage: for anything else (HTML, JSON, empty, truncated), naming what came.
    """
    kind = sniff_image_type(data)
    if kind is None:
        raise DoitongBadImage(f"Doitong {what}: the body is {_describe(data)}, not an image")
    problem = _whole(kind, data)
    if problem is not None:
        raise DoitongBadImage(f"Doitong {what}: the body is {problem}")
    return kind
