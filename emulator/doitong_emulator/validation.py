"""Checking submissions against the contract's input rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_doitong.client.contract import (
    DEFAULT_HEIGHT,
    DEFAULT_QUALITY,
    DEFAULT_WIDTH,
    MAX_SIDE,
    MIN_SIDE,
    PROMPT_MAX_CHARS,
    PROMPT_MIN_CHARS,
    PROVIDERS,
    QUALITIES,
    SIDE_MULTIPLE,
)
from doitong_emulator.errors import bad_input
from doitong_emulator.jobs import JobRequest

#: How each logical field is spelled in the REST body and in ``generateImage``.
IMAGE_FIELDS: dict[str, str] = {
    "provider": "service",
    "prompt": "prompt",
    "width": "width",
    "height": "height",
    "version": "version",
    "quality": "quality",
    "webhook_url": "webhookUrl",
}
#: How each logical field is spelled in ``generate(input: GenerateInput!)``.
GENERATE_FIELDS: dict[str, str] = {
    "provider": "provider",
    "prompt": "input.text",
    "width": "options.width",
    "height": "options.height",
    "version": "options.version",
    "quality": "options.quality",
    "webhook_url": "webhookUrl",
}


def _string(values: Mapping[str, Any], key: str, names: Mapping[str, str], *, required: bool) -> str | None:
    value = values.get(key)
    if value is None:
        if required:
            raise bad_input(names[key], f'"{names[key]}" is required')
        return None
    if not isinstance(value, str):
        raise bad_input(names[key], f'"{names[key]}" must be a string')
    return value


def _side(values: Mapping[str, Any], key: str, names: Mapping[str, str], default: int) -> int:
    value = values.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_input(names[key], f'"{names[key]}" must be an integer, got {value!r}')
    if not MIN_SIDE <= value <= MAX_SIDE or value % SIDE_MULTIPLE:
        raise bad_input(
            names[key],
            f'"{names[key]}" must be an integer from {MIN_SIDE} to {MAX_SIDE} '
            f"and a multiple of {SIDE_MULTIPLE}, got {value}",
        )
    return value


def validate(values: Mapping[str, Any], names: Mapping[str, str]) -> JobRequest:
    """Check a submission and normalise it.

    :param values: the submitted values by logical name (``provider``, ``prompt``, ``width``,
        ``height``, ``version``, ``quality``, ``webhook_url``); ``None`` means absent.
    :param names: how the client spells each logical field (for messages and ``extensions.field``).
    :raises ApiError: 400 ``BAD_USER_INPUT`` naming the first offending field.
    """
    provider = _string(values, "provider", names, required=True)
    assert provider is not None
    if provider not in PROVIDERS:
        raise bad_input(
            names["provider"],
            f'"{names["provider"]}" must be one of {", ".join(PROVIDERS)}, got {provider!r}',
        )
    prompt = _string(values, "prompt", names, required=True)
    assert prompt is not None
    length = len(prompt.strip())
    if length < PROMPT_MIN_CHARS:
        raise bad_input(names["prompt"], f'"{names["prompt"]}" must not be empty')
    if length > PROMPT_MAX_CHARS:
        raise bad_input(
            names["prompt"],
            f'"{names["prompt"]}" must be at most {PROMPT_MAX_CHARS} characters after trimming, got {length}',
        )
    width = _side(values, "width", names, DEFAULT_WIDTH)
    height = _side(values, "height", names, DEFAULT_HEIGHT)
    version = _string(values, "version", names, required=False)
    if version is not None and version != provider:
        raise bad_input(
            names["version"], f'"{names["version"]}" must equal the provider {provider!r}, got {version!r}'
        )
    quality = _string(values, "quality", names, required=False) or DEFAULT_QUALITY
    if quality not in QUALITIES:
        raise bad_input(
            names["quality"], f'"{names["quality"]}" must be one of {", ".join(QUALITIES)}, got {quality!r}'
        )
    webhook_url = _string(values, "webhook_url", names, required=False)
    if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
        raise bad_input(names["webhook_url"], f'"{names["webhook_url"]}" must be an http(s) URL')
    return JobRequest(
        provider=provider, prompt=prompt, width=width, height=height, quality=quality, webhook_url=webhook_url
    )


def from_image_input(body: Any) -> JobRequest:
    """Validate a REST body or a ``generateImage`` input.

    :param body: the decoded JSON object.
    :raises ApiError: 400 when the body is not an object or a field is invalid.
    """
    if not isinstance(body, Mapping):
        raise bad_input(None, "the request body must be a JSON object")
    values = {key: body.get(name) for key, name in IMAGE_FIELDS.items()}
    return validate(values, IMAGE_FIELDS)


def from_generate_input(data: Mapping[str, Any]) -> JobRequest:
    """Validate a ``generate`` input (``provider``, ``input.text``, ``options``, ``webhookUrl``).

    :param data: the coerced ``GenerateInput``.
    :raises ApiError: 400 naming the offending field.
    """
    text_input = data.get("input") or {}
    options = data.get("options") or {}
    values = {
        "provider": data.get("provider"),
        "prompt": text_input.get("text"),
        "width": options.get("width"),
        "height": options.get("height"),
        "version": options.get("version"),
        "quality": options.get("quality"),
        "webhook_url": data.get("webhookUrl"),
    }
    return validate(values, GENERATE_FIELDS)
