"""One item of a batch, and the request rebuilt from values checked before.

:class:`BatchItem` is what the rest of the batch handles; :func:`trusted_request` and the slots'
own setters here build a request (and an item) without checking again what was checked when the
batch read it: :class:`~.item_list.ItemList` builds its items with them, one at a time.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.client.fingerprint import short_fingerprint

#: The longest slug in an image's file name.
SLUG_MAX_CHARS = 40


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchItem:
    """One image of a batch (slotted: a batch may hold a million of them).

    :param index: its position in the batch, from 0; it names the image file and keys the ledger.
    :param source: where it came from, for messages (``line 12``, ``item 3``).
    :param key: the request's fingerprint, if already computed (:func:`build_items` does, once).
    """

    index: int
    request: ImageRequest
    source: str
    key: str = ""

    @property
    def fingerprint(self) -> str:
        """A digest of the request, so a ledger written for other prompts is never applied to these."""
        return self.key or short_fingerprint(self.request)

    def stem(self, total: int) -> str:
        """The image's file name without extension: ``0007-a-fox-in-the-snow``.

        :param total: the batch's size, which sets the number's width (at least four digits).
        """
        width = max(4, len(str(total)))
        return f"{self.index + 1:0{width}d}-{slugify(self.request.prompt)}"


def slugify(text: str) -> str:
    """Lower-case ASCII words joined by ``-``, at most :data:`SLUG_MAX_CHARS` long; ``image`` if none.

    :param text: a prompt.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > SLUG_MAX_CHARS:
            break
        slug = candidate
    return slug or (words[0][:SLUG_MAX_CHARS] if words else "image")


def _check_types(
    prompt: object, provider: object, width: object, height: object, quality: object, version: object
) -> None:
    """The one type check of a saved item's values (exact types: ``True`` is no width)."""
    if not (
        type(prompt) is str
        and type(provider) is str
        and type(width) is int
        and type(height) is int
        and type(quality) is str
        and (version is None or type(version) is str)
    ):
        raise TypeError("a saved item holds a value of the wrong type")


def trusted_request(
    *, prompt: str, provider: str, width: int, height: int, quality: str, version: str | None
) -> ImageRequest:
    """A request rebuilt from values that were checked when the batch read them (an
    :class:`ItemList`, the batch's saved items whose digest was checked): none is checked again but
    for its type (a million prompts would take seconds). Never for a value read from anywhere else."""
    _check_types(prompt, provider, width, height, quality, version)
    request = _new(ImageRequest)
    _set_prompt(request, prompt)
    _set_provider(request, provider)
    _set_width(request, width)
    _set_height(request, height)
    _set_quality(request, quality)
    _set_version(request, version)
    _set_webhook_url(request, None)
    return request


# The slots' own setters: a frozen dataclass refuses ``setattr``, and ``__init__`` would check again.
_new = object.__new__
_slots: dict[str, Any] = dict(vars(ImageRequest))
_set_prompt = _slots["prompt"].__set__
_set_provider = _slots["provider"].__set__
_set_width = _slots["width"].__set__
_set_height = _slots["height"].__set__
_set_quality = _slots["quality"].__set__
_set_version = _slots["version"].__set__
_set_webhook_url = _slots["webhook_url"].__set__
_item_slots: dict[str, Any] = dict(vars(BatchItem))
_set_index = _item_slots["index"].__set__
_set_request = _item_slots["request"].__set__
_set_source = _item_slots["source"].__set__
_set_key = _item_slots["key"].__set__
