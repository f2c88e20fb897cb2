"""Small trained tokenizers holding a family's real special tokens.

Real tokenizers can't be downloaded here, so we train them at generation time
on a fixed built-in corpus. Two layouts:

- minimal (`build_tokenizer` + `save_tokenizer`): one byte-level BPE
  `tokenizer.json` for every family;
- released (`write_released_tokenizer`): the file set and tokenizer kind the
  backbone's release ships (sentencepiece `tokenizer.model` for InternLM2,
  Phi-3 and Yi; `vocab.json` + `merges.txt` for Qwen2; `tokenizer.json` for
  Llama-3) with the released `tokenizer_config.json` fields, at a small vocab.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any, Iterator

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from preprocessing import INTERNVL2_5_SYSTEM_MESSAGE

from .families import GPT_OSS_ADDED, INTERNVL_TOKENS, QWEN_PLAIN_TOKENS, FamilySpec

__all__ = [
    "DEFAULT_BPE_VOCAB",
    "INTERNLM2_CHAT_PIECES",
    "build_tokenizer",
    "chat_template_for",
    "released_training_corpus",
    "save_tokenizer",
    "train_sentencepiece",
    "training_corpus",
    "write_released_tokenizer",
]

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


def chat_template_for(template: str, default_system: str | None = None) -> str:
    """A Jinja chat template in the format of the InternVL conversation template."""
    if template == "internvl3_5_gpt_oss":
        # Harmony, reduced to the messages InternVL's template writes.
        return (
            "{% for message in messages %}"
            "{{ '<|start|>' + message['role'] + '<|message|>' + message['content'] + '<|end|>' }}"
            "{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|start|>assistant' }}{% endif %}"
        )
    if default_system is not None:
        return (
            "{% if messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\n" + default_system + "<|im_end|>\n' }}"
            "{% endif %}" + chat_template_for(template)
        )
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


# ---------------------------------------------------------------------------
# Released layouts
# ---------------------------------------------------------------------------

# Pieces InternLM2 renamed inside its sentencepiece model (ids 92538..92543 in
# the release), in id order.
INTERNLM2_CHAT_PIECES: tuple[str, ...] = (
    "<|plugin|>",
    "<|interpreter|>",
    "<|action_end|>",
    "<|action_start|>",
    "<|im_end|>",
    "<|im_start|>",
)
# Pieces Yi keeps between its control tokens and ChatML's (Nous-Hermes-2-Yi
# has <|im_start|> at 6 and <|im_end|> at 7); their released names are not
# needed by anything here.
_YI_RESERVED_PIECES = ("<|reserved_3|>", "<|reserved_4|>", "<|reserved_5|>")
PHI3_ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
)
LLAMA3_SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>")

# Pre-tokenizer regexes of the released byte-level BPE tokenizers.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Sentencepiece models: small, and still exercising merges of spaces, CJK and
# byte fallback (characters outside the trained set fall back to bytes).
DEFAULT_SPM_VOCAB = 700
# `model_max_length` as transformers writes "no limit" into the InternLM2 and
# Llama-3 releases.
_UNBOUNDED_LENGTH = 1000000000000000019884624838656

_RELEASED_EXTRA = (
    "你好，世界！这是一张图片，图片里有一只猫坐在桌子上。",
    "请详细描述这张图片。图中有两个人在海边散步，天空是橙色的。",
    "我们今天去公园散步吧，天气很好，阳光明媚。",
    "Emoji are text too: 😀 🎉 👍 🐱 ✓ and accents like café, naïve, résumé, Ünïcödé.",
    "def describe(image):\n    return model.chat(image, question)\n\n\tif score > 0.5:\n        print(score)\n",
    "  Leading spaces,   runs of   spaces, and trailing spaces.   ",
    "Line one.\nLine two.\n\nA new paragraph after a blank line.\r\nWindows line end.",
    "Digits: 0 1 2 3 4 5 6 7 8 9, 12345, 2024-06-01, 3.14159, 100% and $42.50.",
    "Box coordinates [[120, 45, 680, 512]] and [[0, 0, 1000, 1000]] are on a 0-1000 grid.",
)


def released_training_corpus() -> Iterator[str]:
    """The fixed corpus plus CJK, emoji, code, whitespace runs and digits."""
    yield from training_corpus()
    for _ in range(3):
        yield from _RELEASED_EXTRA


def train_sentencepiece(
    vocab_size: int = DEFAULT_SPM_VOCAB,
    *,
    add_dummy_prefix: bool = True,
    bos_piece: str = "<s>",
    eos_piece: str = "</s>",
    user_defined: tuple[str, ...] = (),
    appended_pieces: tuple[str, ...] = (),
) -> bytes:
    """A sentencepiece BPE model trained like the released ones; returns its bytes.

    Byte fallback, no whitespace collapsing, identity normalization, digits
    split. `user_defined` pieces take the ids right after unk/bos/eos;
    `appended_pieces` are added at the end as ordinary pieces that no merge
    reaches (how InternLM2 carries its chat tokens in the model).
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=released_training_corpus(),
        model_writer=buffer,
        model_type="bpe",
        vocab_size=vocab_size - len(appended_pieces),
        byte_fallback=True,
        character_coverage=0.9995,
        add_dummy_prefix=add_dummy_prefix,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        allow_whitespace_only_pieces=True,
        user_defined_symbols=list(user_defined),
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        bos_piece=bos_piece,
        eos_piece=eos_piece,
        num_threads=1,
        minloglevel=2,
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    lowest = min(piece.score for piece in proto.pieces)
    for offset, text in enumerate(appended_pieces, start=1):
        piece = proto.pieces.add()
        piece.piece = text
        piece.score = lowest - offset
        piece.type = sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL
    return proto.SerializeToString()


