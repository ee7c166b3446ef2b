"""A batch's ``manifest.json`` and HTML contact sheet (``index.html``): provider API.

``FluxBatchOperator`` writes them for its items; a mapped ``FluxGenerateOperator`` makes the same
pair from its XCom results::

    from airflow_provider_doitong.batch import manifest

    entries = manifest.entries_from_results(results, folder=folder)
    doc = manifest.build_manifest(entries, title="Images of 2025-01-02")
    paths = manifest.write_manifest(folder, doc)

The manifest has one entry per item (``status`` ``stored`` or ``failed``): prompt and options,
job id, credits, file (relative to the manifest's folder), its SHA-256 and size, and the error of
a failed item; an image the image cache supplied is ``cached`` (0 credits), with the
``source_job_id`` that made it. :func:`verify_manifest` checks a folder against its manifest. A reviewed batch's
manifest also has a ``review`` record (:func:`record_review`): the decision, who made it and when,
or that the timeout made it.
"""

from __future__ import annotations

import hashlib
import html
import json
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.ledger import ItemRecord, ItemState
from airflow_provider_doitong.storage import Location, Place, UnsafeOutputPath, shown, write_image

if TYPE_CHECKING:
    from airflow_provider_doitong.storage import ObjectStoragePath

FORMAT = "doitong-manifest"
VERSION = 1
MANIFEST_NAME = "manifest.json"
CONTACT_SHEET_NAME = "index.html"
#: An entry's ``status``: its item's state in the ledger (``stored``, ``failed``, or where it stopped).
STORED = ItemState.STORED.value
FAILED = ItemState.FAILED.value
_CHUNK = 1 << 20
#: A ``review`` record's ``decision``.
APPROVED, REJECTED = "approved", "rejected"


class ManifestError(ValueError):
    """Results that cannot be listed in a manifest (a missing file, a file outside the folder)."""


def _file_digest(path: Any) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _folder(folder: str | ObjectStoragePath | Location) -> ObjectStoragePath:
    return Location.of(folder).path


def entries_from_results(results: Iterable[Mapping[str, Any]], *, folder: Any) -> list[dict[str, Any]]:
    """Manifest entries from mapped ``FluxGenerateOperator`` results (their XCom values), in order.

    Each result's image must have been written into ``folder`` (its ``output_path``); its SHA-256
    is computed from the file.

    :param results: the XCom values of the mapped task.
    :param folder: where the manifest goes: a :class:`~airflow_provider_doitong.storage.Location`,
        a local path, a URI or an ``ObjectStoragePath``.
    :raises ManifestError: for a result without a stored image, or one outside ``folder``.
    """
    base = _folder(folder)
    entries = []
    for number, result in enumerate(results, start=1):
        location = result.get("output_path")
        if not location:
            raise ManifestError(f"Doitong job {result.get('job_id')} stored no image")
        image = Location.of(str(location))
        path = image.path
        name = posixpath.relpath(str(path.path), str(base.path)) if path.protocol == base.protocol else ".."
        if name.startswith("..") or "/" in name:
            raise ManifestError(f"The image {image.shown} is not in the manifest's folder {shown(base)}")
        if not path.exists():
            raise ManifestError(f"The image of Doitong job {result.get('job_id')} is missing: {image.shown}")
        sha256, size = _file_digest(path)
        entries.append(
            {
                "number": number,
                "status": STORED,
                "file": name,
                "sha256": sha256,
                "bytes": size,
                "prompt": result.get("prompt"),
                "provider": result.get("provider"),
                "width": result.get("width"),
                "height": result.get("height"),
                "job_id": result.get("job_id"),
                "credits": result.get("credit_cost"),
                "completed_at": result.get("completed_at"),
            }
        )
    return entries


def entries_from_ledger(items: Sequence[BatchItem], records: Sequence[ItemRecord]) -> list[dict[str, Any]]:
    """Manifest entries of a ``FluxBatchOperator`` batch: one per item, stored or not.

    :param records: their ledger records, in the same order.
    """
    return list(iter_entries_from_ledger(items, records))


def iter_entries_from_ledger(
    items: Iterable[BatchItem], records: Iterable[ItemRecord]
) -> Iterator[dict[str, Any]]:
    """:func:`entries_from_ledger`, one entry at a time."""
    for item, record in zip(items, records, strict=True):
        request = item.request
        stored = record.state is ItemState.STORED
        entry: dict[str, Any] = {
            "number": item.index + 1,
            "status": record.state.value,
            "file": record.file if stored else None,
            "sha256": record.sha256 if stored else None,
            "bytes": record.bytes if stored else None,
            "prompt": request.prompt,
            "provider": request.provider,
            "width": request.width,
            "height": request.height,
            "quality": request.quality,
            "version": request.version,
            "job_id": record.job_id or (record.job_ids[-1] if record.job_ids else None),
            "credits": record.credits if record.state in (ItemState.STORED, ItemState.COMPLETED) else None,
            "completed_at": record.completed_at,
            "error": None if stored else record.error,
        }
        if record.from_cache:
            entry["cached"] = True
            entry["source_job_id"] = record.job_id
        if len(record.job_ids) > 1 or record.ambiguous:
            entry["job_ids"] = list(record.job_ids)
            entry["ambiguous_submissions"] = record.ambiguous
        yield entry


