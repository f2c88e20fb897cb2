"""The playground page in a real headless Chromium (Debian's), against the live server.

Every number the page shows is checked against an oracle that is not the page:
the tile grid against the server's own plan (/tokenize of the same request), the
streamed answer and its token counts against the API's answer to the same request
(greedy), the boxes against the API's `grounding`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw, ImageFilter

from server_support import make_mp4
from tests.live_server import API_KEY

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOT_ENV = "PLAYGROUND_SCREENSHOT"
SYSTEM = "You are a careful visual assistant."
MAX_TOKENS = 24
# The red ball of the scene, in pixels of its 960x640 image, and on InternVL's 0..1000 grid.
SCENE_SIZE = (960, 640)
BALL = (560, 400, 720, 560)
BALL_GRID = [round(v * 1000 / SCENE_SIZE[i % 2]) for i, v in enumerate(BALL)]


def scene() -> Image.Image:
    """A photo-like landscape: sky, sun, hills, a lake, a tree and a red ball on the grass."""
    width, height = SCENE_SIZE
    image = Image.new("RGB", SCENE_SIZE)
    draw = ImageDraw.Draw(image)
    horizon = 330
    for y in range(horizon):
        t = y / horizon
        draw.line([(0, y), (width, y)], fill=(int(70 + 150 * t), int(130 + 90 * t), int(220 - 20 * t)))
    glow = Image.new("L", SCENE_SIZE, 0)
    ImageDraw.Draw(glow).ellipse((650, 40, 850, 240), fill=200)
    image.paste((255, 236, 170), mask=glow.filter(ImageFilter.GaussianBlur(40)))
    draw.ellipse((705, 95, 795, 185), fill=(255, 244, 200))
    mountains = [(0, 300), (180, 200), (330, 270), (520, 180), (760, 280), (960, 220), (960, 360), (0, 360)]
    draw.polygon(mountains, fill=(92, 128, 150))
    draw.polygon([(0, 340), (240, 260), (470, 330), (700, 270), (960, 330), (960, 400), (0, 400)], fill=(70, 130, 90))
    for y in range(360, height):
        t = (y - 360) / (height - 360)
        draw.line([(0, y), (width, y)], fill=(int(90 + 40 * t), int(160 + 30 * t), int(70 + 10 * t)))
    draw.ellipse((40, 420, 420, 520), fill=(80, 140, 200))
    draw.ellipse((70, 435, 380, 500), fill=(120, 175, 225))
    draw.rectangle((835, 330, 855, 470), fill=(100, 70, 45))
    draw.ellipse((770, 230, 920, 380), fill=(40, 110, 60))
    shadow = Image.new("L", SCENE_SIZE, 0)
    ImageDraw.Draw(shadow).ellipse((575, 535, 745, 575), fill=150)
    image.paste((40, 70, 35), mask=shadow.filter(ImageFilter.GaussianBlur(8)))
    x1, y1, x2, y2 = BALL
    for step in range(40):  # shaded sphere: concentric discs towards the highlight
        t = step / 39
        inset = t * (x2 - x1) * 0.42
        shift = t * (x2 - x1) * 0.12
        colour = (int(150 + 105 * t), int(20 + 90 * t * t), int(25 + 80 * t * t))
        draw.ellipse((x1 + inset - shift, y1 + inset - shift, x2 - inset - shift, y2 - inset - shift), fill=colour)
    return image.filter(ImageFilter.SMOOTH)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def png_data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def portrait(width: int = 300, height: int = 500) -> Image.Image:
    image = Image.new("RGB", (width, height), (245, 240, 230))
    draw = ImageDraw.Draw(image)
    for i in range(0, height, 20):
        draw.rectangle((0, i, width, i + 9), fill=(200, 90 + i % 120, 60))
    return image


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (`make test` does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live_server.base_url + "/")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def set_key(page, key: str) -> None:
    page.fill("#api-key", key)
    page.dispatch_event("#api-key", "change")


def card(page, index: int):
    return page.locator("#attachments .attachment").nth(index)


def wait_preview(page, index: int, tiles: int | None = None) -> dict:
    """The grid the page shows for attachment `index`, once its preview has settled."""
    locator = card(page, index)
    if tiles is not None:
        locator.and_(page.locator(f"[data-tiles='{tiles}']")).wait_for()
    else:
        page.wait_for_function(
            "i => document.querySelectorAll('#attachments .attachment')[i]?.dataset.tiles !== undefined", arg=index
        )
    return locator.evaluate(
        """card => ({cols: +card.dataset.cols, rows: +card.dataset.rows, tiles: +card.dataset.tiles,
                     imageTokens: +card.dataset.imageTokens, text: card.querySelector('.grid-text').textContent,
                     width: card.querySelector('.thumb img').naturalWidth,
                     height: card.querySelector('.thumb img').naturalHeight,
                     cells: [...card.querySelectorAll('.grid-overlay .cell')].map(c => c.getBoundingClientRect().toJSON()),
                     image: card.querySelector('.thumb img').getBoundingClientRect().toJSON()})"""
    )


def assert_overlay(grid: dict) -> None:
    """The cells drawn over the thumbnail: cols x rows equal cells covering the whole image."""
    cells, image = grid["cells"], grid["image"]
    assert len(cells) == grid["cols"] * grid["rows"]
    assert len({round(c["x"]) for c in cells}) == grid["cols"] and len({round(c["y"]) for c in cells}) == grid["rows"]
    assert min(c["x"] for c in cells) == pytest.approx(image["x"], abs=1.5)
    assert min(c["y"] for c in cells) == pytest.approx(image["y"], abs=1.5)
    assert max(c["x"] + c["width"] for c in cells) == pytest.approx(image["x"] + image["width"], abs=1.5)
    assert max(c["y"] + c["height"] for c in cells) == pytest.approx(image["y"] + image["height"], abs=1.5)
    assert image["width"] / image["height"] == pytest.approx(grid["width"] / grid["height"], rel=0.02)


def set_budget(page, index: int, budget: int) -> None:
    field = card(page, index).locator("input.budget-number")
    field.fill(str(budget))
    field.dispatch_event("change")


def image_tokens_planned(live_server, url: str, **image_fields) -> int:
    """What the server really plans for this image: its <img> ... </img> span in /tokenize's tokens."""
    body = {
        "model": live_server.model,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url, **image_fields}}]}],
        "return_token_strs": True,
    }
    headers = {"Authorization": f"Bearer {API_KEY}"}
    response = httpx.post(f"{live_server.base_url}/tokenize", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    strings = response.json()["token_strs"]
    return strings.index("</img>") - strings.index("<img>") + 1


def turn_end_bias(live_server) -> dict[str, int]:
    """A -100 bias on the template's turn-end tokens (stop strings end an answer even with ignore_eos)."""
    body = {"model": live_server.model, "prompt": "<|im_end|><|endoftext|>", "add_special_tokens": False}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    response = httpx.post(f"{live_server.base_url}/tokenize", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    tokens = response.json()["tokens"]
    assert len(tokens) == 2
    return {str(token): -100 for token in tokens}


def watch_answer(page) -> None:
    """Record every text the newest answer shows while it streams, update by update.

    Mutation records, not callbacks: deltas that arrive in one network read are
    shown one after another within one task, and each still leaves its record.
    """
    page.evaluate(
        """() => {
            window.__shown = [];
            window.__watch?.disconnect();
            window.__watch = new MutationObserver(records => {
                for (const record of records) {
                    const answer = record.target.closest?.('.message.assistant .text');
                    if (!answer) continue;
                    for (const node of record.addedNodes) window.__shown.push(node.textContent.length);
                }
            });
            window.__watch.observe(document.getElementById('transcript'),
                                   {childList: true, subtree: true, characterData: true});
        }"""
    )


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def wait_answer(page, count: int, timeout_ms: int = 120_000) -> dict:
    """The `count`-th answer once finished: its text and the stats the page shows."""
    page.wait_for_function(
        """n => { const a = document.querySelectorAll('.message.assistant');
                  return a.length >= n && !a[n - 1].classList.contains('streaming'); }""",
        arg=count,
        timeout=timeout_ms,
    )
    return page.locator(".message.assistant").nth(count - 1).evaluate(
        """a => ({text: a.querySelector('.text').textContent, failed: a.classList.contains('failed'),
                  stats: a.querySelector('.stats') &&
                         {...a.querySelector('.stats').dataset, line: a.querySelector('.stats').textContent}})"""
    )


def dispatch_files(page, kind: str, name: str, data: bytes) -> None:
    """A paste (on the prompt) or a drop (on the conversation) of one PNG file, as the browser dispatches them."""
    page.evaluate(
        """([kind, name, b64]) => {
            const data = new DataTransfer();
            data.items.add(new File([Uint8Array.from(atob(b64), c => c.charCodeAt(0))], name, {type: 'image/png'}));
            const event = kind === 'paste'
                ? new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true})
                : new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true});
            document.getElementById(kind === 'paste' ? 'prompt' : 'transcript').dispatchEvent(event);
        }""",
        [kind, name, base64.b64encode(data).decode()],
    )


def user(text: str, *media: dict) -> dict:
    return {"role": "user", "content": [*media, {"type": "text", "text": text}]}


def api_answer(live_server, messages: list, **fields):
    return live_server.client().chat.completions.create(model=live_server.model, messages=messages, **fields)


def test_playground_in_chromium(page, live_server, tmp_path):
    base = live_server.base_url
    scene_png, portrait_png = png(scene()), png(portrait())
    scene_url, portrait_url = png_data_url(scene_png), png_data_url(portrait_png)
    (tmp_path / "scene.png").write_bytes(scene_png)

    # The page comes from the package at /, and /docs is still the API docs.
    assert page.title() == "internvl-serve playground"
    assert "swagger" in httpx.get(f"{base}/docs", timeout=30).text.lower()

    # No key, then a wrong one: the server's 401 message is shown; the right key loads the model.
    page.locator("#error").wait_for()
    set_key(page, "wrong-key")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('invalid API key')")
    assert page.inner_text("#error").startswith("401: missing or invalid API key")
    set_key(page, API_KEY)
    page.wait_for_function(f"() => document.getElementById('model').textContent === {json.dumps(live_server.model)}")
    assert page.locator("#error").is_hidden()

    # An image through the file picker; the grid preview for budget 12, then 6, equals the server's plan.
    with page.expect_file_chooser() as chooser:
        page.click("#add-images")
    chooser.value.set_files(str(tmp_path / "scene.png"))
    default = wait_preview(page, 0)
    assert default["imageTokens"] == image_tokens_planned(live_server, scene_url, max_tiles=12)
    set_budget(page, 0, 6)
    grid = wait_preview(page, 0, tiles=7)
    assert grid["imageTokens"] == image_tokens_planned(live_server, scene_url, max_tiles=6) == 7 * 256 + 2
    assert (grid["cols"], grid["rows"]) == (3, 2)  # 960x640 is 3:2; 6 tiles + the thumbnail
    assert "3×2 grid + thumbnail = 7 tiles" in grid["text"]
    assert_overlay(grid)
    # Over the server's limit (12 here): its error is shown instead of a grid.
    set_budget(page, 0, 30)
    card(page, 0).locator(".grid-text", has_text="exceeds this server's limit of 12").wait_for()
    set_budget(page, 0, 6)
    wait_preview(page, 0, tiles=7)

    # A second image by paste, a third by drag and drop (which is then removed).
    dispatch_files(page, "paste", "pasted.png", portrait_png)
    pasted = wait_preview(page, 1)
    assert (pasted["width"], pasted["height"]) == (300, 500)
    assert pasted["imageTokens"] == image_tokens_planned(live_server, portrait_url, max_tiles=12)
    assert_overlay(pasted)
    dispatch_files(page, "drop", "dropped.png", png(portrait(200, 200)))
    wait_preview(page, 2)
    assert card(page, 2).locator(".name").inner_text() == "dropped.png"
    card(page, 2).locator("button.remove").click()
    assert page.locator("#attachments .attachment").count() == 2
    card(page, 1).locator("select").select_option("low")
    low = wait_preview(page, 1, tiles=1)
    assert low["imageTokens"] == image_tokens_planned(live_server, portrait_url, detail="low") == 258
    assert_overlay(low)

    # Settings, then send: the answer streams in pieces and ends as the API's answer to the same request.
    page.fill("#system", SYSTEM)
    page.fill("#temperature", "0")
    page.fill("#max-tokens", str(MAX_TOKENS))
    sent = []
    page.on("request", lambda request: request.url.endswith("/v1/chat/completions") and sent.append(request.post_data_json))
    watch_answer(page)
    question = "What is in these pictures?"
    started = time.perf_counter()
    send(page, question)
    first = wait_answer(page, 1)
    elapsed_ms = (time.perf_counter() - started) * 1000
    messages = [
        {"role": "system", "content": SYSTEM},
        user(
            question,
            {"type": "image_url", "image_url": {"url": scene_url, "detail": "auto", "max_tiles": 6}},
            {"type": "image_url", "image_url": {"url": portrait_url, "detail": "low"}},
        ),
    ]
    assert sent[-1]["messages"] == messages
    assert sent[-1]["stream"] is True and sent[-1]["stream_options"] == {"include_usage": True}
    expected = api_answer(live_server, messages, temperature=0, top_p=1, max_tokens=MAX_TOKENS)
    assert not first["failed"]
    assert first["text"] == expected.choices[0].message.content
    shown = page.evaluate("window.__shown")
    pieces = [n for n in shown if 0 < n < len(first["text"])]
    assert len(pieces) >= 3 and pieces == sorted(pieces), f"the answer did not stream in pieces: {shown}"
    stats = first["stats"]
    assert int(stats["promptTokens"]) == expected.usage.prompt_tokens
    assert int(stats["completionTokens"]) == expected.usage.completion_tokens
    assert int(stats["tiles"]) == 7 + 1
    assert 0 < float(stats["ttftMs"]) < elapsed_ms
    assert float(stats["tokensPerSecond"]) > 0
    assert f"prompt {expected.usage.prompt_tokens} tok" in stats["line"] and "8 tiles" in stats["line"]
    assert "TTFT" in stats["line"] and "tok/s" in stats["line"]
    assert page.locator("#attachments .attachment").count() == 0  # the composer is free again

    # Multi-turn: the history (images included) is sent again, and the answer is the API's.
    send(page, "Which colours dominate?")
    second = wait_answer(page, 2)
    messages += [{"role": "assistant", "content": first["text"]}, user("Which colours dominate?")]
    assert sent[-1]["messages"] == messages
    expected = api_answer(live_server, messages, temperature=0, top_p=1, max_tokens=MAX_TOKENS)
    assert second["text"] == expected.choices[0].message.content
    assert int(second["stats"]["promptTokens"]) == expected.usage.prompt_tokens
    assert int(second["stats"]["tiles"]) == 8

    # A grounded answer (forced through the real engine by a regex in the extra fields): a box with its label.
    page.click("#new-chat")
    with page.expect_file_chooser() as chooser:
        page.click("#add-images")
    chooser.value.set_files(str(tmp_path / "scene.png"))
    set_budget(page, 0, 6)
    wait_preview(page, 0, tiles=7)
    scene_part = {"type": "image_url", "image_url": {"url": scene_url, "detail": "auto", "max_tiles": 6}}
    regex = "<ref>red ball</ref><box>\\[\\[" + ", ".join(map(str, BALL_GRID)) + "\\]\\]</box>"
    page.click("#advanced summary")
    page.fill("#extra", json.dumps({"guided_regex": regex}))
    page.fill("#max-tokens", "64")  # room for the whole forced answer
    send(page, "Where is the red ball?")
    grounded = wait_answer(page, 1)
    messages = [
        {"role": "system", "content": SYSTEM},
        user("Where is the red ball?", scene_part),
    ]
    assert sent[-1]["messages"] == messages and sent[-1]["guided_regex"] == regex
    expected = api_answer(live_server, messages, temperature=0, top_p=1, max_tokens=64, extra_body={"guided_regex": regex})
    assert grounded["text"] == expected.choices[0].message.content
    boxes = expected.choices[0].message.grounding
    assert [box["label"] for box in boxes] == ["red ball"]
    # Independently of the server: InternVL's 0..1000 grid scaled to the 960x640 image.
    assert boxes[0]["box"] == pytest.approx([v * SCENE_SIZE[i % 2] / 1000 for i, v in enumerate(BALL_GRID)], abs=0.01)
    figure = page.locator(".message.assistant figure.grounded")
    drawn = figure.evaluate(
        """f => ({image: f.querySelector('img').getBoundingClientRect().toJSON(),
                  natural: [f.querySelector('img').naturalWidth, f.querySelector('img').naturalHeight],
                  boxes: [...f.querySelectorAll('.box')].map(b => ({rect: b.getBoundingClientRect().toJSON(),
                                                                   border: parseFloat(getComputedStyle(b).borderLeftWidth),
                                                                   label: b.querySelector('.box-label').textContent}))})"""
    )
    assert drawn["natural"] == list(SCENE_SIZE)
    assert [box["label"] for box in drawn["boxes"]] == ["red ball"]
    shown = drawn["image"]
    scale_x, scale_y = shown["width"] / SCENE_SIZE[0], shown["height"] / SCENE_SIZE[1]
    assert shown["width"] < SCENE_SIZE[0]  # displayed smaller than its pixels: the box must scale
    x1, y1, x2, y2 = boxes[0]["box"]
    rect = drawn["boxes"][0]["rect"]
    assert rect["x"] - shown["x"] == pytest.approx(x1 * scale_x, abs=1.5)
    assert rect["y"] - shown["y"] == pytest.approx(y1 * scale_y, abs=1.5)
    assert rect["width"] == pytest.approx((x2 - x1) * scale_x, abs=1.5)
    assert rect["height"] == pytest.approx((y2 - y1) * scale_y, abs=1.5)

    # The screenshot, with the answer's box and the next image's grid preview in view.
    with page.expect_file_chooser() as chooser:
        page.click("#add-images")
    chooser.value.set_files(str(tmp_path / "scene.png"))
    set_budget(page, 0, 6)
    wait_preview(page, 0, tiles=7)
    page.fill("#prompt", "And what is left of the tree?")
    figure.locator(".box").scroll_into_view_if_needed()
    shot = tmp_path / "playground.png"
    page.screenshot(path=str(shot))
    assert Image.open(shot).size == (1440, 1000)
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])
    card(page, 0).locator("button.remove").click()

    # Stop: a long answer stops growing once Stop is pressed, and the page is ready again.
    # The random model must not end it first by sampling a turn-end token.
    page.fill("#extra", json.dumps({"ignore_eos": True, "logit_bias": turn_end_bias(live_server)}))
    page.fill("#max-tokens", "4000")
    send(page, "Tell me a very long story.")
    page.wait_for_function("() => (document.querySelectorAll('.message.assistant .text')[1]?.textContent.length || 0) > 20")
    page.click("#stop")
    stopped = wait_answer(page, 2, timeout_ms=10_000)
    assert "stopped" in stopped["stats"]["line"]
    assert page.locator("#stop").is_hidden() and page.locator("#send").is_enabled()
    time.sleep(1.0)
    assert page.locator(".message.assistant .text").nth(1).text_content() == stopped["text"]
    # 4000 tokens take this server far longer than the test waited: it was stopped, not finished.
    assert stopped["stats"]["completionTokens"] == ""

    # A wrong key: the request fails with the server's 401 message and the composer keeps the question.
    page.fill("#extra", "")
    page.fill("#max-tokens", str(MAX_TOKENS))
    set_key(page, "wrong-key")
    send(page, "Still there?")
    refused = wait_answer(page, 3)
    assert refused["failed"] and refused["text"].startswith("401: missing or invalid API key")
    assert page.inner_text("#error").startswith("401: missing or invalid API key")
    assert page.input_value("#prompt") == "Still there?"

    # The key again, and a video: its prompt tokens are the API's for the same request.
    set_key(page, API_KEY)
    page.click("#new-chat")
    video = make_mp4()
    page.set_input_files("#video-input", files=[{"name": "clip.mp4", "mimeType": "video/mp4", "buffer": video}])
    send(page, "What happens in the video?")
    answered = wait_answer(page, 1)
    video_url = "data:video/mp4;base64," + base64.b64encode(video).decode()
    video_part = {"type": "video_url", "video_url": {"url": video_url}}
    messages = [{"role": "system", "content": SYSTEM}, user("What happens in the video?", video_part)]
    assert sent[-1]["messages"] == messages
    expected = api_answer(live_server, messages, temperature=0, top_p=1, max_tokens=MAX_TOKENS)
    assert answered["text"] == expected.choices[0].message.content
    assert int(answered["stats"]["promptTokens"]) == expected.usage.prompt_tokens
