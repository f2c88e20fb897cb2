import pytest
from batch_support import FakeServer


@pytest.fixture
def fake_server():
    with FakeServer() as server:
        yield server


@pytest.fixture
def make_fake_server():
    servers = []

    def make(**options) -> FakeServer:
        server = FakeServer(**options).__enter__()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.__exit__(None, None, None)