def build_manifest(
    entries: Sequence[Mapping[str, Any]],
    *,
    title: str,
    credits_estimated: int | None = None,
    source: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest document.

    :param entries: from :func:`entries_from_ledger` or :func:`entries_from_results`.
    :param title: the contact sheet's heading (e.g. the day).
    :param credits_estimated: the estimate checked before submission.
    :param source: who made it (``dag_id``, ``run_id``, ``task_id``, ``map_index``).
    :param extra: more top-level keys (e.g. ``date``).
    """
    stored = [e for e in entries if e.get("status") == STORED]
    return {
        "format": FORMAT,
        "version": VERSION,
        "title": title,
        **dict(extra or {}),
        "source": dict(source or {}),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "item_count": len(entries),
        "image_count": len(stored),
        "failed_count": sum(1 for e in entries if e.get("status") == FAILED),
        "credits_estimated": credits_estimated,
        "credits_spent": sum(int(e.get("credits") or 0) for e in stored),
        "items": [dict(e) for e in entries],
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
  figure.failed { outline: 2px solid #c0392b; }
  figcaption { padding: 10px 12px 12px; }
  .prompt { margin: 0 0 6px; }
  .meta { margin: 0; color: var(--muted); font-size: 12.5px; }
  .error { margin: 6px 0 0; color: #c0392b; font-size: 12.5px; }
  code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
"""


def _figure(entry: Mapping[str, Any]) -> str:
    esc = html.escape
    prompt = esc(str(entry.get("prompt") or ""))
    job = esc(str(entry.get("job_id") or "none"))
    credits = "?" if entry.get("credits") is None else str(entry["credits"])
    size = f"{esc(str(entry.get('width')))}&times;{esc(str(entry.get('height')))}"
    meta = f'<p class="meta">#{int(entry.get("number") or 0)} &middot; job <code>{job}</code>'
    if entry.get("status") == STORED and entry.get("file"):
        src = esc(quote(str(entry["file"])))
        dims = ""
        if isinstance(entry.get("width"), int) and isinstance(entry.get("height"), int):
            dims = f' width="{entry["width"]}" height="{entry["height"]}"'
        return (
            f'<figure>\n  <a href="{src}"><img src="{src}"{dims} alt="{prompt}" loading="lazy"></a>\n'
            f'  <figcaption>\n    <p class="prompt">{prompt}</p>\n'
            f"    {meta} &middot; {esc(credits)} credits &middot; {size}</p>\n  </figcaption>\n</figure>"
        )
    error = esc(str(entry.get("error") or entry.get("status") or "not stored"))
    return (
        f'<figure class="failed">\n  <figcaption>\n    <p class="prompt">{prompt}</p>\n'
        f'    {meta} &middot; {size}</p>\n    <p class="error">{error}</p>\n  </figcaption>\n</figure>'
    )


def render_contact_sheet(manifest: Mapping[str, Any]) -> str:
    """A self-contained HTML page showing every item of a manifest (relative ``src`` paths only).

    :param manifest: from :func:`build_manifest`.
    """
    return "".join(contact_sheet_parts(manifest, manifest.get("items") or []))


def contact_sheet_parts(manifest: Mapping[str, Any], entries: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """:func:`render_contact_sheet`'s page in parts, one per entry, for a page written as it is made.

    :param manifest: the manifest's top-level keys (its ``items`` are not read).
    :param entries: its entries.
    """
    esc = html.escape
    title = esc(str(manifest.get("title") or "Doitong images"))
    count = int(manifest.get("image_count") or 0)
    failed = int(manifest.get("failed_count") or 0)
    source = manifest.get("source") or {}
    run = f" &middot; run <code>{esc(str(source['run_id']))}</code>" if source.get("run_id") else ""
    failures = f" &middot; {failed} failed" if failed else ""
    review = manifest.get("review")
    if isinstance(review, Mapping):
        who = "the timeout" if review.get("timed_out") else str(review.get("by") or "someone")
        failures += (
            f" &middot; {esc(str(review.get('decision')))} by {esc(who)} at {esc(str(review.get('at')))}"
        )
    yield (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_SHEET_STYLE}</style>\n</head>\n<body>\n"
        f"<header>\n<h1>{title}</h1>\n"
        f"<p>{count} image{'s' if count != 1 else ''}{failures} &middot; {manifest.get('credits_spent')} "
        f'credits spent{run} &middot; <a href="{MANIFEST_NAME}">manifest.json</a></p>\n</header>\n'
        "<main>\n"
    )
    for number, entry in enumerate(entries):
        yield ("\n" if number else "") + _figure(entry)
    yield "\n</main>\n</body>\n</html>\n"


def write_manifest(folder: Any, manifest: Mapping[str, Any]) -> dict[str, str]:
    """Write ``manifest.json`` and ``index.html`` into ``folder``, each replaced atomically (see
    :mod:`~airflow_provider_doitong.storage.places`; a symlink there is replaced, never followed).

    :param folder: a local path, a URI or an ``ObjectStoragePath``.
    :param manifest: from :func:`build_manifest`.
    :return: ``{"folder", "manifest", "contact_sheet"}``: plain paths for local files, URIs otherwise.
    """
    base = _folder(folder)
    manifest_path = base / MANIFEST_NAME
    sheet_path = base / CONTACT_SHEET_NAME
    write_image(manifest_path, json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
    write_image(sheet_path, render_contact_sheet(manifest).encode("utf-8"))
    return {"folder": shown(base), "manifest": shown(manifest_path), "contact_sheet": shown(sheet_path)}


def write_batch_manifest(
    folder: Any,
    items: Sequence[BatchItem],
    records: Sequence[ItemRecord],
    *,
    title: str,
    source: Mapping[str, Any],
    credits_estimated: int | None,
) -> dict[str, Any]:
    """Write a ``FluxBatchOperator`` batch's manifest and contact sheet; return its summary.

    :param title: the contact sheet's heading.
    :param source: the task instance.
    :param credits_estimated: the estimate checked before submission.
    :return: what XCom and the asset event carry: paths and counts, never the items.
    """
    entries = entries_from_ledger(items, records)
    doc = build_manifest(entries, title=title, credits_estimated=credits_estimated, source=source)
    return {
        **write_manifest(folder, doc),
        "items": doc["item_count"],
        "stored": doc["image_count"],
        "failed": doc["failed_count"],
        "credits_spent": doc["credits_spent"],
        "credits_estimated": credits_estimated,
    }


def read_manifest(folder: Any) -> dict[str, Any] | None:
    """The manifest in ``folder``, or ``None`` if there is none.

    :param folder: a local path, a URI or an ``ObjectStoragePath``.
    :raises ManifestError: if the file there is not a JSON manifest (or is a symlink).
    """
    base = _folder(folder)
    try:
        data = Place(base).read(MANIFEST_NAME)
        found = None if data is None else json.loads(data)
    except (ValueError, UnsafeOutputPath) as exc:
        raise ManifestError(f"{shown(base / MANIFEST_NAME)} is not a manifest: {exc}") from None
    return found if isinstance(found, dict) else None


def record_review(
    folder: Any, *, decision: str, by: str | None, by_id: str | None, at: str, timed_out: bool
) -> dict[str, str]:
    """Add a person's (or the timeout's) decision on a batch to the manifest in ``folder`` as its
    ``review`` record, and show it on the contact sheet; the items and their files are untouched.

    :param decision: :data:`APPROVED` or :data:`REJECTED`.
    :param by: who answered, as Airflow names them (``None`` when the timeout decided).
    :param by_id: their Airflow user id.
    :param at: when, as an ISO 8601 time.
    :param timed_out: no one answered in time: the timeout's fallback decided.
    :raises ManifestError: if there is no manifest, or the decision is not one of the two.
    """
    if decision not in (APPROVED, REJECTED):
        raise ManifestError(f"a review decides {APPROVED!r} or {REJECTED!r}, not {decision!r}")
    base = _folder(folder)
    doc = read_manifest(base)
    if doc is None:
        raise ManifestError(f"no {MANIFEST_NAME} in {shown(base)} to record the review in")
    doc["review"] = {"decision": decision, "by": by, "by_id": by_id, "at": at, "timed_out": bool(timed_out)}
    return write_manifest(base, doc)


def _review_problems(review: Any) -> list[str]:
    if review is None:
        return []
    if not isinstance(review, Mapping) or review.get("decision") not in (APPROVED, REJECTED):
        return [f"the review record is not a decision: {review!r}"]
    if not review.get("at") or not (review.get("timed_out") or review.get("by")):
        return ["the review record names neither who decided nor the timeout, or not when"]
    return []


def verify_manifest(folder: Any) -> list[str]:
    """Check a folder against its manifest: every stored item's file exists and matches its SHA-256,
    and a ``review`` record, if any, says what was decided, when, and by whom or by the timeout.

    :param folder: a local path, a URI or an ``ObjectStoragePath``.
    :return: the problems found (none: all good).
    """
    base = _folder(folder)
    manifest = read_manifest(base)
    if manifest is None:
        return [f"no {MANIFEST_NAME} in {shown(base)}"]
    problems = _review_problems(manifest.get("review"))
    for entry in manifest.get("items") or []:
        if entry.get("status") != STORED:
            continue
        name = str(entry.get("file") or "")
        if not name or "/" in name or "\\" in name or name.startswith("."):
            problems.append(f"item {entry.get('number')}: unsafe file name {name!r}")
            continue
        path = base / name
        if not path.exists():
            problems.append(f"item {entry.get('number')}: {name} is missing")
        elif _file_digest(path)[0] != entry.get("sha256"):
            problems.append(f"item {entry.get('number')}: {name} does not match its SHA-256")
    return problems
