"""The storage layer on S3 (moto's server, in this process): claims are conditional writes
(``If-None-Match: *``), so of two writers racing for a folder or a file exactly one wins.

These tests need ``s3fs``, ``moto[server]`` and the Amazon provider, which only the ``distributed``
extra's venv can hold: ``python3 dev.py test-s3`` runs them there (and CI does). Elsewhere they are
skipped.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("DOITONG_REQUIRE_S3"):  # python3 dev.py test-s3 (CI): a missing package is a failure
    import airflow.providers.amazon  # noqa: F401
    import moto.server as moto_server
    import s3fs  # noqa: F401
else:
    pytest.importorskip("s3fs")
    pytest.importorskip("airflow.providers.amazon")
    moto_server = pytest.importorskip("moto.server")

from airflow.sdk import ObjectStoragePath  # noqa: E402

from airflow_provider_doitong._compat import AirflowFailException  # noqa: E402
from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list  # noqa: E402
from airflow_provider_doitong.batch.ledger import ItemState, Ledger, LedgerError  # noqa: E402
from airflow_provider_doitong.batch.stores import ObjectLedgerStore, open_store  # noqa: E402
from airflow_provider_doitong.operators.batch import FluxBatchOperator  # noqa: E402
from airflow_provider_doitong.operators.outputs import check_output  # noqa: E402
from airflow_provider_doitong.storage import OutputClaimed, Place, claim_folder, store_image  # noqa: E402
from tests.conftest import run_dag, task_states  # noqa: E402
from tests.operators.test_output_folder import SimulatedCrash, one_task_dag, tries  # noqa: E402
from tests.operators.test_storage import JPEG, OWNERS, PNG, race, ti_context  # noqa: E402

BUCKET = "doitong-claims"
ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """moto's S3 server on a free loopback port, the AWS variables pointing at it, one bucket."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {key: os.environ.get(key) for key in [*ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(ENV, AWS_ENDPOINT_URL=f"http://{host}:{port}")
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fresh(prefix: str = "day") -> str:
    return f"s3://{BUCKET}/{prefix}-{uuid.uuid4().hex[:8]}"


def keys(client: Any, prefix: str) -> dict[str, bytes]:
    found = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read() for item in found}


def test_two_writers_never_both_hold_an_s3_folder(s3: Any) -> None:
    folder = Place(ObjectStoragePath(fresh()))
    won, refused = race(lambda owner: claim_folder(folder, owner))
    assert len(won) == 1 and len(refused) == len(OWNERS) - 1
    assert all(exc.owner == won[0] for exc in refused)
    assert claim_folder(folder, won[0]) is False


def test_an_image_on_s3_never_replaces_another_tasks_file(s3: Any) -> None:
    location = fresh()
    owner, other = OWNERS[:2]
    store_image(f"{location}/", "job1", JPEG, owner=owner, folder=True)
    store_image(f"{location}/", "job1", JPEG, owner=owner, folder=True)  # an earlier try's bytes
    with pytest.raises(OutputClaimed, match="holds another image"):
        store_image(f"{location}/", "job1", JPEG[:-2] + b"\x00\xff\xd9", owner=other, folder=True)
    target = f"{location}/cover.png"
    store_image(target, "x", PNG, owner=owner)
    with pytest.raises(OutputClaimed, match=f"run {owner['run_id']}"):
        store_image(target, "x", PNG, owner=other)
    prefix = location.removeprefix(f"s3://{BUCKET}/")
    stored = keys(s3, prefix)
    assert stored[f"{prefix}/job1.jpg"] == JPEG and stored[f"{prefix}/cover.png"] == PNG


def test_a_missing_bucket_is_refused_before_anything_is_submitted(s3: Any) -> None:
    with pytest.raises(AirflowFailException, match="cannot be written.*nothing was submitted"):
        check_output(ti_context(), "s3://doitong-no-such-bucket/day/", whole_folder=True)


def test_the_ledger_on_s3_cuts_a_torn_segment_and_refuses_a_tampered_one(s3: Any) -> None:
    owner = OWNERS[0]
    batch = build_items(entries_from_list(["a", "b"]), ItemDefaults())[0]
    folder = ObjectStoragePath(fresh())
    store = open_store(folder, owner)
    assert isinstance(store, ObjectLedgerStore)
    ledger = Ledger.open(store, items=batch, owner=owner)
    ledger.set_meta(started=True)
    ledger.flush()
    ledger.update(0, state=ItemState.RUNNING, job_id="j0")
    ledger.flush()
    segments = ObjectStoragePath(store.journal_location)
    (segments / "000000000099.jsonl").write_bytes(b'{"q":99,"i":1,"set":{"sta')  # torn
    again = Ledger.open(open_store(folder, owner), items=batch, owner=owner)
    assert again.records[0].job_id == "j0" and again.records[1].state is ItemState.PENDING
    assert not [key for key in keys(s3, segments.path.split("/", 1)[1]) if key.endswith("99.jsonl")]
    (segments / "000000000050.jsonl").write_bytes(b'{"q":50,"i":1,"set":{"state":"submitting"}}')
    (segments / "000000000051.jsonl").write_bytes(b'{"q":51,"meta":{"resumes":1}}\n')
    third = Ledger.open(open_store(folder, owner), items=batch, owner=owner)  # whole objects, never glued
    assert third.in_state(ItemState.SUBMITTING) == [1] and third.meta["resumes"] == 1
    record = {"q": 100, "i": 1, "set": {"state": "stored", "file": "../../elsewhere.jpg"}}
    (segments / "000000000100.jsonl").write_bytes(json.dumps(record).encode() + b"\n")
    (segments / "000000000101.jsonl").write_bytes(b'{"q":101,"meta":{}}\n')
    with pytest.raises(LedgerError, match="is not a file name in the output folder"):
        Ledger.open(open_store(folder, owner), items=batch, owner=owner)


def test_a_second_batch_on_an_s3_folder_in_use_is_refused_before_it_spends(
    doitong_conn: Any, s3: Any, monkeypatch: pytest.MonkeyPatch, capfd: Any, tmp_path: Path
) -> None:
    location = fresh("batch")
    original = Ledger.update

    def update(self: Ledger, index: int, **changes: Any) -> Any:
        if index == 1 and changes.get("state") is ItemState.STORED:
            raise SimulatedCrash("the worker died")
        return original(self, index, **changes)

    monkeypatch.setattr(Ledger, "update", update)
    first_prompts = ["a lighthouse, study 1", "a lighthouse, study 2", "a lighthouse, study 3"]
    dag = one_task_dag(FluxBatchOperator, "s3_in_use", prompts=first_prompts, output_path=location, retries=0)
    first = run_dag(dag)
    assert task_states(first) == {"task": "failed"}
    monkeypatch.setattr(Ledger, "update", original)
    prefix = location.removeprefix(f"s3://{BUCKET}/")
    before = keys(s3, prefix)
    assert f"{prefix}/.doitong/claim.json" in before and f"{prefix}/manifest.json" not in before
    capfd.readouterr()
    second = run_dag(one_task_dag(FluxBatchOperator, "s3_in_use", prompts=["a tram"], output_path=location))
    assert task_states(second) == {"task": "failed"} and tries(second) == 1
    out = capfd.readouterr().out
    assert f"run {first.run_id}" in out and "nothing was submitted" in out
    assert "a tram" not in doitong_conn.stats()["submissions_by_prompt"]
    after = keys(s3, prefix)
    assert {k: v for k, v in after.items() if k.endswith(".jpg")} == {
        k: v for k, v in before.items() if k.endswith(".jpg")
    }
