"""docs/contract.md names, beside each assumption, where it is held: every name must exist."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.client import contract, protocol, retry

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_DOC = ROOT / "docs" / "contract.md"
#: Where a bare name is looked up, in order.
MODULES = (contract, protocol, retry)
CODE = re.compile(r"`([^`]+)`")


def _pointers(text: str) -> list[str]:
    """The code spans after each "→" (to the end of its sentence) and in the table's "constant" column."""
    names: list[str] = []
    for chunk in re.findall(r"→(.*?)(?:\.\s|\n\n|\n- |\Z)", text, re.S):
        names += CODE.findall(chunk)
    table = text.split("| assumption | constant |", 1)[1]
    for row in table.splitlines()[2:]:
        if row.startswith("|"):
            names += CODE.findall(row.split("|")[2])
    return [name for name in names if name != "NAME"]


def _resolve(name: str) -> Any:
    if "/" in name or name.endswith(".py"):
        path = ROOT / "airflow_provider_doitong" / name
        assert path.exists(), path
        return path
    name = name.removesuffix("()")
    subscript = re.fullmatch(r"(\w+)\[(.+)\]", name)
    if subscript:
        return _resolve(subscript[1])[ast.literal_eval(subscript[2])]
    head, *rest = name.split(".")
    if head in ("airflow_provider_doitong", "doitong_emulator"):
        module_name, attr = name.rsplit(".", 1)
        return getattr(importlib.import_module(module_name), attr)
    for module in MODULES:
        if hasattr(module, head):
            value = getattr(module, head)
            for attr in rest:
                value = getattr(value, attr) if hasattr(value, attr) else value.__dataclass_fields__[attr]
            return value
    raise LookupError(name)


def test_the_contract_doc_points_at_names() -> None:
    names = _pointers(CONTRACT_DOC.read_text(encoding="utf-8"))
    assert len(names) > 40  # the parsing found the pointers


@pytest.mark.parametrize("name", sorted(set(_pointers(CONTRACT_DOC.read_text(encoding="utf-8")))))
def test_each_name_the_contract_doc_points_at_exists(name: str) -> None:
    _resolve(name)


def test_every_assumption_in_the_doc_has_a_pointer() -> None:
    text = CONTRACT_DOC.read_text(encoding="utf-8")
    body = text.split("## Where each assumption lives", 1)[0]
    paragraphs = re.split(r"\n\n(?!→)|\n- ", body)
    missing = [p.strip()[:80] for p in paragraphs if "[A]" in p and "→" not in p and "marked" not in p]
    assert not missing
