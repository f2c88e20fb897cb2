"""file:// URLs with odd bytes, links swapped between resolving and opening, and
image decoders outside the allow-list: all 4xx, never a 500, never a file outside."""

import io
import os

import pytest
from PIL import Image

import server.media
from preprocessing import MediaError, decode_image_bytes
from preprocessing.image import ACCEPTED_FORMATS
from server.errors import APIError
from server.media import MediaFetcher
from server.settings import Settings

SECRET = b"outside the media directory"


@pytest.fixture
def tree(tmp_path):
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    (media / "sub" / "a.png").write_bytes(b"inside")
    (media / "dir with space").mkdir()
    (media / "dir with space" / "b.png").write_bytes(b"spaced")
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(SECRET)
    (outside / "sub" / "a.png").write_bytes(SECRET)
    (media / "link-out").symlink_to(outside / "secret")
    (media / "link-in").symlink_to(media / "sub" / "a.png")
    os.mkfifo(media / "fifo")
    return media, outside


def _fetcher(media):
    return MediaFetcher(Settings(model="m", media_local_dir=media))


def odd_urls(media):
    root = str(media)
    return [
        f"file://{root}/sub/a.png%00.png",  # NUL
        f"file://{root}/sub/a%00",
        f"file://{root}/sub/%0aa.png",  # control characters
        f"file://{root}/sub/a.png%7f",
        f"file://{root}/sub/%ff%fe.png",  # not UTF-8
        f"file://{root}/sub/%2e%2e/%2e%2e/outside/secret",  # encoded dot-dot
        f"file://{root}/../outside/secret",
        f"file://{root}%2f..%2foutside%2fsecret",  # encoded separators
        f"file://{root}/sub%5c..%5c..%5coutside%5csecret",  # backslashes are just bytes here
        f"file://{root}/link-out",  # a link that leads outside
        f"file://{root}/fifo",  # would block a reader for ever
        f"file://{root}/sub",  # a directory
        f"file://{root}",
        f"file://{root}/" + "x" * 5000,  # name too long
        f"file://{root}/" + "d/" * 3000 + "a.png",  # path too long
        f"file://{root}/missing.png",
        "file:sub/a.png",  # relative
        "file://other-host/etc/passwd",
        "file:///etc/passwd",
        "file:///proc/self/environ",
        "file:///dev/zero",
        f"file://[{root}",  # malformed netloc
        "file://%00/x",
    ]


async def test_every_odd_path_is_a_4xx(tree):
    media, _ = tree
    fetcher = _fetcher(media)
    for url in odd_urls(media):
        with pytest.raises(APIError) as caught:
            await fetcher.fetch(url)
        assert 400 <= caught.value.status < 500, (url, caught.value.status)
        assert caught.value.code in {"invalid_url", "file_not_allowed", "file_not_found"}, (url, caught.value.code)


async def test_plain_and_inside_links_and_encoded_names_still_work(tree):
    media, _ = tree
    fetcher = _fetcher(media)
    assert await fetcher.fetch(f"file://{media}/sub/a.png") == b"inside"
    assert await fetcher.fetch(f"file://localhost{media}/sub/a.png") == b"inside"
    assert await fetcher.fetch(f"file://{media}/%73ub/a.png") == b"inside"
    assert await fetcher.fetch(f"file://{media}%2fsub%2fa.png") == b"inside"  # %2F is a plain "/" in a path
    assert await fetcher.fetch(f"file://{media}/dir%20with%20space/b.png") == b"spaced"
    assert await fetcher.fetch(f"file://{media}/link-in") == b"inside"  # a link that stays inside


@pytest.mark.parametrize("swapped", ["directory", "file"])
async def test_a_link_swapped_in_after_resolving_is_not_followed(tree, monkeypatch, swapped):
    media, outside = tree
    real_open = server.media._open_beneath

    def swap_then_open(root, parts):
        # The race: the path has been resolved and checked, then a component
        # is replaced by a link to somewhere outside before it is opened.
        if swapped == "directory":
            (media / "sub").rename(media / "sub-old")
            (media / "sub").symlink_to(outside / "sub")
        else:
            (media / "sub" / "a.png").unlink()
            (media / "sub" / "a.png").symlink_to(outside / "secret")
        return real_open(root, parts)

    monkeypatch.setattr(server.media, "_open_beneath", swap_then_open)
    with pytest.raises(APIError) as caught:
        await _fetcher(media).fetch(f"file://{media}/sub/a.png")
    assert caught.value.status == 400 and caught.value.code == "file_not_allowed"


def _encode(fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ACCEPTED_FORMATS)
def test_accepted_formats_decode(fmt):
    assert decode_image_bytes(_encode(fmt)).size == (16, 12)


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM", "TGA", "SGI", "PCX", "IM", "DDS", "QOI", "SPIDER", "EPS"])
def test_other_pillow_formats_are_refused(fmt):
    try:
        data = _encode(fmt)
    except (OSError, KeyError, ValueError):
        pytest.skip(f"this Pillow cannot write {fmt}")
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would open it
    with pytest.raises(MediaError) as caught:
        decode_image_bytes(data)
    assert caught.value.code == "invalid_image" and "accepted format" in str(caught.value)
