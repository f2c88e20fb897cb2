"""End to end: one live `internvl-serve` (uvicorn + vLLM on the CPU) per session,
driven by the official openai client. Only loopback is ever contacted."""

import asyncio
import base64
import json
import time

import httpx
import openai
import pytest

from preprocessing import TOKENS_PER_TILE, expand_image_placeholders, num_tiles
from server_support import data_url, image_bytes, image_part, make_image, make_mp4, text_part

pytestmark = pytest.mark.slow

from tests.live_server import MAX_CONCURRENT, MAX_REQUEST_BYTES  # noqa: E402


def expected_prompt_tokens(tokenizer, prompt: str, tiles: list[int], videos: list[int] = ()) -> int:
    """Tokens after the plugin's expansion: <img> + 256 per tile + </img> per image; a
    `Frame{i}: <img>...</img>` line of one tile per video frame. A request here holds
    images or one video, never both, so the tile list is simply images then frames."""
    for frames in videos:
        prompt = prompt.replace("<video>", "".join(f"Frame{i + 1}: <image>\n" for i in range(frames)), 1)
    text = expand_image_placeholders(prompt, list(tiles) + [1] * sum(videos))
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def user_prompt(user: str, system: str | None = None) -> str:
    from preprocessing import DEFAULT_SYSTEM_MESSAGE

    system = DEFAULT_SYSTEM_MESSAGE if system is None else system
    return f"<|im_start|>system\n{system}<|im_end|><|im_start|>user\n{user}<|im_end|><|im_start|>assistant\n"


def test_health_models_and_auth(live_server):
    assert live_server.alive()
    assert [m.id for m in live_server.client().models.list().data] == ["internvl-tiny"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live_server.base_url}/v1", api_key="wrong", max_retries=0).models.list()


def test_one_image_usage_counts_tiles(live_server, tokenizer):
    image = make_image(800, 600, seed=1)
    completion = live_server.client().chat.completions.create(
        model=live_server.model,
        messages=[{"role": "user", "content": [image_part(data_url(image)), text_part("Describe the image.")]}],
        max_tokens=4,
        temperature=0,
    )
    tiles = num_tiles(800, 600, max_tiles=12)
    expected = expected_prompt_tokens(tokenizer, user_prompt("<image>\nDescribe the image."), [tiles])
    assert completion.usage.prompt_tokens == expected
    assert completion.usage.prompt_tokens > TOKENS_PER_TILE * tiles
    assert 1 <= completion.usage.completion_tokens <= 4
    assert completion.choices[0].message.role == "assistant"


def test_several_images_with_per_image_budgets(live_server, tokenizer):
    sizes = [(900, 500), (300, 640), (1200, 300)]
    parts = [
        image_part(data_url(make_image(*sizes[0], seed=2)), max_tiles=4),
        image_part(data_url(make_image(*sizes[1], seed=3), "JPEG"), detail="low"),
        image_part(data_url(make_image(*sizes[2], seed=4))),
        text_part("Compare them."),
    ]
    completion = live_server.client().chat.completions.create(
        model=live_server.model, messages=[{"role": "user", "content": parts}], max_tokens=2, extra_body={"max_tiles": 6}
    )
    tiles = [num_tiles(*sizes[0], max_tiles=4), 1, num_tiles(*sizes[2], max_tiles=6)]
    prompt = user_prompt("Image-1: <image>\nImage-2: <image>\nImage-3: <image>\nCompare them.")
    assert completion.usage.prompt_tokens == expected_prompt_tokens(tokenizer, prompt, tiles)


def test_video_by_data_url_and_by_loopback_http(live_server, tokenizer, loopback_http):
    video = make_mp4()
    (live_server.media_dir / "clip.mp4").write_bytes(video)
    client = live_server.client()
    url = "data:video/mp4;base64," + base64.b64encode(video).decode()
    prompt = user_prompt("<video>What happens?")
    for source in (url, f"{loopback_http}/clip.mp4"):
        completion = client.chat.completions.create(
            model=live_server.model,
            messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": source, "num_frames": 6}}, text_part("What happens?")]}],
            max_tokens=2,
        )
        assert completion.usage.prompt_tokens == expected_prompt_tokens(tokenizer, prompt, [], [6])
    # The request-level default (and the server default of 4 frames).
    completion = client.chat.completions.create(
        model=live_server.model,
        messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}, text_part("What happens?")]}],
        max_tokens=2,
    )
    assert completion.usage.prompt_tokens == expected_prompt_tokens(tokenizer, prompt, [], [4])


def test_frames_list_and_file_url(live_server, tokenizer, loopback_http):
    for index in range(3):
        (live_server.media_dir / f"frame{index}.png").write_bytes(image_bytes(make_image(320, 240, seed=10 + index)))
    urls = [f"{loopback_http}/frame0.png", f"file://{live_server.media_dir / 'frame1.png'}", data_url(make_image(100, 80))]
    completion = live_server.client().chat.completions.create(
        model=live_server.model,
        messages=[{"role": "user", "content": [{"type": "video_frames", "video_frames": {"urls": urls}}, text_part("What happens?")]}],
        max_tokens=2,
    )
    assert completion.usage.prompt_tokens == expected_prompt_tokens(tokenizer, user_prompt("<video>What happens?"), [], [3])


