"""A prompts file read a block of lines at a time gives what its lines give as entries, one by one:
the same items, indices, keys, sources and repeats, and the same problems named in the same words."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.batch import entries as batch_entries
from airflow_provider_doitong.batch import saved_items
from airflow_provider_doitong.batch.item_list import ItemList
from airflow_provider_doitong.batch.items import (
    BatchInputError,
    ItemDefaults,
    build_items,
    iter_entries,
    load_entries,
)
from airflow_provider_doitong.batch.key_table import KeyTable
from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.client.fingerprint import short_fingerprint

DEFAULTS = ItemDefaults(width=512, height=512)

#: JSON Lines lines of every form: the common ones and each way a line can differ from them.
JSON_LINES = [
    '{"prompt": "a fox"}',
    '{"prompt": "a tram", "width": 768}',
    '{"width": 768, "prompt": "a heron"}',
    '{"prompt": "a fox", "quality": "standard"}',  # the defaults, said: a repeat of line 1
    '{"prompt": "a fox", "width": 512, "height": 512}',  # likewise
    '  {"prompt": "  a crane  ", "quality": "high"}  ',
    '{"prompt": "a tram", "width": "768"}',  # a digit string is a width: a repeat of line 2
    '{"prompt": "b", "width": 768.0}',
    '{"prompt": "c", "width": true}',
    '{"prompt": "d", "version": false}',
    '{"prompt": "e", "version": 0}',
    '{"prompt": "f", "provider": "flux-dev", "version": "flux-dev"}',
    '{"prompt": "g", "provider": "flux-dev", "version": "flux-krea"}',
    '{"prompt": ["x"]}',
    '{"prompt": 5}',
    '{"prompt": null}',
    '{"prompt": "h", "width": [768]}',
    '{"prompt": "i", "widht": 768}',
    '{"prompt": "j", "prompt": "k"}',
    '{"prompt": "l", "width": 768, "width": 1024}',
    "{}",
    '{"width": 768}',
    "[1, 2]",
    '"a prompt as a JSON string"',
    "7",
    "null",
    '{"prompt": "m"} trailing',
    '{"prompt": "n"}{"prompt": "o"}',
    '{"prompt": ',
    "\ufeff" + '{"prompt": "p"}',
    '{"prompt": "q", "width": NaN}',
    '{"prompt": "r", "width": 1e3}',
    '{"prompt": "s", "width": 76800000000000000000000}',
    '{"prompt": "t\\u0000"}',
    '{"prompt": "\\u200b"}',
    '{"prompt": "u \\ud83e"}',
    '{"prompt": "' + "v" * 2001 + '"}',
    '{"prompt": "w", "quality": "ultra"}',
    '{"prompt": "a tram", "width": 768}',  # a repeat of line 2
    "",
    "# a comment",
    "   ",
    '{"prompt": "x \\"quoted\\" and \\\\ and \\u00e9t\\u00e9"}',
    '{"prompt": "a fox"}',
]

PROMPT_LINES = [
    "a fox",
    "  a tram  ",
    "",
    "# a comment",
    "a fox",
    "\u3000\u200b",
    "x" * 2001,
    "a bell\x07",
    "\x1c a heron \x1f",
    "été à la mer",
    '"quoted" \\ and backslashes',
    "#not a prompt either",
    " # but this is one",
]


def _by_entries(path: Path, defaults: ItemDefaults) -> tuple[Any, ...]:
    """What :func:`build_items` gives for the file's lines as entries, one by one (the reference)."""
    with open(path, encoding="utf-8") as handle:
        entries = list(iter_entries(handle, jsonl=path.name.endswith(".jsonl")))
    return _outcome(lambda: build_items(entries, defaults))


def _by_blocks(path: Path, defaults: ItemDefaults) -> tuple[Any, ...]:
    entries = load_entries(prompts=None, prompts_file=str(path))
    assert isinstance(entries, batch_entries.FileEntries)
    return _outcome(lambda: build_items(entries, defaults))


def _outcome(build: Any) -> tuple[Any, ...]:
    try:
        found, repeats = build()
    except BatchInputError as exc:
        return ("refused", str(exc))
    rows = [(i.index, i.source, i.request, i.fingerprint) for i in found]
    assert all(key == short_fingerprint(request) for _, _, request, key in rows)
    return ("kept", rows, repeats, list(found.rows()))


@pytest.mark.parametrize("block_bytes", [1 << 20, 64])
@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_a_file_read_in_blocks_gives_what_its_entries_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, block_bytes: int
) -> None:
    monkeypatch.setattr(batch_entries, "BLOCK_BYTES", block_bytes)
    lines = JSON_LINES if suffix == ".jsonl" else PROMPT_LINES
    path = tmp_path / f"prompts{suffix}"
    path.write_text("\r\n".join(lines) + "\n", encoding="utf-8")
    refused = _by_blocks(path, DEFAULTS)
    assert refused[0] == "refused" and refused == _by_entries(path, DEFAULTS)
    # each line on its own, and the valid ones together
    kept_lines = []
    for number, line in enumerate(lines, start=1):
        one = tmp_path / f"one-{number}{suffix}"
        one.write_text(f"# before\n{line}\n{line}\n", encoding="utf-8")
        outcome = _by_blocks(one, DEFAULTS)
        assert outcome == _by_entries(one, DEFAULTS), line
        if outcome[0] == "kept" and outcome[1]:
            kept_lines.append(line)
    assert len(kept_lines) > 5
    every = tmp_path / f"every{suffix}"
    every.write_text("\n".join(kept_lines * 3), encoding="utf-8")
    outcome = _by_blocks(every, DEFAULTS)
    assert outcome[0] == "kept" and outcome[2] > 0 and outcome == _by_entries(every, DEFAULTS)


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_refused_defaults_are_named_for_each_line_that_uses_them(tmp_path: Path, suffix: str) -> None:
    defaults = ItemDefaults(width="wide", height=512)
    path = tmp_path / f"prompts{suffix}"
    lines = JSON_LINES if suffix == ".jsonl" else PROMPT_LINES
    path.write_text("\n".join(lines), encoding="utf-8")
    outcome = _by_blocks(path, defaults)
    assert outcome[0] == "refused" and outcome == _by_entries(path, defaults)
    if suffix == ".jsonl":  # a line setting its own width is kept
        ok = tmp_path / "ok.jsonl"
        ok.write_text('{"prompt": "a", "width": 768}\n{"prompt": "b", "width": 768}\n', encoding="utf-8")
        assert _by_blocks(ok, defaults) == _by_entries(ok, defaults)
        assert _by_blocks(ok, defaults)[0] == "kept"


