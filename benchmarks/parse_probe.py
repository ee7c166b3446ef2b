"""DAG-file parses as the DAG processor does them: a fresh fork of a process with Airflow loaded.

``python -m benchmarks.parse_probe --repetitions N FILE...`` loads ``airflow.sdk`` and the ``DagBag``
once, then for each repetition and each file (interleaved) forks a child that times
``DagBag.process_file(FILE)`` and reports it; each child starts without any module the file imports
that the parent had not loaded. Like the processor, the parent freezes its heap (``gc.freeze()``)
before forking. Prints one JSON line per parse.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from typing import Any


def _parse_in_child(path: str) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder="/dev/null", collect_dags=False)
    before = len(sys.modules)
    started = time.perf_counter()
    dags = bag.process_file(path, only_if_updated=False)
    elapsed = time.perf_counter() - started
    return {
        "file": path,
        "parse_ms": elapsed * 1000,
        "modules_added": len(sys.modules) - before,
        "dag_ids": sorted(d.dag_id for d in dags),
        "errors": [str(v)[-300:] for v in bag.import_errors.values()],
    }


def _fork_parse(path: str) -> dict[str, Any]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            payload = json.dumps(_parse_in_child(path))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            payload = json.dumps({"file": path, "error": f"{type(exc).__name__}: {exc}"})
        with os.fdopen(write_fd, "w") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data) if data else {"file": path, "error": "no result"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repetitions", type=int, default=1)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)

    import airflow.sdk  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag

    DagBag(dag_folder="/dev/null", collect_dags=False)
    gc.collect()
    gc.freeze()
    _fork_parse(args.files[0])
    for rep in range(args.repetitions):
        for path in args.files:
            print(json.dumps({**_fork_parse(path), "repetition": rep}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
