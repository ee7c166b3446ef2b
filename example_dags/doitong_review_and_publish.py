"""
### Doitong: a person approves the day's images before they are published

Every day: generate one image per prompt into `<output root>/review/drafts/<date>/` (the run's logical
date; a manual run adds its time; the output root is inside `$DOITONG_OUTPUT_ROOTS`), write the provider's
contact sheet (`index.html`) and `manifest.json` beside them, then **wait for a person**: the
`review` task (Airflow's human-in-the-loop `ApprovalOperator`, Airflow 3.1+) shows the contact
sheet's location and each image's file name and prompt in Airflow's *Required actions* view. The
reviewer chooses

- **Approve**, optionally listing images to leave out (`rejected_images`, file names from that
  list): the other images are copied to `<output root>/review/published/<date>/` with a
  `publication.json` record, and the `doitong_published_images` asset is updated;
- **Reject**: nothing is published (`publish` is skipped).

With no answer within 20 hours (`REVIEW_TIMEOUT`), the day counts as rejected. The reviewer answers in the UI, or
through the REST API: `PATCH /api/v2/dags/doitong_review_and_publish/dagRuns/<run_id>/taskInstances/review/-1/hitlDetails`
with `{"chosen_options": ["Approve"], "params_input": {"rejected_images": ["<job_id>.jpg"]}}`.

On Airflow 3.0 (no human-in-the-loop operators) the DAG still loads, and its one task skips
with the reason. Unpausing starts the latest day's run at once: 30 credits on the real API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException
from airflow.sdk import DAG, Asset, ObjectStoragePath, Param, task

from airflow_provider_doitong import contract
from airflow_provider_doitong.batch import manifest
from airflow_provider_doitong.batch.roots import configured_roots, inside_roots
from airflow_provider_doitong.client import DoitongValidationError, ImageRequest
from airflow_provider_doitong.connection import DEFAULT_CONN_ID
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from airflow_provider_doitong.storage import shown, storage_path, write_image

try:  # Human-in-the-loop operators: Airflow 3.1+ with a recent standard provider.
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    HITL_UNAVAILABLE: str | None = None
except Exception as exc:  # ImportError, or the provider's "needs Airflow 3.1+" exception
    ApprovalOperator = None  # type: ignore[assignment,misc]
    HITL_UNAVAILABLE = (
        "this example needs Airflow's human-in-the-loop operators (Airflow 3.1+ and "
        f"apache-airflow-providers-standard with operators.hitl): {exc}"
    )

log = logging.getLogger(__name__)

DAG_ID = "doitong_review_and_publish"
#: Updated when a day's approved images are published.
PUBLISHED_IMAGES = Asset(name="doitong_published_images")
DEFAULT_OUTPUT_ROOT = "~/doitong-images"
OUTPUT_ROOTS_ENV = "DOITONG_OUTPUT_ROOTS"
DEFAULT_PROMPTS = [
    "A lighthouse on a cliff at dawn, watercolour",
    "A red fox asleep in fresh snow, soft light",
    "A paper boat on a rain-soaked street, neon reflections",
]
PUBLICATION_RECORD = "publication.json"
#: How long the review waits; unanswered, the day is rejected (the operator's default answer).
REVIEW_TIMEOUT = timedelta(hours=20)


# --- helpers (called from tasks only) ---------------------------------------------------------
def run_day(dag_run: Any) -> str:
    """The run's folder name: its date (logical, else the run's day), plus the time unless scheduled."""
    day = f"{dag_run.logical_date or dag_run.run_after:%Y-%m-%d}"
    kind = getattr(dag_run.run_type, "value", dag_run.run_type)
    return day if kind == "scheduled" else f"{day}-{kind}-{dag_run.run_after:%H%M%S}"


def output_folder(params: Mapping[str, Any], *parts: str) -> ObjectStoragePath:
    """``<output root>/review/<parts>``: the ``output_root`` param, inside ``$DOITONG_OUTPUT_ROOTS``."""
    roots = configured_roots(OUTPUT_ROOTS_ENV, DEFAULT_OUTPUT_ROOT)
    root = inside_roots(params["output_root"] or roots[0], roots, what="output_root")
    return storage_path(f"{root}/review/{'/'.join(parts)}")


def check_prompts(prompts: Sequence[Any], *, provider: str, width: int, height: int, quality: str) -> None:
    """Fail before any credit is spent if a prompt is not something Doitong accepts.

    :raises AirflowFailException: naming every invalid prompt.
    """
    problems = []
    for number, prompt in enumerate(prompts, start=1):
        try:
            ImageRequest(provider=provider, prompt=prompt, width=width, height=height, quality=quality)
        except (DoitongValidationError, TypeError) as exc:
            problems.append(f"prompt {number}: {getattr(exc, 'message', exc)}")
    if problems:
        raise AirflowFailException("; ".join(problems) + "; nothing was submitted")


def review_body(sheet: str, entries: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown the reviewer reads: where the contact sheet is, and each image's file and prompt."""
    lines = [
        f"Contact sheet: `{sheet}`",
        "",
        "Approve to publish these images; list any to leave out in *rejected_images* (file names).",
        "",
        "| file | prompt |",
        "|---|---|",
    ]
    lines += [f"| `{e['file']}` | {str(e['prompt']).replace('|', '/')} |" for e in entries]
    return "\n".join(lines)


def approved_entries(
    entries: Sequence[Mapping[str, Any]], rejected: Iterable[str]
) -> list[Mapping[str, Any]]:
    """The images the reviewer did not reject.

    :raises AirflowFailException: if a rejected name is not on the sheet (a typo would publish it).
    """
    rejected = {str(name).strip() for name in rejected if str(name).strip()}
    unknown = rejected - {str(e["file"]) for e in entries}
    if unknown:
        raise AirflowFailException(
            f"rejected_images names files that are not on the contact sheet: {sorted(unknown)}; "
            "nothing was published"
        )
    return [e for e in entries if e["file"] not in rejected]


