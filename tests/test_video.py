import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from dfhelpers import video
from dfhelpers.config import FacesConfig
from dfhelpers.errors import VideoReadError
from videos import VERYFAST, write_video


def stripes_video(path: Path, n_frames: int, size: tuple[int, int] = (96, 64), faststart: bool = False) -> Path:
    """H.264 with B-frames (x264 defaults), every frame different so that indices can be checked."""
    width, height = size
    frames = []
    for index in range(n_frames):
        rgb = np.zeros((height, width, 3), np.uint8)
        rgb[:, : (index * 3) % width] = (200, 40, 40)
        rgb[(index * 5) % height:, :, 2] = 180
        frames.append(rgb)
    return write_video(path, frames, fps=15, index_first=faststart, codec_options=VERYFAST)


def decode_everything(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture
def clip(tmp_path) -> Path:
    return stripes_video(tmp_path / "clip.mp4", n_frames=45)


def test_even_sampling_spreads_frames_from_first_to_last():
    indices = video.sample_indices(300, FacesConfig(frames_per_video=32))
    assert len(indices) == 32
    assert indices[0] == 0 and indices[-1] == 299
    assert indices == sorted(set(indices))


def test_even_sampling_returns_every_frame_of_a_short_video():
    assert video.sample_indices(20, FacesConfig(frames_per_video=32)) == list(range(20))


def test_every_k_and_all_sampling():
    assert video.sample_indices(25, FacesConfig(sampling="every_k", every_k=10)) == [0, 10, 20]
    assert video.sample_indices(5, FacesConfig(sampling="all")) == [0, 1, 2, 3, 4]
    assert video.sample_indices(0, FacesConfig()) == []


def test_probe_reports_frame_count_rate_and_size(clip):
    info = video.probe(clip)
    assert (info.n_frames, info.width, info.height) == (45, 96, 64)
    assert info.fps == pytest.approx(15)


def test_read_frames_is_bit_identical_to_decoding_every_frame(clip):
    reference = decode_everything(clip)
    wanted = [0, 3, 7, 8, 20, 31, 44]
    frames = dict(video.read_frames(clip, wanted))
    assert list(frames) == wanted
    for index in wanted:
        assert np.array_equal(frames[index], reference[index]), index


def test_read_frames_yields_rgb_uint8_in_index_order(clip):
    items = list(video.read_frames(clip, [30, 2, 2, 11]))
    assert [index for index, _ in items] == [2, 11, 30]
    assert all(frame.dtype == np.uint8 and frame.shape == (64, 96, 3) for _, frame in items)


@pytest.mark.parametrize("content", [b"", b"this is not a video\n"])
def test_a_file_that_is_not_a_video_raises_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoReadError, match="broken.mp4") as caught:
        video.probe(path)
    assert caught.value.reason.startswith("cannot open")


def test_a_missing_file_raises_video_read_error(tmp_path):
    with pytest.raises(VideoReadError, match="absent.mp4"):
        list(video.read_frames(tmp_path / "absent.mp4", [0]))


def test_an_mp4_cut_before_its_index_cannot_be_opened(tmp_path):
    path = stripes_video(tmp_path / "cut.mp4", n_frames=30)  # x264 in mp4: the index (moov) is at the end
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VideoReadError, match="cut.mp4"):
        video.probe(path)


def test_frames_before_a_mid_stream_break_are_still_yielded(tmp_path):
    path = stripes_video(tmp_path / "cut.mp4", n_frames=60, faststart=True)  # index first, data after
    reference = decode_everything(path)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    received = []
    with pytest.raises(VideoReadError, match="cut.mp4"):
        for index, frame in video.read_frames(path, list(range(0, 60, 5))):
            received.append(index)
            assert np.array_equal(frame, reference[index])
    assert 0 < len(received) < 12


def test_a_video_with_a_rotation_tag_is_returned_upright_like_opencv_shows_it(tmp_path):
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.set_display_rotation(90)  # as a phone held upright records it
        marked = np.zeros((64, 96, 3), np.uint8)
        marked[:16, :24] = 255
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(marked, format="rgb24")), *stream.encode()]:
            container.mux(packet)
    [(_, frame)] = video.read_frames(path, [0])
    assert frame.shape == (96, 64, 3)
    assert np.array_equal(frame > 128, np.rot90(marked, 1) > 128)


def test_a_container_without_any_frame_raises(tmp_path):
    path = tmp_path / "zero_frames.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        container.start_encoding()  # header and index, no frame
    with pytest.raises(VideoReadError, match="zero_frames.mp4"):
        video.probe(path)


