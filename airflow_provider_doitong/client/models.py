"""The request, job and account models: validated against the contract, free of I/O."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_doitong.client import contract
from airflow_provider_doitong.client.contract import JobStatus
from airflow_provider_doitong.client.errors import DoitongProtocolError, DoitongValidationError
from airflow_provider_doitong.client.untrusted import MAX_FIELD_CHARS, read_credits, read_job


def image_side(name: str, value: object) -> int:
    """A width or height as the contract allows it; a templated value may arrive as a digit string.

    :param name: ``width`` or ``height``, named in the error.
    :raises DoitongValidationError: for anything but a multiple of 16 from 256 to 4096.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        side = value
    else:
        text = str(value).strip()
        if not text.isdecimal():
            raise DoitongValidationError(f"{name} must be an integer, got {value!r}", field=name)
        side = int(text)
    if not contract.MIN_SIDE <= side <= contract.MAX_SIDE or side % contract.SIDE_MULTIPLE:
        raise DoitongValidationError(
            f"{name} must be a multiple of {contract.SIDE_MULTIPLE} from {contract.MIN_SIDE} to "
            f"{contract.MAX_SIDE}, got {side}",
            field=name,
        )
    return side


def parse_api_time(value: str | None) -> float | None:
    """An API timestamp (ISO 8601, ``Z`` or an offset) as a Unix time, or ``None``.

    :param value: e.g. ``2024-01-01T00:00:00Z``.
    """
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


#: A control a prompt may not hold: C0 and C1 controls and ``DEL``, but tab, line feed, carriage return.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: Half of a UTF-16 pair, alone: not a character, and not encodable as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Visible ASCII, the common case, found without looking up each character.
_VISIBLE_ASCII = re.compile("[!-~]")
#: Characters Unicode files as letters or symbols that nevertheless show nothing (Hangul fillers,
#: the blank Braille pattern).
INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _visible(char: str) -> bool:
    return unicodedata.category(char)[0] in "LNPS" and char not in INVISIBLE_LETTERS


def prompt_problem(prompt: str) -> str | None:
    """Why a prompt is not text an image can be made from, or ``None``; said without the prompt.

    A prompt must be valid Unicode (it can be encoded as UTF-8: a lone surrogate, half of an
    emoji cut in two, cannot), must hold no control character but tab, line feed and carriage
    return (C0 and C1 controls, ``DEL`` included: they are never part of a description, and a
    file holding them is binary or damaged), and must hold at least one visible character: a
    letter, digit, punctuation mark or symbol. Spaces, format characters (zero-width space
    U+200B, byte order mark U+FEFF, word joiner U+2060), combining marks and variation selectors
    alone show nothing, so the job could not succeed as meant and is not paid for.

    :param prompt: the prompt as given (before trimming).
    """
    found = _SURROGATE.search(prompt)
    if found is not None:
        return (
            f"prompt is not valid Unicode text: character {found.start() + 1} is a lone surrogate "
            f"(U+{ord(found.group()):04X}, e.g. half of an emoji)"
        )
    found = _CONTROL.search(prompt)
    if found is not None:
        return (
            f"prompt holds a control character (U+{ord(found.group()):04X}) at character {found.start() + 1}"
        )
    if _VISIBLE_ASCII.search(prompt) is None and not any(_visible(char) for char in prompt):
        return "prompt has no visible character (only spaces, controls or invisible characters)"
    return None


