"""One-image requests for engine tests, and their comparison with the transformers oracle.

Shared by the bf16, quantized and LoRA/embeds tests: the vLLM request, the
official prompt ids and pixel values for the same image, and the teacher-forced
comparison of a greedy completion's logprobs with an oracle.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from preprocessing import expand_image_placeholders, get_template, image_prefix, tile_image
from tests.oracle import load_oracle, oracle_logprobs

QUESTION = "Describe the image."


def make_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)


@dataclass
class ImageCase:
    image: Image.Image
    max_tiles: int
    question: str = QUESTION


DEFAULT_CASE = ImageCase(make_image(800, 600, 1), max_tiles=6)  # 6 tiles + thumbnail


@dataclass
class Served:
    checkpoint: Path
    llm: object

    @property
    def template(self):
        return get_template(json.loads((self.checkpoint / "config.json").read_text())["template"])

    def request(self, case: ImageCase = DEFAULT_CASE) -> dict:
        return {
            "prompt": self.template.render([(image_prefix(1) + case.question, None)]),
            "multi_modal_data": {"image": [case.image]},
            "mm_processor_kwargs": {"max_tiles": [case.max_tiles]},
        }

    def official_inputs(self, case: ImageCase = DEFAULT_CASE) -> tuple[list[int], torch.Tensor]:
        """Prompt ids and pixel values exactly as the official chat() builds them."""
        tiles = tile_image(case.image, max_tiles=case.max_tiles)
        text = self.template.render([(image_prefix(1) + case.question, None)])
        ids = self.llm.get_tokenizer()(expand_image_placeholders(text, [len(tiles)])).input_ids
        return ids, tiles

    def on_model(self, probe: Callable[[torch.nn.Module], object]) -> object:
        """`probe(model)` run inside the (single) worker, its result returned.

        collective_rpc sends the callable with cloudpickle (local functions too)
        when VLLM_ALLOW_INSECURE_SERIALIZATION=1; apply_model's argument path does not.
        """
        [result] = self.llm.collective_rpc(lambda worker: probe(worker.get_model()))
        return result

    def greedy(self, request: dict, max_tokens: int, logprobs: int = 1, **kwargs):
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, logprobs=logprobs)
        return self.llm.generate([request], params, use_tqdm=False, **kwargs)[0]


def compare_with_oracle(
    served: Served,
    oracle_checkpoint: Path,
    output,
    case: ImageCase = DEFAULT_CASE,
    prepare_oracle: Callable[[torch.nn.Module], None] | None = None,
) -> tuple[float, float]:
    """(worst |logprob diff| over the reported top tokens, worst greedy gap).

    The greedy gap is how far below the oracle's best token the token vLLM chose
    is, in oracle logprob (0 when they agree). Asserts the prompt ids are the
    official ones. The oracle is teacher-forced on vLLM's completion;
    `prepare_oracle` may adjust it first (e.g. hooks).
    """
    official_ids, pixel_values = served.official_inputs(case)
    assert list(output.prompt_token_ids) == official_ids, "prompt ids differ from the official ones"
    tokenizer = served.llm.get_tokenizer()
    oracle = load_oracle(oracle_checkpoint, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))
    if prepare_oracle is not None:
        prepare_oracle(oracle)
    generated = list(output.outputs[0].token_ids)
    expected = oracle_logprobs(oracle, official_ids + generated, pixel_values)
    start = len(official_ids) - 1  # the distribution after the last prompt token
    worst = gap = 0.0
    for step, (token, logprobs) in enumerate(zip(generated, output.outputs[0].logprobs)):
        row = expected[start + step]
        for token_id, logprob in logprobs.items():
            worst = max(worst, abs(logprob.logprob - row[token_id].item()))
        gap = max(gap, row.max().item() - row[token].item())
    return worst, gap
