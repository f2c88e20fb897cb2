"""The API details clients trip on, over a fake engine: which fields are accepted, refused or
unknown; logit_bias; max_model_len and /version; X-Request-Id; cached tokens; aborted generations."""

import json
import logging
import re

import openai
import pytest
from fastapi.testclient import TestClient
from openai.types.chat.completion_create_params import CompletionCreateParamsBase

from server.app import create_app
from server.request_ids import LOG_FORMAT, RequestIdLogFilter
from server.schemas import ChatCompletionRequest
from server.settings import Settings
from server_support import FAKE_MODEL, FakeEngine

CHAT = "/v1/chat/completions"
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def body(**fields):
    return {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "Hi"}], **fields}


def sdk(client, **kwargs):
    return openai.OpenAI(base_url=f"{client.base_url}/v1", api_key="k", http_client=client, max_retries=0, **kwargs)


def error_of(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def sse_events(response) -> list:
    lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


# --- which fields: supported, informational, unsupported, unknown ------------------------


UNSUPPORTED = [
    ("audio", {"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text"]}),
    ("modalities", {"modalities": ["text", "audio"]}),
    ("prediction", {"prediction": {"type": "content", "content": "Hello"}}),
    ("web_search_options", {"web_search_options": {}}),
    ("reasoning_effort", {"reasoning_effort": "low"}),
    ("verbosity", {"verbosity": "low"}),
    ("moderation", {"moderation": {"model": "omni-moderation-latest"}}),
    ("tools", {"tools": [TOOL]}),
    ("tools", {"tools": [TOOL], "tool_choice": "auto"}),
    ("tool_choice", {"tool_choice": "required"}),
    ("tool_choice", {"tool_choice": {"type": "function", "function": {"name": "lookup"}}}),
    ("functions", {"functions": [TOOL["function"]]}),
    ("function_call", {"function_call": {"name": "lookup"}}),
]


