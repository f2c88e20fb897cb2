"""Independent transcription of the official InternVL2 prompt building and tokenization.

Written from the released remote code (`conversation.py`: the Hermes-2,
internlm2-chat and phi3-chat templates, SeparatorStyle.MPT; and
`modeling_internvl_chat.py`: `chat()`), the model cards' multi-image and video
questions, and the slow tokenizer classes the model cards load
(`use_fast=False`): InternLM2Tokenizer and LlamaTokenizer on sentencepiece,
Qwen2Tokenizer's byte-level BPE, and the Llama-3 fast tokenizer's BPE.

Shares nothing with `preprocessing/`, `server/` or `model_plugin/`: only the
checkpoint's tokenizer files (data) are read.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import regex

SYSTEM_MESSAGE = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
# The `internvl2_5` and `internvl3_5_gpt_oss` registrations' own system messages.
INTERNVL2_5_SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
GPT_OSS_SYSTEM = ("You are InternVL, a large language model trained by Shanghai AI Laboratory.\nKnowledge cutoff: 2024-06\n"
                  "Current date: 2025-08-06\n\nReasoning: low\n\n# Valid channels: final. Channel must be included for every message.")
IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
NUM_IMAGE_TOKEN = 256  # (448 / 14)^2 * 0.5^2


@dataclass
class Conversation:
    """conversation.py's Conversation, MPT separator style only (all InternVL2 templates)."""

    system_template: str
    roles: tuple[str, str]
    sep: str
    system_message: str = SYSTEM_MESSAGE
    sep2: str | None = None  # SeparatorStyle.MPT_TWO: ends a final non-empty message

    def __post_init__(self) -> None:
        self.messages: list[tuple[str, str | None]] = []

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append((role, message))

    def get_prompt(self) -> str:
        ret = self.system_template.format(system_message=self.system_message) + self.sep
        for index, (role, message) in enumerate(self.messages):
            if not message:
                ret += role
                continue
            last = index == len(self.messages) - 1
            ret += role + message + (self.sep2 if last and self.sep2 else self.sep)
        return ret


def get_conv_template(name: str) -> Conversation:
    if name == "internvl2_5":
        return Conversation("<|im_start|>system\n{system_message}", ("<|im_start|>user\n", "<|im_start|>assistant\n"),
                            "<|im_end|>\n", INTERNVL2_5_SYSTEM)
    if name == "internvl3_5_gpt_oss":
        return Conversation("<|start|>system<|message|>{system_message}", ("<|start|>user<|message|>", "<|start|>assistant"),
                            "<|end|>", GPT_OSS_SYSTEM, sep2="<|return|>")
    if name in ("Hermes-2", "internlm2-chat"):
        return Conversation("<|im_start|>system\n{system_message}", ("<|im_start|>user\n", "<|im_start|>assistant\n"),
                            "<|im_end|>")
    if name == "phi3-chat":
        return Conversation("<|system|>\n{system_message}", ("<|user|>\n", "<|assistant|>\n"), "<|end|>")
    raise KeyError(name)


def chat_query(template: str, question: str, num_patches_list: list[int],
               history: list[tuple[str, str]] | None = None) -> str:
    """The query string `InternVLChatModel.chat()` tokenizes."""
    if history is None and num_patches_list and "<image>" not in question:
        question = "<image>\n" + question
    conv = get_conv_template(template)
    for old_question, old_answer in history or []:
        conv.append_message(conv.roles[0], old_question)
        conv.append_message(conv.roles[1], old_answer)
    conv.append_message(conv.roles[0], question)
    conv.append_message(conv.roles[1], None)
    query = conv.get_prompt()
    for num_patches in num_patches_list:
        image_tokens = IMG_START + IMG_CONTEXT * NUM_IMAGE_TOKEN * num_patches + IMG_END
        query = query.replace("<image>", image_tokens, 1)
    return query


def multi_image_question(n_images: int, question: str) -> str:
    """The model card's multi-image question."""
    return "".join(f"Image-{i + 1}: <image>\n" for i in range(n_images)) + question


def video_question(n_frames: int, question: str) -> str:
    """The model card's video question (one tile per frame)."""
    return "".join(f"Frame{i + 1}: <image>\n" for i in range(n_frames)) + question


# --- tokenization -------------------------------------------------------------

SPIECE_UNDERLINE = "\u2581"
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# tiktoken's o200k_base pattern, which o200k_harmony keeps.
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])


@dataclass(frozen=True)
class TokenizerKind:
    """What the released tokenizer class does, per backbone (not read from the files)."""

    name: str
    adds_bos: bool
    legacy: bool = True  # LlamaTokenizer's `legacy` (sentencepiece kinds only)


