"""Retries against a scripted fake server: 429 (Retry-After honoured), 5xx, dropped and
refused connections, timeouts; what is not retried; and the error line after the last retry."""

import socket

import pytest
from batch_support import MODEL, batch_line, read_output

from batch.client import endpoint
from batch.inputs import BatchRequest, ParsedInput
from batch.retry import RetryPolicy
from batch.runner import RunConfig, run

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=5.0)


def requests(*lines):
    return ParsedInput(requests=[BatchRequest(**{k: v for k, v in line.items()}) for line in lines])


def scripted(custom_id, script, **fake):
    return batch_line(custom_id, fake={"key": custom_id, "script": script, **fake})


async def run_against(server, parsed, tmp_path, **config):
    config.setdefault("policy", FAST)
    messages = []
    out = tmp_path / "out.jsonl"
    summary = await run(parsed, out, RunConfig(base_url=server.base_url, progress=False, **config), messages.append)
    return summary, {record["custom_id"]: record for record in read_output(out)}, messages


@pytest.mark.parametrize("base, url, expected", [
    ("http://h:1/v1", "/v1/chat/completions", "http://h:1/v1/chat/completions"),
    ("http://h:1/v1/", "/v1/chat/completions", "http://h:1/v1/chat/completions"),
    ("http://h:1", "/v1/chat/completions", "http://h:1/v1/chat/completions"),
    ("http://h:1/proxy/v1", "/v1/chat/completions", "http://h:1/proxy/v1/chat/completions"),
    ("http://h:1/v1", "/chat/completions", "http://h:1/v1/chat/completions"),
])
def test_endpoint_joins_base_url_and_batch_url(base, url, expected):
    assert endpoint(base, url) == expected


async def test_success_line_has_the_batch_output_shape(fake_server, tmp_path):
    summary, out, _ = await run_against(fake_server, requests(batch_line("a")), tmp_path, api_key="k")
    record = out["a"]
    assert set(record) == {"id", "custom_id", "response", "error"}
    assert record["id"].startswith("batch_req_") and record["error"] is None
    assert record["response"]["status_code"] == 200
    assert record["response"]["request_id"] == "req-1"
    assert record["response"]["body"]["object"] == "chat.completion"
    assert fake_server.received[0]["auth"] == "Bearer k"
    assert fake_server.received[0]["path"] == "/v1/chat/completions"
    assert (summary.succeeded, summary.failed, summary.prompt_tokens, summary.completion_tokens) == (1, 0, 5, 2)


async def test_429_waits_at_least_retry_after(fake_server, tmp_path):
    summary, out, _ = await run_against(fake_server, requests(scripted("a", ["429"], retry_after=1)), tmp_path)
    first, second = fake_server.received
    assert second["time"] - first["time"] >= 1.0
    assert out["a"]["response"]["status_code"] == 200
    assert (summary.retries, summary.retried_requests, summary.succeeded) == (1, 1, 1)


async def test_5xx_and_dropped_connections_are_retried(fake_server, tmp_path):
    parsed = requests(scripted("a", ["500", "503", "502"]), scripted("b", ["drop", "drop"]), batch_line("c"))
    summary, out, _ = await run_against(fake_server, parsed, tmp_path)
    assert all(out[c]["response"]["status_code"] == 200 for c in "abc")
    assert (summary.succeeded, summary.failed, summary.retries, summary.retried_requests) == (3, 0, 5, 2)


async def test_timeouts_are_retried(fake_server, tmp_path):
    summary, out, _ = await run_against(fake_server, requests(scripted("a", ["sleep:2"])), tmp_path, timeout_s=0.3)
    assert out["a"]["response"]["status_code"] == 200
    assert summary.retries == 1


async def test_client_errors_are_not_retried_but_recorded(fake_server, tmp_path):
    summary, out, _ = await run_against(fake_server, requests(scripted("a", ["400"])), tmp_path)
    assert len(fake_server.received) == 1
    assert out["a"]["response"]["status_code"] == 400
    assert out["a"]["response"]["body"]["error"]["message"] == "scripted 400"
    assert out["a"]["error"] is None  # as OpenAI writes a request the API answered with an error
    assert (summary.failed, summary.retries) == (1, 0)


async def test_after_the_last_retry_an_error_line_is_written(fake_server, tmp_path):
    parsed = requests(scripted("busy", ["503"] * 10), scripted("gone", ["drop"] * 10), batch_line("fine"))
    summary, out, _ = await run_against(fake_server, parsed, tmp_path)
    assert out["busy"]["response"]["status_code"] == 503
    assert out["busy"]["error"]["code"] == "retries_exhausted"
    assert "3 retries" in out["busy"]["error"]["message"]
    assert out["gone"]["response"] is None and out["gone"]["error"]["code"] == "connection_error"
    assert out["fine"]["error"] is None
    assert fake_server.attempts == {"busy": 4, "gone": 4}
    assert (summary.succeeded, summary.failed, summary.retries) == (1, 2, 6)


async def test_a_refused_connection_ends_as_an_error_line(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    messages = []
    summary = await run(requests(batch_line("a")), tmp_path / "out.jsonl",
                        RunConfig(base_url=f"http://127.0.0.1:{port}/v1", progress=False,
                                  policy=RetryPolicy(2, 0.01, 0.1)), messages.append)
    [record] = read_output(tmp_path / "out.jsonl")
    assert record["error"]["code"] == "connection_error" and "ConnectError" in record["error"]["message"]
    assert (summary.failed, summary.retries) == (1, 2)


async def test_concurrency_limit_is_respected(make_fake_server, tmp_path):
    # Each answer takes long enough that every free slot is refilled while the
    # others are still in flight: the peak the server sees is the limit itself.
    server = make_fake_server(delay_s=0.2)
    parsed = requests(*(batch_line(f"r{i}") for i in range(15)))
    summary, out, _ = await run_against(server, parsed, tmp_path, concurrency=5)
    assert len(out) == 15 and summary.succeeded == 15
    assert server.peak == 5
    assert server.active == 0


async def test_429s_at_the_server_limit_recover(make_fake_server, tmp_path):
    server = make_fake_server(limit=2, delay_s=0.05)
    parsed = requests(*(batch_line(f"r{i}") for i in range(20)))
    summary, out, _ = await run_against(server, parsed, tmp_path, concurrency=5,
                                        policy=RetryPolicy(max_retries=50, base_delay=0.05, max_delay=0.2))
    assert len(out) == 20 and all(r["response"]["status_code"] == 200 for r in out.values())
    assert server.rejected > 0 and summary.retries == server.rejected
    assert summary.succeeded == 20 and summary.failed == 0


async def test_missing_model_is_taken_from_the_server(fake_server, tmp_path):
    line = batch_line("a")
    del line["body"]["model"]
    await run_against(fake_server, requests(line), tmp_path)
    assert fake_server.received[0]["body"]["model"] == MODEL


async def test_an_unreadable_local_file_fails_without_a_request(fake_server, tmp_path):
    line = batch_line("a")
    line["body"]["messages"][0]["content"] = [{"type": "image_url", "image_url": {"url": "nope.png"}}]
    summary, out, _ = await run_against(fake_server, requests(line), tmp_path, media_root=tmp_path)
    assert out["a"]["error"]["code"] == "local_media_error"
    assert fake_server.received == [] and summary.failed == 1
