"""--draw-boxes: grounded answers drawn at the right pixels, labels present, safe file names,
local files / data: URLs / EXIF-rotated images, and draw failures reported, never fatal."""

import base64
import io
import json
from pathlib import Path

from batch_support import batch_line, write_jsonl
from PIL import Image

from batch.cli import main

BACKGROUND = (128, 128, 128)
SIZE = (200, 120)


def cli(server, *args):
    return main([*map(str, args), "--base-url", server.base_url, "--no-progress", "--retry-base-delay", "0.01"])


def grey_png(path: Path, size=SIZE, exif_orientation: int | None = None) -> Path:
    image = Image.new("RGB", size, BACKGROUND)
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[0x0112] = exif_orientation
    image.save(path, exif=exif.tobytes())
    return path


def png_data_url(size=SIZE) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, BACKGROUND).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def grounded_line(custom_id, boxes, *urls):
    line = batch_line(custom_id, fake={"grounding": boxes})
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    line["body"]["messages"][0]["content"] = [*parts, {"type": "text", "text": "Find it."}]
    return line


def box(x1, y1, x2, y2, label=None, image_index=0):
    return {"label": label, "box": [x1, y1, x2, y2], "image_index": image_index}


def drawn(folder: Path) -> dict[str, Image.Image]:
    return {path.name: Image.open(path).convert("RGB") for path in sorted(folder.iterdir())}


def not_background(image, left, top, right, bottom) -> list[tuple[int, int, int]]:
    return [image.getpixel((x, y)) for x in range(left, right) for y in range(top, bottom)
            if image.getpixel((x, y)) != BACKGROUND]


def assert_box_at(image, x1, y1, x2, y2):
    """Outline pixels on all four edges share one colour that is not the background;
    just outside the box and in its middle the image is untouched."""
    mid_x, mid_y = (x1 + x2) // 2, (y1 + y2) // 2
    edges = {image.getpixel(p) for p in ((x1, mid_y), (x2, mid_y), (mid_x, y1), (mid_x, y2))}
    assert len(edges) == 1 and edges != {BACKGROUND}, edges
    for outside in ((x1 - 3, mid_y), (x2 + 3, mid_y), (mid_x, y2 + 3), (mid_x, mid_y)):
        assert image.getpixel(outside) == BACKGROUND, outside
    return edges.pop()


def test_boxes_and_labels_land_on_the_right_pixels(fake_server, tmp_path):
    grey_png(tmp_path / "photo.png")
    boxes = [box(40, 30, 120, 80, "cat"), box(150, 60, 190, 110)]
    write_jsonl(tmp_path / "in.jsonl", [grounded_line("one", boxes, "photo.png")])
    assert cli(fake_server, tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "--draw-boxes", tmp_path / "boxes") == 0
    [(name, image)] = drawn(tmp_path / "boxes").items()
    assert name.startswith("one-") and name.endswith(".png") and image.size == SIZE
    labelled = assert_box_at(image, 40, 30, 120, 80)
    assert_box_at(image, 150, 60, 190, 110)
    # The label: a tag in the box's colour just above its top-left corner, with text on it.
    tag = not_background(image, 40, 12, 80, 30)
    assert tag.count(labelled) > 50 and len([p for p in tag if p != labelled]) > 10
    assert image.getpixel((110, 25)) == BACKGROUND  # a short label: the tag ends well before x=110
    assert not_background(image, 150, 40, 191, 59) == []  # the unlabelled box has no tag


