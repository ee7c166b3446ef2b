"""Writing a finished image: checked, named safely, written atomically, never over another task's file."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_doitong.client.images import check_image
from airflow_provider_doitong.client.safety import safe_component
from airflow_provider_doitong.storage.claims import (
    FILE_CLAIMS,
    PROVIDER_FOLDER,
    OutputClaimed,
    claim_file,
)
from airflow_provider_doitong.storage.paths import Location, names_folder, output_file, shown
from airflow_provider_doitong.storage.places import Place

log = logging.getLogger(__name__)


def place_of(path: ObjectStoragePath) -> tuple[Place, str]:
    """The folder a file is in, and its name."""
    return Place(path.parent), path.name


def write_image(path: ObjectStoragePath, data: bytes) -> None:
    """Write bytes to a path, atomically: no reader ever sees a partial file under its name.

    Locally: a uniquely named temporary file in the same folder, fsynced, renamed over the target
    (a link there is replaced, never followed), and the folder fsynced. In an object store: one
    whole write. See :mod:`~airflow_provider_doitong.storage.places`.
    """
    place, name = place_of(path)
    place.write(name, data)


def claim_output_file(path: ObjectStoragePath, owner: Mapping[str, Any]) -> bool:
    """Claim the file ``path`` for ``owner`` before it is written (see :func:`.claims.claim_file`).

    A file already there that no claim gives to ``owner`` is another's: the claim just made is
    taken back and the file left as it is.

    :return: whether the claim was made now (``False``: ``owner``'s own, from an earlier try).
    :raises OutputClaimed: if the file is another task's.
    """
    place, name = place_of(path)
    fresh = claim_file(place, name, owner)
    if fresh:
        try:
            if place.read(name) is not None:  # (a link there is refused by the read)
                raise OutputClaimed(
                    f"The file {shown(path)} exists and was not written by this task", owner=None
                )
        except BaseException:
            place.child(PROVIDER_FOLDER, FILE_CLAIMS).remove(f"{safe_component(name)}.json")
            raise
    return fresh


def store_image(
    location: str | ObjectStoragePath | Location,
    name: str,
    data: bytes,
    *,
    folder: bool | None = None,
    owner: Mapping[str, Any] | None = None,
) -> ObjectStoragePath:
    """Check that ``data`` is a whole image, choose its file, and write it atomically.

    :param location: a folder (``.../`` or an existing directory, or ``folder=True``) or a file,
        local or any ``ObjectStoragePath`` URI.
    :param name: the job id or item name a file in a folder is named after (made safe).
    :param owner: the task instance, where the folder may be shared with other tasks (a mapped
        ``FluxGenerateOperator``): a file in a folder is created exclusively (one already there
        is left alone if it holds these very bytes, an earlier try's, and refused otherwise); a
        file ``location`` names is claimed for ``owner`` and replaced only when it is its own.
        ``None``: the caller holds the whole folder (a batch) and replaces its files.
    :return: where the image went (:func:`shown` gives it as users write it).
    :raises DoitongBadImage: if ``data`` is not a whole PNG, JPEG or WebP image (nothing written).
    :raises UnsafeOutputPath: if the file would not be inside the folder, or is another task's
        (:class:`~airflow_provider_doitong.storage.claims.OutputClaimed`); nothing written.
    """
    kind = check_image(data)
    in_folder = folder if folder is not None else names_folder(location)
    path = output_file(location, name=name, extension=kind.extension, folder=in_folder)
    suffix = PurePosixPath(path.name).suffix.lstrip(".").lower()
    if suffix and suffix not in {kind.extension, "jpeg" if kind.extension == "jpg" else ""}:
        log.warning("Writing a %s image to %s, whose name says .%s", kind.name, shown(path), suffix)
    place, file_name = place_of(path)
    if owner is None:
        place.write(file_name, data)
    elif in_folder or claim_output_file(path, owner):
        if not place.create(file_name, data) and place.read(file_name) != data:
            raise OutputClaimed(
                f"The file {shown(path)} exists and holds another image; not replacing it", owner=None
            )
    else:
        place.write(file_name, data)
    return path
