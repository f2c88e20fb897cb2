"""Fetching media bytes from the URLs clients put in requests.

Remote fetches are the dangerous part: the host is resolved here, every address
it resolves to is checked against the SSRF policy, and the connection goes to
the checked address (so a second DNS answer cannot swap it). Redirects are
followed by hand so each hop is checked again, and the size limit is enforced
while the body streams in.

Strangers choose these servers, so everything about a fetch is bounded: the
bytes (per fetch and per request, counted as received: compressing transfer
encodings are refused rather than inflated), the time (per read and for the
whole fetch, so a server that trickles a byte now and then cannot hold a
request), and how many fetches run at once per request and per host.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import stat
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx

from preprocessing import MediaError
from preprocessing.sources import decode_data_url

from .errors import APIError, BadRequest, PayloadTooLarge
from .settings import Settings
from .ssrf import AddressPolicy, IPAddress, parse_ip_literal

Resolver = Callable[[str, int], Awaitable[list[str]]]

# Media formats are compressed already; a compressing transfer encoding only
# lets a small response inflate into a large one, so none is accepted.
_IDENTITY = frozenset({"", "identity"})


class MediaBudget:
    """What one request may pull in: bytes in total, and fetches at once."""

    def __init__(self, max_bytes: int, concurrent_fetches: int) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.fetch_slots = asyncio.Semaphore(concurrent_fetches)

    def spend(self, count: int, param: str | None) -> None:
        self.used_bytes += count
        if self.used_bytes > self.max_bytes:
            raise PayloadTooLarge(
                f"the media of this request exceed the limit of {self.max_bytes} bytes in total",
                code="media_too_large",
                param=param,
            )


class HostSlots:
    """At most `limit` fetches from one host at a time; the rest wait their turn.

    Entries exist only while a host has fetches in flight, so the table stays small.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._hosts: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
        host = host.lower().rstrip(".")
        semaphore, users = self._hosts.get(host) or (asyncio.Semaphore(self.limit), 0)
        self._hosts[host] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._hosts[host]
            if users == 1:
                del self._hosts[host]
            else:
                self._hosts[host] = (semaphore, users - 1)

    def in_use(self, host: str) -> int:
        return self._hosts.get(host.lower().rstrip("."), (None, 0))[1]


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


class PoolPerHostName(httpx.AsyncBaseTransport):
    """One connection pool per host name (with scheme and port), not per address.

    Requests are sent to the vetted address, so a single pool would key its
    connections by IP, and a TLS connection verified for one name could carry a
    request for another name served at the same address. Keyed by the Host
    header, a connection only ever serves the name it was verified for.
    Idle pools of the least recently used names are closed past `max_names`.
    """

    def __init__(self, make_pool: Callable[[], httpx.AsyncBaseTransport], max_names: int = 256) -> None:
        self._make_pool = make_pool
        self.max_names = max_names
        self._pools: OrderedDict[tuple[str, str], httpx.AsyncBaseTransport] = OrderedDict()
        self._active: dict[tuple[str, str], int] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = (request.url.scheme, request.headers.get("host", "").lower())
        self._active[key] = self._active.get(key, 0) + 1
        try:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = self._make_pool()
                await self._close_idle_overflow()
            self._pools.move_to_end(key)
            response = await pool.handle_async_request(request)
        except BaseException:
            self._done(key)
            raise
        response.stream = _ClosingStream(response.stream, lambda: self._done(key))
        return response

    def pool_count(self) -> int:
        return len(self._pools)

    def _done(self, key: tuple[str, str]) -> None:
        self._active[key] -= 1
        if not self._active[key]:
            del self._active[key]

    async def _close_idle_overflow(self) -> None:
        for key in list(self._pools):
            if len(self._pools) <= self.max_names:
                return
            if key not in self._active:
                await self._pools.pop(key).aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()


class _ClosingStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, on_close: Callable[[], None]) -> None:
        self._stream = stream
        self._on_close: Callable[[], None] | None = on_close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._on_close is not None:
                self._on_close, on_close = None, self._on_close
                on_close()


@dataclass(frozen=True)
class CheckedTarget:
    """A URL whose host has been resolved and vetted: connect to `connect_url`."""

    url: str
    connect_url: str
    host_header: str
    hostname: str
    address: IPAddress


