"""Who writes an output folder (or one file in it): an exclusive claim, and a probe that the folder takes writes.

A claim is a small JSON file created exclusively (:meth:`Place.create`: a hard link locally,
``If-None-Match: *`` on S3) under ``.doitong/``, holding its owner, the task instance
(``dag_id``, ``run_id``, ``task_id``, ``map_index``). Its owner's retries, resumes and clears
find their own claim and go on; any other writer is refused, whenever it comes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_provider_doitong.client.safety import safe_component
from airflow_provider_doitong.storage.paths import UnsafeOutputPath
from airflow_provider_doitong.storage.places import Place

#: The folder under ``output_path`` that holds the provider's own files (ledgers, claims).
PROVIDER_FOLDER = ".doitong"
#: A whole folder's claim (``FluxBatchOperator``), in :data:`PROVIDER_FOLDER`.
FOLDER_CLAIM = "claim.json"
#: One file's claims (``FluxGenerateOperator``), in ``.doitong/files/``.
FILE_CLAIMS = "files"
CLAIM_FORMAT = "doitong-claim"
OWNER_KEYS = ("dag_id", "run_id", "task_id", "map_index")


class OutputClaimed(UnsafeOutputPath):
    """The folder or file is another task instance's; nothing of it was touched.

    :param owner: the claim's owner as found (``None`` if the claim cannot be read).
    """

    def __init__(self, message: str, *, owner: Mapping[str, Any] | None) -> None:
        super().__init__(message)
        self.owner = dict(owner) if owner is not None else None


def describe(owner: Mapping[str, Any] | None) -> str:
    """An owner as a user reads it: ``dag d, run r, task t[3]``."""
    if not owner:
        return "an unknown writer (its claim cannot be read)"
    index = owner.get("map_index")
    task = f"{owner.get('task_id')}" + (f"[{index}]" if isinstance(index, int) and index >= 0 else "")
    return f"dag {owner.get('dag_id')}, run {owner.get('run_id')}, task {task}"


def _owner_of(data: bytes | None) -> dict[str, Any] | None:
    try:
        doc = json.loads(data or b"")
    except ValueError:
        return None
    owner = doc.get("owner") if isinstance(doc, dict) and doc.get("format") == CLAIM_FORMAT else None
    return owner if isinstance(owner, dict) else None


def claim(place: Place, name: str, owner: Mapping[str, Any], *, what: str) -> bool:
    """Claim ``name`` in ``place`` for ``owner``, or find that it already holds the claim.

    :param what: what is claimed, for the message (``the folder /x``, ``the file /x/a.jpg``).
    :return: whether the claim was made now (``False``: ``owner`` made it earlier).
    :raises OutputClaimed: if another task instance holds it (or it cannot be read).
    """
    mine = {key: owner[key] for key in OWNER_KEYS}
    doc = {"format": CLAIM_FORMAT, "owner": mine, "claimed_at": datetime.now(timezone.utc).isoformat()}
    if place.create(name, json.dumps(doc).encode("utf-8")):
        return True
    found = _owner_of(place.read(name))
    if found == mine:
        return False
    raise OutputClaimed(
        f"{what} is written by another task ({describe(found)}; see {place.shown(name)})",
        owner=found,
    )


def claim_folder(folder: Place, owner: Mapping[str, Any]) -> bool:
    """Claim a whole output folder (:data:`FOLDER_CLAIM`); see :func:`claim`."""
    return claim(folder.child(PROVIDER_FOLDER), FOLDER_CLAIM, owner, what=f"The folder {folder.shown()}")


def claim_file(folder: Place, file_name: str, owner: Mapping[str, Any]) -> bool:
    """Claim one file of a shared folder (``.doitong/files/<name>.json``); see :func:`claim`."""
    claims = folder.child(PROVIDER_FOLDER, FILE_CLAIMS)
    return claim(
        claims, f"{safe_component(file_name)}.json", owner, what=f"The file {folder.shown(file_name)}"
    )


def probe(folder: Place) -> None:
    """Write and remove a probe file in ``folder`` (created when missing), as the images will be written.

    :raises OSError: (or :class:`UnsafeOutputPath`) if the folder cannot be written.
    """
    name = f".doitong-probe-{uuid.uuid4().hex[:12]}"
    if not folder.create(name, b"probe"):
        raise FileExistsError(f"{folder.shown(name)} exists")
    folder.remove(name)
