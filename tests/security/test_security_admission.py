"""Admission before the body: 401 and 429 come from the headers alone, and the slot
is held exactly as long as the response (a stream included) or the client."""

import asyncio
import time

import httpx
import pytest
from fastapi.testclient import TestClient

import server.auth
from security_support import CHAT, ThreadedServer, raw_exchange
from server.app import create_app
from server.auth import ApiKeys
from server.settings import Settings
from server_support import FAKE_MODEL, FakeEngine

KEY = "the-one-key"
HUGE = 64 * 1024 * 1024
BODY = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _app(engine=None, **settings):
    settings.setdefault("api_keys", [KEY])
    return create_app(Settings(model="/models/fake", **settings), engine=engine or FakeEngine())


def _scope(path=CHAT, method="POST", headers=()):
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _call_without_body(app, scope):
    """Run one request whose body never arrives; return (status, headers, body, receive calls)."""
    reads = 0

    async def receive():
        nonlocal reads
        reads += 1
        await asyncio.sleep(3600)  # the body never comes

    sent = []

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body, reads


@pytest.mark.parametrize(
    "auth_headers",
    [[], [(b"authorization", b"Bearer wrong")], [(b"authorization", KEY.encode())], [(b"x-api-key", KEY.encode())]],
)
@pytest.mark.parametrize(
    "framing", [[(b"content-length", str(HUGE).encode())], [(b"transfer-encoding", b"chunked")]], ids=["length", "chunked"]
)
async def test_keyless_requests_get_401_without_a_byte_of_body_read(auth_headers, framing):
    app = _app()
    status, headers, body, reads = await _call_without_body(app, _scope(headers=[*framing, *auth_headers]))
    assert status == 401 and reads == 0
    assert headers["www-authenticate"] == "Bearer"
    assert headers["connection"] == "close"  # the unread body leaves the connection unusable
    assert b'"code":"invalid_api_key"' in body and b'"type":"authentication_error"' in body
    assert app.state.limiter.active == 0 and app.state.engine.calls == []


async def test_full_server_answers_429_before_reading_the_body():
    app = _app(max_concurrent_requests=2)
    app.state.limiter.active = 2  # every slot busy
    scope = _scope(headers=[(b"content-length", str(HUGE).encode()), (b"authorization", f"Bearer {KEY}".encode())])
    status, headers, body, reads = await _call_without_body(app, scope)
    assert status == 429 and reads == 0
    assert int(headers["retry-after"]) >= 1 and b'"code":"too_many_requests"' in body
    assert app.state.limiter.active == 2


def test_raw_socket_headers_only_gets_401_at_once():
    """Over a real socket: the head of a 64 MiB upload, no body, and the 401 comes back."""
    app = _app()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {HUGE}\r\n\r\n"
    ).encode()
    with ThreadedServer(app) as server:
        received, seconds = raw_exchange(server.port, head, b'{"model": "')
        # With a key, the same head waits for its body: the contrast shows the 401 is not a timeout.
        keyed = head.replace(b"\r\n\r\n", f"\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode(), 1)
        waited, _ = raw_exchange(server.port, keyed, timeout_s=1.0)
    assert received.startswith(b"HTTP/1.1 401"), received[:200]
    assert b"\r\nwww-authenticate: bearer\r\n" in received.lower()
    assert seconds < 2.0
    assert waited == b""


def test_raw_socket_headers_only_gets_429_when_full():
    app = _app(max_concurrent_requests=1)
    app.state.limiter.active = 1
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {HUGE}\r\n\r\n"
    ).encode()
    with ThreadedServer(app) as server:
        received, seconds = raw_exchange(server.port, head)
    assert received.startswith(b"HTTP/1.1 429") and b"retry-after: 1" in received.lower()
    assert seconds < 2.0


def test_the_slot_is_held_for_the_whole_stream_and_released_after():
    engine = FakeEngine(reply="a b c d", delay_s=0.2)
    app = _app(engine=engine)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {KEY}"}
        with client.stream("POST", CHAT, json={**BODY, "stream": True}, headers=headers) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            next(lines)
            assert app.state.limiter.active == 1  # mid-stream
            assert [line for line in lines if line][-1] == "data: [DONE]"
        assert app.state.limiter.active == 0
        # Unknown routes stay 404 without a key; probes and docs need none.
        assert client.get("/v1/secret").status_code == 404
        assert client.get("/health").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/v1/models").status_code == 401


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_frees_its_slot(stream):
    engine = FakeEngine(reply="a b c d e f g h", delay_s=1.0)
    app = _app(engine=engine)
    with ThreadedServer(app) as server:

        async def hang_up():
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                request = client.build_request(
                    "POST", CHAT, json={**BODY, "stream": stream}, headers={"Authorization": f"Bearer {KEY}"}
                )
                task = asyncio.create_task(client.send(request, stream=True))
                await asyncio.sleep(0.6)
                held = app.state.limiter.active
                task.cancel()
                return held

        assert asyncio.run(hang_up()) == 1  # the request was in, holding its slot
        deadline = time.monotonic() + 5
        while app.state.limiter.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.limiter.active == 0


def test_keys_are_compared_as_fixed_length_digests(monkeypatch):
    compared = []
    real = server.auth.hmac.compare_digest

    def spy(a, b):
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(server.auth.hmac, "compare_digest", spy)
    keys = ApiKeys(["short", "a-much-longer-key-" * 8])
    for presented in ("", "s", "short", "x" * 1000, "a-much-longer-key-" * 8):
        keys.accepts(presented)
    assert compared and set(compared) == {(32, 32)}  # no length of any key or attempt shows
    assert keys.accepts("short") and not keys.accepts("shor") and not keys.accepts("shortx")
    assert "short" not in repr(vars(keys))  # only digests are kept
    assert keys.authorizes("Bearer short") and keys.authorizes("bearer  short ")
    assert not any(keys.authorizes(h) for h in (None, "", "Bearer", "Bearer ", "Basic short", "short", "Bearer\tshort"))
