"""Videos whose content contradicts their header, or that cost too much to decode.

Generated here with PIL and PyAV: a raw MJPEG stream whose first frame (the header
FFmpeg reports) is small and whose later frames are huge; streams of thousands of
tiny frames; a clip whose timing makes it hours long.
"""

import io
import threading
import time

import av
import numpy as np
import pytest
from PIL import Image

from preprocessing import MediaError, TILE_SIZE, load_video, tile_image_uint8
from preprocessing.video import DecodeLimits, resize_frame
from security_support import growing_mjpeg, tiny_frames_mjpeg


def _mp4(frames: int, *, size=(96, 64), rate=25, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as output:
        stream = output.add_stream("mpeg4", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


def test_the_header_promises_small_frames_but_later_ones_are_huge():
    data = growing_mjpeg(small=5, large=3, large_side=2000)
    with av.open(io.BytesIO(data)) as container:  # what the header says
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (64, 64)
    with pytest.raises(MediaError) as caught:
        load_video(data, num_frames=8, max_pixels=1_000_000)
    assert caught.value.code == "image_too_large" and "2000x2000" in str(caught.value)
    # The small frames alone are fine: the check is per frame, not a blanket refusal.
    assert len(load_video(growing_mjpeg(small=5, large=0), num_frames=4, max_pixels=1_000_000)) == 4


def test_a_frame_count_over_the_cap_is_refused_before_decoding():
    data = tiny_frames_mjpeg(3000)  # no count in the header: counted by demuxing
    started = time.monotonic()
    with pytest.raises(MediaError) as caught:
        load_video(data, num_frames=8, limits=DecodeLimits(max_total_frames=1000))
    assert caught.value.code == "video_too_long" and time.monotonic() - started < 2.0
    assert len(load_video(data, num_frames=8, limits=DecodeLimits(max_total_frames=3000))) == 8


def test_a_declared_frame_count_over_the_cap_is_refused():
    data = _mp4(60)
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].frames == 60
    with pytest.raises(MediaError) as caught:
        load_video(data, limits=DecodeLimits(max_total_frames=59))
    assert caught.value.code == "video_too_long"


def test_duration_over_the_cap_is_refused():
    data = _mp4(10, rate=1)  # 10 s at 1 fps
    assert len(load_video(data, num_frames=4, limits=DecodeLimits(max_duration_s=10))) == 4
    with pytest.raises(MediaError) as caught:
        load_video(data, num_frames=4, limits=DecodeLimits(max_duration_s=9))
    assert caught.value.code == "video_too_long"


def test_decoding_has_a_deadline():
    data = tiny_frames_mjpeg(3000)
    started = time.monotonic()
    with pytest.raises(MediaError) as caught:
        load_video(data, num_frames=8, limits=DecodeLimits(timeout_s=0.05))
    assert caught.value.code == "video_decode_timeout"
    assert time.monotonic() - started < 1.0


def test_decoding_stops_when_cancelled_from_another_thread():
    data = _mp4(400, size=(320, 240))
    cancelled = threading.Event()
    outcome = {}

    def decode():
        started = time.monotonic()
        try:
            load_video(data, num_frames=32, limits=DecodeLimits(cancelled=cancelled, timeout_s=60))
        except MediaError as error:
            outcome["code"] = error.code
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=decode)
    cancelled.set()  # already gone: the first frame is the last
    worker.start()
    worker.join(timeout=30)
    assert outcome["code"] == "cancelled" and outcome["seconds"] < 1.0


@pytest.mark.parametrize("size", [(96, 64), (448, 448), (1000, 300), (200, 900), (17, 13)])
def test_frames_shrunk_at_decode_give_the_engine_the_same_pixels(size):
    """The plugin turns each frame into one tile (tile_image_uint8 with max_tiles=1);
    handing it frames already resized to 448x448 must not change a single value."""
    data = _mp4(12, size=size, seed=sum(size))
    full = load_video(data, num_frames=6)
    shrunk = load_video(data, num_frames=6, frame_size=TILE_SIZE)
    assert {frame.size for frame in full} == {size}
    assert {frame.size for frame in shrunk} == {(TILE_SIZE, TILE_SIZE)}
    for big, small in zip(full, shrunk):
        # What the engine computes from each numpy frame the server sends, as
        # model_plugin/processing.py does: _as_rgb (fromarray + convert) and one tile.
        expected = tile_image_uint8(Image.fromarray(np.asarray(big)).convert("RGB"), max_tiles=1, tile_size=TILE_SIZE)
        actual = tile_image_uint8(Image.fromarray(np.asarray(small)).convert("RGB"), max_tiles=1, tile_size=TILE_SIZE)
        assert expected.shape == (1, 3, TILE_SIZE, TILE_SIZE)
        assert np.array_equal(expected.numpy(), actual.numpy())
        assert np.array_equal(np.asarray(resize_frame(big)), np.asarray(small))
