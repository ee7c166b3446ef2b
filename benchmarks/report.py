"""The result document (JSON layout), the goals, and the Markdown tables."""

from __future__ import annotations

from typing import Any

from benchmarks.first_runs import first_runs_markdown

GOALS: tuple[tuple[str, ...], ...] = (
    ("batch.ratio", "batch makespan / plan lower bound", "<= 1.15"),
    ("batch.tasks_failed_by_429", "429s that failed a task", "== 0"),
    ("batch.duplicate_submissions", "duplicate submissions", "== 0"),
    ("batch.missing_files", "missing files", "== 0"),
    ("batch.status_requests_per_job", "status requests per job", "< 1"),
    ("batch_vs_baseline.total_requests_baseline_over_ours", "baseline / ours total requests", ">= 10"),
    ("triggerer.peak_rss_mb", "triggerer waits: peak RSS (MB)", "< 300"),
    ("triggerer.loop_lag_max_s", "triggerer waits: worst event-loop stall (s)", "<= 0.2"),
    ("parse.operator_added_ms", "operator import added to a parse (ms)", "< 100"),
    ("distributed.failed_tasks", "distributed: failed tasks (all scenarios)", "== 0"),
    ("distributed.duplicate_submissions", "distributed: duplicate submissions", "== 0"),
    ("distributed.missing_files", "distributed: images or manifests missing in S3", "== 0"),
    ("distributed.tasks_failed_by_429", "distributed: 429s that failed a task", "== 0"),
    ("distributed.status_requests_per_job", "distributed: status requests per job, worst scenario", "< 1"),
    ("distributed.secret_leaks", "distributed: log files holding the API key", "== 0"),
    ("distributed.kills_missed", "distributed: scenarios whose kill did not happen", "== 0"),
    ("batch_operator.ratio", "FluxBatchOperator sync: makespan / bound", "<= 1.05", "quick"),
    ("batch_operator_deferrable.ratio", "FluxBatchOperator deferrable: makespan / bound", "<= 1.10", "quick"),
    ("batch_operator.ratio", "FluxBatchOperator sync: makespan / bound", "<= 1.03", "full"),
    ("batch_operator_deferrable.ratio", "FluxBatchOperator deferrable: makespan / bound", "<= 1.03", "full"),
    (
        "batch_operator.status_requests_per_job",
        "FluxBatchOperator sync: status requests per image",
        "< 0.5",
        "full",
    ),
    (
        "batch_operator_deferrable.status_requests_per_job",
        "FluxBatchOperator deferrable: status requests per image",
        "< 0.5",
        "full",
    ),
    ("batch_operator.duplicate_submissions", "FluxBatchOperator: duplicate submissions", "== 0"),
    ("batch_operator.missing_files", "FluxBatchOperator: missing files", "== 0"),
    ("batch_operator_deferrable.duplicate_submissions", "FluxBatchOperator deferrable: duplicates", "== 0"),
    ("batch_operator_deferrable.missing_files", "FluxBatchOperator deferrable: missing files", "== 0"),
    ("scale.batch_operator.missing_files", "past 1,024 prompts: missing files", "== 0"),
    ("throughput.short_jobs.sync.ratio", "short jobs (pro, 3-s jobs), sync: makespan / bound", "<= 1.10"),
    (
        "throughput.short_jobs.deferrable.ratio",
        "short jobs (pro, 3-s jobs), deferrable: makespan / bound",
        "<= 1.10",
    ),
    (
        "throughput.enterprise.makespan_s",
        "enterprise, 1,500 prompts, 100-ms round trip: makespan (s)",
        "<= 20",
    ),
    ("throughput.pro_day.ratio", "pro plan's day: makespan / bound", "<= 1.10"),
    (
        "throughput.first_runs.median_ratio",
        "first run, 14-18-s jobs: median makespan / bound",
        "<= 1.03",
    ),
    (
        "throughput.first_runs.max_status_requests_per_job",
        "first run, 14-18-s jobs: status requests per image, worst",
        "< 0.5",
    ),
    ("throughput.prompts_file.validate_s", "million-line prompts file: validated in (s)", "< 5"),
    ("throughput.prompts_file.peak_rss_mb", "million-line prompts file: peak RSS of the task (MB)", "< 300"),
    ("throughput.prompts_file.jsonl.validate_s", "million-line .jsonl prompts file: validated in (s)", "< 5"),
    (
        "throughput.prompts_file.jsonl.peak_rss_mb",
        "million-line .jsonl prompts file: peak RSS of the task (MB)",
        "< 300",
    ),
    *(
        (f"throughput.{run}.{key}", f"throughput {run.replace('.', ' ')}: {label}", "== 0")
        for run in ("short_jobs.sync", "short_jobs.deferrable", "pro_day", "enterprise", "first_runs")
        for key, label in (("duplicate_submissions", "duplicates"), ("missing_files", "missing files"))
    ),
    *(
        (f"shared_account.{form}.{key}", f"three DAGs on one account, {form}: {label}", rule)
        for form in ("paced", "pooled")
        for key, label, rule in (
            ("ratio", "makespan / bound", "<= 1.25"),
            ("http_429", "answers 429", "<= 3"),
            ("failed_tasks", "failed tasks", "== 0"),
            ("duplicate_submissions", "duplicates", "== 0"),
            ("missing_images", "missing images", "== 0"),
        )
    ),
)


