"""Run-conf paths are used only inside the roots a deployment configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_doitong._compat import AirflowFailException
from airflow_provider_doitong.operators.roots import configured_roots, inside_roots


def test_roots_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOITONG_TEST_ROOTS", f" {tmp_path}/a/ , s3://bucket/images/ ")
    assert configured_roots("DOITONG_TEST_ROOTS", "~/x") == [str(tmp_path / "a"), "s3://bucket/images"]
    monkeypatch.delenv("DOITONG_TEST_ROOTS")
    assert configured_roots("DOITONG_TEST_ROOTS", "~/doitong-images") == [
        str(Path("~/doitong-images").expanduser().resolve())
    ]


def test_inside_the_roots(tmp_path: Path) -> None:
    roots = ["/srv/images", "s3://bucket/images"]
    assert inside_roots("/srv/images/2025", roots, what="x") == "/srv/images/2025"
    assert inside_roots("s3://bucket/images/a/../b", roots, what="x") == "s3://bucket/images/b"
    assert inside_roots("sub", roots, what="x") == "/srv/images/sub"
    assert inside_roots("sub/../day", ["s3://bucket/images"], what="x") == "s3://bucket/images/day"
    for bad in ("/srv/images-other", "s3://bucket/images/../secrets", "s3://other/images", "/srv", "../x"):
        with pytest.raises(AirflowFailException, match="outside the configured roots"):
            inside_roots(bad, roots, what="x")
    with pytest.raises(AirflowFailException, match="outside"):
        inside_roots("../../etc", ["s3://bucket/images"], what="x")


def test_a_symlink_out_of_a_root_is_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    with pytest.raises(AirflowFailException, match="prompts_file 'escape/passwd' is outside"):
        inside_roots("escape/passwd", [str(root)], what="prompts_file")
