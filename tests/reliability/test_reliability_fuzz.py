"""Schemathesis against the app's own OpenAPI schema: valid and invalid
requests generated from it, a bounded run, no 5xx and no crash.

The app runs in-process with the fake engine, so hundreds of requests cost
seconds. Media URLs the generator invents can only be data:, file:// (disabled
here) or http(s) judged by the real SSRF policy, and a socket guard keeps every
connection on loopback regardless."""

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from reliability_support import LoopbackOnly
from server.app import create_app
from server.settings import Settings
from server_support import FakeEngine

MAX_EXAMPLES = 40

app = create_app(Settings(model="/models/fake", max_request_bytes=1024 * 1024), engine=FakeEngine())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    deterministic=True,
    database="none",
)


@pytest.fixture(scope="module", autouse=True)
def started_app():
    # Runs the lifespan once (thread pool, media fetcher); schemathesis's own
    # client then calls the started app.
    with TestClient(app):
        yield


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    return LoopbackOnly(monkeypatch)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, case.body, response.status_code, response.text[:500])
    if response.status_code >= 400 and case.path != "/metrics":
        error = response.json()["error"]
        assert error["message"] and error["type"], error


def test_fuzzed_app_still_serves():
    client = TestClient(app)  # the module's lifespan is still running
    response = client.post("/v1/chat/completions", json={"model": "fake-internvl", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert app.state.limiter.active == 0
    assert '{status="500"}' not in client.get("/metrics").text
