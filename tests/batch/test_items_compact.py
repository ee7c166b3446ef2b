"""A batch's items held compactly: each set of options checked once, items built when asked for,
and every rule of a prompt kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_doitong.batch import saved_items
from airflow_provider_doitong.batch.items import (
    BatchInputError,
    ItemDefaults,
    build_items,
    entries_from_list,
    entries_from_text,
    estimated_credits,
    secret_items_problem,
)
from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.storage import Place, storage_path

DEFAULTS = ItemDefaults(width=512, height=512)


def test_each_set_of_options_is_checked_once_by_type_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[ImageRequest] = []
    check = ImageRequest.__post_init__

    def counted(request: ImageRequest) -> None:
        built.append(request)
        check(request)

    monkeypatch.setattr(ImageRequest, "__post_init__", counted)
    lines = [f"a fox, take {n}" for n in range(200)]
    lines += [json.dumps({"prompt": f"a tram, take {n}", "width": 768}) for n in range(200)]
    found, _ = build_items(entries_from_text("\n".join(lines[:200]), jsonl=False), DEFAULTS)
    assert len(found) == 200 and len(built) == 1  # the defaults, once; each prompt on its own
    built.clear()
    found, _ = build_items(entries_from_text("\n".join(lines[200:]), jsonl=True), DEFAULTS)
    assert len(found) == 200 and len(built) == 2 and found[199].request.width == 768  # defaults, 768
    # an option equal in value but not in type is another option: checked, and refused, on its own
    text = '{"prompt": "a", "width": 512}\n{"prompt": "b", "width": 512.0}\n{"prompt": "c", "width": true}\n'
    with pytest.raises(BatchInputError) as caught:
        build_items(entries_from_text(text, jsonl=True), DEFAULTS)
    message = str(caught.value)
    assert message.startswith("2 of 3 items are invalid")
    assert "line 2 ('b'): width must be an integer" in message and "line 3 ('c'): width" in message


def test_items_are_built_when_asked_for_and_summed_without_building(tmp_path: Path) -> None:
    entries = entries_from_list(["a fox", {"prompt": "a tram", "quality": "high"}, "a fox", " a heron "])
    found, repeats = build_items(entries, DEFAULTS)
    assert repeats == 1 and len(found) == 3
    assert [(i.index, i.source, i.request.prompt, i.request.quality) for i in found] == [
        (0, "item 1", "a fox", "standard"),
        (1, "item 2", "a tram", "high"),
        (2, "item 4", "a heron", "standard"),
    ]
    assert found[-1] == found[2] and found[1:] == [found[1], found[2]]
    with pytest.raises(IndexError):
        found[3]
    assert estimated_credits(found, only=[1, 2]) == found[1].request.estimated_credits + 10
    assert estimated_credits(found) == sum(i.request.estimated_credits for i in list(found))
    # saved and read back: the same items, in the same compact form
    place = Place(storage_path(str(tmp_path)))
    digest, _ = saved_items.save_items(place, found)
    again = saved_items.load_items(place, sha256=digest)
    assert again is not None and list(again) == list(found)
    assert estimated_credits(again, only=[0]) == 10


def test_the_secret_check_names_each_item_holding_one() -> None:
    found, _ = build_items(
        entries_from_list(["a fox", "draw sk-SECRET-1 please", "a tram", "and sk-SECRET-1 again"]), DEFAULTS
    )
    problem = secret_items_problem(found, ("sk-SECRET-1",), conn_id="doitong_default")
    assert problem is not None and problem.startswith("2 of 4 items are refused")
    assert "item 2: prompt holds a secret" in problem and "item 4: prompt holds a secret" in problem
    assert "sk-SECRET-1" not in problem
    assert secret_items_problem(found, ("other",), conn_id="doitong_default") is None


def test_sources_of_any_form_are_kept(tmp_path: Path) -> None:
    sources = ["line 7", "line 07", " 3", "row +3", "item \u0663", "4", "from the catalogue"]
    found, _ = build_items([(source, f"a fox, take {n}") for n, source in enumerate(sources)], DEFAULTS)
    assert [item.source for item in found] == sources
    place = Place(storage_path(str(tmp_path)))
    digest, _ = saved_items.save_items(place, found)
    again = saved_items.load_items(place, sha256=digest)
    assert again is not None and [item.source for item in again] == sources


@pytest.mark.parametrize("key", ["ABCDEF012345", "abc", "abcdef01234g", "abcdef0123456789"])
def test_saved_items_with_a_key_of_another_form_are_refused_as_damaged(tmp_path: Path, key: str) -> None:
    place = Place(storage_path(str(tmp_path)))
    found, _ = build_items(entries_from_list(["a fox", "a tram"]), DEFAULTS)
    saved_items.save_items(place, found)
    path = tmp_path / saved_items.ITEMS_NAME
    header, rows = path.read_text().splitlines()
    changed = json.loads(rows)
    changed[1][0] = key
    path.write_text(header + "\n" + json.dumps(changed) + "\n")
    digest = saved_items.saved_digest(place)
    assert digest is not None
    with pytest.raises(saved_items.SavedItemsError, match="not the file its first try wrote"):
        saved_items.load_items(place, sha256=digest)
