"""The one rule that makes a name from anywhere (a job id, a dag, run or task id) a file or folder name."""

from __future__ import annotations

import pytest

from airflow_provider_doitong.client.safety import safe_component


@pytest.mark.parametrize(
    "name", ["abc123", "3f2a9c0d1e2f3a4b5c6d", "job_7-x", "daily", "my_dag.v2", "t-", "_", "A" * 128]
)
def test_plain_names_are_used_as_they_are(name: str) -> None:
    assert safe_component(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "../../escape_x",
        "..",
        ".hidden",
        "a.",
        "a/b",
        "a\\b",
        "x\x00y",
        "line\nbreak",
        "A" * 129,
        "",
        "é",
        "-x",
        "half \ud83e",
        "scheduled__2025-01-01T00:00:00+00:00",
    ],
)
def test_other_names_are_mapped_to_safe_unique_names(name: str) -> None:
    mapped = safe_component(name)
    assert mapped != name and safe_component(name) == mapped
    assert all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in mapped)
    assert 0 < len(mapped) <= 128 and mapped[0] not in ".-" and mapped != ".."
    assert safe_component(mapped) == mapped  # a mapped name is itself a plain one


def test_mapped_names_keep_distinct_names_apart() -> None:
    names = ["../a", "./a", "a/..", "//a", "a?", "a*", "a/b", "a_b-"]
    assert len({safe_component(n) for n in names}) == len(names)


def test_run_ids_map_to_the_folders_ledgers_already_have() -> None:
    # A batch resumed after an upgrade finds its ledger: the folder names stay what they were.
    assert (
        safe_component("scheduled__2025-01-01T00:00:00+00:00")
        == "scheduled__2025-01-01T00_00_00_00_00-f7967ea9"
    )
    assert safe_component("run id with spaces") == "run_id_with_spaces-41c37328"
