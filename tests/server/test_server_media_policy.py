"""SSRF policy and media fetching. Nothing here opens a network connection:
remote fetches go through httpx.MockTransport and DNS through a fake resolver."""

import base64
import ipaddress

import httpx
import pytest

from server.errors import APIError, BadRequest, PayloadTooLarge
from server.media import MediaFetcher
from server.settings import Settings
from server.ssrf import AddressPolicy, parse_inet_aton, parse_ip_literal

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f000001",
    "0X7F000001",
    "0177.0.0.1",
    "0177.0.0.01",
    "0x7f.0.0.1",
    "0x7f.1",
    "017700000001",
    "127.0.0.1.",
    "[::1]",
    "::1",
    "0:0:0:0:0:0:0:1",
    "::ffff:127.0.0.1",
    "[::ffff:7f00:1]",
    "::ffff:7f00:1",
    "2002:7f00:1::",
]

REFUSED = LOOPBACK_SPELLINGS + [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "0xa9fea9fe",  # 169.254.169.254 in hex
    "2852039166",  # 169.254.169.254 in decimal
    "100.100.100.200",  # Alibaba metadata
    "fd00:ec2::254",  # AWS IPv6 metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "0",
    "::",
    "224.0.0.1",
    "255.255.255.255",
    "240.0.0.1",
    "fe80::1",
    "fc00::1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "134744072", "0x08080808", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("host", REFUSED)
def test_non_public_addresses_are_refused(host):
    address = parse_ip_literal(host)
    assert address is not None, host
    assert AddressPolicy().refusal(address) is not None


@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses_pass(host):
    address = parse_ip_literal(host)
    assert address is not None and AddressPolicy().refusal(address) is None


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS[:11])
def test_inet_aton_spellings_all_mean_loopback(host):
    assert parse_ip_literal(host) == ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize("text", ["example.com", "1.2.3.4.5", "08.1.1.1", "256.1.1.1", "1.2.3.256x", "0x", "", "1..1"])
def test_names_and_invalid_numbers_are_not_literals(text):
    assert parse_inet_aton(text) is None or text == "0x"


def test_allow_list_exempts_a_network():
    policy = AddressPolicy(allowed_networks=["127.0.0.0/8"])
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.0.0.1")) is not None


def test_domain_allow_list():
    policy = AddressPolicy(allowed_domains=["example.com"])
    assert policy.domain_allowed("example.com") and policy.domain_allowed("img.EXAMPLE.com.")
    assert not policy.domain_allowed("evil-example.com") and not policy.domain_allowed("example.com.evil.org")


def fetcher(handler=None, resolve=None, **settings) -> MediaFetcher:
    async def resolver(host, port):
        if resolve is None:
            raise OSError("no DNS in tests")
        return resolve[host]

    transport = httpx.MockTransport(handler or (lambda request: httpx.Response(500)))
    return MediaFetcher(Settings(model="m", **settings), resolver=resolver, transport=transport)


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::1]", "[::ffff:127.0.0.1]"])
async def test_fetch_refuses_loopback_without_connecting(host):
    def never(request):
        raise AssertionError("must not connect")

    with pytest.raises(BadRequest) as caught:
        await fetcher(never).fetch(f"http://{host}:8080/x.png")
    assert caught.value.code == "url_not_allowed"


async def test_every_resolved_address_is_checked():
    media = fetcher(resolve={"mixed.test": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(BadRequest) as caught:
        await media.fetch("http://mixed.test/a.png")
    assert caught.value.code == "url_not_allowed"


async def test_connects_to_the_checked_address_with_the_original_host():
    seen = []

    def handler(request):
        seen.append((request.url.host, request.headers["host"], request.extensions.get("sni_hostname")))
        return httpx.Response(200, content=b"payload")

    media = fetcher(handler, resolve={"cdn.test": ["93.184.216.34"]})
    assert await media.fetch("https://cdn.test/a.png") == b"payload"
    assert seen == [("93.184.216.34", "cdn.test", "cdn.test")]


async def test_redirect_target_is_checked_again():
    def handler(request):
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data"})

    media = fetcher(handler, resolve={"cdn.test": ["93.184.216.34"]})
    with pytest.raises(BadRequest) as caught:
        await media.fetch("http://cdn.test/a.png")
    assert caught.value.code == "url_not_allowed"


async def test_redirects_are_followed_to_an_allowed_host_and_limited():
    def handler(request):
        if request.url.path == "/final":
            return httpx.Response(200, content=b"ok")
        return httpx.Response(301, headers={"location": "/final" if request.url.path == "/start" else "/loop"})

    media = fetcher(handler, resolve={"cdn.test": ["93.184.216.34"]})
    assert await media.fetch("http://cdn.test/start") == b"ok"
    with pytest.raises(BadRequest) as caught:
        await media.fetch("http://cdn.test/loop")
    assert caught.value.code == "too_many_redirects"


async def test_size_limit_is_enforced_while_streaming():
    pulled = []

    async def body():
        for _ in range(100):
            pulled.append(1)
            yield b"x" * 1024

    media = fetcher(lambda request: httpx.Response(200, content=body()), resolve={"cdn.test": ["93.184.216.34"]}, max_media_bytes=4096)
    with pytest.raises(PayloadTooLarge):
        await media.fetch("http://cdn.test/big")
    assert len(pulled) < 10  # stopped reading early, not after the whole body


async def test_declared_length_over_the_limit_is_refused_up_front():
    media = fetcher(
        lambda request: httpx.Response(200, headers={"content-length": "999999"}, content=b"x"),
        resolve={"cdn.test": ["93.184.216.34"]},
        max_media_bytes=1000,
    )
    with pytest.raises(PayloadTooLarge):
        await media.fetch("http://cdn.test/big")


async def test_domain_allow_list_applies_before_resolving():
    media = fetcher(resolve={}, media_allowed_domains=["good.test"])
    with pytest.raises(BadRequest) as caught:
        await media.fetch("http://bad.test/a.png")
    assert caught.value.code == "host_not_allowed"


async def test_data_urls_and_their_size_limit():
    media = fetcher(max_media_bytes=10)
    assert await media.fetch("data:image/png;base64," + base64.b64encode(b"abc").decode()) == b"abc"
    with pytest.raises(PayloadTooLarge):
        await media.fetch("data:image/png;base64," + base64.b64encode(b"a" * 100).decode())
    with pytest.raises(BadRequest):
        await media.fetch("data:image/png;base64,@@@")


async def test_file_urls_only_under_the_configured_directory(tmp_path):
    allowed = tmp_path / "media"
    allowed.mkdir()
    (allowed / "a.bin").write_bytes(b"inside")
    (tmp_path / "secret").write_bytes(b"outside")
    (allowed / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(BadRequest):
        await fetcher().fetch(f"file://{allowed / 'a.bin'}")  # disabled by default
    media = fetcher(media_local_dir=str(allowed))
    assert await media.fetch(f"file://{allowed / 'a.bin'}") == b"inside"
    for escape in (f"file://{tmp_path / 'secret'}", f"file://{allowed}/../secret", f"file://{allowed / 'link'}"):
        with pytest.raises(BadRequest) as caught:
            await media.fetch(escape)
        assert caught.value.code == "file_not_allowed"


@pytest.mark.parametrize("url", ["ftp://x/y", "gopher://x", "javascript:alert(1)", "/etc/passwd", "http://"])
async def test_other_schemes_are_rejected(url):
    with pytest.raises(APIError):
        await fetcher().fetch(url)
