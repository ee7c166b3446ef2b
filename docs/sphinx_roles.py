"""A Griffe extension: the provider's Sphinx-style docstrings, as mkdocstrings shows them.

- Sphinx cross-reference roles (``:class:`~a.b.C```), which mkdocstrings does not link on its own,
  become optional cross-references: a link when the target is documented on the site, plain code
  otherwise (an Airflow or standard-library name), so a strict build never fails on one.
- ``#:`` comments above a module or class attribute (Sphinx's attribute docs) become its docstring.
"""

from __future__ import annotations

import html
import re
from typing import Any

from griffe import Docstring, Extension, GriffeLoader, Object

#: ``:role:`target```, ``:role:`~a.b.target``` (shown as ``target``) or ``:role:`title <target>```.
ROLE = re.compile(
    r":(?:class|func|meth|attr|data|const|mod|exc|obj):"
    r"`(?:(?P<title>[^`<]+?)\s*<(?P<titled>[\w.]+)>|(?P<short>~?)(?P<target>[\w.]+))`"
)


def _identifier(obj: Object, target: str) -> str:
    """The full path of ``target`` as seen from ``obj``'s scope, or ``target`` itself."""
    head, dot, rest = target.partition(".")
    scope: Object | None = obj
    while scope is not None:
        try:
            return scope.resolve(head) + dot + rest
        except Exception:  # NameResolutionError, or anything else an odd name raises
            scope = scope.parent
    return target


def _link(obj: Object, match: re.Match[str]) -> str:
    if match["titled"]:
        target, title = match["titled"], match["title"]
    else:
        target = match["target"]
        title = target.rsplit(".", 1)[-1] if match["short"] else target
    identifier = html.escape(_identifier(obj, target))
    return f'<autoref identifier="{identifier}" optional><code>{html.escape(title)}</code></autoref>'


def _comment_docstring(obj: Object) -> str | None:
    """The ``#:`` lines right above an attribute, joined; ``None`` if there are none."""
    if obj.lineno is None or obj.filepath is None or obj.parent is None:
        return None
    try:
        lines = obj.lines_collection[obj.filepath]
    except KeyError:
        return None
    found: list[str] = []
    index = obj.lineno - 2
    while index >= 0 and lines[index].strip().startswith("#:"):
        found.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return " ".join(found) or None


class SphinxRoles(Extension):
    """Links Sphinx roles and reads ``#:`` attribute comments, in every object's docstring."""

    def on_object(self, *, obj: Object, loader: GriffeLoader, **kwargs: Any) -> None:
        if obj.is_alias:
            return
        if obj.docstring is None and obj.is_attribute:
            text = _comment_docstring(obj)
            if text:
                obj.docstring = Docstring(
                    text,
                    lineno=obj.lineno,
                    parent=obj,
                    parser=loader.docstring_parser,
                    parser_options=loader.docstring_options,
                )
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(lambda match: _link(obj, match), obj.docstring.value)
