"""InternLM3's tokenizer without remote code (InternVL3-9B).

The release names `InternLM3Tokenizer`, remote code written after the slow
`LlamaTokenizer` with `legacy=False` built in: one "▁" before the whole input
(`add_prefix_space`, on by default), none after added tokens, the model's own
dummy prefix unused, BOS prepended. That is `LlamaTokenizer`'s "first" scheme,
whatever `legacy` the config names.
"""

from __future__ import annotations

from typing import Any

from .tokenization_llama import LlamaTokenizer
from .tokenization_sentencepiece import PrefixScheme

__all__ = ["InternLM3Tokenizer"]


class InternLM3Tokenizer(LlamaTokenizer):
    @classmethod
    def prefix_scheme(cls, init_kwargs: dict[str, Any]) -> PrefixScheme:
        return "first" if init_kwargs.get("add_prefix_space", True) is not False else "never"

    def __init__(self, vocab_file: str | None = None, **kwargs: Any) -> None:
        kwargs["legacy"] = False
        # Remote-class-only knobs; decoding here never inserts spaces around specials.
        kwargs.pop("spaces_between_special_tokens", None)
        kwargs.pop("spaces_for_interleaved_special_tokens", None)
        super().__init__(vocab_file, **kwargs)
