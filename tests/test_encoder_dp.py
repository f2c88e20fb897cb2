"""`mm_encoder_tp_mode="data"` under tensor parallel 2 on the CPU.

Every TP rank holds the whole vision tower and encodes only its share of the
tiles (then all-gathers), instead of every rank encoding every tile with
sharded weights. The output must match TP 1, and each rank must have encoded
half of the tiles.
"""

import json

import pytest
from vllm import SamplingParams

from preprocessing import get_template, image_prefix
from tests.conftest import make_llm, shutdown_llm
from tests.test_plugin_parity import make_image

pytestmark = pytest.mark.slow

FAMILIES = {
    "InternVL2-1B": "300M-style tower (LayerNorm, qkv bias)",
    "InternVL2-40B": "6B-style tower (RMSNorm, qk-norm, 5 heads)",
}


def record_encoder_batches(worker):
    """Runs in each worker: note the tile count of every vision-tower call."""
    tower = worker.model_runner.get_model().vision_model
    tower.encoded_batches = []
    if not getattr(tower, "batch_hook_installed", False):
        tower.embeddings.register_forward_pre_hook(
            lambda module, args: tower.encoded_batches.append(args[0].shape[0])
        )
        tower.batch_hook_installed = True


def encoded_batches(worker):
    return worker.model_runner.get_model().vision_model.encoded_batches


def greedy(llm, template_name: str):
    template = get_template(template_name)
    requests = [
        {
            # 2x1 tiles + thumbnail: an odd tile count is padded for the
            # split across ranks.
            "prompt": template.render([(image_prefix(1) + "Describe the image.", None)]),
            "multi_modal_data": {"image": [make_image(1000, 500, 5)]},
            "mm_processor_kwargs": {"max_tiles": 4},
        },
        {"prompt": template.render([("Count to ten.", None)])},
    ]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, logprobs=1)
    llm.collective_rpc(record_encoder_batches)
    outputs = llm.generate(requests, params, use_tqdm=False)
    return outputs, llm.collective_rpc(encoded_batches)


@pytest.mark.parametrize("family", FAMILIES, ids=list(FAMILIES))
def test_data_parallel_encoder_matches_tp1(family, checkpoint, monkeypatch):
    # The hooks above travel to the workers as pickled functions.
    monkeypatch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    path = checkpoint(family)
    template = json.loads((path / "config.json").read_text())["template"]

    llm = make_llm(path)
    try:
        tp1, [tp1_batches] = greedy(llm, template)
    finally:
        shutdown_llm(llm)

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")
    llm = make_llm(
        path, tensor_parallel_size=2, distributed_executor_backend="mp", mm_encoder_tp_mode="data"
    )
    try:
        tp2, rank_batches = greedy(llm, template)
    finally:
        shutdown_llm(llm)

    assert any(tiles % 2 for tiles in tp1_batches), f"no odd tile count in {tp1_batches}"
    half = [-(-tiles // 2) for tiles in tp1_batches]
    assert rank_batches == [half, half], f"TP 1 encoded {tp1_batches} tiles per call"

    for one, two in zip(tp1, tp2):
        assert one.prompt_token_ids == two.prompt_token_ids
        assert one.outputs[0].token_ids == two.outputs[0].token_ids
        for a, b in zip(one.outputs[0].logprobs, two.outputs[0].logprobs):
            (token_a, lp_a), (token_b, lp_b) = next(iter(a.items())), next(iter(b.items()))
            assert token_a == token_b
            assert abs(lp_a.logprob - lp_b.logprob) < 1e-3
