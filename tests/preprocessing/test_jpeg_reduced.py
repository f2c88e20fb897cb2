"""Opt-in reduced JPEG decoding: the same grid and tiles a few levels off the exact path.

The exact path (full decode, bicubic resize) is the official one and stays the
default; this one lets libjpeg scale in the DCT when the image is at least twice
its grid. Bounds here are what benchmarks/bench_jpeg_draft.py measures on
photo-like content, with headroom.
"""

import io

import numpy as np
import pytest
from PIL import Image

from preprocessing import TILE_SIZE, decode_image_bytes, decode_image_reduced, find_grid, tile_image_uint8


def photo(width: int, height: int, seed: int = 0, fmt: str = "JPEG", exif=None) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    waves = np.stack([np.sin(2 * np.pi * (3 * x + 2 * y)), np.cos(2 * np.pi * (5 * x * y + y)),
                      np.sin(2 * np.pi * (7 * x - 4 * y))], -1)
    pixels = (waves * 90 + 128 + rng.normal(0, 6, waves.shape)).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}), **({"exif": exif} if exif else {}))
    return buffer.getvalue()


def grid_pixels(budget: int):
    def needed(size: tuple[int, int]) -> tuple[int, int]:
        cols, rows = find_grid(*size, max_tiles=budget)
        return cols * TILE_SIZE, rows * TILE_SIZE

    return needed


def both_paths(data: bytes, budget: int):
    image, full = decode_image_reduced(data, grid_pixels(budget))
    reduced = tile_image_uint8(image, max_tiles=budget, grid_for=full)
    exact_image = decode_image_bytes(data)
    return image, full, reduced, exact_image, tile_image_uint8(exact_image, max_tiles=budget)


@pytest.mark.parametrize("budget", [6, 12])
def test_a_large_photo_is_decoded_smaller_with_the_same_grid_and_nearly_the_same_tiles(budget):
    image, full, reduced, exact_image, exact = both_paths(photo(4000, 3000), budget)
    assert full == exact_image.size == (4000, 3000)
    assert image.size == (2000, 1500)  # 1/2 is the smallest scale still covering a 4x3 or 3x2 grid
    assert reduced.shape == exact.shape
    error = (reduced.int() - exact.int()).abs().float()
    assert error.mean() <= 1.5 and error.max() <= 16


def test_a_photo_near_its_grid_size_decodes_exactly():
    image, full, reduced, exact_image, exact = both_paths(photo(1600, 1200), 12)
    assert image.size == full == exact_image.size
    assert np.array_equal(reduced.numpy(), exact.numpy())


def test_a_png_is_never_reduced():
    image, full, reduced, _, exact = both_paths(photo(2400, 1800, fmt="PNG"), 2)
    assert image.size == full == (2400, 1800)
    assert np.array_equal(reduced.numpy(), exact.numpy())


def test_the_grid_and_the_size_are_the_upright_image_s():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90 degrees
    data = photo(4000, 2000, exif=exif.tobytes())
    image, full, reduced, exact_image, exact = both_paths(data, 12)
    assert full == exact_image.size == (2000, 4000)
    assert image.size[0] < image.size[1] and reduced.shape == exact.shape
    assert (reduced.int() - exact.int()).abs().float().mean() <= 1.5


def test_the_grid_is_chosen_for_the_full_size_not_the_decoded_one():
    # 1796x1197 is just closer to 2:1 than to 1:1; its half-scale decode (898x599)
    # is just closer to 1:1. The grid must stay the full image's 2x1.
    image, full, reduced, _, exact = both_paths(photo(1796, 1197), 2)
    assert image.size == (898, 599) and find_grid(*image.size, max_tiles=2) == (1, 1)
    assert reduced.shape == exact.shape == (3, 3, 448, 448)
