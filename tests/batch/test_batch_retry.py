"""Backoff with jitter, and Retry-After in both of its forms."""

import time
from email.utils import formatdate

import httpx
import pytest

from batch.retry import RetryPolicy, retry_after_seconds, retryable_status


def with_header(value):
    return httpx.Response(429, headers={"Retry-After": value} if value is not None else {})


def test_retry_after_seconds_and_http_date():
    assert retry_after_seconds(with_header("3")) == 3.0
    assert retry_after_seconds(with_header(" 0.5 ")) == 0.5
    assert retry_after_seconds(with_header("-4")) == 0.0
    assert 8 <= retry_after_seconds(with_header(formatdate(time.time() + 10, usegmt=True))) <= 10
    assert retry_after_seconds(with_header("soon")) is None
    assert retry_after_seconds(with_header(None)) is None


def test_backoff_grows_is_jittered_and_capped():
    policy = RetryPolicy(max_retries=10, base_delay=0.5, max_delay=4.0)
    for retry in range(10):
        samples = [policy.backoff(retry) for _ in range(200)]
        assert all(0 <= s <= min(4.0, 0.5 * 2**retry) for s in samples)
        assert len(set(samples)) > 100  # jittered, not a fixed schedule
    assert max(policy.backoff(9) for _ in range(200)) > 2.0


def test_retry_after_is_a_floor_with_jitter_on_top_and_a_cap():
    policy = RetryPolicy(base_delay=0.5, max_delay=10.0)
    samples = [policy.delay(0, 2.0) for _ in range(200)]
    assert all(2.0 <= s <= 2.5 for s in samples) and len(set(samples)) > 100
    assert policy.delay(0, 3600.0) == 10.0
    # Later retries keep backing off even when the server keeps saying "1".
    assert max(policy.delay(6, 1.0) for _ in range(200)) > 5.0


@pytest.mark.parametrize("status, retry", [(429, True), (500, True), (502, True), (503, True), (408, True),
                                           (400, False), (401, False), (404, False), (413, False), (200, False)])
def test_which_statuses_are_retried(status, retry):
    assert retryable_status(status) is retry
