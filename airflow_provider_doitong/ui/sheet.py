"""The contact sheet page the plugin serves: a batch's images, prompts, credits, failures and progress.

Everything shown comes from the batch's manifest or progress snapshot and is escaped; images are
loaded from the plugin's own file route (URLs relative to the page), so the page's Content
Security Policy (:data:`CSP`) allows nothing else: no script, no other origin.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from airflow_provider_doitong.batch import manifest
from airflow_provider_doitong.batch.progress import counts_of
from airflow_provider_doitong.ui import FILE_PAGE, IMAGE_PAGE, MANIFEST_PAGE, ti_query

#: Seconds between two reloads of the page while the batch runs.
REFRESH_SECONDS = 5
#: Only the page's own inline style and its own images; it may be framed only by Airflow's UI.
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'"
)

_STYLE = """
  :root { color-scheme: light; --ink: #1d1b22; --muted: #6b6775; --bg: #f3f1f6; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--ink); background: var(--bg); }
  header { padding: 18px 26px 6px; }
  h1 { margin: 0 0 4px; font-size: 21px; }
  header p { margin: 2px 0; color: var(--muted); }
  .counts span { display: inline-block; margin-right: 14px; }
  .counts b { color: var(--ink); }
  main { display: grid; gap: 16px; padding: 14px 26px 30px;
         grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); }
  figure { margin: 0; background: #fff; border-radius: 10px; overflow: hidden;
           box-shadow: 0 1px 3px rgba(0, 0, 0, .12); }
  figure a { display: block; background: #ddd; }
  figure img { display: block; width: 100%; height: auto; }
  figure.failed { outline: 2px solid #c0392b; }
  figure.waiting { outline: 2px dashed #9b8fc2; }
  figcaption { padding: 9px 12px 11px; }
  .prompt { margin: 0 0 5px; }
  .meta { margin: 0; color: var(--muted); font-size: 12.5px; }
  .error { margin: 5px 0 0; color: #c0392b; font-size: 12.5px; }
  code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
"""


def _figure(entry: Mapping[str, Any], query: Mapping[str, Any]) -> str:
    esc = html.escape
    prompt = esc(str(entry.get("prompt") or ""))
    status = str(entry.get("status") or "")
    credits = "" if entry.get("credits") is None else f" &middot; {int(entry['credits'])} credits"
    size = f"{esc(str(entry.get('width')))}&times;{esc(str(entry.get('height')))}"
    job = esc(str(entry.get("job_id") or "none"))
    meta = f'<p class="meta">#{int(entry.get("number") or 0)} &middot; {size}{credits} &middot; job <code>{job}</code></p>'
    if status == manifest.STORED and entry.get("file"):
        src = esc(f"{FILE_PAGE}?{ti_query(**query, name=str(entry['file']))}")
        return (
            f'<figure><a href="{src}" target="_blank" rel="noopener"><img src="{src}" alt="{prompt}" '
            f'loading="lazy"></a><figcaption><p class="prompt">{prompt}</p>{meta}</figcaption></figure>'
        )
    if status == manifest.FAILED:
        error = esc(str(entry.get("error") or "failed"))
        return (
            f'<figure class="failed"><figcaption><p class="prompt">{prompt}</p>{meta}'
            f'<p class="error">failed: {error}</p></figcaption></figure>'
        )
    return (
        f'<figure class="waiting"><figcaption><p class="prompt">{prompt}</p>{meta}'
        f'<p class="meta">{esc(status or "waiting")}</p></figcaption></figure>'
    )


def render(doc: Mapping[str, Any], *, query: Mapping[str, Any], live: bool, state: str | None) -> str:
    """The contact sheet of a batch, with its progress; reloads itself while ``live``.

    :param doc: the manifest or progress snapshot.
    :param query: the task instance (``dag_id``, ``run_id``, ``task_id``, ``map_index``).
    :param live: the batch is still running (the page reloads every :data:`REFRESH_SECONDS`).
    :param state: the task instance's state, shown as it is.
    """
    esc = html.escape
    items = [e for e in doc.get("items") or [] if isinstance(e, Mapping)]
    counts = counts_of(str(e.get("status") or "") for e in items)
    title = f"{query['dag_id']} / {query['task_id']}" + (
        f" [{query['map_index']}]" if int(query["map_index"]) >= 0 else ""
    )
    estimated = doc.get("credits_estimated")
    spent = f"<b>{int(doc.get('credits_spent') or 0)}</b> credits spent" + (
        f" of {int(estimated)} estimated" if isinstance(estimated, int) else ""
    )
    manifest_link = (
        "" if live else f' &middot; <a href="{esc(f"{MANIFEST_PAGE}?{ti_query(**query)}")}">manifest.json</a>'
    )
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">\n' if live else ""
    figures = "\n".join(_figure(entry, query) for entry in items)
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{refresh}<title>{esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<header>\n<h1>{esc(title)}</h1>\n"
        f"<p>run <code>{esc(str(query['run_id']))}</code> &middot; task {esc(state or 'unknown')}"
        f"{' &middot; running, this page reloads itself' if live else ''}{manifest_link}</p>\n"
        f'<p class="counts"><span><b>{counts.stored}</b> stored,</span> <span><b>{counts.running}</b> '
        f"running,</span> <span><b>{counts.failed}</b> failed,</span> <span><b>{counts.left}</b> left</span> "
        f"<span>of {counts.total};</span> <span>{spent}</span></p>\n</header>\n"
        f"<main>\n{figures}\n</main>\n</body>\n</html>\n"
    )


def message(text: str, *, refresh: bool = False) -> str:
    """A page saying there is nothing to show for this task instance, and why.

    :param refresh: reload every :data:`REFRESH_SECONDS` (the task is running: there will be).
    """
    reload = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">\n' if refresh else ""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"{reload}<title>Doitong images</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n<header>\n<h1>No Doitong images{' yet' if refresh else ''}</h1>\n"
        f"<p>{html.escape(text)}.</p>\n</header>\n</body>\n</html>\n"
    )


def single(result: Mapping[str, Any], *, query: Mapping[str, Any], state: str | None) -> str:
    """The page of a ``FluxGenerateOperator`` task instance: its stored image, prompt and credits.

    :param result: the task instance's XCom return value.
    """
    esc = html.escape
    src = esc(f"{IMAGE_PAGE}?{ti_query(**query)}")
    prompt = esc(str(result.get("prompt") or ""))
    credits = result.get("credit_cost")
    meta = f"job <code>{esc(str(result.get('job_id') or ''))}</code>" + (
        f" &middot; {int(credits)} credits" if isinstance(credits, int) else ""
    )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(str(query['task_id']))}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<header>\n<h1>{esc(str(query['dag_id']))} / {esc(str(query['task_id']))}</h1>\n"
        f"<p>run <code>{esc(str(query['run_id']))}</code> &middot; task {esc(state or 'unknown')}</p>\n</header>\n"
        f'<main>\n<figure><a href="{src}" target="_blank" rel="noopener"><img src="{src}" alt="{prompt}"></a>'
        f'<figcaption><p class="prompt">{prompt}</p><p class="meta">{meta}</p></figcaption></figure>\n'
        "</main>\n</body>\n</html>\n"
    )
