"""/tokenize and /detokenize on the shared live server (tiny InternVL2-1B, vLLM on the CPU).

The chat route's `usage.prompt_tokens` is the reference for `count`: the same
messages must give the same number, media tokens included.
"""

import base64

import httpx
import pytest

from preprocessing import num_tiles
from server_support import data_url, image_part, make_image, make_mp4, text_part

pytestmark = pytest.mark.slow

from tests.live_server import API_KEY  # noqa: E402


def post(live_server, path: str, payload: dict) -> dict:
    response = httpx.post(
        f"{live_server.base_url}{path}", json=payload, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300
    )
    assert response.status_code == 200, response.text
    return response.json()


def prompt_tokens(live_server, messages: list, **extra) -> int:
    response = live_server.post({"model": live_server.model, "messages": messages, "max_tokens": 1, **extra})
    assert response.status_code == 200, response.text
    return response.json()["usage"]["prompt_tokens"]


def test_text_prompt_is_the_tokenizers(live_server, tokenizer):
    text = "Describe InternVL2 in one sentence, s'il vous plaît."
    result = post(live_server, "/tokenize", {"model": live_server.model, "prompt": text, "return_token_strs": True})
    assert result["tokens"] == tokenizer(text).input_ids
    assert result["count"] == len(result["tokens"]) and result["max_model_len"] == 8192
    assert result["token_strs"] == tokenizer.convert_ids_to_tokens(result["tokens"])
    bare = post(live_server, "/tokenize", {"prompt": text, "add_special_tokens": False})
    assert bare["tokens"] == tokenizer(text, add_special_tokens=False).input_ids


def test_detokenize_round_trips(live_server, tokenizer):
    text = "Round trip: tiles, frames & <b>markup</b>."
    tokens = post(live_server, "/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"]
    assert post(live_server, "/detokenize", {"model": live_server.model, "tokens": tokens}) == {"prompt": text}
    special = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert post(live_server, "/detokenize", {"tokens": [special]})["prompt"] == "<|im_end|>"


def test_image_count_equals_chat_prompt_tokens(live_server):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [image_part(data_url(make_image(800, 600, seed=21))), text_part("What is this?")]},
    ]
    for budget in (1, 6):
        counted = post(live_server, "/tokenize", {"model": live_server.model, "messages": messages, "max_tiles": budget})
        assert counted["count"] == len(counted["tokens"]) == prompt_tokens(live_server, messages, max_tiles=budget)
    # The image's tiles are in the count: 256 tokens per tile of the 6-tile budget's grid.
    assert counted["count"] > 256 * num_tiles(800, 600, max_tiles=6)


def test_multi_turn_images_and_video_count_equals_chat_prompt_tokens(live_server):
    video = "data:video/mp4;base64," + base64.b64encode(make_mp4()).decode()
    messages = [
        {"role": "user", "content": [image_part(data_url(make_image(300, 500, seed=22))), text_part("And this?")]},
        {"role": "assistant", "content": "A picture."},
        {
            "role": "user",
            "content": [
                image_part(data_url(make_image(640, 200, seed=23)), detail="low"),
                {"type": "video_url", "video_url": {"url": video, "num_frames": 3}},
                text_part("Compare them."),
            ],
        },
    ]
    counted = post(live_server, "/tokenize", {"messages": messages})
    assert counted["count"] == prompt_tokens(live_server, messages)
