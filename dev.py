#!/usr/bin/env python3
"""Set up and run the project from a fresh clone: ``python3 dev.py demo`` or ``python3 dev.py test``.

It needs nothing but Python 3.10+: it makes ``.venv`` beside this file, installs the project there
from its own files (``pyproject.toml``, ``emulator/``, ``docs/requirements.txt`` and
``constraints.txt``), and runs the command inside it. ``check`` runs the linters, the type checker
and a strict docs build; ``docs`` serves the docs site (``docs build`` builds it into ``site/``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
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
}

#: What ``check`` runs, in order; every one runs, and ``check`` fails if any failed.
CHECKS: list[tuple[str, list[str]]] = [
    ("ruff check", ["-m", "ruff", "check", "."]),
    ("ruff format --check", ["-m", "ruff", "format", "--check", "."]),
    ("mypy", ["-m", "mypy"]),
    ("mkdocs build --strict", ["-m", "mkdocs", "build", "--strict", "--quiet"]),
]


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "emulator/pyproject.toml", "docs/requirements.txt", "constraints.txt"):
        path = ROOT / name
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create ``.venv`` and install the project into it, unless it is already up to date."""
    if sys.version_info < (3, 10):  # noqa: UP036 (dev.py runs under whatever python3 is first)
        sys.exit("Python 3.10 or newer is needed")
    if not PYTHON.exists():
        print(f"Creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    fingerprint = _fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    print("Installing the project and its dependencies (first run only) ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    constraints = ["-c", str(ROOT / "constraints.txt")] if (ROOT / "constraints.txt").exists() else []
    # The provider with its test, benchmark and lint extras, the emulator (its own distribution)
    # and the docs site's tools.
    subprocess.run(
        [
            *pip,
            *constraints,
            "-e",
            f"{ROOT}[bench,lint]",
            "-e",
            str(ROOT / "emulator"),
            "-r",
            str(ROOT / "docs" / "requirements.txt"),
        ],
        check=True,
    )
    STAMP.write_text(fingerprint)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        print("commands:", ", ".join(COMMANDS))
        return 2
    ensure_venv()
    # mkdocs-material prints a banner about its successor on every build unless this is set.
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    if argv[0] == "check":
        return run_checks()
    args = argv[1:] or (["serve"] if argv[0] == "docs" else [])
    command = [str(PYTHON), *COMMANDS[argv[0]], *args]
    return subprocess.run(command, cwd=ROOT).returncode


def run_checks() -> int:
    """Run every check in :data:`CHECKS` and print which failed."""
    failed = []
    for name, args in CHECKS:
        print(f"--- {name}", flush=True)
        if subprocess.run([str(PYTHON), *args], cwd=ROOT).returncode != 0:
            failed.append(name)
    print("--- checks failed: " + ", ".join(failed) if failed else "--- all checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
