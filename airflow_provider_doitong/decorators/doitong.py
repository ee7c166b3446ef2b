"""``@task.doitong`` and ``@task.doitong_batch``: the operators' TaskFlow forms.

The decorated function returns what to generate; everything else is the operator's, passed to the
decorator as the operator's own parameters. The function runs once per task try, in the worker, just
before the operator's ``execute``. When the task defers (a wait in the triggerer, or a refused
submission waited out), its result is kept as the task's ``doitong_input`` XCom, written only then,
after the operator has checked it; the resumed task takes it from there instead of running the
function again. A new try (a retry, a clear) runs it again, so it should return the same thing for
the same run: the operators reuse a paid job only for the very request it was made for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow.providers.common.compat.sdk import (
    DecoratedOperator,
    TaskDecorator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)
from airflow.sdk import ObjectStoragePath

from airflow_provider_doitong._compat import AirflowFailException
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.operators.flux import FluxGenerateOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The XCom key of what the function returned, as the operator's fields (``prompt``, or ``prompts``
#: and ``prompts_file``).
INPUT_XCOM_KEY = "doitong_input"
#: What the fields the function fills hold until it has run (never sent: they are set before use).
FROM_FUNCTION = "(set from the decorated function's return value when the task runs)"
#: The method name Airflow resumes a task with to fail it (a trigger that failed or timed out).
_FAIL_METHOD = "__fail__"


def _refuse_fields(decorator: str, kwargs: Mapping[str, Any], fields: Collection[str], what: str) -> None:
    given = sorted(set(kwargs) & set(fields))
    if given:
        raise TypeError(f"{decorator} takes {what} from the decorated function's return value, not {given}")


def _prompt_fields(result: Any) -> dict[str, Any]:
    """``FluxGenerateOperator``'s fields for a function's result: a prompt, as a string."""
    if not isinstance(result, str):
        raise AirflowFailException(
            f"@task.doitong: the decorated function must return the prompt as a string, got "
            f"{type(result).__name__}"
        )
    return {"prompt": result}


def _batch_fields(result: Any) -> dict[str, Any]:
    """``FluxBatchOperator``'s fields for a function's result.

    A list (or tuple) is the batch's prompts or items; a ``pathlib.Path`` (any ``os.PathLike``) or an
    ``ObjectStoragePath`` is a prompts file. A string is refused rather than guessed at: it could be
    a prompt, a path or a JSON list.
    """
    if isinstance(result, list | tuple):
        return {"prompts": list(result), "prompts_file": None}
    if isinstance(result, ObjectStoragePath):
        return {"prompts": None, "prompts_file": str(result)}  # keeps the URI's connection id
    if isinstance(result, os.PathLike):
        return {"prompts": None, "prompts_file": os.fspath(result)}
    hint = " (for a prompts file, return pathlib.Path(...) or ObjectStoragePath(...))"
    raise AirflowFailException(
        "@task.doitong_batch: the decorated function must return a list of prompts or items, or a "
        f"prompts file as a pathlib.Path or ObjectStoragePath; got {type(result).__name__}"
        + (hint if isinstance(result, str) else "")
    )


class _FunctionInput:
    """Runs the decorated function once per try, keeps its result across deferrals, restores it on resume.

    Needs, from the operator: ``python_callable``, ``op_args``, ``op_kwargs``, ``task_id``, ``defer``
    and ``resume_execution``. A class sets :attr:`fields` (what the function fills) and
    :meth:`_to_fields` (the function's result as those fields, refusing anything else).
    """

    #: The operator's fields the function's result fills.
    fields: ClassVar[tuple[str, ...]] = ()
    python_callable: Callable[..., Any]
    op_args: Collection[Any]
    op_kwargs: Mapping[str, Any]
    task_id: str
    #: The function's result as fields, and the task instance to keep it with, once known.
    _input: dict[str, Any] | None = None
    _ti: Any = None
    _kept: bool = False

    @staticmethod
    def _to_fields(result: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _fill_from_function(self, context: Context) -> None:
        """Call the function and set the fields from its result; nothing when resumed (already set)."""
        if self._input is not None:
            return
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        self._input = self._to_fields(self.python_callable(*self.op_args, **kwargs))
        self._ti = context["ti"]
        self._set_fields(self._input)

    def _set_fields(self, values: Mapping[str, Any]) -> None:
        for name in self.fields:
            setattr(self, name, values[name])

    def defer(self, **kwargs: Any) -> NoReturn:
        """Keep the function's result in this try's ``doitong_input`` XCom, then defer as the operator does.

        Written here, not when the function returns: by now the operator has checked what it got
        (a prompt holding a secret, for one, is refused before this and never lands in an XCom).
        """
        if self._input is not None and not self._kept:
            self._ti.xcom_push(key=INPUT_XCOM_KEY, value=self._input)
            self._kept = True
        super().defer(**kwargs)  # type: ignore[misc]
        raise AssertionError("defer() returned")  # pragma: no cover - BaseOperator.defer always raises

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Set the fields from this try's ``doitong_input`` XCom, then resume as the operator does.

        A resumed task runs the method its deferral named (``execute_complete``, or
        ``resume_submission`` after a refused submission was waited out), never the function again.
        """
        if next_method != _FAIL_METHOD:
            ti = context["ti"]
            values = ti.xcom_pull(task_ids=self.task_id, key=INPUT_XCOM_KEY, map_indexes=ti.map_index)
            if not isinstance(values, dict) or set(values) != set(self.fields):
                raise AirflowFailException(
                    f"Resumed without the {INPUT_XCOM_KEY!r} XCom that keeps the decorated function's "
                    "result for this try; clear the task to run the function again"
                )
            self._input, self._ti, self._kept = values, ti, True
            self._set_fields(values)
        return super().resume_execution(next_method, next_kwargs, context)  # type: ignore[misc]


class DoitongDecoratedOperator(_FunctionInput, DecoratedOperator, FluxGenerateOperator):
    """``FluxGenerateOperator`` whose prompt is the decorated function's return value (a string).

    The returned prompt is used as it is: not rendered as a template, not read as a file. The other
    template fields (``output_path``, ``provider``, ...) are rendered as usual, and so are the
    function's arguments.

    :param python_callable: the function returning the prompt.
    :param op_args: its positional arguments (templated).
    :param op_kwargs: its keyword arguments (templated).
    :param kwargs: ``FluxGenerateOperator``'s parameters, but the prompt.
    """

    fields = ("prompt",)
    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *(f for f in FluxGenerateOperator.template_fields if f not in ("prompt", "prompt_file")),
    )
    # No template files: an argument such as "notes.txt" reaches the function as that string.
    template_ext: Sequence[str] = ()
    custom_operator_name = "@task.doitong"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse_fields(self.custom_operator_name, kwargs, ("prompt", "prompt_file"), "the prompt")
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            prompt=FROM_FUNCTION,
            **kwargs,
        )

    _to_fields = staticmethod(_prompt_fields)

    def execute(self, context: Context, *args: Any, **kwargs: Any) -> Any:
        """Run the function for the prompt, then the operator (which may defer)."""
        self._fill_from_function(context)
        return FluxGenerateOperator.execute(self, context, *args, **kwargs)


