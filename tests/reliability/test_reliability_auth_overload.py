"""Auth on every route, and overload answered with 429 + Retry-After at once.

Auth policy, with keys configured: every route needs `Authorization: Bearer
<key>` except /health (probes), the API description (/docs, /redoc,
/openapi.json: static, no data) and the playground's static page and assets. /metrics needs the key when
--metrics-require-key is set; without it /metrics stays open for scrapers on
a private network (tests/server checks that default)."""

import asyncio
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from reliability_support import CHAT
from server.app import create_app
from server.settings import Settings
from server_support import FAKE_MODEL, FakeEngine

KEYS = ["first-key", "second-key"]
PLAYGROUND_ASSET = "/playground/playground.js"
PUBLIC = {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/", PLAYGROUND_ASSET}


def _client(**settings) -> TestClient:
    app = create_app(Settings(model="/models/fake", api_keys=KEYS, **settings), engine=FakeEngine())
    return TestClient(app, raise_server_exceptions=False)


def _requests(app):
    """(method, concrete path, json body) for every route of the app."""
    body = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    bodies = {"/detokenize": {"model": FAKE_MODEL, "tokens": [104, 105]}}
    queries = {"/v1/internvl/tiling": "?width=800&height=600"}
    for route in app.routes:
        path = route.path.replace("{model_id:path}", FAKE_MODEL).replace("/playground/{name}", PLAYGROUND_ASSET)
        methods = route.methods if isinstance(route, APIRoute) else getattr(route, "methods", {"GET"})
        for method in sorted(methods - {"HEAD"}):
            yield method, path + queries.get(path, ""), bodies.get(path, body) if method == "POST" else None


BAD_HEADERS = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer"},
    {"Authorization": f"Basic {KEYS[0]}"},
    {"Authorization": KEYS[0]},
    {"Authorization": f"Bearer {KEYS[0].upper()}"},
    {"Authorization": f"Bearer {KEYS[0]}x"},
    {"Authorization": f"Bearer {KEYS[0][:-1]}"},
    {"X-API-Key": KEYS[0]},
]


@pytest.mark.parametrize("metrics_require_key", [True, False])
def test_every_route_but_health_and_docs_needs_a_key(metrics_require_key):
    with _client(metrics_require_key=metrics_require_key) as client:
        routes = list(_requests(client.app))
        assert {path for _, path, _ in routes} >= {CHAT, "/v1/models", f"/v1/models/{FAKE_MODEL}", "/metrics", "/health"}
        for method, path, body in routes:
            public = path in PUBLIC or (path == "/metrics" and not metrics_require_key)
            for headers in BAD_HEADERS:
                response = client.request(method, path, json=body, headers=headers)
                if public:
                    assert response.status_code == 200, (method, path, headers, response.status_code)
                    continue
                assert response.status_code == 401, (method, path, headers, response.status_code)
                error = response.json()["error"]
                assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key", error
                assert response.headers["www-authenticate"] == "Bearer"
            for key in KEYS:
                response = client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
                assert response.status_code == 200, (method, path, response.status_code, response.text[:300])


def test_unknown_routes_are_404_json_with_or_without_a_key():
    with _client() as client:
        for headers in ({}, {"Authorization": f"Bearer {KEYS[0]}"}):
            response = client.get("/v1/secret", headers=headers)
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_keyless_requests_never_reach_the_engine():
    with _client() as client:
        engine = client.app.state.engine
        # Admission checks the key before the body is read: even malformed JSON gets
        # the 401, so a keyless client learns nothing about what the server parses.
        response = client.post(CHAT, content=b"{not json", headers={"content-type": "application/json"})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        response = client.post(CHAT, json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 401  # not 404: the model list is not revealed
        response = client.post(CHAT, json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 401
        assert engine.calls == []


# --- overload -----------------------------------------------------------------------


class ThreadedServer:
    """The app under uvicorn on a loopback port, in a thread: real HTTP, real sockets."""

    def __init__(self, app) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.mark.parametrize("stream", [False, True])
def test_more_requests_than_the_limit_get_429_with_retry_after_at_once(stream):
    limit, total, slow_s = 3, 10, 2.0
    engine = FakeEngine(delay_s=slow_s if not stream else slow_s / 2, reply="one two")
    app = create_app(Settings(model="/models/fake", max_concurrent_requests=limit), engine=engine)
    body = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}

    async def one(client):
        started = time.monotonic()
        response = await client.post(CHAT, json=body)
        await response.aread()
        return response, time.monotonic() - started

    async def burst(base_url):
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            first = [asyncio.create_task(one(client)) for _ in range(limit)]
            await asyncio.sleep(0.5)  # the first `limit` are in the engine now
            rest = await asyncio.gather(*(one(client) for _ in range(total - limit)))
            return await asyncio.gather(*first), rest

    with ThreadedServer(app) as base_url:
        admitted, refused = asyncio.run(burst(base_url))
        for response, _ in admitted:
            assert response.status_code == 200
            if stream:
                assert response.text.rstrip().endswith("data: [DONE]")
        for response, seconds in refused:
            assert response.status_code == 429, response.text
            assert int(response.headers["retry-after"]) >= 1
            error = response.json()["error"]
            assert error["type"] == "rate_limit_error" and error["code"] == "too_many_requests"
            assert seconds < 1.0, seconds  # refused at once, not queued until a timeout
        # The slots come back: a request afterwards is served.
        response = httpx.post(f"{base_url}{CHAT}", json={**body, "stream": False}, timeout=30)
        assert response.status_code == 200
        assert app.state.limiter.active == 0