def test_a_file_whose_first_entries_were_taken_gives_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("a fox\na tram\na heron\n", encoding="utf-8")
    entries = load_entries(prompts=None, prompts_file=str(path))
    assert next(iter(entries)) == ("line 1", "a fox")
    found, _ = build_items(entries, DEFAULTS)
    assert [(item.index, item.source) for item in found] == [(0, "line 2"), (1, "line 3")]


def test_many_random_lines_with_repeats_across_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_entries, "BLOCK_BYTES", 4096)
    rng = random.Random(3)
    lines = []
    for number in range(6000):
        item: dict[str, Any] = {"prompt": f"a fox, take {rng.randrange(4000)}"}
        if number % 3 == 0:
            item["width"] = rng.choice([512, 768, 1024])
        if number % 11 == 0:
            item["quality"] = "high"
        lines.append(json.dumps(item))
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    outcome = _by_blocks(path, DEFAULTS)
    assert outcome[0] == "kept" and outcome[2] > 500 and outcome == _by_entries(path, DEFAULTS)


def test_the_key_table_knows_every_key_it_was_given_as_it_grows() -> None:
    rng = random.Random(5)
    keys = [rng.randbytes(6) for _ in range(20_000)]
    table = KeyTable(bits=2)
    assert table.fresh(keys[:10] + keys[:3]) == [True] * 10 + [False] * 3
    assert table.fresh(keys) == [False] * 10 + [True] * (len(keys) - 10)
    assert not any(table.fresh(keys[::7])) and table.add(b"\xff" * 6) and not table.add(b"\xff" * 6)
    assert table.add(bytes(6)) and not table.add(bytes(6))  # the key 0 is a key, not a free slot


def test_secrets_are_found_within_one_prompt_never_across_two() -> None:
    found = ItemList()
    prompts = ["a fox sk-1", "no secret s", "k-1 here", "été sk-1", "sk-", "1"]
    for number, prompt in enumerate(prompts, start=1):
        found.append_line(prompt, bytes([number]) * 6, number, 0)
    assert found.holding(["sk-1"]) == [0, 3]  # "s" + "k-1" and "sk-" + "1" span two prompts
    assert found.holding(["été"]) == [3] and found.holding(["\ud83e", "zzz"]) == []
    assert found.holding([""]) == list(range(6))  # as ``"" in prompt`` says


def test_numbers_too_large_for_four_bytes_widen_their_array() -> None:
    found = ItemList()
    shape = found.shape(ImageRequest(provider="flux-krea", prompt="x"), "line")
    found.extend_lines(["a", "b"], [b"\x01" * 6, b"\x02" * 6], [1, 2], shape)
    found.append_line("c", b"\x03" * 6, 2**40, shape)
    found.extend_lines(["d"], [b"\x04" * 6], [2**41], [shape])
    assert [(item.source, item.request.prompt) for item in found] == [
        ("line 1", "a"),
        ("line 2", "b"),
        (f"line {2**40}", "c"),
        (f"line {2**41}", "d"),
    ]
    with pytest.raises(ValueError):
        found.extend_lines(["e"], [b"\x05" * 5], [1], shape)
    with pytest.raises(ValueError):
        found.extend_lines(["e"], [b"\x05" * 6], [-1], shape)
    assert len(found) == 4


ROW = ["0123456789ab", "line 3", "a fox", "flux-krea", 512, 512, "standard", "flux-krea"]


@pytest.mark.parametrize(
    ("at", "value"),
    [
        (None, None),  # the common form: added at once
        (0, "0123456789AB"),
        (0, "0123456789a"),
        (0, "01 23456789ab"),
        (0, 123456789),
        (1, "line -1"),
        (1, "line 07"),
        (1, "line \u0663"),
        (1, "item 3"),
        (1, "line  3"),
        (2, 7),
        (4, True),
        (4, 512.0),
        (7, None),
        (7, 0),
    ],
)
def test_saved_rows_added_at_once_are_those_each_row_would_add(at: int | None, value: Any) -> None:
    row = list(ROW)
    if at is not None:
        row[at] = value
    rows = [list(ROW), row, [*ROW[:1], "line 4", *ROW[2:]]]
    at_once, one_by_one = ItemList(), ItemList()
    try:
        for each in rows:
            one_by_one.append_saved(*each)
    except (ValueError, TypeError):
        one_by_one = None
    added = saved_items._extend(at_once, rows)
    assert added == (at is None or value is None)  # a version of None is of the common form too
    if added:
        assert one_by_one is not None and list(at_once) == list(one_by_one)
        assert at_once.packed_keys() == one_by_one.packed_keys()
    else:
        assert len(at_once) == 0
    assert not saved_items._extend(ItemList(), [ROW, ROW[:7]]) and not saved_items._extend(ItemList(), [])
