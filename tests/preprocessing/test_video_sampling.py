"""Video decoding and official frame sampling on real encoded files."""

import base64
import io

import av
import numpy as np
import pytest
import torch
from PIL import Image

from internvl_official_reference import get_index, official_pixel_values
from preprocessing import MediaError, load_frames, load_video, sample_frame_indices, tile_frames

SIZE = 64
FPS = 10
FRAMES = 30


def frame_colour(index):
    # Grey levels 8 apart: luma survives YUV 4:2:0 codecs almost exactly.
    return (index * 8 + 4,) * 3


def identify(image):
    r, g, b = np.asarray(image, dtype=np.float64)[8:-8, 8:-8].reshape(-1, 3).mean(axis=0)
    distances = [abs(r - c[0]) + abs(g - c[1]) + abs(b - c[2]) for c in map(frame_colour, range(FRAMES))]
    best = int(np.argmin(distances))
    assert distances[best] < 12, (best, (r, g, b))  # half the spacing: unambiguous
    return best


def write_with_pyav(path, container_format, codec, frames=FRAMES):
    with av.open(str(path), mode="w", format=container_format) as output:
        stream = output.add_stream(codec, rate=FPS)
        stream.width = SIZE
        stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000  # near-lossless, so colours identify frames
        for index in range(frames):
            pixels = np.full((SIZE, SIZE, 3), frame_colour(index), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def write_gif(path, frames=FRAMES):
    images = [Image.new("RGB", (SIZE, SIZE), frame_colour(index)) for index in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=1000 // FPS, loop=0)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "mp4-h264": write_with_pyav(folder / "a.mp4", "mp4", "libx264"),
        "mp4-mpeg4": write_with_pyav(folder / "b.mp4", "mp4", "mpeg4"),
        "mov": write_with_pyav(folder / "c.mov", "mov", "libx264"),
        "webm-vp8": write_with_pyav(folder / "d.webm", "webm", "libvpx"),
        "webm-vp9": write_with_pyav(folder / "e.webm", "webm", "libvpx-vp9"),
        "gif": write_gif(folder / "f.gif"),
    }


KINDS = ["mp4-h264", "mp4-mpeg4", "mov", "webm-vp8", "webm-vp9", "gif"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_frames", [1, 8, 32])
def test_sampled_frames_are_the_official_ones(videos, kind, num_frames):
    frames = load_video(videos[kind], num_frames=num_frames)
    expected = get_index(None, FPS, FRAMES - 1, num_segments=num_frames).tolist()
    assert len(frames) == num_frames
    assert all(frame.mode == "RGB" and frame.size == (SIZE, SIZE) for frame in frames)
    assert [identify(frame) for frame in frames] == expected


@pytest.mark.parametrize("kind", ["mp4-h264", "webm-vp9", "gif"])
@pytest.mark.parametrize("bound", [(1.0, 2.0), (0.0, 0.5), (2.2, 100.0), (-5.0, 1.3)])
def test_bound_selects_the_official_segment(videos, kind, bound):
    frames = load_video(videos[kind], num_frames=4, bound=bound)
    expected = get_index(bound, FPS, FRAMES - 1, num_segments=4).tolist()
    assert [identify(frame) for frame in frames] == expected


def test_every_source_form(videos):
    data = videos["mp4-h264"].read_bytes()
    b64 = base64.b64encode(data).decode()
    expected = [identify(f) for f in load_video(videos["mp4-h264"], num_frames=3)]
    for form in (data, b64, "data:video/mp4;base64," + b64, str(videos["mp4-h264"])):
        assert [identify(f) for f in load_video(form, num_frames=3)] == expected


@pytest.mark.parametrize(
    "total,fps,num_frames,bound",
    [(30, 10.0, 8, None), (300, 29.97, 32, None), (7, 25.0, 32, None), (1, 30.0, 8, None),
     (1000, 23.976, 16, (3.3, 17.9)), (120, 24.0, 5, (0.0, 0.0)), (5000, 60.0, 8, (-1.0, 1e9))],
)
def test_sample_frame_indices_matches_get_index(total, fps, num_frames, bound):
    expected = get_index(bound, fps, total - 1, num_segments=num_frames).tolist()
    assert sample_frame_indices(total, fps, num_frames, bound) == expected


def test_sample_frame_indices_rejects_impossible_bounds():
    with pytest.raises(MediaError):
        sample_frame_indices(30, 10.0, 8, (10.0, 20.0))  # starts after the clip ends
    with pytest.raises(ValueError):
        sample_frame_indices(30, 10.0, 8, (2.0, 1.0))
    with pytest.raises(MediaError):
        sample_frame_indices(0, 10.0, 8)


@pytest.mark.parametrize("num_frames,max_frames", [(0, 32), (33, 32), (9, 8), (-1, 32)])
def test_num_frames_limits(videos, num_frames, max_frames):
    with pytest.raises(ValueError):
        load_video(videos["mp4-h264"], num_frames=num_frames, max_frames=max_frames)


def test_max_frames_cannot_exceed_the_hard_limit(videos):
    with pytest.raises(ValueError):
        load_video(videos["mp4-h264"], num_frames=8, max_frames=64)


def test_frame_pixel_limit(videos):
    with pytest.raises(MediaError) as err:
        load_video(videos["mp4-h264"], max_pixels=SIZE * SIZE - 1)
    assert err.value.code == "image_too_large"


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x00" * 4096, b"%PDF-1.7\n" + b"x" * 1000, "not base64 !!", "/no/such/video.mp4"],
)
def test_not_a_video(bad):
    with pytest.raises(MediaError):
        load_video(bad)


def test_audio_only_container_is_refused(tmp_path):
    path = tmp_path / "audio.wav"
    with av.open(str(path), mode="w", format="wav") as output:
        stream = output.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            output.mux(packet)
    with pytest.raises(MediaError, match="no video stream"):
        load_video(path)


def test_zero_frame_video(tmp_path):
    path = write_with_pyav(tmp_path / "empty.mp4", "mp4", "mpeg4", frames=0)
    with pytest.raises(MediaError):
        load_video(path)


def test_truncated_mp4_is_refused(videos):
    # PyAV's mp4 muxer writes the index (moov) last: a file cut short has none, so
    # nothing can be decoded and the answer is a MediaError, not a crash or a hang.
    data = videos["mp4-h264"].read_bytes()
    assert data.rfind(b"moov") > len(data) // 3
    with pytest.raises(MediaError):
        load_video(data[: len(data) // 3])


def test_truncated_stream_decodes_the_frames_that_exist(videos):
    # A WebM cut short keeps its header and the first clusters: the frames that
    # arrived are sampled the official way over what exists, the missing tail is not.
    truncated = videos["webm-vp8"].read_bytes()
    truncated = truncated[: len(truncated) // 2]
    with av.open(io.BytesIO(truncated)) as container:  # what FFmpeg itself decodes
        arrived = [identify(frame.to_image()) for frame in container.decode(video=0)]
    assert 4 <= len(arrived) < FRAMES and arrived == list(range(len(arrived)))
    frames = load_video(truncated, num_frames=4)
    assert [identify(frame) for frame in frames] == get_index(None, FPS, len(arrived) - 1, num_segments=4).tolist()


def test_tile_frames_is_one_official_tile_per_frame(videos):
    frames = load_video(videos["mp4-h264"], num_frames=4)
    frames.append(Image.new("RGB", (300, 170), (9, 99, 199)))  # non-square frames get squashed
    pixel_values = tile_frames(frames)
    assert pixel_values.shape == (5, 3, 448, 448) and pixel_values.dtype == torch.float32
    expected = np.concatenate([official_pixel_values(frame, 1, 1, True) for frame in frames])
    assert np.abs(pixel_values.numpy() - expected).max() <= 1e-6


def test_load_frames_form(tmp_path):
    images = [Image.new("RGB", (20, 10), frame_colour(index)) for index in range(3)]
    buffers = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        buffers.append(buffer.getvalue())
    sources = [buffers[0], base64.b64encode(buffers[1]).decode(), images[2]]
    loaded = load_frames(sources)
    assert [image.getpixel((0, 0)) for image in loaded] == [frame_colour(index) for index in range(3)]
    with pytest.raises(MediaError):
        load_frames([])
    with pytest.raises(MediaError):
        load_frames([images[0]] * 33)
    with pytest.raises(MediaError):
        load_frames(buffers[0])
