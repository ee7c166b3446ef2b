"""A real batch in real Airflow (``dag.test()`` in a subprocess) with its metrics and traces on,
received by real receivers: a StatsD UDP listener, and an OTLP/HTTP receiver decoding the protobuf
requests. The figures must be the manifest's and the emulator's exactly.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from doitong_emulator import DoitongEmulator, FaultConfig
from tests.airflow_versions import AIRFLOW_VERSION
from tests.conftest import REPO, conn_json

pytestmark = pytest.mark.integration  # emulators and Airflow runs of its own

CONN_ID = "doitong_metrics"
DAG_ID = "doitong_metrics_batch"


@pytest.fixture
def emulator() -> Iterator[DoitongEmulator]:
    """Jobs of 0.4 s; a share of 429s on every kind of request, so refusals and 429s are counted."""
    with DoitongEmulator(plan="pro", time_scale=0.02, job_seconds=20, credits=100_000) as emu:
        emu.set_faults(FaultConfig(error_429_rate=0.25, seed=7))
        yield emu


def _run_batch(
    env: dict[str, str], airflow_home: Path, work: Path, emu: DoitongEmulator, *, deferrable: bool
) -> dict[str, Any]:
    full_env = {
        **os.environ,
        **env,
        "DOITONG_TEST_AIRFLOW_HOME": str(airflow_home),
        f"AIRFLOW_CONN_{CONN_ID.upper()}": conn_json(emu),
        # Airflow 3.0's supervisor logs each secret it is asked to mask at DEBUG: the level a user runs
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.observability._metrics_run", str(work), "1" if deferrable else "0"],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((work / "run.json").read_text())
    assert run["states"] == {"batch": "success"}, done.stdout[-3000:]
    # Airflow 3.0's dag.test() prints, at DEBUG whatever the level, its own request to mask the key
    # (``MaskSecret(value=...)``): Airflow's line, not the provider's; every other line is checked.
    output = (done.stdout + done.stderr).splitlines()
    assert not [line for line in output if emu.api_key in line and "MaskSecret(value=" not in line]
    manifest: dict[str, Any] = run["manifest"]
    return manifest


def _expected(manifest: dict[str, Any], emu: DoitongEmulator) -> dict[str, int]:
    """Each counter's total, from the manifest and the emulator's own request log."""
    items = manifest["items"]
    log = emu.request_log()
    submits = [r for r in log if r["kind"] == "submit"]
    return {
        "doitong.jobs.submitted": sum(1 for r in submits if r["status"] == 200),
        "doitong.jobs.refused": sum(1 for r in submits if r["status"] == 429),
        "doitong.jobs.completed": len(items),
        "doitong.jobs.failed": 0,
        "doitong.credits.estimated": manifest["credits_estimated"],
        "doitong.credits.charged": manifest["credits_spent"],
        "doitong.images.stored": manifest["image_count"],
        "doitong.images.bytes": sum(item["bytes"] for item in items),
        "doitong.status_requests": sum(1 for r in log if r["kind"] == "status"),
        "doitong.rate_limited": sum(1 for r in log if r["status"] == 429 and r["kind"] != "download"),
    }


# --- StatsD ----------------------------------------------------------------------------------------
@pytest.fixture
def statsd_listener() -> Iterator[tuple[int, list[str]]]:
    """A UDP socket on loopback; every datagram's lines, as received."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    lines: list[str] = []
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                data, _ = sock.recvfrom(65535)
            except TimeoutError:
                continue
            lines.extend(data.decode().splitlines())

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    yield sock.getsockname()[1], lines
    stop.set()
    thread.join()
    sock.close()


#: ``airflow.<name>,<tag>=<value>,...:<value>|<type>`` (InfluxDB-style tags, ``statsd_influxdb_enabled``)
_STATSD_LINE = re.compile(
    r"^airflow\.(?P<name>doitong\.[a-z_.]+)(?P<tags>(,[^,=:]+=[^,=:]+)*):(?P<value>[\d.]+)\|(?P<type>c|ms)$"
)


def test_statsd_receives_the_figures_of_the_manifest(
    emulator: DoitongEmulator, statsd_listener: tuple[int, list[str]], airflow_home: Path, tmp_path: Path
) -> None:
    port, lines = statsd_listener
    pytest.importorskip("statsd", reason="Airflow's StatsD metrics need the statsd package (the test extra)")
    manifest = _run_batch(
        {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(port),
            "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
        },
        airflow_home,
        tmp_path,
        emulator,
        deferrable=True,
    )
    ours = [line for line in lines if line.startswith("airflow.doitong.")]
    assert ours, lines
    totals: dict[str, float] = defaultdict(float)
    timings: dict[str, int] = defaultdict(int)
    kinds: dict[str, float] = defaultdict(float)
    for line in ours:
        found = _STATSD_LINE.match(line)
        assert found, line
        tags = dict(pair.split("=") for pair in found["tags"].strip(",").split(","))
        assert tags["conn_id"] == CONN_ID  # every figure names its connection
        # A status read in the triggerer serves many tasks: it names the connection only.
        if found["name"] not in ("doitong.status_requests", "doitong.rate_limited"):
            assert (tags["dag_id"], tags["task_id"], tags["model"]) == (DAG_ID, "batch", "flux-krea"), line
        if found["type"] == "c":
            totals[found["name"]] += float(found["value"])
        else:
            timings[found["name"]] += 1
        if found["name"] == "doitong.jobs.refused":
            kinds[tags["kind"]] += float(found["value"])
    expected = _expected(manifest, emulator)
    assert expected["doitong.rate_limited"] > 0 and expected["doitong.jobs.refused"] > 0  # the faults bit
    assert {name: int(totals.get(name, 0)) for name in expected} == expected
    assert kinds == {"rate_limited": expected["doitong.jobs.refused"]}
    assert timings == {
        "doitong.job.turnaround": len(manifest["items"]),
        "doitong.job.end_to_stored": len(manifest["items"]),
    }
    assert not [line for line in lines if emulator.api_key in line]


