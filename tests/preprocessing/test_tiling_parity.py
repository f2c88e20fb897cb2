"""Tiling and normalisation against the transcription of the official code."""

import numpy as np
import pytest
import torch
from PIL import Image

from preprocessing import (
    MAX_TILES,
    find_grid,
    normalize_tiles,
    num_tiles,
    tile_image,
    tile_image_uint8,
)
from preprocessing.tiling import candidate_grids

from internvl_official_reference import (
    dynamic_preprocess,
    find_closest_aspect_ratio,
    official_grids,
    official_pixel_values,
    target_ratios,
)

SIDE = 2048
MAX_TILE_SETTINGS = (1, 6, 12, 24, 40)


@pytest.fixture(scope="module")
def all_sizes():
    widths, heights = np.meshgrid(np.arange(1, SIDE + 1), np.arange(1, SIDE + 1), indexing="ij")
    return widths.ravel(), heights.ravel()


def ours(widths, heights, max_tiles, min_tiles=1):
    return [
        find_grid(w, h, min_tiles=min_tiles, max_tiles=max_tiles) for w, h in zip(widths.tolist(), heights.tolist())
    ]


def assert_same_grids(widths, heights, max_tiles, min_tiles=1):
    cols, rows, _ = official_grids(widths, heights, min_tiles, max_tiles)
    expected = list(zip(cols.tolist(), rows.tolist()))
    got = ours(widths, heights, max_tiles, min_tiles)
    if got != expected:
        bad = [(w, h, g, e) for w, h, g, e in zip(widths.tolist(), heights.tolist(), got, expected) if g != e]
        pytest.fail(f"{len(bad)} sizes differ, e.g. (W, H, ours, official): {bad[:5]}")


@pytest.mark.parametrize("min_tiles,max_tiles", [(1, m) for m in range(1, MAX_TILES + 1)] + [(2, 6), (4, 12), (12, 12)])
def test_candidate_order_is_the_official_order(min_tiles, max_tiles):
    assert list(candidate_grids(min_tiles, max_tiles)) == target_ratios(min_tiles, max_tiles)


def test_vectorised_reference_is_the_literal_one():
    # The exhaustive checks below use the array version of the official code;
    # pin it to the literal transcription first.
    rng = np.random.default_rng(0)
    widths = rng.integers(1, 8193, 3000)
    heights = rng.integers(1, 8193, 3000)
    widths[:200] = heights[:200] * rng.integers(1, 5, 200)  # exact ratios: the tie paths
    for max_tiles in MAX_TILE_SETTINGS:
        cols, rows, _ = official_grids(widths, heights, 1, max_tiles)
        ratios = target_ratios(1, max_tiles)
        for w, h, c, r in zip(widths.tolist(), heights.tolist(), cols, rows):
            assert find_closest_aspect_ratio(w / h, ratios, w, h, 448) == (c, r)


def test_grid_exhaustive_default_max_tiles(all_sizes):
    """Every W, H in 1..2048 with max_tiles=12 (the InternVL2 default)."""
    assert_same_grids(*all_sizes, 12)


@pytest.mark.parametrize("max_tiles", [1, 6, 24, 40])
def test_grid_on_every_decision_boundary(all_sizes, max_tiles):
    """Other max_tiles, over W, H in 1..2048: every size where the official
    choice differs from a neighbour's (W +- 1 or H +- 1; this covers both the
    aspect boundaries and the area rule that settles exact ties), every size
    with a side <= 64, and 100k random sizes. Elsewhere the official choice is
    locally constant, so these are the sizes where an error would show."""
    widths, heights = all_sizes
    cols, rows, _ = official_grids(widths, heights, 1, max_tiles)
    choice = (cols * 64 + rows).reshape(SIDE, SIDE)
    selected = np.zeros((SIDE, SIDE), dtype=bool)
    changes_w = choice[1:, :] != choice[:-1, :]
    changes_h = choice[:, 1:] != choice[:, :-1]
    selected[1:, :] |= changes_w
    selected[:-1, :] |= changes_w
    selected[:, 1:] |= changes_h
    selected[:, :-1] |= changes_h
    selected[:64, :] = True
    selected[:, :64] = True
    selected = selected.ravel()
    selected[np.random.default_rng(max_tiles).integers(0, selected.size, 100_000)] = True
    picked = np.flatnonzero(selected)
    assert_same_grids(widths[picked], heights[picked], max_tiles)


@pytest.mark.parametrize("max_tiles", MAX_TILE_SETTINGS)
def test_grid_random_large_sizes(max_tiles):
    rng = np.random.default_rng(max_tiles)
    widths = np.concatenate([rng.integers(1, 8193, 20_000), rng.integers(1, 19, 2_000) * 448])
    heights = np.concatenate([rng.integers(1, 8193, 20_000), rng.integers(1, 19, 2_000) * 448])
    assert_same_grids(widths, heights, max_tiles)


@pytest.mark.parametrize("min_tiles,max_tiles", [(2, 6), (4, 12), (6, 24), (12, 12)])
def test_grid_with_min_tiles(min_tiles, max_tiles):
    rng = np.random.default_rng(7)
    assert_same_grids(rng.integers(1, 4097, 20_000), rng.integers(1, 4097, 20_000), max_tiles, min_tiles)


@pytest.mark.parametrize("min_tiles,max_tiles", [(0, 12), (1, 0), (5, 4), (1, 41), (41, 41)])
def test_tile_range_is_validated(min_tiles, max_tiles):
    with pytest.raises(ValueError):
        find_grid(100, 100, min_tiles=min_tiles, max_tiles=max_tiles)
    with pytest.raises(ValueError):
        tile_image(Image.new("RGB", (8, 8)), min_tiles=min_tiles, max_tiles=max_tiles)


