"""A manifest's ``review`` record: written beside the items, shown on the sheet, checked by verify."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.batch import manifest

WHEN = "2026-01-02T03:04:05+00:00"


def stored_batch(folder: Path) -> dict[str, Any]:
    """A folder with one stored image and its manifest, as the batch leaves it."""
    data = b"\xff\xd8 an image \xff\xd9"
    (folder / "0001-a-kite.jpg").write_bytes(data)
    entry = {
        "number": 1,
        "status": manifest.STORED,
        "file": "0001-a-kite.jpg",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "prompt": "a kite",
        "credits": 10,
    }
    doc = manifest.build_manifest([entry], title="A batch")
    manifest.write_manifest(str(folder), doc)
    return doc


def test_a_person_s_decision_is_recorded_beside_the_untouched_items(tmp_path: Path) -> None:
    before = stored_batch(tmp_path)
    manifest.record_review(str(tmp_path), decision="approved", by="ada", by_id="7", at=WHEN, timed_out=False)
    doc = manifest.read_manifest(str(tmp_path))
    assert doc is not None
    assert doc["review"] == {
        "decision": "approved",
        "by": "ada",
        "by_id": "7",
        "at": WHEN,
        "timed_out": False,
    }
    assert doc["items"] == before["items"] and doc["credits_spent"] == before["credits_spent"]
    assert manifest.verify_manifest(str(tmp_path)) == []
    assert f"approved by ada at {WHEN}" in (tmp_path / "index.html").read_text()


def test_the_timeout_s_decision_names_no_person(tmp_path: Path) -> None:
    stored_batch(tmp_path)
    manifest.record_review(str(tmp_path), decision="rejected", by=None, by_id=None, at=WHEN, timed_out=True)
    doc = manifest.read_manifest(str(tmp_path))
    assert doc is not None and doc["review"]["by"] is None and doc["review"]["timed_out"] is True
    assert manifest.verify_manifest(str(tmp_path)) == []
    assert "rejected by the timeout" in (tmp_path / "index.html").read_text()


def test_only_approved_or_rejected_and_only_into_an_existing_manifest(tmp_path: Path) -> None:
    with pytest.raises(manifest.ManifestError, match="no manifest.json"):
        manifest.record_review(
            str(tmp_path), decision="approved", by="ada", by_id="7", at=WHEN, timed_out=False
        )
    stored_batch(tmp_path)
    with pytest.raises(manifest.ManifestError, match="not 'maybe'"):
        manifest.record_review(str(tmp_path), decision="maybe", by="ada", by_id="7", at=WHEN, timed_out=False)
    assert "review" not in (manifest.read_manifest(str(tmp_path)) or {})


@pytest.mark.parametrize(
    "review",
    [
        {"decision": "approved?", "by": "ada", "at": WHEN},
        {"decision": "approved", "by": None, "at": WHEN, "timed_out": False},  # neither person nor timeout
        {"decision": "rejected", "by": "ada", "at": ""},  # no time
        "approved",
    ],
)
def test_verify_reports_a_review_record_that_says_too_little(tmp_path: Path, review: Any) -> None:
    doc = stored_batch(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**doc, "review": review}))
    (problem,) = manifest.verify_manifest(str(tmp_path))
    assert "review record" in problem
