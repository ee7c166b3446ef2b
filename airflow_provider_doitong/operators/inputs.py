"""What the operators are given, checked before any request is sent: the arguments no template
changes (at construction), the single image's request, and a batch's templated numbers and items.

The checks themselves are the client's (:class:`~airflow_provider_doitong.client.models.ImageRequest`,
:func:`~airflow_provider_doitong.client.redaction.secret_problem`) and the batch core's
(:mod:`~airflow_provider_doitong.batch.items`); this turns what they refuse into a task that fails
for good, having spent nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_doitong._compat import AirflowFailException, AirflowSkipException
from airflow_provider_doitong.batch import items as batch_items
from airflow_provider_doitong.client import DoitongValidationError, ImageRequest
from airflow_provider_doitong.client.choices import check_choice
from airflow_provider_doitong.client.models import image_side
from airflow_provider_doitong.client.redaction import secret_problem
from airflow_provider_doitong.operators.prompt_files import PromptFileError, read_prompt_file


def check_arguments(
    *, one_of: tuple[tuple[str, Any], tuple[str, Any]], choices: Mapping[str, tuple[Any, Sequence[str]]]
) -> None:
    """An operator's arguments that no template changes: exactly one of two sources, and each
    choice among its allowed values (``{name: (value, allowed)}``).

    :raises ValueError: when the DAG is parsed, before any task runs.
    """
    (first, first_value), (second, second_value) = one_of
    if (first_value is None) == (second_value is None):
        raise ValueError(f"give exactly one of {first} and {second}")
    for name, (value, allowed) in choices.items():
        check_choice(name, value, allowed)


def prompt_text(prompt: Any, location: str | None) -> Any:
    """The prompt: ``prompt`` as rendered, or the text of the prompt file at ``location`` (plain
    text, never a template)."""
    if location is None:
        return prompt
    try:
        return read_prompt_file(location)
    except PromptFileError as exc:
        raise AirflowFailException(str(exc)) from None


def image_request(
    *,
    prompt: Any,
    prompt_file: str | None,
    provider: Any,
    width: Any,
    height: Any,
    quality: Any,
    version: Any,
    webhook_url: Any,
    max_credits: int | None,
    secrets: tuple[str, ...],
    conn_id: str,
) -> ImageRequest:
    """``FluxGenerateOperator``'s request, checked against the contract, ``max_credits`` and the
    connection's secrets.

    :param prompt_file: where the prompt was read from, named when it is refused.
    """
    try:
        request = ImageRequest(
            provider=provider,
            prompt=prompt,
            width=image_side("width", width),
            height=image_side("height", height),
            quality=quality,
            version=version or None,
            webhook_url=webhook_url or None,
        )
    except DoitongValidationError as exc:
        source = f" (the text of prompt_file {prompt_file})" if prompt_file else ""
        raise AirflowFailException(
            f"Invalid Doitong request: {exc.message}{source}; nothing was submitted"
        ) from None
    if max_credits is not None and request.estimated_credits > max_credits:
        raise AirflowFailException(
            f"This image is estimated at {request.estimated_credits} credits, over max_credits="
            f"{max_credits}; nothing was submitted"
        )
    problem = secret_problem(request, secrets, conn_id=conn_id)
    if problem is not None:
        # a traceback that shows locals (Airflow 3.0's) must not print the secret
        del prompt, request, secrets
        raise AirflowFailException(f"Refusing the Doitong request: {problem}; nothing was submitted")
    return request


def batch_numbers(poll_interval: Any, max_credits: Any) -> tuple[float, int | None]:
    """A batch's ``poll_interval`` and ``max_credits`` as numbers (a template may render them as strings)."""
    try:
        poll = float(poll_interval)
        budget = max_credits
        if isinstance(budget, str):
            budget = None if budget.strip() in ("", "None", "null") else int(budget)
        budget = None if budget is None else int(budget)
    except (TypeError, ValueError):
        raise AirflowFailException(
            f"poll_interval must be a number and max_credits an integer, got {poll_interval!r} "
            f"and {max_credits!r}"
        ) from None
    if poll <= 0 or (budget is not None and budget < 0):
        raise AirflowFailException("poll_interval must be positive and max_credits not negative")
    return poll, budget


def batch_item_list(
    *, prompts: Any, prompts_file: str | None, defaults: batch_items.ItemDefaults, log: Any
) -> batch_items.ItemList:
    """A batch's items, each checked (the file streamed, the items held compactly); repeated items once.

    :param prompts_file: the prompts file's full path or URI, if the batch reads one.
    :raises AirflowSkipException: for a batch without prompts.
    """
    try:
        entries = batch_items.load_entries(prompts=prompts, prompts_file=prompts_file)
        found, repeats = batch_items.build_items(entries, defaults)
    except batch_items.BatchInputError as exc:
        raise AirflowFailException(str(exc)) from None
    if repeats:
        log.warning("%d repeated items are generated once", repeats)
    if not found:
        raise AirflowSkipException("The batch has no prompts; nothing to generate")
    return found
