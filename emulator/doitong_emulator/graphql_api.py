"""The GraphQL endpoint: ``contract.SDL`` executed by graphql-core with the emulator's resolvers."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from graphql import (
    ArgumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLResolveInfo,
    Node,
    ObjectFieldNode,
    OperationType,
    build_schema,
    execute,
    parse,
    validate,
)
from graphql.language import DocumentNode, ListValueNode, ObjectValueNode, OperationDefinitionNode
from graphql.utilities import get_operation_ast

from airflow_provider_doitong.client.contract import HTTP_STATUS_BY_CODE, SDL, ErrorCode
from doitong_emulator import hostile_values
from doitong_emulator.accounts import AccountState
from doitong_emulator.errors import ApiError, bad_input
from doitong_emulator.state import EmulatorState
from doitong_emulator.stats import KIND_ACCOUNT, KIND_OTHER, KIND_STATUS, KIND_SUBMIT
from doitong_emulator.validation import from_generate_input, from_image_input

log = logging.getLogger(__name__)

SCHEMA = build_schema(SDL)


@dataclass
class GraphQLContext:
    """What resolvers see: the emulator's state and the caller's account."""

    state: EmulatorState
    account: AccountState


def _resolve_job(_root: Any, info: GraphQLResolveInfo, id: str) -> dict[str, Any]:  # noqa: A002
    context: GraphQLContext = info.context
    job = context.state.find_job(context.account, id)
    if job is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"Job {id!r} not found")
    return context.state.job_json(job)


def _resolve_account(_root: Any, info: GraphQLResolveInfo) -> dict[str, Any]:
    account = info.context.account
    return {"plan": account.config.plan, "credits": account.credits}


def _resolve_generate(_root: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
    context: GraphQLContext = info.context
    job = context.state.submit(context.account, from_generate_input(input))
    return context.state.job_json(job, at_submission=True)


def _resolve_generate_image(_root: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
    context: GraphQLContext = info.context
    job = context.state.submit(context.account, from_image_input(input))
    return context.state.job_json(job, at_submission=True)


SCHEMA.query_type.fields["job"].resolve = _resolve_job  # type: ignore[union-attr]
SCHEMA.query_type.fields["account"].resolve = _resolve_account  # type: ignore[union-attr]
SCHEMA.mutation_type.fields["generate"].resolve = _resolve_generate  # type: ignore[union-attr]
SCHEMA.mutation_type.fields["generateImage"].resolve = _resolve_generate_image  # type: ignore[union-attr]


@dataclass(frozen=True)
class PreparedQuery:
    """A parsed and validated query.

    :param document: the parsed document, or ``None`` on a syntax error.
    :param errors: syntax or validation errors.
    """

    document: DocumentNode | None
    errors: tuple[GraphQLError, ...]


@lru_cache(maxsize=512)
def prepare(query: str) -> PreparedQuery:
    """Parse and validate a query once; the same text is served from a cache."""
    try:
        document = parse(query)
    except GraphQLError as error:
        return PreparedQuery(None, (error,))
    return PreparedQuery(document, tuple(validate(SCHEMA, document)))


def _request_parts(payload: Any) -> tuple[str, dict[str, Any] | None, str | None]:
    if not isinstance(payload, dict):
        raise bad_input(None, "the request body must be a JSON object")
    query = payload.get("query")
    if not isinstance(query, str) or not query.strip():
        raise bad_input("query", '"query" is required and must be a non-empty string')
    variables = payload.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise bad_input("variables", '"variables" must be a JSON object')
    operation_name = payload.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise bad_input("operationName", '"operationName" must be a string')
    return query, variables, operation_name


def _operation(payload: Any) -> OperationDefinitionNode | None:
    try:
        query, _, operation_name = _request_parts(payload)
    except ApiError:
        return None
    prepared = prepare(query)
    if prepared.document is None:
        return None
    return get_operation_ast(prepared.document, operation_name)


def _root_fields(operation: OperationDefinitionNode) -> list[str]:
    return [sel.name.value for sel in operation.selection_set.selections if isinstance(sel, FieldNode)]


def classify(payload: Any) -> str:
    """The request kind of a GraphQL body: ``submit``, ``status``, ``account`` or ``other``.

    :param payload: the decoded JSON body.
    """
    operation = _operation(payload)
    if operation is None:
        return KIND_OTHER
    if operation.operation is OperationType.MUTATION:
        return KIND_SUBMIT
    names = set(_root_fields(operation))
    if "job" in names:
        return KIND_STATUS
    if "account" in names:
        return KIND_ACCOUNT
    return KIND_OTHER


def form(payload: Any) -> str | None:
    """Which GraphQL field a body asks for (``generate``, ``generateImage``, ``job``, ``account``), for
    the request log; several root fields are joined with ``+``; ``None`` for an unreadable body.

    :param payload: the decoded JSON body.
    """
    operation = _operation(payload)
    if operation is None:
        return None
    return "+".join(dict.fromkeys(_root_fields(operation))) or None


_AT_PATH = re.compile(r"invalid value at \.([\w.\[\]]+):")
_REQUIRED_FIELD = re.compile(r"required field '(\w+)'")
_VARIABLE = re.compile(r"Variable '\$(\w+)'")


def _field_from_message(message: str) -> str | None:
    path = _AT_PATH.search(message)
    required = _REQUIRED_FIELD.search(message)
    if required:
        return f"{path.group(1)}.{required.group(1)}" if path else required.group(1)
    if path:
        return path.group(1)
    variable = _VARIABLE.search(message)
    return variable.group(1) if variable else None


def _field_of_node(document: DocumentNode | None, target: Node) -> str | None:
    def walk(node: Any, prefix: str) -> str | None:
        if node is target:
            return prefix or None
        if isinstance(node, ObjectValueNode):
            for item in node.fields:
                found = walk(item.value, f"{prefix}.{item.name.value}" if prefix else item.name.value)
                if found:
                    return found
        elif isinstance(node, ListValueNode):
            for item in node.values:
                found = walk(item, prefix)
                if found:
                    return found
        return None

    if document is None:
        return None
    stack: list[Any] = list(document.definitions)
    while stack:
        node = stack.pop()
        if isinstance(node, ArgumentNode):
            found = walk(node.value, "")
            if found:
                return found
            if node.value is target:
                return node.name.value
            continue
        if isinstance(node, ObjectFieldNode):
            continue
        for key in getattr(node, "keys", ()):
            child = getattr(node, key, None)
            if isinstance(child, Node):
                stack.append(child)
            elif isinstance(child, (tuple, list)):
                stack.extend(item for item in child if isinstance(item, Node))
    return None


def _input_error(error: GraphQLError, document: DocumentNode | None) -> dict[str, Any]:
    field = _field_from_message(error.message)
    if field is None and error.nodes:
        field = _field_of_node(document, error.nodes[0])
    message = error.message if field is None else f'Invalid "{field}": {error.message}'
    formatted: dict[str, Any] = {"message": message}
    if error.locations:
        formatted["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    extensions: dict[str, Any] = {"code": ErrorCode.BAD_USER_INPUT.value}
    if field is not None:
        extensions["field"] = field
    formatted["extensions"] = extensions
    return formatted


@dataclass
class GraphQLAnswer:
    """What the endpoint sends back.

    :param headers: extra headers (``Retry-After`` of a refused mutation).
    """

    body: dict[str, Any]
    status: int
    headers: dict[str, str]


def _execution_error(error: GraphQLError) -> tuple[dict[str, Any], int, dict[str, str]]:
    original = error.original_error
    formatted: dict[str, Any] = {"message": error.message}
    if error.locations:
        formatted["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path is not None:
        formatted["path"] = list(error.path)
    if isinstance(original, ApiError):
        formatted["extensions"] = original.extensions
        return formatted, original.status, original.headers
    if original is not None:
        log.error("Unexpected error while resolving %s", error.path, exc_info=original)
        formatted["message"] = "Internal server error"
        formatted["extensions"] = {"code": ErrorCode.INTERNAL_SERVER_ERROR.value}
        return formatted, HTTP_STATUS_BY_CODE[ErrorCode.INTERNAL_SERVER_ERROR], {}
    formatted["extensions"] = {"code": ErrorCode.BAD_USER_INPUT.value, **(error.extensions or {})}
    return formatted, HTTP_STATUS_BY_CODE[ErrorCode.BAD_USER_INPUT], {}


def run(payload: Any, *, state: EmulatorState, account: AccountState) -> GraphQLAnswer:
    """Execute one GraphQL request for an authenticated account.

    The HTTP status is 200 whenever ``data`` holds something; when ``data`` is null (a refused
    mutation, bad variables) it is the first error's status (400, 402, 429, ...). An unexpected
    error in a resolver makes it 500.

    :param payload: the decoded JSON body (``query``, ``variables``, ``operationName``).
    :raises ApiError: 400 for a malformed request, a syntax or a validation error.
    """
    query, variables, operation_name = _request_parts(payload)
    prepared = prepare(query)
    if prepared.errors:
        errors = [_input_error(error, prepared.document) for error in prepared.errors]
        return GraphQLAnswer({"errors": errors}, HTTP_STATUS_BY_CODE[ErrorCode.BAD_USER_INPUT], {})
    result = execute(
        SCHEMA,
        prepared.document,  # type: ignore[arg-type]
        context_value=GraphQLContext(state=state, account=account),
        variable_values=variables,
        operation_name=operation_name,
    )
    assert isinstance(result, ExecutionResult)
    if result.data and state.faults.config.credit_cost_as == "string":
        # GraphQL's Int would turn "10" back into 10: the hostile form is applied after it.
        hostile_values.credit_costs_as_strings(result.data)
    return _answer(result, prepared.document)


def _answer(result: ExecutionResult, document: DocumentNode | None) -> GraphQLAnswer:
    if not result.errors:
        return GraphQLAnswer({"data": result.data}, 200, {})
    if result.data is None and all(error.path is None for error in result.errors):
        errors = [_input_error(error, document) for error in result.errors]
        return GraphQLAnswer({"errors": errors}, HTTP_STATUS_BY_CODE[ErrorCode.BAD_USER_INPUT], {})
    formatted = [_execution_error(error) for error in result.errors]
    body: dict[str, Any] = {"errors": [item[0] for item in formatted]}
    if result.data is not None:
        body["data"] = result.data
    internal = HTTP_STATUS_BY_CODE[ErrorCode.INTERNAL_SERVER_ERROR]
    if any(status == internal for _, status, _ in formatted):
        return GraphQLAnswer(body, internal, {})
    if result.data is not None:
        return GraphQLAnswer(body, 200, {})
    _, status, headers = formatted[0]
    return GraphQLAnswer(body, status, dict(headers))
