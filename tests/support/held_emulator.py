"""The emulator with requests held in flight on demand, to kill a client while they are.

:class:`HoldingEmulator` serves the emulator's app behind :class:`Holds`, an ASGI layer that can
keep a request of a given kind (``submit``, ``status``, ``download``, as the emulator's request log
names them) in flight at one of two stages:

- ``request``: before the API sees it (a POST still on the wire: no job is made while it is held;
  released with ``drop=True`` it never reaches the API);
- ``answer``: after the API acted and its answer started (the job exists and the emulator's request
  log lists it), with the answer's bytes kept from the client until released.

Every hold is counted, and every answer delivered to its client is counted with the prompt of its
submission, so that a test waits on what happened, never on time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from doitong_emulator import DoitongEmulator
from doitong_emulator.gate import ADMIN_PREFIX, OUTPUTS_PREFIX, RequestInfo

STAGES = ("request", "answer")


@dataclass
class Rule:
    """Hold requests of ``kind`` at ``stage``: the first ``skip`` pass, the next ``count`` are held."""

    kind: str
    stage: str
    skip: int = 0
    count: int | None = None
    seen: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    drop: bool = False

    def takes(self) -> bool:
        """Whether the request just seen is held (counts it)."""
        self.seen += 1
        position = self.seen - self.skip
        return position > 0 and (self.count is None or position <= self.count)


def submitted_prompt(payload: Any) -> str | None:
    """The prompt of a submission's body (REST or either GraphQL mutation)."""
    if not isinstance(payload, dict):
        return None
    if isinstance(payload.get("prompt"), str):
        return str(payload["prompt"])
    data = (payload.get("variables") or {}).get("input") or {}
    if isinstance(data.get("prompt"), str):
        return str(data["prompt"])
    text = (data.get("input") or {}).get("text")
    return str(text) if isinstance(text, str) else None


class Holds:
    """The ASGI layer in front of the emulator's app (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        #: Requests held now, by (kind, stage).
        self.held: Counter[tuple[str, str]] = Counter()
        #: Answers whose last byte was handed to the client's connection, by kind.
        self.delivered: Counter[str] = Counter()
        #: The prompts of the submissions whose answer was delivered, in order.
        self.delivered_prompts: list[str] = []
        #: The prompts of the submissions held at each stage.
        self.held_prompts: dict[str, list[str]] = {stage: [] for stage in STAGES}

    # --- the test's side ------------------------------------------------------------------
    def hold(self, kind: str, stage: str, *, skip: int = 0, count: int | None = None) -> Rule:
        """Hold the requests of ``kind`` seen from now on at ``stage`` (see :class:`Rule`)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")
        rule = Rule(kind=kind, stage=stage, skip=skip, count=count)
        with self._lock:
            self._rules.append(rule)
        return rule

    def release_all(self, *, drop_requests: bool = True) -> None:
        """Stop holding: answers go to their clients (a dead client's are lost), and requests held
        before the API are dropped (``drop_requests``) or passed on."""
        with self._lock:
            rules, self._rules = self._rules, []
        for rule in rules:
            rule.drop = drop_requests and rule.stage == "request"
            rule.release.set()

    def count(self, kind: str, stage: str) -> int:
        with self._lock:
            return self.held[(kind, stage)]

    def reset(self) -> None:
        self.release_all()
        with self._lock:
            self.held.clear()
            self.delivered.clear()
            self.delivered_prompts.clear()
            for prompts in self.held_prompts.values():
                prompts.clear()

    # --- the server's side ----------------------------------------------------------------
    def _rule_for(self, kind: str, stage: str, prompt: str | None) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.kind == kind and rule.stage == stage and rule.takes():
                    self.held[(kind, stage)] += 1
                    if prompt is not None:
                        self.held_prompts[stage].append(prompt)
                    return rule
        return None

    async def _wait(self, rule: Rule, kind: str, stage: str) -> None:
        while not rule.release.is_set():
            await asyncio.sleep(0.02)
        with self._lock:
            self.held[(kind, stage)] -= 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        body, prompt = b"", None
        if scope["path"].startswith(OUTPUTS_PREFIX):
            kind = "download"
        else:
            body = await _read_body(receive)
            info = RequestInfo.read(scope["method"], scope["path"], body)
            kind = info.kind
            prompt = submitted_prompt(info.payload) if kind == "submit" else None
        before = self._rule_for(kind, "request", prompt)
        if before is not None:
            await self._wait(before, kind, "request")
            if before.drop:
                return  # never reached the API; the connection is closed without an answer
        after = self._rule_for(kind, "answer", prompt)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if scope["path"].startswith(OUTPUTS_PREFIX) or replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def held_send(message: Message) -> None:
            if after is not None and message["type"] == "http.response.start":
                await self._wait(after, kind, "answer")
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with self._lock:
                    self.delivered[kind] += 1
                    if prompt is not None:
                        self.delivered_prompts.append(prompt)

        await self.app(scope, replay, held_send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class HoldingEmulator(DoitongEmulator):
    """:class:`~doitong_emulator.DoitongEmulator` behind :class:`Holds` (``emu.holds``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.holds = Holds(self.app)

    def _make_server(self) -> uvicorn.Server:
        server = super()._make_server()
        server.config.app = self.holds
        return server

    def stop(self) -> None:
        self.holds.release_all()
        super().stop()

    def set_job_seconds(self, seconds: float) -> None:
        """Emulated processing time of the jobs made from now on."""
        with self.state.lock:
            self.state.config = dataclasses.replace(self.state.config, job_seconds=seconds)


def ledger_records(folder: Any) -> dict[int, dict[str, Any]]:
    """The records of the one batch ledger under ``folder`` (an output folder), read without
    writing anything: its snapshot, then its journal's whole lines. Empty while there is none."""
    from pathlib import Path

    snapshots = list(Path(folder).glob(".doitong/**/ledger.json"))
    journals = list(Path(folder).glob(".doitong/**/ledger.journal.jsonl"))
    records: dict[int, dict[str, Any]] = {}
    seq = 0
    for path in snapshots[:1]:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        seq = int(doc.get("seq", 0))
        records = {int(item["index"]): dict(item) for item in doc.get("items", [])}
    for path in journals[:1]:
        try:
            lines = path.read_bytes().split(b"\n")[:-1]  # the last piece is torn or empty
        except OSError:
            lines = []
        for line in lines:
            event = json.loads(line)
            if int(event.get("q", 0)) <= seq or "i" not in event:
                continue
            records.setdefault(int(event["i"]), {"index": int(event["i"])}).update(event.get("set") or {})
    return records
