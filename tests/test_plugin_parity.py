"""The plugin against an independent implementation (transformers' InternVL).

For every LLM backbone and both ViT kinds: the same input ids and pixel values,
and the log-probabilities vLLM reports at the last prompt position and along a
16-token greedy continuation agree with the oracle (teacher-forced) to 1e-3.
"""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from preprocessing import (
    expand_image_placeholders,
    get_template,
    image_prefix,
    tile_image,
    tile_frames,
)
from tests.conftest import make_llm, shutdown_llm
from tests.oracle import load_oracle, oracle_logprobs

pytestmark = pytest.mark.slow

# Every backbone (Qwen2, InternLM2, Phi-3, Llama) and both ViT kinds (300M, 6B).
FAMILIES = ["InternVL2-1B", "InternVL2-2B", "InternVL2-4B", "InternVL2-40B"]
TOLERANCE = 1e-3
MAX_TOKENS = 16


def make_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)


@dataclass
class Case:
    name: str
    question: str
    images: list[Image.Image]
    max_tiles: list[int]
    frames: list[Image.Image]


CASES = [
    Case("one_image", "Describe the image.", [make_image(800, 600, 1)], [6], []),
    Case(
        "two_images",
        "Compare the two images.",
        [make_image(900, 500, 2), make_image(300, 640, 3)],
        [4, 3],
        [],
    ),
    Case("video", "What happens in the video?", [], [], [make_image(320, 240, 10 + i) for i in range(8)]),
    Case("text_only", "Write a short poem about the sea.", [], [], []),
]


@dataclass
class Engine:
    family: str
    checkpoint: object
    llm: object
    template: object


@pytest.fixture(scope="module", params=FAMILIES)
def engine(request, checkpoint):
    path = checkpoint(request.param)
    template = get_template(json.loads((path / "config.json").read_text())["template"])
    config = json.loads((path / "config.json").read_text())["llm_config"]
    # vLLM switches Phi-3's LongRoPE to the long factors for every position once
    # max_model_len exceeds the original context; transformers does so only for
    # sequences that long. Stay within it so both use the short factors.
    original_context = config.get("original_max_position_embeddings")
    llm = make_llm(path, **({"max_model_len": original_context} if original_context else {}))
    yield Engine(request.param, path, llm, template)
    shutdown_llm(llm)


def build_request(engine: Engine, case: Case) -> dict:
    if case.frames:
        user = "<video>" + case.question
        data = {"video": np.stack([np.asarray(frame) for frame in case.frames])}
    elif case.images:
        user = image_prefix(len(case.images)) + case.question
        data = {"image": case.images}
    else:
        user, data = case.question, {}
    request = {"prompt": engine.template.render([(user, None)])}
    if data:
        request["multi_modal_data"] = data
    if case.max_tiles:
        request["mm_processor_kwargs"] = {"max_tiles": case.max_tiles}
    return request


def official_inputs(engine: Engine, case: Case) -> tuple[str, torch.Tensor | None]:
    """The prompt text and pixel values exactly as the official chat() builds them."""
    if case.frames:
        prefix = "".join(f"Frame{i + 1}: <image>\n" for i in range(len(case.frames)))
        text = engine.template.render([(prefix + case.question, None)])
        return expand_image_placeholders(text, [1] * len(case.frames)), tile_frames(case.frames)
    if case.images:
        text = engine.template.render([(image_prefix(len(case.images)) + case.question, None)])
        tiles = [tile_image(image, max_tiles=n) for image, n in zip(case.images, case.max_tiles)]
        return expand_image_placeholders(text, [len(t) for t in tiles]), torch.cat(tiles)
    return engine.template.render([(case.question, None)]), None


@pytest.fixture(scope="module")
def oracle(engine):
    tokenizer = engine.llm.get_tokenizer()
    return load_oracle(engine.checkpoint, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))


def generate(engine: Engine, case: Case, **sampling):
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, **sampling)
    return engine.llm.generate([build_request(engine, case)], params, use_tqdm=False)[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_transformers_oracle(engine, oracle, case, record_property):
    output = generate(engine, case, logprobs=5)
    tokenizer = engine.llm.get_tokenizer()

    text, pixel_values = official_inputs(engine, case)
    official_ids = tokenizer(text).input_ids  # as the official chat(): special tokens on
    assert list(output.prompt_token_ids) == official_ids, "prompt ids differ from the official ones"

    completion = output.outputs[0]
    generated = list(completion.token_ids)
    assert len(generated) == MAX_TOKENS
    expected = oracle_logprobs(oracle, official_ids + generated, pixel_values)

    worst = 0.0
    start = len(official_ids) - 1  # the distribution after the last prompt token
    for step, (token, logprobs) in enumerate(zip(generated, completion.logprobs)):
        row = expected[start + step]
        for token_id, logprob in logprobs.items():
            worst = max(worst, abs(logprob.logprob - row[token_id].item()))
        # vLLM's greedy choice is the oracle's best token (well-separated logits).
        assert row.argmax().item() == token, (
            f"step {step}: oracle prefers {row.argmax().item()} ({row.max().item():.4f}), "
            f"vLLM chose {token} (oracle {row[token].item():.4f}, vLLM {logprobs[token].logprob:.4f})"
        )
    record_property("max_abs_logprob_diff", worst)
    print(f"{engine.family} {case.name}: max |logprob diff| = {worst:.2e}")
    assert worst <= TOLERANCE


def test_the_image_matters(engine):
    case = CASES[0]
    first = generate(engine, case, logprobs=1)
    again = generate(engine, case, logprobs=1)
    other = Case(case.name, case.question, [make_image(800, 600, 99)], case.max_tiles, [])
    changed = generate(engine, other, logprobs=1)

    assert first.outputs[0].token_ids == again.outputs[0].token_ids
    first_lp = [next(iter(lp.values())).logprob for lp in first.outputs[0].logprobs]
    again_lp = [next(iter(lp.values())).logprob for lp in again.outputs[0].logprobs]
    assert np.allclose(first_lp, again_lp, atol=1e-5)
    changed_lp = [next(iter(lp.values())).logprob for lp in changed.outputs[0].logprobs]
    assert first.outputs[0].token_ids != changed.outputs[0].token_ids or not np.allclose(
        first_lp, changed_lp, atol=1e-4
    )


def test_pretiled_image_matches_pil_image(engine):
    """The server's path (tiles made on its threads) equals vLLM-side tiling."""
    from model_plugin.processing import pretiled_image
    from preprocessing import tile_image_uint8

    case = CASES[0]
    from_pil = generate(engine, case, logprobs=1)
    request = build_request(engine, case)
    tiles = tile_image_uint8(case.images[0], max_tiles=case.max_tiles[0])
    request["multi_modal_data"] = {"image": [pretiled_image(tiles)]}
    request["multi_modal_uuids"] = {"image": ["pretiled-test-image"]}
    del request["mm_processor_kwargs"]
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, logprobs=1)
    pretiled = engine.llm.generate([request], params, use_tqdm=False)[0]
    assert pretiled.prompt_token_ids == from_pil.prompt_token_ids
    assert pretiled.outputs[0].token_ids == from_pil.outputs[0].token_ids
    for a, b in zip(from_pil.outputs[0].logprobs, pretiled.outputs[0].logprobs):
        assert abs(next(iter(a.values())).logprob - next(iter(b.values())).logprob) < 1e-4
