"""The package's layers, read from its imports: ``client/`` imports nothing above it and no Airflow,
``storage/`` and ``batch/`` import no Airflow layer (and ``batch/`` no Airflow), and nothing sits at
the package root but ``__init__``, the layers and ``_compat/``.

Every import counts, also one inside a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "airflow_provider_doitong"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
#: The Airflow layer: the sub-packages that may import Airflow and every lower layer.
AIRFLOW_LAYER = ("operators", "triggers", "sensors", "hooks", "ui", "decorators")
#: What each Airflow-free layer may import from the package.
ALLOWED = {
    "client": ("client",),
    "storage": ("client", "storage"),
    "batch": ("client", "storage", "batch"),
}
#: The Airflow names a layer may import: storage writes through Airflow's ``ObjectStoragePath``.
AIRFLOW_ALLOWED = {"storage": {"airflow.sdk.ObjectStoragePath"}}


def imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """``(line, name)`` of each import in ``path``: a module, or ``module.name`` for a from-import."""
    module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def layer_of(name: str, root: Path = ROOT) -> str | None:
    """The package's sub-package that an imported name belongs to; ``""`` for the package root."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 and (root / parts[1]).is_dir() else ""


def problems(layer: str, root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / layer).rglob("*.py")):
        for line, name in imports(path, root):
            where = f"{path.relative_to(root.parent)}:{line} imports {name}"
            if name.split(".")[0] == "airflow" and name not in AIRFLOW_ALLOWED.get(layer, set()):
                found.append(f"{where} (Airflow)")
            target = layer_of(name, root)
            if target is not None and target not in ALLOWED[layer]:
                found.append(f"{where} (above {layer}/)")
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_lower_layer_imports_nothing_above_it_and_no_airflow(layer: str) -> None:
    assert problems(layer) == []


def test_the_rule_sees_every_kind_of_upward_import(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    for folder in ("client", "operators"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "client" / "m.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from airflow_provider_doitong import __version__\n"
        "from airflow_provider_doitong.client import errors\n"
        "from ..operators import links\n"
        "if TYPE_CHECKING:\n    import airflow_provider_doitong._compat\n"
        "def f():\n    from airflow.sdk import Context\n"
    )
    found = problems("client", package)
    assert [line.rsplit(" imports ", 1)[1] for line in found] == [
        "airflow_provider_doitong.__version__ (above client/)",
        "airflow_provider_doitong.operators.links (above client/)",
        "airflow_provider_doitong._compat (above client/)",
        "airflow.sdk.Context (Airflow)",
    ]


def test_nothing_but_the_face_and_the_compatibility_module_at_the_root() -> None:
    loose = sorted(p.name for p in ROOT.glob("*.py"))
    assert loose == ["__init__.py"]
    folders = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists())
    assert folders == sorted({*ALLOWED, *AIRFLOW_LAYER, "_compat"})


def test_the_client_knows_the_packages_version_without_importing_the_root() -> None:
    import airflow_provider_doitong
    from airflow_provider_doitong.client.base import USER_AGENT, VERSION

    assert VERSION == airflow_provider_doitong.__version__
    assert USER_AGENT == f"airflow-provider-doitong/{airflow_provider_doitong.__version__}"
