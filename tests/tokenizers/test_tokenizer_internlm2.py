"""InternLM2 released layout: our fast class against sentencepiece + the slow-class rules.

The reference below is written from the released `tokenization_internlm2.py`
(slow class) as transformers' slow tokenizer runs it: added tokens are split
out of the text first (longest match), every remaining segment goes through
`SentencePieceProcessor.encode` on its own, BOS is prepended. Decoding turns
each run of ordinary pieces into text with `SentencePieceProcessor.decode`
and keeps added tokens whole (or drops special ones when asked).
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import sentencepiece as spm
from tokenizer_corpus import sample_texts
from transformers import AutoTokenizer

FAMILY = "InternVL2-2B"


class SlowInternLM2Reference:
    def __init__(self, directory):
        self.sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
        config = json.loads((directory / "tokenizer_config.json").read_text())
        self.added = {int(i): entry for i, entry in config["added_tokens_decoder"].items()}
        self.added_ids = {entry["content"]: i for i, entry in self.added.items()}
        self.bos_id = self.added_ids[config["bos_token"]] if config.get("add_bos_token", True) else None
        ordered = sorted(self.added_ids, key=len, reverse=True)
        self.splitter = re.compile("(" + "|".join(map(re.escape, ordered)) + ")")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.bos_id] if add_special_tokens and self.bos_id is not None else []
        for segment in self.splitter.split(text):
            if segment in self.added_ids:
                ids.append(self.added_ids[segment])
            elif segment:
                ids += self.sp.encode(segment)
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        if skip_special_tokens:
            # The slow class drops special ids first, then decodes what is
            # left as one run.
            ids = [i for i in ids if not (i in self.added and self.added[i]["special"])]
        out, run = [], []
        for i in ids:
            if i in self.added:
                out.append(self._decode_run(run, at_start=not out))
                out.append(self.added[i]["content"])
                run = []
            else:
                run.append(i)
        out.append(self._decode_run(run, at_start=not out))
        return "".join(out)

    def _decode_run(self, run: list[int], at_start: bool) -> str:
        text = self.sp.decode(run)
        # sentencepiece drops the dummy-prefix space at the start of what it
        # decodes; after a kept special token that space is real text.
        # (The slow class instead pads special tokens with spaces of its own,
        # which InternLM2Tokenizer deliberately does not copy.)
        dummy = self.sp.encode("a", out_type=str)[0].startswith("\u2581")
        if run and not at_start and dummy and self.sp.id_to_piece(run[0]).startswith("\u2581"):
            text = " " + text
        return text


@pytest.fixture(scope="module", params=[False, True], ids=["no-dummy-prefix", "dummy-prefix"])
def pair(request, released_dir):
    directory = released_dir(FAMILY, add_dummy_prefix=request.param)
    return AutoTokenizer.from_pretrained(str(directory)), SlowInternLM2Reference(directory), request.param


def test_released_layout_needs_no_remote_code(released_dir):
    directory = released_dir(FAMILY, add_dummy_prefix=False)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "InternLM2Tokenizer"
    assert "auto_map" in config and not (directory / "tokenizer.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    assert type(tokenizer).__name__ == "InternLM2Tokenizer"
    assert type(tokenizer).__module__.startswith("model_plugin.")
    assert tokenizer.is_fast


def test_model_really_differs_in_dummy_prefix(pair):
    tokenizer, reference, dummy_prefix = pair
    # Guards the parametrization: the two models must tokenize differently.
    assert (reference.sp.encode("Hello", out_type=str)[0].startswith("\u2581")) is dummy_prefix


def test_encode_matches_slow_class(pair):
    tokenizer, reference, _ = pair
    texts = sample_texts(tuple(reference.added_ids))
    mismatches = [
        (text, tokenizer.encode(text), reference.encode(text))
        for text in texts
        if tokenizer.encode(text) != reference.encode(text)
    ]
    assert not mismatches[:5], f"{len(mismatches)} of {len(texts)} texts differ"


def test_bos_only_when_asked(pair):
    tokenizer, reference, _ = pair
    assert tokenizer.encode("Hi")[0] == tokenizer.convert_tokens_to_ids("<s>") == 1
    assert tokenizer.encode("Hi", add_special_tokens=False) == reference.encode("Hi", add_special_tokens=False)
    assert tokenizer.encode("Hi")[-1] != tokenizer.eos_token_id


def test_special_token_ids_are_the_released_ones(pair):
    tokenizer, reference, _ = pair
    for content, token_id in reference.added_ids.items():
        assert tokenizer.convert_tokens_to_ids(content) == token_id
        assert tokenizer.encode(content, add_special_tokens=False) == [token_id]
    size = reference.sp.get_piece_size()
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|im_start|>")] == [size - 2, size - 1]
    assert tokenizer.convert_tokens_to_ids("<img>") == size
    assert len(tokenizer) == size + 9


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_decode_matches_slow_class(pair, skip_special_tokens):
    tokenizer, reference, _ = pair
    for text in sample_texts(tuple(reference.added_ids), count=500, seed=1):
        ids = reference.encode(text)
        assert tokenizer.decode(ids, skip_special_tokens=skip_special_tokens) == reference.decode(
            ids, skip_special_tokens
        ), text


def test_decode_of_arbitrary_ids(pair):
    # Model output is any id sequence. Byte pieces are left out here: on
    # invalid UTF-8 sentencepiece and `tokenizers` disagree on how many U+FFFD
    # to write (valid byte runs are covered by the corpus tests above).
    import random

    tokenizer, reference, _ = pair
    rng = random.Random(2)
    choices = [i for i in range(reference.sp.get_piece_size()) if not reference.sp.is_byte(i)]
    choices += list(range(reference.sp.get_piece_size(), len(tokenizer)))
    for _ in range(300):
        ids = [rng.choice(choices) for _ in range(rng.randint(1, 20))]
        for skip in (True, False):
            assert tokenizer.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip), ids


def _vllm_stream_decode(tokenizer, prompt_ids: list[int], output_ids: list[int], skip_special_tokens: bool) -> str:
    from vllm import SamplingParams
    from vllm.v1.engine.detokenizer import FastIncrementalDetokenizer, IncrementalDetokenizer

    request = SimpleNamespace(
        request_id="r",
        prompt_token_ids=prompt_ids,
        sampling_params=SamplingParams(skip_special_tokens=skip_special_tokens, max_tokens=max(1, len(output_ids))),
    )
    detokenizer = IncrementalDetokenizer.from_new_request(tokenizer, request)
    assert isinstance(detokenizer, FastIncrementalDetokenizer)
    streamed = ""
    for token_id in output_ids:
        detokenizer.update([token_id], stop_terminated=False)
        streamed += detokenizer.get_next_output_text(finished=False, delta=True)
    return streamed + detokenizer.get_next_output_text(finished=True, delta=True)


@pytest.mark.parametrize(
    "prompt_text", ["<|im_start|>user\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n", ""]
)
def test_vllm_incremental_decode_equals_full_decode(pair, prompt_text):
    # What vLLM streams must be what the whole sequence decodes to, past the
    # prompt (so a leading "▁" of the output is a real space after a prompt,
    # and the dummy-prefix space when the output starts the text).
    tokenizer, reference, _ = pair
    prompt = reference.encode(prompt_text)
    prompt_text_out = reference.decode(prompt, True)
    for text in sample_texts(tuple(reference.added_ids), count=200, seed=3):
        output = reference.encode(text, add_special_tokens=False)
        full = reference.decode(prompt + output, True)
        assert full.startswith(prompt_text_out)
        assert _vllm_stream_decode(tokenizer, prompt, output, True) == full[len(prompt_text_out):], text


def test_conversion_is_cached(released_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERNVL_TOKENIZER_CACHE", str(tmp_path))
    directory = released_dir(FAMILY, add_dummy_prefix=False)
    first = AutoTokenizer.from_pretrained(str(directory))
    cached = list(tmp_path.glob("spm-*.json"))
    assert len(cached) == 1
    second = AutoTokenizer.from_pretrained(str(directory))
    assert first.encode("Hello  world 你好") == second.encode("Hello  world 你好")
    assert list(tmp_path.glob("spm-*.json")) == cached


def test_save_and_reload_keeps_behaviour(pair, tmp_path):
    tokenizer, reference, _ = pair
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert type(reloaded).__name__ == "InternLM2Tokenizer"
    for text in sample_texts(tuple(reference.added_ids), count=300, seed=5):
        ids = reloaded.encode(text)
        assert ids == reference.encode(text), text
        assert reloaded.decode(ids, skip_special_tokens=True) == reference.decode(ids, True)
