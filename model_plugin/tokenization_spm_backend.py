"""A fast tokenizer served from a sentencepiece `tokenizer.model`, exactly.

The base of the tokenizer classes registered under the released
`tokenizer_class` names (see `tokenization_internlm2.py`,
`tokenization_llama.py`). It loads through `from_pretrained` like any
transformers 5 tokenizer, but builds its `tokenizers` backend with
`tokenization_sentencepiece` instead of transformers' converters, and places
every added token at the id the release's `added_tokens_decoder` gives it.
"""

from __future__ import annotations

import os
from typing import Any

from tokenizers import AddedToken, Tokenizer
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from .tokenization_sentencepiece import PrefixScheme, sentencepiece_tokenizer

__all__ = ["SentencePieceBackedTokenizer"]


def _as_added_token(token: Any) -> AddedToken:
    if isinstance(token, AddedToken):
        return AddedToken(
            token.content,
            single_word=token.single_word,
            lstrip=token.lstrip,
            rstrip=token.rstrip,
            # Added tokens are matched on the raw text, as the slow classes do.
            normalized=False,
            special=token.special,
        )
    if isinstance(token, dict):
        return _as_added_token(AddedToken(**{k: v for k, v in token.items() if k != "__type"}))
    return AddedToken(str(token), special=True, normalized=False)


def place_added_tokens(tokenizer: Tokenizer, added_tokens_decoder: dict[Any, Any]) -> None:
    """Add the release's added tokens at their ids, or fail loudly."""
    base_size = tokenizer.get_vocab_size(with_added_tokens=False)
    for token_id, token in sorted(((int(i), t) for i, t in added_tokens_decoder.items()), key=lambda kv: kv[0]):
        added = _as_added_token(token)
        if token_id < base_size:
            piece = tokenizer.id_to_token(token_id)
            if piece != added.content:
                raise ValueError(
                    f"added token {added.content!r} claims id {token_id}, "
                    f"which the sentencepiece model holds as {piece!r}"
                )
        elif token_id != tokenizer.get_vocab_size(with_added_tokens=True):
            raise ValueError(f"added token {added.content!r} at id {token_id} leaves a gap in the vocabulary")
        if added.special:
            tokenizer.add_special_tokens([added])
        else:
            tokenizer.add_tokens([added])
        got = tokenizer.token_to_id(added.content)
        if got != token_id:
            raise ValueError(f"added token {added.content!r} landed at id {got}, expected {token_id}")


class SentencePieceBackedTokenizer(TokenizersBackend):
    """TokenizersBackend whose backend is the exact twin of `tokenizer.model`."""

    vocab_files_names = {"vocab_file": "tokenizer.model", "tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"

    @classmethod
    def _from_pretrained(cls, resolved_vocab_files, *args, **kwargs):
        if resolved_vocab_files.get("vocab_file"):
            # The sentencepiece model is the reference; a tokenizer.json beside
            # it would also make transformers drop `add_bos_token`.
            resolved_vocab_files = {k: v for k, v in resolved_vocab_files.items() if k != "tokenizer_file"}
        return super()._from_pretrained(resolved_vocab_files, *args, **kwargs)

    @classmethod
    def prefix_scheme(cls, init_kwargs: dict[str, Any]) -> PrefixScheme:
        """Where the slow class puts the dummy prefix (see `PrefixScheme`)."""
        return "model"

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs: Any) -> dict[str, Any]:
        vocab_file = kwargs.get("vocab_file")
        tokenizer_file = kwargs.pop("tokenizer_file", None)
        if isinstance(vocab_file, (str, os.PathLike)) and os.path.isfile(vocab_file):
            backend = sentencepiece_tokenizer(vocab_file, cls.prefix_scheme(kwargs))
            # The slow classes' defaults; the backend has no post-processor yet.
            kwargs.setdefault("add_bos_token", True)
            kwargs.setdefault("add_eos_token", False)
        elif isinstance(tokenizer_file, (str, os.PathLike)) and os.path.isfile(tokenizer_file):
            # No sentencepiece model (a save_pretrained copy, or a
            # tokenizer.json-only repository): the serialized pipeline is taken
            # whole, post-processor included.
            backend = Tokenizer.from_file(str(tokenizer_file))
            kwargs["tokenizer_object"] = backend
            return kwargs
        else:
            raise OSError(f"{cls.__name__} needs a tokenizer.model or tokenizer.json")
        place_added_tokens(backend, kwargs.get("added_tokens_decoder") or {})
        kwargs["tokenizer_object"] = backend
        return kwargs

    def __init__(
        self,
        vocab_file: str | None = None,
        *,
        unk_token: str | AddedToken | None = "<unk>",
        bos_token: str | AddedToken | None = "<s>",
        eos_token: str | AddedToken | None = "</s>",
        clean_up_tokenization_spaces: bool = False,
        **kwargs: Any,
    ) -> None:
        if "tokenizer_object" not in kwargs and vocab_file is not None:
            # Built directly, not through from_pretrained.
            kwargs = type(self).convert_to_native_format(vocab_file=vocab_file, **kwargs)
        super().__init__(
            vocab_file=vocab_file,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )
