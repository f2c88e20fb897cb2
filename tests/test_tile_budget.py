"""Tile budgets: the largest budget the engine allows is served, never refused for
encoder-cache size, and per-image budgets are honoured."""

import pytest
from vllm import SamplingParams

from preprocessing import get_template, image_prefix
from tests.conftest import make_llm, shutdown_llm
from tests.preprocessing.internvl_official_reference import dynamic_preprocess
from tests.test_plugin_parity import make_image

pytestmark = pytest.mark.slow

TOKENS_PER_TILE = 256


@pytest.fixture(scope="module")
def llm40(checkpoint):
    llm = make_llm(
        checkpoint("InternVL2-1B"),
        max_model_len=16384,
        limit_mm_per_prompt={"image": 2, "video": 0},
        mm_processor_kwargs={"max_tiles_limit": 40},
    )
    yield llm
    shutdown_llm(llm)


def context_tokens(llm, output) -> int:
    context_id = llm.get_tokenizer().convert_tokens_to_ids("<IMG_CONTEXT>")
    return output.prompt_token_ids.count(context_id)


def run(llm, images, max_tiles, *, pretiled=False):
    prompt = get_template("Hermes-2").render([(image_prefix(len(images)) + "Describe.", None)])
    request = {"prompt": prompt, "multi_modal_data": {"image": images}, "mm_processor_kwargs": {"max_tiles": max_tiles}}
    if pretiled:
        # The server's path: tiles made outside vLLM, handed over as uint8 tiles.
        from model_plugin.processing import pretiled_image
        from preprocessing import tile_image_uint8

        request["multi_modal_data"] = {"image": [pretiled_image(tile_image_uint8(image, max_tiles=max_tiles)) for image in images]}
        request["multi_modal_uuids"] = {"image": [f"pretiled-{i}" for i in range(len(images))]}
        del request["mm_processor_kwargs"]
    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True, logprobs=1)
    return llm.generate([request], params, use_tqdm=False)[0]


def test_the_largest_budget_is_served(llm40):
    image = make_image(8 * 448, 5 * 448, 4)  # an 8x5 grid: 40 tiles + thumbnail
    output = run(llm40, [image], 40)
    assert context_tokens(llm40, output) == 41 * TOKENS_PER_TILE
    # The answer itself: the same 41 tiles made on the server's path give the same
    # tokens and log-probabilities.
    reference = run(llm40, [image], 40, pretiled=True)
    assert reference.prompt_token_ids == output.prompt_token_ids
    assert len(output.outputs[0].token_ids) == 4
    assert output.outputs[0].token_ids == reference.outputs[0].token_ids
    for a, b in zip(output.outputs[0].logprobs, reference.outputs[0].logprobs, strict=True):
        assert abs(next(iter(a.values())).logprob - next(iter(b.values())).logprob) < 1e-4


def test_per_image_budgets(llm40):
    images = [make_image(1600, 900, 5), make_image(900, 1600, 6)]
    output = run(llm40, images, [2, 9])
    # The official dynamic_preprocess (transcribed independently), thumbnail included.
    expected = sum(
        len(dynamic_preprocess(image, max_num=budget, use_thumbnail=True)) for image, budget in zip(images, [2, 9])
    )
    assert expected == (2 + 1) + (8 + 1)  # 1600x900: 2x1 at budget 2; 900x1600: 2x4 at budget 9
    assert context_tokens(llm40, output) == expected * TOKENS_PER_TILE


def test_a_budget_over_the_limit_is_refused(llm40):
    with pytest.raises(ValueError, match="max_tiles must be in 1..40"):
        run(llm40, [make_image(800, 600, 7)], 41)