# By the llm architecture and, for Llama backbones, the bos token.
KINDS = {
    "internlm2": TokenizerKind("InternLM2Tokenizer (sentencepiece)", adds_bos=True),
    "phi3": TokenizerKind("LlamaTokenizer (sentencepiece, legacy=False)", adds_bos=True, legacy=False),
    "yi": TokenizerKind("LlamaTokenizer (sentencepiece, legacy)", adds_bos=False),
    "qwen2": TokenizerKind("Qwen2Tokenizer (byte-level BPE)", adds_bos=False),
    "llama3": TokenizerKind("Llama-3 PreTrainedTokenizerFast (byte-level BPE)", adds_bos=True),
    # InternLM3Tokenizer: LlamaTokenizer(legacy=False) behaviour built in.
    "internlm3": TokenizerKind("InternLM3Tokenizer (sentencepiece, one leading prefix)", adds_bos=True, legacy=False),
    "gpt_oss": TokenizerKind("o200k_harmony PreTrainedTokenizerFast (byte-level BPE)", adds_bos=False),
}


def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    parts = list(word)
    while len(parts) > 1:
        pairs = [(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
        best = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


class ReferenceTokenizer:
    """`tokenizer(query)` of the released slow tokenizer class, from a checkpoint's files."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = Path(path)
        self.kind = KINDS[kind]
        self.backbone = kind
        config = json.loads((self.path / "tokenizer_config.json").read_text())
        # Added tokens: matched first, never split (the slow tokenizers' trie).
        self.added = {entry["content"]: int(i) for i, entry in config["added_tokens_decoder"].items()}
        self.bos = config.get("bos_token")
        self.unk = config.get("unk_token")
        alternatives = sorted(self.added, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")

    def split(self, text: str) -> list[str]:
        return [chunk for chunk in self._split.split(text) if chunk]

    def encode(self, query: str) -> list[int]:
        if self.backbone in ("qwen2", "llama3", "gpt_oss"):
            ids = self._encode_byte_level(query)
        else:
            ids = self._encode_sentencepiece(query)
        if self.kind.adds_bos:
            ids = [self.added[self.bos]] + ids
        return ids

    # sentencepiece kinds
    @cached_property
    def _sp(self):
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=str(self.path / "tokenizer.model"))

    @cached_property
    def _sp_no_prefix(self):
        # LlamaTokenizer(legacy=False) loads the model with add_dummy_prefix off.
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString((self.path / "tokenizer.model").read_bytes())
        proto.normalizer_spec.add_dummy_prefix = False
        return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

    def _encode_sentencepiece(self, text: str) -> list[int]:
        if self.kind.legacy:
            pieces: list[str] = []
            for chunk in self.split(text):
                pieces += [chunk] if chunk in self.added else self._sp.encode(chunk, out_type=str)
        else:
            sp = self._sp_no_prefix
            unk_length = len(sp.encode(str(self.unk), out_type=str))
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
            pieces = []
            for chunk in self.split(text):
                if chunk in self.added:
                    pieces.append(chunk)
                elif not chunk.startswith((SPIECE_UNDERLINE, " ")):
                    pieces += sp.encode(chunk, out_type=str)
                else:
                    pieces += sp.encode(str(self.unk) + chunk, out_type=str)[unk_length:]
            if len(pieces) > 1 and pieces[0] == SPIECE_UNDERLINE and pieces[1] in self.added:
                pieces = pieces[1:]
        return [self.added[p] if p in self.added else self._sp.piece_to_id(p) for p in pieces]

    # byte-level BPE kinds
    @cached_property
    def _bpe_model(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        if self.backbone == "qwen2":
            vocab = json.loads((self.path / "vocab.json").read_text())
            lines = (self.path / "merges.txt").read_text(encoding="utf-8").split("\n")
            merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
        else:
            model = json.loads((self.path / "tokenizer.json").read_text())["model"]
            vocab = model["vocab"]
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return vocab, {pair: rank for rank, pair in enumerate(merges)}

    def _encode_byte_level(self, text: str) -> list[int]:
        if self.backbone == "qwen2":
            text = unicodedata.normalize("NFC", text)
            pattern = QWEN2_PATTERN
        elif self.backbone == "gpt_oss":
            pattern = O200K_PATTERN
        else:
            pattern = LLAMA3_PATTERN
        vocab, ranks = self._bpe_model
        byte_chars = _bytes_to_unicode()
        ids: list[int] = []
        for chunk in self.split(text):
            if chunk in self.added:
                ids.append(self.added[chunk])
                continue
            for word in regex.findall(pattern, chunk):
                mapped = "".join(byte_chars[b] for b in word.encode("utf-8"))
                ids += [vocab[piece] for piece in _bpe(mapped, ranks)]
        return ids
