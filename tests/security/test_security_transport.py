"""Hostile media hosts: compressing transfer encodings, trickling servers, too many
fetches at once, too many bytes per request. Real HTTP on 127.0.0.1 only."""

import asyncio
import time

import httpx

import pytest

from security_support import MediaHost, encoded, png, reply
from server.errors import APIError, BadRequest, PayloadTooLarge
from server.media import HostSlots, MediaFetcher
from server.settings import Settings

BOMB = b"\0" * (64 * 1024 * 1024)  # inflates 64 MiB from ~64 KiB gzipped


class HostileSettings(Settings):
    """Tight limits, so hostile hosts trip them within the test's time."""

    media_fetch_timeout: float = 1.5
    max_media_bytes_per_request: int = 1024 * 1024
    media_fetches_per_request: int = 4
    media_fetches_per_host: int = 2


def _fetcher(**settings) -> MediaFetcher:
    settings.setdefault("max_media_bytes", 1024 * 1024)
    return MediaFetcher(HostileSettings(model="m", media_allowed_networks=["127.0.0.0/8"], **settings))


@pytest.fixture
def host():
    hosts = []

    def start(routes):
        hosts.append(MediaHost(routes))
        return hosts[-1]

    yield start
    for started in hosts:
        started.close()


ENCODINGS = [
    ["gzip"],
    ["x-gzip"],
    ["deflate"],
    ["gzip", "gzip"],
    ["deflate", "gzip"],
    ["gzip", "deflate", "gzip"],
]


@pytest.mark.parametrize("layers", ENCODINGS, ids=lambda layers: "+".join(layers))
async def test_compressed_bombs_are_refused_without_inflating(host, layers):
    body = encoded(BOMB, layers)
    assert len(body) < 256 * 1024  # small on the wire, 64 MiB inflated
    server = host({"/bomb": reply(body, headers={"Content-Encoding": ", ".join(layers), "Content-Type": "image/png"})})
    media = _fetcher()
    started = time.monotonic()
    with pytest.raises(BadRequest) as caught:
        await media.fetch(server.url("/bomb"))
    assert caught.value.code == "unsupported_content_encoding", caught.value.message
    assert time.monotonic() - started < 1.0  # nothing was inflated
    assert server.requests[0]["accept-encoding"] == "identity"
    await media.aclose()


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Encoding", "br")],
        [("Content-Encoding", "zstd")],
        [("Content-Encoding", "compress")],
        [("Content-Encoding", "GZIP")],
        [("Content-Encoding", " gzip ")],
        [("Content-Encoding", "identity, gzip")],
        [("Content-Encoding", "identity"), ("Content-Encoding", "gzip")],
        [("Content-Encoding", "made-up")],
    ],
    ids=lambda headers: "|".join(value for _, value in headers),
)
async def test_every_spelling_of_a_content_coding_is_refused(host, headers):
    payload = png(8, 8)

    def handle(handler):
        handler.send_response(200)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    server = host({"/x": handle})
    media = _fetcher()
    with pytest.raises(BadRequest) as caught:
        await media.fetch(server.url("/x"))
    assert caught.value.code == "unsupported_content_encoding"
    await media.aclose()


async def test_identity_and_no_encoding_are_fetched_byte_for_byte(host):
    payload = png(8, 8)
    server = host({"/plain": reply(payload), "/identity": reply(payload, headers={"Content-Encoding": "identity"})})
    media = _fetcher()
    assert await media.fetch(server.url("/plain")) == payload
    assert await media.fetch(server.url("/identity")) == payload
    await media.aclose()


def _trickle(interval_s: float, total: int = 1000):
    def handle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(total))
        handler.end_headers()
        for _ in range(total):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(interval_s)

    return handle


async def test_a_trickling_server_hits_the_whole_fetch_deadline(host):
    # One byte every 0.1 s never trips the 30 s per-read timeout; the 1.5 s deadline ends it.
    server = host({"/slow": _trickle(0.1)})
    media = _fetcher()
    started = time.monotonic()
    with pytest.raises(BadRequest) as caught:
        await media.fetch(server.url("/slow"))
    elapsed = time.monotonic() - started
    assert caught.value.code == "media_fetch_timeout"
    assert 1.4 < elapsed < 3.0
    await media.aclose()


