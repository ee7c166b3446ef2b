"""The releasable package: provider info complete against Airflow's schema, one version, the changelog,
the distribution's metadata, and the checks ``python3 dev.py package`` runs on built files.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import os
import pkgutil
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from importlib.metadata import metadata
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_doitong
from airflow_provider_doitong import get_provider_info
from tests.conftest import REPO

jsonschema = pytest.importorskip("jsonschema")
PACKAGE = "airflow-provider-doitong"


def _airflow_schema(name: str) -> dict[str, Any]:
    import airflow

    return json.loads((Path(airflow.__file__).parent / name).read_text())


def _modules() -> list[Any]:
    """Every module of the provider package, imported."""
    prefix = airflow_provider_doitong.__name__ + "."
    found = [airflow_provider_doitong]
    for info in pkgutil.walk_packages(airflow_provider_doitong.__path__, prefix):
        found.append(importlib.import_module(info.name))
    return found


def _classes_defined_in(module: Any, base: str) -> list[type]:
    """Concrete classes a module defines that derive from a class named ``base``.

    By name, because where Airflow keeps ``BaseHook`` and friends moved between 3.0 and 3.3.
    """
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and value.__module__ == module.__name__
        and any(parent.__name__ == base for parent in value.__mro__[1:])
        and not inspect.isabstract(value)
        and not value.__name__.endswith("Mixin")
    ]


def _listed_modules(info: dict[str, Any], key: str) -> set[str]:
    return {module for entry in info.get(key, []) for module in entry["python-modules"]}


# --- provider info ---------------------------------------------------------------------------
def test_provider_info_is_valid_and_uses_only_known_keys() -> None:
    info = get_provider_info()
    runtime = _airflow_schema("provider_info.schema.json")
    jsonschema.validate(info, runtime)
    # The runtime schema allows any other key; a misspelt one ("hook" for "hooks") would be ignored.
    known = set(runtime["properties"]) | set(_airflow_schema("provider.yaml.schema.json")["properties"])
    assert set(info) <= known, set(info) - known
    strict = {**runtime, "additionalProperties": False, "properties": {k: {} for k in known}}
    jsonschema.validate(info, strict)


def test_provider_info_names_every_hook_operator_sensor_trigger_and_link() -> None:
    info = get_provider_info()
    expected: dict[str, set[str]] = {"hooks": set(), "operators": set(), "sensors": set(), "triggers": set()}
    links: set[str] = set()
    decorators: set[str] = set()
    hooks_with_conn_type: set[str] = set()
    for module in _modules():
        name = module.__name__
        for cls in _classes_defined_in(module, "BaseHook"):
            expected["hooks"].add(name)
            if getattr(cls, "conn_type", None):
                hooks_with_conn_type.add(f"{name}.{cls.__name__}")
        for cls in _classes_defined_in(module, "BaseOperator"):
            parents = {parent.__name__ for parent in cls.__mro__}
            if "DecoratedOperator" in parents:  # a TaskFlow form: listed under task-decorators
                decorators.add(name)
                continue
            expected["sensors" if "BaseSensorOperator" in parents else "operators"].add(name)
        if _classes_defined_in(module, "BaseTrigger"):
            expected["triggers"].add(name)
        links |= {f"{name}.{cls.__name__}" for cls in _classes_defined_in(module, "BaseOperatorLink")}
    for key, modules in expected.items():
        assert _listed_modules(info, key) == modules, key
    assert set(info["extra-links"]) == links
    assert {entry["class-name"].rpartition(".")[0] for entry in info["task-decorators"]} == decorators
    assert {entry["hook-class-name"] for entry in info["connection-types"]} == hooks_with_conn_type
    integrations = {entry["integration-name"] for entry in info["integrations"]}
    for key in expected:
        assert {entry["integration-name"] for entry in info[key]} <= integrations


def test_the_connection_form_validates_against_airflows_schema() -> None:
    schema = _airflow_schema("customized_form_field_behaviours.schema.json")
    from airflow_provider_doitong.hooks.doitong import DoitongHook

    jsonschema.validate(DoitongHook.get_ui_field_behaviour(), schema)


# --- one version -------------------------------------------------------------------------------
def _changelog() -> str:
    return (REPO / "CHANGELOG.md").read_text(encoding="utf-8")


def test_the_version_is_the_same_everywhere() -> None:
    version = airflow_provider_doitong.__version__
    assert metadata(PACKAGE)["Version"] == version
    assert get_provider_info()["versions"] == [version]
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", _changelog(), re.MULTILINE)
    assert released and released[0] == version


def test_the_changelog_keeps_a_changelog() -> None:
    text = _changelog()
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert headings[0] == "Unreleased"
    for heading in headings:
        assert re.search(rf"^\[{re.escape(heading)}\]: https://", text, re.MULTILINE), heading
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    for item in ("FluxBatchOperator", "OpenLineage", "graphql-image", "doitong-emulator", "3.0", "3.3"):
        assert item in unreleased, item
    assert re.search(r"^### (Added|Changed|Deprecated|Removed|Fixed|Security)$", unreleased, re.MULTILINE)


# --- the installed distribution's metadata -----------------------------------------------------
def test_distribution_metadata() -> None:
    meta = metadata(PACKAGE)
    urls = dict(value.split(", ", 1) for value in meta.get_all("Project-URL") or [])
    assert set(urls) == {"Documentation", "Source", "Changelog", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())
    classifiers = set(meta.get_all("Classifier") or [])
    assert {"Framework :: Apache Airflow", "Framework :: Apache Airflow :: Provider"} <= classifiers
    versions = {
        c.rsplit(" :: ", 1)[1]
        for c in classifiers
        if re.match(r"Programming Language :: Python :: 3\.\d+$", c)
    }
    minimum = meta["Requires-Python"].removeprefix(">=")
    assert min(versions, key=lambda v: tuple(map(int, v.split(".")))) == minimum
    assert meta["License-Expression"] == "Apache-2.0"
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression only
    extras = [r for r in meta.get_all("Requires-Dist") or [] if 'extra == "test"' in r]
    assert any(r.startswith("apache-airflow-providers-openlineage") for r in extras)
    required = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert not any("openlineage" in r for r in required)  # lineage is optional


# --- the distribution checks of dev.py package --------------------------------------------------
def _package_tool() -> Any:
    spec = importlib.util.spec_from_file_location("doitong_package_tool", REPO / "tools" / "package.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_dists(tmp_path: Path, *, version: str, files: dict[str, str]) -> list[Path]:
    info = f"airflow_provider_doitong-{version}.dist-info"
    meta = "\n".join(
        [
            "Metadata-Version: 2.4",
            "Name: airflow-provider-doitong",
            f"Version: {version}",
            "License-Expression: Apache-2.0",
            "Classifier: Framework :: Apache Airflow",
            "Classifier: Framework :: Apache Airflow :: Provider",
            *(
                f"Project-URL: {key}, https://example.org/{key}"
                for key in ("Documentation", "Source", "Changelog", "Issues")
            ),
        ]
    )
    wheel = tmp_path / f"airflow_provider_doitong-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{info}/METADATA", meta + "\n\n")
        archive.writestr(
            f"{info}/entry_points.txt",
            "[apache_airflow_provider]\nprovider_info = airflow_provider_doitong:get_provider_info\n",
        )
        for name, text in files.items():
            archive.writestr(name.replace("{info}", info), text)
    sdist = tmp_path / f"airflow_provider_doitong-{version}.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for name in (
            "LICENSE",
            "README.md",
            "pyproject.toml",
            "CHANGELOG.md",
            "airflow_provider_doitong/__init__.py",
        ):
            data = b"x"
            member = tarfile.TarInfo(f"airflow_provider_doitong-{version}/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return [wheel, sdist]


def test_the_package_checks_pass_good_files_and_name_each_problem(tmp_path: Path) -> None:
    tool = _package_tool()
    version = airflow_provider_doitong.__version__
    good = {
        "{info}/licenses/LICENSE": "Apache",
        "airflow_provider_doitong/__init__.py": "",
        "airflow_provider_doitong/py.typed": "",
    }
    (tmp_path / "good").mkdir()
    files = _fake_dists(tmp_path / "good", version=version, files=good)
    assert tool.check(REPO, "airflow_provider_doitong", files) == []

    bad = {"airflow_provider_doitong/__init__.py": "", "tests/test_x.py": ""}
    (tmp_path / "bad").mkdir()
    files = _fake_dists(tmp_path / "bad", version="9.9.9", files=bad)
    problems = " | ".join(tool.check(REPO, "airflow_provider_doitong", files))
    for expected in ("version 9.9.9", "no LICENSE", "py.typed", "expected only airflow_provider_doitong"):
        assert expected in problems, problems


def test_the_python_classifiers_match_the_readmes_range() -> None:
    """Both distributions claim the Python releases the README's table gives for the main Airflow."""
    import tomllib

    (row,) = re.findall(r"^\| 3\.3 \|[^\n]*", (REPO / "README.md").read_text(encoding="utf-8"), re.MULTILINE)
    low, high = re.search(r"(3\.\d+) to (3\.\d+)", row).groups()  # type: ignore[union-attr]
    expected = [f"3.{minor}" for minor in range(int(low[2:]), int(high[2:]) + 1)]
    for project in (REPO, REPO / "emulator"):
        meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        versions = [
            c.rsplit(" :: ", 1)[1]
            for c in meta["classifiers"]
            if re.match(r"Programming Language :: Python :: 3\.\d+$", c)
        ]
        assert versions == expected, project
        assert meta["requires-python"] == f">={low}"