def test_multi_turn_with_images_and_a_system_prompt(live_server, tokenizer):
    first, second = make_image(640, 480, seed=5), make_image(500, 900, seed=6)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [image_part(data_url(first)), text_part("What is this?")]},
        {"role": "assistant", "content": "A picture."},
        {"role": "user", "content": [image_part(data_url(second)), text_part("And this?")]},
    ]
    completion = live_server.client().chat.completions.create(model=live_server.model, messages=messages, max_tokens=2)
    prompt = (
        "<|im_start|>system\nYou are terse.<|im_end|><|im_start|>user\n<image>\nWhat is this?<|im_end|>"
        "<|im_start|>assistant\nA picture.<|im_end|><|im_start|>user\n<image>\nAnd this?<|im_end|><|im_start|>assistant\n"
    )
    tiles = [1, num_tiles(500, 900, max_tiles=12)]  # the earlier turn's image gets one tile
    assert completion.usage.prompt_tokens == expected_prompt_tokens(tokenizer, prompt, tiles)


def test_n_and_stop(live_server):
    client = live_server.client()
    completion = client.chat.completions.create(
        model=live_server.model, messages=[{"role": "user", "content": "Hello"}], n=3, max_tokens=8, seed=3, temperature=1.0
    )
    assert sorted(c.index for c in completion.choices) == [0, 1, 2]
    assert 3 <= completion.usage.completion_tokens <= 24
    # A stop string the forced output must hit: the answer ends right before it.
    stopped = client.chat.completions.create(
        model=live_server.model,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=20,
        stop=["STOP"],
        extra_body={"guided_regex": "abc STOP def"},
    )
    assert stopped.choices[0].message.content == "abc " and stopped.choices[0].finish_reason == "stop"


def sampled_tokens(client, model, seed: int) -> list[str]:
    """16 tokens sampled at temperature 1 (ignore_eos: always 16), as their text pieces."""
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Tell me a story."}],
        max_tokens=16,
        temperature=1.0,
        seed=seed,
        logprobs=True,
        extra_body={"ignore_eos": True},
    )
    assert completion.usage.completion_tokens == 16
    return [entry.token for entry in completion.choices[0].logprobs.content]


def test_seed_reproduces_a_sampled_answer(live_server):
    client = live_server.client()
    first = sampled_tokens(client, live_server.model, seed=1234)
    # Other traffic in between must not shift the seeded stream.
    sampled_tokens(client, live_server.model, seed=99)
    assert sampled_tokens(client, live_server.model, seed=1234) == first


def test_different_seeds_sample_differently(live_server):
    # 16 tokens at temperature 1 from a random-weight model: two seeds agreeing on
    # all 16 is vanishingly unlikely, but demand only that most of five seeds differ
    # from one another, so a rare coincidence cannot fail the test.
    client = live_server.client()
    answers = [tuple(sampled_tokens(client, live_server.model, seed=seed)) for seed in (11, 12, 13, 14, 15)]
    assert len(set(answers)) >= 4, answers


