"""internvl-batch against the shared live internvl-serve (tiny InternVL2-1B on the CPU,
at most 3 concurrent requests, so a client at concurrency 8 meets real 429s)."""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from batch_support import make_mp4, make_png, read_output, write_jsonl

from tests.live_server import API_KEY, MAX_CONCURRENT

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def batch_command(live_server, *args) -> list[str]:
    return [sys.executable, "-m", "batch", *map(str, args), "--base-url", f"{live_server.base_url}/v1",
            "--api-key", API_KEY, "--concurrency", "8", "--max-retries", "30", "--retry-max-delay", "4",
            "--no-progress"]


def run_batch(live_server, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(batch_command(live_server, *args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)


def chat(custom_id, model, content, **options):
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 2, "temperature": 0}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": {**body, **options}}


def image(url, **extra):
    return {"type": "image_url", "image_url": {"url": url, "max_tiles": 1, **extra}}


@pytest.fixture(scope="module")
def media(live_server, tmp_path_factory):
    """Local images and a video beside the input, and copies the loopback file server serves."""
    folder = tmp_path_factory.mktemp("batch-media")
    for index in range(4):
        make_png(folder / f"img{index}.png", seed=index)
        shutil.copy(folder / f"img{index}.png", live_server.media_dir / f"batch-img{index}.png")
    make_mp4(folder / "clip.mp4")
    return folder


def test_50_mixed_requests_at_concurrency_8_all_succeed_through_429s(live_server, loopback_http, media):
    model = live_server.model
    data_url = "data:image/png;base64," + base64.b64encode((media / "img3.png").read_bytes()).decode()
    lines = []
    for i in range(50):
        kind = i % 5
        if kind == 0:
            lines.append(chat(f"text-{i}", model, f"Say {i}."))
        elif kind == 1:  # a local path, relative to the input file
            lines.append(chat(f"local-{i}", model, [image(f"img{i % 3}.png"), {"type": "text", "text": "What?"}]))
        elif kind == 2:  # a remote URL passes through; the server fetches it from loopback
            lines.append(chat(f"remote-{i}", model, [image(f"{loopback_http}/batch-img{i % 4}.png"),
                                                    {"type": "text", "text": "Describe."}]))
        elif kind == 3:
            lines.append(chat(f"video-{i}", model, [{"type": "video_url", "video_url": {"url": "clip.mp4", "num_frames": 2}},
                                                   {"type": "text", "text": "What happens?"}]))
        else:
            lines.append(chat(f"data-{i}", model, [image(data_url), {"type": "text", "text": "Colour?"}]))
    source, out, summary_path = media / "mixed.jsonl", media / "mixed.out.jsonl", media / "mixed.summary.json"
    write_jsonl(source, lines)
    result = run_batch(live_server, source, "-o", out, "--summary-json", summary_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_output(out)
    assert Counter(r["custom_id"] for r in records) == Counter(line["custom_id"] for line in lines)
    for record in records:
        assert record["error"] is None and record["response"]["status_code"] == 200, record
        body = record["response"]["body"]
        assert body["object"] == "chat.completion" and 1 <= body["usage"]["completion_tokens"] <= 2
        if not record["custom_id"].startswith("text-"):
            assert body["usage"]["prompt_tokens"] > 256  # the image or frames did reach the model
    summary = json.loads(summary_path.read_text())
    assert (summary["succeeded"], summary["failed"]) == (50, 0)
    # 8 in flight against a limit of MAX_CONCURRENT: the server refused some, retries recovered them.
    assert MAX_CONCURRENT < 8 and summary["retries"] > 0 and summary["retried_requests"] > 0
    assert summary["completion_tokens"] >= 50 and summary["latency_s"]["p50"] > 0
    assert "retries" in result.stderr and "latency p50" in result.stderr
    assert live_server.alive()


def test_sigkill_mid_run_then_resume_writes_each_id_exactly_once(live_server, media):
    ids = [f"kill-{i:02d}" for i in range(24)]
    source, out = media / "kill.jsonl", media / "kill.out.jsonl"
    write_jsonl(source, [chat(custom_id, live_server.model, f"Count to {i}.") for i, custom_id in enumerate(ids)])
    process = subprocess.Popen(batch_command(live_server, source, "-o", out), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 6:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = {r["custom_id"] for r in read_output(out)}
    assert 6 <= len(before) < len(ids)
    result = run_batch(live_server, source, "-o", out, "--summary-json", media / "kill.summary.json")
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_output(out)
    assert Counter(r["custom_id"] for r in records) == Counter(ids)
    assert all(r["response"]["status_code"] == 200 for r in records)
    summary = json.loads((media / "kill.summary.json").read_text())
    assert summary["skipped"] == len(before) and summary["succeeded"] == len(ids) - len(before)


def test_malformed_lines_are_reported_and_the_rest_processed(live_server, media):
    model = live_server.model
    source, out = media / "bad.jsonl", media / "bad.out.jsonl"
    write_jsonl(source, [
        chat("ok-1", model, "Hello."),
        "{this is not json",
        {"custom_id": "no-body", "method": "POST", "url": "/v1/chat/completions"},
        chat("ok-2", model, [image("img0.png"), {"type": "text", "text": "Hi."}]),
        {"method": "POST", "url": "/v1/chat/completions", "body": {}},
        chat("ok-3", model, "Bye."),
        chat("missing-file", model, [image("nowhere.png")]),
    ])
    result = run_batch(live_server, source, "-o", out)
    assert result.returncode == 1
    assert "input line 2: not valid JSON" in result.stderr
    assert "input line 3 (custom_id 'no-body')" in result.stderr
    assert "input line 5: `custom_id` must be a non-empty string" in result.stderr
    records = {r["custom_id"]: r for r in read_output(out)}
    assert sorted(records) == ["missing-file", "no-body", "ok-1", "ok-2", "ok-3"]
    assert all(records[f"ok-{i}"]["response"]["status_code"] == 200 for i in (1, 2, 3))
    assert records["no-body"]["error"]["code"] == "invalid_request"
    assert records["missing-file"]["error"]["code"] == "local_media_error"


def test_simple_mode_over_a_folder(live_server, media, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("img0.png", "img1.png", "clip.mp4"):
        shutil.copy(media / name, folder / name)
    out = tmp_path / "simple.out.jsonl"
    result = run_batch(live_server, "--images", folder, "--prompt", "Describe this.", "-o", out,
                       "--max-tokens", 2, "--max-tiles", 1, "--num-frames", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    records = {r["custom_id"]: r for r in read_output(out)}
    assert sorted(records) == sorted(f"{folder.as_posix()}/{n}" for n in ("clip.mp4", "img0.png", "img1.png"))
    for record in records.values():
        body = record["response"]["body"]
        assert record["response"]["status_code"] == 200 and body["model"] == live_server.model
        assert body["usage"]["prompt_tokens"] > 256
