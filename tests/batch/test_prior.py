"""The duration prior: the summary a batch leaves, how an earlier run's value is checked, and a
planner seeded with it (right, far too short and far too long) against the planner's fake API."""

from __future__ import annotations

import math
from typing import Any, cast

import pytest

from airflow_provider_doitong.batch import prior
from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.ledger_records import ItemRecord
from airflow_provider_doitong.batch.planner import Limits, Planner, View
from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.client.pacing import YOUNG_JOB_GAP
from tests.batch.test_planner import FakeApi, Sim, lower_bound

KIND = ("flux-krea", 256, 256, "standard")


def items(n: int, *, width: int = 256) -> list[BatchItem]:
    return [
        BatchItem(
            index=i,
            request=ImageRequest(provider="flux-krea", prompt=f"p{i}", width=width, height=256),
            source="",
        )
        for i in range(n)
    ]


def records(durations: list[float | None], *, cached: int = 0) -> Ledger:
    made = [
        ItemRecord(index=i, key=str(i), state=ItemState.STORED, job_id=f"j{i}", job_ids=[f"j{i}"], duration=d)
        for i, d in enumerate(durations)
    ]
    for record in made[:cached]:
        record.cached = True
    return cast("Ledger", made)  # summarize only iterates the records


def good(**changes: Any) -> dict[str, Any]:
    summary = {
        "format": 1,
        "model": "flux-krea",
        "width": 256,
        "height": 256,
        "quality": "standard",
        "jobs": 30,
        "p10": 15.5,
        "p25": 15.8,
        "p50": 16.0,
        "p75": 16.2,
        "p90": 16.6,
    }
    return {"stored": 30, prior.SUMMARY_KEY: {**summary, **changes}}


def test_a_summary_round_trips_into_seeds_around_its_median() -> None:
    durations = [16.0 + 0.1 * (i % 5) for i in range(30)]
    summary = prior.summarize(records([*durations, None], cached=0), items(31))
    assert summary is not None and summary["jobs"] == 30
    assert set(summary) == {"format", "model", "width", "height", "quality", "jobs", *prior.QUANTILES}
    seeds, why = prior.read_prior({prior.SUMMARY_KEY: summary}, kind=KIND)
    assert why == "" and seeds is not None
    assert seeds == sorted(seeds) and seeds[2] == pytest.approx(16.2)


def test_no_summary_for_cache_copies_too_few_jobs_or_mixed_kinds() -> None:
    assert prior.summarize(records([16.0, 16.0, 16.0], cached=1), items(3)) is None  # two timed jobs
    mixed = items(3)[:2] + items(3, width=512)[2:]
    assert prior.summarize(records([16.0, 16.0, 16.0]), mixed) is None
    assert prior.kind_of(mixed) is None and prior.kind_of(items(2)) == KIND


def test_a_good_value_seeds_the_planner() -> None:
    seeds, why = prior.read_prior(good(), kind=KIND)
    assert seeds == [15.5, 15.8, 16.0, 16.2, 16.6] and why == ""


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, KIND),
        ("a string", KIND),
        ([1, 2, 3], KIND),
        ({"stored": 3}, KIND),
        ({prior.SUMMARY_KEY: "16"}, KIND),
        (good(format=2), KIND),
        (good(jobs=True), KIND),
        (good(jobs=0), KIND),
        (good(model="flux-dev"), KIND),
        (good(width=512), KIND),
        (good(width="256"), KIND),
        (good(quality="high"), KIND),
        (good(p50="16"), KIND),
        (good(p50=True), KIND),
        (good(p10=-1.0), KIND),
        (good(p10=0), KIND),
        (good(p90=math.inf), KIND),
        (good(p90=math.nan), KIND),
        (good(p90=prior.MAX_SECONDS + 1), KIND),
        (good(p25=17.0), KIND),  # out of order
        (good(p75=None), KIND),
        (good(), None),  # this batch mixes kinds
    ],
)
def test_a_bad_value_is_ignored(value: Any, kind: Any) -> None:
    seeds, why = prior.read_prior(value, kind=kind)
    assert seeds is None and why


def sim(n: int, *, duration: float, seeds: list[float] | None, poll: float = 10.0) -> Sim:
    limits = Limits(concurrency=10, requests_per_window=60, window_s=15.0)
    planner: Planner = (
        prior.SeededPlanner(seeds=seeds, limits=limits, poll_interval=poll)
        if seeds
        else Planner(limits=limits, poll_interval=poll)
    )
    return Sim(
        n=n, api=FakeApi(duration=duration, concurrency=10, per_window=60, window=15.0), planner=planner
    )


def first_wave_reads(s: Sim, duration: float) -> int:
    start = s.first_submit or 0.0
    return sum(1 for t, kind in s.api.requests if kind == "status" and t <= start + duration + 1.0)


