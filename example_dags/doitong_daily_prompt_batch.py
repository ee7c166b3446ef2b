"""
### Doitong daily prompt batch

Every day: read the day's prompts, check that the credit balance (and an optional budget) covers
them before anything is spent, generate one image per prompt with `FluxGenerateOperator`
(deferrable, in the `doitong` pool), then write `manifest.json` and an HTML contact sheet
(`index.html`) into `<output_root>/<date>/` and emit an event on the `doitong_daily_images` asset.

**Pool.** Create it once per deployment, sized to your plan's concurrent jobs (pro: 10), counting
deferred tasks so that waiting jobs hold their slot:

```bash
airflow pools set doitong 10 "Doitong concurrent jobs" --include-deferred
```

**Params.** `prompts_file` is a text file with one prompt per line (blank lines and `#` comments are
skipped, repeats are generated once; a relative path is resolved against this DAG file's folder),
or a list of prompts given in the run conf. `output_root` defaults to `$DOITONG_OUTPUT_ROOT`, else
`~/doitong-images`; it may also be an object-storage URI such as `s3://bucket/images`.
`budget_credits` caps the day's estimated spend.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pendulum
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowNotFoundException,
    AirflowSkipException,
)
from airflow.sdk import DAG, Asset, ObjectStoragePath, Param, task

from airflow_provider_doitong import contract
from airflow_provider_doitong.client import (
    DoitongError,
    DoitongValidationError,
    ImageRequest,
)
from airflow_provider_doitong.connection import DEFAULT_CONN_ID, DoitongConnectionInvalid
from airflow_provider_doitong.hooks.doitong import DoitongHook
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from airflow_provider_doitong.outcomes import airflow_error
from airflow_provider_doitong.storage import write_image

log = logging.getLogger(__name__)

DAG_ID = "doitong_daily_prompt_batch"
#: The pool every Doitong job of this DAG runs in; size it to the plan's concurrent jobs.
DOITONG_POOL = "doitong"
#: Updated once per successful day, with the day's folder, manifest and spend as its extra.
DAILY_IMAGES = Asset(name="doitong_daily_images")
DAG_FOLDER = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROMPTS_FILE = "prompts/daily_prompts.txt"
DEFAULT_OUTPUT_ROOT = "~/doitong-images"
OUTPUT_ROOT_ENV = "DOITONG_OUTPUT_ROOT"
MANIFEST_NAME = "manifest.json"
CONTACT_SHEET_NAME = "index.html"
_CHUNK = 1 << 20


# --- helpers (pure or plain file I/O; called from tasks only) ------------------------------------
def storage_path(location: str, *, base: str | None = None) -> ObjectStoragePath:
    """A local path or an object-storage URI as an ``ObjectStoragePath``.

    :param location: ``~`` is expanded; a relative local path is taken from ``base`` (or the cwd).
    :param base: the folder relative local paths start from.
    """
    if "://" in location:
        return ObjectStoragePath(location)
    path = os.path.expanduser(location)
    if base is not None and not os.path.isabs(path):
        path = os.path.join(base, path)
    return ObjectStoragePath("file://" + os.path.abspath(path))


def display_path(path: ObjectStoragePath) -> str:
    """A plain filesystem path for local files, the URI for anything else.

    :param path: the path.
    """
    return path.path if path.protocol in ("", "file", "local") else str(path)


def parse_prompts(lines: Iterable[Any]) -> list[str]:
    """Prompts from lines: trimmed, without blanks and ``#`` comments, each once, in order.

    :param lines: the lines of a prompts file, or prompts given as a list.
    :raises AirflowFailException: if an entry is not a string.
    """
    prompts: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not isinstance(line, str):
            raise AirflowFailException(f"Prompt {number} is not a string: {line!r}")
        text = line.strip()
        if not text or text.startswith("#") or text in seen:
            continue
        seen.add(text)
        prompts.append(text)
    return prompts


def load_prompts(source: str | Sequence[str]) -> tuple[list[str], str]:
    """Read the day's prompts.

    :param source: a prompts file (relative paths start from this DAG's folder) or a list of prompts.
    :return: the prompts, and where they came from (for logs).
    :raises AirflowFailException: if the file cannot be read.
    """
    if isinstance(source, str):
        path = storage_path(source, base=DAG_FOLDER)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AirflowFailException(f"The prompts file {display_path(path)} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AirflowFailException(f"Cannot read the prompts file {display_path(path)}: {exc}") from None
        return parse_prompts(text.splitlines()), display_path(path)
    if isinstance(source, Sequence):
        return parse_prompts(source), "the run conf"
    raise AirflowFailException(
        f"prompts_file must be a path or a list of prompts, got {type(source).__name__}"
    )


def build_requests(
    prompts: Sequence[str], *, provider: str, width: int, height: int, quality: str
) -> list[ImageRequest]:
    """Validate every prompt with the same settings, reporting every bad one at once.

    :param prompts: the prompts.
    :param provider: ``flux-krea`` or ``flux-dev``.
    :param width: pixels.
    :param height: pixels.
    :param quality: ``standard`` or ``high``.
    :raises AirflowFailException: naming each invalid prompt and why.
    """
    requests: list[ImageRequest] = []
    problems: list[str] = []
    for number, prompt in enumerate(prompts, start=1):
        try:
            requests.append(
                ImageRequest(provider=provider, prompt=prompt, width=width, height=height, quality=quality)
            )
        except DoitongValidationError as exc:
            shown = prompt if len(prompt) <= 60 else f"{prompt[:57]}..."
            problems.append(f"prompt {number} ({shown!r}): {exc.message}")
    if problems:
        raise AirflowFailException(
            f"{len(problems)} of {len(prompts)} prompts are invalid; nothing was submitted: "
            + "; ".join(problems)
        )
    return requests


def check_credits(*, images: int, estimate: int, balance: int, budget: int | None) -> None:
    """Fail unless the balance and the budget both cover the estimate.

    :param images: how many images the estimate is for.
    :param estimate: the estimated credits of the whole batch.
    :param balance: the account's credit balance.
    :param budget: the most the batch may spend, if capped.
    :raises AirflowFailException: naming the estimate and the balance (and the budget).
    """
    if estimate > balance:
        raise AirflowFailException(
            f"Not enough Doitong credits: {images} images are estimated at {estimate} credits, "
            f"the account balance is {balance}; nothing was submitted"
        )
    if budget is not None and estimate > budget:
        raise AirflowFailException(
            f"Over budget: {images} images are estimated at {estimate} credits, over budget_credits={budget} "
            f"(the account balance is {balance}); nothing was submitted"
        )


def read_balance(conn_id: str) -> tuple[str, int]:
    """The plan and credit balance of a ``doitong`` connection's account.

    :param conn_id: the connection.
    :raises AirflowFailException: for a missing or invalid connection, or a refused key.
    :raises AirflowException: for anything worth a retry.
    """
    hook = DoitongHook(doitong_conn_id=conn_id)
    try:
        with hook.get_conn() as client:
            account = client.get_account()
    except AirflowNotFoundException:
        raise AirflowFailException(f"The Doitong connection {conn_id!r} is not defined") from None
    except DoitongConnectionInvalid as exc:
        raise AirflowFailException(f"Invalid Doitong connection: {exc}") from None
    except DoitongError as exc:  # a refused key is final, an unavailable API worth a retry
        raise airflow_error(exc, doing="Reading the Doitong account failed") from None
    return account.plan, account.credits


def run_day(context: dict[str, Any]) -> str:
    """The run's day: ``ds``, or the day of ``run_after`` for a run without a logical date.

    :param context: the task context.
    """
    if context.get("ds"):
        return str(context["ds"])
    run_after = getattr(context.get("dag_run"), "run_after", None) or datetime.now(timezone.utc)
    return run_after.strftime("%Y-%m-%d")


def sha256_of(path: ObjectStoragePath) -> tuple[str, int]:
    """The hex SHA-256 and size of a file.

    :param path: the file.
    """
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def image_entry(result: dict[str, Any]) -> dict[str, Any]:
    """One manifest entry, from a ``FluxGenerateOperator`` result and the file it wrote.

    :param result: the operator's XCom value.
    :raises AirflowException: if the image file is missing.
    """
    location = result.get("output_path")
    if not location:
        raise AirflowException(f"Doitong job {result.get('job_id')} stored no image")
    path = storage_path(str(location))
    if not path.exists():
        raise AirflowException(f"The image of Doitong job {result.get('job_id')} is missing: {location}")
    sha256, size = sha256_of(path)
    return {
        "prompt": result.get("prompt"),
        "job_id": result.get("job_id"),
        "credits": result.get("credit_cost"),
        "file": path.name,
        "sha256": sha256,
        "bytes": size,
        "width": result.get("width"),
        "height": result.get("height"),
        "provider": result.get("provider"),
        "completed_at": result.get("completed_at"),
    }


def build_manifest(
    results: Iterable[dict[str, Any]], *, day: str, dag_id: str, run_id: str, estimate: int | None
) -> dict[str, Any]:
    """The day's manifest.

    :param results: the ``FluxGenerateOperator`` results, in prompt order.
    :param day: the run's day.
    :param dag_id: the producing DAG.
    :param run_id: the producing run.
    :param estimate: the credits estimated before submission.
    """
    images = [image_entry(result) for result in results]
    return {
        "date": day,
        "dag_id": dag_id,
        "run_id": run_id,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "image_count": len(images),
        "credits_estimated": estimate,
        "credits_spent": sum(int(image["credits"] or 0) for image in images),
        "images": images,
    }


_SHEET_STYLE = """
  :root { color-scheme: light; --ink: #1d1b22; --muted: #6b6775; --card: #ffffff; --bg: #f3f1f6; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--ink); background: var(--bg); }
  header { padding: 20px 28px 8px; }
  h1 { margin: 0 0 4px; font-size: 22px; }
  header p { margin: 0; color: var(--muted); }
  main { display: grid; gap: 18px; padding: 16px 28px 32px;
         grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); }
  figure { margin: 0; background: var(--card); border-radius: 10px; overflow: hidden;
           box-shadow: 0 1px 3px rgba(0, 0, 0, .12); display: flex; flex-direction: column; }
  figure a { display: block; background: #ddd; }
  figure img { display: block; width: 100%; height: auto; }
  figcaption { padding: 10px 12px 12px; }
  .prompt { margin: 0 0 6px; }
  .meta { margin: 0; color: var(--muted); font-size: 12.5px; }
  code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
"""


def render_contact_sheet(manifest: dict[str, Any]) -> str:
    """A self-contained HTML page showing every image of a manifest, with relative ``src`` paths.

    :param manifest: what :func:`build_manifest` made.
    """
    esc = html.escape
    figures = []
    for image in manifest["images"]:
        src = esc(quote(image["file"]))
        credits = "?" if image["credits"] is None else str(image["credits"])
        size = f' width="{int(image["width"])}" height="{int(image["height"])}"' if image["width"] else ""
        figures.append(
            f'<figure>\n  <a href="{src}"><img src="{src}"{size} alt="{esc(image["prompt"] or "")}"></a>\n'
            f'  <figcaption>\n    <p class="prompt">{esc(image["prompt"] or "")}</p>\n'
            f'    <p class="meta">job <code>{esc(str(image["job_id"]))}</code>'
            f" &middot; {esc(credits)} credits"
            f" &middot; {esc(str(image['width']))}&times;{esc(str(image['height']))}</p>\n"
            "  </figcaption>\n</figure>"
        )
    day = esc(str(manifest["date"]))
    count = manifest["image_count"]
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Doitong images, {day}</title>\n<style>{_SHEET_STYLE}</style>\n</head>\n<body>\n"
        f"<header>\n<h1>Doitong images, {day}</h1>\n"
        f"<p>{count} image{'s' if count != 1 else ''} &middot; {manifest['credits_spent']} credits spent"
        f" &middot; run <code>{esc(str(manifest['run_id']))}</code> &middot;"
        f' <a href="{MANIFEST_NAME}">manifest.json</a></p>\n</header>\n'
        "<main>\n" + "\n".join(figures) + "\n</main>\n</body>\n</html>\n"
    )


# --- the DAG ----------------------------------------------------------------------------------
with DAG(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["doitong", "example"],
    doc_md=__doc__,
    params={
        "prompts_file": Param(
            DEFAULT_PROMPTS_FILE,
            type=["string", "array"],
            items={"type": "string"},
            title="Prompts",
            description="A prompts file (relative to this DAG's folder), or a list of prompts.",
        ),
        "output_root": Param(
            os.environ.get(OUTPUT_ROOT_ENV) or DEFAULT_OUTPUT_ROOT,
            type="string",
            minLength=1,
            description="Images go to <output_root>/<date>/: a local folder or an object-storage URI.",
        ),
        "provider": Param("flux-krea", type="string", enum=list(contract.PROVIDERS)),
        "width": Param(
            contract.DEFAULT_WIDTH,
            type="integer",
            minimum=contract.MIN_SIDE,
            maximum=contract.MAX_SIDE,
            multipleOf=contract.SIDE_MULTIPLE,
        ),
        "height": Param(
            contract.DEFAULT_HEIGHT,
            type="integer",
            minimum=contract.MIN_SIDE,
            maximum=contract.MAX_SIDE,
            multipleOf=contract.SIDE_MULTIPLE,
        ),
        "quality": Param(contract.DEFAULT_QUALITY, type="string", enum=list(contract.QUALITIES)),
        "budget_credits": Param(
            None, type=["null", "integer"], minimum=0, description="The most the day's batch may spend."
        ),
        "doitong_conn_id": Param(DEFAULT_CONN_ID, type="string", minLength=1),
        "poll_interval": Param(
            5.0, type="number", exclusiveMinimum=0, description="Seconds between status polls of a job."
        ),
    },
) as dag:

    @task
    def read_prompts(params: dict[str, Any] | None = None) -> list[str]:
        """The day's prompts, from the prompts file or the run conf.

        :param params: the run's params.
        """
        assert params is not None
        prompts, source = load_prompts(params["prompts_file"])
        if not prompts:
            raise AirflowSkipException(f"No prompts in {source}; nothing to generate today")
        log.info("Read %d prompts from %s", len(prompts), source)
        return prompts

    @task
    def check_budget(
        prompts: list[str], params: dict[str, Any] | None = None, **context: Any
    ) -> list[dict[str, Any]]:
        """Validate every prompt and check the credits before any image is submitted.

        Besides its return value, it pushes the XComs ``folder`` (the day's folder), ``day``,
        ``estimate`` and ``balance``.

        :param prompts: the day's prompts.
        :param params: the run's params.
        :param context: the task context.
        :return: the mapped keyword arguments of ``generate``, one dict per image.
        """
        assert params is not None
        requests = build_requests(
            prompts,
            provider=params["provider"],
            width=params["width"],
            height=params["height"],
            quality=params["quality"],
        )
        estimate = sum(request.estimated_credits for request in requests)
        plan, balance = read_balance(params["doitong_conn_id"])
        budget = params.get("budget_credits")
        check_credits(images=len(requests), estimate=estimate, balance=balance, budget=budget)
        day = run_day(context)
        folder = storage_path(params["output_root"]) / day
        log.info(
            "%d images estimated at %d credits; the %s account has %d%s; images go to %s",
            len(requests),
            estimate,
            plan,
            balance,
            f" (budget {budget})" if budget is not None else "",
            display_path(folder),
        )
        ti = context["ti"]
        for key, value in (
            ("folder", display_path(folder)),
            ("day", day),
            ("estimate", estimate),
            ("balance", balance),
        ):
            ti.xcom_push(key=key, value=value)
        return [
            {
                "prompt": request.prompt,
                "max_credits": request.estimated_credits,
                "doitong_conn_id": params["doitong_conn_id"],
                "poll_interval": float(params["poll_interval"]),
            }
            for request in requests
        ]

    @task(outlets=[DAILY_IMAGES])
    def write_contact_sheet(
        results: Iterable[dict[str, Any]],
        folder: str,
        day: str,
        estimate: int,
        outlet_events: Any = None,
        dag_run: Any = None,
    ) -> dict[str, Any]:
        """Write ``manifest.json`` and ``index.html`` beside the images and announce the day.

        :param results: every ``generate`` result, in prompt order.
        :param folder: the day's folder.
        :param day: the run's day.
        :param estimate: the credits estimated before submission.
        :param outlet_events: the task's outlet events.
        :param dag_run: the run.
        """
        manifest = build_manifest(
            list(results), day=day, dag_id=dag_run.dag_id, run_id=dag_run.run_id, estimate=estimate
        )
        base = storage_path(folder)
        manifest_path = base / MANIFEST_NAME
        sheet_path = base / CONTACT_SHEET_NAME
        write_image(manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"))
        write_image(sheet_path, render_contact_sheet(manifest).encode("utf-8"))
        extra = {
            "date": day,
            "folder": display_path(base),
            "manifest": display_path(manifest_path),
            "contact_sheet": display_path(sheet_path),
            "image_count": manifest["image_count"],
            "credits_spent": manifest["credits_spent"],
            "credits_estimated": estimate,
        }
        outlet_events[DAILY_IMAGES].extra = extra
        log.info(
            "Wrote %s and %s: %d images, %d credits spent (estimated %d)",
            extra["manifest"],
            extra["contact_sheet"],
            extra["image_count"],
            extra["credits_spent"],
            estimate,
        )
        return extra

    budget = check_budget(read_prompts())
    images = FluxGenerateOperator.partial(
        task_id="generate",
        provider="{{ params.provider }}",
        width="{{ params.width }}",
        height="{{ params.height }}",
        quality="{{ params.quality }}",
        output_path="{{ ti.xcom_pull(task_ids='check_budget', key='folder') }}/",
        deferrable=True,
        pool=DOITONG_POOL,
        retries=2,
        retry_delay=timedelta(seconds=30),
        map_index_template="{{ task.prompt | truncate(60) }}",
    ).expand_kwargs(budget)
    write_contact_sheet(images.output, budget["folder"], budget["day"], budget["estimate"])
