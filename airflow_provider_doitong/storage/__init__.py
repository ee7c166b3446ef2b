"""Everything the provider writes under ``output_path``: images, manifests, ledgers and claims.

This package is the provider's only writer there, local or on object storage:

- :mod:`.paths`: which file an image goes to (a safe name inside the folder);
- :mod:`.places`: a folder and its writes (atomic replace, exclusive create, read, remove), with
  what each store gives; :mod:`.local` the local primitives (no symlink ever followed);
- :mod:`.claims`: who writes a folder or a file (an exclusive claim), and the probe write;
- :mod:`.images`: storing a finished image.
- :mod:`.cache`: the image cache, a folder outside ``output_path`` shared by every task that names
  it (entries verified when read, claims on the keys being made).

``store_image(location, name, data)`` is the whole of it for an image; the pieces
(:func:`output_file`, :func:`write_image`) are public for callers that need the path first.
"""

from __future__ import annotations

from airflow_provider_doitong.client.safety import safe_component
from airflow_provider_doitong.storage.claims import (
    OutputClaimed,
    claim_file,
    claim_folder,
    describe,
    probe,
)
from airflow_provider_doitong.storage.images import claim_output_file, store_image, write_image
from airflow_provider_doitong.storage.local import UnsafeFolder
from airflow_provider_doitong.storage.paths import (
    LOCAL_PROTOCOLS,
    Location,
    ObjectStoragePath,
    UnsafeOutputPath,
    is_local,
    names_folder,
    output_file,
    shown,
    storage_path,
)
from airflow_provider_doitong.storage.places import Place

__all__ = [
    "ObjectStoragePath",
    "LOCAL_PROTOCOLS",
    "Location",
    "OutputClaimed",
    "Place",
    "UnsafeFolder",
    "UnsafeOutputPath",
    "claim_file",
    "claim_folder",
    "claim_output_file",
    "describe",
    "is_local",
    "names_folder",
    "output_file",
    "probe",
    "safe_component",
    "shown",
    "storage_path",
    "store_image",
    "write_image",
]
