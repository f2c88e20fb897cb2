"""Golden prompt strings for the official InternVL2 templates."""

import pytest

from preprocessing import (
    DEFAULT_SYSTEM_MESSAGE,
    IMG_CONTEXT_TOKEN,
    ChatTemplate,
    expand_image_placeholders,
    get_template,
    image_prefix,
    video_prefix,
)

SYS = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"


def test_default_system_message_is_the_official_one():
    assert DEFAULT_SYSTEM_MESSAGE == SYS
    for name in ("Hermes-2", "internlm2-chat", "phi3-chat"):
        assert get_template(name).default_system_message == SYS


@pytest.mark.parametrize(
    "name,expected",
    [
        ("Hermes-2", f"<|im_start|>system\n{SYS}<|im_end|><|im_start|>user\n<image>\nWhat is this?<|im_end|><|im_start|>assistant\n"),
        ("internlm2-chat", f"<|im_start|>system\n{SYS}<|im_end|><|im_start|>user\n<image>\nWhat is this?<|im_end|><|im_start|>assistant\n"),
        ("phi3-chat", f"<|system|>\n{SYS}<|end|><|user|>\n<image>\nWhat is this?<|end|><|assistant|>\n"),
    ],
)
def test_single_turn(name, expected):
    assert get_template(name).render([(image_prefix(1) + "What is this?", None)]) == expected


@pytest.mark.parametrize(
    "name,expected",
    [
        (
            "Hermes-2",
            "<|im_start|>system\nBe brief.<|im_end|>"
            "<|im_start|>user\nHi<|im_end|><|im_start|>assistant\nHello!<|im_end|>"
            "<|im_start|>user\nAnd now?<|im_end|><|im_start|>assistant\n",
        ),
        (
            "internlm2-chat",
            "<|im_start|>system\nBe brief.<|im_end|>"
            "<|im_start|>user\nHi<|im_end|><|im_start|>assistant\nHello!<|im_end|>"
            "<|im_start|>user\nAnd now?<|im_end|><|im_start|>assistant\n",
        ),
        (
            "phi3-chat",
            "<|system|>\nBe brief.<|end|><|user|>\nHi<|end|><|assistant|>\nHello!<|end|><|user|>\nAnd now?<|end|><|assistant|>\n",
        ),
    ],
)
def test_multi_turn_with_custom_system_message(name, expected):
    template = get_template(name)
    assert template.render([("Hi", "Hello!"), ("And now?", None)], system_message="Be brief.") == expected


def test_empty_system_message_is_kept_empty():
    assert get_template("Hermes-2").render([("Q", None)], system_message="") == (
        "<|im_start|>system\n<|im_end|><|im_start|>user\nQ<|im_end|><|im_start|>assistant\n"
    )


def test_completed_last_turn_is_closed():
    assert get_template("phi3-chat").render([("Q", "A")], system_message="S") == (
        "<|system|>\nS<|end|><|user|>\nQ<|end|><|assistant|>\nA<|end|>"
    )


def test_only_last_turn_may_be_open():
    with pytest.raises(ValueError):
        get_template("Hermes-2").render([("Q", None), ("Q2", None)])
    with pytest.raises(ValueError):
        get_template("Hermes-2").render([])


def test_stop_strings():
    assert get_template("Hermes-2").stop_strings == ("<|im_end|>", "<|endoftext|>")
    assert get_template("internlm2-chat").stop_strings == ("<|im_end|>",)
    assert get_template("phi3-chat").stop_strings == ("<|end|>",)


def test_unknown_template_lists_known_names():
    with pytest.raises(ValueError, match="Hermes-2.*internlm2-chat.*phi3-chat"):
        get_template("llama-3")


def test_template_is_frozen():
    template = get_template("Hermes-2")
    assert isinstance(template, ChatTemplate)
    with pytest.raises(AttributeError):
        template.sep = "x"


def test_image_and_video_prefixes():
    assert image_prefix(1) == "<image>\n"
    assert image_prefix(3) == "Image-1: <image>\nImage-2: <image>\nImage-3: <image>\n"
    assert image_prefix(0) == ""
    assert video_prefix(3) == "Frame1: <image>\nFrame2: <image>\nFrame3: <image>\n"


def test_video_prompt_golden():
    question = video_prefix(2) + "What happens?"
    prompt = get_template("internlm2-chat").render([(question, None)], system_message="S")
    assert prompt == (
        "<|im_start|>system\nS<|im_end|><|im_start|>user\n"
        "Frame1: <image>\nFrame2: <image>\nWhat happens?<|im_end|><|im_start|>assistant\n"
    )


def test_expand_image_placeholders():
    prompt = "Image-1: <image>\nImage-2: <image>\nCompare."
    expanded = expand_image_placeholders(prompt, [3, 1])
    first = "<img>" + IMG_CONTEXT_TOKEN * 768 + "</img>"
    second = "<img>" + IMG_CONTEXT_TOKEN * 256 + "</img>"
    assert expanded == f"Image-1: {first}\nImage-2: {second}\nCompare."
    assert expand_image_placeholders("<image>", [2], tokens_per_tile=4) == "<img>" + IMG_CONTEXT_TOKEN * 8 + "</img>"
    assert expand_image_placeholders("no images", []) == "no images"


@pytest.mark.parametrize("prompt,tiles", [("<image><image>", [1]), ("<image>", []), ("text", [1]), ("<image>", [0])])
def test_expand_image_placeholders_count_mismatch(prompt, tiles):
    with pytest.raises(ValueError):
        expand_image_placeholders(prompt, tiles)


# --- InternVL2.5 / 3 / 3.5 -------------------------------------------------------
# Rendered by the official conversation.py (`internvl2_5`, `internvl3_5_gpt_oss`
# registrations, SeparatorStyle.MPT / MPT_TWO) and written down here.
SYS_2_5 = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
GPT_OSS_SYS = (
    "You are InternVL, a large language model trained by Shanghai AI Laboratory.\nKnowledge cutoff: 2024-06\n"
    "Current date: 2025-08-06\n\nReasoning: low\n\n# Valid channels: final. Channel must be included for every message."
)


def test_internvl2_5_multi_turn_golden():
    template = get_template("internvl2_5")
    assert template.default_system_message == SYS_2_5
    assert template.render([("Hi", "Hello!"), ("Q2", None)]) == (
        f"<|im_start|>system\n{SYS_2_5}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n"
    )
    # chat() stops on the separator without its newline.
    assert template.stop_strings == ("<|im_end|>",)


def test_gpt_oss_template_golden():
    template = get_template("internvl3_5_gpt_oss")
    assert template.render([(image_prefix(1) + "Describe.", None)]) == (
        f"<|start|>system<|message|>{GPT_OSS_SYS}<|end|><|start|>user<|message|><image>\nDescribe.<|end|><|start|>assistant"
    )
    # MPT_TWO: an earlier answer ends with sep, a closing one with sep2.
    assert template.render([("A", "x"), ("B", "y")], system_message="S") == (
        "<|start|>system<|message|>S<|end|><|start|>user<|message|>A<|end|><|start|>assistantx<|end|>"
        "<|start|>user<|message|>B<|end|><|start|>assistanty<|return|>"
    )
    assert template.stop_strings == ("<|return|>",)
