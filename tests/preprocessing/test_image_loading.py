"""load_image / decode_image_bytes: every input form, modes, hostile data."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from preprocessing import MediaError, decode_image_bytes, load_image


def _sample(width=64, height=48, mode="RGB"):
    rng = np.random.default_rng(width * 1000 + height)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode) if mode != "RGB" else Image.fromarray(pixels, "RGB")


def _encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _sixteen_bit(width, height):
    values = (np.arange(width * height, dtype=np.uint32).reshape(height, width) * 97) % 65536
    return Image.frombytes("I;16", (width, height), values.astype("<u2").tobytes())


@pytest.fixture
def png_bytes():
    return _encode(_sample(), "PNG")


def _same_pixels(a, b):
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_every_input_form(tmp_path, png_bytes):
    expected = _sample()
    path = tmp_path / "picture.png"
    path.write_bytes(png_bytes)
    b64 = base64.b64encode(png_bytes).decode()
    forms = [
        png_bytes,
        bytearray(png_bytes),
        memoryview(png_bytes),
        b64,
        "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)),  # MIME line-wrapped
        base64.urlsafe_b64encode(png_bytes).decode().rstrip("="),
        "data:image/png;base64," + b64,
        "DATA:image/png;BASE64," + b64,
        str(path),
        path,
        Image.open(io.BytesIO(png_bytes)),  # lazily opened PIL image
        expected,
    ]
    for form in forms:
        image = load_image(form)
        assert image.mode == "RGB"
        assert _same_pixels(image, expected), type(form)


def test_decode_image_bytes_is_what_load_image_uses(png_bytes):
    assert _same_pixels(decode_image_bytes(png_bytes), load_image(png_bytes))


def test_exif_orientation_is_applied():
    image = _sample(80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    loaded = load_image(data)
    assert loaded.size == (40, 80)
    plain = Image.open(io.BytesIO(data)).convert("RGB")
    assert _same_pixels(loaded, plain.transpose(Image.Transpose.ROTATE_270))
    # And for an already-open PIL image the caller keeps its original.
    opened = Image.open(io.BytesIO(data))
    assert load_image(opened).size == (40, 80)
    assert opened.size == (80, 40)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "1", "CMYK", "I;16", "I", "F", "YCbCr", "RGBX"])
def test_modes_convert_exactly_like_convert_rgb(mode):
    image = _sixteen_bit(33, 17) if mode == "I;16" else _sample(33, 17).convert(mode)
    assert image.mode == mode
    assert _same_pixels(load_image(image), image.convert("RGB"))


@pytest.mark.parametrize("mode,fmt", [("RGBA", "PNG"), ("LA", "PNG"), ("L", "PNG"), ("1", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("P", "GIF")])
def test_encoded_modes_convert_exactly_like_convert_rgb(mode, fmt):
    if mode == "I;16":
        image = _sixteen_bit(40, 20)
    else:
        image = _sample(40, 20).convert(mode)
    data = _encode(image, fmt)
    official = Image.open(io.BytesIO(data)).convert("RGB")
    assert _same_pixels(load_image(data), official)


def test_palette_with_transparency():
    rgba = _sample(30, 30).convert("RGBA")
    rgba.putpixel((0, 0), (1, 2, 3, 0))
    palette = rgba.convert("P")
    palette.info["transparency"] = 0
    data = _encode(palette, "PNG")
    official = Image.open(io.BytesIO(data)).convert("RGB")
    assert _same_pixels(load_image(data), official)


def test_pixel_limit_is_checked_before_decoding():
    data = _encode(Image.new("L", (1000, 1000)), "PNG")
    with pytest.raises(MediaError) as err:
        load_image(data, max_pixels=999_999)
    assert err.value.code == "image_too_large"
    assert load_image(data, max_pixels=1_000_000).size == (1000, 1000)


def test_decompression_bomb_is_rejected_without_decoding():
    # A 1-bit PNG claiming 20000x20000 pixels is tiny on disk.
    bomb = _encode(Image.new("1", (20000, 20000)), "PNG", optimize=True)
    assert len(bomb) < 200_000
    with pytest.raises(MediaError) as err:
        load_image(bomb)
    assert err.value.code == "image_too_large"
    # Beyond PIL's own bomb limit even a generous max_pixels is refused.
    with pytest.raises(MediaError):
        load_image(bomb, max_pixels=10**12)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_raise(fmt):
    data = _encode(_sample(256, 256), fmt)
    for cut in (len(data) // 2, len(data) - 64):
        with pytest.raises(MediaError) as err:
            load_image(data[:cut])
        assert err.value.code == "invalid_image"


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x00" * 100,
        b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        b"GIF89a",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
        "not base64 at all !!!",
        "data:image/png;base64,@@@@",
        "data:image/png,rawtext",
        "data:nonsense",
        base64.b64encode(b"hello world, not an image").decode(),
        "",
        "/no/such/file.png",
        12345,
        None,
    ],
)
def test_bad_input_raises_media_error(bad):
    with pytest.raises(MediaError):
        load_image(bad)


def test_missing_path_message():
    with pytest.raises(MediaError, match="file not found"):
        load_image("/no/such/file.png")


def test_media_error_is_a_value_error():
    assert issubclass(MediaError, ValueError)
    assert MediaError("x", code="invalid_image").code == "invalid_image"


def test_animated_image_gives_first_frame():
    frames = [Image.new("RGB", (20, 20), (255, 0, 0)), Image.new("RGB", (20, 20), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    assert load_image(buffer.getvalue()).getpixel((5, 5)) == (255, 0, 0)
