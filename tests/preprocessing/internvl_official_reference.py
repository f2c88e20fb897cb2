"""Independent transcription of the official InternVL2 preprocessing.

Written from the upstream model card code (dynamic_preprocess,
find_closest_aspect_ratio, build_transform) without torchvision: the transform
is PIL resize -> numpy float32 / 255 -> (x - mean) / std, which is what
ToTensor + Normalize compute. Tests compare the package against this.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32)
STD = np.array((0.229, 0.224, 0.225), dtype=np.float32)


def target_ratios(min_num: int, max_num: int) -> list[tuple[int, int]]:
    ratios = set(
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_num and i * j >= min_num
    )
    return sorted(ratios, key=lambda x: x[0] * x[1])


def find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def dynamic_preprocess(image, min_num=1, max_num=12, image_size=448, use_thumbnail=False):
    orig_width, orig_height = image.size
    aspect_ratio = orig_width / orig_height
    ratios = target_ratios(min_num, max_num)
    target_aspect_ratio = find_closest_aspect_ratio(aspect_ratio, ratios, orig_width, orig_height, image_size)
    target_width = image_size * target_aspect_ratio[0]
    target_height = image_size * target_aspect_ratio[1]
    blocks = target_aspect_ratio[0] * target_aspect_ratio[1]
    resized_img = image.resize((target_width, target_height))
    processed_images = []
    for i in range(blocks):
        box = (
            (i % (target_width // image_size)) * image_size,
            (i // (target_width // image_size)) * image_size,
            ((i % (target_width // image_size)) + 1) * image_size,
            ((i // (target_width // image_size)) + 1) * image_size,
        )
        processed_images.append(resized_img.crop(box))
    assert len(processed_images) == blocks
    if use_thumbnail and len(processed_images) != 1:
        processed_images.append(image.resize((image_size, image_size)))
    return processed_images


def transform(tile: Image.Image, input_size: int = 448) -> np.ndarray:
    """build_transform: RGB -> Resize(bicubic) -> ToTensor -> Normalize, as CHW float32."""
    tile = tile.convert("RGB")
    if tile.size != (input_size, input_size):
        tile = tile.resize((input_size, input_size), Image.Resampling.BICUBIC)
    x = np.asarray(tile).astype(np.float32) / np.float32(255)
    x = (x - MEAN) / STD
    return x.transpose(2, 0, 1)


def official_pixel_values(image, min_num=1, max_num=12, use_thumbnail=True, input_size=448) -> np.ndarray:
    tiles = dynamic_preprocess(image, min_num, max_num, input_size, use_thumbnail)
    return np.stack([transform(tile, input_size) for tile in tiles])


def official_grids(widths, heights, min_num, max_num, image_size=448):
    """find_closest_aspect_ratio over arrays, same float64 operations in the same order."""
    widths = np.asarray(widths, dtype=np.int64)
    heights = np.asarray(heights, dtype=np.int64)
    aspect = widths / heights
    area = widths * heights
    best_diff = np.full(aspect.shape, np.inf)
    best_i = np.ones(aspect.shape, dtype=np.int64)
    best_j = np.ones(aspect.shape, dtype=np.int64)
    tie_seen = np.zeros(aspect.shape, dtype=bool)
    for i, j in target_ratios(min_num, max_num):
        diff = np.abs(aspect - i / j)
        smaller = diff < best_diff
        equal = diff == best_diff
        take = smaller | (equal & (area > 0.5 * image_size * image_size * i * j))
        tie_seen = (tie_seen & ~smaller) | equal
        best_diff = np.where(smaller, diff, best_diff)
        best_i[take] = i
        best_j[take] = j
    return best_i, best_j, tie_seen


def get_index(bound, fps, max_frame, first_idx=0, num_segments=32):
    if bound:
        start, end = bound[0], bound[1]
    else:
        start, end = -100000, 100000
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    frame_indices = np.array(
        [int(start_idx + (seg_size / 2) + np.round(seg_size * idx)) for idx in range(num_segments)]
    )
    return frame_indices


# --- prompt construction: conversation.py (MPT style) and InternVLChatModel.chat ------

IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"

# InternVLChatModel.system_message in the InternVL2 releases.
SYSTEM_MESSAGE = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"

# conversation.py's `internvl2_5` and `internvl3_5_gpt_oss` registrations carry
# their own system_message, which chat() installs (InternVL2.5 onwards).
TEMPLATE_SYSTEM_MESSAGES = {
    "internvl2_5": "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。",
    "internvl3_5_gpt_oss": (
        "You are InternVL, a large language model trained by Shanghai AI Laboratory.\nKnowledge cutoff: 2024-06\n"
        "Current date: 2025-08-06\n\nReasoning: low\n\n# Valid channels: final. Channel must be included for every message."
    ),
}
# MPT_TWO's sep2, closing a final non-empty message.
CONV_SEP2 = {"internvl3_5_gpt_oss": "<|return|>"}

# get_conv_template(name): (system_template, roles, sep); MPT style (MPT_TWO for gpt-oss).
CONV_TEMPLATES = {
    "internvl2_5": ("<|im_start|>system\n{system_message}", ("<|im_start|>user\n", "<|im_start|>assistant\n"), "<|im_end|>\n"),
    "internvl3_5_gpt_oss": ("<|start|>system<|message|>{system_message}", ("<|start|>user<|message|>", "<|start|>assistant"), "<|end|>"),
    "Hermes-2": ("<|im_start|>system\n{system_message}", ("<|im_start|>user\n", "<|im_start|>assistant\n"), "<|im_end|>"),
    "internlm2-chat": (
        "<|im_start|>system\n{system_message}",
        ("<|im_start|>user\n", "<|im_start|>assistant\n"),
        "<|im_end|>",
    ),
    "phi3-chat": ("<|system|>\n{system_message}", ("<|user|>\n", "<|assistant|>\n"), "<|end|>"),
}


def get_prompt(template_name, messages, system_message=None):
    """Conversation.get_prompt for SeparatorStyle.MPT / MPT_TWO; messages are (role index, text or None)."""
    if system_message is None:
        system_message = TEMPLATE_SYSTEM_MESSAGES.get(template_name, SYSTEM_MESSAGE)
    system_template, roles, sep = CONV_TEMPLATES[template_name]
    ret = system_template.format(system_message=system_message) + sep
    for index, (role, message) in enumerate(messages):
        if message:
            last = index == len(messages) - 1
            ret += roles[role] + message + (CONV_SEP2.get(template_name, sep) if last else sep)
        else:
            ret += roles[role]
    return ret


def num_image_token(config: dict) -> int:
    """InternVLChatModel.__init__: tokens per 448px tile after pixel shuffle."""
    image_size = config.get("force_image_size") or config["vision_config"]["image_size"]
    patch_size = config["vision_config"]["patch_size"]
    return int((image_size // patch_size) ** 2 * (config["downsample_ratio"] ** 2))


def chat_query(template_name, question, num_patches_list, image_tokens_per_tile, history=(), has_pixels=None):
    """The query string InternVLChatModel.chat tokenizes (batch_chat for one sample)."""
    if has_pixels is None:
        has_pixels = bool(num_patches_list)
    if has_pixels and "<image>" not in question:
        question = "<image>\n" + question
    messages = []
    for old_question, old_answer in history:
        messages += [(0, old_question), (1, old_answer)]
    messages += [(0, question), (1, None)]
    query = get_prompt(template_name, messages)
    for num_patches in num_patches_list:
        image_tokens = IMG_START_TOKEN + IMG_CONTEXT_TOKEN * image_tokens_per_tile * num_patches + IMG_END_TOKEN
        query = query.replace("<image>", image_tokens, 1)
    return query


def multi_image_question(question, count):
    """The model card's multi-image prompt: 'Image-1: <image>\\nImage-2: <image>\\n...'."""
    if count == 1:
        return question  # chat() prepends '<image>\n' itself
    return "".join(f"Image-{i + 1}: <image>\n" for i in range(count)) + question


def video_question(question, frame_count):
    """The model card's video prompt: one 'Frame{i}: <image>' line per frame."""
    return "".join(f"Frame{i + 1}: <image>\n" for i in range(frame_count)) + question


def official_video_pixel_values(frames, input_size=448):
    """load_video's per-frame preprocessing: dynamic_preprocess(max_num=1, thumbnail) + transform."""
    per_frame = [official_pixel_values(frame, 1, 1, True, input_size) for frame in frames]
    return np.concatenate(per_frame), [len(tiles) for tiles in per_frame]
