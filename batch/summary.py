"""Counters gathered during a run and the closing report."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; fine for a report, and defined for one sample."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


@dataclass
class Summary:
    total: int = 0  # distinct custom_ids in the input, bad lines with one included
    skipped: int = 0  # already in the output from an earlier run
    retried_failures: int = 0  # earlier failures sent again (--retry-failed); counted in succeeded/failed
    succeeded: int = 0
    failed: int = 0
    retried_requests: int = 0  # requests that needed at least one retry
    retries: int = 0  # retry attempts in all
    malformed_lines: list[dict[str, Any]] = field(default_factory=list)
    duplicate_custom_ids: dict[str, list[int]] = field(default_factory=dict)
    torn_bytes_dropped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    images_drawn: int = 0  # --draw-boxes
    draw_failures: list[dict[str, str]] = field(default_factory=list)  # {custom_id, message}; never fail the run

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        if usage:
            self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.completion_tokens += int(usage.get("completion_tokens") or 0)

    def latency(self) -> dict[str, float]:
        values = sorted(self.latencies_s)
        return {
            "p50": percentile(values, 0.50),
            "p90": percentile(values, 0.90),
            "p99": percentile(values, 0.99),
            "mean": statistics.fmean(values) if values else 0.0,
            "max": values[-1] if values else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("latencies_s")
        data["latency_s"] = self.latency()
        data["total_tokens"] = self.prompt_tokens + self.completion_tokens
        return data

    @property
    def clean(self) -> bool:
        """Every request succeeded and every input line was usable."""
        return not (self.failed or self.malformed_lines or self.duplicate_custom_ids)

    def render(self) -> str:
        lat = self.latency()
        done = self.succeeded + self.failed
        rate = done / self.elapsed_s if self.elapsed_s else 0.0
        lines = [
            (f"done {self.succeeded} succeeded, {self.failed} failed, {self.skipped} skipped (already in the output)"
            f" of {self.total} in {self.elapsed_s:.1f}s ({rate:.2f} req/s)"),
            f"retries {self.retries} over {self.retried_requests} requests",
            f"latency p50 {lat['p50']:.2f}s  p90 {lat['p90']:.2f}s  p99 {lat['p99']:.2f}s  max {lat['max']:.2f}s",
            (f"tokens prompt {self.prompt_tokens}  completion {self.completion_tokens}"
            f"  total {self.prompt_tokens + self.completion_tokens}"),
        ]
        if self.retried_failures:
            lines.append(f"earlier failures retried: {self.retried_failures} (their lines replaced in the output)")
        if self.images_drawn or self.draw_failures:
            lines.append(f"boxes drawn on {self.images_drawn} images; {len(self.draw_failures)} results not drawn"
                         + (" (reasons above and in --summary-json)" if self.draw_failures else ""))
        if self.malformed_lines:
            lines.append(f"malformed input lines: {len(self.malformed_lines)} (see above)")
        if self.duplicate_custom_ids:
            lines.append(f"duplicate custom_ids (only the first line ran): {len(self.duplicate_custom_ids)}")
        if self.torn_bytes_dropped:
            lines.append(f"dropped a torn final output line ({self.torn_bytes_dropped} bytes) left by an interrupted run")
        return "\n".join(lines)
