#!/usr/bin/env python3
"""Set up and run the project from a fresh clone: ``python3 dev.py demo`` or ``python3 dev.py test``.

``python3 dev.py package [--outdir DIR]`` builds the provider's and the emulator's wheel and sdist and
checks them (``twine check``, metadata, contents); see ``tools/package.py``.

It needs nothing but Python 3.10+: it makes ``.venv`` beside this file, installs the project there
from its own files (``pyproject.toml`` and ``constraints.txt``), and runs the command inside it.

``python3 dev.py test-compat [3.0 3.1 3.2 3.3] [-- PYTEST-ARGS]`` runs the tests that matter for
compatibility on each supported Airflow release, in a venv per release under ``.venvs/`` installed
from that release's pinned constraints (``.ci/constraints/``; the main release, 3.3, is ``.venv``).
Without releases it runs those other than the main one. A venv is rebuilt when its files change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".doitong-installed"

COMMANDS = {
    "demo": [str(ROOT / "example_dags" / "run_demo.py")],
    "test": ["-m", "pytest", "-p", "no:cacheprovider"],
    "bench": [str(ROOT / "benchmarks" / "run.py")],
    "emulator": ["-m", "doitong_emulator"],
    "package": [str(ROOT / "tools" / "package.py")],
}


#: The supported Airflow releases and the pinned dependency set each is tested with. The main
#: release runs the whole suite in ``.venv``; ``test-compat`` runs the others in ``.venvs/``.
MAIN_AIRFLOW = "3.3"
AIRFLOW_CONSTRAINTS = {
    "3.0": ".ci/constraints/airflow-3.0.txt",
    "3.1": ".ci/constraints/airflow-3.1.txt",
    "3.2": ".ci/constraints/airflow-3.2.txt",
    "3.3": "constraints.txt",
}
#: What ``test-compat`` runs on each release: the provider's parts that touch Airflow (registration
#: and the connection form, hook, operator and sensor through ``dag.test()``, trigger, example DAGs).
COMPAT_TESTS = [
    "tests/compat",
    "tests/test_provider_registration.py",
    "tests/hooks",
    "tests/triggers",
    "tests/operators",
    "tests/examples/test_example_dagbag.py",
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


def _install(venv_dir: Path, constraints: str, extra: str, *, fresh: bool = False) -> None:
    """Create ``venv_dir`` and install the project into it, unless it is already up to date.

    With ``fresh``, an out-of-date venv is removed first, so nothing of an older pinned set stays.
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
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    pins = ["-c", str(ROOT / constraints)] if (ROOT / constraints).exists() else []
    # The provider with its extras, and the emulator, its own distribution.
    subprocess.run([*pip, *pins, "-e", f"{ROOT}[{extra}]", "-e", str(ROOT / "emulator")], check=True)
    stamp.write_text(fingerprint)


def ensure_venv() -> None:
    """Create ``.venv`` and install the project into it, unless it is already up to date."""
    _install(VENV, "constraints.txt", "bench")


def compat_venv(release: str) -> Path:
    """The venv of one Airflow release, installed from its pinned constraints (``.venv`` for the main one)."""
    if release == MAIN_AIRFLOW:
        ensure_venv()
        return VENV
    venv_dir = ROOT / ".venvs" / f"airflow-{release}"
    _install(venv_dir, AIRFLOW_CONSTRAINTS[release], "test", fresh=True)
    return venv_dir


def test_compat(argv: list[str]) -> int:
    """Run :data:`COMPAT_TESTS` on each release named in ``argv`` (default: all but the main one)."""
    releases = [arg for arg in argv if arg in AIRFLOW_CONSTRAINTS]
    rest = [arg for arg in argv if arg not in AIRFLOW_CONSTRAINTS]
    pytest_args = rest[1:] if rest[:1] == ["--"] else rest
    releases = releases or [release for release in AIRFLOW_CONSTRAINTS if release != MAIN_AIRFLOW]
    results: list[tuple[str, int, float]] = []
    for release in releases:
        started = time.monotonic()
        python = _python(compat_venv(release))
        print(f"=== Airflow {release}: {' '.join(COMPAT_TESTS)}", flush=True)
        command = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-x", "-q", *COMPAT_TESTS]
        code = subprocess.run([*command, *pytest_args], cwd=ROOT).returncode
        results.append((release, code, time.monotonic() - started))
    for release, code, seconds in results:
        print(f"Airflow {release}: {'passed' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f}s")
    return next((code for _, code, _ in results if code != 0), 0)


def main(argv: list[str]) -> int:
    if argv[:1] == ["test-compat"]:
        return test_compat(argv[1:])
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        print("commands:", ", ".join([*COMMANDS, "test-compat"]))
        return 2
    ensure_venv()
    command = [str(PYTHON), *COMMANDS[argv[0]], *argv[1:]]
    return subprocess.run(command, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
