"""A small byte-level BPE tokenizer holding a family's real special tokens.

Real tokenizers can't be downloaded here, so we train one at generation time
on a fixed built-in corpus. Byte-level pre-tokenization means any text,
including emoji and non-Latin scripts, round-trips; the special tokens are the
released ones, so prompt construction and stop handling see the same strings.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .families import FamilySpec

__all__ = ["DEFAULT_BPE_VOCAB", "build_tokenizer", "chat_template_for", "save_tokenizer", "training_corpus"]

# Total size target (bytes + merges + base specials). Small keeps the tiny
# embedding matrices small; large enough that common words are one token.
DEFAULT_BPE_VOCAB = 1000
MODEL_MAX_LENGTH = 32768

_PARAGRAPHS = (
    "The quick brown fox jumps over the lazy dog. A picture is worth a thousand words.",
    "Describe the image in detail. What is shown in this picture? Please answer the question.",
    "The image shows a cat sitting on a wooden table next to a cup of coffee and a small plant.",
    "There are two people walking along the beach at sunset, and the sky is orange and purple.",
    "In the video, a man is riding a bicycle through the park while children play on the grass.",
    "The chart compares the sales of three products over four quarters of the year.",
    "Read the text in the document and summarize the main points in one short paragraph.",
    "How many objects are on the table? There are three apples, two bananas and one orange.",
    "The red car is parked in front of the house, and a blue truck is driving down the street.",
    "Hello! How can I help you today? I am an assistant that can see images and answer questions.",
    "Please provide the bounding box coordinates of the region this sentence describes.",
    "Frame1: a dog runs. Frame2: the dog jumps. Frame3: the dog catches the ball in the air.",
    "Mathematics, science and history are interesting subjects that students learn at school.",
    "The weather is sunny with a few clouds; tomorrow it will rain in the morning and clear later.",
    "Numbers like 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42, 100, 2024 and 3.14 appear in text.",
)

_SUBJECTS = ("the cat", "a dog", "the man", "a woman", "the child", "a bird", "the robot", "our team")
_VERBS = ("looks at", "walks to", "picks up", "points to", "reads", "paints", "describes", "finds")
_OBJECTS = ("the red ball", "a green tree", "the old book", "a white cup", "the big window", "a small box")
_PLACES = ("in the room.", "near the river.", "on the table.", "at the market.", "under the bridge.")


def training_corpus() -> Iterator[str]:
    """A fixed English corpus; identical on every run, so training is reproducible."""
    yield from _PARAGRAPHS
    for subject, verb, obj, place in itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _PLACES):
        sentence = f"{subject} {verb} {obj} {place}"
        yield sentence[0].upper() + sentence[1:]


def build_tokenizer(spec: FamilySpec, bpe_vocab_size: int = DEFAULT_BPE_VOCAB) -> Tokenizer:
    """Train the BPE and add the family's special tokens.

    The backbone's own specials (unk/bos/eos) take the lowest ids as in the
    real vocabularies; chat and InternVL tokens are appended after the merges,
    as the released tokenizers add them.
    """
    base = list(spec.tokens.base_tokens)
    tokenizer = Tokenizer(models.BPE(unk_token=spec.tokens.unk, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size,
        min_frequency=1,
        special_tokens=base,
        # Every byte gets a token, so no input ever needs <unk>.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    added = [tok for tok in spec.special_tokens if tok not in base]
    tokenizer.add_special_tokens(added)
    return tokenizer


def chat_template_for(template: str) -> str:
    """A Jinja chat template in the format of the InternVL conversation template."""
    if template == "phi3-chat":
        return (
            "{% for message in messages %}"
            "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
            "{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
        )
    # Hermes-2 and internlm2-chat are both ChatML on the wire.
    return (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


def save_tokenizer(spec: FamilySpec, tokenizer: Tokenizer, out: Path) -> dict[str, int]:
    """Write tokenizer.json + configs; returns the special-token ids by name."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    ids = {tok: tokenizer.token_to_id(tok) for tok in spec.special_tokens}
    named = {
        "bos_token": spec.tokens.bos,
        "eos_token": spec.tokens.eos,
        "pad_token": spec.tokens.pad,
        "unk_token": spec.tokens.unk,
    }
    named = {key: value for key, value in named.items() if value is not None}
    extra = [tok for tok in spec.special_tokens if tok not in named.values()]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **named,
        "additional_special_tokens": extra,
        "model_max_length": MODEL_MAX_LENGTH,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template_for(spec.template),
        "added_tokens_decoder": {
            str(ids[tok]): {
                "content": tok,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for tok in spec.special_tokens
        },
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    special_map = {**named, "additional_special_tokens": extra}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False) + "\n")
    return ids
