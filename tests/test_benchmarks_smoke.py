"""Every benchmark script runs at its smallest size, so the scripts cannot rot.

The CI venv has no torchvision: there the scripts must skip vLLM's built-in
InternVL processor with a printed reason and still run ours (and the official
transform). The end-to-end script is exercised against the shared live server
(`--base-url`), so it costs no second engine start.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_server import API_KEY

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"


def has_torchvision() -> bool:
    probe = "import torchvision, vllm.transformers_utils.processors.internvl"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, cwd=REPO).returncode == 0


def run_script(name: str, *args: str, timeout: int = 120) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / name), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_roofline_smoke():
    out = run_script("roofline.py", "--smoke", "--markdown")
    for family in ("InternVL2-1B", "InternVL2-Llama3-76B"):
        assert family in out
    sys.path.insert(0, str(BENCH))
    try:
        from roofline import roofline, vit_flops_per_tile
        from model_plugin.families import FAMILIES
    finally:
        sys.path.remove(str(BENCH))
    # InternViT-300M: ~0.3 B params x 1025 tokens x 2 + attention ~ 0.72 TFLOP per tile.
    assert 700e9 < vit_flops_per_tile(FAMILIES["InternVL2-1B"].vision)["total"] < 750e9
    assert roofline("InternVL2-1B").images_per_s > roofline("InternVL2-Llama3-76B").images_per_s


def test_preprocessing_smoke(tmp_path):
    out = run_script("bench_preprocessing.py", "--smoke", "--json", str(tmp_path / "p.json"))
    assert "bit-identical" in out
    assert "ours-uint8" in out and "official" in out
    if not has_torchvision():
        assert "SKIPPED builtin" in out and "torchvision" in out


def test_vision_encoder_smoke():
    # Tiny towers of both kinds; vLLM's built-in ViT module needs no torchvision.
    out = run_script("bench_vision_encoder.py", "--smoke", timeout=180)
    assert "InternViT-300M" in out and "InternViT-6B" in out
    assert "tiles/s" in out


@pytest.mark.slow
def test_e2e_smoke_against_live_server(live_server, tmp_path):
    out = run_script(
        "bench_e2e.py", "--smoke", "--base-url", live_server.base_url, "--api-key", API_KEY,
        "--json", str(tmp_path / "e2e.json"), timeout=300,
    )
    assert "single 13-tile request" in out


def test_jpeg_draft_smoke(tmp_path):
    import json

    report = tmp_path / "jpeg.json"
    out = run_script("bench_jpeg_draft.py", "--smoke", "--json", str(report))
    assert "speed-up" in out
    rows = json.loads(report.read_text())["rows"]
    assert [row["budget"] for row in rows] == [6, 12]
    for row in rows:
        # 4032x3024 is at least twice its 3x2 and 4x3 grids: decoded at half size, a few levels off.
        assert row["size"] == [4032, 3024] and row["tiles"] == (7 if row["budget"] == 6 else 13)
        assert 0 < row["error"]["mean"] < 1.5 and row["error"]["max"] > 0
        assert row["speedup"]["min"] <= row["speedup"]["median"] <= row["speedup"]["max"]


def test_flop_fraction_of_a_recorded_ab_run(tmp_path):
    import json

    out_path = tmp_path / "fractions.json"
    out = run_script("flop_fraction.py", str(REPO / "benchmarks/results/ab_tile_store.json"), "--json", str(out_path))
    assert "of peak" in out
    report = json.loads(out_path.read_text())
    assert report["peak_gflops"] > 1
    workloads = {row["workload"] for row in report["rows"]}
    assert workloads == {"fresh", "multiturn", "documents", "video"}
    for row in report["rows"]:
        parts = row["gflop_per_request"]
        assert parts["total"] == pytest.approx(parts["encoder"] + parts["prefill"] + parts["decode"])
        assert 0 < row["fraction_of_peak"] < 1
    # A resent image is encoded on the first of 4 turns only: a quarter of a fresh image's encoder work or less.
    per = {row["workload"]: row["gflop_per_request"] for row in report["rows"] if row["concurrency"] == 8}
    assert per["multiturn"]["encoder"] < 0.3 * per["fresh"]["encoder"]


@pytest.mark.slow
def test_ab_smoke_against_live_server(live_server, tmp_path):
    """The interleaved A/B harness with the live server as both sides: every workload and
    round measured on both, ratios with their spread, and identical prompts on both."""
    import json

    report_path = tmp_path / "ab.json"
    out = run_script(
        "bench_ab.py", "--smoke", "--urls", live_server.base_url, live_server.base_url, "--api-key", API_KEY,
        "--json", str(report_path), timeout=300,
    )
    assert "median over rounds" in out
    table = json.loads(report_path.read_text())["table"]
    assert {row["workload"] for row in table} == {"fresh", "multiturn", "documents", "video"}
    for row in table:
        assert row["requests_per_s_ratio"]["rounds"] == 2 == len(row["rounds"])
        assert row["requests_per_s_ratio"]["min"] <= row["requests_per_s_ratio"]["median"] <= row["requests_per_s_ratio"]["max"]
        assert row["prompt_tokens"]["a"] == row["prompt_tokens"]["b"] and row["errors"] == {"a": 0, "b": 0}
    documents = next(row for row in table if row["workload"] == "documents")
    assert min(documents["prompt_tokens"]["a"]) > 13 * 256  # 13 tiles of 256 tokens each
    frames = next(row for row in table if row["workload"] == "video")["prompt_tokens"]["a"]
    assert min(frames) > 8 * 256  # 8 frames of one tile each
    turns = next(row for row in table if row["workload"] == "multiturn")["prompt_tokens"]["a"]
    assert len(turns) >= 4  # each of the 4 turns resends a longer history
