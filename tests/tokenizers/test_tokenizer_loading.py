"""Every family's released tokenizer layout through vLLM's own loader, and streamed.

vLLM loads the tokenizer of `--model DIR` with `get_tokenizer` (AutoTokenizer
underneath, fed the checkpoint's config). None of these may need
`trust_remote_code`, and what vLLM's incremental detokenizer streams must be
what a full decode of the same ids gives.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from tokenizer_corpus import sample_texts

from model_plugin.families import FAMILIES

EXPECTED_CLASS = {
    "InternLM2ForCausalLM": ("model_plugin.tokenization_internlm2", "InternLM2Tokenizer"),
    "Phi3ForCausalLM": ("model_plugin.tokenization_llama", "LlamaTokenizer"),
    "Qwen2ForCausalLM": ("transformers.models.qwen2.tokenization_qwen2", "Qwen2Tokenizer"),
    "Qwen3ForCausalLM": ("transformers.models.qwen2.tokenization_qwen2", "Qwen2Tokenizer"),
    "Qwen3MoeForCausalLM": ("transformers.models.qwen2.tokenization_qwen2", "Qwen2Tokenizer"),
    "InternLM3ForCausalLM": ("model_plugin.tokenization_internlm3", "InternLM3Tokenizer"),
    "GptOssForCausalLM": ("transformers.tokenization_utils_tokenizers", "TokenizersBackend"),
}


def _expected(family: str) -> tuple[str, str]:
    spec = FAMILIES[family]
    if spec.llm_architecture == "LlamaForCausalLM":
        if spec.tokens.bos == "<|begin_of_text|>":
            return ("transformers.tokenization_utils_tokenizers", "TokenizersBackend")
        return ("model_plugin.tokenization_llama", "LlamaTokenizer")
    return EXPECTED_CLASS[spec.llm_architecture]


@pytest.fixture(scope="module")
def vllm_tokenizer(released_dir):
    from vllm.tokenizers.registry import get_tokenizer

    loaded = {}

    def get(family: str):
        if family not in loaded:
            directory = released_dir(family)
            spec = FAMILIES[family].tiny()
            config = {
                "architectures": ["InternVLChatModel"],
                "model_type": "internvl_chat",
                "template": spec.template,
                "vision_config": spec.vision,
                "llm_config": spec.llm,
            }
            (directory / "config.json").write_text(json.dumps(config))
            loaded[family] = get_tokenizer(str(directory), trust_remote_code=False)
        return loaded[family]

    return get


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_vllm_loads_released_layout_without_remote_code(vllm_tokenizer, family):
    tokenizer = vllm_tokenizer(family)
    module, name = _expected(family)
    # vLLM wraps the class in a caching subclass; the loaded class is its base.
    base = type(tokenizer).__mro__[1]
    assert (base.__module__, base.__name__) == (module, name)
    assert tokenizer.is_fast
    spec = FAMILIES[family]
    for token in spec.stop_tokens:
        assert tokenizer.encode(token, add_special_tokens=False) == [tokenizer.convert_tokens_to_ids(token)]


def _stream(tokenizer, prompt_ids: list[int], output_ids: list[int]) -> str:
    from vllm import SamplingParams
    from vllm.v1.engine.detokenizer import FastIncrementalDetokenizer, IncrementalDetokenizer

    request = SimpleNamespace(
        request_id="r",
        prompt_token_ids=prompt_ids,
        sampling_params=SamplingParams(skip_special_tokens=True, max_tokens=max(1, len(output_ids))),
    )
    detokenizer = IncrementalDetokenizer.from_new_request(tokenizer, request)
    assert isinstance(detokenizer, FastIncrementalDetokenizer)
    text = ""
    for token_id in output_ids:
        detokenizer.update([token_id], stop_terminated=False)
        text += detokenizer.get_next_output_text(finished=False, delta=True)
    return text + detokenizer.get_next_output_text(finished=True, delta=True)


@pytest.mark.parametrize(
    "family",
    [
        "InternVL2-1B", "InternVL2-4B", "InternVL2-8B", "InternVL2-40B", "InternVL2-Llama3-76B",
        "InternVL3-9B", "InternVL3_5-1B", "InternVL3_5-GPT-OSS-20B-A4B-Preview",
    ],
)
def test_vllm_streamed_text_equals_full_decode(vllm_tokenizer, family):
    tokenizer = vllm_tokenizer(family)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Describe the image."}], add_generation_prompt=True, tokenize=True
    )
    if not isinstance(prompt, list):
        prompt = prompt["input_ids"]
    prompt_text = tokenizer.decode(prompt, skip_special_tokens=True)
    for text in sample_texts(tuple(FAMILIES[family].special_tokens), count=150, seed=4):
        output = tokenizer.encode(text, add_special_tokens=False)
        full = tokenizer.decode(prompt + output, skip_special_tokens=True)
        assert full.startswith(prompt_text)
        assert _stream(tokenizer, prompt, output) == full[len(prompt_text):], text
