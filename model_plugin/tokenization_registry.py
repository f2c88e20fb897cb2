"""Register the released tokenizer class names with transformers' AutoTokenizer.

`AutoTokenizer.from_pretrained(dir)` (and so vLLM's tokenizer loader) picks a
class by the `tokenizer_class` of `tokenizer_config.json`. A class registered
under that name from outside `transformers.` counts as local code, which
transformers prefers over the release's `auto_map`, so no remote code runs
and no `trust_remote_code` is asked for.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

__all__ = ["register_tokenizers"]


def register_tokenizers() -> None:
    """Safe to call often; a no-op on transformers without TokenizersBackend (4.x)."""
    try:
        from transformers.models.auto import tokenization_auto
        from transformers.tokenization_utils_tokenizers import TokenizersBackend  # noqa: F401  (5.x only)
    except ImportError:
        logger.info("transformers < 5: released tokenizer classes not registered")
        return
    from transformers import AutoTokenizer

    from .configuration import InternLM2Config
    from .tokenization_internlm2 import InternLM2Tokenizer
    from .tokenization_internlm3 import InternLM3Tokenizer
    from .tokenization_llama import LlamaTokenizer

    AutoTokenizer.register(InternLM2Config, tokenizer_class=InternLM2Tokenizer, exist_ok=True)
    # By name only: mapping LlamaConfig would also re-route models that never
    # name a tokenizer class. Releases that name it get the sentencepiece-exact
    # class; it keeps tokenizer.json-only repositories as they are.
    names = {
        "InternLM2Tokenizer": InternLM2Tokenizer,
        "InternLM2TokenizerFast": InternLM2Tokenizer,
        "InternLM3Tokenizer": InternLM3Tokenizer,
        "LlamaTokenizer": LlamaTokenizer,
        "LlamaTokenizerFast": LlamaTokenizer,
    }
    tokenization_auto.REGISTERED_TOKENIZER_CLASSES.update(names)
