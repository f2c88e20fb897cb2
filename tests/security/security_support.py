"""Loopback servers for the security tests: the app under uvicorn, and hostile media hosts."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

CHAT = "/v1/chat/completions"


class ThreadedServer:
    """An ASGI app under uvicorn on 127.0.0.1 in a thread: real sockets, real HTTP parsing."""

    def __init__(self, app) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def raw_exchange(port: int, head: bytes, body_prefix: bytes = b"", *, timeout_s: float = 5.0) -> tuple[bytes, float]:
    """Send a request head (and maybe part of a body), never the rest; return what came back and when."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        started = time.monotonic()
        sock.sendall(head + body_prefix)
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                if b"\r\n\r\n" in received and _complete(received):
                    break
        except TimeoutError:
            pass
        return received, time.monotonic() - started


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


# --- a hostile media host on loopback ----------------------------------------------

import gzip  # noqa: E402
import io  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

from PIL import Image  # noqa: E402


class MediaHost:
    """HTTP on 127.0.0.1 whose routes are plain functions of the handler.

    Records every request's headers and counts connections open at once per path.
    """

    def __init__(self, routes: dict[str, Callable[[BaseHTTPRequestHandler], None]]) -> None:
        self.requests: list[dict[str, str]] = []
        self.open_now = 0
        self.most_open = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with lock:
                    outer.requests.append(
                        {k.lower(): v for k, v in self.headers.items()} | {"path": self.path, "client_port": self.client_address[1]}
                    )
                    outer.open_now += 1
                    outer.most_open = max(outer.most_open, outer.open_now)
                try:
                    routes[self.path.split("?")[0]](self)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with lock:
                        outer.open_now -= 1

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(body: bytes, *, headers: dict[str, str] | None = None, status: int = 200):
    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return handle


def encoded(data: bytes, encodings: list[str]) -> bytes:
    """`data` with each content coding applied in order (as Content-Encoding lists them)."""
    for encoding in encodings:
        if encoding in ("gzip", "x-gzip"):
            data = gzip.compress(data, 9)
        elif encoding == "deflate":
            data = zlib.compress(data, 9)
        else:
            raise ValueError(encoding)
    return data


def png(width: int, height: int, color=(200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(width: int, height: int, color=(200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG", quality=60)
    return buffer.getvalue()


def growing_mjpeg(small: int = 5, large: int = 3, large_side: int = 2000) -> bytes:
    """A raw MJPEG stream: the header (first frame) says 64x64, later frames are far larger."""
    return b"".join(jpeg(64, 64, (i * 40, 0, 0)) for i in range(small)) + b"".join(
        jpeg(large_side, large_side, (0, i * 40, 0)) for i in range(large)
    )


def tiny_frames_mjpeg(count: int) -> bytes:
    frame = jpeg(16, 16)
    return frame * count
