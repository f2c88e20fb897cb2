"""Full-size configs load with dummy weights in bf16 and generate from an image.

This proves the real shapes (ViT widths, GQA, fused projections, vocab sizes)
go through the plugin. vLLM's dummy weights are tiny random values, the logits nearly
flat, so no answer can be checked against a reference (nor even that the image moves
them); the checks are the prompt's expansion and finite log-probabilities at every step
(bf16 at full width overflows where a dtype or scale is wrong). Parity of the answers
is tested on tiny checkpoints with real random weights (tests/test_plugin_parity.py).
"""

import json
import math

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
        # Flat logits put padded vocabulary rows (no token text) in the top 5: no detokenizing.
        params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True, logprobs=5, detokenize=False)
        output = llm.generate([request], params, use_tqdm=False)[0]
        context_id = llm.get_tokenizer().convert_tokens_to_ids("<IMG_CONTEXT>")
    finally:
        shutdown_llm(llm)
    completion = output.outputs[0]
    # One tile: 256 context tokens between <img> and </img>.
    assert output.prompt_token_ids.count(context_id) == 256
    assert len(completion.logprobs) == len(completion.token_ids) == 3
    for token, step in zip(completion.token_ids, completion.logprobs):
        assert token in step and all(math.isfinite(entry.logprob) for entry in step.values()), step
