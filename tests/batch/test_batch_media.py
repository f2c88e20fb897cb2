"""Local paths in image/video parts become data URLs; URLs of any scheme pass through."""

import base64
import copy

import pytest

from batch.media import (
    LocalMediaError,
    inline_local_media,
    inline_local_media_sync,
    is_local_path,
)


def user(*parts):
    return {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": list(parts)}]}


def decoded(url: str) -> tuple[str, bytes]:
    head, data = url.split(",", 1)
    return head, base64.b64decode(data)


@pytest.mark.parametrize("url, local", [
    ("photo.png", True), ("/abs/photo.png", True), ("sub/dir/clip.mp4", True), ("C:\\pics\\a.png", True),
    ("http://127.0.0.1/a.png", False), ("https://example.com/a.png", False), ("data:image/png;base64,AAAA", False),
    ("file:///srv/media/a.png", False),
])
def test_what_counts_as_a_local_path(url, local):
    assert is_local_path(url) is local


def test_local_paths_inline_and_remote_urls_pass(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png-bytes")
    (tmp_path / "clip.mp4").write_bytes(b"mp4-bytes")
    (tmp_path / "f1.jpg").write_bytes(b"f1")
    absolute = tmp_path / "abs.webp"
    absolute.write_bytes(b"webp")
    body = user(
        {"type": "image_url", "image_url": {"url": "a.png", "max_tiles": 2}},
        {"type": "image_url", "image_url": {"url": str(absolute)}},
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/remote.png"}},
        {"type": "video_url", "video_url": {"url": "clip.mp4", "num_frames": 4}},
        {"type": "video_url", "video_url": {"frames": ["f1.jpg", "https://x.test/f2.jpg"]}},
        {"type": "video_frames", "video_frames": {"urls": ["f1.jpg"]}},
        {"type": "text", "text": "a.png"},
    )
    original = copy.deepcopy(body)
    out = inline_local_media_sync(body, tmp_path)
    assert body == original  # the caller keeps the small version
    parts = out["messages"][1]["content"]
    assert decoded(parts[0]["image_url"]["url"]) == ("data:image/png;base64", b"png-bytes")
    assert parts[0]["image_url"]["max_tiles"] == 2
    assert decoded(parts[1]["image_url"]["url"]) == ("data:image/webp;base64", b"webp")
    assert parts[2]["image_url"]["url"] == "http://127.0.0.1:1/remote.png"
    assert decoded(parts[3]["video_url"]["url"]) == ("data:video/mp4;base64", b"mp4-bytes")
    assert decoded(parts[4]["video_url"]["frames"][0])[1] == b"f1"
    assert parts[4]["video_url"]["frames"][1] == "https://x.test/f2.jpg"
    assert decoded(parts[5]["video_frames"]["urls"][0])[1] == b"f1"
    assert parts[6] == {"type": "text", "text": "a.png"}


async def test_bodies_without_local_media_are_returned_as_is(tmp_path):
    body = user({"type": "image_url", "image_url": {"url": "https://x.test/a.png"}})
    assert await inline_local_media(body, tmp_path) is body


async def test_a_missing_file_is_a_local_media_error(tmp_path):
    with pytest.raises(LocalMediaError, match="missing.png"):
        await inline_local_media(user({"type": "image_url", "image_url": {"url": "missing.png"}}), tmp_path)
