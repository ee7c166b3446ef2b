"""Keeping run-conf paths inside the folders a deployment allows: a DAG's prompts and output roots.

A user who may trigger a DAG may not thereby read or write any file the worker can reach: a path
from the run conf is used only if it is one of the configured roots (local folders or
``ObjectStoragePath`` URIs, set by the deployment, e.g. in an environment variable) or inside one,
after ``..`` and symlinks are resolved. The daily batch example uses it for ``prompts_file`` and
``output_root``.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence

from airflow_provider_doitong._compat import AirflowFailException


def configured_roots(env: str, default: str) -> list[str]:
    """The roots named in the environment variable ``env`` (comma-separated), else ``default``.

    Local roots become absolute with symlinks resolved; URIs lose a trailing ``/``.
    """
    found = [r.strip() for r in (os.environ.get(env) or default).split(",") if r.strip()]
    return [r.rstrip("/") if "://" in r else os.path.realpath(os.path.expanduser(r)) for r in found]


def _normal_uri(uri: str) -> str:
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://{posixpath.normpath('/' + rest).lstrip('/')}"


def inside_roots(location: str, roots: Sequence[str], *, what: str) -> str:
    """``location`` resolved (a relative one against the first root) if it is a root or inside one.

    :param what: the parameter's name, for the message.
    :raises AirflowFailException: if it is anywhere else (nothing is read or written).
    """
    if not roots:
        raise AirflowFailException(f"no root is configured for {what}")
    if "://" in location:
        resolved = _normal_uri(location)
    elif "://" in roots[0]:
        resolved = _normal_uri(f"{roots[0]}/{location}")
    else:
        resolved = os.path.realpath(os.path.join(roots[0], os.path.expanduser(location)))
    for root in roots:
        if resolved == root or resolved.startswith(root.rstrip("/") + "/"):
            return resolved
    raise AirflowFailException(f"{what} {location!r} is outside the configured roots {list(roots)}")
