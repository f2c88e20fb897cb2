"""Grounding prompt and answer parsing."""

import pytest

from preprocessing import GroundedBox, grounding_prompt, parse_grounding


def test_prompt():
    assert grounding_prompt("the red car") == (
        "Please provide the bounding box coordinates of the region this sentence describes: <ref>the red car</ref>"
    )


def test_single_box_scaled_to_pixels():
    boxes = parse_grounding("<ref>the red car</ref><box>[[100, 200, 500, 1000]]</box>", 640, 480)
    assert boxes == [GroundedBox("the red car", 64.0, 96.0, 320.0, 480.0)]
    assert boxes[0].to_dict() == {"label": "the red car", "x1": 64.0, "y1": 96.0, "x2": 320.0, "y2": 480.0}


def test_several_boxes_for_one_ref_and_several_refs():
    text = (
        "There are <ref>two dogs</ref><box>[[0, 0, 500, 500], [500,500,1000,1000]]</box> "
        "and <ref>a cat</ref> <box>[[10, 20, 30, 40]]</box>."
    )
    boxes = parse_grounding(text, 1000, 1000)
    assert [(b.label, b.x1, b.y2) for b in boxes] == [("two dogs", 0.0, 500.0), ("two dogs", 500.0, 1000.0), ("a cat", 10.0, 40.0)]


def test_box_without_ref_is_unlabelled():
    assert parse_grounding("<box>[[0, 0, 1000, 1000]]</box>", 10, 20) == [GroundedBox(None, 0.0, 0.0, 10.0, 20.0)]
    # A ref labels only the box right after it.
    boxes = parse_grounding("<ref>a</ref><box>[[0,0,1,1]]</box><box>[[0,0,2,2]]</box>", 1000, 1000)
    assert [b.label for b in boxes] == ["a", None]


def test_coordinates_are_clamped_and_rounded():
    (box,) = parse_grounding("<ref>x</ref><box>[[-50, 333, 1200, 999]]</box>", 101, 37)
    assert box == GroundedBox("x", 0.0, 12.32, 101.0, 36.96)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no boxes here",
        "<ref>a</ref><box>[[1, 2, 3]]</box>",
        "<ref>a</ref><box>[[a, b, c, d]]</box>",
        "<ref>a</ref><box>[[500, 500, 100, 100]]</box>",  # inverted
        "<ref>a</ref><box>[[1, 2, 3, 4]]",  # unterminated
        "<box></box>",
        "<ref></ref>",
    ],
)
def test_malformed_answers_give_no_boxes(text):
    assert parse_grounding(text, 100, 100) == []


def test_malformed_box_is_skipped_but_others_kept():
    boxes = parse_grounding("<ref>a</ref><box>[[1, 2], [0, 0, 1000, 1000]]</box>", 50, 50)
    assert boxes == [GroundedBox("a", 0.0, 0.0, 50.0, 50.0)]


def test_decimal_coordinates():
    (box,) = parse_grounding("<ref>a</ref><box>[[100.5, 0, 200.25, 10]]</box>", 1000, 1000)
    assert (box.x1, box.x2) == (100.5, 200.25)