@pytest.mark.parametrize("param, fields", UNSUPPORTED, ids=[f"{p}-{i}" for i, (p, _) in enumerate(UNSUPPORTED)])
def test_fields_that_would_change_the_answer_are_400_naming_them(client, fake_engine, param, fields):
    error = error_of(client.post(CHAT, json=body(**fields)), 400)
    assert (error["code"], error["param"], error["type"]) == ("unsupported_parameter", param, "invalid_request_error")
    assert param in error["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(client).chat.completions.create(**body(**fields))
    assert caught.value.param == param
    assert fake_engine.calls == []  # nothing was generated behind the client's back


def test_informational_fields_are_accepted_and_change_nothing(client, fake_engine):
    informational = {
        "user": "u-1",
        "metadata": {"team": "vision"},
        "store": False,
        "service_tier": "default",
        "safety_identifier": "hash-1",
        "prompt_cache_key": "k",
        "prompt_cache_retention": "24h",
        "prompt_cache_options": {"ttl": "30m"},
        "parallel_tool_calls": False,
        # Shapes of the unsupported fields that ask for nothing.
        "modalities": ["text"],
        "audio": None,
        "tools": [TOOL],
        "tool_choice": "none",
        "function_call": "auto",
        "stream_options": None,
    }
    plain = sdk(client).chat.completions.create(**body())
    with_fields = sdk(client).chat.completions.create(**body(**informational))
    assert with_fields.choices[0].message.content == plain.choices[0].message.content
    first, second = fake_engine.calls
    assert second["sampling"] == first["sampling"] and second["prompt"] == first["prompt"]


def test_every_field_of_openais_chat_request_has_a_decision():
    # The openai package's own list: a field missing here would be refused as unknown.
    undecided = set(CompletionCreateParamsBase.__annotations__) - set(ChatCompletionRequest.model_fields)
    assert not undecided


def test_unknown_fields_are_400_unrecognized(client, fake_engine):
    error = error_of(client.post(CHAT, json=body(frobnicate=1)), 400)
    assert error == {
        "message": "Unrecognized request argument supplied: frobnicate",
        "type": "invalid_request_error",
        "param": "frobnicate",
        "code": "unknown_parameter",
    }
    error = error_of(client.post(CHAT, json=body(min_tokens=3, documents=[])), 400)
    assert "min_tokens" in error["message"] and "documents" in error["message"]
    with pytest.raises(openai.BadRequestError):
        sdk(client).chat.completions.create(**body(), extra_body={"best_of": 2})
    assert fake_engine.calls == []


def test_our_extensions_still_work(client, fake_engine):
    extensions = {
        "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "ignore_eos": True, "guided_regex": "a+",
        "max_tiles": 4, "history_max_tiles": 2, "num_frames": 4,
    }
    response = client.post(CHAT, json=body(**extensions))
    assert response.status_code == 200, response.text
    sampling = fake_engine.calls[-1]["sampling"]
    assert (sampling["top_k"], sampling["min_p"], sampling["ignore_eos"]) == (5, 0.1, True)
    assert sampling["structured_outputs"] == {"regex": "a+"}
    # Nested objects ignore what they do not know (a message's `name`).
    named = body(messages=[{"role": "user", "content": "Hi", "name": "ann"}])
    assert client.post(CHAT, json=named).status_code == 200


# --- logit_bias ------------------------------------------------------------------------------


def test_logit_bias_reaches_the_engine_with_int_ids(client, fake_engine):
    sdk(client).chat.completions.create(**body(), logit_bias={"42": 100, "7": -100, "3": 0.5})
    assert fake_engine.calls[-1]["sampling"]["logit_bias"] == {42: 100.0, 7: -100.0, 3: 0.5}
    client.post(CHAT, json=body())
    assert "logit_bias" not in fake_engine.calls[-1]["sampling"]


@pytest.mark.parametrize("bias", [{"abc": 1}, {"-1": 1}, {"1.5": 1}, {"5": 101}, {"5": -100.5}, {"5": "x"}])
def test_bad_logit_bias_is_400_naming_it(client, bias):
    error = error_of(client.post(CHAT, json=body(logit_bias=bias)), 400)
    assert error["param"].startswith("logit_bias") and error["code"] == "invalid_field"


# --- /v1/models and /version --------------------------------------------------------------


def test_models_report_max_model_len(client, fake_engine):
    (model,) = sdk(client).models.list().data
    assert model.max_model_len == fake_engine.info.max_model_len == 4096
    assert client.get(f"/v1/models/{FAKE_MODEL}").json()["max_model_len"] == 4096


def test_version_reports_ours_and_the_engines(make_client):
    from importlib.metadata import version

    client = make_client(api_keys=["secret"])
    error_of(client.get("/version"), 401)  # versions are not public, unlike /health
    response = client.get("/version", headers={"Authorization": "Bearer secret"})
    assert response.json() == {"version": version("internvl-serve"), "vllm_version": "fake-engine-1.0"}


# --- X-Request-Id ----------------------------------------------------------------------------


def test_the_clients_request_id_names_the_answer_and_the_engine_request(client, fake_engine):
    response = client.post(CHAT, json=body(), headers={"X-Request-Id": "trace-7f3a:01"})
    assert response.headers["x-request-id"] == "trace-7f3a:01"
    assert response.json()["id"] == "chatcmpl-trace-7f3a:01"
    assert fake_engine.calls[-1]["request_id"] == "chatcmpl-trace-7f3a:01"
    with client.stream("POST", CHAT, json=body(stream=True), headers={"X-Request-Id": "s-1"}) as streamed:
        assert streamed.headers["x-request-id"] == "s-1"
        assert {event["id"] for event in sse_events(streamed)} == {"chatcmpl-s-1"}


def test_without_one_the_server_makes_a_fresh_id(client, fake_engine):
    first, second = client.post(CHAT, json=body()), client.post(CHAT, json=body())
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert ids[0] != ids[1] and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert first.json()["id"] == f"chatcmpl-{ids[0]}"
    assert fake_engine.calls[0]["request_id"] == f"chatcmpl-{ids[0]}"


@pytest.mark.parametrize("sent", ["x" * 129, "has space", "caf\u00e9", ""])
def test_an_unusable_client_id_is_replaced(client, sent):
    response = client.post(CHAT, json=body(), headers={"X-Request-Id": sent.encode("latin-1")})
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_a_128_character_id_is_kept(client):
    sent = "a" * 127 + "~"
    assert client.post(CHAT, json=body(), headers={"X-Request-Id": sent}).headers["x-request-id"] == sent


class _Crashing(FakeEngine):
    async def generate(self, prompt, sampling, request_id, *, stream):
        raise RuntimeError("a bug")
        yield  # pragma: no cover


def test_every_response_carries_the_id(make_client, fake_engine):
    keyed = make_client(api_keys=["secret"], max_request_bytes=2048)
    auth = {"Authorization": "Bearer secret"}
    responses = {
        401: keyed.post(CHAT, json=body(), headers={"X-Request-Id": "r401"}),
        413: keyed.post(
            CHAT, json=body(messages=[{"role": "user", "content": "x" * 5000}]), headers={**auth, "X-Request-Id": "r413"}
        ),
        404: keyed.get("/no/such/route", headers={"X-Request-Id": "r404"}),
        400: keyed.post(CHAT, json=body(n=0), headers={**auth, "X-Request-Id": "r400"}),
        200: keyed.get("/health", headers={"X-Request-Id": "r200"}),
    }
    keyed.app.state.limiter.active = keyed.app.state.limiter.limit
    responses[429] = keyed.post(CHAT, json=body(), headers={**auth, "X-Request-Id": "r429"})
    keyed.app.state.limiter.active = 0
    responses[500] = make_client(engine=_Crashing()).post(CHAT, json=body(), headers={"X-Request-Id": "r500"})
    for status, response in responses.items():
        assert response.status_code == status, (status, response.text)
        assert response.headers["x-request-id"] == f"r{status}"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdLogFilter())
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_log_lines_of_a_request_carry_its_id(make_client):
    handler = _Records()
    logger = logging.getLogger("server")
    logger.addHandler(handler)
    try:
        response = make_client(engine=_Crashing()).post(CHAT, json=body(), headers={"X-Request-Id": "boom-1"})
        logging.getLogger("server.test").warning("outside any request")
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 500 and response.headers["x-request-id"] == "boom-1"
    [crash] = [record for record in handler.records if record.getMessage().startswith("unhandled error")]
    assert crash.request_id == "boom-1"
    assert "[boom-1]: unhandled error on POST /v1/chat/completions" in handler.format(crash)
    assert handler.records[-1].request_id == "-"


