"""The connection's ``transport`` extra, from the connection form to what the emulator receives."""

from __future__ import annotations

import itertools
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from tests.conftest import conn_json, run_dag, task_states, xcom_value

_ids = itertools.count()
#: transport extra -> the form the emulator logs for the submission
FORMS = {"graphql": "generate", "graphql-image": "generateImage", "rest": "rest"}


def test_the_connection_form_offers_every_transport() -> None:
    from airflow.providers_manager import ProvidersManager

    widget = ProvidersManager().connection_form_widgets["extra__doitong__transport"]
    assert [value for value in widget.field["schema"]["enum"] if value] == list(FORMS)
    assert widget.field["value"] == "graphql"
    for transport in FORMS:
        assert transport in widget.field["description"]


@pytest.mark.parametrize("transport", list(FORMS))
def test_the_operator_submits_in_the_connections_form(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, transport: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DOITONG_DEFAULT", conn_json(emulator, transport=transport))
    with DAG(
        f"doitong_forms_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False
    ) as dag:
        FluxGenerateOperator(
            task_id="generate",
            prompt=f"a paper crane, sent as {transport}",
            width=512,
            height=512,
            output_path=f"{tmp_path}/",
            poll_interval=0.1,
        )
    run = run_dag(dag)
    assert task_states(run) == {"generate": "success"}
    submits = [(e["form"], e["status"]) for e in emulator.request_log() if e["kind"] == "submit"]
    assert submits == [(FORMS[transport], 200)]
    result = xcom_value(run, "generate")
    assert result["status"] == "completed" and result["credit_cost"] == 10
    assert (tmp_path / f"{result['job_id']}.jpg").stat().st_size > 0
