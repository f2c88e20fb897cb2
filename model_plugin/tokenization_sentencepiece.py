"""SentencePiece BPE models rebuilt as exact `tokenizers` pipelines.

vLLM detokenizes incrementally on every step, so serving needs a Rust
(`tokenizers`) tokenizer; the released InternVL2 backbones ship sentencepiece
`tokenizer.model` files instead. transformers 5 converts those with
assumptions (Metaspace pre-tokenizer, a dummy prefix whatever the model says)
that break on models such as InternLM2's. This module reads the model's own
settings and builds a pipeline that reproduces `SentencePieceProcessor`:

- normalizer: the model's precompiled charsmap, `remove_extra_whitespaces`,
  the dummy "▁" prefix only when `add_dummy_prefix` is set, spaces as "▁";
- model: BPE whose merge ranks follow the piece scores (sentencepiece merges
  the adjacent pair whose result scores highest), byte fallback as trained;
- no pre-tokenizer: sentencepiece runs BPE over the whole normalized text and
  its pieces never span a word boundary, so one "word" gives the same result;
- decoder: "▁" -> " ", byte pieces -> UTF-8, and the leading space dropped
  only when the model adds a dummy prefix (as sentencepiece's decoder does).

Conversions are cached by the model file's hash (never next to the model: a
model directory may be read-only).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

logger = logging.getLogger(__name__)

__all__ = [
    "SPACE",
    "load_model_proto",
    "sentencepiece_tokenizer",
    "spm_to_tokenizer",
    "tokenizer_cache_dir",
]

SPACE = "\u2581"
# Bump when the pipeline built below changes, so stale cache entries are ignored.
CONVERTER_VERSION = 1

# Where the "▁" dummy prefix goes:
# - "model": where sentencepiece puts it, i.e. at the start of every text
#   segment between added tokens when the model's `add_dummy_prefix` is set
#   (what the slow InternLM2 and legacy Llama classes do);
# - "first": only at the start of the whole input, whatever the model says
#   (transformers' slow LlamaTokenizer with `legacy=False`);
# - "never": nowhere.
PrefixScheme = Literal["model", "first", "never"]

# sentencepiece ModelProto.SentencePiece.Type
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_MODEL_TYPE_BPE = 2


def load_model_proto(model_file: str | os.PathLike[str] | bytes):
    """Parse a `tokenizer.model` (path or bytes) into sentencepiece's ModelProto."""
    from sentencepiece import sentencepiece_model_pb2

    data = model_file if isinstance(model_file, bytes) else Path(model_file).read_bytes()
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(data)
    return proto


def _merges_by_score(proto) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = {piece.piece: index for index, piece in enumerate(proto.pieces)}
    mergeable = {piece.piece: (piece.score, index) for index, piece in enumerate(proto.pieces) if piece.type == _NORMAL}
    ranked: list[tuple[float, int, int, tuple[str, str]]] = []
    for piece, (score, index) in mergeable.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in mergeable and right in mergeable:
                # Highest score merges first; ties by piece id then left id, a
                # total order where sentencepiece's own tie rule (leftmost pair)
                # can never disagree on the resulting pieces.
                ranked.append((-score, index, vocab[left], (left, right)))
    ranked.sort()
    return vocab, [pair for *_, pair in ranked]


def _normalizer(spec, per_segment_prefix: bool) -> normalizers.Normalizer:
    steps: list[normalizers.Normalizer] = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex("^ +| +$"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    # The normalizer runs once per segment between added tokens, which is
    # where sentencepiece (called once per segment by the slow classes) adds it.
    if per_segment_prefix:
        steps.append(normalizers.Prepend(SPACE))
    steps.append(normalizers.Replace(" ", SPACE))
    return normalizers.Sequence(steps)


def _decoder(strip_prefix: bool) -> decoders.Decoder:
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if strip_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    return decoders.Sequence(steps)


def spm_to_tokenizer(proto, prefix: PrefixScheme = "model") -> Tokenizer:
    """The `tokenizers` twin of a sentencepiece BPE model (no post-processor)."""
    if proto.trainer_spec.model_type != _MODEL_TYPE_BPE:
        raise ValueError(f"only sentencepiece BPE models are supported, got model_type={proto.trainer_spec.model_type}")
    if proto.trainer_spec.treat_whitespace_as_suffix:
        raise ValueError("sentencepiece models with treat_whitespace_as_suffix are not supported")
    vocab, merges = _merges_by_score(proto)
    unk = next((p.piece for p in proto.pieces if p.type == _UNKNOWN), None)
    tokenizer = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=proto.trainer_spec.byte_fallback,
            dropout=None,
        )
    )
    per_segment = prefix == "model" and proto.normalizer_spec.add_dummy_prefix
    tokenizer.normalizer = _normalizer(proto.normalizer_spec, per_segment)
    if prefix == "first":
        # Prepends only to the split starting at offset 0 of the input.
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first", split=False)
    else:
        tokenizer.pre_tokenizer = None
    tokenizer.decoder = _decoder(strip_prefix=per_segment or prefix == "first")
    # Control and unknown pieces never come out of text in sentencepiece; as
    # special tokens they are matched whole and skipped when decoding.
    # User-defined pieces are matched whole but are ordinary text.
    tokenizer.add_tokens([
        AddedToken(p.piece, special=p.type != _USER_DEFINED, normalized=False)
        for p in proto.pieces
        if p.type in (_UNKNOWN, _CONTROL, _USER_DEFINED)
    ])
    return tokenizer


def tokenizer_cache_dir() -> Path:
    """Where converted tokenizers are kept: $INTERNVL_TOKENIZER_CACHE or the HF cache."""
    override = os.environ.get("INTERNVL_TOKENIZER_CACHE")
    if override:
        return Path(override)
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "internvl-serve" / "tokenizers"


def sentencepiece_tokenizer(model_file: str | os.PathLike[str], prefix: PrefixScheme = "model") -> Tokenizer:
    """`spm_to_tokenizer` for a file, cached by content hash (best effort)."""
    data = Path(model_file).read_bytes()
    key = hashlib.sha256(data + f"v{CONVERTER_VERSION}-{prefix}".encode()).hexdigest()[:32]
    cached = tokenizer_cache_dir() / f"spm-{key}.json"
    if cached.is_file():
        try:
            return Tokenizer.from_file(str(cached))
        except Exception:  # a torn or foreign file: rebuild below
            logger.warning("ignoring unreadable cached tokenizer %s", cached)
    tokenizer = spm_to_tokenizer(load_model_proto(data), prefix)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: concurrent vLLM processes never read half a file.
        with tempfile.NamedTemporaryFile("w", dir=cached.parent, suffix=".tmp", delete=False) as handle:
            handle.write(tokenizer.to_str())
        os.replace(handle.name, cached)
    except OSError as error:
        logger.info("tokenizer cache not written (%s); converting on every load", error)
    return tokenizer