async def test_a_stalled_redirect_chain_shares_one_deadline(host):
    def slow_redirect(handler):
        time.sleep(0.6)
        handler.send_response(302)
        handler.send_header("Location", "/hop")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server = host({"/hop": slow_redirect})
    media = _fetcher(media_max_redirects=10)
    started = time.monotonic()
    with pytest.raises(BadRequest) as caught:
        await media.fetch(server.url("/hop"))
    assert caught.value.code == "media_fetch_timeout" and time.monotonic() - started < 3.0
    await media.aclose()


async def test_fetches_per_host_are_capped(host):
    def slow(handler):
        time.sleep(0.3)
        reply(b"ok")(handler)

    server = host({"/slow": slow})
    media = _fetcher()
    assert isinstance(media.host_slots, HostSlots) and media.host_slots.limit == 2
    results = await asyncio.gather(*(media.fetch(server.url("/slow")) for _ in range(6)))
    assert results == [b"ok"] * 6
    assert server.most_open == 2  # never more than the cap at once, all served in turn
    assert media.host_slots.in_use("127.0.0.1") == 0  # and the table forgets idle hosts
    await media.aclose()


async def test_fetches_per_request_are_capped(host):
    def slow(handler):
        time.sleep(0.3)
        reply(b"ok")(handler)

    server = host({"/slow": slow})
    media = _fetcher(max_media_bytes=1024)
    media.host_slots = HostSlots(100)
    budget = media.budget()
    budget.fetch_slots = asyncio.Semaphore(3)
    await asyncio.gather(*(media.fetch(server.url("/slow"), budget=budget) for _ in range(9)))
    assert server.most_open == 3
    await media.aclose()


async def test_bytes_per_request_are_capped_across_fetches(host):
    chunk = b"y" * (400 * 1024)
    server = host({"/part": reply(chunk)})
    media = _fetcher()  # 1 MiB per fetch and 1 MiB per request
    budget = media.budget()
    assert await media.fetch(server.url("/part"), budget=budget) == chunk
    assert await media.fetch(server.url("/part"), budget=budget) == chunk
    with pytest.raises(PayloadTooLarge) as caught:
        await media.fetch(server.url("/part"), budget=budget)  # the third crosses 1 MiB
    assert caught.value.code == "media_too_large" and "in total" in caught.value.message
    # data: URLs count too
    with pytest.raises(APIError):
        await media.fetch("data:image/png;base64," + "QUFB" * 200_000, budget=budget)
    await media.aclose()


async def test_connections_are_pooled_per_host_name_not_per_address(host):
    """Two names served at one address never share a connection: on HTTPS that
    connection was verified for the other name. One name still reuses its own."""
    server = host({"/x": reply(b"ok")})

    async def resolver(name, port):
        assert name in ("a.test", "b.test")
        return ["127.0.0.1"]

    media = MediaFetcher(HostileSettings(model="m", media_allowed_networks=["127.0.0.0/8"]), resolver=resolver)
    for name in ("a.test", "b.test", "a.test", "b.test"):
        assert await media.fetch(f"http://{name}:{server.port}/x") == b"ok"
    ports = [(seen["host"].split(":")[0], seen["client_port"]) for seen in server.requests]
    by_name = {name: {port for seen_name, port in ports if seen_name == name} for name in ("a.test", "b.test")}
    assert len(by_name["a.test"]) == 1 and len(by_name["b.test"]) == 1  # kept alive per name
    assert by_name["a.test"] != by_name["b.test"]  # never shared across names
    await media.aclose()


async def test_idle_pools_of_old_names_are_closed():
    from server.media import PoolPerHostName

    opened, closed = [], []

    class Pool(httpx.AsyncBaseTransport):
        def __init__(self):
            opened.append(self)

        async def handle_async_request(self, request):
            return httpx.Response(200, stream=httpx.ByteStream(b"ok"))

        async def aclose(self):
            closed.append(self)

    def request(name):
        return pools.handle_async_request(httpx.Request("GET", "http://10.0.0.1/", headers={"host": name}))

    pools = PoolPerHostName(Pool, max_names=2)
    for name in ("a", "b", "c", "a"):
        await (await request(name)).aclose()
    assert pools.pool_count() == 2 and len(opened) == 4 and closed == [opened[0], opened[1]]
    # A pool with a response still streaming is never closed under it.
    streaming = await request("c")
    await (await request("d")).aclose()
    await (await request("e")).aclose()
    assert opened[2] not in closed and pools.pool_count() == 2
    await streaming.aclose()
    await pools.aclose()
    assert len(closed) == len(opened)
