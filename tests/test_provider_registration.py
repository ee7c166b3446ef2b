"""The provider as a real Airflow sees it: CLI listings, the providers manager and the connection form."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_doitong
from airflow_provider_doitong import get_provider_info
from airflow_provider_doitong.hooks.connection import CONN_FIELDS
from tests.airflow_versions import DECLARATIVE_CONNECTION_FORM

PACKAGE = "airflow-provider-doitong"
#: Before 3.2 only the UI builds the form (tests/compat checks what it shows).
needs_declarative_form = pytest.mark.skipif(
    not DECLARATIVE_CONNECTION_FORM,
    reason="the providers manager builds no connection form before Airflow 3.2",
)
HOOK_CLASS = "airflow_provider_doitong.hooks.doitong.DoitongHook"


def _airflow_cli(*args: str) -> Any:
    """Run ``airflow <args> -o json`` in a subprocess with this session's Airflow home."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *args, "-o", "json"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # The JSON is the last line that parses; log lines before it may start with "[" too (Airflow 3.0).
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("["):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise AssertionError(f"no JSON list in the output: {done.stdout[-2000:]}")


@pytest.mark.integration
def test_cli_providers_hooks_lists_doitong() -> None:
    hooks = {row["connection_type"]: row for row in _airflow_cli("providers", "hooks")}
    assert "doitong" in hooks
    row = hooks["doitong"]
    assert row["class"] == HOOK_CLASS
    assert row["package_name"] == PACKAGE
    assert row["conn_id_attribute_name"] == "doitong_conn_id"
    assert row["hook_name"] == "Doitong"


@pytest.mark.integration
def test_cli_providers_list_lists_the_package() -> None:
    providers = {row["package_name"]: row for row in _airflow_cli("providers", "list")}
    assert PACKAGE in providers
    assert providers[PACKAGE]["version"] == airflow_provider_doitong.__version__


@pytest.fixture(scope="module")
def providers_manager() -> Any:
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_providers_manager_knows_the_package(providers_manager: Any) -> None:
    assert PACKAGE in providers_manager.providers
    assert providers_manager.providers[PACKAGE].version == airflow_provider_doitong.__version__


def test_providers_manager_imports_the_hook(providers_manager: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hook_info = providers_manager.hooks["doitong"]
    assert hook_info is not None
    assert hook_info.hook_class_name == HOOK_CLASS
    assert hook_info.connection_id_attribute_name == "doitong_conn_id"
    assert hook_info.package_name == PACKAGE
    assert hook_info.connection_testable is True


def test_task_runtime_providers_manager_knows_the_hook() -> None:
    runtime = pytest.importorskip("airflow.sdk.providers_manager_runtime")
    hook_info = runtime.ProvidersManagerTaskRuntime().hooks["doitong"]
    assert hook_info is not None
    assert hook_info.hook_class_name == HOOK_CLASS


@needs_declarative_form
@pytest.mark.parametrize("field", sorted(CONN_FIELDS))
def test_connection_form_fields_are_loaded(providers_manager: Any, field: str) -> None:
    widgets = providers_manager.connection_form_widgets
    widget = widgets[f"extra__doitong__{field}"]
    assert widget.hook_class_name == HOOK_CLASS
    assert widget.package_name == PACKAGE
    assert widget.field_name == field
    assert widget.field["schema"]["title"] == CONN_FIELDS[field]["label"]
    assert widget.is_sensitive is (field == "webhook_secret")


@needs_declarative_form
def test_connection_form_defaults(providers_manager: Any) -> None:
    widgets = providers_manager.connection_form_widgets
    # no default plan in the form: untouched, it saves none (read as pro) and hands Airflow's log
    # masker no 3-letter value to warn about
    assert widgets["extra__doitong__plan"].field["value"] is None
    assert "Empty: pro" in widgets["extra__doitong__plan"].field["description"]
    assert set(widgets["extra__doitong__plan"].field["schema"]["enum"]) >= {
        "free",
        "starter",
        "pro",
        "enterprise",
    }
    assert widgets["extra__doitong__transport"].field["value"] == "graphql"


@needs_declarative_form
def test_field_behaviours_relabel_the_password_as_api_key(providers_manager: Any) -> None:
    behaviour = providers_manager.field_behaviours["doitong"]
    assert behaviour["relabeling"]["password"] == "API key"
    assert behaviour["relabeling"]["host"] == "Base URL"
    assert set(behaviour["hidden_fields"]) == {"login", "schema", "port"}
    assert "password" not in behaviour["hidden_fields"] and "host" not in behaviour["hidden_fields"]


def test_hook_methods_agree_with_provider_info() -> None:
    from airflow_provider_doitong.hooks.doitong import DoitongHook

    conn_type = get_provider_info()["connection-types"][0]
    assert conn_type["connection-type"] == DoitongHook.conn_type
    assert conn_type["hook-class-name"] == HOOK_CLASS
    behaviour = DoitongHook.get_ui_field_behaviour()
    ui = conn_type["ui-field-behaviour"]
    assert behaviour == {
        "hidden_fields": ui["hidden-fields"],
        "relabeling": ui["relabeling"],
        "placeholders": ui["placeholders"],
    }
    assert DoitongHook.conn_fields() == conn_type["conn-fields"]


def test_provider_info_validates_against_airflow_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import airflow

    schema_path = os.path.join(os.path.dirname(airflow.__file__), "provider_info.schema.json")
    with open(schema_path) as f:
        schema = json.load(f)
    jsonschema.validate(get_provider_info(), schema)


def test_declared_hook_modules_import() -> None:
    info = get_provider_info()
    modules = [m for entry in info["hooks"] for m in entry["python-modules"]]
    assert modules == ["airflow_provider_doitong.hooks.doitong"]
    for module in modules:
        importlib.import_module(module)
    module_name, _, class_name = info["connection-types"][0]["hook-class-name"].rpartition(".")
    hook = getattr(importlib.import_module(module_name), class_name)
    assert hook.conn_type == "doitong" and hook.conn_name_attr == "doitong_conn_id"
    assert hook.default_conn_name == "doitong_default"


def test_the_provider_distribution_carries_no_emulator() -> None:
    """Installing the provider alone brings no emulator dependency, command or pytest plugin."""
    from importlib.metadata import distribution

    dist = distribution("airflow-provider-doitong")
    # the provider's metadata, and the UI plugin the api-server mounts (nothing of the emulator's)
    assert {ep.group for ep in dist.entry_points} == {"apache_airflow_provider", "airflow.plugins"}
    plugins = [ep.value for ep in dist.entry_points if ep.group == "airflow.plugins"]
    assert all(value.startswith("airflow_provider_doitong.ui") for value in plugins), plugins
    required = [r.lower() for r in dist.requires or [] if "extra ==" not in r]
    for name in ("starlette", "uvicorn", "graphql-core", "pillow", "doitong-emulator"):
        assert not [r for r in required if r.startswith(name)], required
    import airflow_provider_doitong

    assert not (Path(airflow_provider_doitong.__file__).parent / "emulator").exists()
