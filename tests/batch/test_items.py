"""Reading a batch's items: every entry checked, every problem named, repeats kept once."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_doitong.batch.items import (
    BatchInputError,
    ItemDefaults,
    budget_problem,
    build_items,
    entries_from_list,
    entries_from_text,
    estimated_credits,
    iter_entries,
    load_entries,
    slugify,
)

DEFAULTS = ItemDefaults(width=512, height=512)


def test_prompt_lines_skip_blanks_and_comments_and_keep_repeats_once() -> None:
    text = "# the day's prompts\n\n  a fox in the snow  \n# a comment\na lighthouse\na fox in the snow\n"
    items, repeats = build_items(entries_from_text(text, jsonl=False), DEFAULTS)
    assert [(i.index, i.request.prompt, i.source) for i in items] == [
        (0, "a fox in the snow", "line 3"),
        (1, "a lighthouse", "line 5"),
    ]
    assert repeats == 1
    assert items[0].request.width == 512 and items[0].request.provider == "flux-krea"


def test_jsonl_items_carry_their_own_options() -> None:
    text = (
        '{"prompt": "a fox", "width": 1024, "quality": "high"}\n'
        "\n"
        '{"prompt": "a tram", "provider": "flux-dev"}\n'
        '{"prompt": "a fox", "width": 512}\n'
    )
    items, repeats = build_items(entries_from_text(text, jsonl=True), DEFAULTS)
    assert [(i.request.provider, i.request.width, i.request.quality) for i in items] == [
        ("flux-krea", 1024, "high"),
        ("flux-dev", 512, "standard"),
        ("flux-krea", 512, "standard"),
    ]
    assert repeats == 0  # the same prompt with other options is another image
    assert estimated_credits(items) == 20 + 50 + 10


def test_every_problem_is_named_at_once() -> None:
    entries = entries_from_list(
        [
            "ok",
            "",
            {"prompt": "x", "widht": 512},
            {"prompt": "y", "width": 13},
            {"width": 512},
            7,
            "z" * 2001,
        ]
    )
    with pytest.raises(BatchInputError) as caught:
        build_items(entries, DEFAULTS)
    message = str(caught.value)
    assert message.startswith("6 of 7 items are invalid; nothing was submitted: ")
    assert "item 2 (''): prompt is empty" in message
    assert "item 3 ('x'): unknown key(s) widht" in message
    assert "item 4 ('y'): width must be a multiple of 16" in message
    assert "item 5: an item needs a prompt" in message
    assert "item 6: an item is a prompt or an object, got int" in message
    assert "item 7 ('zzzz" in message and "2001 characters" in message


def test_bad_json_lines_and_non_lists_are_refused() -> None:
    with pytest.raises(BatchInputError, match="1 lines are not JSON; nothing was submitted: line 2"):
        entries_from_text('{"prompt": "a"}\n{"prompt": \n', jsonl=True)
    with pytest.raises(BatchInputError, match="prompts must be a list"):
        entries_from_list("a single prompt")


def test_file_names_come_from_the_item_never_from_the_api() -> None:
    items, _ = build_items(
        entries_from_list(["Ünïcödé ../../etc/passwd <script>", "!!!", "a" * 80]), DEFAULTS
    )
    assert [i.stem(3) for i in items] == [
        "0001-unicode-etc-passwd-script",
        "0002-image",
        "0003-" + "a" * 40,
    ]
    assert items[0].stem(12_345) == "00001-unicode-etc-passwd-script"
    assert slugify("A fox, in the SNOW at 5 a.m.") == "a-fox-in-the-snow-at-5-a-m"


def test_fingerprints_follow_the_request() -> None:
    items, _ = build_items(entries_from_list(["a", {"prompt": "a", "quality": "high"}]), DEFAULTS)
    again, _ = build_items(entries_from_list(["a"]), DEFAULTS)
    assert items[0].fingerprint == again[0].fingerprint != items[1].fingerprint


def test_budget_problems() -> None:
    assert budget_problem(images=3, estimate=30, to_spend=30, balance=100, max_credits=30) is None
    assert "over max_credits=20" in str(
        budget_problem(images=3, estimate=30, to_spend=30, balance=100, max_credits=20)
    )
    short = budget_problem(images=3, estimate=30, to_spend=30, balance=25, max_credits=None)
    assert short is not None and "estimated at 30 credits, the account balance is 25" in short
    # a retry only needs the balance for what is still to generate
    assert budget_problem(images=3, estimate=30, to_spend=10, balance=25, max_credits=30) is None


def test_prompts_that_are_not_visible_text_are_refused_by_line_and_item() -> None:
    text = (
        '{"prompt": "a fox"}\n'
        '{"prompt": "a fox \\ud83e"}\n'  # half an emoji, escaped in JSON
        '{"prompt": "\\u200b\\ufeff"}\n'
        '{"prompt": "a\\u0007bell"}\n'
    )
    with pytest.raises(BatchInputError) as caught:
        build_items(entries_from_text(text, jsonl=True), DEFAULTS)
    message = str(caught.value)
    assert message.startswith("3 of 4 items are invalid; nothing was submitted: ")
    assert "line 2 ('a fox \\ud83e'): prompt is not valid Unicode text" in message
    assert "line 3 ('\\u200b\\ufeff'): prompt has no visible character" in message
    assert "line 4 ('a\\x07bell'): prompt holds a control character (U+0007)" in message
    with pytest.raises(BatchInputError) as caught:
        build_items(entries_from_list(["ok", "\u2060\u200b", "x\x00"]), DEFAULTS)
    assert "item 2 ('\\u2060\\u200b'): prompt has no visible character" in str(caught.value)
    assert "item 3 ('x\\x00'): prompt holds a control character" in str(caught.value)
    lines = "a fox\n\u3000\u200b\nok\n"  # a prompts file: a line of invisible characters only
    with pytest.raises(BatchInputError, match="line 2 .*: prompt has no visible character"):
        build_items(entries_from_text(lines, jsonl=False), DEFAULTS)


def test_a_prompts_file_is_streamed_never_held_whole(tmp_path: Any) -> None:
    # Entries come one at a time from any iterable of lines: an endless one still gives its first
    # entries, so a file is never read (or split) whole before its items are checked.
    def endless() -> Iterator[str]:
        number = 0
        while True:
            number += 1
            yield "# a comment\n" if number % 3 == 0 else f"prompt {number}\n"

    first = list(itertools.islice(iter_entries(endless(), jsonl=False), 4))
    assert first == [
        ("line 1", "prompt 1"),
        ("line 2", "prompt 2"),
        ("line 4", "prompt 4"),
        ("line 5", "prompt 5"),
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "a fox"}\n{"prompt": \n{"prompt": "a tram"}\n')
    entries = load_entries(prompts=None, prompts_file=str(path))
    assert isinstance(entries, Iterator)  # read as consumed
    with pytest.raises(BatchInputError) as caught:
        build_items(entries, DEFAULTS)
    assert str(caught.value).startswith("1 of 3 items are invalid; nothing was submitted: line 2: not JSON")
