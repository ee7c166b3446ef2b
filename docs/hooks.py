"""MkDocs hooks: parts of the site that come from the repository itself, so they cannot go stale.

- Files kept elsewhere in the repository (the benchmarks' plot) are published without a copy.
- ``<!-- connection-extras -->`` in a page becomes the table of the ``doitong`` connection's
  extras, read from ``airflow_provider_doitong.hooks.connection.CONN_FIELDS`` (what the UI form shows).
- ``<!-- changelog -->`` becomes ``CHANGELOG.md``, or a line saying there is none yet.
- ``<!-- readme: HEADING -->`` becomes the body of the README's section of that heading (the
  README's tables stay the one place they are written; links to its own anchors become plain text).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent

#: Repository files published as they are, under the docs path given.
EXTERNAL_FILES = {
    "benchmarks/requests_per_second.png": "benchmarks/requests_per_second.png",
}
CONNECTION_EXTRAS_MARKER = "<!-- connection-extras -->"
CHANGELOG_MARKER = "<!-- changelog -->"
CHANGELOG = ROOT / "CHANGELOG.md"
README = ROOT / "README.md"
README_SECTION = re.compile(r"<!-- readme: (?P<heading>.+?) -->")


def on_files(files: Files, config: Any) -> Files:
    for source, dest in EXTERNAL_FILES.items():
        files.append(File.generated(config, dest, abs_src_path=str(ROOT / source)))
    return files


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def connection_extras_table() -> str:
    """The connection's extras as a Markdown table: name, type, default, the form's description.

    Read from this checkout, installed or not (the module needs no Airflow; its client needs the
    packages ``docs/requirements.txt`` lists).
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from airflow_provider_doitong.hooks.connection import CONN_FIELDS

    rows = ["| extra | form label | type | default | description |", "|---|---|---|---|---|"]
    for name, field in CONN_FIELDS.items():
        schema = field.get("schema", {})
        types = [t for t in schema.get("type", []) if t != "null"]
        if schema.get("format") == "password":
            types.append("secret")
        choices = [c for c in schema.get("enum", []) if c is not None]
        kind = " or ".join(f"`{c}`" for c in choices) if choices else ", ".join(types)
        default = f"`{json.dumps(schema['default'])}`" if "default" in schema else ""
        rows.append(
            f"| `{name}` | {_cell(field.get('label', ''))} | {_cell(kind)} | {_cell(default)} | "
            f"{_cell(field.get('description', ''))} |"
        )
    return "\n".join(rows)


def changelog() -> str:
    if CHANGELOG.exists():
        return CHANGELOG.read_text(encoding="utf-8")
    return "# Changelog\n\nNo release has been made yet; `CHANGELOG.md` will list the changes of each one.\n"


def readme_section(heading: str) -> str:
    """The body of the README's section ``heading``, up to the next heading of its level or above."""
    lines = README.read_text(encoding="utf-8").splitlines()
    starts = [
        n for n, line in enumerate(lines) if line.startswith("#") and line.lstrip("#").strip() == heading
    ]
    if not starts:
        raise ValueError(f"README.md has no section {heading!r}")
    start = starts[0]
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    body: list[str] = []
    in_code = False
    for line in lines[start + 1 :]:
        in_code = in_code != line.startswith("```")
        next_level = len(line) - len(line.lstrip("#"))
        if not in_code and next_level and next_level <= level and line[next_level : next_level + 1] == " ":
            break
        body.append(line)
    # Links to the README's own anchors have nothing to point at here.
    return re.sub(r"\[([^\]]+)\]\(#[^)]*\)", r"\1", "\n".join(body)).strip() + "\n"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if CONNECTION_EXTRAS_MARKER in markdown:
        markdown = markdown.replace(CONNECTION_EXTRAS_MARKER, connection_extras_table())
    if CHANGELOG_MARKER in markdown:
        markdown = markdown.replace(CHANGELOG_MARKER, changelog())
    return README_SECTION.sub(lambda match: readme_section(match["heading"]), markdown)
