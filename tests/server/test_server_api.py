"""The HTTP layer over a fake engine: shapes, errors, auth, limits, streaming, grounding."""

import json

import openai
import pytest

from server.sampling import sampling_kwargs
from server.schemas import ChatCompletionRequest
from preprocessing import get_template
from server_support import FAKE_MODEL, FakeEngine, data_url, image_part, make_image, text_part

CHAT = "/v1/chat/completions"


def body(**fields):
    return {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "Hi"}], **fields}


def sdk(client, **kwargs):
    return openai.OpenAI(base_url=f"{client.base_url}/v1", api_key="k", http_client=client, max_retries=0, **kwargs)


def assert_error(response, status, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_non_streaming_with_the_official_client(client, fake_engine):
    completion = sdk(client).chat.completions.create(
        model=FAKE_MODEL, messages=[{"role": "user", "content": [text_part("Hi")]}], n=2, max_tokens=5, stop="x"
    )
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert [c.message.content for c in completion.choices] == ["hello world", "hello world"]
    assert completion.usage.completion_tokens == 4 and completion.usage.total_tokens > 4
    sampling = fake_engine.calls[-1]["sampling"]
    assert sampling["n"] == 2 and sampling["max_tokens"] == 5
    assert sampling["stop"] == ["<|im_end|>", "<|endoftext|>", "x"]


def test_streaming_with_the_official_client(client):
    stream = sdk(client).chat.completions.create(
        model=FAKE_MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hello world"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2


def test_raw_sse_ends_with_done(client):
    with client.stream("POST", CHAT, json=body(stream=True)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    json.loads(lines[0][6:])


def test_grounding_boxes_in_pixels_of_the_last_image(make_client):
    engine = FakeEngine(reply="<ref>cat</ref><box>[[100, 200, 500, 1000]]</box>")
    client = make_client(engine=engine)
    image = make_image(800, 600)
    completion = sdk(client).chat.completions.create(
        model=FAKE_MODEL, messages=[{"role": "user", "content": [image_part(data_url(image)), text_part("Where?")]}]
    )
    message = completion.choices[0].message
    assert message.grounding == [{"label": "cat", "box": [80.0, 120.0, 400.0, 600.0], "image_index": 0}]
    prompt = engine.calls[-1]["prompt"]
    # Tiled on the server's threads at the default budget: 800x600 -> 4x3 grid + thumbnail.
    (item,) = prompt["multi_modal_data"]["image"]
    assert tuple(item["tiles"].shape) == (13, 3, 448, 448)
    assert len(prompt["multi_modal_uuids"]["image"]) == 1


def test_models_health_metrics_and_docs(client):
    models = sdk(client).models.list()
    assert [m.id for m in models.data] == [FAKE_MODEL]
    assert client.get(f"/v1/models/{FAKE_MODEL}").json()["id"] == FAKE_MODEL
    assert client.get("/health").status_code == 200
    client.post(CHAT, json=body())
    metrics = client.get("/metrics").text
    for name in (
        'internvl_requests_total{status="200"}',
        "internvl_request_latency_seconds",
        "internvl_time_to_first_token_seconds",
        "internvl_prompt_tokens_total",
        "internvl_completion_tokens_total",
        "internvl_images_total",
        "internvl_image_tiles_total",
        "internvl_video_frames_total",
        "internvl_preprocessing_seconds",
        "internvl_requests_running",
        "internvl_requests_waiting",
    ):
        assert name in metrics, name
    assert client.get("/openapi.json").json()["paths"][CHAT]
    assert client.get("/docs").status_code == 200


# One test per error status, each followed by a request that still works.


def test_400_bad_content(client):
    assert_error(client.post(CHAT, json=body(messages=[{"role": "user", "content": [image_part("data:image/png;base64,AAAA")]}])), 400)
    assert_error(client.post(CHAT, content=b"{not json", headers={"content-type": "application/json"}), 400, "invalid_json")
    error = assert_error(client.post(CHAT, json=body(messages=[{"role": "user", "content": [image_part("http://127.0.0.1/x.png")]}])), 400, "url_not_allowed")
    assert error["param"] == "messages.0.content.0.image_url.url"
    assert client.post(CHAT, json=body()).status_code == 200


def test_401_needs_a_key(make_client):
    client = make_client(api_keys=["secret", "other"])
    assert_error(client.post(CHAT, json=body()), 401, "invalid_api_key")
    assert_error(client.post(CHAT, json=body(), headers={"Authorization": "Bearer wrong"}), 401)
    with pytest.raises(openai.AuthenticationError):
        sdk(client).chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "x"}])
    assert client.post(CHAT, json=body(), headers={"Authorization": "Bearer other"}).status_code == 200
    assert client.get("/health").status_code == 200  # health is open
    assert client.get("/metrics").status_code == 200
    assert_error(make_client(api_keys=["s"], metrics_require_key=True).get("/metrics"), 401)


