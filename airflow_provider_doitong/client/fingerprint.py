"""The one fingerprint of an image request: what makes two requests the same image.

Both operators key what they keep by it: ``FluxGenerateOperator``'s submission record in the task
state store holds :func:`fingerprint` (64 hex digits), a batch's ledger and saved items hold
:func:`short_fingerprint` (its first 12, one per item of a batch that may hold a million), the
very digits batch ledgers have always held. :func:`recognises` compares a submission record's
fingerprint with a request, and knows every form the record has held.

What makes the image is hashed: model, prompt, size, quality and version. The webhook URL is left
out: it changes where Doitong reports the job, not the image.
"""

from __future__ import annotations

import hashlib
import json

from airflow_provider_doitong.client.models import ImageRequest

#: How many hex digits of :func:`fingerprint` a batch keeps for each item.
SHORT_CHARS = 12

#: A string as ``json.dumps`` writes it (ASCII, escaped).
_json_str = json.encoder.encode_basestring_ascii


def fingerprint(request: ImageRequest) -> str:
    """The SHA-256 (64 hex digits) of what makes the image.

    :param request: a validated request.
    """
    # The text ``json.dumps([provider, prompt, width, height, quality, version])`` gives (batch
    # ledgers already written hold its first 12 digits), built without the encoder's overhead.
    text = (
        f"[{_json_str(request.provider)}, {_json_str(request.prompt)}, {int(request.width)}, "
        f"{int(request.height)}, {_json_str(request.quality)}, "
        f"{'null' if request.version is None else _json_str(request.version)}]"
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def short_fingerprint(request: ImageRequest) -> str:
    """The first :data:`SHORT_CHARS` hex digits of :func:`fingerprint`: a batch item's key."""
    return fingerprint(request)[:SHORT_CHARS]


def recognises(kept: str, request: ImageRequest) -> bool:
    """Whether a fingerprint kept earlier was made for ``request``.

    :param kept: a :func:`fingerprint`, or a submission record's fingerprint as the provider wrote
        it before this one (a digest of the fields as a JSON object), so a task cleared or retried
        across an upgrade still finds the job it paid for.
    """
    return kept in (fingerprint(request), _object_fingerprint(request))


def _object_fingerprint(request: ImageRequest) -> str:
    """The submission record's fingerprint as earlier versions wrote it; only ever compared with."""
    fields = {
        "model": request.provider,
        "prompt": request.prompt,
        "width": request.width,
        "height": request.height,
        "quality": request.quality,
        "version": request.version,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
