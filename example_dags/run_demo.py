#!/usr/bin/env python3
"""The demo: the daily prompt batch DAG, end to end, against a local Doitong emulator.

``python3 dev.py demo`` runs it. It makes a fresh, isolated Airflow home (``.demo/airflow``, recreated
on every run; ``AIRFLOW_*`` variables of the calling shell are not used), migrates its database,
starts the emulator in-process (pro plan, a 20 s job takes 1 s), points ``doitong_default`` at it,
makes the output folder the DAG's only output root, and runs ``doitong_daily_prompt_batch`` (one
``FluxBatchOperator`` task) with ``dag.test()``. Airflow's logs go to ``.demo/demo.log``; the console
gets a summary. The exit status is 0 only if the run succeeded and every image, the manifest and the
contact sheet exist and match.

Options: ``--output DIR`` (or ``$DOITONG_DEMO_OUTPUT``; default ``output/`` in the checkout),
``--home DIR`` (or ``$DOITONG_DEMO_HOME``; default ``.demo/``), ``--verbose`` (Airflow's logs on the
console too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
DAG_ID = "doitong_daily_prompt_batch"
SUMMARY_TASK = "generate"
PROMPTS_FILE = EXAMPLES / "prompts" / "daily_prompts.txt"
PLAN = "pro"
TIME_SCALE = 0.05
JOB_SECONDS = 20.0
CREDITS = 100_000
POLL_SECONDS = 0.25
MARKER = ".doitong-demo-home"
OUTPUT_ENV = "DOITONG_DEMO_OUTPUT"
HOME_ENV = "DOITONG_DEMO_HOME"


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


def say(text: str = "", *, stream: IO[str] | None = None) -> None:
    """Print one line of the summary at once.

    :param text: the line.
    :param stream: where to (the console by default).
    """
    print(text, file=stream or sys.stdout, flush=True)


def fresh_airflow_home(path: Path) -> None:
    """Recreate the demo's Airflow home, refusing to delete a folder the demo did not make.

    :param path: the Airflow home.
    :raises DemoError: if ``path`` exists, is not empty and was not made by the demo.
    """
    if path.exists():
        if not (path / MARKER).exists() and any(path.iterdir()):
            raise DemoError(f"{path} exists and was not made by the demo; not deleting it")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by example_dags/run_demo.py; deleted on its next run\n")


def isolate_environment(home: Path) -> dict[str, str]:
    """Point Airflow at the demo's home, before anything imports it.

    :param home: the Airflow home.
    :return: the environment, also applied to ``os.environ``.
    """
    for name in list(os.environ):
        if name.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) or name in (
            "AIRFLOW_HOME",
            "AIRFLOW_CONFIG",
        ):
            del os.environ[name]
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        }
    )
    return dict(os.environ)


@contextlib.contextmanager
def captured_output(log_file: Path, *, tee: bool) -> Iterator[IO[str]]:
    """Send everything written to stdout and stderr (Python or not) to a log file.

    :param log_file: the log file (appended to).
    :param tee: leave the console as it is instead.
    :return: a stream to the real console.
    """
    if tee:
        yield sys.stdout
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    with log_file.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield console
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            console.close()


def migrate(env: dict[str, str], log_file: Path) -> float:
    """``airflow db migrate`` in the demo's home.

    :param env: the isolated environment.
    :param log_file: where its output goes.
    :return: the seconds it took.
    :raises DemoError: if it fails.
    """
    started = time.monotonic()
    with log_file.open("a") as log:
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    if done.returncode:
        raise DemoError(f"airflow db migrate failed (exit {done.returncode}); see {log_file}")
    return time.monotonic() - started


def progress(emu: Any, console: IO[str], stop: threading.Event) -> None:
    """Show submissions and stored images while the DAG runs, on a terminal.

    :param emu: the emulator.
    :param console: the real console.
    :param stop: set when the run is over.
    """
    while not stop.wait(0.5):
        requests = emu.stats()["requests"]
        console.write(
            f"\r  Running         {DAG_ID}: {requests['submit']} submitted, {requests['download']} stored "
        )
        console.flush()
    console.write("\r" + " " * 78 + "\r")
    console.flush()


def task_states(dag_run: Any) -> dict[str, str]:
    """``{task_id[map_index]: state}`` of a finished run.

    :param dag_run: what ``dag.test()`` returned.
    """
    states = {}
    for ti in dag_run.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[key] = str(getattr(ti.state, "value", ti.state))
    return states


def xcom(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    """A task's XCom value from a finished run.

    :param dag_run: what ``dag.test()`` returned.
    :param task_id: the task.
    :param key: the XCom key.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, map_indexes=-1, key=key
            )
        ).first()
        return XComModel.deserialize_value(row) if row is not None else None


