"""The memory profile covers the largest input a request can send.

vLLM profiles memory (and sizes the encoder cache) with the dummy inputs our
builder makes and with `get_mm_max_tokens_per_item`. Both must match the largest
image (engine `max_tiles_limit` tiles plus the thumbnail) and the longest video
(`max_video_frames`), also when the limit is above config.json's
`max_dynamic_patch` (12), which is the default budget of a request.
"""

import pytest

from tests.processor_support import TOKENS_PER_TILE, make_processor, process, strip


@pytest.fixture(scope="module")
def model(checkpoint):
    return checkpoint("InternVL2-1B")


def profiled_tiles(processor, modality: str) -> int:
    dummy = processor.get_dummy_mm_inputs({modality: 1})
    [placeholder] = dummy["mm_placeholders"][modality]
    return placeholder.get_num_embeds() // TOKENS_PER_TILE


@pytest.mark.parametrize("limit", [6, 12, 13, 24, 40])
def test_the_profiled_image_is_the_largest_a_request_may_send(model, limit):
    processor = make_processor(model, max_tiles_limit=limit)
    expected_tiles = limit + 1  # the tiles plus the thumbnail
    assert profiled_tiles(processor, "image") == expected_tiles
    max_tokens = processor.info.get_mm_max_tokens_per_item(16384, {"image": 1})["image"]
    assert max_tokens == expected_tiles * TOKENS_PER_TILE


def test_the_profiled_video_has_the_most_frames(model):
    processor = make_processor(model, max_tiles_limit=24, max_video_frames=8)
    assert profiled_tiles(processor, "video") == 8
    assert processor.info.get_mm_max_tokens_per_item(16384, {"video": 1})["video"] == 8 * TOKENS_PER_TILE


def test_limit_mm_per_prompt_size_options_shrink_the_profile(model):
    # `--limit-mm-per-prompt '{"image": {"count": 1, "width": ..., "height": ...}}'`
    # is the user's way to profile for smaller images; it is honoured.
    processor = make_processor(
        model,
        limit_mm_per_prompt={"image": {"count": 1, "width": 448 * 4, "height": 448}, "video": 0},
        max_tiles_limit=24,
    )
    assert profiled_tiles(processor, "image") == 5


def test_the_profile_encodes_every_dummy_tile(model):
    # The dummies' tiles are all alike; with digests the model's store of tiles
    # would encode one and the profile would miss the encoder's real peak.
    processor = make_processor(model, max_tiles_limit=6)
    for modality in ("image", "video"):
        dummy = processor.get_dummy_mm_inputs({modality: 1})
        [item] = dummy["mm_kwargs"][modality]
        assert f"{modality}_tile_digests" not in item, modality
    # A request's tiles do carry them, one per tile.
    request = process(processor, images=[strip(2)])
    [item] = request["mm_kwargs"]["image"]
    assert item["image_tile_digests"].data.shape == (3, 2)
