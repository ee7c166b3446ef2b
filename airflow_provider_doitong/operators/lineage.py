"""OpenLineage for the Doitong operators: what a task read and wrote, and what it asked Doitong for.

A task's lineage names the stored image file(s) as outputs (a batch: its output folder and its
manifest), the prompts file it read as an input when there was one, and a ``doitong`` run facet with
the model, size, quality, job ids and credits charged.

The provider does not depend on the OpenLineage provider: everything up to :class:`Lineage` is plain
Python, and only :func:`to_operator_lineage` imports OpenLineage, when the OpenLineage listener calls
an operator's ``get_openlineage_facets_on_*`` method (so it is installed).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_provider_doitong.client.redaction import redact
from airflow_provider_doitong.storage import Location

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import RunFacet

#: The key of the run facet in OpenLineage events.
FACET_NAME = "doitong"


@dataclass(frozen=True)
class DatasetRef:
    """An OpenLineage dataset name, per the OpenLineage naming conventions.

    :param namespace: ``file`` for a local file, ``<scheme>://<bucket>`` for object storage.
    :param name: the absolute path of a local file, the key inside the bucket otherwise.
    """

    namespace: str
    name: str


def dataset_for(location: str | Location) -> DatasetRef:
    """The dataset a stored file or folder is, from its :class:`Location` (or a path or URI, parsed).

    ``/data/a.jpg`` and ``file:///data/a.jpg`` are ``file`` + ``/data/a.jpg`` (the naming the
    common-io provider uses for ``file://`` assets); ``s3://bucket/day/a.jpg`` is ``s3://bucket`` +
    ``day/a.jpg``. A folder's trailing ``/`` is dropped, and so are credentials written in a URI.
    """
    place = Location.of(location)
    if place.local:
        return DatasetRef(namespace="file", name=os.path.normpath(place.path.path))
    path = place.path
    return DatasetRef(namespace=f"{path.protocol}://{path.bucket}", name=path.key.strip("/") or "/")


@dataclass(frozen=True, kw_only=True)
class DoitongRun:
    """What the ``doitong`` run facet says about a task's jobs.

    :param model: ``flux-krea`` or ``flux-dev``.
    :param width: pixels asked for.
    :param height: pixels asked for.
    :param quality: ``standard`` or ``high``.
    :param job_ids: every Doitong job the task submitted or reattached to, in order.
    :param credits: credits charged (the jobs' ``creditCost``), ``None`` when not known (a failure).
    :param images: how many images were stored.
    """

    model: str | None
    width: int | None
    height: int | None
    quality: str | None
    job_ids: tuple[str, ...] = ()
    credits: int | None = None
    images: int = 0


@dataclass(frozen=True, kw_only=True)
class Lineage:
    """A task's lineage before it becomes OpenLineage objects.

    :param inputs: datasets read.
    :param outputs: datasets written.
    :param run: the ``doitong`` run facet.
    """

    inputs: tuple[DatasetRef, ...] = ()
    outputs: tuple[DatasetRef, ...] = ()
    run: DoitongRun | None = None


@dataclass(frozen=True, kw_only=True)
class BatchIO:
    """What a batch task wrote and read, as ``FluxBatchOperator`` keeps it for its lineage.

    :param folder: the output folder, as users write it (a local path or a URI).
    :param manifest: the manifest written there.
    :param prompts_file: the prompts file read, if the prompts came from one.
    :param job_ids: every job the batch made, oldest first.
    :param credits: credits charged in all; ``None`` when not known.
    :param images: how many images were stored.
    """

    folder: str | None = None
    manifest: str | None = None
    prompts_file: str | None = None
    job_ids: tuple[str, ...] = ()
    credits: int | None = None
    images: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, for a deferral to carry."""
        return {**asdict(self), "job_ids": list(self.job_ids)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> BatchIO:
        """Read back what :meth:`to_json` gave (anything else is left out)."""

        def text(key: str) -> str | None:
            found = value.get(key)
            return found if isinstance(found, str) else None

        job_ids = value.get("job_ids")
        return cls(
            folder=text("folder"),
            manifest=text("manifest"),
            prompts_file=text("prompts_file"),
            job_ids=tuple(str(job_id) for job_id in job_ids) if isinstance(job_ids, list) else (),
            credits=_int_or_none(value.get("credits")),
            images=_int_or_none(value.get("images")) or 0,
        )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def image_lineage(
    *,
    result: Mapping[str, Any] | None,
    job_ids: Iterable[str],
    model: str | None,
    width: Any,
    height: Any,
    quality: str | None,
    prompt_file: str | None = None,
    stored: Location | None = None,
) -> Lineage:
    """The lineage of one image task (``FluxGenerateOperator``).

    :param result: the operator's XCom value; ``None`` when the task failed before finishing.
    :param stored: where the image was stored, as the operator kept it (else the result's
        ``output_path``).
    :param job_ids: the jobs the task knows of (a failed task may have submitted one).
    :param width: as asked (templated fields may still be strings; anything non-numeric is dropped).
    :param prompt_file: the prompt file the prompt was read from, if any (a full path or URI).
    """
    ids = list(dict.fromkeys(str(job_id) for job_id in job_ids))
    written = stored or (result or {}).get("output_path")
    if result is not None and result.get("job_id") and str(result["job_id"]) not in ids:
        ids.append(str(result["job_id"]))
    run = DoitongRun(
        model=(result or {}).get("provider") or model,
        width=_int_or_none((result or {}).get("width") or width),
        height=_int_or_none((result or {}).get("height") or height),
        quality=quality,
        job_ids=tuple(ids),
        credits=_int_or_none((result or {}).get("credit_cost")) if result is not None else None,
        images=1 if written else 0,
    )
    return Lineage(
        inputs=(dataset_for(prompt_file),) if prompt_file else (),
        outputs=(dataset_for(written),) if written else (),
        run=run,
    )


def batch_lineage(
    *,
    folder: str | None,
    manifest: str | None,
    prompts_file: str | None,
    model: str | None,
    width: Any,
    height: Any,
    quality: str | None,
    job_ids: Sequence[str] = (),
    credits: int | None = None,
    images: int = 0,
) -> Lineage:
    """The lineage of a batch task: its output folder and manifest, read from its prompts file.

    :param folder: where the images were stored (a local folder or an object-storage URI).
    :param manifest: the manifest file written beside them.
    :param prompts_file: the prompts file read, if the prompts came from one (not a list in the conf).
    :param credits: credits charged in all; ``None`` when not known.
    :param images: how many images were stored.
    """
    outputs = tuple(dataset_for(location) for location in (folder, manifest) if location)
    return Lineage(
        inputs=(dataset_for(prompts_file),) if prompts_file else (),
        outputs=outputs,
        run=DoitongRun(
            model=model,
            width=_int_or_none(width),
            height=_int_or_none(height),
            quality=quality,
            job_ids=tuple(dict.fromkeys(str(job_id) for job_id in job_ids)),
            credits=credits,
            images=images,
        ),
    )


@functools.cache
def _run_facet_class() -> type:
    """The ``doitong`` run facet class, built on first use so OpenLineage is imported only then."""
    from attrs import define
    from openlineage.client.facet_v2 import RunFacet

    @define
    class DoitongRunFacet(RunFacet):
        """What the task asked Doitong for, and what it was charged."""

        model: str | None
        width: int | None
        height: int | None
        quality: str | None
        jobIds: list[str]  # noqa: N815 (OpenLineage facets use camelCase)
        credits: int | None
        images: int

        _additional_skip_redact = ["model", "quality", "jobIds"]

    return DoitongRunFacet


def run_facet(run: DoitongRun) -> Any:
    """The OpenLineage run facet of a :class:`DoitongRun` (needs OpenLineage installed)."""
    return _run_facet_class()(
        model=run.model,
        width=run.width,
        height=run.height,
        quality=run.quality,
        jobIds=list(run.job_ids),
        credits=run.credits,
        images=run.images,
    )


def redacted(lineage: Lineage, secrets: Sequence[str]) -> Lineage:
    """``lineage`` with the connection's secrets replaced in every name and value it reports.

    :param secrets: the connection's secrets (see :mod:`~airflow_provider_doitong.client.redaction`).
    """
    if not secrets:
        return lineage

    def refs(datasets: tuple[DatasetRef, ...]) -> tuple[DatasetRef, ...]:
        return tuple(
            DatasetRef(redact(ref.namespace, secrets), redact(ref.name, secrets)) for ref in datasets
        )

    run = lineage.run
    if run is not None:
        run = replace(
            run,
            model=redact(run.model, secrets),
            quality=redact(run.quality, secrets),
            job_ids=tuple(redact(list(run.job_ids), secrets)),
        )
    return Lineage(inputs=refs(lineage.inputs), outputs=refs(lineage.outputs), run=run)


def to_operator_lineage(lineage: Lineage, secrets: Sequence[str] = ()) -> OperatorLineage[Dataset, RunFacet]:
    """The ``OperatorLineage`` an operator's ``get_openlineage_facets_on_*`` method returns.

    :param secrets: values never reported (the connection's API key and webhook secret).
    """
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset

    lineage = redacted(lineage, secrets)

    return OperatorLineage(
        inputs=[Dataset(namespace=ref.namespace, name=ref.name) for ref in lineage.inputs],
        outputs=[Dataset(namespace=ref.namespace, name=ref.name) for ref in lineage.outputs],
        run_facets={FACET_NAME: run_facet(lineage.run)} if lineage.run is not None else {},
    )