def test_num_tiles_counts_the_thumbnail():
    assert num_tiles(448, 448) == 1  # one tile: no thumbnail
    assert num_tiles(896, 448) == 3
    assert num_tiles(896, 448, use_thumbnail=False) == 2
    for width, height, max_tiles in [(1920, 1080, 12), (800, 600, 6), (37, 1500, 24), (3000, 100, 40)]:
        official = dynamic_preprocess(Image.new("RGB", (width, height)), 1, max_tiles, 448, use_thumbnail=True)
        assert num_tiles(width, height, max_tiles=max_tiles) == len(official), (width, height, max_tiles)


def _random_image(width, height, seed):
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise exercise the bicubic filter's full range,
    # including clamping at 0 and 255.
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    noise = rng.integers(-60, 61, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


@pytest.mark.parametrize(
    "width,height,max_tiles,use_thumbnail",
    [
        (448, 448, 12, True),  # exactly one tile, no thumbnail
        (333, 517, 12, True),  # odd sizes, upscaled
        (1001, 597, 6, True),
        (2000, 301, 12, True),  # extreme aspect
        (1280, 720, 40, True),  # many tiles
        (777, 999, 12, False),
        (50, 50, 1, True),
        (37, 1500, 24, True),
    ],
)
def test_pixel_values_match_official(width, height, max_tiles, use_thumbnail):
    image = _random_image(width, height, seed=width * height)
    expected = official_pixel_values(image, 1, max_tiles, use_thumbnail)
    got = tile_image(image, max_tiles=max_tiles, use_thumbnail=use_thumbnail)
    assert got.dtype == torch.float32
    assert tuple(got.shape) == expected.shape
    assert got.shape[0] == num_tiles(width, height, max_tiles=max_tiles, use_thumbnail=use_thumbnail)
    assert np.abs(got.numpy() - expected).max() <= 1e-6


def test_uint8_tiles_are_the_official_crops():
    image = _random_image(1500, 900, seed=3)
    tiles = tile_image_uint8(image, max_tiles=12)
    cols, rows = find_grid(1500, 900)
    resized = image.resize((448 * cols, 448 * rows), Image.Resampling.BICUBIC)
    for k in range(cols * rows):
        box = ((k % cols) * 448, (k // cols) * 448, (k % cols + 1) * 448, (k // cols + 1) * 448)
        crop = np.asarray(resized.crop(box)).transpose(2, 0, 1)
        assert np.array_equal(tiles[k].numpy(), crop)
    thumb = np.asarray(image.resize((448, 448), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    assert np.array_equal(tiles[-1].numpy(), thumb)


# The official build_transform's constants (ImageNet), written out here rather than
# taken from the package under test.
OFFICIAL_MEAN = (0.485, 0.456, 0.406)
OFFICIAL_STD = (0.229, 0.224, 0.225)


def _every_value_tiles() -> np.ndarray:
    """uint8 [6, 3, 16, 16]: five random tiles and one holding each of 0..255 in every channel."""
    random_tiles = np.random.default_rng(0).integers(0, 256, (5, 3, 16, 16), dtype=np.uint8)
    all_values = np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16), (1, 3, 16, 16))
    return np.concatenate([random_tiles, all_values])


def test_normalisation_is_the_official_formula():
    # Exact arithmetic (float64) of ToTensor + Normalize: (v / 255 - mean) / std.
    # A float32 pipeline of three correctly rounded steps (each off by at most half an
    # ulp, mean and std themselves rounded to float32) lands within a few float32
    # ulps of it; values reach |2.64| where an ulp is 2.4e-7, so 1e-6 (~4 ulps)
    # bounds rounding, while any wrong constant or order of operations is off by >1e-4.
    tiles = _every_value_tiles()
    mean = np.array(OFFICIAL_MEAN, dtype=np.float64)[:, None, None]
    std = np.array(OFFICIAL_STD, dtype=np.float64)[:, None, None]
    exact = (tiles.astype(np.float64) / 255.0 - mean) / std
    got = normalize_tiles(torch.from_numpy(tiles.copy()))
    assert got.dtype == torch.float32
    assert np.abs(got.numpy().astype(np.float64) - exact).max() <= 1e-6


def test_normalisation_is_bit_identical_to_torchvision_arithmetic():
    # torchvision's steps, each an IEEE float32 operation, replayed in numpy (a
    # separate implementation): ToTensor's x.float().div(255), then Normalize's
    # sub(mean).div(std) with float32 mean and std.
    tiles = _every_value_tiles()
    mean = np.array(OFFICIAL_MEAN, dtype=np.float32)[:, None, None]
    std = np.array(OFFICIAL_STD, dtype=np.float32)[:, None, None]
    expected = (tiles.astype(np.float32) / np.float32(255) - mean) / std
    assert expected.dtype == np.float32
    got = normalize_tiles(torch.from_numpy(tiles.copy())).numpy()
    assert np.array_equal(got, expected), np.abs(got - expected).max()


def test_normalize_rejects_wrong_input():
    with pytest.raises(ValueError):
        normalize_tiles(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError):
        normalize_tiles(torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_tile_image_accepts_load_image_sources(tmp_path):
    image = _random_image(640, 480, seed=1)
    path = tmp_path / "a.png"
    image.save(path)
    expected = tile_image(image)
    assert torch.equal(tile_image(path), expected)
    assert torch.equal(tile_image(path.read_bytes()), expected)
    assert torch.equal(tile_image(image.convert("RGBA")), expected)  # converted like .convert("RGB")
