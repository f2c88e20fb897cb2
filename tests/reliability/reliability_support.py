"""Shared pieces of the reliability tests: hostile media, the catalogue of bad
requests, and a guard that keeps every test connection on loopback."""

from __future__ import annotations

import base64
import functools
import io
import ipaddress
import socket
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from server_support import image_bytes, make_image
from server_support import make_mp4 as make_mp4_of

CHAT = "/v1/chat/completions"


# --- media --------------------------------------------------------------------


def b64_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    return image_bytes(make_image(width, height, seed), "PNG")


def jpeg_bytes(width: int, height: int, seed: int = 0) -> bytes:
    return image_bytes(make_image(width, height, seed), "JPEG")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims width x height (1-bit grey), with a tiny
    IDAT: what a decompression bomb looks like before its pixels are inflated."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def real_png_bomb(side: int = 8000) -> bytes:
    """A real bomb: side x side grey zeros, 64 M pixels, a few tens of KB compressed."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 0).save(buffer, "PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


def strip_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def minimal_pdf() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )


def svg_bytes() -> bytes:
    return b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'


# A small clip keeps the catalogue's bodies (and the truncated-video case) small.
make_mp4 = functools.partial(make_mp4_of, frames=8, width=64, height=48)


def zero_frame_video() -> bytes:
    """An AVI whose video stream holds no frames at all (header and index only)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
        for packet in stream.encode():
            container.mux(packet)
    data = buffer.getvalue()
    assert data, "PyAV wrote nothing"
    return data


# --- the catalogue of bad requests ----------------------------------------------


@dataclass
class Context:
    """What a case may need to build its request."""

    model: str
    media_dir: Path
    media_base_url: str  # a loopback static server over media_dir
    closed_port: int  # a loopback port with nothing listening


@dataclass
class BadRequestCase:
    id: str
    build: Callable[[Context], Any]  # -> JSON payload, or bytes sent raw
    status: int  # exactly one right answer per case
    code: str | None = None
    method: str = "POST"
    path: str = CHAT
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # send raw bytes without a Content-Length
    engine: bool = False  # only a real engine can judge it (no fake-engine run)


