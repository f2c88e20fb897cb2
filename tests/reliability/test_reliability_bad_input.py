"""Malformed requests: each gets a 4xx with OpenAI's error JSON naming the
problem, never a 5xx, and the server keeps serving correctly afterwards.

The catalogue runs twice: in-process against a fake engine (fast, every run),
and against the real live server (slow; one engine for the whole suite)."""

import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from reliability_support import CASES, Context, check_error, send
from server.app import create_app
from server.settings import Settings
from server_support import FAKE_MODEL, FakeEngine, data_url, image_part, make_image, text_part
from tests.live_server import API_KEY, MAX_CONCURRENT, MAX_REQUEST_BYTES


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on exit: nothing listens there


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 50
    ids = {case.id for case in CASES}
    for required in (
        "invalid-json", "content-is-a-number", "unknown-content-part-type", "empty-messages", "garbage-base64",
        "truncated-jpeg", "truncated-png", "zero-byte-image", "image-1x100000", "decompression-bomb-64mpx",
        "pdf-as-image", "video-not-a-video", "zero-frame-video", "num-frames-0", "num-frames-10-6", "max-tiles-0",
        "max-tiles-41", "max-tiles-minus-1", "prompt-longer-than-context", "too-many-images", "oversized-body",
        "invalid-utf8", "n-0", "max-tokens-negative", "unknown-model",
    ):
        assert required in ids, required


# --- in-process, fake engine ----------------------------------------------------


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory, loopback_media):
    media_dir, base_url = loopback_media
    settings = Settings(
        model="/models/fake",
        api_keys=[API_KEY],
        max_concurrent_requests=MAX_CONCURRENT,
        max_request_bytes=MAX_REQUEST_BYTES,
        media_allowed_networks=["127.0.0.0/8"],
        media_local_dir=media_dir,
        max_frames_per_video=8,
        default_num_frames=4,
    )
    engine = FakeEngine()
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        yield client, Context(FAKE_MODEL, media_dir, base_url, closed_port())


@pytest.fixture(scope="module")
def loopback_media(tmp_path_factory):
    import functools
    import http.server
    import threading

    media_dir = tmp_path_factory.mktemp("fake-media")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(media_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda *args: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield media_dir, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("case", [case for case in CASES if not case.engine], ids=lambda case: case.id)
def test_bad_input_in_process(fake_server, case):
    client, ctx = fake_server
    check_error(send(client, case, ctx), case)


def test_in_process_server_serves_after_the_bad_inputs(fake_server):
    client, ctx = fake_server
    image = data_url(make_image(300, 200))
    response = client.post(
        "/v1/chat/completions",
        json={"model": ctx.model, "messages": [{"role": "user", "content": [image_part(image), text_part("hi")]}]},
    )
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "hello world"
    assert client.app.state.limiter.active == 0
    assert '{status="500"}' not in client.get("/metrics").text


# --- the real server -------------------------------------------------------------


@pytest.fixture(scope="module")
def live(live_server, loopback_http):
    with httpx.Client(base_url=live_server.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as client:
        yield client, Context(live_server.model, live_server.media_dir, loopback_http, closed_port())


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_live(live, case):
    client, ctx = live
    check_error(send(client, case, ctx), case)


@pytest.mark.slow
def test_live_server_healthy_and_correct_after_the_bad_inputs(live, live_server):
    client, ctx = live
    assert client.get("/health").status_code == 200
    image = data_url(make_image(640, 480, seed=3))
    completion = live_server.client().chat.completions.create(
        model=live_server.model,
        messages=[{"role": "user", "content": [image_part(image), text_part("Describe.")]}],
        max_tokens=3,
        temperature=0,
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 256 and 1 <= completion.usage.completion_tokens <= 3
    metrics = client.get("/metrics").text
    assert not [line for line in metrics.splitlines() if line.startswith('internvl_requests_total{status="5')], metrics
