"""Publishing a batch's folder: verified whole before the first byte is copied, with its record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.batch import manifest as manifest_api
from airflow_provider_doitong.batch.publish import PublishRefused, publish_folder
from doitong_emulator.images import render_jpeg


def make_day(tmp_path: Path, day: str = "2025-03-04") -> dict[str, Any]:
    """A day's folder as a batch writes it (the manifest API on two images), and its event's extra."""
    folder = tmp_path / "images" / day
    folder.mkdir(parents=True)
    results = []
    for n, prompt in enumerate(["a fox in the snow", "a lighthouse at dawn"]):
        job_id = f"job{n}"
        (folder / f"{job_id}.jpg").write_bytes(render_jpeg(job_id, prompt, 256, 256))
        results.append(
            {
                "job_id": job_id,
                "prompt": prompt,
                "credit_cost": 10,
                "width": 256,
                "height": 256,
                "output_path": str(folder / f"{job_id}.jpg"),
                "provider": "flux-krea",
            }
        )
    entries = manifest_api.entries_from_results(results, folder=str(folder))
    paths = manifest_api.write_manifest(
        str(folder), manifest_api.build_manifest(entries, title=day, credits_estimated=20)
    )
    return {**paths, "items": 2, "stored": 2, "failed": 0, "credits_spent": 20, "credits_estimated": 20}


def test_a_folder_is_published_whole_with_its_record(tmp_path: Path) -> None:
    extra = make_day(tmp_path)
    record = publish_folder(extra["folder"], source={"dag_id": "doitong_daily_prompt_batch", "run_id": "r1"})
    target = tmp_path / "images" / "published" / "2025-03-04"
    assert record["folder"] == str(target)
    assert sorted(p.name for p in target.iterdir()) == [
        "index.html",
        "job0.jpg",
        "job1.jpg",
        "manifest.json",
        "publication.json",
    ]
    for name in ("job0.jpg", "job1.jpg", "manifest.json", "index.html"):
        assert (target / name).read_bytes() == (Path(extra["folder"]) / name).read_bytes()
    written = json.loads((target / "publication.json").read_text())
    assert written == record
    assert record["image_count"] == 2 and record["credits_spent"] == 20
    assert record["source"] == {"dag_id": "doitong_daily_prompt_batch", "run_id": "r1"}

    again = publish_folder(extra["folder"], published_root=str(tmp_path / "site"))
    assert again["folder"] == str(tmp_path / "site" / "2025-03-04")


def test_an_altered_or_missing_image_publishes_nothing(tmp_path: Path) -> None:
    extra = make_day(tmp_path)
    image = Path(extra["folder"]) / "job1.jpg"
    image.write_bytes(image.read_bytes() + b"tampered")
    with pytest.raises(PublishRefused, match=r"images of 2025-03-04 do not match.*job1\.jpg does not match"):
        publish_folder(extra["folder"])
    image.unlink()
    with pytest.raises(PublishRefused, match=r"images of 2025-03-04 do not match.*job1\.jpg is missing"):
        publish_folder(extra["folder"])
    assert not (tmp_path / "images" / "published").exists()
    (Path(extra["folder"]) / "manifest.json").unlink()
    with pytest.raises(PublishRefused, match="holds no manifest.json"):
        publish_folder(extra["folder"])


def test_images_left_out_are_not_published_and_a_typo_publishes_nothing(tmp_path: Path) -> None:
    extra = make_day(tmp_path)
    with pytest.raises(PublishRefused, match="Not stored images of 2025-03-04.*job9.jpg"):
        publish_folder(extra["folder"], leave_out={"job9.jpg"})
    assert not (tmp_path / "images" / "published").exists()
    record = publish_folder(extra["folder"], leave_out={"job1.jpg"}, day="2025-03-04-reviewed")
    target = tmp_path / "images" / "published" / "2025-03-04-reviewed"
    assert record["image_count"] == 1 and record["left_out"] == ["job1.jpg"]
    assert not (target / "job1.jpg").exists() and (target / "job0.jpg").exists()
