"""The one check of a value that must be one of a few names: a transport, a plan, an ``on_*`` parameter."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(name: str, value: object, allowed: Iterable[str]) -> str:
    """``value``, if it is one of ``allowed``.

    :param name: the parameter or setting, as the user writes it (named in the message).
    :raises ValueError: ``<name> must be one of a, b, c, got 'x'``.
    """
    choices = tuple(allowed)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value
