"""/tokenize and /detokenize over a fake engine: vLLM's shapes, the chat route's prompt, auth, errors."""

import pytest

from preprocessing import num_tiles
from server_support import (
    FAKE_BOS,
    FAKE_MODEL,
    FAKE_TOKENS_PER_FRAME,
    FAKE_TOKENS_PER_TILE,
    FakeEngine,
    data_url,
    image_part,
    make_image,
    text_part,
)

IMAGE = make_image(800, 600, seed=3)
FRAMES = [make_image(64, 48, seed=s) for s in range(3)]


def assert_error(response, status, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def media_messages(text="What is this?"):
    content = [
        image_part(data_url(IMAGE)),
        {"type": "video_frames", "video_frames": {"urls": [data_url(frame) for frame in FRAMES]}},
        text_part(text),
    ]
    return [{"role": "user", "content": content}]


def test_text_prompt_has_vllms_shape(client):
    response = client.post("/tokenize", json={"model": FAKE_MODEL, "prompt": "héllo"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "count": 6,
        "max_model_len": 4096,
        "tokens": [FAKE_BOS, *map(ord, "héllo")],
        "token_strs": None,
    }
    without = client.post("/tokenize", json={"prompt": "hi", "add_special_tokens": False, "return_token_strs": True})
    assert without.json()["tokens"] == [ord("h"), ord("i")] and without.json()["token_strs"] == ["h", "i"]


def test_messages_count_equals_the_chat_requests_prompt_tokens(client, fake_engine):
    tokenized = client.post("/tokenize", json={"model": FAKE_MODEL, "messages": media_messages(), "max_tiles": 6})
    assert tokenized.status_code == 200, tokenized.text
    chat = client.post(
        "/v1/chat/completions", json={"model": FAKE_MODEL, "messages": media_messages(), "max_tiles": 6, "max_tokens": 2}
    )
    assert chat.status_code == 200, chat.text
    result = tokenized.json()
    assert result["count"] == len(result["tokens"]) == chat.json()["usage"]["prompt_tokens"]
    # The same engine input reached both: the templated prompt and the media, tiled at the request's budget.
    tokenize_call, generate_call = fake_engine.calls[-2:]
    assert tokenize_call["tokenize"]["prompt"] == generate_call["prompt"]["prompt"]
    assert "<|im_start|>assistant\n" in generate_call["prompt"]["prompt"]
    media_tokens = num_tiles(800, 600, max_tiles=6) * FAKE_TOKENS_PER_TILE + len(FRAMES) * FAKE_TOKENS_PER_FRAME
    assert result["count"] == len(generate_call["prompt"]["prompt"]) + media_tokens
    # As the chat route: the engine's own choice of special tokens unless the request says.
    assert tokenize_call["add_special_tokens"] is None


def test_messages_budget_changes_the_count(client):
    def count(**extra):
        response = client.post("/tokenize", json={"messages": media_messages(), **extra})
        assert response.status_code == 200, response.text
        return response.json()["count"]

    assert count(max_tiles=12) - count(max_tiles=1) == (num_tiles(800, 600, max_tiles=12) - 1) * FAKE_TOKENS_PER_TILE


def test_detokenize_round_trips(client):
    tokens = client.post("/tokenize", json={"prompt": "round trip", "add_special_tokens": False}).json()["tokens"]
    response = client.post("/detokenize", json={"model": FAKE_MODEL, "tokens": tokens})
    assert response.status_code == 200 and response.json() == {"prompt": "round trip"}


@pytest.mark.parametrize(
    "path, payload, status, code",
    [
        ("/tokenize", {"model": "other", "prompt": "x"}, 404, "model_not_found"),
        ("/detokenize", {"model": "other", "tokens": [1]}, 404, "model_not_found"),
        ("/tokenize", {"prompt": 3}, 400, "invalid_field"),
        ("/tokenize", {}, 400, "invalid_field"),
        ("/detokenize", {"tokens": [-1]}, 400, "invalid_field"),
        ("/detokenize", {"tokens": [0x110002]}, 400, "invalid_token_id"),
        ("/tokenize", {"messages": []}, 400, "invalid_field"),
        ("/tokenize", {"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": False}, 400, "invalid_field"),
        ("/tokenize", {"messages": [{"role": "user", "content": "x"}], "chat_template": "{{x}}"}, 400, "invalid_field"),
        ("/tokenize", {"messages": [{"role": "assistant", "content": "x"}]}, 400, "invalid_messages"),
        ("/tokenize", {"messages": [{"role": "user", "content": [image_part("data:image/png;base64,AAAA")]}]}, 400, None),
        ("/tokenize", {"messages": [{"role": "user", "content": [image_part(data_url(IMAGE))]}], "max_tiles": 13}, 400,
         "too_many_tiles"),
    ],
)
def test_errors_are_openai_json(client, path, payload, status, code):
    assert_error(client.post(path, json=payload), status, code)


def test_limits_apply_as_for_chat(make_client):
    client = make_client(max_images_per_request=1)
    messages = [{"role": "user", "content": [image_part(data_url(IMAGE)), image_part(data_url(IMAGE))]}]
    assert_error(client.post("/tokenize", json={"messages": messages}), 400, "too_many_images")


def test_auth(make_client):
    client = make_client(api_keys=["secret"])
    for path, payload in (("/tokenize", {"prompt": "x"}), ("/detokenize", {"tokens": [104]})):
        assert_error(client.post(path, json=payload), 401, "invalid_api_key")
        ok = client.post(path, json=payload, headers={"Authorization": "Bearer secret"})
        assert ok.status_code == 200, ok.text


def test_dead_engine_is_503(make_client):
    client = make_client(engine=FakeEngine(alive=False))
    assert_error(client.post("/tokenize", json={"prompt": "x"}), 503, "engine_unavailable")
