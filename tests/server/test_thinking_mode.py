"""InternVL3.5's thinking mode over the API: `chat_template_kwargs.enable_thinking`.

The model card switches thinking on by making its R1 system prompt the system
message. The expected prompt below is written out from the model card's text
and the `internvl2_5` template, not taken from the server's constants.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from server_support import FakeEngine

from server.engine import model_info
from server.settings import Settings

# sha256 of the model card's R1_SYSTEM_PROMPT after .strip() (608 characters).
THINKING_SHA256 = "a2cb9e8de918a3e379ee49845f6ebc851d6f449b4d88f6523d2b49edae502101"


def _config(llm_architecture: str, template: str = "internvl2_5") -> dict:
    return {"template": template, "llm_config": {"architectures": [llm_architecture]}}


def _engine_for(config: dict) -> FakeEngine:
    info = model_info(Settings(model="/models/fake"), "/models/fake", config)
    return FakeEngine(info=replace(info, max_model_len=4096))  # vLLM fills it in when serving


def _chat(client, **extra):
    body = {"model": "/models/fake", "messages": [{"role": "user", "content": "Is 91 prime?"}], **extra}
    return client.post("/v1/chat/completions", json=body)


def _system_of(prompt: str) -> str:
    return prompt.removeprefix("<|im_start|>system\n").split("<|im_end|>\n", 1)[0]


@pytest.mark.parametrize("architecture", ["Qwen3ForCausalLM", "Qwen3MoeForCausalLM"])
def test_thinking_mode_is_the_model_cards_system_prompt(make_client, architecture):
    engine = _engine_for(_config(architecture))
    client = make_client(engine=engine)
    assert _chat(client, chat_template_kwargs={"enable_thinking": True}).status_code == 200
    thinking_prompt = engine.calls[-1]["prompt"]["prompt"]
    system = _system_of(thinking_prompt)
    assert hashlib.sha256(system.encode()).hexdigest() == THINKING_SHA256
    assert system.startswith("You are an AI assistant that rigorously follows this response protocol:")
    assert thinking_prompt.endswith("<|im_start|>user\nIs 91 prime?<|im_end|>\n<|im_start|>assistant\n")

    # Off (or absent): the template's own system message, as chat() uses.
    assert _chat(client, chat_template_kwargs={"enable_thinking": False}).status_code == 200
    assert _system_of(engine.calls[-1]["prompt"]["prompt"]).startswith("你是书生·万象")
    # A system message of the request's own replaces the thinking prompt, as on the model card.
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    reply = client.post("/v1/chat/completions", json={"model": "/models/fake", "chat_template_kwargs": {"enable_thinking": True}, **body})
    assert reply.status_code == 200
    assert _system_of(engine.calls[-1]["prompt"]["prompt"]) == "Be brief."


@pytest.mark.parametrize(
    "config",
    [
        _config("Qwen2ForCausalLM"),  # InternVL2.5 / InternVL3
        _config("InternLM3ForCausalLM"),  # InternVL3-9B
        _config("GptOssForCausalLM", "internvl3_5_gpt_oss"),
        _config("Qwen2ForCausalLM", "Hermes-2"),  # InternVL2
    ],
)
def test_models_without_a_thinking_mode_refuse_it(make_client, config):
    engine = _engine_for(config)
    reply = _chat(make_client(engine=engine), chat_template_kwargs={"enable_thinking": True})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "chat_template_kwargs.enable_thinking"
    assert "no thinking mode" in error["message"]
    assert not engine.calls


def test_unknown_template_switches_are_refused(make_client):
    engine = _engine_for(_config("Qwen3ForCausalLM"))
    reply = _chat(make_client(engine=engine), chat_template_kwargs={"add_vision_id": True})
    assert reply.status_code == 400
    assert "add_vision_id" in reply.text
    assert not engine.calls


def test_tokenize_counts_the_thinking_prompt(make_client):
    engine = _engine_for(_config("Qwen3ForCausalLM"))
    client = make_client(engine=engine)
    body = {"model": "/models/fake", "messages": [{"role": "user", "content": "Hi"}]}
    plain = client.post("/tokenize", json=body).json()["tokens"]
    thinking = client.post("/tokenize", json={**body, "chat_template_kwargs": {"enable_thinking": True}}).json()["tokens"]
    assert thinking != plain


def test_model_info_marks_only_internvl3_5_qwen3_members():
    assert _engine_for(_config("Qwen3ForCausalLM")).info.thinking_system_message is not None
    assert _engine_for(_config("Qwen2ForCausalLM")).info.thinking_system_message is None
