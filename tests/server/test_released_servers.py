"""A server per released tokenizer format, started as a user would: `--model DIR` on a
released-layout checkpoint, no `--trust-remote-code`.

For each sentencepiece format served by a tokenizer class of ours (InternLM2 with
the dummy prefix, Phi-3, Yi, InternLM3), `/tokenize` must return the released slow tokenizer's
ids, BOS included, and a chat with an image must report `usage.prompt_tokens` equal to
the ids of the official `chat()` prompt. The reference is
tests/official_chat_reference.py, which shares no code with the server. The other
formats take the same path in tests/test_official_prompt_ids.py (the server's prompt
planning and vLLM's processor with the tokenizer vLLM loads, for all ten families)
and on the shared live server (Qwen2); a server per format costs the suite ~40 s each.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from benchmarks.server_process import stop, wait_until_healthy
from model_plugin.families import FAMILIES
from model_plugin.tokenizer import write_released_tokenizer
from tests.live_server import REPO, free_port
from tests.official_chat_reference import ReferenceTokenizer, chat_query
from tests.test_official_prompt_ids import (
    IMAGES,
    MAX_TILES,
    QUESTION,
    RELEASED_TEMPLATE,
    TOKENIZER_KIND,
    _data_url,
    _official_tiles,
    _png,
)

pytestmark = pytest.mark.slow

# Spaces, newlines, CJK, an emoji (byte fallback) and inline special tokens.
TEXT = "  Hello,\n\tworld!  こんにちは 🦙 <img></img> x<|im_end|>y  "
CASES = [("InternVL2-2B", True), ("InternVL2-4B", None), ("InternVL2-40B", None), ("InternVL3-9B", None)]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: f"{case[0]}-prefix={case[1]}")
def released_server(request, checkpoint, tmp_path_factory):
    family, add_dummy_prefix = request.param
    path = checkpoint(family)
    if add_dummy_prefix:  # the same weights, the tokenizer's normalizer adding "▁"
        path = shutil.copytree(path, tmp_path_factory.mktemp("prefixed") / path.name)
        write_released_tokenizer(FAMILIES[family].tiny(), path, add_dummy_prefix=True)
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    port = free_port()
    command = [
        sys.executable, "-m", "server", "--model", str(path), "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "4096", "--max-num-seqs", "2",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, base_url, log_path=log_path, timeout_s=600)
        yield family, Path(path), base_url
    finally:
        stop(process, timeout_s=60)


def test_tokenize_returns_the_released_slow_tokenizers_ids(released_server):
    family, path, base_url = released_server
    reply = httpx.post(f"{base_url}/tokenize", json={"prompt": TEXT}, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["tokens"] == ReferenceTokenizer(path, TOKENIZER_KIND[family]).encode(TEXT)


def test_chat_prompt_tokens_equal_the_official_prompt(released_server):
    family, path, base_url = released_server
    image = _png(IMAGES["landscape"], "teal")
    content = [{"type": "image_url", "image_url": {"url": _data_url(image)}}, {"type": "text", "text": QUESTION}]
    reply = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": str(path), "messages": [{"role": "user", "content": content}], "max_tokens": 1,
              "max_tiles": MAX_TILES},
        timeout=300,
    )
    assert reply.status_code == 200, reply.text
    query = chat_query(RELEASED_TEMPLATE[family], QUESTION, [_official_tiles(image, MAX_TILES)])
    official = ReferenceTokenizer(path, TOKENIZER_KIND[family]).encode(query)
    assert reply.json()["usage"]["prompt_tokens"] == len(official)
