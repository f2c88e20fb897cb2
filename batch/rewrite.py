"""--retry-failed: new results for earlier failures, merged into the output by one atomic rename.

While failures are rerun, their new result lines go to a journal beside the output
(OUTPUT.retry-journal), appended and fsynced like the output itself; the output is
only appended to (with custom_ids it never had) until every retry has finished.
Then the output is rewritten in one step: a temp file in the same folder gets every
line, each failure replaced in place by its journal line, and is fsynced and renamed
over the output, and the folder is fsynced. A kill at any moment leaves the old
output (plus whole appended lines) or the complete new one; the journal keeps the
finished retries, so the next --retry-failed sends only what it lacks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .output import is_failure


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".retry-journal")


def temp_path(output: Path) -> Path:
    # A fixed name: the output's lock covers it, and a kill's leftover is reused.
    return output.with_name(output.name + ".rewrite-tmp")


def _records(data: bytes) -> list[dict[str, Any]]:
    """Whole lines only; the callers scanned both files already, so every line parses."""
    return [json.loads(raw) for raw in data[: data.rfind(b"\n") + 1].splitlines() if raw.strip()]


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def merged(output: bytes, journal: bytes) -> bytes:
    """The output with each failure line replaced by the journal's line for that
    custom_id. Lines keep their order and bytes; a successful line is never replaced;
    a journal result whose custom_id the output lacks is appended. Applying the same
    journal twice gives the same file, so a kill between rename and journal removal
    is harmless."""
    newest = {record["custom_id"]: record for record in _records(journal)}
    lines, seen = [], set()
    for raw in output[: output.rfind(b"\n") + 1].splitlines(keepends=True):
        if not raw.strip():
            continue
        record = json.loads(raw)
        custom_id = record["custom_id"]
        seen.add(custom_id)
        replacement = newest.get(custom_id)
        lines.append(_line(replacement) if replacement is not None and is_failure(record) else raw)
    lines.extend(_line(record) for custom_id, record in newest.items() if custom_id not in seen)
    return b"".join(lines)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data` afterwards, or (after a crash at any point) its old bytes."""
    temp = temp_path(path)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)  # the bytes are on disk before the name points at them
    finally:
        os.close(fd)
    os.replace(temp, path)
    _fsync_dir(path.parent)  # and the rename itself survives a power cut


def apply_journal(output: Path) -> None:
    """Merge the journal into the output and remove it. The caller holds the output's lock."""
    journal = journal_path(output)
    replace_atomically(output, merged(output.read_bytes(), journal.read_bytes()))
    journal.unlink()
    _fsync_dir(output.parent)