# --- the built wheels, installed as the README says, in a fresh venv ------------------------------
@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh venv with only the two built wheels installed, with the constraints, as the README says.

    Built with ``tools/package.py`` (what ``python3 dev.py package`` runs) from the venv's own
    Python; pip takes every package from its cache or the package registry.
    """
    root = tmp_path_factory.mktemp("wheels")
    venv.EnvBuilder(with_pip=True).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    # The venv's own environment: nothing of this checkout on the path, no test Airflow home.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "DOITONG"))}
    env.update(
        {"PATH": f"{python.parent}{os.pathsep}{env.get('PATH', '')}", "AIRFLOW_HOME": str(root / "home")}
    )

    def run(*args: str | Path, cwd: Path = root) -> str:
        done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    run(python, REPO / "tools" / "package.py", "--outdir", root / "dist", cwd=REPO)
    wheels = sorted((root / "dist").glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == ["airflow_provider_doitong", "doitong_emulator"]
    shutil.copy(REPO / "constraints.txt", root)
    run("bash", "-c", _readme_wheel_install())  # the venv's pip first on the PATH
    yield root, env
    shutil.rmtree(root / "venv", ignore_errors=True)


@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_the_wheels_run_a_dag_in_a_fresh_venv(wheel_venv: tuple[Path, dict[str, str]]) -> None:
    root, env = wheel_venv
    python = root / "venv" / "bin" / "python"
    where = subprocess.run(
        [
            python,
            "-c",
            "import airflow_provider_doitong, doitong_emulator as e; print(airflow_provider_doitong.__file__, e.__file__)",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(REPO) not in where and where.count("site-packages") == 2, where

    (root / "dags").mkdir()
    shutil.copy(REPO / "example_dags" / "doitong_submit_then_sense.py", root / "dags")
    from tests.support.airflow_cluster import free_port

    port = free_port()
    emulator = subprocess.Popen(
        [root / "venv" / "bin" / "doitong-emulator", "--port", str(port), "--time-scale", "0.05"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/_emulator/health")
        conn = {"conn_type": "doitong", "host": base, "password": "emulator-key"}
        dag_env = {
            **env,
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_DOITONG_DEFAULT": json.dumps(conn),
        }
        airflow = [str(root / "venv" / "bin" / "airflow")]
        subprocess.run([*airflow, "db", "migrate"], env=dag_env, cwd=root, check=True, capture_output=True)
        done = subprocess.run(
            [*airflow, "dags", "test", "doitong_submit_then_sense"],
            env=dag_env,
            cwd=root,
            capture_output=True,
            text=True,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-5000:]
        assert re.search(r"Marking run .*doitong_submit_then_sense.* successful", out), out[-5000:]
        with urllib.request.urlopen(f"{base}/_emulator/stats", timeout=10) as answer:
            stats = json.loads(answer.read())
        assert stats["requests"]["submit"] == 1, stats
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)


def _readme_wheel_install() -> str:
    """The README's command that installs the built wheels (its Install section, as written)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    (line,) = [
        line.split("#", 1)[0].strip()
        for line in section.splitlines()
        if line.startswith("pip install") and ".whl" in line
    ]
    return line


def _wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
