"""A batch and the image cache (:mod:`~airflow_provider_doitong.storage.cache`): hits stored before
anything is submitted, each image made filled in once stored, and the keys other runs are making waited for.

The runner calls it at four points: :meth:`BatchCache.resolve` when a run of its loop begins (a
task's first try, a retry, a resume after a deferral), :meth:`BatchCache.ready` and
:attr:`BatchCache.held` where it picks and counts what to submit, :meth:`BatchCache.stored` after
each storing step, and :meth:`BatchCache.settle` when the planner says the batch is done.

- A **hit** is copied into the output folder under its item's name and recorded ``stored`` in the
  ledger with the job id that made it, no job of its own (``job_ids`` empty) and 0 credits; the
  manifest calls it ``cached``.
- A **miss** is claimed for this task instance and generated as any item; once stored, its image
  (read back from the output folder, checked against the ledger's SHA-256) fills the cache and the
  claim is released.
- A miss another run has **claimed** is held back: the batch generates everything else first,
  then waits (in the worker, up to the task's deadline) for the other run's image, or for its
  claim to go (the other run gave up) or to turn stale, and then generates the item itself. No
  batch waits while it holds a claim it has not filled, so two batches never wait on each other.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.storage import Place, UnsafeOutputPath, store_image
from airflow_provider_doitong.storage.cache import CacheEntry, ImageCache


class BatchCache:
    """One batch's use of an :class:`ImageCache`.

    :param owner: the task instance, as a string: its claims are its own across tries and resumes.
    :param folder: the batch's output folder.
    """

    def __init__(
        self,
        *,
        cache: ImageCache,
        items: Sequence[BatchItem],
        ledger: Ledger,
        folder: Any,
        owner: str,
        log: logging.Logger | Any,
    ) -> None:
        self.cache = cache
        self.items = items
        self.ledger = ledger
        self.folder = folder
        self.owner = owner
        self.log = log
        #: Items another run is making: not submitted until :meth:`settle`.
        self.held: set[int] = set()
        self._resolved = False
        #: Hits stored by this object, for the log and the tests.
        self.hits = 0

    # --- the runner's calls -------------------------------------------------------------------
    def resolve(self) -> list[int]:
        """Once per runner: store the pending items' hits, claim the other keys, hold those claimed
        by another run; flushes the ledger.

        :return: the items stored from the cache now.
        """
        if self._resolved:
            return []
        self._resolved = True
        hits = [index for index in self.ledger.in_state(ItemState.PENDING) if self._resolve_one(index)]
        self.ledger.flush()
        if self.hits or self.held:
            self.log.info(
                "Image cache %s: %d items stored from it (0 credits), %d being made by another run",
                self.cache.shown,
                self.hits,
                len(self.held),
            )
        return hits

    def ready(self, pending: list[int]) -> list[int]:
        """The items of ``pending`` that may be submitted now (none held back)."""
        return [index for index in pending if index not in self.held] if self.held else pending

    def stored(self, candidates: Sequence[int]) -> None:
        """Fill the cache with the images of ``candidates`` (the items that were to be stored) that
        are stored now, each read back and checked against the ledger's SHA-256, and release their
        claims."""
        for index in candidates:
            record = self.ledger.records[index]
            if record.state is not ItemState.STORED or record.job_id is None or record.file is None:
                continue
            request = self.items[index].request
            try:
                data = Place(self.folder).read(record.file)
            except (OSError, UnsafeOutputPath) as exc:
                data = None
                self.log.warning("Item %d: not filling the cache: %s", index + 1, exc)
            if data is not None and record.sha256 is not None and _sha256(data) == record.sha256:
                self.cache.fill(request, data=data, job_id=record.job_id, credits=record.credits)
            self.cache.release(request, self.owner)

    def settle(self, *, reason: str, deadline: float | None) -> bool:
        """The planner found nothing more to do: wait for the held items, if the batch ended well.

        :param reason: why the batch stopped (``""``: everything it could do is done).
        :return: whether items were put back to be submitted (the runner goes on).
        """
        self.release_unmade()
        if reason or not self.held:
            return False
        self.log.info("Waiting for %d images another run is making (image cache)", len(self.held))
        for index in sorted(self.held):
            entry = self.cache.wait(self.items[index].request, self.owner, deadline=deadline)
            if entry is not None:
                self._store_hit(index, entry)
        self.held.clear()
        self.ledger.flush()
        return bool(self.ledger.count(ItemState.PENDING))

    def release_unmade(self) -> None:
        """Release the claims of the items failed or left unsubmitted: another run may make them
        (running and completed ones stay claimed, held ones were never this run's)."""
        for index in self.ledger.in_state(ItemState.FAILED, ItemState.PENDING):
            if index not in self.held:
                self.cache.release(self.items[index].request, self.owner)

    # --- one item -----------------------------------------------------------------------------
    def _resolve_one(self, index: int) -> bool:
        """A hit stored (``True``), or the key claimed or held."""
        request = self.items[index].request
        entry, claimed = self.cache.take(request, self.owner)
        if entry is not None:
            if self._store_hit(index, entry):
                return True
            claimed = self.cache.claim(request, self.owner)  # the copy failed: make it
        if not claimed:
            self.held.add(index)
        return False

    def _store_hit(self, index: int, entry: CacheEntry) -> bool:
        """Copy a hit into the output folder and record it stored (0 credits, no job of its own)."""
        stem = self.items[index].stem(len(self.items))
        try:
            name = store_image(self.folder, stem, entry.data, folder=True).name
        except (OSError, UnsafeOutputPath) as exc:
            self.log.warning(
                "Item %d: the cached image could not be copied (%s); generating it", index + 1, exc
            )
            return False
        self.ledger.update(
            index,
            state=ItemState.STORED,
            job_id=entry.job_id,
            credits=0,
            file=name,
            sha256=entry.sha256,
            bytes=len(entry.data),
            error=None,
        )
        self.hits += 1
        self.log.info("[cache] item %d: %s from job %s, 0 credits", index + 1, name, entry.job_id)
        return True


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
