"""Build the two distributions (the provider, and the emulator in ``emulator/``) and check them.

Run through ``python3 dev.py package [--outdir DIR]``: inside the project's ``.venv``, it installs the
release tools (``build`` and ``twine``, pinned by ``constraints.txt``) if they are missing, builds each
project's sdist and then its wheel *from that sdist* (so a file missing from the sdist breaks the
build here, not for a user), runs ``twine check --strict`` on all four files, and checks what a
provider package must carry: the version, the Airflow provider entry point, the license, the
``py.typed`` marker, and no emulator or tests inside the provider. Without ``--outdir`` the files go
to a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import email.parser
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
#: (project folder, import name)
PROJECTS = ((ROOT, "airflow_provider_doitong"), (ROOT / "emulator", "doitong_emulator"))
RELEASE_TOOLS = ("build", "twine")


def _run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(arg) for arg in args], check=True, env=env)


def ensure_tools() -> None:
    """Install ``build`` and ``twine`` into this interpreter's environment unless present."""
    missing = [name for name in RELEASE_TOOLS if importlib.util.find_spec(name) is None]
    if missing:
        print(f"Installing {', '.join(missing)} ...", flush=True)
        _run(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-c", CONSTRAINTS, *missing)  # fmt: skip


def build(project: Path, outdir: Path) -> list[Path]:
    """The sdist and the wheel of one project (the wheel built from the sdist).

    The isolated build environment takes ``constraints.txt`` too, so the setuptools that builds
    a release is the pinned one. The ``*.egg-info`` folder setuptools leaves in the source tree is
    removed: an editable install would otherwise find two distributions of the package there.
    """
    env = {**os.environ, "PIP_CONSTRAINT": str(CONSTRAINTS)}
    before = set(outdir.glob("*"))
    left_before = set(project.glob("*.egg-info"))
    try:
        _run(sys.executable, "-m", "build", "--quiet", "--outdir", outdir, project, env=env)
    finally:
        for left in set(project.glob("*.egg-info")) - left_before:
            shutil.rmtree(left, ignore_errors=True)
    made = sorted(set(outdir.glob("*")) - before)
    kinds = sorted(path.suffix for path in made)
    if kinds != [".gz", ".whl"]:
        raise SystemExit(f"expected one sdist and one wheel from {project}, got {[p.name for p in made]}")
    return made


def _wheel_metadata(wheel: Path) -> tuple[email.message.Message, list[str], str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    return metadata, names, entry_points


def _project_version(project: Path, import_name: str) -> str:
    """``__version__`` read from the source file, without importing the package."""
    init = (project / import_name / "__init__.py").read_text(encoding="utf-8")
    for line in init.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise SystemExit(f"no __version__ in {import_name}/__init__.py")


def check(project: Path, import_name: str, files: list[Path]) -> list[str]:
    """What is wrong with one project's distributions (nothing, if the list is empty)."""
    problems: list[str] = []
    wheel = next(path for path in files if path.suffix == ".whl")
    sdist = next(path for path in files if path.suffix == ".gz")
    version = _project_version(project, import_name)
    metadata, names, entry_points = _wheel_metadata(wheel)
    if metadata["Version"] != version:
        problems.append(f"{wheel.name}: version {metadata['Version']}, the source says {version}")
    if metadata["License-Expression"] != "Apache-2.0":
        problems.append(f"{wheel.name}: License-Expression is {metadata['License-Expression']!r}")
    if not any(name.endswith(".dist-info/licenses/LICENSE") for name in names):
        problems.append(f"{wheel.name}: no LICENSE")
    urls = {value.split(",", 1)[0] for value in metadata.get_all("Project-URL") or []}
    if urls != {"Documentation", "Source", "Changelog", "Issues"}:
        problems.append(f"{wheel.name}: project URLs are {sorted(urls)}")
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    if top_level != {import_name}:
        problems.append(f"{wheel.name}: holds {sorted(top_level)}, expected only {import_name}")
    with tarfile.open(sdist) as archive:
        members = {member.name.split("/", 1)[-1] for member in archive.getmembers()}
    for needed in ("LICENSE", "README.md", "pyproject.toml", f"{import_name}/__init__.py"):
        if needed not in members:
            problems.append(f"{sdist.name}: no {needed}")
    if import_name == "airflow_provider_doitong":
        classifiers = set(metadata.get_all("Classifier") or [])
        for needed in ("Framework :: Apache Airflow", "Framework :: Apache Airflow :: Provider"):
            if needed not in classifiers:
                problems.append(f"{wheel.name}: no classifier {needed!r}")
        if "airflow_provider_doitong/py.typed" not in names:
            problems.append(f"{wheel.name}: no py.typed")
        if "apache_airflow_provider" not in entry_points or "get_provider_info" not in entry_points:
            problems.append(f"{wheel.name}: no apache_airflow_provider entry point")
        if "CHANGELOG.md" not in members:
            problems.append(f"{sdist.name}: no CHANGELOG.md")
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dev.py package", description=__doc__.split("\n\n")[0])
    parser.add_argument("--outdir", type=Path, help="keep the distributions here (default: a temp folder)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    ensure_tools()
    with tempfile.TemporaryDirectory(prefix="doitong-dist-") as tmp:
        outdir = (args.outdir or Path(tmp)).resolve()
        outdir.mkdir(parents=True, exist_ok=True)
        problems: list[str] = []
        made: list[Path] = []
        for project, import_name in PROJECTS:
            files = build(project, outdir)
            made += files
            problems += check(project, import_name, files)
        _run(sys.executable, "-m", "twine", "check", "--strict", *made)
        for problem in problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        if problems:
            return 1
        print(f"OK: {', '.join(path.name for path in made)} ({time.monotonic() - started:.0f}s)")
        if args.outdir:
            print(f"in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
