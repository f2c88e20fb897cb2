"""SSRF policy and media fetching. Nothing here leaves the machine: most remote
fetches go through httpx.MockTransport and DNS through a fake resolver; the TLS
checks run a real HTTPS server on a loopback address with a certificate made here."""

import base64
import datetime
import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


@pytest.mark.parametrize("text", ["example.com", "1.2.3.4.5", "08.1.1.1", "256.1.1.1", "1.2.3.256x", "", "1..1"])
def test_names_and_invalid_numbers_are_not_literals(text):
    assert parse_inet_aton(text) is None


@pytest.mark.parametrize("text", ["0x", "0X", "0x.0x.0x.0x"])
def test_a_bare_hex_prefix_reads_as_zero_and_is_refused(text):
    # glibc's inet_aton rejects "0x", but the WHATWG URL parser (browsers, many HTTP
    # stacks) reads an empty hex number as 0: take the reading that gets refused.
    assert parse_inet_aton(text) == ipaddress.IPv4Address("0.0.0.0")
    assert AddressPolicy().refusal(parse_ip_literal(text)) is not None


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


# --- real TLS on loopback ----------------------------------------------------------
# The fetcher connects to the address it vetted (never re-resolving the name), yet
# must present the URL's hostname as SNI and Host and verify the certificate
# against that hostname, not against the IP it dialled.

PINNED = "127.0.0.2"  # the server listens here only; "media.test" exists nowhere else


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, issuer, public_key, signing_key, *, ca: bool, hostname: str | None = None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hostname:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory):
    """A test CA, and a server certificate it signed for each of two hostnames."""
    folder = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test CA", "test CA", ca_key.public_key(), ca_key, ca=True)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chains = {}
    for hostname in ("media.test", "other.test"):
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = _certificate(hostname, "test CA", key.public_key(), ca_key, ca=False, hostname=hostname)
        chain = folder / f"{hostname}.pem"
        chain.write_bytes(
            leaf.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        chains[hostname] = chain
    return folder / "ca.pem", chains


class LoopbackTLSServer:
    """HTTPS on PINNED that records, per connection, the SNI, the Host header and the
    local address the client reached."""

    def __init__(self, chain_path):
        self.seen: list[dict] = []
        self.handshake_errors: list[str] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain_path)
        sni: dict[int, str | None] = {}
        context.sni_callback = lambda ssl_socket, name, _context: sni.__setitem__(id(ssl_socket), name)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.seen.append({
                    "sni": sni.get(id(self.connection)),
                    "host": self.headers["Host"],
                    "local_address": self.connection.getsockname()[0],
                    "path": self.path,
                })
                self.send_response(200)
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"payload")

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                try:
                    request = context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as error:
                    outer.handshake_errors.append(str(error))
                    return
                super().finish_request(request, client_address)

            def handle_error(self, request, client_address):
                pass

        self.httpd = Server((PINNED, 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tls_server(tls_material):
    servers = []

    def start(hostname: str) -> LoopbackTLSServer:
        servers.append(LoopbackTLSServer(tls_material[1][hostname]))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def tls_fetcher(resolutions: list, *, ca_file=None) -> MediaFetcher:
    """A fetcher whose DNS answers `media.test` from `resolutions` (one answer per call,
    so a rebinding second answer would show), trusting `ca_file` when given. Without
    it the fetcher builds its production client (system trust store)."""

    async def resolver(host, port):
        assert host == "media.test"
        return resolutions.pop(0)

    settings = Settings(model="m", media_allowed_networks=["127.0.0.0/8"])
    transport = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=str(ca_file))) if ca_file else None
    return MediaFetcher(settings, resolver=resolver, transport=transport)


async def test_https_goes_to_the_pinned_address_with_the_hostnames_sni_host_and_certificate(tls_server, tls_material):
    server = tls_server("media.test")
    # A second, different answer would be a DNS rebinding: it must never be asked for.
    resolutions = [[PINNED], ["127.0.0.3"]]
    media = tls_fetcher(resolutions, ca_file=tls_material[0])
    assert await media.fetch(f"https://media.test:{server.port}/a.png?x=1") == b"payload"
    assert resolutions == [["127.0.0.3"]]  # resolved once
    assert server.seen == [
        {"sni": "media.test", "host": f"media.test:{server.port}", "local_address": PINNED, "path": "/a.png?x=1"}
    ]
    await media.aclose()


async def test_https_certificate_for_another_hostname_is_refused(tls_server, tls_material):
    server = tls_server("other.test")  # valid chain to the trusted CA, wrong name
    media = tls_fetcher([[PINNED]], ca_file=tls_material[0])
    with pytest.raises(BadRequest) as caught:
        await media.fetch(f"https://media.test:{server.port}/a.png")
    assert caught.value.code == "media_fetch_failed"
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message and "media.test" in caught.value.message
    assert server.seen == []
    await media.aclose()


async def test_https_production_client_verifies_certificates(tls_server):
    # The fetcher's own client (no test transport) trusts only the system store, so
    # the test CA's certificate is refused and no request is sent.
    server = tls_server("media.test")
    media = tls_fetcher([[PINNED]])
    with pytest.raises(BadRequest) as caught:
        await media.fetch(f"https://media.test:{server.port}/a.png")
    assert caught.value.code == "media_fetch_failed" and "CERTIFICATE_VERIFY_FAILED" in caught.value.message
    assert server.seen == []
    await media.aclose()


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
