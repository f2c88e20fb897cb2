"""Fetching media bytes from the URLs clients put in requests.

Remote fetches are the dangerous part: the host is resolved here, every address
it resolves to is checked against the SSRF policy, and the connection goes to
the checked address (so a second DNS answer cannot swap it). Redirects are
followed by hand so each hop is checked again, and the size limit is enforced
while the body streams in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
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


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


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
        self.local_dir = settings.media_local_dir.resolve() if settings.media_local_dir else None
        self.policy = AddressPolicy(settings.media_allowed_networks, settings.media_allowed_domains)
        self._resolver = resolver
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

    async def fetch(self, url: str, *, param: str | None = None) -> bytes:
        """The bytes behind a data:, file:// or http(s) URL."""
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        try:
            if scheme == "data":
                return await self._from_data_url(url, param)
            if scheme == "file":
                return await self._from_file(url, param)
            if scheme in ("http", "https"):
                return await self._from_network(url, param)
        except MediaError as error:
            raise BadRequest(str(error), code=error.code, param=param) from None
        raise BadRequest(
            f"unsupported URL scheme {scheme!r}: use http(s), data: or file://", code="invalid_url", param=param
        )

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
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise BadRequest("file:// URLs must name a local path", code="invalid_url", param=param)
        return await asyncio.to_thread(self._read_local, Path(unquote(parts.path)), param)

    def _read_local(self, path: Path, param: str | None) -> bytes:
        resolved = path.resolve()  # follows symlinks, so a link cannot point outside
        if not resolved.is_relative_to(self.local_dir):
            raise BadRequest("file:// path is outside the allowed media directory", code="file_not_allowed", param=param)
        try:
            if resolved.stat().st_size > self.max_bytes:
                raise self._too_large(param)
            return resolved.read_bytes()
        except OSError:
            raise BadRequest("file:// path does not exist or cannot be read", code="file_not_found", param=param) from None

    async def _from_network(self, url: str, param: str | None) -> bytes:
        for _ in range(self.max_redirects + 1):
            target = await self.check_url(url, param=param)
            headers = {"Host": target.host_header, "Accept": "image/*,video/*,*/*"}
            extensions = {"sni_hostname": target.hostname} if urlsplit(url).scheme.lower() == "https" else {}
            try:
                async with self._client.stream(
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
                    return await self._read_limited(response, param)
            except httpx.TimeoutException:
                raise BadRequest("timed out fetching media", code="media_fetch_timeout", param=param) from None
            except httpx.HTTPError as error:
                raise BadRequest(f"fetching media failed: {error}", code="media_fetch_failed", param=param) from None
        raise BadRequest(f"more than {self.max_redirects} redirects", code="too_many_redirects", param=param)

    async def _read_limited(self, response: httpx.Response, param: str | None) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(param)
        body = bytearray()
        async for chunk in response.aiter_bytes():  # decoded bytes: a gzip bomb counts in full
            body += chunk
            if len(body) > self.max_bytes:
                raise self._too_large(param)
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
