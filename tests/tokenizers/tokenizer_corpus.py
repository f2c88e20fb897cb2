"""The fixed parity corpus: every kind of text a tokenizer can get wrong."""

from __future__ import annotations

import random

_FRAGMENTS = (
    "Hello", "world", "The quick brown fox", "describe the image", "a", "I", "isn't", "don't", "3.14",
    " ", "  ", "    ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t", "▁", "▁▁",
    "你好", "世界", "图片里有一只猫", "日本語のテキスト", "한국어", "Привет", "مرحبا", "ελληνικά",
    "😀", "🎉", "👍🏽", "🐱‍👤", "🇫🇷", "✓", "€", "café", "naïve", "\u00a0", "\u200b", "\x00", "\x7f",
    "0", "7", "42", "12345", "2024-06-01", "100%", "$42.50", "[[120, 45, 680, 512]]",
    "def f(x):", "    return x", "print('hi')", "<", ">", "|", "<|", "|>", "<im", "img>",
)


def sample_texts(special_tokens: tuple[str, ...], count: int = 1500, seed: int = 0) -> list[str]:
    """A fixed corpus: every fragment alone and with spaces, then random mixes."""
    rng = random.Random(seed)
    texts = ["", " ", "  ", "\n", "Hello world", " Hello world", "Hello world ", "  Hello  world  "]
    for fragment in _FRAGMENTS + special_tokens:
        texts += [fragment, f" {fragment}", f"{fragment} ", f"x{fragment}y", f"\n{fragment}\n"]
    pool = _FRAGMENTS + special_tokens * 2
    for _ in range(count):
        parts = [rng.choice(pool) for _ in range(rng.randint(1, 12))]
        joiners = ["", " ", "", "  ", "\n"]
        texts.append("".join(p + rng.choice(joiners) for p in parts))
    return texts