def test_404_unknown_model(client):
    assert_error(client.post(CHAT, json=body(model="gpt-4")), 404, "model_not_found")
    with pytest.raises(openai.NotFoundError):
        sdk(client).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert_error(client.get("/no/such/route"), 404)
    assert client.post(CHAT, json=body()).status_code == 200


def test_413_body_too_large(make_client):
    client = make_client(max_request_bytes=2048)
    assert_error(client.post(CHAT, json=body(messages=[{"role": "user", "content": "x" * 5000}])), 413, "request_too_large")

    def chunks():
        yield b'{"model": "' + FAKE_MODEL.encode() + b'", "messages": [{"role": "user", "content": "'
        yield b"x" * 5000
        yield b'"}]}'

    assert_error(client.post(CHAT, content=chunks(), headers={"content-type": "application/json"}), 413)
    assert client.post(CHAT, json=body()).status_code == 200


def test_413_media_too_large(make_client):
    client = make_client(max_media_bytes=100)
    image = data_url(make_image(64, 64))
    assert_error(client.post(CHAT, json=body(messages=[{"role": "user", "content": [image_part(image)]}])), 413, "media_too_large")


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 5},
        {"n": 0},
        {"messages": []},
        {"messages": [{"role": "user", "content": [{"type": "audio", "audio": {}}]}]},
        {"messages": [{"role": "user", "content": [image_part("x", detail="ultra")]}]},
        {"messages": [{"role": "user", "content": [image_part("x", max_tiles=0)]}]},
        {"top_logprobs": 3},
        {"response_format": {"type": "json_schema"}},
        {"max_tokens": "many"},
    ],
)
def test_400_invalid_fields(client, fields):
    # 400, as OpenAI and vLLM answer (not FastAPI's 422): the SDK raises BadRequestError.
    error = assert_error(client.post(CHAT, json=body(**fields)), 400, "invalid_field")
    assert error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(client).chat.completions.create(**body(**fields))
    assert caught.value.code == "invalid_field" and caught.value.param == error["param"]
    assert client.post(CHAT, json=body()).status_code == 200


def test_400_missing_model(client):
    error = assert_error(client.post(CHAT, json={"messages": [{"role": "user", "content": "x"}]}), 400, "invalid_field")
    assert error["param"] == "model"


def test_429_over_the_concurrency_limit(client):
    client.app.state.limiter.active = client.app.state.limiter.limit  # as if all slots were busy
    response = client.post(CHAT, json=body())
    assert_error(response, 429, "too_many_requests")
    assert response.headers["retry-after"] == "1"
    client.app.state.limiter.active = 0
    assert client.post(CHAT, json=body()).status_code == 200
    assert client.app.state.limiter.active == 0  # every path releases its slot


def test_slots_are_released_after_streams_and_errors(client):
    client.post(CHAT, json=body(stream=True))
    client.post(CHAT, json=body(messages=[{"role": "user", "content": [image_part("data:image/png;base64,AAAA")]}]))
    assert client.app.state.limiter.active == 0


def test_503_when_the_engine_is_down(client, fake_engine):
    fake_engine.alive = False
    assert_error(client.post(CHAT, json=body()), 503, "engine_unavailable")
    assert client.get("/health").status_code == 503
    fake_engine.alive = True
    assert client.get("/health").status_code == 200
    assert client.post(CHAT, json=body()).status_code == 200


def test_sampling_kwargs_map_openai_fields():
    request = ChatCompletionRequest(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        min_p=0.1,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        repetition_penalty=1.1,
        max_completion_tokens=7,
        max_tokens=3,
        seed=1,
        logprobs=True,
        top_logprobs=2,
        ignore_eos=True,
        response_format={"type": "json_object"},
    )
    kwargs = sampling_kwargs(request, get_template("Hermes-2"), max_n=8)
    assert kwargs["max_tokens"] == 7  # max_completion_tokens wins
    assert kwargs["logprobs"] == 2 and kwargs["ignore_eos"] and kwargs["seed"] == 1
    assert kwargs["structured_outputs"] == {"json_object": True}
    assert (kwargs["temperature"], kwargs["top_k"], kwargs["min_p"], kwargs["repetition_penalty"]) == (0.5, 5, 0.1, 1.1)


def test_structured_output_extensions():
    template = get_template("Hermes-2")

    def structured(**fields):
        request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}], **fields)
        return sampling_kwargs(request, template, max_n=8).get("structured_outputs")

    assert structured(guided_regex="a+") == {"regex": "a+"}
    assert structured(structured_outputs={"choice": ["a", "b"]}) == {"choice": ["a", "b"]}
    schema = {"type": "object"}
    assert structured(
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        structured_outputs={"disable_any_whitespace": True},
    ) == {"json": schema, "disable_any_whitespace": True}
    from server.errors import BadRequest

    with pytest.raises(BadRequest):
        structured(guided_regex="a", response_format={"type": "json_object"})
