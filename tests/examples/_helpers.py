"""Loading the example DAG files as modules, and small checks shared by their tests."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.conftest import REPO

EXAMPLES = REPO / "example_dags"
DEFAULT_PROMPTS = EXAMPLES / "prompts" / "daily_prompts.txt"
_loads = itertools.count()


def load_example(name: str) -> ModuleType:
    """Import an example file (``example_dags/<name>.py``) as a fresh module.

    :param name: the file's stem.
    """
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"doitong_examples_{name}_{next(_loads)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def prompts_in(path: Path) -> list[str]:
    """The prompts a file holds, by the documented rules, read independently of the DAG's parser.

    :param path: the prompts file.
    """
    out: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text and not text.startswith("#") and text not in out:
            out.append(text)
    return out


def submissions(emu: Any) -> int:
    """How many submissions the emulator received.

    :param emu: the emulator.
    """
    return int(emu.stats()["requests"].get("submit", 0))