def test_data_urls_exif_rotation_and_the_last_image(fake_server, tmp_path):
    # Stored 200x120 with "rotate 90" in EXIF: the server's boxes are in the upright 120x200 pixels.
    grey_png(tmp_path / "rotated.png", exif_orientation=6)
    write_jsonl(tmp_path / "in.jsonl", [
        grounded_line("rotated", [box(20, 100, 90, 180, "dog")], "rotated.png"),
        # Two images; the boxes name the second (as the server does: the last image).
        grounded_line("inline", [box(10, 10, 60, 40, image_index=1)], png_data_url((50, 50)), png_data_url()),
    ])
    assert cli(fake_server, tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "--draw-boxes", tmp_path / "boxes") == 0
    images = {name.split("-")[0]: image for name, image in drawn(tmp_path / "boxes").items()}
    assert images["rotated"].size == (120, 200)
    assert_box_at(images["rotated"], 20, 100, 90, 180)
    assert images["inline"].size == SIZE
    assert_box_at(images["inline"], 10, 10, 60, 40)


def test_file_names_are_sanitised_and_stay_in_the_folder(fake_server, tmp_path):
    grey_png(tmp_path / "photo.png")
    ids = ["../../escape", "a/b", "a_b", "/etc/passwd", ".hidden", "é ü/\\:*?"]
    write_jsonl(tmp_path / "in.jsonl", [grounded_line(i, [box(5, 5, 50, 50, "x")], "photo.png") for i in ids])
    folder = tmp_path / "deep" / "boxes"
    assert cli(fake_server, tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "--draw-boxes", folder) == 0
    names = sorted(path.name for path in folder.iterdir())
    assert len(names) == len(ids)  # "a/b" and "a_b" do not overwrite each other
    assert all(not name.startswith(".") and "/" not in name and "\\" not in name for name in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "in.jsonl", "out.jsonl", "photo.png"]
    assert not (tmp_path.parent / "escape").exists()


def test_what_cannot_be_drawn_is_reported_and_the_rest_is_drawn(fake_server, tmp_path, capsys):
    grey_png(tmp_path / "photo.png")
    write_jsonl(tmp_path / "in.jsonl", [
        grounded_line("remote", [box(1, 1, 9, 9)], "http://127.0.0.1:1/a.png"),
        grounded_line("bad-index", [box(1, 1, 9, 9, image_index=3)], "photo.png"),
        grounded_line("not-an-image", [box(1, 1, 9, 9)], "in.jsonl"),
        grounded_line("fine", [box(5, 5, 50, 50)], "photo.png"),
        batch_line("plain"),  # no grounding: nothing to draw, not a failure
    ])
    assert cli(fake_server, tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "--draw-boxes", tmp_path / "boxes",
               "--summary-json", tmp_path / "s.json") == 0
    report = json.loads((tmp_path / "s.json").read_text())
    failures = {f["custom_id"]: f["message"] for f in report["draw_failures"]}
    assert sorted(failures) == ["bad-index", "not-an-image", "remote"]
    assert "not fetch" in failures["remote"] and "image_index 3" in failures["bad-index"]
    assert report["images_drawn"] == 1 and [n.split("-")[0] for n in drawn(tmp_path / "boxes")] == ["fine"]
    err = capsys.readouterr().err
    assert "boxes drawn on 1 images; 3 results not drawn" in err


def test_simple_mode_and_a_resumed_run_draw_every_grounded_result(make_fake_server, tmp_path):
    server = make_fake_server(grounding=[box(4, 4, 60, 44, "t")])
    media = tmp_path / "media"
    media.mkdir()
    for name in ("a.png", "b.png"):
        grey_png(media / name, size=(64, 48))
    args = ["--images", media, "--prompt", "Find it.", "-o", tmp_path / "out.jsonl"]
    assert cli(server, *args) == 0
    assert cli(server, *args, "--draw-boxes", tmp_path / "boxes") == 0  # nothing left to send, all drawn
    assert len(server.received) == 2
    images = drawn(tmp_path / "boxes")
    assert [name.split("-")[-2][-11:] for name in images] == ["media_a.png", "media_b.png"]  # the ids' tails
    for image in images.values():
        colour = assert_box_at(image, 4, 4, 60, 44)
        # No room above the box: the label's tag sits just inside its top-left corner.
        tag = not_background(image, 6, 6, 12, 16)
        assert tag.count(colour) > 10 and any(p != colour for p in tag)