def _token_entry(content: str, *, special: bool = True, normalized: bool = False) -> dict[str, Any]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": normalized,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _write_common(
    out: Path,
    ids: dict[str, int],
    config: dict[str, Any],
    named: dict[str, str | None],
    additional: list[str],
    added_tokens_json: dict[str, int] | None,
    plain: frozenset[str] = frozenset(),
) -> None:
    """tokenizer_config.json, special_tokens_map.json and (optionally) added_tokens.json.

    `plain`: added tokens the release marks `special: false` (kept when decoding).
    """
    config = {
        "added_tokens_decoder": {
            str(i): _token_entry(tok, special=tok not in plain) for tok, i in sorted(ids.items(), key=lambda kv: kv[1])
        },
        "additional_special_tokens": additional,
        **named,
        **config,
    }
    _write_json(out / "tokenizer_config.json", dict(sorted(config.items())))
    special_map = {key: value for key, value in named.items() if value is not None}
    special_map["additional_special_tokens"] = additional
    _write_json(out / "special_tokens_map.json", dict(sorted(special_map.items())))
    if added_tokens_json:
        _write_json(out / "added_tokens.json", added_tokens_json)


def _backbone(spec: FamilySpec) -> str:
    arch = spec.llm_architecture
    if arch == "InternLM2ForCausalLM":
        return "internlm2"
    if arch == "InternLM3ForCausalLM":
        return "internlm3"
    if arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM"):
        return "qwen2"
    if arch == "GptOssForCausalLM":
        return "gpt_oss"
    if arch == "Phi3ForCausalLM":
        return "phi3"
    if arch == "LlamaForCausalLM":
        return "llama3" if spec.tokens.bos == "<|begin_of_text|>" else "yi"
    raise ValueError(f"no released tokenizer layout for {arch}")


def _sp_ids(model: bytes) -> dict[str, int]:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=model)
    return {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}


def _write_internlm2(spec: FamilySpec, out: Path, add_dummy_prefix: bool) -> dict[str, int]:
    model = train_sentencepiece(add_dummy_prefix=add_dummy_prefix, appended_pieces=INTERNLM2_CHAT_PIECES)
    (out / "tokenizer.model").write_bytes(model)
    pieces = _sp_ids(model)
    ids = {tok: pieces[tok] for tok in ("<unk>", "<s>", "</s>", *INTERNLM2_CHAT_PIECES)}
    added = {tok: len(pieces) + i for i, tok in enumerate(INTERNVL_TOKENS)}
    ids.update(added)
    chat = ["<|im_start|>", "<|im_end|>", "<|action_start|>", "<|action_end|>", "<|interpreter|>", "<|plugin|>"]
    config = {
        "auto_map": {
            "AutoTokenizer": [
                "tokenization_internlm2.InternLM2Tokenizer",
                "tokenization_internlm2_fast.InternLM2TokenizerFast",
            ]
        },
        "add_bos_token": True,
        "add_eos_token": False,
        "chat_template": "{{ bos_token }}" + chat_template_for(spec.template, _default_system(spec)),
        "clean_up_tokenization_spaces": False,
        "decode_with_prefix_space": False,
        "model_max_length": _UNBOUNDED_LENGTH,
        "sp_model_kwargs": None,
        "tokenizer_class": "InternLM2Tokenizer",
    }
    named = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}
    _write_common(out, ids, config, named, chat + list(INTERNVL_TOKENS), added)
    return ids