class MediaFetcher:
    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.max_bytes = settings.max_media_bytes
        self.max_redirects = settings.media_max_redirects
        self.fetch_timeout = settings.media_fetch_timeout
        self.max_request_bytes = settings.max_media_bytes_per_request
        self.fetches_per_request = settings.media_fetches_per_request
        self.host_slots = HostSlots(settings.media_fetches_per_host)
        self.local_dir = settings.media_local_dir.resolve() if settings.media_local_dir else None
        self.policy = AddressPolicy(settings.media_allowed_networks, settings.media_allowed_domains)
        self._resolver = resolver
        if transport is None:
            transport = PoolPerHostName(lambda: httpx.AsyncHTTPTransport(trust_env=False))
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.media_connect_timeout,
                read=settings.media_read_timeout,
                write=settings.media_read_timeout,
                pool=settings.media_connect_timeout,
            ),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would bypass the address checks
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def budget(self) -> MediaBudget:
        """A fresh allowance for one request's media."""
        return MediaBudget(self.max_request_bytes, self.fetches_per_request)

    async def fetch(self, url: str, *, param: str | None = None, budget: MediaBudget | None = None) -> bytes:
        """The bytes behind a data:, file:// or http(s) URL."""
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        budget = budget or self.budget()
        try:
            if scheme == "data":
                data = await self._from_data_url(url, param)
            elif scheme == "file":
                async with budget.fetch_slots:
                    data = await self._from_file(url, param)
            elif scheme in ("http", "https"):
                async with budget.fetch_slots:
                    return await self._from_network(url, param, budget)
            else:
                raise BadRequest(
                    f"unsupported URL scheme {scheme!r}: use http(s), data: or file://", code="invalid_url", param=param
                )
        except MediaError as error:
            raise BadRequest(str(error), code=error.code, param=param) from None
        budget.spend(len(data), param)
        return data

    async def _from_data_url(self, url: str, param: str | None) -> bytes:
        # base64 text is 4/3 of the bytes it carries: reject before decoding.
        if len(url.partition(",")[2]) * 3 // 4 > self.max_bytes + 3:
            raise self._too_large(param)
        data = await asyncio.to_thread(decode_data_url, url, code="invalid_media")
        if len(data) > self.max_bytes:
            raise self._too_large(param)
        return data

    async def _from_file(self, url: str, param: str | None) -> bytes:
        if self.local_dir is None:
            raise BadRequest("file:// URLs are disabled on this server", code="file_url_disabled", param=param)
        try:
            parts = urlsplit(url)
        except ValueError:
            raise BadRequest("malformed file:// URL", code="invalid_url", param=param) from None
        if parts.netloc not in ("", "localhost"):
            raise BadRequest("file:// URLs must name a local path", code="invalid_url", param=param)
        # Undecodable bytes stay as surrogates and so never match a real name by accident.
        path = unquote(parts.path, errors="surrogateescape")
        if not path.startswith("/") or any(ord(char) < 0x20 or char == "\x7f" for char in path):
            raise BadRequest("file:// path must be absolute, without control characters", code="invalid_url", param=param)
        return await asyncio.to_thread(self._read_local, path, param)

    def _read_local(self, path: str, param: str | None) -> bytes:
        try:
            resolved = Path(path).resolve()
            relative = resolved.relative_to(self.local_dir)
        except ValueError:
            # resolve() follows links, so a link that leads outside lands here too.
            raise BadRequest("file:// path is outside the allowed media directory", code="file_not_allowed", param=param) from None
        except OSError:
            raise BadRequest("file:// path does not exist or cannot be read", code="file_not_found", param=param) from None
        try:
            descriptor = _open_beneath(self.local_dir, relative.parts)
        except _SwappedPath:
            raise BadRequest("file:// path changed while it was opened", code="file_not_allowed", param=param) from None
        except OSError:
            raise BadRequest("file:// path does not exist or cannot be read", code="file_not_found", param=param) from None
        try:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode):
                # A directory; a FIFO would block this thread for ever, a device reads without end.
                raise BadRequest("file:// path is not a regular file", code="file_not_found", param=param)
            if status.st_size > self.max_bytes:
                raise self._too_large(param)
            with os.fdopen(descriptor, "rb", closefd=False) as file:
                data = file.read(self.max_bytes + 1)
        finally:
            os.close(descriptor)
        if len(data) > self.max_bytes:  # the file grew after fstat
            raise self._too_large(param)
        return data

    async def _from_network(self, url: str, param: str | None, budget: MediaBudget) -> bytes:
        try:
            async with asyncio.timeout(self.fetch_timeout):
                return await self._follow(url, param, budget)
        except TimeoutError:
            raise BadRequest(
                f"fetching media took longer than {self.fetch_timeout:g} s", code="media_fetch_timeout", param=param
            ) from None

    async def _follow(self, url: str, param: str | None, budget: MediaBudget) -> bytes:
        for _ in range(self.max_redirects + 1):
            target = await self.check_url(url, param=param)
            # identity: media are compressed already, and a compressed transfer
            # would be a small response that inflates into a large one.
            headers = {"Host": target.host_header, "Accept": "image/*,video/*,*/*", "Accept-Encoding": "identity"}
            extensions = {"sni_hostname": target.hostname} if urlsplit(url).scheme.lower() == "https" else {}
            try:
                async with self.host_slots.hold(target.hostname), self._client.stream(
                    "GET", target.connect_url, headers=headers, extensions=extensions
                ) as response:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise BadRequest("media URL redirected without a Location", code="media_fetch_failed", param=param)
                        url = urljoin(url, location)
                        continue
                    if response.status_code != 200:
                        raise BadRequest(
                            f"fetching media failed: HTTP {response.status_code}", code="media_fetch_failed", param=param
                        )
                    return await self._read_limited(response, param, budget)
            except httpx.TimeoutException:
                raise BadRequest("timed out fetching media", code="media_fetch_timeout", param=param) from None
            except httpx.HTTPError as error:
                raise BadRequest(f"fetching media failed: {error}", code="media_fetch_failed", param=param) from None
        raise BadRequest(f"more than {self.max_redirects} redirects", code="too_many_redirects", param=param)

    async def _read_limited(self, response: httpx.Response, param: str | None, budget: MediaBudget) -> bytes:
        encodings = [e.strip().lower() for e in response.headers.get_list("content-encoding", split_commas=True)]
        refused = [encoding for encoding in encodings if encoding not in _IDENTITY]
        if refused:
            raise BadRequest(
                f"media server sent a {', '.join(refused)}-encoded response; only identity is accepted",
                code="unsupported_content_encoding",
                param=param,
            )
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(param)
        body = bytearray()
        # Raw bytes: httpx never decodes anything, so what is counted is what is kept.
        async for chunk in _raw_chunks(response):
            body += chunk
            if len(body) > self.max_bytes:
                raise self._too_large(param)
            budget.spend(len(chunk), param)
        return bytes(body)

    async def check_url(self, url: str, *, param: str | None = None) -> CheckedTarget:
        """Resolve and vet the URL's host; raise a 400 when policy forbids it."""
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise BadRequest("malformed media URL", code="invalid_url", param=param) from None
        if parts.scheme.lower() not in ("http", "https") or not hostname:
            raise BadRequest("media URL must be http(s) with a host", code="invalid_url", param=param)
        if not self.policy.domain_allowed(hostname):
            raise BadRequest(f"media host {hostname!r} is not allowed", code="host_not_allowed", param=param)
        addresses = await self._addresses(hostname, port, param)
        for address in addresses:
            reason = self.policy.refusal(address)
            if reason is not None:
                raise BadRequest(f"media URL refused: {reason}", code="url_not_allowed", param=param)
        address = addresses[0]
        host_in_url = f"[{address}]" if address.version == 6 else str(address)
        default_port = 443 if parts.scheme.lower() == "https" else 80
        connect_url = urlunsplit(
            (parts.scheme, f"{host_in_url}:{port}", parts.path or "/", parts.query, "")
        )
        host_header = hostname if port == default_port else f"{hostname}:{port}"
        if ":" in hostname:
            host_header = f"[{hostname}]" if port == default_port else f"[{hostname}]:{port}"
        return CheckedTarget(url, connect_url, host_header, hostname, address)

    async def _addresses(self, hostname: str, port: int, param: str | None) -> list[IPAddress]:
        literal = parse_ip_literal(hostname)
        if literal is not None:
            return [literal]
        try:
            resolved = await self._resolver(hostname, port)
        except (OSError, UnicodeError):
            raise BadRequest(f"cannot resolve media host {hostname!r}", code="media_fetch_failed", param=param) from None
        addresses = []
        for text in resolved:
            try:
                addresses.append(ipaddress.ip_address(text))
            except ValueError:
                continue
        if not addresses:
            raise BadRequest(f"cannot resolve media host {hostname!r}", code="media_fetch_failed", param=param)
        return addresses

    def _too_large(self, param: str | None) -> APIError:
        return PayloadTooLarge(f"media exceeds the limit of {self.max_bytes} bytes", code="media_too_large", param=param)


async def _raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    if response.is_stream_consumed:
        # Responses built in memory (test transports) arrive already read.
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


class _SwappedPath(Exception):
    """A component of an already-resolved path is now a symlink."""


def _open_beneath(root: Path, parts: tuple[str, ...]) -> int:
    """A read-only descriptor for root/parts, opened one component at a time.

    `parts` come from a resolved path, so none of them is a symlink; opening each
    with O_NOFOLLOW relative to its parent's descriptor means a link swapped in
    after resolution fails (ELOOP/ENOTDIR) instead of being followed out of `root`.
    """
    if not parts:
        raise IsADirectoryError(str(root))
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts[:-1]:
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _SwappedPath() from None
                raise
            os.close(directory)
            directory = child
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            return os.open(parts[-1], flags, dir_fd=directory)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise _SwappedPath() from None
            raise
    finally:
        os.close(directory)
