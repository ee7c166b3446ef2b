#!/usr/bin/env python3
"""Set up and run the project from a fresh clone: ``python3 dev.py demo`` or ``python3 dev.py test``.

``python3 dev.py package [--outdir DIR]`` builds the provider's and the emulator's wheel and sdist and
checks them (``twine check``, metadata, contents); see ``tools/package.py``.

It needs nothing but Python 3.10+: it makes ``.venv`` beside this file, installs the project there
from its own files (``pyproject.toml`` and ``constraints.txt``), and runs the command inside it.

``python3 dev.py distributed [--quick] [--json PATH]`` runs the batch on a distributed Airflow
(CeleryExecutor, Redis, PostgreSQL, two workers, two triggerers, S3 via moto) from its own venv,
``.venv-distributed`` (the ``distributed`` extra; ``constraints-distributed.txt`` over
``constraints.txt``); it installs Redis and PostgreSQL with apt-get when they are missing.
``python3 dev.py test-compat [3.0 3.1 3.2 3.3 3.4] [-- PYTEST-ARGS]`` runs the tests that matter for
compatibility on each supported Airflow release, in a venv per release under ``.venvs/`` installed
from that release's pinned constraints (``.ci/constraints/``; the main release, 3.3, is ``.venv``).
Without releases it runs those other than the main one. A venv is rebuilt when its files change;
``--install-only`` (first) installs the venvs and runs nothing.
``python3 dev.py test`` without named tests runs the whole suite in several worker processes
(``TEST_WORKERS``) and prints the provider package's coverage; with a path or node id it runs those
tests in one process (``-n N`` chooses). ``python3 dev.py test --unit`` runs the unit lane: every test
that needs no server, no Airflow database and no subprocess (``tests/lanes.py``), in one process.
``python3 dev.py test-s3`` runs the storage layer's tests on S3 (moto) in ``.venv-distributed``.
``python3 dev.py setup`` makes ``.venv`` with everything ``test`` and ``check`` need (and installs
Chromium with apt-get for the browser tests when it is missing), and runs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".doitong-installed"

COMMANDS = {
    "check": [],
    "docs": ["-m", "mkdocs"],
    "demo": [str(ROOT / "example_dags" / "run_demo.py")],
    "test": ["-m", "pytest", "-p", "no:cacheprovider"],
    "bench": [str(ROOT / "benchmarks" / "run.py")],
    "emulator": ["-m", "doitong_emulator"],
    "package": [str(ROOT / "tools" / "package.py")],
}

#: ``test`` without named tests runs the suite in this many pytest-xdist workers. Most tests wait on
#: the emulator's clock or on Airflow's processes rather than the CPU, so there are more workers than
#: cores; the tests that start a real Airflow run in two groups, each one after another on one worker
#: and handed out first (``--dist loadgroup``, ``SHARED_AIRFLOW`` in ``tests/conftest.py``), while the
#: other workers run the rest.
TEST_WORKERS = 4


#: The whole suite measures the provider package's coverage and prints it (the ``TOTAL`` line).
COVERAGE = ["--cov=airflow_provider_doitong", "--cov-report=term:skip-covered"]


def test_args(args: list[str]) -> list[str]:
    """pytest's arguments for ``test``: ``args`` plus the workers and coverage, unless tests are named.

    Named tests (a path or node id, as in ``dev.py test tests/batch -x``) run in one process, where
    ``-x``, ``--pdb`` and the output behave as usual; ``-n`` or ``-p no:xdist`` choose for themselves.
    ``--unit`` (the unit lane: no server, no Airflow database, no subprocess; see ``tests/lanes.py``)
    runs in one process too, without coverage.
    """
    named = any(not arg.startswith("-") and (ROOT / arg.split("::")[0]).exists() for arg in args)
    chosen = any(arg.startswith(("-n", "--numprocesses", "--dist")) or arg == "no:xdist" for arg in args)
    if named or chosen or "--unit" in args:
        return args
    return ["-n", str(TEST_WORKERS), "--dist", "loadgroup", *COVERAGE, *args]


#: What ``check`` runs, in order: every one runs, and ``check`` fails if any failed. ``docs`` serves
#: the docs site (``docs build`` builds it into ``site/``).
CHECKS: list[tuple[str, list[str]]] = [
    ("ruff check", ["-m", "ruff", "check", "."]),
    ("ruff format --check", ["-m", "ruff", "format", "--check", "."]),
    ("mypy", ["-m", "mypy"]),
    ("mkdocs build --strict", ["-m", "mkdocs", "build", "--strict", "--quiet"]),
]
#: The tools of ``check`` and ``docs``: the provider's ``lint`` extra and the docs site's requirements.
CHECK_TOOLS = ("pyproject.toml", "docs/requirements.txt", "constraints.txt")


#: The supported Airflow releases and the pinned dependency set each is tested with. The main
#: release runs the whole suite in ``.venv``; ``test-compat`` runs the others in ``.venvs/``.
MAIN_AIRFLOW = "3.3"
AIRFLOW_CONSTRAINTS = {
    "3.0": ".ci/constraints/airflow-3.0.txt",
    "3.1": ".ci/constraints/airflow-3.1.txt",
    "3.2": ".ci/constraints/airflow-3.2.txt",
    "3.3": "constraints.txt",
    # A pre-release (3.4.0b2) until 3.4.0 appears. Its test process may print a "Logging error"
    # (MissingGreenlet) as it exits: Airflow disposing its async database engine at exit, after
    # pytest has reported; the result stands.
    "3.4": ".ci/constraints/airflow-3.4.txt",
}
#: What ``test-compat`` runs on each release: the provider's parts that touch Airflow (registration
#: and the connection form, hook, operator and sensor through ``dag.test()``, trigger, example DAGs).
COMPAT_TESTS = [
    "tests/compat",
    "tests/test_provider_registration.py",
    "tests/hooks",
    "tests/triggers/test_trigger.py",
    "tests/operators/test_flux_operator.py",
    "tests/examples/test_example_dagbag.py",
    # the TaskFlow decorators: registration, arguments, and each form in dag.test()
    "tests/decorators/test_arguments.py",
    "tests/decorators/test_taskflow_runs.py",
    # the batch in dag.test(): sync and deferred, and its ledger across a crashed try (no state store)
    "tests/batch/test_batch_operator.py::test_a_batch_stores_every_image_with_its_manifest",
    "tests/batch/test_batch_operator.py::test_a_crash_between_post_and_record_is_detected_on_retry",
    # human review: refused on 3.0; the timeout's answer in a real Airflow (and in dag.test() from
    # 3.3, which 3.1 and 3.2 refuse before the first credit); a person's answers over REST
    "tests/operators/test_review_options.py",
    "tests/batch/test_batch_review.py",
    "tests/e2e/test_examples_over_rest.py::test_review_scheduled_rejected_and_triggered_approved_over_rest",
    # metrics and job spans: Airflow's Stats and OpenTelemetry on each release, to real receivers
    "tests/observability",
]
#: Left out of those files: slow tests whose subject has no Airflow in it (client waits and retries,
#: the poller's schedule), each covered by a kept sibling and by the main suite.
COMPAT_DESELECT = [
    "tests/operators/test_flux_operator.py::test_mapped_prompts_each_submitted_once",  # = tests/compat
    "tests/operators/test_flux_operator.py::test_rate_limited_submission_waits_for_the_reset[sync]",
    "tests/operators/test_flux_operator.py::test_concurrency_limit_waits_for_a_free_slot",
    "tests/triggers/test_trigger.py::test_what_the_poller_learns_outlives_it",
]


def _fingerprint(constraints: str = "constraints.txt") -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "emulator/pyproject.toml", constraints):
        path = ROOT / name
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _python(venv_dir: Path) -> Path:
    return (
        venv_dir / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")
    )


def _install(
    venv_dir: Path, constraints: str, extra: str, *, fresh: bool = False, log: Path | None = None
) -> None:
    """Create ``venv_dir`` and install the project into it, unless it is already up to date.

    With ``fresh``, an out-of-date venv is removed first, so nothing of an older pinned set stays;
    with ``log``, pip's output goes to that file instead of the terminal.
    """
    if sys.version_info < (3, 10):  # noqa: UP036 (dev.py runs under whatever python3 is first)
        sys.exit("Python 3.10 or newer is needed")
    python, stamp = _python(venv_dir), venv_dir / ".doitong-installed"
    fingerprint = _fingerprint(constraints)
    if stamp.exists() and stamp.read_text() == fingerprint:
        return
    if fresh and venv_dir.exists():
        shutil.rmtree(venv_dir)
    if not python.exists():
        print(f"Creating {venv_dir} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    print(f"Installing the project and its dependencies into {venv_dir.name} ...", flush=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    pins = ["-c", str(ROOT / constraints)] if (ROOT / constraints).exists() else []
    with contextlib.ExitStack() as stack:
        output = {"stdout": stack.enter_context(open(log, "w")), "stderr": subprocess.STDOUT} if log else {}
        subprocess.run([*pip, "--upgrade", "pip"], check=True, **output)
        # The provider with its extras, and the emulator, its own distribution.
        project = ["-e", f"{ROOT}[{extra}]", "-e", str(ROOT / "emulator")]
        subprocess.run([*pip, *pins, *project], check=True, **output)
    stamp.write_text(fingerprint)


def ensure_venv() -> None:
    """Create ``.venv`` and install the project into it, unless it is already up to date."""
    _install(VENV, "constraints.txt", "bench")


def compat_venv(release: str) -> Path:
    """The venv of one Airflow release, installed from its pinned constraints (``.venv`` for the main one).

    pip's output goes to ``.venvs/airflow-<release>.log``.
    """
    if release == MAIN_AIRFLOW:
        ensure_venv()
        return VENV
    venv_dir = ROOT / ".venvs" / f"airflow-{release}"
    venv_dir.parent.mkdir(exist_ok=True)
    _install(
        venv_dir,
        AIRFLOW_CONSTRAINTS[release],
        "test",
        fresh=True,
        log=venv_dir.parent / f"airflow-{release}.log",
    )
    return venv_dir


def test_compat(argv: list[str]) -> int:
    """Run :data:`COMPAT_TESTS` on each release named in ``argv`` (default: all but the main one).

    The venvs install one after another, and each release's tests start as soon as its venv is ready,
    beside the others' (they mostly wait on the emulator's clock, pip on the network and disk). With
    several releases each one's output is printed when it ends (and kept in ``.venvs/``). With
    ``--install-only`` the venvs are installed and nothing is run (CI does that in the background
    while the main suite runs).
    """
    releases = [arg for arg in argv if arg in AIRFLOW_CONSTRAINTS]
    rest = [arg for arg in argv if arg not in AIRFLOW_CONSTRAINTS]
    install_only = "--install-only" in rest[:1]
    rest = rest[1:] if install_only else rest
    pytest_args = rest[1:] if rest[:1] == ["--"] else rest
    releases = releases or [release for release in AIRFLOW_CONSTRAINTS if release != MAIN_AIRFLOW]
    with ThreadPoolExecutor(max_workers=1) as installer, ThreadPoolExecutor(len(releases)) as runners:
        venvs = {release: installer.submit(compat_venv, release) for release in releases}
        if install_only:
            return _install_results(venvs)
        quiet = len(releases) > 1
        runs = [
            runners.submit(_run_compat, release, venvs[release], pytest_args, quiet) for release in releases
        ]
        results = [run.result() for run in as_completed(runs)]
    for release, code, seconds in sorted(results):
        print(f"Airflow {release}: {'passed' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f}s")
    return next((code for _, code, _ in sorted(results) if code != 0), 0)


def _install_results(venvs: dict[str, Future[Path]]) -> int:
    failed = []
    for release, future in venvs.items():
        try:
            future.result()
        except subprocess.CalledProcessError:
            failed.append(release)
            print(f"Installing Airflow {release} failed; see .venvs/airflow-{release}.log", flush=True)
    return 1 if failed else 0


def _run_compat(
    release: str, venv_dir: Future[Path], pytest_args: list[str], quiet: bool
) -> tuple[str, int, float]:
    """Run one release's compatibility tests once its venv is ready; ``(release, exit code, seconds)``.

    With ``quiet``, pytest's output goes to ``.venvs/airflow-<release>.tests.log`` and is printed
    whole when the run ends, so that releases running side by side do not interleave.
    """
    started = time.monotonic()
    try:
        python = _python(venv_dir.result())
    except subprocess.CalledProcessError:
        print(f"Installing Airflow {release} failed; see .venvs/airflow-{release}.log", flush=True)
        return release, 1, time.monotonic() - started
    deselect = [arg for node in COMPAT_DESELECT for arg in ("--deselect", node)]
    command = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-x", "-q", *COMPAT_TESTS, *deselect]
    header = f"=== Airflow {release} (waited {time.monotonic() - started:.0f}s for its venv): " + " ".join(
        COMPAT_TESTS
    )
    if not quiet:
        print(header, flush=True)
        code = subprocess.run([*command, *pytest_args], cwd=ROOT).returncode
        return release, code, time.monotonic() - started
    log = ROOT / ".venvs" / f"airflow-{release}.tests.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "w") as output:
        code = subprocess.run(
            [*command, *pytest_args], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
        ).returncode
    print(f"{header}\n{log.read_text()}", end="", flush=True)
    return release, code, time.monotonic() - started


DIST_VENV = ROOT / ".venv-distributed"
DIST_PYTHON = (
    DIST_VENV / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")
)


def _package_name(line: str) -> str:
    return line.split("==", 1)[0].strip().lower().replace("_", "-")


def ensure_distributed_venv() -> None:
    """Create ``.venv-distributed`` with the ``distributed`` extra, unless it is already up to date.

    Its constraints are ``constraints.txt`` with each package pinned in ``constraints-distributed.txt``
    replaced by that pin (written to the venv, since pip cannot override a constraint).
    """
    overrides = (ROOT / "constraints-distributed.txt").read_text().splitlines()
    pinned = {_package_name(line) for line in overrides if "==" in line}
    base = (ROOT / "constraints.txt").read_text().splitlines()
    merged = [line for line in base if "==" not in line or _package_name(line) not in pinned] + overrides
    stamp = DIST_VENV / ".doitong-installed"
    fingerprint = hashlib.sha256("\n".join([_fingerprint(), *merged]).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == fingerprint:
        return
    if not DIST_PYTHON.exists():
        print(f"Creating {DIST_VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(DIST_VENV)
    print("Installing the project with its distributed extra (first run only) ...", flush=True)
    constraints = DIST_VENV / "constraints.txt"
    constraints.write_text("\n".join(merged) + "\n")
    pip = [str(DIST_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run(
        [*pip, "-c", str(constraints), "-e", f"{ROOT}[distributed]", "-e", str(ROOT / "emulator")], check=True
    )
    stamp.write_text(fingerprint)


#: The tests of the storage layer on S3 (moto): they need s3fs and the Amazon provider, which only
#: ``.venv-distributed`` can hold (see constraints-distributed.txt), so ``test-s3`` runs them there.
S3_TESTS = ["tests/operators/test_storage_s3.py"]


def test_s3(argv: list[str]) -> int:
    """Run :data:`S3_TESTS` in ``.venv-distributed``, where a missing S3 package fails rather than skips.

    ``--install-only`` (first) installs the venv and runs nothing.
    """
    ensure_distributed_venv()
    if argv[:1] == ["--install-only"]:
        return 0
    env = {**os.environ, "DOITONG_REQUIRE_S3": "1"}
    command = [str(DIST_PYTHON), "-m", "pytest", "-p", "no:cacheprovider", *S3_TESTS, *argv]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def main(argv: list[str]) -> int:
    if argv[:1] == ["test-s3"]:
        return test_s3(argv[1:])
    if argv and argv[0] == "distributed":
        ensure_distributed_venv()
        command = [str(DIST_PYTHON), str(ROOT / "benchmarks" / "run.py"), "--only", "distributed", *argv[1:]]
        return subprocess.run(command, cwd=ROOT).returncode
    if argv[:1] == ["test-compat"]:
        return test_compat(argv[1:])
    if argv[:1] == ["setup"]:
        ensure_venv()
        ensure_check_tools()
        from tests.support.browser import ensure_chromium  # the browser tests' Chromium (apt-get)

        try:
            ensure_chromium()
        except RuntimeError as exc:  # not root, or no apt-get: the browser tests say so and skip
            print(exc)
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        print("commands:", ", ".join([*COMMANDS, "test-compat", "test-s3", "distributed", "setup"]))
        return 2
    ensure_venv()
    if argv[0] in ("check", "docs"):
        ensure_check_tools()
        # mkdocs-material prints a banner about its successor on every build unless this is set.
        os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    if argv[0] == "check":
        return run_checks()
    args = argv[1:] or (["serve"] if argv[0] == "docs" else [])
    if argv[0] == "test":
        args = test_args(args)
    command = [str(PYTHON), *COMMANDS[argv[0]], *args]
    return subprocess.run(command, cwd=ROOT).returncode


def ensure_check_tools() -> None:
    """Install what ``check`` and ``docs`` run into ``.venv``, unless it is already up to date."""
    stamp = VENV / ".doitong-check-tools"
    digest = hashlib.sha256()
    for name in CHECK_TOOLS:
        path = ROOT / name
        if path.exists():
            digest.update(path.read_bytes())
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    print("Installing the linters, the type checker and the docs tools (first run only) ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    constraints = ["-c", str(ROOT / "constraints.txt")] if (ROOT / "constraints.txt").exists() else []
    requirements = ["-e", f"{ROOT}[lint]", "-r", str(ROOT / "docs" / "requirements.txt")]
    subprocess.run([*pip, *constraints, *requirements], check=True)
    stamp.write_text(digest.hexdigest())


def run_checks() -> int:
    """Run every check in :data:`CHECKS` and say which failed."""
    failed = []
    for name, args in CHECKS:
        print(f"--- {name}", flush=True)
        if subprocess.run([str(PYTHON), *args], cwd=ROOT).returncode != 0:
            failed.append(name)
    print("--- checks failed: " + ", ".join(failed) if failed else "--- all checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