def _write_phi3(spec: FamilySpec, out: Path) -> dict[str, int]:
    from .tokenization_sentencepiece import load_model_proto, spm_to_tokenizer

    model = train_sentencepiece(add_dummy_prefix=True)
    (out / "tokenizer.model").write_bytes(model)
    pieces = _sp_ids(model)
    ids = {tok: pieces[tok] for tok in ("<unk>", "<s>", "</s>")}
    added = {tok: len(pieces) + i for i, tok in enumerate((*PHI3_ADDED_TOKENS, *INTERNVL_TOKENS))}
    ids.update(added)
    # The release's tokenizer.json is the Llama-2 conversion of this model:
    # dummy prefix, spaces as "▁", byte fallback, BOS added by the template.
    fast = spm_to_tokenizer(load_model_proto(model))
    fast.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in added])
    fast.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", ids["<s>"])]
    )
    fast.save(str(out / "tokenizer.json"))
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "chat_template": chat_template_for(spec.template),
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": spec.llm["max_position_embeddings"],
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "use_default_system_prompt": False,
    }
    named = {"bos_token": "<s>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>"}
    _write_common(out, ids, config, named, list(INTERNVL_TOKENS), added)
    return ids


def _write_yi(spec: FamilySpec, out: Path) -> dict[str, int]:
    model = train_sentencepiece(
        add_dummy_prefix=False,
        bos_piece="<|startoftext|>",
        eos_piece="<|endoftext|>",
        user_defined=(*_YI_RESERVED_PIECES, "<|im_start|>", "<|im_end|>"),
    )
    (out / "tokenizer.model").write_bytes(model)
    pieces = _sp_ids(model)
    ids = {tok: pieces[tok] for tok in ("<unk>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    added = {tok: len(pieces) + i for i, tok in enumerate(INTERNVL_TOKENS)}
    ids.update(added)
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "chat_template": chat_template_for(spec.template),
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": spec.llm["max_position_embeddings"],
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
    }
    named = {"bos_token": "<|startoftext|>", "eos_token": "<|im_end|>", "pad_token": "<unk>", "unk_token": "<unk>"}
    _write_common(out, ids, config, named, ["<|im_start|>", *INTERNVL_TOKENS], added)
    return ids


def _train_byte_level(
    pattern: str,
    specials: tuple[str, ...],
    vocab_size: int,
    *,
    ignore_merges: bool = False,
    plain: frozenset[str] = frozenset(),
) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False, ignore_merges=ignore_merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(released_training_corpus(), trainer=trainer)
    # One call, so ids follow `specials`' order whichever are plain.
    tokenizer.add_tokens([AddedToken(tok, special=tok not in plain, normalized=False) for tok in specials])
    return tokenizer


def _default_system(spec: FamilySpec) -> str | None:
    """The system message the release's tokenizer chat template adds by itself
    (InternVL2.5's and InternVL3's do; InternVL3.5's add none)."""
    if spec.template == "internvl2_5" and spec.generation in ("InternVL2.5", "InternVL3"):
        return INTERNVL2_5_SYSTEM_MESSAGE
    return None


def _write_qwen2(spec: FamilySpec, out: Path) -> dict[str, int]:
    """Qwen2, Qwen2.5 and Qwen3 backbones: vocab.json + merges.txt (and, for
    Qwen3 releases, tokenizer.json as well)."""
    base = spec.tokens.base_tokens
    plain = QWEN_PLAIN_TOKENS.intersection(base)
    tokenizer = _train_byte_level(QWEN2_PATTERN, (*base, *INTERNVL_TOKENS), DEFAULT_BPE_VOCAB, plain=plain)
    tokenizer.model.save(str(out))  # vocab.json + merges.txt, as the release ships them
    if spec.generation == "InternVL3.5":
        tokenizer.save(str(out / "tokenizer.json"))
    ids = {tok: tokenizer.token_to_id(tok) for tok in (*base, *INTERNVL_TOKENS)}
    config = {
        "add_prefix_space": False,
        "chat_template": chat_template_for(spec.template, _default_system(spec)),
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": spec.llm["max_position_embeddings"],
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
    }
    named = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None}
    _write_common(out, ids, config, named, ["<|im_start|>", "<|im_end|>", *INTERNVL_TOKENS], dict(ids), plain)
    return ids


