"""benchmarks/plots.py on small synthetic result JSONs: `python -m benchmarks.plots DIR`
writes one valid, non-blank PNG per figure, skips JSONs it does not plot, and fails
when there is nothing to plot."""

import colorsys
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def e2e_level(concurrency, scale):
    return {"concurrency": concurrency, "requests": 4 * concurrency, "errors": 0, "first_error": None,
            "requests_per_s": scale * (1 + concurrency ** 0.5), "output_tokens_per_s": 32 * scale * (1 + concurrency ** 0.5),
            "ttft_p50_s": 0.1 * concurrency / scale, "latency_p50_s": 0.15 * concurrency / scale,
            "latency_p99_s": 0.3 * concurrency / scale}


E2E = {"settings": {"concurrency": [1, 4, 16]},
       "servers": {name: {"levels": [e2e_level(c, scale) for c in (1, 4, 16)], "startup_s": 1.0}
                   for name, scale in (("ours", 1.2), ("builtin", 1.0))}}
PREPROCESSING = {"cpu": "Test CPU", "torch_threads": 1, "builtin_skipped": "no torchvision", "single": [
    {"image": "640x480", "max_tiles": 6, "tiles": 7, "images_per_s": {"ours-uint8": 60.0, "ours-f32": 50.0, "official": 40.0}},
    {"image": "1920x1080", "max_tiles": 12, "tiles": 9, "images_per_s": {"ours-uint8": 20.0, "ours-f32": 18.0, "official": 15.0}},
]}


def run_plots(folder):
    return subprocess.run([sys.executable, "-m", "benchmarks.plots", str(folder)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def plotted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    (folder / "e2e_small.json").write_text(json.dumps(E2E))
    (folder / "preprocessing_small.json").write_text(json.dumps(PREPROCESSING))
    (folder / "roofline.json").write_text(json.dumps({"families": []}))  # not a kind that is plotted
    result = run_plots(folder)
    assert result.returncode == 0, result.stderr
    return folder


def saturated_hues(image: Image.Image) -> dict[int, int]:
    """Pixel counts per 30-degree hue bucket, strongly coloured pixels only (axes, text and
    grid lines are black or grey, so a figure without its data has none)."""
    counts: dict[int, int] = {}
    for (r, g, b), n in ((pixel, n) for n, pixel in image.convert("RGB").getcolors(1 << 20)):
        hue, saturation, value = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        if saturation > 0.5 and value > 0.3:
            counts[int(hue * 12)] = counts.get(int(hue * 12), 0) + n
    return counts


@pytest.mark.parametrize("name, series", [
    ("e2e_small_throughput.png", 2), ("e2e_small_latency.png", 2), ("preprocessing_small.png", 2),
])
def test_each_figure_is_a_valid_png_with_its_series_drawn(plotted, name, series):
    path = plotted / name
    with Image.open(path) as image:
        image.verify()  # a complete, uncorrupted PNG
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 600 <= width <= 3000 and 300 <= height <= 2000
        hues = saturated_hues(image)
    # ours vs builtin, or (preprocessing) the blue "ours" pair vs the green official: distinct colours, each visible.
    assert len([bucket for bucket, count in hues.items() if count > 300]) >= series, hues


def test_only_plottable_results_get_figures(plotted):
    assert sorted(p.name for p in plotted.glob("*.png")) == [
        "e2e_small_latency.png", "e2e_small_throughput.png", "preprocessing_small.png"]


def test_nothing_to_plot_is_an_error(tmp_path):
    (tmp_path / "other.json").write_text("{}")
    result = run_plots(tmp_path)
    assert result.returncode == 1 and "no end-to-end or preprocessing" in result.stderr
    assert list(tmp_path.glob("*.png")) == []
