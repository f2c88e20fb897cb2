"""`LlamaTokenizer` for sentencepiece releases, encoding as the slow class does.

InternVL2-4B / Mini-InternVL-Chat-4B-V1-5 (Phi-3) and InternVL2-40B (Yi) name
`LlamaTokenizer`; InternVL trains and runs them with the slow class. transformers
5 rebuilds them as a Metaspace pipeline that adds a dummy prefix whether or not
the model has one and splits whitespace runs differently from sentencepiece.
This class serves the exact sentencepiece twin instead, following the slow
class's `legacy` switch:

- `legacy` true or unset: sentencepiece on each segment between added tokens,
  with the model's own `add_dummy_prefix`;
- `legacy` false: one "▁" before the whole input (when `add_prefix_space`,
  the default), none after added tokens, the model's own prefix disabled.

Without a `tokenizer.model` (a `tokenizer.json`-only repository) it loads the
`tokenizer.json` unchanged, as transformers' fast class would.
"""

from __future__ import annotations

from typing import Any

from .tokenization_sentencepiece import SPACE, PrefixScheme
from .tokenization_spm_backend import SentencePieceBackedTokenizer

__all__ = ["LlamaTokenizer"]


class LlamaTokenizer(SentencePieceBackedTokenizer):
    """Registered under transformers' own name, so released configs find it."""

    @classmethod
    def prefix_scheme(cls, init_kwargs: dict[str, Any]) -> PrefixScheme:
        if init_kwargs.get("legacy") is False:
            return "first" if init_kwargs.get("add_prefix_space", True) is not False else "never"
        return "model"

    def __init__(self, vocab_file: str | None = None, **kwargs: Any) -> None:
        self.legacy = kwargs.get("legacy")
        self._prefix_first_only = self.prefix_scheme(kwargs) == "first"
        kwargs.pop("sp_model_kwargs", None)
        kwargs.pop("use_default_system_prompt", None)
        super().__init__(vocab_file, **kwargs)

    def _encode_plus(self, text, text_pair=None, *args: Any, is_split_into_words: bool = False, **kwargs: Any):
        if self._prefix_first_only and not is_split_into_words:
            text, text_pair = _pad_leading_space(text), _pad_leading_space(text_pair)
        return super()._encode_plus(text, text_pair, *args, is_split_into_words=is_split_into_words, **kwargs)


def _pad_leading_space(text: Any) -> Any:
    """One more space where the input already starts with one.

    The slow class puts "▁" before every input; the backend's Metaspace
    pre-tokenizer does too, except on inputs that already start with a space.
    The extra space makes up for exactly that case.
    """
    if isinstance(text, str):
        return " " + text if text[:1] in (" ", SPACE) else text
    if isinstance(text, (list, tuple)):
        return [_pad_leading_space(item) for item in text]
    return text
