"""Deterministic placeholder images: gradients and shapes seeded by the job."""

from __future__ import annotations

import hashlib
import io
import random
from functools import lru_cache

from PIL import Image, ImageDraw

#: The longest side images are drawn at before being scaled to their final size.
DRAW_SIDE = 384
#: Rendered images kept in memory.
CACHE_SIZE = 32


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _draw(seed: int, width: int, height: int) -> Image.Image:
    rng = random.Random(seed)
    scale = DRAW_SIDE / max(width, height)
    w, h = max(8, round(width * scale)), max(8, round(height * scale))
    mask = Image.linear_gradient("L").rotate(rng.uniform(0, 360), resample=Image.BILINEAR, expand=False)
    mask = mask.resize((w, h), Image.BILINEAR)
    image = Image.composite(
        Image.new("RGB", (w, h), _colour(rng)), Image.new("RGB", (w, h), _colour(rng)), mask
    )
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(5, 12)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randint(w // 10, w // 2), y0 + rng.randint(h // 10, h // 2)
        shape = rng.choice(("ellipse", "rectangle", "polygon"))
        if shape == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=_colour(rng))
        elif shape == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=_colour(rng))
        else:
            draw.polygon([(x0, y0), (x1, y0 + (y1 - y0) // 3), (x0 + (x1 - x0) // 2, y1)], fill=_colour(rng))
    return image.resize((width, height), Image.BILINEAR)


#: Image formats the emulator can serve, by their ``FaultConfig.output_format`` name.
FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@lru_cache(maxsize=CACHE_SIZE)
def render_image(job_id: str, prompt: str, width: int, height: int, fmt: str = "jpeg") -> bytes:
    """The image of a job: exactly ``width`` x ``height``, the same bytes every time.

    :param job_id: part of the seed.
    :param prompt: part of the seed.
    :param fmt: ``jpeg``, ``png`` or ``webp``.
    """
    digest = hashlib.sha256(f"{job_id}\n{prompt}".encode()).digest()
    image = _draw(int.from_bytes(digest[:8], "big"), width, height)
    buffer = io.BytesIO()
    image.save(buffer, format=FORMATS[fmt], **({"quality": 85} if fmt != "png" else {}))
    return buffer.getvalue()


def render_jpeg(job_id: str, prompt: str, width: int, height: int) -> bytes:
    """The JPEG of a job (see :func:`render_image`)."""
    return render_image(job_id, prompt, width, height, "jpeg")
