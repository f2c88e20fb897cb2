import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from server_support import FakeEngine


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def make_client(fake_engine):
    """A TestClient (an httpx.Client, so the openai SDK accepts it) over an app with a fake engine."""
    clients = []

    def build(engine=None, **settings) -> TestClient:
        settings.setdefault("model", "/models/fake")
        app = create_app(Settings(**settings), engine=engine or fake_engine)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()
