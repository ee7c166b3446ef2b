"""``store_image``: safe names inside the folder, the extension from the bytes, atomic writes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath
from PIL import Image

from airflow_provider_doitong.client import DoitongBadImage
from airflow_provider_doitong.storage import (
    UnsafeOutputPath,
    output_file,
    resolve_output_path,
    shown,
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
    assert str(path).startswith("memory://bucket/images/escape_x-") and str(path).endswith(".webp")
    assert path.read_bytes() == WEBP
    assert not ObjectStoragePath("memory://escape_x.webp").exists()
    assert str(store_image("memory://bucket/images/", "job1", PNG)) == "memory://bucket/images/job1.png"


def test_the_pieces_keep_their_names(tmp_path: Path) -> None:
    path = resolve_output_path(f"{tmp_path}/", job_id="j1", data=PNG)
    assert shown(path) == str(tmp_path / "j1.png")
    write_image(path, PNG)
    assert (tmp_path / "j1.png").read_bytes() == PNG
    with pytest.raises(UnsafeOutputPath):
        output_file(f"{tmp_path}/", name="j1", extension="py")