def lookup(doc: dict[str, Any], dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _met(value: Any, rule: str) -> bool | None:
    if value is None:
        return None
    op, _, target = rule.partition(" ")
    bound = float(target)
    return {
        "<=": value <= bound,
        "<": value < bound,
        ">=": value >= bound,
        "==": value == bound,
    }[op]


def evaluate_goals(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of the run's profile (a goal without a profile applies to both) whose section or
    scenario ran (a figure it did not measure shows as missing, or why: :func:`unmeasured`)."""
    profile = (doc.get("meta") or {}).get("profile")
    goals = []
    for key, label, rule, *only in GOALS:
        if only and only[0] != profile:
            continue
        measured = lookup(doc, key)
        if measured is None and lookup(doc, key.rpartition(".")[0]) is None:
            continue  # its section or scenario did not run
        met = _met(measured, rule)
        if measured is None:
            measured, met = unmeasured(doc, key)
        goals.append({"key": key, "goal": label, "target": rule, "measured": measured, "met": met})
    return goals


def unmeasured(doc: dict[str, Any], key: str) -> tuple[str | None, bool | None]:
    """Why a goal's figure is missing, and whether that misses the goal.

    A run stopped at its deadline (``did_not_finish_s`` beside the figure) misses it; a part of the
    run that was skipped (``skipped``) or not run says nothing (``None``).
    """
    parent = lookup(doc, key.rpartition(".")[0])
    if not isinstance(parent, dict):
        return None, None
    if parent.get("did_not_finish_s") is not None:
        return f"did not finish in {parent['did_not_finish_s']:.0f} s", False
    if parent.get("skipped"):
        return "skipped", None
    return None, None


def assemble(
    *,
    meta: dict[str, Any],
    batch: dict[str, Any] | None,
    triggerer: dict[str, Any] | None,
    parse: dict[str, Any] | None,
    distributed: dict[str, Any] | None = None,
    scale: dict[str, Any] | None = None,
    shared_account: dict[str, Any] | None = None,
    throughput: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``batch`` is this provider's side (headline keys at its top), ``baseline`` the HTTP provider's."""
    doc: dict[str, Any] = {"meta": meta}
    if batch is not None:
        if batch["ours"] is not None:
            doc["batch"] = {**batch["ours"], "settings": batch["settings"]}
        if batch["baseline"] is not None:
            doc["baseline"] = {**batch["baseline"], "settings": batch["settings"]}
        if batch["vs_baseline"] is not None:
            doc["batch_vs_baseline"] = batch["vs_baseline"]
        for key in ("batch_operator", "batch_operator_deferrable"):
            if batch.get(key) is not None:
                doc[key] = {**batch[key], "settings": batch["settings"]}
    if scale is not None:
        doc["scale"] = scale
    if triggerer is not None:
        ours = triggerer["ours"]
        doc["triggerer"] = {
            "peak_rss_mb": ours["peak_rss_mb"],
            "cpu_s": ours["cpu_during_waits_s"],
            "requests_per_minute": ours["requests_per_minute"],
            "loop_lag_max_s": ours["loop_lag_max_s"],
            **triggerer,
        }
    if parse is not None:
        doc["parse"] = parse
    if distributed is not None:
        doc["distributed"] = {
            **distributed,
            "secret_leaks": sum(len(files) for files in distributed["secrets_in_logs"].values()),
        }
    if shared_account is not None:
        doc["shared_account"] = shared_account
    if throughput is not None:
        doc["throughput"] = throughput
    doc["goals"] = evaluate_goals(doc)
    return doc


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _ratio(a: Any, b: Any, digits: int = 2) -> str:
    if a is None or not b:
        return "n/a"
    return f"{a / b:.{digits}f}"


_SIDES = (
    ("batch", "mapped FluxGenerateOperator"),
    ("batch_operator", "FluxBatchOperator sync"),
    ("batch_operator_deferrable", "FluxBatchOperator deferrable"),
    ("baseline", "HTTP provider"),
)
_ROWS = (
    ("makespan (s)", "makespan_s", 1),
    ("lower bound (s)", "lower_bound_s", 1),
    ("makespan / lower bound", "ratio", 3),
    ("task processes started", "task_starts", 0),
    ("resumes after a deferral", "resumes", 0),
    ("Airflow CPU-seconds per image", "airflow_cpu_s_per_image", 2),
    ("total requests", "total_requests", 0),
    ("status requests per image", "status_requests_per_job", 2),
    ("status requests until the first job end is seen", "first_wave_status_requests", 0),
    ("429s received", "http_429", 0),
    ("tasks failed by a 429", "tasks_failed_by_429", 0),
    ("failed tasks", "failed_tasks", 0),
    ("retried tasks", "retried_tasks", 0),
    ("failed items", "failed_items", 0),
    ("duplicate submissions", "duplicate_submissions", 0),
    ("missing files", "missing_files", 0),
)
#: The batch sides' recurring run (the same DAG again, reading its first run's job durations).
_SECOND_NIGHT_ROWS = (
    ("second night: makespan / lower bound", "ratio_second_night", 3),
    ("second night: status requests per image", "status_requests_per_job_second_night", 2),
    (
        "second night: status requests until the first end is seen",
        "first_wave_status_requests_second_night",
        0,
    ),
)


def _batch_table(sides: list[tuple[str, dict[str, Any]]]) -> list[str]:
    s = sides[0][1]["settings"]
    out = [
        f"### Batch: {sides[0][1]['prompts']} prompts, {s['plan']} plan ({s['concurrency']} concurrent jobs, "
        f"{s['requests_per_window']} requests/min), time scale {s['time_scale']}, jobs of "
        f"{s['job_seconds']:.0f} emulated s = {s['job_real_seconds']:.0f} s real; poll_interval "
        f"{s['poll_interval']} s (mapped), {s.get('batch_poll_interval')} s (FluxBatchOperator); baseline "
        f"pokes every {s['baseline_poke_real_seconds']:.2f} s real\n",
        "| figure | " + " | ".join(label for label, _ in sides) + " |",
        "|---|" + "---:|" * len(sides),
    ]
    for label, key, digits in _ROWS + _SECOND_NIGHT_ROWS:
        out.append(f"| {label} | " + " | ".join(_f(side.get(key), digits) for _, side in sides) + " |")
    for label, key in (
        ("job done -> image stored, median (s)", "completion_to_stored"),
        ("slot hand-over (task end -> next submission), median (s)", "slot_handover"),
    ):
        cells = [_f(((side.get("phases_s") or {}).get(key) or {}).get("median")) for _, side in sides]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    idle = [_f((side.get("phases_s") or {}).get("slot_idle_per_job")) for _, side in sides]
    out.append("| idle plan slot per job (s) | " + " | ".join(idle) + " |")
    out.append("")
    return out


def _scale_table(scale: dict[str, Any]) -> list[str]:
    ours, mapped = scale.get("batch_operator") or {}, scale.get("mapped") or {}
    st = scale["settings"]
    out = [
        f"### Past 1,024 prompts: {st['prompts']:,} prompts, time scale {st['time_scale']}, jobs of "
        f"{st['job_real_seconds']:.2f} s real, rate window {st['window_real_seconds']:.2f} s real\n",
        "| figure | FluxBatchOperator sync (one task) |",
        "|---|---:|",
    ]
    for label, key, digits in _ROWS:
        out.append(f"| {label} | {_f(ours.get(key), digits)} |")
    out.append(f"| manifest problems | {len(ours.get('manifest_problems') or [])} |")
    if mapped:
        out.append(
            f"\nThe mapped FluxGenerateOperator over the same {mapped['prompts']:,} prompts: run "
            f"`{mapped['run_state']}` after {mapped['seconds']:.0f} s, `generate` {mapped['generate_states']}: "
            f"{mapped['reason'] or 'see its log'}\n"
        )
    out.append("")
    return out


def markdown(doc: dict[str, Any]) -> str:
    out: list[str] = []
    meta = doc["meta"]
    commit = str(meta.get("git_commit") or "")[:10] or "unknown"
    dirty = " + uncommitted provider changes" if meta.get("provider_uncommitted_changes") else ""
    out.append(
        f"Run: {meta['started']} ({meta['profile']}), {meta['cpus']} CPUs, took {meta['duration_s']:.0f}s; "
        f"commit {commit}{dirty}.\n"
    )
    sides = [(label, doc[key]) for key, label in _SIDES if doc.get(key)]
    if sides:
        out.extend(_batch_table(sides))
    if "scale" in doc:
        out.extend(_scale_table(doc["scale"]))
    if "triggerer" in doc:
        t = doc["triggerer"]
        ours, http = t["ours"], t["http_sensor_trigger"]
        st = t["settings"]
        out.append(
            f"### Triggerer: {st['waits']:,} concurrent waits in one process, jobs of ~{st['job_seconds']:.0f} s, "
            f"poll every {st['poll']} s (emulator limits lifted)\n"
        )
        out.append("| figure | DoitongJobTrigger | HttpSensorTrigger |")
        out.append("|---|---:|---:|")
        for label, key, digits in (
            ("peak RSS (MB)", "peak_rss_mb", 0),
            ("RSS after imports (MB)", "rss_after_imports_mb", 0),
            ("CPU during the waits (s)", "cpu_during_waits_s", 1),
            ("wall time until the last event (s)", "wall_s", 1),
            ("requests per minute", "requests_per_minute", 0),
            ("worst event-loop stall (s)", "loop_lag_max_s", 3),
            ("stalls over 0.2 s", "loop_stalls_over_0_2s", 0),
            ("events fired", "fired", 0),
        ):
            out.append(f"| {label} | {_f(ours.get(key), digits)} | {_f(http.get(key), digits)} |")
        je = t.get("http_sensor_trigger_on_job_endpoint") or {}
        if je:
            out.append(
                f"\n`HttpSensorTrigger` on `/v1/jobs/{{id}}` fired after {je['fired_after_s']:.3f} s while the job "
                f"was `{je['job_status_when_fired']}` (it fires on any non-404 answer), so the waits above poll "
                "the output URL `/outputs/{id}.jpg`, which answers 404 until the job completes.\n"
            )
        out.append("")
    if "parse" in doc:
        p = doc["parse"]
        out.append(f"### Parse: fresh process per parse, {p['repetitions']} repetitions, medians\n")
        out.append("| file | parse (ms) | added (ms) | modules added | DAGs |")
        out.append("|---|---:|---:|---:|---|")
        for name, r in p["files"].items():
            dags = ", ".join(r["dag_ids"]) or ("import error" if r["import_errors"] else "none")
            out.append(
                f"| {name} | {_f(r['parse_ms_median'])} | {_f(r['added_ms'])} | {_f(r['modules_added'])} | {dags} |"
            )
        out.append("")
    if "distributed" in doc:
        out.extend(distributed_markdown(doc["distributed"]))
    for form, figures in (doc.get("shared_account") or {}).items():
        out.extend(shared_account_markdown(form, figures))
    if "throughput" in doc:
        out.extend(throughput_markdown(doc))
    out.append("### Goals\n")
    out.append("| goal | target | measured | met |")
    out.append("|---|---|---:|---|")
    for g in doc["goals"]:
        out.append(f"| {g['goal']} | {g['target']} | {_f(g['measured'], 3)} | {_f(g['met'])} |")
    return "\n".join(out) + "\n"


def distributed_markdown(d: dict[str, Any]) -> list[str]:
    """The distributed run: one column per scenario."""
    s = d["settings"]
    out = [
        f"### Distributed: {d['executor']} ({d['workers']} workers x {s['worker_concurrency']} slots), "
        f"{d['triggerers']} triggerers, {d['database']}, {d['broker']}, images to {d['storage']}; "
        f"{d['prompts']} prompts per scenario, {s['plan']} plan, jobs of {s['job_real_seconds']:.0f} s real, "
        f"poll_interval {s['poll_interval']} s\n"
    ]
    runs = d["scenarios"]
    names = list(runs)
    out.append("| figure | " + " | ".join(names) + " |")
    out.append("|---|" + "---:|" * len(names))
    rows = (
        ("operator", "operator", 0),
        ("run state", "run_state", 0),
        ("makespan (s)", "makespan_s", 1),
        ("lower bound (s)", "lower_bound_s", 1),
        ("makespan / lower bound", "ratio", 3),
        ("failed tasks", "failed_tasks", 0),
        ("retried tasks", "retried_tasks", 0),
        ("duplicate submissions", "duplicate_submissions", 0),
        ("missing images or manifest", "missing_files", 0),
        ("429s received", "http_429", 0),
        ("tasks failed by a 429", "tasks_failed_by_429", 0),
        ("status requests per job", "status_requests_per_job", 2),
        ("total requests", "total_requests", 0),
    )
    for label, key, digits in rows:
        out.append(f"| {label} | " + " | ".join(_f(runs[n].get(key), digits) for n in names) + " |")
    peaks = [runs[n]["rate_limit"] for n in names]
    out.append(
        "| busiest rate-limit window (requests / limit) | "
        + " | ".join(f"{p.get('peak_in_fixed_window', 'n/a')} / {p['limit_per_window']}" for p in peaks)
        + " |"
    )
    killed = [runs[n].get("killed") or {} for n in names]
    out.append(
        "| killed | " + " | ".join(k.get("component") or ("missed" if k else "") for k in killed) + " |"
    )
    leaks, scanned = d["secrets_in_logs"], d.get("logs_scanned") or {}
    found = ", ".join(f"{k}: {len(v)} files" for k, v in leaks.items()) or "none"
    out.append(
        f"\nSecrets in logs: {found} ({scanned.get('files', 0)} log files, "
        f"{scanned.get('bytes', 0):,} characters searched).\n"
    )
    return out


def shared_account_markdown(form: str, d: dict[str, Any]) -> list[str]:
    """The three DAGs on one account (``form``: each paced by itself, or pooled): the whole, then each DAG."""
    st = d["settings"]
    out = [
        f"### Three DAGs on one {st['plan']} account, {form}: {d['makespan_s'] and round(d['makespan_s'], 1)} s "
        f"against a bound of {d['lower_bound_s']:.1f} s (ratio {_f(d['ratio'], 2)}), {d['requests']:,} "
        f"requests, {d['http_429']} answered 429 {d['http_429_by_kind'] or ''}\n",
        "| DAG | prompts | run | failed tasks | jobs | duplicates | missing images |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for side, s in d["sides"].items():
        out.append(
            f"| {side} | {s['prompts']} | {s['run_state']} | {s['failed_tasks']} | {s['jobs']} "
            f"| {s['duplicate_submissions']} | {s['missing_images']} |"
        )
    out.append("")
    return out


_THROUGHPUT_COLUMNS = (
    ("throughput.short_jobs.sync", "short jobs, sync"),
    ("throughput.short_jobs.deferrable", "short jobs, deferrable"),
    ("throughput.pro_day", "pro day"),
    ("throughput.enterprise", "enterprise"),
    ("batch_operator", "realistic (batch section), sync"),
    ("batch_operator_deferrable", "realistic (batch section), deferrable"),
)
_THROUGHPUT_ROWS = (
    ("run state", "run_state", 0),
    ("makespan (s)", "makespan_s", 1),
    ("bound, every request counted (s)", "lower_bound_s", 1),
    ("makespan / bound", "ratio", 3),
    ("status requests per image", "status_requests_per_job", 2),
    ("requests per image", "requests_per_image", 2),
    ("429s received", "http_429", 0),
    ("resumes after a deferral", "resumes", 0),
    ("Airflow CPU-seconds per image", "airflow_cpu_s_per_image", 2),
    ("duplicate submissions", "duplicate_submissions", 0),
    ("missing files", "missing_files", 0),
    ("images on disk", "images_on_disk", 0),
    ("did not finish in (s)", "did_not_finish_s", 0),
)


def _setting_cell(side: dict[str, Any], settings: dict[str, Any] | None) -> str:
    s = side.get("settings") or settings or {}
    if not s:
        return "n/a"
    latency = f", +{s['latency_s'] * 1000:.0f} ms" if s.get("latency_s") else ""
    return (
        f"{side.get('prompts', s.get('prompts')):,} x {s['job_real_seconds']:g} s, "
        f"{s['concurrency']:,} at once, {s['requests_per_window']:,} / {s['window_real_seconds']:g} s{latency}"
    )


def throughput_markdown(doc: dict[str, Any]) -> list[str]:
    """The throughput scenarios side by side, with the batch section's realistic profiles if they ran."""
    columns = [(key, label, lookup(doc, key)) for key, label in _THROUGHPUT_COLUMNS]
    columns = [(key, label, side) for key, label, side in columns if isinstance(side, dict)]
    out = ["### Throughput: FluxBatchOperator against what the plan allows\n"]
    if columns:
        out.append("| figure | " + " | ".join(label for _, label, _ in columns) + " |")
        out.append("|---|" + "---:|" * len(columns))
        cells = [
            _setting_cell(side, lookup(doc, key.rpartition(".")[0] + ".settings")) for key, _, side in columns
        ]
        out.append("| prompts x job, plan | " + " | ".join(cells) + " |")
        for label, key, digits in _THROUGHPUT_ROWS:
            out.append(f"| {label} | " + " | ".join(_f(side.get(key), digits) for *_, side in columns) + " |")
    first = lookup(doc, "throughput.first_runs")
    if isinstance(first, dict):
        out.extend(["", *first_runs_markdown(first)])
    pf = lookup(doc, "throughput.prompts_file")
    if isinstance(pf, dict):
        if pf.get("skipped"):
            out.append(f"\nPrompts file: skipped ({pf['skipped']}).")
        else:
            shown = ", ".join(f"{k} {_f(v, 2)}" for k, v in pf.items() if not isinstance(v, dict | list))
            out.append(f"\nPrompts file: {shown}.")
    out.append("")
    return out