# --- the DAG ----------------------------------------------------------------------------------
with DAG(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["doitong", "example", "human-in-the-loop"],
    doc_md=__doc__,
    params={
        "prompts": Param(DEFAULT_PROMPTS, type="array", items={"type": "string"}, minItems=1),
        "output_root": Param(
            None,
            type=["null", "string"],
            description="Empty: the first of $DOITONG_OUTPUT_ROOTS (default ~/doitong-images); else inside one.",
        ),
        "provider": Param("flux-krea", type="string", enum=list(contract.PROVIDERS)),
        "width": Param(contract.DEFAULT_WIDTH, type="integer", minimum=contract.MIN_SIDE),
        "height": Param(contract.DEFAULT_HEIGHT, type="integer", minimum=contract.MIN_SIDE),
        "quality": Param(contract.DEFAULT_QUALITY, type="string", enum=list(contract.QUALITIES)),
        "doitong_conn_id": Param(DEFAULT_CONN_ID, type="string", minLength=1),
        "poll_interval": Param(5.0, type="number", exclusiveMinimum=0),
    },
) as dag:
    if HITL_UNAVAILABLE is not None:

        @task
        def hitl_unavailable() -> None:
            """Say why the example cannot run on this Airflow."""
            raise AirflowSkipException(f"Skipped: {HITL_UNAVAILABLE}")

        hitl_unavailable()
    else:

        @task
        def plan(params: dict[str, Any] | None = None, dag_run: Any = None) -> list[dict[str, Any]]:
            """Check every prompt, and name the day's drafts folder; nothing is spent if one is bad."""
            assert params is not None
            prompts = list(dict.fromkeys(str(p).strip() for p in params["prompts"] if str(p).strip()))
            check_prompts(
                prompts,
                provider=params["provider"],
                width=params["width"],
                height=params["height"],
                quality=params["quality"],
            )
            drafts = output_folder(params, "drafts", run_day(dag_run))
            return [
                {
                    "prompt": prompt,
                    "output_path": f"{shown(drafts)}/",
                    "doitong_conn_id": params["doitong_conn_id"],
                    "poll_interval": float(params["poll_interval"]),
                }
                for prompt in prompts
            ]

        @task
        def contact_sheet(
            results: Iterable[dict[str, Any]],
            params: dict[str, Any] | None = None,
            dag_run: Any = None,
            ti: Any = None,
        ) -> dict[str, Any]:
            """The provider's ``manifest.json`` and ``index.html`` beside the drafts; push the reviewer's text."""
            assert params is not None
            day = run_day(dag_run)
            drafts = output_folder(params, "drafts", day)
            entries = manifest.entries_from_results(results, folder=drafts)
            doc = manifest.build_manifest(entries, title=f"For review: {day}", extra={"date": day})
            sheet = manifest.write_manifest(drafts, doc)["contact_sheet"]
            ti.xcom_push(key="review_body", value=review_body(sheet, entries))
            log.info("Contact sheet for review: %s (%d images)", sheet, len(entries))
            return {"day": day, "folder": shown(drafts), "contact_sheet": sheet, "images": entries}

        @task(outlets=[PUBLISHED_IMAGES])
        def publish(
            sheet: dict[str, Any],
            params: dict[str, Any] | None = None,
            ti: Any = None,
            outlet_events: Any = None,
        ) -> dict[str, Any]:
            """Copy the approved images to ``<output root>/review/published/<date>/`` with a record."""
            assert params is not None
            answer = ti.xcom_pull(task_ids="review") or {}
            rejected = (answer.get("params_input") or {}).get("rejected_images") or []
            approved = approved_entries(sheet["images"], rejected)
            drafts = storage_path(sheet["folder"])
            target = output_folder(params, "published", sheet["day"])
            for entry in approved:
                write_image(target / entry["file"], (drafts / entry["file"]).read_bytes())
            record = {
                "date": sheet["day"],
                "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "approved_by": (answer.get("responded_by_user") or {}).get("name"),
                "contact_sheet": sheet["contact_sheet"],
                "images": [{k: e[k] for k in ("file", "prompt", "job_id")} for e in approved],
                "rejected": sorted(rejected),
            }
            write_image(target / PUBLICATION_RECORD, json.dumps(record, indent=2).encode("utf-8"))
            outlet_events[PUBLISHED_IMAGES].extra = {
                "date": sheet["day"],
                "folder": shown(target),
                "count": len(approved),
            }
            log.info("Published %d of %d images to %s", len(approved), len(sheet["images"]), shown(target))
            return record

        images = FluxGenerateOperator.partial(
            task_id="generate",
            provider="{{ params.provider }}",
            width="{{ params.width }}",
            height="{{ params.height }}",
            quality="{{ params.quality }}",
            deferrable=True,
            retries=2,
            retry_delay=timedelta(seconds=30),
        ).expand_kwargs(plan())
        sheet = contact_sheet(images.output)
        review = ApprovalOperator(
            task_id="review",
            subject="Publish the Doitong images of {{ ti.xcom_pull(task_ids='contact_sheet')['day'] }}?",
            body="{{ ti.xcom_pull(task_ids='contact_sheet', key='review_body') }}",
            defaults="Reject",
            response_timeout=REVIEW_TIMEOUT,
            params={
                "rejected_images": Param(
                    [],
                    type="array",
                    items={"type": "string"},
                    description="File names (from the list above) to leave out when approving.",
                )
            },
        )
        sheet >> review >> publish(sheet)
