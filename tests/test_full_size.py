"""Full-size configs load with dummy weights in bf16 and generate from an image.

This proves the real shapes (ViT widths, GQA, fused projections, vocab sizes)
go through the plugin; the weights are random, so only the mechanics are checked.
"""

import json

import pytest
from vllm import SamplingParams

from preprocessing import get_template, image_prefix
from tests.conftest import make_llm, shutdown_llm
from tests.test_plugin_parity import make_image

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family", ["InternVL2-1B", "InternVL2-2B", "InternVL2-4B"])
def test_full_size_generates_from_an_image(family, checkpoint):
    path = checkpoint(family, "full")
    template = get_template(json.loads((path / "config.json").read_text())["template"])
    llm = make_llm(
        path,
        dtype="bfloat16",
        load_format="dummy",
        max_model_len=1024,
        max_num_batched_tokens=1024,
        max_num_seqs=1,
        limit_mm_per_prompt={"image": 1, "video": 0},
        mm_processor_kwargs={"max_tiles_limit": 1},
    )
    try:
        request = {
            "prompt": template.render([(image_prefix(1) + "What is this?", None)]),
            "multi_modal_data": {"image": [make_image(640, 480, 7)]},
            "mm_processor_kwargs": {"max_tiles": 1},
        }
        params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
        output = llm.generate([request], params, use_tqdm=False)[0]
        context_id = llm.get_tokenizer().convert_tokens_to_ids("<IMG_CONTEXT>")
    finally:
        shutdown_llm(llm)
    assert len(output.outputs[0].token_ids) == 3
    # One tile: 256 context tokens between <img> and </img>.
    assert output.prompt_token_ids.count(context_id) == 256
