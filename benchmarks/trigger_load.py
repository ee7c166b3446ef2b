"""The measured process of the triggerer benchmark: many triggers in one asyncio loop, as the triggerer runs them.

``python -m benchmarks.trigger_load --kind doitong|http --poll 2 --max-seconds 300 --result out.json``:
imports everything, prints ``IMPORTED``, reads a file of job ids named on stdin, prints ``STARTED``,
runs one ``trigger.run()`` per job until each yields its first event (or ``--max-seconds``), while a
ticker task sleeping 10 ms measures how late the loop wakes it; then writes the result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

TICK_S = 0.01


def _make_triggers(kind: str, ids: list[str], poll: float, conn_id: str) -> list[Any]:
    if kind == "doitong":
        from airflow_provider_doitong.triggers.doitong import DoitongJobTrigger

        return [DoitongJobTrigger(job_id=job_id, poll_interval=poll) for job_id in ids]
    from airflow.providers.http.triggers.http import HttpSensorTrigger

    return [
        HttpSensorTrigger(endpoint=f"outputs/{job_id}.jpg", http_conn_id=conn_id, poke_interval=poll)
        for job_id in ids
    ]


async def _run_trigger(trigger: Any, fired: list[tuple[float, Any]]) -> None:
    events = trigger.run()
    try:
        async for event in events:
            fired.append((time.time(), event.payload))
            break
    finally:
        await events.aclose()


async def _ticker(stop: asyncio.Event, lags: list[float], at: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await asyncio.sleep(TICK_S)
        lags.append(loop.time() - started - TICK_S)
        at.append(time.time())


def _event_status(payload: Any) -> str:
    if isinstance(payload, dict):
        return str(payload.get("status"))
    return repr(payload)


async def _main(args: argparse.Namespace, ids: list[str]) -> dict[str, Any]:
    triggers = _make_triggers(args.kind, ids, args.poll, args.conn_id)
    fired: list[tuple[float, Any]] = []
    lags: list[float] = []
    at: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(stop, lags, at))
    await asyncio.sleep(0.2)
    cpu_before = psutil.Process().cpu_times()
    started = time.time()
    tasks = [asyncio.create_task(_run_trigger(t, fired)) for t in triggers]
    print("STARTED", started, flush=True)
    done, pending = await asyncio.wait(tasks, timeout=args.max_seconds)
    finished = time.time()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stop.set()
    await ticker
    cpu_after = psutil.Process().cpu_times()
    errors = Counter(
        type(task.exception()).__name__
        for task in done
        if not task.cancelled() and task.exception() is not None
    )
    ordered = sorted(lags)
    return {
        "started_at": started,
        "finished_at": finished,
        "wall_s": finished - started,
        "waits": len(triggers),
        "fired": len(fired),
        "not_fired": len(pending),
        "errors": dict(errors),
        "events": dict(Counter(_event_status(payload) for _, payload in fired)),
        "last_event_after_s": (max(t for t, _ in fired) - started) if fired else None,
        "loop_lag_max_s": ordered[-1] if ordered else None,
        "loop_lag_p99_s": ordered[int(0.99 * (len(ordered) - 1))] if ordered else None,
        "loop_stalls_over_0_1s": sum(1 for lag in lags if lag > 0.1),
        "loop_stalls_over_0_2s": sum(1 for lag in lags if lag > 0.2),
        "ticks": len(lags),
        "worst_lags": [
            {"lag_s": round(lag, 4), "at_s": round(t - started, 2)}
            for lag, t in sorted(zip(lags, at, strict=True), reverse=True)[:5]
        ],
        "cpu_during_waits_s": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("doitong", "http"), required=True)
    parser.add_argument("--poll", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--conn-id", default="doitong_http")
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)

    import airflow.sdk  # noqa: F401

    _make_triggers(args.kind, [], args.poll, args.conn_id)
    if args.kind == "doitong":
        import airflow_provider_doitong.triggers.poller  # noqa: F401
    me = psutil.Process()
    rss_imported = me.memory_info().rss
    print("IMPORTED", flush=True)
    ids = json.loads(Path(sys.stdin.readline().strip()).read_text())
    result = asyncio.run(_main(args, ids))
    times = me.cpu_times()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.update(
        {
            "kind": args.kind,
            "rss_after_imports_mb": rss_imported / 2**20,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_user_s": times.user,
            "cpu_system_s": times.system,
        }
    )
    Path(args.result).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
