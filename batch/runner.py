"""One run: resume the output, send what is left with bounded concurrency, report.

With --retry-failed, earlier failures are sent again too; their new lines go to the
journal and are merged into the output once all are in (rewrite.py). With --draw-boxes,
grounded answers are drawn once the output is final (draw.py).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
from tqdm.auto import tqdm

from .client import Outcome, Sender, endpoint, error_line
from .inputs import BatchRequest, ParsedInput
from .draw import draw_output
from .output import OutputWriter, ResumeState
from .retry import RetryPolicy
from .rewrite import apply_journal, journal_path
from .summary import Summary


@dataclass
class RunConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    concurrency: int = 8
    timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    media_root: Path = Path(".")
    model: str | None = None  # for requests whose body names none
    progress: bool = True
    retry_failed: bool = False  # send earlier failures again and replace their lines
    draw_boxes: Path | None = None  # folder for images with their grounding boxes drawn


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def report_input_problems(parsed: ParsedInput, summary: Summary, report: Callable[[str], None]) -> None:
    for problem in sorted(parsed.problems + parsed.rejected, key=lambda p: p.line):
        named = f" (custom_id {problem.custom_id!r})" if problem.custom_id else ""
        report(f"input line {problem.line}{named}: {problem.message}")
        summary.malformed_lines.append({"line": problem.line, "custom_id": problem.custom_id, "message": problem.message})
    for custom_id, lines in parsed.duplicates.items():
        report(f"duplicate custom_id {custom_id!r} on input lines {', '.join(map(str, lines))}: only its first line runs")
    summary.duplicate_custom_ids = dict(parsed.duplicates)


async def _served_model(client: httpx.AsyncClient, base_url: str) -> str:
    response = await client.get(endpoint(base_url, "/v1/models"))
    response.raise_for_status()
    models = response.json().get("data") or []
    if not models:
        raise RuntimeError("the server lists no models; pass --model")
    return models[0]["id"]


async def _with_models(requests: list[BatchRequest], client, config: RunConfig) -> list[BatchRequest]:
    if all("model" in request.body for request in requests):
        return requests
    model = config.model or await _served_model(client, config.base_url)
    return [r if "model" in r.body else replace(r, body={"model": model, **r.body}) for r in requests]


def _http_client(config: RunConfig) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    return httpx.AsyncClient(
        headers=headers,
        timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
        # One connection per worker; more would only sit idle.
        limits=httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency),
    )


def _open_journal(output: Path, state: ResumeState, report: Callable[[str], None]) -> tuple[OutputWriter, ResumeState]:
    """The retry journal, emptied if an earlier run already merged it (killed before removing it)."""
    journal = OutputWriter(journal_path(output))
    journal_state = journal.open()
    if journal_state.record_ids & state.record_ids:
        journal.discard_all()
        journal_state = ResumeState()
    elif journal_state.done:
        report(f"resuming an interrupted --retry-failed: {len(journal_state.done)} retried results already in "
               f"{journal.path}")
    return journal, journal_state


def _note_leftover_journal(output: Path, report: Callable[[str], None]) -> None:
    if journal_path(output).exists():
        report(f"{journal_path(output)} holds results of an unfinished --retry-failed run; rerun with "
               "--retry-failed to merge them (this run leaves those custom_ids alone)")


async def run(parsed: ParsedInput, output: Path, config: RunConfig, report: Callable[[str], None] = _stderr) -> Summary:
    summary = Summary(total=len(parsed.requests) + len(parsed.rejected))
    report_input_problems(parsed, summary, report)
    writer = OutputWriter(output)
    state = writer.open()
    journal, retrying = None, set()
    started = time.monotonic()
    try:
        summary.torn_bytes_dropped = state.torn_bytes
        in_input = {r.custom_id for r in parsed.requests} | {p.custom_id for p in parsed.rejected}
        if config.retry_failed:
            journal, journal_state = _open_journal(output, state, report)
            # Failures already retried by an interrupted --retry-failed are done for this round.
            retrying = (state.failed & in_input) - journal_state.done
            summary.retried_failures = len(retrying)
            if state.failed - in_input:
                report(f"{len(state.failed - in_input)} failed custom_ids in {output} are not in this input "
                       "and stay as they are")
        else:
            _note_leftover_journal(output, report)
            if state.failed:
                # Rerunning them here would write a second line for the same custom_id.
                report(f"{len(state.failed)} earlier results in {output} are failures and stay as they are; "
                       "rerun with --retry-failed to run them again")
        rejected = [p for p in parsed.rejected if p.custom_id not in state.done or p.custom_id in retrying]
        pending = [r for r in parsed.requests if r.custom_id not in state.done or r.custom_id in retrying]
        summary.skipped = summary.total - len(pending) - len(rejected)
        if summary.skipped:
            report(f"resuming: {summary.skipped} custom_ids already in {output}, {len(pending) + len(rejected)} to go")
        if retrying:
            report(f"retrying {len(retrying)} earlier failures")
        bar = tqdm(total=len(pending) + len(rejected), unit="req", dynamic_ncols=True, disable=not config.progress,
                   file=sys.stderr, desc="batch")

        async def record(outcome: Outcome) -> None:
            # A retried failure's new line waits in the journal: the output keeps its old line until the merge.
            target = journal if outcome.record["custom_id"] in retrying else writer
            await target.write(outcome.record)
            if outcome.ok:
                summary.succeeded += 1
                summary.latencies_s.append(outcome.latency_s)
                summary.add_usage(outcome.usage)
            else:
                summary.failed += 1
            if outcome.retries:
                summary.retried_requests += 1
            bar.update(1)
            bar.set_postfix(ok=summary.succeeded, failed=summary.failed, retries=summary.retries, refresh=False)

        def on_retry(request: BatchRequest, reason: str) -> None:
            summary.retries += 1

        for problem in rejected:
            await record(Outcome(error_line(problem.custom_id, "invalid_request",
                                            f"input line {problem.line}: {problem.message}"), ok=False))
        async with _http_client(config) as client:
            if pending:
                pending = await _with_models(pending, client, config)
            sender = Sender(client, config.base_url, config.policy, config.media_root, on_retry)
            queue = iter(pending)  # shared by the workers; next() never awaits, so no lock

            async def worker() -> None:
                for request in queue:
                    await record(await sender.send(request))

            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(max(1, min(config.concurrency, len(pending)))):
                        group.create_task(worker())
            finally:
                bar.close()
        if journal is not None:
            journal.close()
            journal = None
            if journal_path(output).stat().st_size:
                # Only now, with every retry in: an interruption above left the output as it was.
                await asyncio.to_thread(apply_journal, output)
            else:
                journal_path(output).unlink()
    finally:
        if journal is not None:
            journal.close()
        writer.close()
        summary.elapsed_s = time.monotonic() - started
    if config.draw_boxes is not None:
        bodies = {r.custom_id: r.body for r in parsed.requests}
        summary.images_drawn, failures = await asyncio.to_thread(
            draw_output, output, bodies, config.media_root, config.draw_boxes)
        summary.draw_failures = [{"custom_id": f.custom_id, "message": f.message} for f in failures]
        for failure in failures[:10]:
            report(f"boxes not drawn for {failure.custom_id!r}: {failure.message}")
    return summary