def test_json_schema_output_validates(live_server):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green"]}},
        "required": ["ok", "color"],
        "additionalProperties": False,
    }
    completion = live_server.client().chat.completions.create(
        model=live_server.model,
        messages=[{"role": "user", "content": "Answer in JSON."}],
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    value = json.loads(completion.choices[0].message.content)
    assert set(value) == {"ok", "color"} and isinstance(value["ok"], bool) and value["color"] in ("red", "green")


def test_grounding_boxes_are_returned_in_pixels(live_server):
    image = make_image(800, 600, seed=7)
    completion = live_server.client().chat.completions.create(
        model=live_server.model,
        messages=[{"role": "user", "content": [image_part(data_url(image), detail="low"), text_part("Where is the cat?")]}],
        max_tokens=60,
        extra_body={"guided_regex": r"<ref>cat</ref><box>\[\[100, 200, 500, 1000\]\]</box>"},
    )
    message = completion.choices[0].message
    assert "<box>" in message.content
    assert message.grounding == [{"label": "cat", "box": [80.0, 120.0, 400.0, 600.0], "image_index": 0}]


def test_streaming_sync_with_usage_and_logprobs(live_server):
    messages = [{"role": "user", "content": [image_part(data_url(make_image(448, 448)), detail="low"), text_part("Hi")]}]
    stream = live_server.client().chat.completions.create(
        model=live_server.model,
        messages=messages,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        logprobs=True,
        top_logprobs=2,
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == 6 and chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens > TOKENS_PER_TILE
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishing[-1].choices[0].finish_reason == "length"
    logprobs = [lp for c in chunks if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.content]
    assert len(logprobs) == 6 and all(len(lp.top_logprobs) == 2 for lp in logprobs)
    # The content: the same greedy request unstreamed gives the same tokens and text.
    whole = live_server.client().chat.completions.create(
        model=live_server.model, messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2,
        extra_body={"ignore_eos": True},
    )
    streamed_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [lp.token for lp in logprobs] == [lp.token for lp in whole.choices[0].logprobs.content]
    assert streamed_text == whole.choices[0].message.content and streamed_text.strip()
    for streamed_lp, whole_lp in zip(logprobs, whole.choices[0].logprobs.content):
        assert abs(streamed_lp.logprob - whole_lp.logprob) < 1e-4
        assert streamed_lp.top_logprobs[0].token == streamed_lp.token  # greedy: the best token


async def test_async_client_streaming_and_concurrency(live_server):
    client = live_server.async_client()

    async def streamed(seed):
        stream = await client.chat.completions.create(
            model=live_server.model, messages=[{"role": "user", "content": "Hello"}], max_tokens=6, stream=True,
            seed=seed, temperature=1.0, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage.completion_tokens == 6
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

    async def whole(seed):
        completion = await client.chat.completions.create(
            model=live_server.model, messages=[{"role": "user", "content": "Hello"}], max_tokens=6,
            seed=seed, temperature=1.0, extra_body={"ignore_eos": True},
        )
        return completion.choices[0].message.content

    # Two streams at once give exactly what each request gives alone, unstreamed.
    together = await asyncio.gather(streamed(1), streamed(2))
    alone = [await whole(1), await whole(2)]
    assert list(together) == alone
    assert together[0] != together[1]
    await client.close()


# One test per error status; the server keeps serving after each.


def assert_still_serving(live_server):
    completion = live_server.client().chat.completions.create(
        model=live_server.model, messages=[{"role": "user", "content": "ok?"}], max_tokens=1
    )
    assert completion.choices


def test_400_bad_image_and_refused_url(live_server):
    client = live_server.client()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=live_server.model, messages=[{"role": "user", "content": [image_part("data:image/png;base64,iVBORw0KGgo=")]}]
        )
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=live_server.model, messages=[{"role": "user", "content": [image_part("http://169.254.169.254/latest")]}]
        )
    assert caught.value.code == "url_not_allowed"
    assert_still_serving(live_server)


def test_400_prompt_too_long(live_server):
    with pytest.raises(openai.BadRequestError):
        live_server.client().chat.completions.create(
            model=live_server.model, messages=[{"role": "user", "content": "word " * 20000}], max_tokens=1
        )
    assert_still_serving(live_server)


def test_404_unknown_model(live_server):
    with pytest.raises(openai.NotFoundError):
        live_server.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert_still_serving(live_server)


def test_413_request_too_large(live_server):
    response = live_server.post({"model": live_server.model, "messages": [{"role": "user", "content": "x" * (MAX_REQUEST_BYTES + 10)}]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert_still_serving(live_server)


def test_400_invalid_fields(live_server):
    # As OpenAI and vLLM: a 400, so the SDK raises BadRequestError (FastAPI's default 422 would not).
    with pytest.raises(openai.BadRequestError) as caught:
        live_server.client().chat.completions.create(
            model=live_server.model, messages=[{"role": "user", "content": "x"}], temperature=9
        )
    assert (caught.value.code, caught.value.param) == ("invalid_field", "temperature")
    assert_still_serving(live_server)


async def test_429_when_saturated_then_recovers(live_server):
    client = live_server.async_client()
    streams = []
    for _ in range(MAX_CONCURRENT):
        streams.append(
            await client.chat.completions.create(
                model=live_server.model,
                messages=[{"role": "user", "content": "go"}],
                max_tokens=2000,
                stream=True,
                extra_body={"ignore_eos": True},
            )
        )
    response = await asyncio.to_thread(live_server.post, {"model": live_server.model, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    # Closing the streams disconnects: the server aborts them in the engine and frees the slots.
    for stream in streams:
        await stream.close()
    await client.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{live_server.base_url}/metrics").text
        if "internvl_requests_in_flight 0.0" in metrics:
            break
        await asyncio.sleep(0.5)
    assert "internvl_requests_in_flight 0.0" in metrics
    assert_still_serving(live_server)


def metric_value(metrics: str, name: str) -> float:
    [line] = [line for line in metrics.splitlines() if line.split(" ")[0] == name]
    return float(line.split()[-1])


def test_metrics_after_traffic(live_server):
    before = httpx.get(f"{live_server.base_url}/metrics").text
    assert 'internvl_requests_total{status="200"}' in before
    completion = live_server.client().chat.completions.create(
        model=live_server.model, messages=[{"role": "user", "content": "Count the tokens."}], max_tokens=3,
        extra_body={"ignore_eos": True},
    )
    # The status counter ticks when the response has been sent, just after the client
    # has it: give it a moment, then every counter must have moved by exactly this request.
    deadline = time.monotonic() + 10
    while True:
        after = httpx.get(f"{live_server.base_url}/metrics").text
        ok = 'internvl_requests_total{status="200"}'
        if metric_value(after, ok) > metric_value(before, ok) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for name, used in [
        ("internvl_prompt_tokens_total", completion.usage.prompt_tokens),
        ("internvl_completion_tokens_total", completion.usage.completion_tokens),
        ('internvl_requests_total{status="200"}', 1),
    ]:
        assert metric_value(after, name) - metric_value(before, name) == used, name
