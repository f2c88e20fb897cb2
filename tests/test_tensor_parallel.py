"""Tensor parallel 2 on the CPU gives the same greedy output as TP 1.

The 6B-style tower has a head count that 2 does not divide: it only shards
because the attention is padded with dummy heads.
"""

import os

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


def greedy(llm, template_name: str):
    template = get_template(template_name)
    requests = [
        {
            "prompt": template.render([(image_prefix(1) + "Describe the image.", None)]),
            "multi_modal_data": {"image": [make_image(700, 500, 5)]},
            "mm_processor_kwargs": {"max_tiles": 4},
        },
        {"prompt": template.render([("Count to ten.", None)])},
    ]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, logprobs=1)
    return llm.generate(requests, params, use_tqdm=False)


@pytest.mark.parametrize("family", FAMILIES, ids=list(FAMILIES))
def test_tp2_matches_tp1(family, checkpoint, monkeypatch):
    import json

    path = checkpoint(family)
    template = json.loads((path / "config.json").read_text())["template"]

    llm = make_llm(path)
    try:
        tp1 = greedy(llm, template)
    finally:
        shutdown_llm(llm)

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")
    llm = make_llm(path, tensor_parallel_size=2, distributed_executor_backend="mp")
    try:
        tp2 = greedy(llm, template)
    finally:
        shutdown_llm(llm)
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"

    for one, two in zip(tp1, tp2):
        assert one.prompt_token_ids == two.prompt_token_ids
        assert one.outputs[0].token_ids == two.outputs[0].token_ids
        for a, b in zip(one.outputs[0].logprobs, two.outputs[0].logprobs):
            (token_a, lp_a), (token_b, lp_b) = next(iter(a.items())), next(iter(b.items()))
            assert token_a == token_b
            assert abs(lp_a.logprob - lp_b.logprob) < 1e-3
