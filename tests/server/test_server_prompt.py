"""Prompt building from chat messages: golden strings of the plugin's prompt contract."""

import pytest

from preprocessing import DEFAULT_SYSTEM_MESSAGE, get_template
from server.errors import BadRequest
from server.prompt import plan_prompt
from server.schemas import ChatCompletionRequest
from server.settings import Settings
from server_support import image_part, text_part

HERMES = get_template("Hermes-2")
SETTINGS = Settings(model="m")


def plan(messages, settings=SETTINGS, template=HERMES, **fields):
    return plan_prompt(ChatCompletionRequest(model="m", messages=messages, **fields), template, settings)


def test_text_only_uses_the_default_system_message():
    result = plan([{"role": "user", "content": "Hello"}])
    assert result.prompt == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_MESSAGE}<|im_end|>"
        "<|im_start|>user\nHello<|im_end|><|im_start|>assistant\n"
    )
    assert result.images == [] and result.videos == []


def test_system_message_replaces_the_default():
    result = plan([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert result.prompt == (
        "<|im_start|>system\nBe brief.<|im_end|><|im_start|>user\nHi<|im_end|><|im_start|>assistant\n"
    )


def test_one_image_goes_before_the_text():
    result = plan([{"role": "user", "content": [text_part("What is it?"), image_part("data:a")]}])
    assert "<|im_start|>user\n<image>\nWhat is it?<|im_end|>" in result.prompt
    assert [(i.url, i.max_tiles) for i in result.images] == [("data:a", 12)]


def test_several_images_are_labelled():
    result = plan(
        [{"role": "user", "content": [image_part("a"), image_part("b", detail="low"), text_part("Compare.")]}]
    )
    assert "<|im_start|>user\nImage-1: <image>\nImage-2: <image>\nCompare.<|im_end|>" in result.prompt
    assert [i.max_tiles for i in result.images] == [12, 1]


def test_tile_budget_precedence():
    result = plan(
        [
            {
                "role": "user",
                "content": [image_part("a", max_tiles=3), image_part("b", detail="high"), image_part("c")],
            }
        ],
        max_tiles=6,
    )
    assert [i.max_tiles for i in result.images] == [3, 6, 6]


def test_budget_over_the_server_limit_is_rejected():
    with pytest.raises(BadRequest) as caught:
        plan([{"role": "user", "content": [image_part("a", max_tiles=13)]}])
    assert caught.value.code == "too_many_tiles"


def test_multi_turn_history_images_get_one_tile_and_numbering_runs_on():
    messages = [
        {"role": "user", "content": [image_part("a"), text_part("First?")]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": [image_part("b"), image_part("c"), text_part("And these?")]},
    ]
    result = plan(messages, template=get_template("internlm2-chat"))
    assert result.prompt == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_MESSAGE}<|im_end|>"
        "<|im_start|>user\n<image>\nFirst?<|im_end|><|im_start|>assistant\nA cat.<|im_end|>"
        "<|im_start|>user\nImage-2: <image>\nImage-3: <image>\nAnd these?<|im_end|><|im_start|>assistant\n"
    )
    assert [i.max_tiles for i in result.images] == [1, 12, 12]
    assert [i.max_tiles for i in plan(messages, history_max_tiles=4).images] == [4, 12, 12]


def test_video_is_one_placeholder_before_the_text():
    result = plan(
        [
            {
                "role": "user",
                "content": [
                    text_part("What happens?"),
                    {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AA", "num_frames": 4, "end": 2}},
                ],
            }
        ]
    )
    assert "<|im_start|>user\n<video>What happens?<|im_end|>" in result.prompt
    (video,) = result.videos
    assert (video.num_frames, video.bound, video.url) == (4, (0.0, 2.0), "data:video/mp4;base64,AA")


def test_frames_form_in_both_spellings():
    for part in (
        {"type": "video_frames", "video_frames": {"urls": ["a", "b", "c"]}},
        {"type": "video_url", "video_url": {"frames": ["a", "b", "c"]}},
    ):
        (video,) = plan([{"role": "user", "content": [part, text_part("Go")]}]).videos
        assert video.frame_urls == ("a", "b", "c") and video.num_frames == 3


def test_phi3_template():
    result = plan([{"role": "user", "content": "Hi"}], template=get_template("phi3-chat"))
    assert result.prompt == f"<|system|>\n{DEFAULT_SYSTEM_MESSAGE}<|end|><|user|>\nHi<|end|><|assistant|>\n"


@pytest.mark.parametrize(
    "messages, code",
    [
        ([{"role": "assistant", "content": "x"}], "invalid_messages"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "invalid_messages"),
        ([{"role": "user", "content": "look <image> here"}], "invalid_content"),
        ([{"role": "tool", "content": "x"}, {"role": "user", "content": "x"}], "unsupported_message"),
        ([{"role": "user", "content": [image_part(str(i)) for i in range(9)]}], "too_many_images"),
    ],
)
def test_bad_conversations(messages, code):
    with pytest.raises(BadRequest) as caught:
        plan(messages)
    assert caught.value.code == code


def test_too_many_frames():
    settings = Settings(model="m", max_frames_per_video=4, default_num_frames=4)
    with pytest.raises(BadRequest):
        plan([{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x", "num_frames": 5}}]}], settings)