# --- OpenTelemetry over OTLP/HTTP --------------------------------------------------------------------
@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, dict[str, list[bytes]]]]:
    """An OTLP/HTTP endpoint on loopback: every request body, by path (``/v1/metrics``, ``/v1/traces``)."""
    bodies: dict[str, list[bytes]] = defaultdict(list)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            bodies[self.path].append(self.rfile.read(length))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()


def _attributes(attributes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def _otel_counters(bodies: list[bytes]) -> tuple[dict[str, int], dict[str, int], list[dict[str, Any]]]:
    """Each ``airflow.doitong.*`` counter's total and each histogram's count, from the last export of
    every series (the exporter sends cumulative sums), and every series' attributes."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    last: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[str, float]] = {}
    for body in bodies:
        request = ExportMetricsServiceRequest.FromString(body)
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if not metric.name.startswith("airflow.doitong."):
                        continue
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        attributes = _attributes(point.attributes)
                        key = (metric.name, tuple(sorted(attributes.items())))
                        value = point.as_int if kind == "sum" else getattr(point, "count", 0)
                        last[key] = (kind, value)
    sums: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for (name, _), (kind, value) in last.items():
        # Airflow before 3.3 exports its timers as gauges (the last value only): a count of zero
        (sums if kind == "sum" else counts)[name.removeprefix("airflow.")] += int(value)
    return dict(sums), dict(counts), [dict(attributes) for (_, attributes) in last]


def _before_3_2_metrics_endpoint(endpoint: str) -> dict[str, str]:
    """Airflow 3.0 and 3.1 send metrics to ``[metrics] otel_host``/``otel_port`` only: they hand their
    exporter that endpoint, so ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is not read."""
    if AIRFLOW_VERSION >= (3, 2):
        return {}
    host, port = endpoint.removeprefix("http://").split(":")
    return {"AIRFLOW__METRICS__OTEL_HOST": host, "AIRFLOW__METRICS__OTEL_PORT": port}


def test_opentelemetry_receives_the_figures_and_one_span_per_job(
    emulator: DoitongEmulator,
    otlp_receiver: tuple[str, dict[str, list[bytes]]],
    airflow_home: Path,
    tmp_path: Path,
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    endpoint, bodies = otlp_receiver
    manifest = _run_batch(
        {
            **_before_3_2_metrics_endpoint(endpoint),
            "AIRFLOW__METRICS__OTEL_ON": "True",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{endpoint}/v1/metrics",
            "AIRFLOW__TRACES__OTEL_ON": "True",
            "OTEL_TRACES_EXPORTER": "otlp_proto_http",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{endpoint}/v1/traces",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        },
        airflow_home,
        tmp_path,
        emulator,
        deferrable=False,
    )
    sums, counts, series = _otel_counters(bodies["/v1/metrics"])
    expected = _expected(manifest, emulator)
    assert {name: sums.get(name, 0) for name in expected} == expected
    items = manifest["items"]
    timers = {"doitong.job.turnaround": len(items), "doitong.job.end_to_stored": len(items)}
    if not any(counts.values()):  # gauges: each timer is there, its count is not exported
        timers = dict.fromkeys(timers, 0)
    assert counts == timers
    assert all(s["conn_id"] == CONN_ID for s in series)
    assert all(emulator.api_key not in json.dumps(s) for s in series)
    if AIRFLOW_VERSION < (3, 2):
        # 3.0 and 3.1 keep their tracer to themselves (no global tracer provider): the job spans,
        # written through the OpenTelemetry API, go nowhere, and so does this test's parent span.
        assert not bodies["/v1/traces"]
        return

    spans = [
        span
        for body in bodies["/v1/traces"]
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    (parent,) = [span for span in spans if span.name == "doitong-test-run"]
    jobs = [span for span in spans if span.name == "doitong.job"]
    by_job = {_attributes(span.attributes)["doitong.job_id"]: span for span in jobs}
    assert len(jobs) == len(by_job) == len(items)
    for item in items:
        span = by_job[item["job_id"]]
        attributes = _attributes(span.attributes)
        assert attributes["doitong.credits_charged"] == item["credits"]
        assert attributes["airflow.dag_id"] == DAG_ID and attributes["airflow.task_id"] == "batch"
        assert span.trace_id == parent.trace_id and span.parent_span_id == parent.span_id
        assert [event.name for event in span.events] == ["submitted", "completed", "downloaded", "stored"]
        assert span.start_time_unix_nano <= span.end_time_unix_nano