def checked_prompt(value: Any) -> str:
    """A request's prompt, trimmed, once the contract's rules hold (see :class:`ImageRequest`).

    :raises DoitongValidationError: naming the first rule it breaks.
    """
    if not isinstance(value, str):
        raise DoitongValidationError("prompt must be a string", field="prompt")
    prompt = value.strip()
    if len(prompt) < contract.PROMPT_MIN_CHARS:
        raise DoitongValidationError("prompt is empty", field="prompt")
    problem = prompt_problem(value)
    if problem is not None:
        raise DoitongValidationError(problem, field="prompt")
    if len(prompt) > contract.PROMPT_MAX_CHARS:
        raise DoitongValidationError(
            f"prompt has {len(prompt)} characters after trimming; the limit is {contract.PROMPT_MAX_CHARS}",
            field="prompt",
        )
    return prompt


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str) or value != value.strip():
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageRequest:
    """One image to generate, checked against the contract when built.

    :param provider: ``flux-krea`` or ``flux-dev``.
    :param prompt: the text, 1 to 2,000 characters once trimmed, valid Unicode with a visible
        character and no control but tab and line breaks (see :func:`prompt_problem`).
    :param width: pixels, a multiple of 16 from 256 to 4096.
    :param height: pixels, likewise.
    :param quality: ``standard`` or ``high``.
    :param version: the model version; [A] it equals the provider, and defaults to it.
    :param webhook_url: where Doitong POSTs the finished job, if anywhere.
    :raises DoitongValidationError: naming the field, for any value the contract refuses.
    """

    provider: str
    prompt: str
    width: int = contract.DEFAULT_WIDTH
    height: int = contract.DEFAULT_HEIGHT
    quality: str = contract.DEFAULT_QUALITY
    version: str | None = None
    webhook_url: str | None = None

    def __post_init__(self) -> None:
        if self.provider not in contract.PROVIDERS:
            raise DoitongValidationError(
                f"provider must be one of {', '.join(contract.PROVIDERS)}, got {self.provider!r}",
                field="provider",
            )
        object.__setattr__(self, "prompt", checked_prompt(self.prompt))
        object.__setattr__(self, "width", image_side("width", self.width))
        object.__setattr__(self, "height", image_side("height", self.height))
        if self.quality not in contract.QUALITIES:
            raise DoitongValidationError(
                f"quality must be one of {', '.join(contract.QUALITIES)}, got {self.quality!r}",
                field="quality",
            )
        if self.version in (None, ""):
            object.__setattr__(self, "version", self.provider)
        elif self.version != self.provider:
            raise DoitongValidationError(
                f"version must equal the provider {self.provider!r}, got {self.version!r}", field="version"
            )
        if self.webhook_url is not None and not _is_http_url(self.webhook_url):
            raise DoitongValidationError(
                f"webhook_url must be an http(s) URL, got {self.webhook_url!r}", field="webhook_url"
            )

    @property
    def estimated_credits(self) -> int:
        """[A] What the job should cost; the charged ``creditCost`` is the truth."""
        return contract.credit_cost(
            provider=self.provider, width=self.width, height=self.height, quality=self.quality
        )


@dataclass(frozen=True, kw_only=True)
class Job:
    """A job as the API reports it.

    :param status: the status read through :meth:`JobStatus.parse`: one the client does not know is
        ``UNKNOWN``, still running.
    :param raw_status: the status string as sent.
    :param url: the output URL, once completed.
    :param error_code: for a failed job, its ``error.code``.
    :param error_message: for a failed job, its ``error.message``.
    """

    id: str
    status: JobStatus
    raw_status: str
    provider: str | None = None
    url: str | None = None
    width: int | None = None
    height: int | None = None
    credit_cost: int | None = None
    created_at: str | None = None
    completed_at: str | None = None
    duration: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_api(cls, data: Any) -> Job:
        """Read a job object from any of the API's answers, each field with its type and bounds
        (:func:`~airflow_provider_doitong.client.untrusted.read_job`).

        :param data: the job object (the one under ``data``).
        :raises DoitongProtocolError: if it is not a job (no string id, a status that is not a string).
        """
        return cls(**read_job(data))

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def turnaround(self) -> float | None:
        """Seconds from ``createdAt`` to ``completedAt`` by the API's clock, queueing included
        (``duration`` is processing only); ``None`` unless both are known and in order."""
        start, end = parse_api_time(self.created_at), parse_api_time(self.completed_at)
        return end - start if start is not None and end is not None and end >= start else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, e.g. for trigger events and XCom."""
        out = asdict(self)
        out["status"] = self.status.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        values["status"] = JobStatus(values["status"])
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class Account:
    """[A] The account behind a key: its plan's name and its credit balance."""

    plan: str
    credits: int

    @classmethod
    def from_api(cls, data: Any) -> Account:
        """Read the ``account`` object of an answer.

        :raises DoitongProtocolError: if it has no ``credits``, or they are not a non-negative integer.
        """
        if not isinstance(data, dict) or "credits" not in data:
            raise DoitongProtocolError("expected an account object with credits")
        plan = data.get("plan")
        return cls(
            plan=plan if isinstance(plan, str) and len(plan) <= MAX_FIELD_CHARS else "",
            credits=read_credits(data["credits"]),
        )