def test_a_fifo_named_like_a_video_is_refused_not_waited_on(tmp_path):
    # Opening a FIFO blocks until a writer appears; run in a child so a regression fails, not hangs.
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    code = ("import sys; from dfhelpers import video\n"
            "try:\n    video.probe(sys.argv[1])\nexcept Exception as err:\n    print(type(err).__name__, err)\n")
    done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("VideoReadError") and "not a regular file" in done.stdout


def write_coded_video(path: Path, codec: str, options: dict[str, str], n_frames: int = 60,
                      max_b_frames: int = 0) -> Path:
    """A video of `codec` with the given encoder options (GOP, B-frames), every frame different."""
    width, height = 96, 64
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=15, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if max_b_frames:
            stream.codec_context.max_b_frames = max_b_frames
        for index in range(n_frames):
            rgb = np.full((height, width, 3), 60 + index, np.uint8)  # small steps: no scene cut, regular GOPs
            rgb[(index * 5) % height:, : (index * 3) % width, 0] = 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


CODED_VIDEOS = {  # name: (file, encoder, options, B-frames): short GOPs, open GOPs, hidden frames
    "h264_gop12_bpyramid": ("clip.mp4", "libx264", {"x264-params": "keyint=12:min-keyint=12:bframes=3:b-pyramid=normal"}, 0),
    "h264_open_gop": ("clip.mkv", "libx264", {"x264-params": "keyint=10:min-keyint=10:bframes=2:open-gop=1"}, 0),
    "hevc_open_gop": ("clip.mp4", "libx265", {"x265-params": "keyint=9:min-keyint=9:bframes=3:open-gop=1:log-level=none"}, 0),
    "mp4v_b_frames": ("clip.mp4", "mpeg4", {"g": "8"}, 2),
    "vp9_webm": ("clip.webm", "libvpx-vp9", {"g": "7", "lag-in-frames": "16", "auto-alt-ref": "1"}, 0),
}


@pytest.mark.parametrize("decode_threads", [1, 2])
@pytest.mark.parametrize("kind", sorted(CODED_VIDEOS))
def test_read_frames_gives_the_frames_of_straight_decoding_for_every_codec(tmp_path, kind, decode_threads):
    file_name, codec, options, max_b_frames = CODED_VIDEOS[kind]
    path = write_coded_video(tmp_path / file_name, codec, options, max_b_frames=max_b_frames)
    reference = decode_everything(path)
    assert len(reference) == 60 and video.probe(path).n_frames == 60
    wanted = [0, 1, 5, 9, 10, 11, 23, 24, 36, 47, 58, 59]  # around and across keyframes, both ends
    frames = dict(video.read_frames(path, wanted, decode_threads=decode_threads))
    assert list(frames) == wanted
    for index in wanted:
        assert np.array_equal(frames[index], reference[index]), index


def test_two_decoder_threads_still_yield_the_frames_before_a_mid_stream_break(tmp_path):
    path = stripes_video(tmp_path / "cut.mp4", n_frames=60, faststart=True)
    reference = decode_everything(path)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    received = []
    with pytest.raises(VideoReadError, match="cut.mp4"):
        for index, frame in video.read_frames(path, list(range(0, 60, 5)), decode_threads=2):
            received.append(index)
            assert np.array_equal(frame, reference[index])
    assert 0 < len(received) < 12


def test_packets_before_a_closed_gop_keyframe_that_no_wanted_frame_needs_are_skipped(tmp_path):
    file_name, codec, options, _ = CODED_VIDEOS["h264_gop12_bpyramid"]
    path = write_coded_video(tmp_path / file_name, codec, options)
    scan = video._scan(path)
    needed = video._needed_packets(scan, [0, 30, 59])
    keyframes = {position for position, (_, is_key) in enumerate(scan.packets) if is_key}
    assert needed is not None and len(needed) < len(scan.packets)
    starts = [position for position in sorted(needed) if position - 1 not in needed]
    assert set(starts) <= keyframes  # every run of decoded packets starts at a keyframe


def test_a_keyframe_followed_by_frames_shown_before_it_is_never_a_place_to_start(tmp_path):
    file_name, codec, options, max_b_frames = CODED_VIDEOS["mp4v_b_frames"]  # B-frames across each keyframe
    path = write_coded_video(tmp_path / file_name, codec, options, max_b_frames=max_b_frames)
    scan = video._scan(path)
    last_position = next(p for p, (pts, _) in enumerate(scan.packets) if scan.index_of_pts.get(pts) == 59)
    assert video._needed_packets(scan, [0, 30, 59]) == set(range(last_position + 1))
