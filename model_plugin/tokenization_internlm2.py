"""InternLM2's tokenizer without remote code (InternVL2-2B/8B/26B, V1-5 models).

The releases name `InternLM2Tokenizer` with an `auto_map` to remote files.
Under transformers 5 the remote fast class mis-tokenizes; the remote slow
class is right but slow. This class is registered under the released names
and encodes as the slow class does: added/special tokens split out first,
each text segment through sentencepiece (with the model's own
`add_dummy_prefix`), BOS prepended. Decoding is sentencepiece's per run of
ordinary pieces with special tokens kept or skipped whole.

Deliberate difference: with `skip_special_tokens=False` the slow class also
inserts a space before special tokens and applies transformers'
`clean_up_tokenization` (" ." -> ".") to every run; both lose text the model
produced and cannot be streamed, so this class does not.
"""

from __future__ import annotations

from .tokenization_spm_backend import SentencePieceBackedTokenizer

__all__ = ["InternLM2Tokenizer"]


class InternLM2Tokenizer(SentencePieceBackedTokenizer):
    """Served as a `tokenizers` fast tokenizer converted from `tokenizer.model`."""

    vocab_files_names = {"vocab_file": "tokenizer.model"}

    def __init__(self, vocab_file: str | None = None, *, pad_token: str | None = "</s>", **kwargs) -> None:
        # Released configs carry remote-class-only knobs; they change nothing here.
        kwargs.pop("decode_with_prefix_space", None)
        kwargs.pop("sp_model_kwargs", None)
        super().__init__(vocab_file, pad_token=pad_token, **kwargs)