# --- cached tokens ---------------------------------------------------------------------------


def test_cached_tokens_are_reported(make_client):
    client = make_client(engine=FakeEngine(cached_tokens=256))
    completion = sdk(client).chat.completions.create(**body())
    assert completion.usage.prompt_tokens_details.cached_tokens == 256
    stream = sdk(client).chat.completions.create(**body(), stream=True, stream_options={"include_usage": True})
    usage = list(stream)[-1].usage
    assert usage.prompt_tokens_details.cached_tokens == 256 and usage.completion_tokens == 2


def test_no_cache_hit_reports_zero(client):
    assert sdk(client).chat.completions.create(**body()).usage.prompt_tokens_details.cached_tokens == 0


# --- aborted generations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason, status, code", [("abort", 503, "generation_aborted"), ("error", 500, "generation_failed")]
)
def test_an_aborted_generation_is_an_error_not_a_stop(make_client, reason, status, code):
    client = make_client(engine=FakeEngine(finish_reason=reason))
    error = error_of(client.post(CHAT, json=body()), status)
    assert error["code"] == code
    with pytest.raises(openai.InternalServerError):
        sdk(client).chat.completions.create(**body())

    with client.stream("POST", CHAT, json=body(stream=True, stream_options={"include_usage": True})) as response:
        events = sse_events(response)
    assert [event["error"]["code"] for event in events if "error" in event] == [code]
    assert "error" in events[-1]  # the last event before [DONE]: no usage chunk after it
    finishes = [choice["finish_reason"] for event in events for choice in event.get("choices", [])]
    assert set(finishes) == {None}
    with pytest.raises(openai.APIError):
        list(sdk(client).chat.completions.create(**body(), stream=True))
