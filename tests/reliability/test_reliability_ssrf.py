"""SSRF end to end: a server that does not allow-list loopback must refuse every
spelling of a loopback URL, and a redirect to one, without connecting.

The app runs in-process (fake engine, real media fetcher and resolver); the
"forbidden" targets are listeners on loopback that count connections. A socket
guard records every connect of this process and refuses any outside loopback,
so even a broken policy cannot reach another host."""

import http.server
import socket
import threading
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from reliability_support import CHAT, LoopbackOnly, png_bytes
from server.app import create_app
from server.settings import Settings
from server_support import FAKE_MODEL, FakeEngine

ALLOWED_HOST = "127.0.0.2"  # the one loopback address the redirect test allow-lists


class CountingListener:
    """Accepts TCP connections on (host, port), counts them, closes them at once."""

    def __init__(self, family: int, host: str, port: int = 0) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def forbidden():
    """Listeners on 127.0.0.1 and (if available) ::1, on one port number."""
    for _ in range(20):
        v4 = CountingListener(socket.AF_INET, "127.0.0.1")
        v6 = None
        if socket.has_ipv6:
            try:
                v6 = CountingListener(socket.AF_INET6, "::1", v4.port)
            except OSError:
                v4.close()
                continue
        break
    yield v4, v6
    v4.close()
    if v6 is not None:
        v6.close()


@contextmanager
def redirecting_server(location: str):
    """An HTTP server on the allow-listed 127.0.0.2 that redirects /go to `location`
    and serves a small PNG at /ok.png."""
    hits = []
    image = png_bytes(32, 32)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path == "/ok.png":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(image)))
                self.end_headers()
                self.wfile.write(image)
                return
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((ALLOWED_HOST, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{ALLOWED_HOST}:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def guard(monkeypatch):
    return LoopbackOnly(monkeypatch)


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    media_dir = tmp_path_factory.mktemp("ssrf-media")
    (media_dir / "ok.png").write_bytes(png_bytes(16, 16))
    secret = media_dir.parent / "secret.png"
    secret.write_bytes(png_bytes(16, 16))
    settings = Settings(
        model="/models/fake",
        media_allowed_networks=[f"{ALLOWED_HOST}/32"],  # NOT loopback as a whole
        media_local_dir=media_dir,
        media_connect_timeout=2,
        media_read_timeout=2,
    )
    with TestClient(create_app(settings, engine=FakeEngine()), raise_server_exceptions=False) as client:
        yield client, media_dir


def ask(client, url: str):
    payload = {
        "model": FAKE_MODEL,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]}],
    }
    return client.post(CHAT, json=payload)


def assert_refused(response, code: str = "url_not_allowed") -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == "messages.0.content.0.image_url.url", error


LOOPBACK_HOSTS = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    "0.0.0.0",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "[::ffff:127.0.0.1]",
    # More of the same address.
    "127.0.0.1.",
    "127.000.000.001",
    "0x7f.0.0.1",
    "017700000001",
    "0",
    "[::]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "LOCALHOST",
    "127.0.0.3",  # loopback, but not the allow-listed 127.0.0.2
]


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_spellings_are_refused_without_connecting(app_client, forbidden, guard, host):
    client, _ = app_client
    v4, v6 = forbidden
    before = (v4.connections, v6.connections if v6 else 0)
    assert_refused(ask(client, f"http://{host}:{v4.port}/secret.png"))
    assert (v4.connections, v6.connections if v6 else 0) == before
    assert not [attempt for attempt in guard.attempts if attempt[1] == v4.port], guard.attempts


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pass@127.0.0.1:{port}/x.png",
        "http://example.com@127.0.0.1:{port}/x.png",
        "https://127.0.0.1:{port}/x.png",
        "http://127.0.0.1:{port}#@example.com/x.png",
        "http://10.0.0.1:{port}/x.png",
        "http://172.16.0.1:{port}/x.png",
        "http://192.168.0.1:{port}/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]:{port}/x.png",
        "http://[fc00::1]:{port}/x.png",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://224.0.0.1:{port}/x.png",
        "http://240.0.0.1:{port}/x.png",
        "http://255.255.255.255:{port}/x.png",
        "http://100.64.0.1:{port}/x.png",
        "http://[::ffff:10.0.0.1]:{port}/x.png",
        "http://[::ffff:169.254.169.254]/x.png",
        "http://[2002:7f00:1::]:{port}/x.png",
    ],
)
def test_other_non_public_urls_are_refused(app_client, forbidden, guard, url):
    client, _ = app_client
    v4, _ = forbidden
    before = v4.connections
    assert_refused(ask(client, url.format(port=v4.port)))
    assert v4.connections == before
    assert guard.attempts == [], guard.attempts  # refused before any connect


def test_allow_listed_host_is_fetched(app_client, guard):
    """The control: the allow-listed loopback host really is reachable, so the
    refusals above are the policy's doing."""
    client, _ = app_client
    with redirecting_server("/ok.png") as (base, hits):
        assert ask(client, f"{base}/ok.png").status_code == 200
        assert ask(client, f"{base}/go").status_code == 200  # a redirect within the allow-list
    assert hits == ["/ok.png", "/go", "/ok.png"]


@pytest.mark.parametrize("target", ["127.0.0.1", "localhost", "2130706433", "[::1]", "[::ffff:127.0.0.1]", "0x7f.1"])
def test_redirect_to_a_forbidden_port_is_refused(app_client, forbidden, guard, target):
    client, _ = app_client
    v4, v6 = forbidden
    before = (v4.connections, v6.connections if v6 else 0)
    with redirecting_server(f"http://{target}:{v4.port}/secret.png") as (base, hits):
        assert_refused(ask(client, f"{base}/go"))
    assert hits == ["/go"]  # the allow-listed server was asked, the redirect was not followed
    assert (v4.connections, v6.connections if v6 else 0) == before
    assert not [attempt for attempt in guard.attempts if attempt[1] == v4.port], guard.attempts


def test_redirect_to_the_metadata_address_is_refused(app_client, guard):
    client, _ = app_client
    with redirecting_server("http://169.254.169.254/latest/meta-data/iam/") as (base, hits):
        assert_refused(ask(client, f"{base}/go"))
    assert all(host == ALLOWED_HOST for host, _ in guard.attempts), guard.attempts


@pytest.mark.parametrize(
    "path",
    [
        "file:///etc/passwd",
        "file://{dir}/../secret.png",
        "file://{dir}/%2e%2e/secret.png",
        "file://{dir}/sub/../../secret.png",
        "file://localhost/etc/hostname",
        "file:{dir}/../secret.png",
    ],
)
def test_file_urls_outside_the_media_dir_are_refused(app_client, path):
    client, media_dir = app_client
    assert_refused(ask(client, path.format(dir=media_dir)), code="file_not_allowed")


def test_file_url_inside_the_media_dir_is_served(app_client):
    client, media_dir = app_client
    assert ask(client, f"file://{media_dir}/ok.png").status_code == 200
