"""Batch API input lines -> validated requests, with every bad line reported by number."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    method: str
    url: str
    body: dict[str, Any]
    line: int = 0


@dataclass(frozen=True)
class InputProblem:
    line: int
    message: str
    # Known when the line names one: such a line still gets an error line in the
    # output, so that every custom_id ends up there exactly once.
    custom_id: str | None = None


@dataclass
class ParsedInput:
    requests: list[BatchRequest] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    # custom_id -> the later line numbers that repeated it (only the first runs).
    duplicates: dict[str, list[int]] = field(default_factory=dict)
    # Lines that named a custom_id but were otherwise unusable.
    rejected: list[InputProblem] = field(default_factory=list)


def parse_line(text: str, line: int) -> BatchRequest | InputProblem:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return InputProblem(line, f"not valid JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(record, dict):
        return InputProblem(line, "not a JSON object")
    custom_id = record.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return InputProblem(line, "`custom_id` must be a non-empty string")
    method, url, body = record.get("method", "POST"), record.get("url"), record.get("body")
    if not isinstance(method, str) or method.upper() != "POST":
        return InputProblem(line, f"`method` must be POST, not {method!r}", custom_id)
    if not isinstance(url, str) or not url.startswith("/"):
        return InputProblem(line, "`url` must be a path such as /v1/chat/completions", custom_id)
    if not isinstance(body, dict):
        return InputProblem(line, "`body` must be a JSON object", custom_id)
    return BatchRequest(custom_id, "POST", url, body, line)


def collect(lines: Iterable[tuple[int, str]]) -> ParsedInput:
    parsed = ParsedInput()
    seen: set[str] = set()
    for number, text in lines:
        if not text.strip():
            continue
        item = parse_line(text, number)
        custom_id = item.custom_id
        if custom_id is not None and custom_id in seen:
            parsed.duplicates.setdefault(custom_id, []).append(number)
            continue
        if isinstance(item, BatchRequest):
            parsed.requests.append(item)
        elif custom_id is not None:
            parsed.rejected.append(item)
        else:
            parsed.problems.append(item)
        if custom_id is not None:
            seen.add(custom_id)
    return parsed


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    # errors="replace": one line of bad UTF-8 becomes one reported bad line, not a crash.
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield from enumerate(handle, start=1)


def read_input(path: Path) -> ParsedInput:
    return collect(numbered_lines(path))