def _write_llama3(spec: FamilySpec, out: Path) -> dict[str, int]:
    # Llama-3's tokenizer.json takes a pre-token that is a whole vocab entry
    # as is (`ignore_merges`).
    tokenizer = _train_byte_level(
        LLAMA3_PATTERN, (*LLAMA3_SPECIAL_TOKENS, *INTERNVL_TOKENS), DEFAULT_BPE_VOCAB, ignore_merges=True
    )
    ids = {tok: tokenizer.token_to_id(tok) for tok in (*LLAMA3_SPECIAL_TOKENS, *INTERNVL_TOKENS)}
    bos = "<|begin_of_text|>"
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids[bos])]
        ),
    ])
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "chat_template": chat_template_for(spec.template),
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": _UNBOUNDED_LENGTH,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    named = {"bos_token": bos, "eos_token": "<|im_end|>", "pad_token": "<|end_of_text|>"}
    _write_common(out, ids, config, named, list(INTERNVL_TOKENS), None)
    return ids


# o200k's pre-tokenizer (GPT-OSS's o200k_harmony uses the same).
O200K_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _write_gpt_oss(spec: FamilySpec, out: Path) -> dict[str, int]:
    """o200k_harmony's form: one tokenizer.json, no BOS added."""
    tokenizer = _train_byte_level(
        O200K_PATTERN, (*GPT_OSS_ADDED, *INTERNVL_TOKENS), DEFAULT_BPE_VOCAB, ignore_merges=True
    )
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.save(str(out / "tokenizer.json"))
    ids = {tok: tokenizer.token_to_id(tok) for tok in (*GPT_OSS_ADDED, *INTERNVL_TOKENS)}
    config = {
        "chat_template": chat_template_for(spec.template),
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": spec.llm["max_position_embeddings"],
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    named = {"bos_token": "<|startoftext|>", "eos_token": "<|return|>", "pad_token": "<|endoftext|>"}
    _write_common(out, ids, config, named, list(INTERNVL_TOKENS), None)
    return ids


def _write_internlm3(spec: FamilySpec, out: Path) -> dict[str, int]:
    """InternLM3: a sentencepiece model without dummy prefix (its tokenizer class
    puts one "▁" before the whole input), chat tokens added after the pieces."""
    model = train_sentencepiece(add_dummy_prefix=False)
    (out / "tokenizer.model").write_bytes(model)
    pieces = _sp_ids(model)
    ids = {tok: pieces[tok] for tok in ("<unk>", "<s>", "</s>")}
    chat = ("<|im_start|>", "<|im_end|>")
    added = {tok: len(pieces) + i for i, tok in enumerate((*chat, *INTERNVL_TOKENS))}
    ids.update(added)
    config = {
        "auto_map": {"AutoTokenizer": ["tokenization_internlm3.InternLM3Tokenizer", None]},
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": True,
        "chat_template": "{{ bos_token }}" + chat_template_for(spec.template, _default_system(spec)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": spec.llm["max_position_embeddings"],
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "InternLM3Tokenizer",
    }
    named = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}
    _write_common(out, ids, config, named, [*chat, *INTERNVL_TOKENS], added)
    return ids


def write_released_tokenizer(
    spec: FamilySpec, out: Path, *, add_dummy_prefix: bool | None = None
) -> dict[str, int]:
    """Write the backbone's released tokenizer file set (small vocab) into `out`.

    Returns every special token's id by its text. The InternVL tokens come
    last, so `max(ids.values()) + 1` is the vocabulary size. `add_dummy_prefix`
    picks the InternLM2 sentencepiece normalizer setting (default False);
    other backbones have a fixed one.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backbone = _backbone(spec)
    if add_dummy_prefix is not None and backbone != "internlm2":
        raise ValueError("add_dummy_prefix only applies to InternLM2 backbones")
    if backbone == "internlm2":
        return _write_internlm2(spec, out, bool(add_dummy_prefix))
    writers = {
        "qwen2": _write_qwen2,
        "phi3": _write_phi3,
        "yi": _write_yi,
        "llama3": _write_llama3,
        "internlm3": _write_internlm3,
        "gpt_oss": _write_gpt_oss,
    }
    return writers[backbone](spec, out)
