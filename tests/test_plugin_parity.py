"""The plugin against an independent implementation (transformers' InternVL).

For every LLM backbone and both ViT kinds: the oracle is fed from the independent
transcription of the official code (prompt template, <image> expansion, tiling and
normalisation in tests/preprocessing/internvl_official_reference.py), never from the
package under test. vLLM's prompt ids must equal the official ones, and the
log-probabilities vLLM reports at the last prompt position and along a 16-token
greedy continuation agree with the oracle (teacher-forced) to 1e-3.
"""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from preprocessing import get_template, image_prefix
from tests.conftest import make_llm, shutdown_llm
from tests.image_request import make_image
from tests.oracle import load_oracle, oracle_logprobs
from tests.preprocessing import internvl_official_reference as official

pytestmark = pytest.mark.slow

# Every backbone (Qwen2, InternLM2, Phi-3, Llama; InternLM3, Qwen3, Qwen3-MoE,
# GPT-OSS) and both ViT kinds (300M, 6B). InternVL2.5/3's Qwen2.5 and InternLM2.5
# are the Qwen2 and InternLM2 architectures; InternVL3-1B adds dynamic-NTK rope.
FAMILIES = [
    "InternVL2-1B",
    "InternVL2-2B",
    "InternVL2-4B",
    "InternVL2-40B",
    "InternVL3-1B",
    "InternVL3-9B",
    "InternVL3_5-1B",
    "InternVL3_5-30B-A3B",
    "InternVL3_5-GPT-OSS-20B-A4B-Preview",
]
TOLERANCE = 1e-3
MAX_TOKENS = 16


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
    config: dict


@pytest.fixture(scope="module", params=FAMILIES)
def engine(request, checkpoint):
    path = checkpoint(request.param)
    config = json.loads((path / "config.json").read_text())
    template = get_template(config["template"])
    # vLLM switches Phi-3's LongRoPE to the long factors for every position once
    # max_model_len exceeds the original context; transformers does so only for
    # sequences that long. Stay within it so both use the short factors.
    original_context = config["llm_config"].get("original_max_position_embeddings")
    with pytest.MonkeyPatch.context() as patch:
        # Lets collective_rpc carry probe functions to the worker (tests only).
        patch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        llm = make_llm(path, **({"max_model_len": original_context} if original_context else {}))
        yield Engine(request.param, path, llm, template, config)
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
    """The query text and pixel values as the official chat() builds them, from the
    independent transcription only (nothing from preprocessing/ or server/)."""
    template_name = engine.config["template"]
    per_tile = official.num_image_token(engine.config)
    if case.frames:
        pixels, patches = official.official_video_pixel_values(case.frames)
        question = official.video_question(case.question, len(case.frames))
    elif case.images:
        per_image = [
            official.official_pixel_values(image, 1, budget, True) for image, budget in zip(case.images, case.max_tiles)
        ]
        pixels, patches = np.concatenate(per_image), [len(tiles) for tiles in per_image]
        question = official.multi_image_question(case.question, len(case.images))
    else:
        return official.chat_query(template_name, case.question, [], per_tile), None
    return official.chat_query(template_name, question, patches, per_tile), torch.from_numpy(pixels)


@pytest.fixture(scope="module")
def oracle(engine):
    tokenizer = engine.llm.get_tokenizer()
    return load_oracle(engine.checkpoint, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))


def image_context_id(engine: Engine) -> int:
    return engine.llm.get_tokenizer().convert_tokens_to_ids("<IMG_CONTEXT>")


def generate(engine: Engine, case: Case, **sampling):
    from vllm import SamplingParams

    # Random weights over a small vocabulary can pick <IMG_CONTEXT>; the oracle
    # would take a generated one for an image slot, so it is never chosen here.
    # Reported log-probabilities stay the raw ones.
    sampling.setdefault("logit_bias", {image_context_id(engine): -1e4})
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, **sampling)
    return engine.llm.generate([build_request(engine, case)], params, use_tqdm=False)[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_transformers_oracle(engine, oracle, case, record_property):
    record_property("max_abs_logprob_diff", assert_matches_oracle(engine, oracle, case))


def assert_matches_oracle(engine: Engine, oracle, case: Case) -> float:
    """vLLM's prompt ids equal the official ones and its log-probabilities the oracle's; the worst gap."""
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
        # vLLM's greedy choice is the oracle's best token (well-separated logits),
        # <IMG_CONTEXT> aside (see generate).
        choosable = row.clone()
        choosable[image_context_id(engine)] = float("-inf")
        assert choosable.argmax().item() == token, (
            f"step {step}: oracle prefers {row.argmax().item()} ({row.max().item():.4f}), "
            f"vLLM chose {token} (oracle {row[token].item():.4f}, vLLM {logprobs[token].logprob:.4f})"
        )
    print(f"{engine.family} {case.name}: max |logprob diff| = {worst:.2e}")
    assert worst <= TOLERANCE
    return worst


def tile_store_counts(engine: Engine) -> tuple[int, int]:
    """(tiles served from the model's store, tiles encoded) so far."""
    [counts] = engine.llm.collective_rpc(
        lambda worker: (worker.get_model().tile_cache.hits, worker.get_model().tile_cache.misses)
    )
    return counts


def test_tiles_met_again_are_not_encoded_again_and_answers_still_match(engine, oracle):
    # New images for this test, and requests that vLLM's own caches cannot answer
    # (another budget, another prompt): only the model's store of tiles can.
    image = make_image(800, 600, 41)
    generate(engine, Case("six_tiles", "Describe the image.", [image], [6], []))  # 3x2 + thumbnail
    hits, encoded = tile_store_counts(engine)
    # At budget 1 the image is one tile: the thumbnail encoded just above.
    assert_matches_oracle(engine, oracle, Case("thumbnail_again", "What is it?", [image], [1], []))
    assert tile_store_counts(engine) == (hits + 1, encoded)
    # A blank page: a 4x1 grid and its thumbnail, five identical tiles, one encoding.
    page = Image.new("RGB", (4 * 448, 448), (247, 246, 249))
    assert_matches_oracle(engine, oracle, Case("blank_page", "Read the page.", [page], [4], []))
    assert tile_store_counts(engine) == (hits + 1 + 4, encoded + 1)


def first_step(output) -> dict[int, float]:
    """The top log-probabilities vLLM reports for the first generated token."""
    return {token: logprob.logprob for token, logprob in output.outputs[0].logprobs[0].items()}


def test_the_same_request_gives_the_same_output(engine):
    case = CASES[0]
    first = generate(engine, case, logprobs=5)
    again = generate(engine, case, logprobs=5)
    assert first.outputs[0].token_ids == again.outputs[0].token_ids
    for a, b in zip(first.outputs[0].logprobs, again.outputs[0].logprobs):
        assert a.keys() == b.keys()
        assert all(abs(a[token].logprob - b[token].logprob) <= 1e-5 for token in a)


def test_the_image_matters(engine):
    # Same prompt ids, only the pixels differ: the next-token distribution after
    # the prompt must move by far more than run-to-run noise (<= 1e-5 above).
    case = CASES[0]
    first = generate(engine, case, logprobs=5)
    other = Case(case.name, case.question, [make_image(800, 600, 99)], case.max_tiles, [])
    changed = generate(engine, other, logprobs=5)
    assert first.prompt_token_ids == changed.prompt_token_ids
    a, b = first_step(first), first_step(changed)
    moved = max(abs(a[token] - b[token]) if token in b else float("inf") for token in a)
    print(f"{engine.family}: first-step top-5 logprobs moved by up to {moved:.2e} with another image")
    assert moved > 1e-3


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
