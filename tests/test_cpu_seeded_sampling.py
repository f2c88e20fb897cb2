"""Seeded sampling survives chunked prefill on the CPU backend.

vLLM rewinds a seeded generator's offset when it discards the sample of a
partially prefilled request; CPU generators have no offset, and the engine died.
"""

import pytest
from vllm import SamplingParams

from preprocessing import get_template, image_prefix
from tests.conftest import make_llm, shutdown_llm
from tests.test_plugin_parity import make_image

pytestmark = pytest.mark.slow


def test_seeded_requests_with_chunked_prefill(checkpoint):
    llm = make_llm(checkpoint("InternVL2-1B"), max_num_batched_tokens=512, max_model_len=4096)
    try:
        prompt = get_template("Hermes-2").render([(image_prefix(1) + "Describe.", None)])
        requests = [
            {
                "prompt": prompt,
                "multi_modal_data": {"image": [make_image(900, 600, seed)]},
                "mm_processor_kwargs": {"max_tiles": 4},
            }
            for seed in range(3)
        ]
        params = [SamplingParams(temperature=1.0, seed=7, max_tokens=6) for _ in requests]
        first = llm.generate(requests, params, use_tqdm=False)
        again = llm.generate(requests, params, use_tqdm=False)
    finally:
        shutdown_llm(llm)
    assert all(len(out.outputs[0].token_ids) > 0 for out in first)
    # The same seeds reproduce the same samples.
    assert [o.outputs[0].token_ids for o in first] == [o.outputs[0].token_ids for o in again]
