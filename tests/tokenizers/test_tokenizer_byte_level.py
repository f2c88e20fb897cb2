"""Qwen2 (vocab.json + merges.txt) and Llama-3 (tokenizer.json) released layouts.

These load through transformers' own classes (`Qwen2Tokenizer`,
`PreTrainedTokenizerFast`); the reference here is an independent byte-level
BPE over the released files: added tokens split out first, the release's
regex pre-split (NFC first for Qwen2, as its slow class does), GPT-2's
byte-to-unicode table, then merges by rank (Llama-3 takes a pre-token that is
already a vocab entry whole, its `ignore_merges`).
"""

from __future__ import annotations

import json
import unicodedata

import pytest
import regex
from tokenizer_corpus import sample_texts
from transformers import AutoTokenizer

from model_plugin.tokenizer import LLAMA3_PATTERN, QWEN2_PATTERN


def _bytes_to_unicode() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


class ByteLevelReference:
    def __init__(self, directory, family: str):
        self.byte_char = _bytes_to_unicode()
        self.char_byte = {c: b for b, c in self.byte_char.items()}
        config = json.loads((directory / "tokenizer_config.json").read_text())
        self.added = {int(i): e for i, e in config["added_tokens_decoder"].items()}
        self.added_ids = {e["content"]: i for i, e in self.added.items()}
        if family == "qwen2":
            self.vocab = json.loads((directory / "vocab.json").read_text())
            lines = (directory / "merges.txt").read_text().splitlines()
            merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
            self.pattern, self.nfc, self.whole_words, self.bos = QWEN2_PATTERN, True, False, None
        else:
            data = json.loads((directory / "tokenizer.json").read_text())
            self.vocab = data["model"]["vocab"]
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
            self.pattern, self.nfc, self.whole_words = LLAMA3_PATTERN, False, True
            self.bos = self.added_ids[config["bos_token"]]
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.splitter = regex.compile("(" + "|".join(map(regex.escape, sorted(self.added_ids, key=len, reverse=True))) + ")")
        self.id_to_token = {i: t for t, i in self.vocab.items()}

    def _bpe(self, word: str) -> list[str]:
        if self.whole_words and word in self.vocab:
            return [word]
        parts = list(word)
        while len(parts) > 1:
            rank, index = min((self.ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(parts, parts[1:])))
            if rank == float("inf"):
                break
            parts[index : index + 2] = [parts[index] + parts[index + 1]]
        return parts

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.bos] if add_special_tokens and self.bos is not None else []
        for segment in self.splitter.split(text):
            if segment in self.added_ids:
                ids.append(self.added_ids[segment])
                continue
            if self.nfc:
                segment = unicodedata.normalize("NFC", segment)
            for chunk in regex.findall(self.pattern, segment):
                word = "".join(self.byte_char[b] for b in chunk.encode("utf-8"))
                ids += [self.vocab[piece] for piece in self._bpe(word)]
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        out, run = [], bytearray()
        for i in ids:
            if i in self.added:
                out.append(run.decode("utf-8", errors="replace"))
                run = bytearray()
                if not (skip_special_tokens and self.added[i]["special"]):
                    out.append(self.added[i]["content"])
            else:
                run += bytes(self.char_byte[c] for c in self.id_to_token[i])
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)


@pytest.fixture(scope="module", params=[("InternVL2-1B", "qwen2"), ("InternVL2-Llama3-76B", "llama3")], ids=["qwen2", "llama3"])
def pair(request, released_dir):
    family, kind = request.param
    directory = released_dir(family)
    return AutoTokenizer.from_pretrained(str(directory)), ByteLevelReference(directory, kind)


def test_encode_matches_bpe_files(pair):
    tokenizer, reference = pair
    texts = sample_texts(tuple(reference.added_ids)) + ["e\u0301", "Cafe\u0301 ﬁ"]
    mismatches = [(t, tokenizer.encode(t), reference.encode(t)) for t in texts if tokenizer.encode(t) != reference.encode(t)]
    assert not mismatches[:5], f"{len(mismatches)} of {len(texts)} texts differ"


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_decode_matches_bpe_files(pair, skip_special_tokens):
    tokenizer, reference = pair
    for text in sample_texts(tuple(reference.added_ids), count=500, seed=1):
        ids = reference.encode(text)
        assert tokenizer.decode(ids, skip_special_tokens=skip_special_tokens) == reference.decode(
            ids, skip_special_tokens
        ), text


def test_special_ids_are_the_released_ones(pair):
    tokenizer, reference = pair
    for content, token_id in reference.added_ids.items():
        assert tokenizer.convert_tokens_to_ids(content) == token_id
    assert len(tokenizer) == max(reference.added_ids.values()) + 1