def _body(ctx: Context, content: Any = "hi", **fields: Any) -> dict:
    payload = {"model": ctx.model, "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    payload.update(fields)
    return payload


def _image(url: str, text: str = "what is this?", **extra: Any) -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": url, **extra}}, {"type": "text", "text": text}]


def _video(url: str, **extra: Any) -> list[dict]:
    return [{"type": "video_url", "video_url": {"url": url, **extra}}, {"type": "text", "text": "what happens?"}]


def _image_case(id: str, data: Callable[[], bytes], code: str | None, status: int = 400, mime: str = "image/png") -> BadRequestCase:
    return BadRequestCase(id, lambda ctx: _body(ctx, _image(b64_url(data(), mime))), status, code)


def _raw(data: bytes) -> Callable[[Context], bytes]:
    return lambda ctx: data.replace(b"MODEL", ctx.model.encode())


def _write_media(ctx: Context, name: str, data: bytes) -> str:
    (ctx.media_dir / name).write_bytes(data)
    return name


TINY_PNG = png_bytes(16, 16)
JSON = {"content-type": "application/json"}

CASES: list[BadRequestCase] = [
    # The body itself.
    BadRequestCase("invalid-json", _raw(b'{"model": "MODEL", "messages": [}'), 400, "invalid_json", headers=JSON),
    BadRequestCase("truncated-json", _raw(b'{"model": "MODEL", "messages": [{"role": "us'), 400, "invalid_json", headers=JSON),
    BadRequestCase("empty-body", _raw(b""), 400, "invalid_field", headers=JSON),
    BadRequestCase("json-array-body", _raw(b"[1, 2, 3]"), 400, "invalid_field", headers=JSON),
    BadRequestCase("json-string-body", _raw(b'"hello"'), 400, "invalid_field", headers=JSON),
    BadRequestCase("json-null-body", _raw(b"null"), 400, "invalid_field", headers=JSON),
    BadRequestCase(
        "invalid-utf8", _raw(b'{"model": "MODEL", "messages": [{"role": "user", "content": "\xff\xfe\xc3("}]}'), 400, "invalid_json", headers=JSON
    ),
    BadRequestCase(
        "lone-surrogate-escape",
        _raw(b'{"model": "MODEL", "max_tokens": 2, "messages": [{"role": "user", "content": "a\\ud800b"}]}'),
        400,
        "invalid_content",
        headers=JSON,
    ),
    BadRequestCase("form-encoded-body", _raw(b"model=MODEL&messages=hi"), 400, "invalid_field", headers={"content-type": "application/x-www-form-urlencoded"}),
    BadRequestCase("oversized-body", lambda ctx: _body(ctx, "x" * (4 * 1024 * 1024 + 100)), 413, "request_too_large"),
    BadRequestCase(
        "oversized-chunked-body",
        lambda ctx: b'{"model": "' + ctx.model.encode() + b'", "messages": [{"role": "user", "content": "' + b"x" * (4 * 1024 * 1024 + 100) + b'"}]}',
        413,
        "request_too_large",
        headers=JSON,
        chunked=True,
    ),
    BadRequestCase("get-on-chat", lambda ctx: None, 405, "method_not_allowed", method="GET"),
    # Fields of the wrong type or out of range.
    BadRequestCase("missing-model", lambda ctx: {"messages": [{"role": "user", "content": "hi"}]}, 400, "invalid_field"),
    BadRequestCase("model-not-a-string", lambda ctx: _body(ctx, model=42), 400, "invalid_field"),
    BadRequestCase("unknown-model", lambda ctx: _body(ctx, model="gpt-4o"), 404, "model_not_found"),
    BadRequestCase("missing-messages", lambda ctx: {"model": ctx.model}, 400, "invalid_field"),
    BadRequestCase("empty-messages", lambda ctx: _body(ctx, messages=[]), 400, "invalid_field"),
    BadRequestCase("messages-not-a-list", lambda ctx: _body(ctx, messages="hello"), 400, "invalid_field"),
    BadRequestCase("message-null", lambda ctx: _body(ctx, messages=[None]), 400, "invalid_field"),
    BadRequestCase("message-without-role", lambda ctx: _body(ctx, messages=[{"content": "hi"}]), 400, "invalid_field"),
    BadRequestCase("unknown-role", lambda ctx: _body(ctx, messages=[{"role": "wizard", "content": "hi"}]), 400, "invalid_field"),
    BadRequestCase("content-is-a-number", lambda ctx: _body(ctx, 12345), 400, "invalid_field"),
    BadRequestCase("unknown-content-part-type", lambda ctx: _body(ctx, [{"type": "audio", "audio": {"data": "AAAA"}}]), 400, "invalid_field"),
    BadRequestCase("content-part-without-type", lambda ctx: _body(ctx, [{"text": "hi"}]), 400, "invalid_field"),
    BadRequestCase("text-part-without-text", lambda ctx: _body(ctx, [{"type": "text"}]), 400, "invalid_field"),
    BadRequestCase("image-url-missing-url", lambda ctx: _body(ctx, [{"type": "image_url", "image_url": {}}]), 400, "invalid_field"),
    BadRequestCase("image-url-empty-url", lambda ctx: _body(ctx, _image("")), 400, "invalid_field"),
    BadRequestCase("image-url-not-an-object", lambda ctx: _body(ctx, [{"type": "image_url", "image_url": 7}]), 400, "invalid_field"),
    BadRequestCase("image-detail-unknown", lambda ctx: _body(ctx, _image(b64_url(TINY_PNG), detail="ultra")), 400, "invalid_field"),
    BadRequestCase("max-tiles-0", lambda ctx: _body(ctx, _image(b64_url(TINY_PNG), max_tiles=0)), 400, "invalid_field"),
    BadRequestCase("max-tiles-41", lambda ctx: _body(ctx, _image(b64_url(TINY_PNG), max_tiles=41)), 400, "invalid_field"),
    BadRequestCase("max-tiles-minus-1", lambda ctx: _body(ctx, _image(b64_url(TINY_PNG), max_tiles=-1)), 400, "invalid_field"),
    BadRequestCase("max-tiles-over-server-limit", lambda ctx: _body(ctx, _image(b64_url(TINY_PNG), max_tiles=13)), 400, "too_many_tiles"),
    BadRequestCase("request-max-tiles-41", lambda ctx: _body(ctx, _image(b64_url(TINY_PNG)), max_tiles=41), 400, "invalid_field"),
    BadRequestCase("history-max-tiles-0", lambda ctx: _body(ctx, history_max_tiles=0), 400, "invalid_field"),
    BadRequestCase("n-0", lambda ctx: _body(ctx, n=0), 400, "invalid_field"),
    BadRequestCase("n-over-server-limit", lambda ctx: _body(ctx, n=9), 400, "invalid_n"),
    BadRequestCase("n-129", lambda ctx: _body(ctx, n=129), 400, "invalid_field"),
    BadRequestCase("max-tokens-negative", lambda ctx: _body(ctx, max_tokens=-5), 400, "invalid_field"),
    BadRequestCase("max-tokens-0", lambda ctx: _body(ctx, max_tokens=0), 400, "invalid_field"),
    BadRequestCase("max-tokens-a-string", lambda ctx: _body(ctx, max_tokens="many"), 400, "invalid_field"),
    BadRequestCase("max-tokens-fractional", lambda ctx: _body(ctx, max_tokens=1.5), 400, "invalid_field"),
    BadRequestCase("temperature-negative", lambda ctx: _body(ctx, temperature=-1), 400, "invalid_field"),
    BadRequestCase("temperature-nan", _raw(b'{"model": "MODEL", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'), 400, "invalid_field", headers=JSON),
    BadRequestCase("top-p-0", lambda ctx: _body(ctx, top_p=0), 400, "invalid_field"),
    BadRequestCase("seed-a-string", lambda ctx: _body(ctx, seed="abc"), 400, "invalid_field"),
    BadRequestCase("stream-not-a-bool", lambda ctx: _body(ctx, stream="yes please"), 400, "invalid_field"),
    BadRequestCase("stream-options-a-list", lambda ctx: _body(ctx, stream=True, stream_options=[1]), 400, "invalid_field"),
    BadRequestCase("seventeen-stop-strings", lambda ctx: _body(ctx, stop=[str(i) for i in range(17)]), 400, "invalid_field"),
    BadRequestCase("top-logprobs-without-logprobs", lambda ctx: _body(ctx, top_logprobs=2), 400, "invalid_field"),
    BadRequestCase("json-schema-format-without-schema", lambda ctx: _body(ctx, response_format={"type": "json_schema"}), 400, "invalid_field"),
    BadRequestCase("two-structured-constraints", lambda ctx: _body(ctx, structured_outputs={"regex": "a", "choice": ["b"]}), 400, "invalid_field"),
    BadRequestCase("guided-json-not-json", lambda ctx: _body(ctx, guided_json="{not a schema"), 400, "invalid_schema"),
    BadRequestCase("tools-used", lambda ctx: _body(ctx, tools=[{"type": "function", "function": {"name": "f"}}]), 400, "unsupported_parameter"),
    BadRequestCase("audio-output", lambda ctx: _body(ctx, modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"}), 400, "unsupported_parameter"),
    BadRequestCase("predicted-output", lambda ctx: _body(ctx, prediction={"type": "content", "content": "x"}), 400, "unsupported_parameter"),
    BadRequestCase("unknown-field", lambda ctx: _body(ctx, frobnicate=True), 400, "unknown_parameter"),
    BadRequestCase("logit-bias-key-not-an-id", lambda ctx: _body(ctx, logit_bias={"hello": 5}), 400, "invalid_field"),
    BadRequestCase("logit-bias-over-100", lambda ctx: _body(ctx, logit_bias={"5": 1000}), 400, "invalid_field"),
    # Only the engine knows the vocabulary.
    BadRequestCase("logit-bias-outside-the-vocabulary", lambda ctx: _body(ctx, logit_bias={"999999999": 5}), 400, engine=True),
    # Conversations that cannot be rendered.
    BadRequestCase("tool-message", lambda ctx: _body(ctx, messages=[{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]), 400, "unsupported_message"),
    BadRequestCase("assistant-first", lambda ctx: _body(ctx, messages=[{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]), 400, "invalid_messages"),
    BadRequestCase("assistant-last", lambda ctx: _body(ctx, messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]), 400, "invalid_messages"),
    BadRequestCase("system-only", lambda ctx: _body(ctx, messages=[{"role": "system", "content": "a"}]), 400, "invalid_messages"),
    BadRequestCase("image-token-in-text", lambda ctx: _body(ctx, "look: <image>"), 400, "invalid_content"),
    BadRequestCase("context-token-in-text", lambda ctx: _body(ctx, "<IMG_CONTEXT>" * 3), 400, "invalid_content"),
    BadRequestCase("prompt-longer-than-context", lambda ctx: _body(ctx, "word " * 20000), 400, engine=True),
    BadRequestCase("too-many-images", lambda ctx: _body(ctx, [*_image(b64_url(TINY_PNG))[:1] * 9, {"type": "text", "text": "x"}]), 400, "too_many_images"),
    BadRequestCase(
        "too-many-videos",
        lambda ctx: _body(ctx, [*_video(b64_url(make_mp4(), "video/mp4"))[:1] * 2, {"type": "text", "text": "x"}]),
        400,
        "too_many_videos",
    ),
    # Images that are not (acceptable) images.
    BadRequestCase("empty-base64-image", lambda ctx: _body(ctx, _image("data:image/png;base64,")), 400, "invalid_media"),
    BadRequestCase(
        "zero-byte-image",
        lambda ctx: _body(ctx, _image(f"file://{ctx.media_dir}/{_write_media(ctx, 'empty.png', b'')}")),
        400,
        "invalid_image",
    ),
    BadRequestCase(
        "zero-byte-image-over-http",
        lambda ctx: _body(ctx, _image(f"{ctx.media_base_url}/{_write_media(ctx, 'empty2.png', b'')}")),
        400,
        "invalid_image",
    ),
    _image_case("random-bytes-as-image", lambda: np.random.default_rng(0).bytes(4096), "invalid_image"),
    _image_case("truncated-jpeg", lambda: jpeg_bytes(640, 480)[:2000], "invalid_image", mime="image/jpeg"),
    _image_case("truncated-png", lambda: png_bytes(640, 480)[:3000], "invalid_image"),
    _image_case("png-header-only", lambda: b"\x89PNG\r\n\x1a\n", "invalid_image"),
    _image_case("pdf-as-image", minimal_pdf, "invalid_image", mime="application/pdf"),
    _image_case("svg-as-image", svg_bytes, "invalid_image", mime="image/svg+xml"),
    _image_case("image-1x100000", lambda: strip_png(1, 100000), "invalid_image_shape"),
    _image_case("image-100000x1", lambda: strip_png(100000, 1), "invalid_image_shape"),
    _image_case("decompression-bomb-header", lambda: png_claiming(100_000, 100_000), "image_too_large"),
    _image_case("decompression-bomb-64mpx", real_png_bomb, "image_too_large"),
    BadRequestCase("garbage-base64", lambda ctx: _body(ctx, _image("data:image/png;base64,@@@not*base64!!")), 400, "invalid_media"),
    BadRequestCase("data-url-without-base64", lambda ctx: _body(ctx, _image("data:image/png,rawbytes")), 400, "invalid_media"),
    BadRequestCase("data-url-malformed", lambda ctx: _body(ctx, _image("data:nonsense")), 400, "invalid_media"),
    # Videos that are not (acceptable) videos.
    BadRequestCase("video-not-a-video", lambda ctx: _body(ctx, _video(b64_url(b"this is plain text, not a video" * 20, "video/mp4"))), 400, "invalid_video"),
    BadRequestCase("pdf-as-video", lambda ctx: _body(ctx, _video(b64_url(minimal_pdf(), "video/mp4"))), 400, "invalid_video"),
    BadRequestCase("zero-frame-video", lambda ctx: _body(ctx, _video(b64_url(zero_frame_video(), "video/x-msvideo"))), 400, "invalid_video"),
    BadRequestCase("truncated-video", lambda ctx: _body(ctx, _video(b64_url(make_mp4()[:600], "video/mp4"))), 400, "invalid_video"),
    BadRequestCase("num-frames-0", lambda ctx: _body(ctx, _video(b64_url(make_mp4(), "video/mp4"), num_frames=0)), 400, "invalid_field"),
    BadRequestCase("num-frames-10-6", lambda ctx: _body(ctx, _video(b64_url(make_mp4(), "video/mp4"), num_frames=10**6)), 400, "invalid_field"),
    BadRequestCase("num-frames-over-server-limit", lambda ctx: _body(ctx, _video(b64_url(make_mp4(), "video/mp4"), num_frames=9)), 400, "too_many_frames"),
    BadRequestCase("request-num-frames-10-6", lambda ctx: _body(ctx, num_frames=10**6), 400, "invalid_field"),
    BadRequestCase("video-start-after-end", lambda ctx: _body(ctx, _video(b64_url(make_mp4(), "video/mp4"), start=5, end=1)), 400, "invalid_field"),
    BadRequestCase("video-range-past-the-end", lambda ctx: _body(ctx, _video(b64_url(make_mp4(), "video/mp4"), start=500, end=600)), 400, "invalid_video"),
    BadRequestCase("video-url-and-frames", lambda ctx: _body(ctx, [{"type": "video_url", "video_url": {"url": "x", "frames": ["y"]}}]), 400, "invalid_field"),
    BadRequestCase("video-frames-empty", lambda ctx: _body(ctx, [{"type": "video_frames", "video_frames": {"urls": []}}]), 400, "invalid_field"),
    BadRequestCase("video-frames-garbage", lambda ctx: _body(ctx, [{"type": "video_frames", "video_frames": {"urls": [b64_url(b"nope")]}}]), 400, "invalid_image"),
    # URLs that may not be fetched.
    BadRequestCase("unsupported-scheme", lambda ctx: _body(ctx, _image("ftp://127.0.0.1/a.png")), 400, "invalid_url"),
    BadRequestCase("metadata-address", lambda ctx: _body(ctx, _image("http://169.254.169.254/latest/meta-data/")), 400, "url_not_allowed"),
    BadRequestCase("private-address", lambda ctx: _body(ctx, _image("http://10.0.0.1/a.png")), 400, "url_not_allowed"),
    BadRequestCase("file-outside-media-dir", lambda ctx: _body(ctx, _image("file:///etc/passwd")), 400, "file_not_allowed"),
    BadRequestCase("file-path-traversal", lambda ctx: _body(ctx, _image(f"file://{ctx.media_dir}/../../../../etc/passwd")), 400, "file_not_allowed"),
    BadRequestCase("file-missing", lambda ctx: _body(ctx, _image(f"file://{ctx.media_dir}/no-such-file.png")), 400, "file_not_found"),
    BadRequestCase("file-with-a-remote-host", lambda ctx: _body(ctx, _image("file://example.com/etc/passwd")), 400, "invalid_url"),
    BadRequestCase("http-nothing-listening", lambda ctx: _body(ctx, _image(f"http://127.0.0.1:{ctx.closed_port}/a.png")), 400, "media_fetch_failed"),
    BadRequestCase("http-404", lambda ctx: _body(ctx, _image(f"{ctx.media_base_url}/no-such-file.png")), 400, "media_fetch_failed"),
    BadRequestCase(
        "http-pdf-as-image",
        lambda ctx: _body(ctx, _image(f"{ctx.media_base_url}/{_write_media(ctx, 'doc.pdf', minimal_pdf())}")),
        400,
        "invalid_image",
    ),
    BadRequestCase(
        "streaming-with-a-bad-image",
        lambda ctx: _body(ctx, _image(b64_url(png_bytes(64, 64)[:100])), stream=True),
        400,
        "invalid_image",
    ),
]

assert len({case.id for case in CASES}) == len(CASES)


def send(client: Any, case: BadRequestCase, ctx: Context, headers: dict[str, str] | None = None):
    """Send `case` with an httpx-compatible client (httpx.Client or TestClient)."""
    payload = case.build(ctx)
    all_headers = {**case.headers, **(headers or {})}
    if case.method == "GET":
        return client.get(case.path, headers=all_headers)
    if isinstance(payload, bytes):
        if case.chunked:

            def chunks(data=payload):
                for start in range(0, len(data), 256 * 1024):
                    yield data[start : start + 256 * 1024]

            return client.post(case.path, content=chunks(), headers=all_headers)
        return client.post(case.path, content=payload, headers=all_headers)
    return client.post(case.path, json=payload, headers=all_headers)


def check_error(response, case: BadRequestCase) -> dict:
    """A 4xx (the expected one) with OpenAI's error JSON naming the problem."""
    assert response.status_code < 500, (case.id, response.status_code, response.text[:500])
    assert response.status_code == case.status, (case.id, response.status_code, response.text[:500])
    body = response.json()
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and len(error["message"]) > 5, error
    assert error["type"] in ("invalid_request_error", "authentication_error", "rate_limit_error"), error
    assert error["code"], error
    if case.code is not None:
        assert error["code"] == case.code, (case.id, error)
    assert response.headers.get("x-request-id"), case.id  # so the client can report which request failed
    return error


# --- network guard ----------------------------------------------------------------


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class LoopbackOnly:
    """Patches socket connects so nothing in the test process can reach beyond loopback,
    even if the code under test wrongly lets a URL through. Records every attempt."""

    def __init__(self, monkeypatch) -> None:
        self.attempts: list[tuple[str, int]] = []
        original_connect = socket.socket.connect
        original_connect_ex = socket.socket.connect_ex
        guard = self

        def check(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                host, port = address[0], address[1]
                guard.attempts.append((host, port))
                if not is_loopback(host):
                    raise ConnectionRefusedError(f"test guard: refusing to connect to {host}:{port} (not loopback)")

        def connect(sock, address):
            check(sock, address)
            return original_connect(sock, address)

        def connect_ex(sock, address):
            check(sock, address)
            return original_connect_ex(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
