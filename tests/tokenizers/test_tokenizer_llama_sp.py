"""Phi-3 and Yi released layouts (`LlamaTokenizer` + tokenizer.model) against the slow rules.

Reference (written from transformers' slow `LlamaTokenizer`, which InternVL
runs these backbones with): added tokens are split out first; with
`legacy: false` (Phi-3) the model's own dummy prefix is switched off, one "▁"
goes before the whole input and a lone "▁" before a leading special token is
dropped; with `legacy` true (Yi) every segment goes through sentencepiece as
the model is. BOS is prepended when `add_bos_token` says so.
"""

from __future__ import annotations

import json
import re

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from tokenizer_corpus import sample_texts
from transformers import AutoTokenizer

SPACE = "\u2581"


class SlowLlamaReference:
    def __init__(self, directory):
        config = json.loads((directory / "tokenizer_config.json").read_text())
        self.legacy = config.get("legacy", True) is not False
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString((directory / "tokenizer.model").read_bytes())
        if not self.legacy:
            proto.normalizer_spec.add_dummy_prefix = False
        self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.added = {int(i): entry for i, entry in config["added_tokens_decoder"].items()}
        self.added_ids = {entry["content"]: i for i, entry in self.added.items()}
        self.bos_id = self.added_ids[config["bos_token"]] if config.get("add_bos_token", True) else None
        self.splitter = re.compile("(" + "|".join(map(re.escape, sorted(self.added_ids, key=len, reverse=True))) + ")")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.bos_id] if add_special_tokens and self.bos_id is not None else []
        if not text:
            return ids
        if not self.legacy:
            text = SPACE + text.replace(SPACE, " ")
        pieces: list[int] = []
        for segment in self.splitter.split(text):
            if segment in self.added_ids:
                pieces.append(self.added_ids[segment])
            elif segment:
                pieces += self.sp.encode(segment)
        lone_space = self.sp.piece_to_id(SPACE)
        if not self.legacy and len(pieces) > 1 and pieces[0] == lone_space and pieces[1] in self.added:
            pieces = pieces[1:]
        return ids + pieces

    def decode_skipping_special(self, ids: list[int]) -> str:
        ids = [i for i in ids if i not in self.added]
        if not ids:
            return ""
        if self.legacy:
            return self.sp.decode(ids)
        # The prefix the encoder added is removed again.
        first = self.sp.id_to_piece(ids[0])
        text = self.sp.decode(ids)
        return text[1:] if first.startswith(SPACE) else text


@pytest.fixture(scope="module", params=["InternVL2-4B", "InternVL2-40B"])
def pair(request, released_dir):
    directory = released_dir(request.param)
    return AutoTokenizer.from_pretrained(str(directory)), SlowLlamaReference(directory)


def test_released_class_is_ours(pair):
    tokenizer, _ = pair
    assert type(tokenizer).__module__ == "model_plugin.tokenization_llama"
    assert tokenizer.is_fast


def test_encode_matches_slow_class(pair):
    tokenizer, reference = pair
    texts = sample_texts(tuple(reference.added_ids))
    mismatches = [(t, tokenizer.encode(t), reference.encode(t)) for t in texts if tokenizer.encode(t) != reference.encode(t)]
    assert not mismatches[:5], f"{len(mismatches)} of {len(texts)} texts differ"


def test_batch_and_pair_encoding_agree(pair):
    tokenizer, reference = pair
    texts = ["  leading", "plain", " one"]
    batch = tokenizer(texts)["input_ids"]
    assert batch == [reference.encode(t) for t in texts]


def test_decode_matches_slow_class(pair):
    tokenizer, reference = pair
    for text in sample_texts(tuple(reference.added_ids), count=500, seed=1):
        ids = reference.encode(text)
        assert tokenizer.decode(ids, skip_special_tokens=True) == reference.decode_skipping_special(ids), text


def test_special_ids_are_the_released_ones(pair):
    tokenizer, reference = pair
    for content, token_id in reference.added_ids.items():
        assert tokenizer.convert_tokens_to_ids(content) == token_id
    assert len(tokenizer) == max(reference.added_ids.values()) + 1


def test_save_and_reload_keeps_behaviour(pair, tmp_path):
    # save_pretrained writes tokenizer.json (no tokenizer.model): the reloaded
    # tokenizer must still encode, add BOS (or not) and decode the same.
    tokenizer, reference = pair
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert type(reloaded) is type(tokenizer)
    for text in sample_texts(tuple(reference.added_ids), count=300, seed=5):
        ids = reloaded.encode(text)
        assert ids == reference.encode(text), text
        assert reloaded.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids, skip_special_tokens=True)