def verify(summary: dict[str, Any]) -> list[str]:
    """Check the files the run announced, with the provider's own manifest check.

    :param summary: the batch task's return value (the asset event's extra).
    :return: the problems found (none: all good).
    """
    from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_text
    from airflow_provider_doitong.batch.manifest import STORED, verify_manifest

    manifest_path, sheet_path = Path(summary["manifest"]), Path(summary["contact_sheet"])
    problems = [f"missing: {path}" for path in (manifest_path, sheet_path) if not path.is_file()]
    if problems:
        return problems
    problems = verify_manifest(str(manifest_path.parent))
    manifest = json.loads(manifest_path.read_text())
    items, _ = build_items(entries_from_text(PROMPTS_FILE.read_text(), jsonl=False), ItemDefaults())
    if [entry["prompt"] for entry in manifest["items"]] != [item.request.prompt for item in items]:
        problems.append("the manifest does not list every prompt once, in order")
    sheet = sheet_path.read_text()
    for entry in manifest["items"]:
        if entry["status"] != STORED:
            problems.append(f"item {entry['number']} was not stored: {entry.get('error')}")
        elif f'src="{entry["file"]}"' not in sheet:
            problems.append(f"the contact sheet does not show {entry['file']}")
    return problems


def run(args: argparse.Namespace) -> int:
    """The demo.

    :param args: the parsed command line.
    """
    demo_dir = Path(args.home).expanduser().resolve()
    output = Path(args.output).expanduser().resolve()
    home = demo_dir / "airflow"
    log_file = demo_dir / "demo.log"
    say("Doitong demo: the daily prompt batch, end to end, against a local emulator")
    say()
    fresh_airflow_home(home)
    log_file.write_text("")
    env = isolate_environment(home)
    seconds = migrate(env, log_file)
    say(f"  Airflow home    {home} (fresh; database migrated in {seconds:.1f} s)")

    with captured_output(log_file, tee=args.verbose) as console:
        import pendulum
        from airflow.dag_processing.dagbag import DagBag

        from doitong_emulator import DoitongEmulator

        os.environ["DOITONG_OUTPUT_ROOTS"] = str(output)
        bag = DagBag(dag_folder=str(EXAMPLES))
        if bag.import_errors or DAG_ID not in bag.dags:
            raise DemoError(f"the example DAGs do not import: {bag.import_errors or 'no ' + DAG_ID}")
        dag = bag.dags[DAG_ID]
        logical_date = pendulum.now("UTC")

        emulator = DoitongEmulator(plan=PLAN, time_scale=TIME_SCALE, job_seconds=JOB_SECONDS, credits=CREDITS)
        with emulator as emu:
            os.environ["AIRFLOW_CONN_DOITONG_DEFAULT"] = json.dumps(
                {
                    "conn_type": "doitong",
                    "host": emu.base_url,
                    "password": emu.api_key,
                    "extra": {"plan": PLAN, "webhook_secret": emu.webhook_secret},
                }
            )
            say(
                f"  Emulator        {emu.base_url} ({PLAN} plan; a {JOB_SECONDS:.0f} s job takes "
                f"{JOB_SECONDS * TIME_SCALE:.0f} s)",
                stream=console,
            )
            stop = threading.Event()
            ticker = None
            if console.isatty() and not args.verbose:
                ticker = threading.Thread(target=progress, args=(emu, console, stop), daemon=True)
                ticker.start()
            started = time.monotonic()
            try:
                dag_run = dag.test(logical_date=logical_date, run_conf={"poll_interval": POLL_SECONDS})
            finally:
                stop.set()
                if ticker is not None:
                    ticker.join()
            elapsed = time.monotonic() - started
            balance = emu.credits()
            submissions = emu.stats()["requests"]["submit"]

        state = str(getattr(dag_run.state, "value", dag_run.state))
        states = task_states(dag_run)
        summary = xcom(dag_run, SUMMARY_TASK)

    say(f"  Run             {dag_run.run_id}: {state} in {elapsed:.1f} s ({submissions} jobs submitted)")
    if state != "success" or not summary:
        failed = sorted(task for task, task_state in states.items() if task_state != "success")
        say()
        say(f"The run did not succeed. Tasks not successful: {', '.join(failed) or 'none'}")
        say(f"Airflow's logs: {log_file}")
        return 1
    problems = verify(summary)
    sheet = Path(summary["contact_sheet"])
    say()
    say(f"  Images          {summary['stored']}")
    say(f"  Folder          {summary['folder']}")
    say(f"  Manifest        {summary['manifest']}")
    say(f"  Contact sheet   {sheet.as_uri()}")
    say(
        f"  Credits spent   {summary['credits_spent']} (estimated {summary['credits_estimated']}; "
        f"{balance:,} of {CREDITS:,} left on the emulator account)"
    )
    say(f"  Airflow logs    {log_file}")
    say()
    if problems:
        say("The files do not check out:")
        for problem in problems:
            say(f"  - {problem}")
        return 1
    say(f"All {summary['stored']} images, the manifest and the contact sheet exist and match.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the demo.

    :param argv: the arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--output", default=os.environ.get(OUTPUT_ENV) or str(ROOT / "output"), help="where the images go"
    )
    parser.add_argument(
        "--home",
        default=os.environ.get(HOME_ENV) or str(ROOT / ".demo"),
        help="the demo's folder: its Airflow home and its log",
    )
    parser.add_argument("--verbose", action="store_true", help="show Airflow's logs on the console too")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except DemoError as exc:
        say(f"Demo failed: {exc}")
        return 1
    except Exception as exc:
        log_file = Path(args.home).expanduser().resolve() / "demo.log"
        with contextlib.suppress(OSError), log_file.open("a") as log:
            traceback.print_exc(file=log)
        say(f"Demo failed: {type(exc).__name__}: {exc} (traceback in {log_file})")
        return 1


if __name__ == "__main__":
    sys.exit(main())