def test_a_right_prior_reads_the_first_wave_at_its_end_instead_of_probing_it() -> None:
    plain, seeded = (
        sim(30, duration=16.0, seeds=None),
        sim(30, duration=16.0, seeds=[15.5, 15.8, 16.0, 16.2, 16.6]),
    )
    plain.run()
    seeded.run()
    assert sorted(seeded.stored) == list(range(30))
    assert first_wave_reads(plain, 16.0) >= 8  # probed at a tenth of the jobs' age
    assert first_wave_reads(seeded, 16.0) <= 2  # once at poll_interval, once just after the end
    assert seeded.status_requests() < plain.status_requests()
    assert seeded.now - (seeded.first_submit or 0) <= lower_bound(30, 10, 16.0, 60, 15.0) + 1.0


@pytest.mark.parametrize("prior_s", [4.0, 1.0])
def test_a_prior_far_too_short_is_corrected_by_the_overdue_reads(prior_s: float) -> None:
    s = sim(30, duration=16.0, seeds=[prior_s] * 5)
    s.run()
    assert sorted(s.stored) == list(range(30))
    plain = sim(30, duration=16.0, seeds=None)
    plain.run()
    # jobs past the expected end are read at a tenth of their age: no more than probing them costs
    assert s.status_requests() <= plain.status_requests() + 3
    assert s.now - (s.first_submit or 0) <= lower_bound(30, 10, 16.0, 60, 15.0) + 0.1 * 16 * 3 + 1.0
    assert s.planner.typical_duration == pytest.approx(16.0)  # its own durations outweigh the seeds


def test_a_read_just_before_the_predicted_end_does_not_delay_the_read_at_it() -> None:
    limits = Limits(concurrency=10, requests_per_window=60, window_s=60.0)
    planner = prior.SeededPlanner(seeds=[16.0] * 5, limits=limits, poll_interval=10.0)
    running = [1_000.0 + 0.002 * i for i in range(10)]
    planner.polled(1_015.1)  # read at poll_interval after the task's resume: all still running
    assert planner.next_poll_at(running) == pytest.approx(1_016.068)  # just after the predicted end
    short = prior.SeededPlanner(seeds=[4.0] * 5, limits=limits, poll_interval=10.0)
    short.polled(1_005.0)  # past the 4-s end the seeds predicted, the jobs still ran
    assert short.next_poll_at(running) == pytest.approx(1_005.0 + YOUNG_JOB_GAP)


@pytest.mark.parametrize("prior_s", [60.0, 600.0])
def test_a_prior_far_too_long_costs_at_most_poll_interval_once(prior_s: float) -> None:
    s = sim(30, duration=16.0, seeds=[prior_s] * 5)
    s.run()
    assert sorted(s.stored) == list(range(30))
    makespan = s.now - (s.first_submit or 0)
    assert makespan <= lower_bound(30, 10, 16.0, 60, 15.0) + 10.0 + 1.0, makespan
    assert s.planner.typical_duration == pytest.approx(16.0)


def test_a_task_picking_up_a_seeded_batch_still_reads_at_most_poll_interval_apart() -> None:
    limits = Limits(concurrency=10, requests_per_window=60, window_s=60.0)
    first = prior.SeededPlanner(seeds=[540.0, 570.0, 600.0, 630.0, 660.0], limits=limits, poll_interval=10.0)
    for _ in range(3):  # today's jobs take a minute: three have ended by the deferral
        first.learn(60.0)
    assert prior.seeded_counts(first) == [5, 3]
    resumed = prior.planner_from_ledger(
        durations=list(first.durations), seeded=prior.seeded_counts(first), limits=limits, poll_interval=10.0
    )
    resumed.polled(1_068.0)
    running = [1_000.0 + i for i in range(7)]
    # the median of the ledger's durations is 570 s: a plain planner would read at 1,570 s
    assert resumed.trigger_read_at(View(pending=0, running=running, to_store=0), 1_068.0) == pytest.approx(
        1_078.0
    )
    assert resumed.next_poll_at(running) <= 1_078.0
    for _ in range(2):
        first.learn(60.0)
    assert prior.seeded_counts(first) is None  # its own durations outnumber the seeds: plan as usual
    assert prior.seeded_counts(Planner(limits=limits, poll_interval=10.0)) is None


@pytest.mark.parametrize("seeded", [None, [3, 5], [5, 5], [5, -1], [5, True], ["5", 3], [9, 3], [5], "53"])
def test_seed_counts_a_ledger_cannot_back_plan_as_usual(seeded: Any) -> None:
    limits = Limits(concurrency=10, requests_per_window=60, window_s=60.0)
    planner = prior.planner_from_ledger(
        durations=[600.0] * 5 + [60.0] * 3, seeded=seeded, limits=limits, poll_interval=10.0
    )
    assert type(planner) is Planner


def test_an_item_list_tells_its_kind_without_building_its_items() -> None:
    from airflow_provider_doitong.batch.items import ItemDefaults, build_items

    one, _ = build_items([("line 1", "a fox"), ("line 2", "a tram")], ItemDefaults(width=256, height=256))
    assert prior.kind_of(one) == KIND
    mixed, _ = build_items(
        [("line 1", "a fox"), ("item 2", {"prompt": "a tram", "quality": "high"})],
        ItemDefaults(width=256, height=256),
    )
    assert mixed.kinds() == {KIND, ("flux-krea", 256, 256, "high")} and prior.kind_of(mixed) is None
