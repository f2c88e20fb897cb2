"""The output JSONL: resumed from what an earlier (possibly SIGKILLed) run left, then
appended one durable line per result.

Exactly-once rests on three things: a line reaches the file in one append and is
fsynced before the next result counts as written; a torn final line (the process
died mid-write) is cut off on resume, so its request runs again; and an exclusive
lock keeps two runs from appending to the same file at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class OutputError(Exception):
    """The output file cannot be resumed or written (corrupt, locked, unwritable)."""


@dataclass
class ResumeState:
    done: set[str] = field(default_factory=set)
    # custom_ids whose earlier result was an error line or a non-2xx response.
    failed: set[str] = field(default_factory=set)
    # Each line's own `id` (batch_req_<uuid>, unique per result): tells whether a
    # --retry-failed journal has already been merged into this file.
    record_ids: set[str] = field(default_factory=set)
    torn_bytes: int = 0


def is_failure(record: dict[str, Any]) -> bool:
    response = record.get("response") or {}
    return record.get("error") is not None or not 200 <= int(response.get("status_code") or 0) < 300


def scan(data: bytes) -> tuple[ResumeState, int]:
    """What `data` (an output file's bytes) holds, and the length of its whole lines."""
    state = ResumeState()
    complete = data.rfind(b"\n") + 1
    state.torn_bytes = len(data) - complete
    for number, raw in enumerate(data[:complete].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            custom_id = record["custom_id"]
        except (ValueError, TypeError, KeyError):
            raise OutputError(f"line {number} of the output is not a batch result line; refusing to append to it") from None
        state.done.add(custom_id)
        if isinstance(record.get("id"), str):
            state.record_ids.add(record["id"])
        if is_failure(record):
            state.failed.add(custom_id)
        else:
            state.failed.discard(custom_id)
    return state, complete


class OutputWriter:
    """Appends result lines; one writer per output file, used from one event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = asyncio.Lock()
        self.lines_written = 0

    def open(self) -> ResumeState:
        """Lock the file, cut a torn tail, and return the custom_ids already written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputError(f"{self.path} is in use by another internvl-batch run") from None
            with os.fdopen(os.dup(fd), "rb") as reader:
                data = reader.read()
            state, complete = scan(data)
            if state.torn_bytes:
                os.ftruncate(fd, complete)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        # O_APPEND on a second descriptor: every write lands at the end, whatever the offset.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._lock_fd = fd
        return state

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def discard_all(self) -> None:
        """Empty the file (a journal that has already been merged)."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)

    async def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        async with self._lock:  # one line at a time: appends never interleave
            await asyncio.to_thread(self._append, data)
            self.lines_written += 1

    def close(self) -> None:
        for fd in (self._fd, getattr(self, "_lock_fd", None)):
            if fd is not None:
                os.close(fd)
        self._fd = None
        self._lock_fd = None
