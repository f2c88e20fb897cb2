"""One run: resume the output, send what is left with bounded concurrency, report."""

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
from .output import OutputWriter
from .retry import RetryPolicy
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


async def run(parsed: ParsedInput, output: Path, config: RunConfig, report: Callable[[str], None] = _stderr) -> Summary:
    summary = Summary(total=len(parsed.requests) + len(parsed.rejected))
    report_input_problems(parsed, summary, report)
    writer = OutputWriter(output)
    state = writer.open()
    started = time.monotonic()
    try:
        summary.torn_bytes_dropped = state.torn_bytes
        rejected = [p for p in parsed.rejected if p.custom_id not in state.done]
        pending = [r for r in parsed.requests if r.custom_id not in state.done]
        summary.skipped = summary.total - len(pending) - len(rejected)
        if summary.skipped:
            report(f"resuming: {summary.skipped} custom_ids already in {output}, {len(pending) + len(rejected)} to go")
        if state.failed:
            # Rerunning them would write a second line for the same custom_id.
            report(f"{len(state.failed)} earlier results in {output} are failures and stay as they are; "
                   "remove their lines to run them again")
        bar = tqdm(total=len(pending) + len(rejected), unit="req", dynamic_ncols=True, disable=not config.progress,
                   file=sys.stderr, desc="batch")

        async def record(outcome: Outcome) -> None:
            await writer.write(outcome.record)
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
    finally:
        writer.close()
        summary.elapsed_s = time.monotonic() - started
    return summary
