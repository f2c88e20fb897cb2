"""Decode untrusted image input into an upright RGB PIL image."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import MediaError
from .sources import resolve_source

DEFAULT_MAX_PIXELS = 40_000_000
# The encoded formats accepted from clients: the web's image formats (Pillow's
# JPEG opener also reads the MPO JPEGs many phone cameras write). Every other
# Pillow plugin (TIFF, PSD, ICO, EPS, PCX, SGI, JPEG 2000, ...) is a decoder of
# hostile input that nobody needs here.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")

ImageSource = bytes | bytearray | memoryview | str | Path | Image.Image


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load bytes, base64, a data URL, a local path or a PIL image as RGB."""
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels)
        try:
            source.load()  # a lazily opened image may still be truncated
        except Exception as exc:
            raise MediaError(f"corrupt or truncated image: {exc}", code="invalid_image") from None
        return _upright_rgb(source, owned=False)
    resolved = resolve_source(source, code="invalid_image")
    if isinstance(resolved, Path):
        try:
            resolved = resolved.read_bytes()
        except OSError as exc:
            raise MediaError(f"cannot read image file: {exc}", code="invalid_image") from None
    return decode_image_bytes(resolved, max_pixels=max_pixels)


def decode_image_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode encoded image bytes fully; reject bombs before pixel decoding."""
    return _decode(data, max_pixels, None)[0]


def decode_image_reduced(
    data: bytes, needed: Callable[[tuple[int, int]], tuple[int, int]], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, tuple[int, int]]:
    """Like `decode_image_bytes`, but a JPEG far larger than `needed(full size)` is decoded smaller.

    libjpeg scales in the DCT domain by 1/2, 1/4 or 1/8, and `draft` picks the
    smallest of those still at least the needed size: the decoder touches a
    quarter to a sixty-fourth of the pixels and the later resize starts smaller.
    The pixels differ a little from a full decode and resize (the speed and the
    error are in benchmarks/bench_jpeg_draft.py), so this is opt-in. Returns the
    image and its full upright size, which is what grids and boxes are for.
    """
    return _decode(data, max_pixels, needed)


def _decode(data: bytes, max_pixels: int, needed) -> tuple[Image.Image, tuple[int, int]]:
    if not data:
        raise MediaError("image data is empty", code="invalid_image")
    # PIL only warns between MAX_IMAGE_PIXELS and twice that; a warning must not
    # let a bomb through, so escalate it to an exception here.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MediaError(f"image too large: {exc}", code="image_too_large") from None
        except UnidentifiedImageError:
            raise MediaError(
                f"not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)})", code="invalid_image"
            ) from None
        except Exception as exc:  # decoders of hostile data raise arbitrary types
            raise MediaError(f"cannot identify image data: {exc}", code="invalid_image") from None
        # Image.open only parsed the header, so the size is known but no pixel
        # memory has been spent yet.
        _check_pixels(image.size, max_pixels)
        full_size = _upright_size(image)
        if needed is not None and image.format in ("JPEG", "MPO"):
            width, height = needed(full_size)
            if full_size != image.size:  # stored sideways (EXIF orientation 5..8)
                width, height = height, width
            image.draft("RGB", (width, height))
        try:
            # A full load() makes truncated files fail here instead of later.
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MediaError(f"image too large: {exc}", code="image_too_large") from None
        except Exception as exc:
            raise MediaError(f"corrupt or truncated image: {exc}", code="invalid_image") from None
    return _upright_rgb(image, owned=True), full_size


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """The size once EXIF orientation is applied (orientations 5..8 swap the sides)."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception as exc:  # malformed EXIF blocks
        raise MediaError(f"invalid EXIF data: {exc}", code="invalid_image") from None
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise MediaError(f"image has no pixels ({width}x{height})", code="invalid_image")
    if width * height > max_pixels:
        raise MediaError(
            f"image too large: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
            code="image_too_large",
        )


def _upright_rgb(image: Image.Image, *, owned: bool) -> Image.Image:
    """Apply EXIF orientation and convert to RGB.

    `owned` images were decoded here, so they may be modified in place; this
    saves two full-size copies on the common already-upright RGB JPEG.
    """
    try:
        if owned:
            ImageOps.exif_transpose(image, in_place=True)
        elif image.getexif().get(0x0112, 1) not in (0, 1):  # 0x0112 = Orientation
            image = ImageOps.exif_transpose(image)
    except Exception as exc:  # malformed EXIF blocks
        raise MediaError(f"invalid EXIF data: {exc}", code="invalid_image") from None
    if image.mode == "RGB":
        return image
    # Exactly the official InternVL conversion, so pixels match its outputs for
    # every mode (alpha is dropped, not composited).
    try:
        return image.convert("RGB")
    except Exception as exc:
        raise MediaError(f"cannot convert image to RGB: {exc}", code="invalid_image") from None
