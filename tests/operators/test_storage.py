"""``store_image``: safe names inside the folder, the extension from the bytes, atomic writes."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath
from PIL import Image

from airflow_provider_doitong._compat import AirflowFailException
from airflow_provider_doitong.client import DoitongBadImage
from airflow_provider_doitong.operators.outputs import check_output
from airflow_provider_doitong.storage import (
    Location,
    OutputClaimed,
    Place,
    UnsafeOutputPath,
    claim_folder,
    output_file,
    shown,
    storage_path,
    store_image,
    write_image,
)


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (10, 120, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


PNG, JPEG, WEBP = encoded("PNG"), encoded("JPEG"), encoded("WEBP")


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("data", "extension"), [(PNG, "png"), (JPEG, "jpg"), (WEBP, "webp")])
def test_the_extension_comes_from_the_bytes(tmp_path: Path, data: bytes, extension: str) -> None:
    path = store_image(f"{tmp_path}/out/", "abc123", data)
    assert shown(path) == str(tmp_path / "out" / f"abc123.{extension}")
    assert (tmp_path / "out" / f"abc123.{extension}").read_bytes() == data


@pytest.mark.parametrize(
    "job_id", ["../../escape_x", "../escape", "/etc/passwd", "a/../../b", "..", ".", "x\x00y", "C:\\x"]
)
def test_hostile_names_stay_inside_the_folder(tmp_path: Path, job_id: str) -> None:
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    path = store_image(str(folder), job_id, PNG)
    assert Path(shown(path)).parent == folder
    assert files_under(tmp_path) == {f"a/b/{Path(shown(path)).name}"}
    assert Path(shown(path)).suffix == ".png"


def test_a_symlinked_folder_is_still_the_folder(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    store_image(f"{tmp_path}/link/", "job1", JPEG)
    assert (real / "job1.jpg").exists()


def test_a_planted_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "job1.jpg").symlink_to(outside)
    store_image(f"{folder}/", "job1", JPEG)
    assert outside.read_text() == "keep me"
    assert not (folder / "job1.jpg").is_symlink() and (folder / "job1.jpg").read_bytes() == JPEG


def test_an_explicit_file_is_written_as_named(tmp_path: Path) -> None:
    path = store_image(str(tmp_path / "day" / "2025-03-04.jpg"), "../../ignored", JPEG)
    assert shown(path) == str(tmp_path / "day" / "2025-03-04.jpg")
    assert files_under(tmp_path) == {"day/2025-03-04.jpg"}


@pytest.mark.parametrize(
    "data",
    [b"", b"<html>502</html>", b'{"error": 1}', JPEG[:-10], PNG[:-12]],
    ids=["empty", "html", "json", "jpeg-cut", "png-cut"],
)
def test_nothing_but_a_whole_image_is_written(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(DoitongBadImage):
        store_image(f"{tmp_path}/", "job1", data)
    assert files_under(tmp_path) == set()


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    for n in range(3):
        store_image(f"{tmp_path}/", "same", PNG if n % 2 else JPEG)
    assert files_under(tmp_path) == {"same.jpg", "same.png"}
    assert (tmp_path / "same.png").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store_image(f"{tmp_path}/", "job1", JPEG)

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        store_image(f"{tmp_path}/", "job1", JPEG[:-2] + b"\x00\xff\xd9")
    assert (tmp_path / "job1.jpg").read_bytes() == JPEG
    assert files_under(tmp_path) == {"job1.jpg"}


def test_object_storage_folders_get_safe_names() -> None:
    folder = ObjectStoragePath("memory://bucket/images/")
    path = store_image(folder, "../../escape_x", WEBP, folder=True)
    assert str(path.parent).rstrip("/") == "memory://bucket/images" and str(path).endswith(".webp")
    assert "/" not in path.name and path.name.startswith("_.._escape_x-")
    assert path.read_bytes() == WEBP
    assert not ObjectStoragePath("memory://escape_x.webp").exists()
    assert str(store_image("memory://bucket/images/", "job1", PNG)) == "memory://bucket/images/job1.png"


def test_the_pieces_keep_their_names(tmp_path: Path) -> None:
    path = output_file(f"{tmp_path}/", name="j1", extension="png")
    assert shown(path) == str(tmp_path / "j1.png")
    write_image(path, PNG)
    assert (tmp_path / "j1.png").read_bytes() == PNG
    with pytest.raises(UnsafeOutputPath):
        output_file(f"{tmp_path}/", name="j1", extension="py")


# --- claims: one writer per folder (a batch) or per file (a shared folder) ------------------------
OWNERS = [{"dag_id": "d", "run_id": f"run-{n}", "task_id": "t", "map_index": -1} for n in range(6)]


def race(claimer: Callable[[dict[str, Any]], bool]) -> tuple[list[dict[str, Any]], list[OutputClaimed]]:
    """Every owner claims at the same moment; the winners, and the refusals of the others."""
    start = threading.Barrier(len(OWNERS))
    won: list[dict[str, Any]] = []
    refused: list[OutputClaimed] = []

    def one(owner: dict[str, Any]) -> None:
        start.wait()
        try:
            if claimer(owner):
                won.append(owner)
        except OutputClaimed as exc:
            refused.append(exc)

    threads = [threading.Thread(target=one, args=(owner,)) for owner in OWNERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, refused


def test_two_writers_never_both_hold_a_local_folder(tmp_path: Path) -> None:
    folder = Place(storage_path(str(tmp_path / "day")))
    won, refused = race(lambda owner: claim_folder(folder, owner))
    assert len(won) == 1 and len(refused) == len(OWNERS) - 1
    assert all(exc.owner == won[0] and f"run {won[0]['run_id']}" in str(exc) for exc in refused)
    assert claim_folder(folder, won[0]) is False  # its own retries go on
    assert files_under(tmp_path) == {"day/.doitong/claim.json"}


def test_an_image_in_a_shared_folder_never_replaces_another_file(tmp_path: Path) -> None:
    owner, other = OWNERS[:2]
    store_image(f"{tmp_path}/", "job1", JPEG, owner=owner)
    store_image(f"{tmp_path}/", "job1", JPEG, owner=owner)  # an earlier try's very bytes: fine
    with pytest.raises(OutputClaimed, match="holds another image; not replacing it"):
        store_image(f"{tmp_path}/", "job1", encoded("JPEG")[:-2] + b"\x00\xff\xd9", owner=other)
    assert (tmp_path / "job1.jpg").read_bytes() == JPEG
    assert files_under(tmp_path) == {"job1.jpg"}  # a shared folder holds the images only


def test_a_link_planted_in_a_shared_folder_is_refused_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"keep me")
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "job1.jpg").symlink_to(outside)
    with pytest.raises(UnsafeOutputPath, match="symlink"):
        store_image(f"{folder}/", "job1", JPEG, owner=OWNERS[0])
    assert outside.read_bytes() == b"keep me" and (folder / "job1.jpg").is_symlink()


def test_a_named_file_is_its_first_writers(tmp_path: Path) -> None:
    target = str(tmp_path / "day" / "cover.jpg")
    owner, other = OWNERS[:2]
    store_image(target, "ignored", JPEG, owner=owner)
    store_image(target, "ignored", PNG, owner=owner)  # a clear that regenerates: its own file
    with pytest.raises(OutputClaimed, match=rf"run {owner['run_id']}") as caught:
        store_image(target, "ignored", JPEG, owner=other)
    assert caught.value.owner == owner
    assert Path(target).read_bytes() == PNG
    (tmp_path / "day" / "other.jpg").write_bytes(b"someone's")
    with pytest.raises(OutputClaimed, match="exists and was not written by this task"):
        store_image(str(tmp_path / "day" / "other.jpg"), "x", JPEG, owner=owner)
    assert (tmp_path / "day" / "other.jpg").read_bytes() == b"someone's"


def ti_context(run_id: str = "r1") -> dict[str, Any]:
    return {"ti": SimpleNamespace(dag_id="d", run_id=run_id, task_id="t", map_index=-1)}


@pytest.mark.parametrize("whole_folder", [True, False], ids=["batch", "generate"])
def test_an_unwritable_output_path_is_refused_before_anything_is_submitted(
    tmp_path: Path, whole_folder: bool
) -> None:
    (tmp_path / "a-file").write_text("x")
    for location in (f"{tmp_path}/a-file/day/", str(tmp_path / "a-file" / "day" / "x.jpg")):
        with pytest.raises(AirflowFailException, match=r"output_path .* nothing was submitted") as caught:
            check_output(ti_context(), location, whole_folder=whole_folder)
        assert "a-file" in str(caught.value)
    check_output(ti_context(), f"{tmp_path}/ok/", whole_folder=whole_folder)
    assert files_under(tmp_path) == {"a-file", *(["ok/.doitong/claim.json"] if whole_folder else [])}


def test_a_second_run_is_refused_by_the_check_naming_the_owner(tmp_path: Path) -> None:
    check_output(ti_context("r1"), f"{tmp_path}/", whole_folder=True)
    check_output(ti_context("r1"), f"{tmp_path}/", whole_folder=True)  # a retry of the same task
    with pytest.raises(AirflowFailException, match=r"task \(dag d, run r1, task t;.*nothing was submitted"):
        check_output(ti_context("r2"), f"{tmp_path}/", whole_folder=True)


def test_a_location_is_parsed_once_and_keeps_what_its_text_said(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    folder = Location.of("out/")
    assert folder.local and folder.folder and folder.shown == str(tmp_path / "out")
    assert Location.of(folder) is folder and not Location.of("out/a.png").folder
    remote = Location.of("memory://bucket/images/")
    assert not remote.local and remote.folder and remote.shown == "memory://bucket/images"
    # The folder it names is honoured without the text: the image goes inside it.
    path = store_image(remote, "job1", PNG)
    assert str(path) == "memory://bucket/images/job1.png" and path.read_bytes() == PNG
