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
from collections.abc import Callable

from airflow_provider_doitong.client.models import ImageRequest

#: How many hex digits of :func:`fingerprint` a batch keeps for each item.
SHORT_CHARS = 12

#: A string as ``json.dumps`` writes it (ASCII, escaped).
_json_str = json.encoder.encode_basestring_ascii


def fingerprint(request: ImageRequest) -> str:
    """The SHA-256 (64 hex digits) of what makes the image.

    :param request: a validated request.
    """
    head, tail = _around_prompt(request)
    return hashlib.sha256((head + _json_str(request.prompt) + tail).encode("ascii")).hexdigest()


def short_keyer(options: ImageRequest) -> Callable[[str], bytes]:
    """The :func:`short_fingerprint` of requests with ``options``' model, size, quality and version,
    for a prompt, as :data:`SHORT_CHARS` // 2 bytes: the text around the prompt made once, for a
    batch of many prompts sharing their options.

    :param options: a validated request; its own prompt is not used.
    """
    head, tail = _around_prompt(options)
    size = SHORT_CHARS // 2

    def key(prompt: str) -> bytes:
        return hashlib.sha256((head + _json_str(prompt) + tail).encode("ascii")).digest()[:size]

    return key


def _around_prompt(request: ImageRequest) -> tuple[str, str]:
    """The text ``json.dumps([provider, prompt, width, height, quality, version])`` gives, before and
    after the prompt (batch ledgers already written hold its first 12 digits), built without the
    encoder's overhead."""
    head = f"[{_json_str(request.provider)}, "
    version = "null" if request.version is None else _json_str(request.version)
    tail = f", {int(request.width)}, {int(request.height)}, {_json_str(request.quality)}, {version}]"
    return head, tail


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
