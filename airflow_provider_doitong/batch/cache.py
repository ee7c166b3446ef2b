"""A batch and the image cache (:mod:`~airflow_provider_doitong.storage.cache`): hits stored before
anything is submitted, each image made filled in once stored, and the keys other runs are making waited for.

The runner calls it at five points: :meth:`BatchCache.resolve` when a run of its loop begins (a
task's first try, a retry, a resume after a deferral), :meth:`BatchCache.ready` and
:attr:`BatchCache.held` where it picks and counts what to submit, :meth:`BatchCache.to_fill` and
:meth:`BatchCache.stored` around each storing step, :meth:`BatchCache.settle` when the planner says
the batch is done, and :meth:`BatchCache.release_unmade` on every way out of the run. Before the
batch starts, :meth:`BatchCache.hits_now` tells the budget and balance checks which items cost nothing.

- A **hit** is copied into the output folder under its item's name and recorded ``stored`` in the
  ledger with the job id that made it, no job of its own (``job_ids`` empty) and 0 credits; the
  manifest calls it ``cached``.
- A **miss** is claimed for this task instance and generated as any item; once stored, its image
  (read back from the output folder, checked against the ledger's SHA-256) fills the cache and the
  claim is released. A run stopped between recording an image stored and filling the cache fills
  it when the task resumes (or retries), from the stored file checked against the ledger's SHA-256.
- Every item that ends without an image (failed, also while the last downloads are drained, or
  left unsubmitted) gives its claim back when the run ends, however it ends: another run may make
  it at once, rather than wait :data:`~airflow_provider_doitong.storage.cache.CLAIM_TTL_S`.
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
from airflow_provider_doitong.batch.ledger import ItemRecord, ItemState, Ledger
from airflow_provider_doitong.storage import Place, UnsafeOutputPath, store_image
from airflow_provider_doitong.storage.cache import CacheEntry, ImageCache

#: The ledger's metadata naming the items the runner's next storing step may store (:meth:`BatchCache.to_fill`).
TO_FILL = "cache_to_fill"


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
        self._released: set[int] = set()
        #: The items last noted in the ledger as to be filled (see :meth:`to_fill`).
        self._noted: list[int] | None = None
        #: Hits stored by this object, for the log and the tests.
        self.hits = 0

    # --- the runner's calls -------------------------------------------------------------------
    def resolve(self) -> list[int]:
        """Once per runner: fill the cache with what an earlier run stored but did not fill, store
        the pending items' hits, claim the other keys, hold those claimed by another run; flushes
        the ledger.

        :return: the items stored from the cache now.
        """
        if self._resolved:
            return []
        self._resolved = True
        self._fill_left_over()
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

    def hits_now(self, indices: Sequence[int]) -> list[int]:
        """The items of ``indices`` whose image the cache holds now, verified: they will cost 0
        credits. Nothing is claimed, copied or written (the checks before the batch starts ask this;
        :meth:`resolve` stores the hits once the batch runs)."""
        return [index for index in indices if self.cache.lookup(self.items[index].request) is not None]

    def ready(self, pending: list[int]) -> list[int]:
        """The items of ``pending`` that may be submitted now (none held back)."""
        return [index for index in pending if index not in self.held] if self.held else pending

    def to_fill(self) -> list[int]:
        """The completed items, whose images the next storing step may store: noted in the ledger's
        metadata (``cache_to_fill``, queued for its next flush, the one that records them stored),
        so that a run stopped between that flush and :meth:`stored` fills them when it resumes
        (:meth:`resolve`). Noted only when they changed, so no flush is added."""
        candidates = self.ledger.in_state(ItemState.COMPLETED)
        if candidates != self._noted and (candidates or self.ledger.meta.get(TO_FILL)):
            self.ledger.set_meta(**{TO_FILL: candidates})
        self._noted = candidates
        return candidates

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
            elif data is not None:
                self.log.warning(
                    "Item %d: not filling the cache: %s is not the image stored", index + 1, record.file
                )
            self.cache.release(request, self.owner)

    def settle(self, *, reason: str, deadline: float | None) -> bool:
        """The planner found nothing more to do: wait for the held items, if the batch ended well.

        :param reason: why the batch stopped (``""``: everything it could do is done).
        :return: whether items were put back to be submitted (the runner goes on).
        """
        if reason or not self.held:
            return False  # the runner releases the claims of what is left on its way out
        self.release_unmade()  # never wait while holding a claim another run may wait on
        self.log.info("Waiting for %d images another run is making (image cache)", len(self.held))
        for index in sorted(self.held):
            entry = self.cache.wait(self.items[index].request, self.owner, deadline=deadline)
            if entry is not None:
                self._store_hit(index, entry)
        self.held.clear()
        self.ledger.flush()
        return bool(self.ledger.count(ItemState.PENDING))

    def release_unmade(self, *, pending: bool = True) -> None:
        """Release the claims of the items that end without an image: failed ones (also in the final
        drain), and with ``pending`` those left unsubmitted, so that another run may make them at
        once rather than wait for the claims to turn stale. Running and completed items stay
        claimed (a later try of this task stores them); held ones were never this run's.

        :param pending: release the pending items' claims too (not when the run defers: it goes on).
        """
        states = (ItemState.FAILED, ItemState.PENDING) if pending else (ItemState.FAILED,)
        for index in self.ledger.in_state(*states):
            if index not in self.held and index not in self._released:
                self.cache.release(self.items[index].request, self.owner)
                if self.ledger.records[index].state is ItemState.FAILED:
                    self._released.add(index)  # failed for this runner's life: released once

    def _fill_left_over(self) -> None:
        """Fill the cache with the images an earlier run of this task stored but stopped before
        filling (its ``cache_to_fill`` items stored by a job of its own), and release their claims;
        an item whose entry is there already (filled, or another run's) only gives its claim back."""
        noted = self.ledger.meta.get(TO_FILL) or []
        left = [i for i in noted if i < len(self.items) and _made_here(self.ledger.records[i])]
        for index in left:
            if self.cache.lookup(self.items[index].request) is None:
                self.log.info("Item %d: filling the image cache with the image stored before", index + 1)
                self.stored([index])
            else:
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
            cached=True,
        )
        self.hits += 1
        self.log.info("[cache] item %d: %s from job %s, 0 credits", index + 1, name, entry.job_id)
        return True


def _made_here(record: ItemRecord) -> bool:
    """Stored from a job of the batch's own (not copied from the cache)."""
    return record.state is ItemState.STORED and not record.from_cache


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
