"""``max_credits`` against what Doitong really charges, decided without I/O.

Before a batch starts, its estimate is checked against ``max_credits``
(:func:`budget_problem`), the images the image cache holds
counted at 0 (:func:`counting_hits`). The vendor's charged ``creditCost``
is the truth, though, and may be more. While the batch runs, :class:`CreditBudget` keeps the
*projection*: what the items charged so far really cost, plus the estimate of every item not charged
yet (running or still to submit), less the items that failed for good without a charge (failed
jobs are refunded). The runner asks it before each submission; once the projection passes
``max_credits``, nothing more is submitted: running jobs are still waited for and their images
stored, and the task then fails naming what was left unsubmitted.

Each charge is learnt once (from the submission's answer, or from the completed job), in O(1); the
projection is a running sum, so a batch of a million items pays nothing per step for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from airflow_provider_doitong.batch.item_list import BatchItem, ItemList


def over_estimate(*, charged: int | None, estimate: int, max_credits: int | None = None) -> str | None:
    """What to warn when Doitong charged more than an image's estimate, or ``None``; one wording for
    the single image and the batch (the image is paid for either way, so it is still stored).

    :param charged: the charge as read by the client's parser (``None``: not said).
    :param estimate: the image's estimated credits.
    :param max_credits: the task's cap, named when the charge alone passes it.
    """
    if charged is None or charged <= estimate:
        return None
    over_cap = (
        f", over max_credits={max_credits}" if max_credits is not None and charged > max_credits else ""
    )
    return f"charged {charged} credits, {charged - estimate} more than the estimated {estimate}{over_cap}"


def within_floor(*, balance: int, floor: int, estimates: Sequence[int]) -> int:
    """How many of the next submissions (their estimated credits, in order) keep the balance at or above
    the credit floor: the account's, shared by every task on it, read just before they go out.

    :param balance: the account's balance now.
    :param floor: the balance no submission may take it below.
    :param estimates: the next items' estimated credits.
    """
    left = balance - floor
    for count, estimate in enumerate(estimates):
        left -= estimate
        if left < 0:
            return count
    return len(estimates)


def below_floor(*, balance: int, floor: int, estimate: int) -> str:
    """Why a submission estimated at ``estimate`` credits must not go out: one wording for both operators."""
    return (
        f"the account has {balance} credits and its credit floor is {floor}: a job estimated at "
        f"{estimate} credits would take it below the floor"
    )


def counting_hits(problem: Callable[[int], str | None], free: Callable[[], int]) -> str | None:
    """Why a run must not start, counting the images the image cache holds at 0 credits: one rule for
    the checks both operators make before their first credit (``max_credits``, the balance, the
    credit floor).

    :param problem: the check, given the credits to take off its estimate (``None``: it passes).
    :param free: the estimated credits of the images the cache holds now; asked only when the full
        estimate is refused, so a run without a cache, or within its budget anyway, reads nothing more.
    """
    refused = problem(0)
    if refused is None:
        return None
    off = free()
    return problem(off) if off else refused


def item_estimates(items: Sequence[BatchItem]) -> Sequence[int]:
    """Every item's estimated credits, by index: from an :class:`ItemList`'s options without building
    its items (a million items: a tenth of a second, not seconds)."""
    if isinstance(items, ItemList):
        return items.estimates()
    return [item.request.estimated_credits for item in items]


@dataclass
class CreditBudget:
    """The batch's projected credits against ``max_credits``.

    :param estimates: every item's estimated credits, by index.
    :param max_credits: the cap, or ``None`` (then charges are only watched, for the warnings).
    """

    estimates: Sequence[int]
    max_credits: int | None = None
    #: ``charged - estimated`` of every item whose charge is known, by index.
    _excess: dict[int, int] = field(default_factory=dict)
    _excess_sum: int = 0
    _estimate_sum: int = 0

    def __post_init__(self) -> None:
        self._estimate_sum = sum(self.estimates)

    def charged(self, index: int, credits: int | None) -> int:
        """Item ``index`` was charged ``credits`` (``None``: not said); how many more than estimated.

        :return: the credits over the item's estimate (0 when not over, or when already reported).
        """
        charge = credits  # read once, by the client's parser or the ledger's checks
        if charge is None:
            return 0  # not said (or not a charge): the estimate stands
        excess = charge - self.estimates[index]
        previous = self._excess.get(index)
        self._excess[index] = excess
        self._excess_sum += excess - (previous or 0)
        return excess if excess > 0 and previous is None else 0

    def refunded(self, index: int) -> None:
        """Item ``index``'s job failed, so its charge went back: it counts at its estimate again."""
        previous = self._excess.pop(index, None)
        if previous is not None:
            self._excess_sum -= previous

    def learn(self, charges: Iterable[tuple[int, int | None]]) -> None:
        """Charges already known (from the ledger, when a try resumes); no warning is due for them."""
        for index, credits in charges:
            self.charged(index, credits)

    def projected(self, *, dropped: Iterable[int] = ()) -> int:
        """What the whole batch will have cost: charges known, estimates for the rest.

        :param dropped: items that failed for good without a charge (they cost nothing).
        """
        return self._estimate_sum + self._excess_sum - sum(self.estimates[i] for i in dropped)

    def stop_reason(self, *, dropped: Iterable[int] = ()) -> str:
        """Why nothing more may be submitted, or ``""`` while the projection stays within ``max_credits``.

        :param dropped: as for :meth:`projected`.
        """
        if self.max_credits is None:
            return ""
        projected = self.projected(dropped=dropped)
        if projected <= self.max_credits:
            return ""
        return (
            f"max_credits={self.max_credits} would be passed: Doitong charged {self._excess_sum} credits more "
            f"than estimated, so the batch would cost {projected}"
        )


def budget_problem(
    *,
    images: int,
    estimate: int,
    to_spend: int,
    balance: int | None,
    max_credits: int | None,
    credit_floor: int | None = None,
) -> str | None:
    """Why a batch must not start, or ``None``.

    :param images: how many images the batch has.
    :param estimate: the estimated credits of the whole batch (what a first try spends).
    :param to_spend: the estimate of what is still to be bought (less on a retry).
    :param balance: the account's credit balance, if read.
    :param max_credits: the most the whole batch may spend, if capped.
    :param credit_floor: the balance the batch must leave the account at, if any.
    """
    if max_credits is not None and estimate > max_credits:
        return (
            f"{images} images are estimated at {estimate} credits, over max_credits={max_credits}; "
            "nothing was submitted"
        )
    if balance is not None and to_spend > balance:
        return (
            f"Not enough Doitong credits: the images still to generate are estimated at {to_spend} "
            f"credits, the account balance is {balance}; nothing was submitted"
        )
    if balance is not None and credit_floor is not None and balance - to_spend < credit_floor:
        return (
            f"The images still to generate are estimated at {to_spend} credits: they would take the "
            f"account from {balance} to {balance - to_spend} credits, below its credit floor of "
            f"{credit_floor}; nothing was submitted"
        )
    return None
