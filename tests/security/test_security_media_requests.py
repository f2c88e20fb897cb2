"""Hostile media through the whole server (fake engine, real sockets on 127.0.0.1):
each ends in a prompt 4xx OpenAI error, and the server serves everyone else meanwhile."""

import asyncio
import time

import httpx
import numpy as np
import pytest

from security_support import CHAT, MediaHost, ThreadedServer, encoded, growing_mjpeg, jpeg, png, reply, tiny_frames_mjpeg
from server.app import create_app
from server.settings import Settings
from server_support import FAKE_MODEL, FakeEngine

BOMB = encoded(b"\0" * (64 * 1024 * 1024), ["gzip"])


class HostileSettings(Settings):
    """Tight limits, so hostile hosts trip them within the test's time."""

    media_fetch_timeout: float = 2.0
    media_request_timeout: float = 4.0
    video_decode_timeout: float = 2.0
    max_video_total_frames: int = 1000
    max_video_duration: float = 3600.0
    max_media_bytes_per_request: int = 8 * 1024 * 1024
    media_fetches_per_request: int = 4
    media_fetches_per_host: int = 8


def _trickle(handler):
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(100000):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(0.1)


@pytest.fixture
def media_host():
    host = MediaHost(
        {
            "/bomb.png": reply(BOMB, headers={"Content-Encoding": "gzip"}),
            "/slow.png": _trickle,
            "/growing.mjpeg": reply(growing_mjpeg(small=5, large=3, large_side=3000)),
            "/tiny-frames.mjpeg": reply(tiny_frames_mjpeg(3000)),
            "/frame.jpg": reply(jpeg(1280, 720)),
            "/ok.png": reply(png(64, 48)),
        }
    )
    yield host
    host.close()


def _server(**settings):
    engine = FakeEngine()
    settings.setdefault("max_image_pixels", 4_000_000)
    app = create_app(HostileSettings(model="/models/fake", media_allowed_networks=["127.0.0.0/8"], **settings), engine=engine)
    return app, engine


def _image(url):
    return {"model": FAKE_MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": url}}]}]}


def _video(url, **extra):
    return {"model": FAKE_MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what happens?"}, {"type": "video_url", "video_url": {"url": url, **extra}}]}]}


def _frames(urls):
    return {"model": FAKE_MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what happens?"}, {"type": "video_frames", "video_frames": {"urls": urls}}]}]}


HOSTILE = [
    ("gzip bomb", lambda h: _image(h.url("/bomb.png")), 400, "unsupported_content_encoding"),
    ("trickling server", lambda h: _image(h.url("/slow.png")), 400, "media_fetch_timeout"),
    ("frames grow after the header", lambda h: _video(h.url("/growing.mjpeg")), 400, "image_too_large"),
    ("thousands of tiny frames", lambda h: _video(h.url("/tiny-frames.mjpeg")), 400, "video_too_long"),
]


def test_hostile_media_get_prompt_4xx_while_others_are_served(media_host):
    app, engine = _server()

    async def scenario(base_url):
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            async def timed(body):
                started = time.monotonic()
                response = await client.post(CHAT, json=body)
                return response, time.monotonic() - started

            hostile = [asyncio.create_task(timed(make(media_host))) for _, make, _, _ in HOSTILE]
            await asyncio.sleep(0.3)
            # Meanwhile: probes and ordinary requests are answered at once.
            meanwhile = []
            for _ in range(3):
                started = time.monotonic()
                health = await client.get("/health")
                ok = await client.post(CHAT, json=_image(media_host.url("/ok.png")))
                meanwhile.append((health.status_code, ok.status_code, time.monotonic() - started))
            return await asyncio.gather(*hostile), meanwhile

    with ThreadedServer(app) as server:
        hostile, meanwhile = asyncio.run(scenario(server.base_url))
    for health, ok, seconds in meanwhile:
        assert health == 200 and ok == 200 and seconds < 1.5
    for (name, _, status, code), (response, seconds) in zip(HOSTILE, hostile):
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == code and error["type"] == "invalid_request_error", (name, error)
        assert seconds < 4.0, (name, seconds)
    assert app.state.limiter.active == 0
    assert len(engine.calls) == 3  # only the ordinary requests reached the engine


def test_video_frames_reach_the_engine_at_tile_size(media_host):
    app, engine = _server()
    with ThreadedServer(app) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert client.post(CHAT, json=_frames([media_host.url("/frame.jpg")] * 4)).status_code == 200
            assert client.post(CHAT, json=_video(media_host.url("/growing.mjpeg"), num_frames=4)).status_code == 400
    (call,) = engine.calls
    (video,) = call["prompt"]["multi_modal_data"]["video"]
    # 4 x 448 x 448 x 3 bytes, not 4 full 1280x720 frames.
    assert video.shape == (4, 448, 448, 3) and video.dtype == np.uint8


def test_a_request_whose_client_leaves_stops_fetching_and_frees_its_slot(media_host):
    app, _ = _server(media_fetch_timeout=30.0, media_request_timeout=60.0)
    with ThreadedServer(app) as server:

        async def leave():
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                task = asyncio.create_task(client.post(CHAT, json=_image(media_host.url("/slow.png"))))
                await asyncio.sleep(0.8)
                held = app.state.limiter.active, media_host.open_now
                task.cancel()
                return held

        assert asyncio.run(leave()) == (1, 1)  # in flight, fetching
        left = time.monotonic()
        while (app.state.limiter.active or media_host.open_now) and time.monotonic() - left < 5:
            time.sleep(0.05)
        assert app.state.limiter.active == 0 and media_host.open_now == 0
        assert time.monotonic() - left < 2.0  # not the 30 s fetch deadline


def test_a_request_over_its_media_deadline_is_refused(media_host):
    app, _ = _server(media_fetch_timeout=30.0, media_request_timeout=1.0)
    with ThreadedServer(app) as server, httpx.Client(base_url=server.base_url, timeout=30) as client:
        started = time.monotonic()
        response = client.post(CHAT, json=_image(media_host.url("/slow.png")))
    assert response.status_code == 400 and response.json()["error"]["code"] == "media_timeout"
    assert time.monotonic() - started < 2.5
