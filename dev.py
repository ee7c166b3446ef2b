#!/usr/bin/env python3
"""Set up and run the project from a fresh clone: ``python3 dev.py demo`` or ``python3 dev.py test``.

``python3 dev.py package [--outdir DIR]`` builds the provider's and the emulator's wheel and sdist and
checks them (``twine check``, metadata, contents); see ``tools/package.py``.

It needs nothing but Python 3.10+: it makes ``.venv`` beside this file, installs the project there
from its own files (``pyproject.toml`` and ``constraints.txt``), and runs the command inside it.
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
    "package": [str(ROOT / "tools" / "package.py")],
}

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


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "emulator/pyproject.toml", "constraints.txt"):
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
    # The provider with its test and benchmark extras, and the emulator, its own distribution.
    subprocess.run([*pip, *constraints, "-e", f"{ROOT}[bench]", "-e", str(ROOT / "emulator")], check=True)
    STAMP.write_text(fingerprint)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        print("commands:", ", ".join(COMMANDS))
        return 2
    ensure_venv()
    if argv[0] in ("check", "docs"):
        ensure_check_tools()
        # mkdocs-material prints a banner about its successor on every build unless this is set.
        os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    if argv[0] == "check":
        return run_checks()
    args = argv[1:] or (["serve"] if argv[0] == "docs" else [])
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