class DoitongBatchDecoratedOperator(_FunctionInput, DecoratedOperator, FluxBatchOperator):
    """``FluxBatchOperator`` whose prompts are the decorated function's return value.

    The function returns a list of prompts (or of items: dicts with ``prompt`` and any of
    ``provider``, ``width``, ``height``, ``quality``, ``version``), or a prompts file as a
    ``pathlib.Path`` (relative: to the DAG file's folder) or an ``ObjectStoragePath``. A string is
    refused: it could be a prompt, a path or a JSON list. Prompts are used as they are, not rendered.

    :param python_callable: the function returning the prompts or the prompts file.
    :param op_args: its positional arguments (templated).
    :param op_kwargs: its keyword arguments (templated).
    :param kwargs: ``FluxBatchOperator``'s parameters (``output_path`` is required), but the prompts.
    """

    fields = ("prompts", "prompts_file")
    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *(f for f in FluxBatchOperator.template_fields if f not in ("prompts", "prompts_file")),
    )
    template_ext: Sequence[str] = ()
    custom_operator_name = "@task.doitong_batch"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse_fields(self.custom_operator_name, kwargs, self.fields, "the prompts")
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            prompts=FROM_FUNCTION,
            **kwargs,
        )

    _to_fields = staticmethod(_batch_fields)

    def execute(self, context: Context, *args: Any, **kwargs: Any) -> Any:
        """Run the function for the prompts, then the operator (which may defer)."""
        self._fill_from_function(context)
        return FluxBatchOperator.execute(self, context, *args, **kwargs)


def doitong_task(python_callable: Callable[..., str] | None = None, **kwargs: Any) -> TaskDecorator:
    """``@task.doitong``: one image, from the prompt the decorated function returns.

    Takes :class:`~airflow_provider_doitong.operators.flux.FluxGenerateOperator`'s parameters but
    ``prompt``; the task's XCom value is the operator's (the job, ``output_path``, credits)::

        @task.doitong(width=1024, height=1024, deferrable=True, output_path="/data/images/")
        def hero(subject: str) -> str:
            return f"A poster of {subject}, flat colours"

    :param python_callable: the function (given when used as ``@task.doitong`` without arguments).
    :param kwargs: the operator's parameters, and ``@task``'s (``task_id``, ``retries``, ...).
    """
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=DoitongDecoratedOperator, **kwargs
    )


def doitong_batch_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """``@task.doitong_batch``: a batch, from the prompts (or prompts file) the function returns.

    Takes :class:`~airflow_provider_doitong.operators.batch.FluxBatchOperator`'s parameters but
    ``prompts`` and ``prompts_file``; the task's XCom value is the batch's summary::

        @task.doitong_batch(output_path="s3://bucket/images/{{ run_id }}/", deferrable=True)
        def variants(subject: str) -> list[str]:
            return [f"{subject}, {style}" for style in ("watercolour", "woodcut")]

    The function returns a list of prompts (or items), or a prompts file as a ``pathlib.Path`` or
    an ``ObjectStoragePath``: ``return Path("prompts/daily.txt")``.

    :param python_callable: the function (given when used as ``@task.doitong_batch`` bare).
    :param kwargs: the operator's parameters, and ``@task``'s (``task_id``, ``retries``, ...).
    """
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=DoitongBatchDecoratedOperator, **kwargs
    )
