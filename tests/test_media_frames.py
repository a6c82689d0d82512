"""Frame sampling by timestamp: every sampled frame must be the one the reference's rule selects."""
from __future__ import annotations

import random
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from media_fixtures import code_region, expected_choice, expected_count, index_pattern, make_video, read_index, tone

from syncfoley.media import (HUNYUAN_STREAMS, MediaError, StreamSpec, as_rate, resize_frame, rotate_upright,
                             sample_images, sample_video, to_model_input)
from syncfoley.media.transforms import resized_shape

RAW = StreamSpec("raw", 25, "none")


def assert_follows_rule(clip, frame_times, display_size, start=Fraction(0)):
    """Counts, chosen timestamps and the index each frame shows all match the rule."""
    width, height = display_size
    for stream in clip.streams.values():
        fps = stream.spec.fps
        count = expected_count(frame_times, fps, start)
        chosen = expected_choice(frame_times, fps, count, start)
        assert len(stream) == count, stream.spec.name
        assert list(stream.target_times) == [start + Fraction(k) / fps for k in range(count)]
        assert list(stream.frame_times) == [frame_times[i] for i in chosen], stream.spec.name
        region = code_region(width, height, stream.spec.resize)
        shown = [read_index(frame.numpy(), region) for frame in stream.frames]
        assert shown == chosen, stream.spec.name
    assert clip.duration == Fraction(expected_count(frame_times, 25, start), 25)


@pytest.mark.parametrize("fps", [Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(60)],
                         ids=["24", "25", "29.97", "60"])
def test_constant_rate_videos_follow_the_rule(tmp_path, fps):
    path = tmp_path / "clip.mp4"
    times = make_video(path, fps=fps, count=int(2.2 * fps), audio_seconds=2.0 if fps == 25 else None)
    clip = sample_video(path, [*HUNYUAN_STREAMS, RAW])
    assert_follows_rule(clip, times, (96, 72))
    assert clip["siglip2"].frames.shape[1:] == (512, 512, 3)
    assert clip["synchformer"].frames.shape[1:] == (224, 224, 3)
    assert clip["synchformer"].frames.dtype == torch.uint8
    if fps == 25:
        # Frame times equal the targets exactly here; accumulating 1/25 in floats would skip frames.
        assert [read_index(f.numpy(), (0, 0, 1, 1)) for f in clip["synchformer"].frames] == list(range(55))


def test_variable_frame_rate(tmp_path):
    rng = random.Random(7)
    times, now = [], 0
    for _ in range(70):
        times.append(Fraction(now, 1000))
        now += rng.choice([5, 17, 33, 40, 41, 90, 150])
    path = tmp_path / "vfr.mp4"
    make_video(path, times=times, time_base=Fraction(1, 1000))
    clip = sample_video(path, [*HUNYUAN_STREAMS, RAW])
    assert_follows_rule(clip, times, (96, 72))


@pytest.mark.parametrize("size", [(97, 71), (71, 97)], ids=["landscape", "portrait"])
def test_odd_sizes(tmp_path, size):
    path = tmp_path / "odd.mp4"
    times = make_video(path, fps=25, count=30, size=size, pix_fmt="yuv444p")
    clip = sample_video(path, [*HUNYUAN_STREAMS, RAW])
    assert clip["raw"].frames.shape[1:] == (size[1], size[0], 3)
    assert_follows_rule(clip, times, size)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_video_comes_out_upright(tmp_path, rotation):
    path = tmp_path / "phone.mp4"
    times = make_video(path, fps=30, count=20, size=(72, 96), rotation=rotation)
    clip = sample_video(path, [*HUNYUAN_STREAMS, RAW])
    assert clip.rotation == rotation
    assert clip["raw"].frames.shape[1:] == (96, 72, 3)
    assert_follows_rule(clip, times, (72, 96))  # the code only reads back when the picture is upright


def test_start_offset_and_max_duration(tmp_path):
    path = tmp_path / "long.mp4"
    times = make_video(path, fps=24, count=72)
    start = Fraction(1, 2)
    clip = sample_video(path, [*HUNYUAN_STREAMS, RAW], start=start, max_duration=1.0)
    assert clip.duration == 1 and clip.start == start
    assert [len(clip[name]) for name in ("siglip2", "synchformer", "raw")] == [8, 25, 25]
    chosen = expected_choice(times, Fraction(25), 25, start)
    assert list(clip["raw"].frame_times) == [times[i] for i in chosen]
    assert [read_index(f.numpy(), (0, 0, 1, 1)) for f in clip["raw"].frames] == chosen


def test_start_past_two_seconds_seeks_and_still_follows_the_rule(tmp_path):
    path = tmp_path / "seek.mp4"
    times = make_video(path, fps=24, count=110, options={"g": "12"})
    start = Fraction(23, 10)
    clip = sample_video(path, [*HUNYUAN_STREAMS, RAW], start=start)
    assert_follows_rule(clip, times, (96, 72), start)


def test_max_duration_beyond_the_end_changes_nothing(tmp_path):
    path = tmp_path / "short.mp4"
    times = make_video(path, fps=25, count=20)
    clip = sample_video(path, [RAW], max_duration=15)
    assert_follows_rule(clip, times, (96, 72))


def test_stream_faster_than_duration_rate_is_padded_with_the_last_frame(tmp_path):
    path = tmp_path / "ten.mp4"
    make_video(path, fps=25, count=10)  # last frame at 0.36 s, duration 10 / 25 = 0.4 s
    clip = sample_video(path, [StreamSpec("fast", 50, "none")])
    fast = clip["fast"]
    assert len(fast) == 20  # floor(0.4 * 50); targets up to 0.36 s give 19 frames
    assert fast.frame_times[-1] == Fraction(9, 25) and fast.target_times[-1] == Fraction(19, 50)
    assert [read_index(f.numpy(), (0, 0, 1, 1)) for f in fast.frames[-3:]] == [9, 9, 9]


def test_comfy_images_follow_the_rule():
    fps = as_rate(23.976)
    assert fps == Fraction(24000, 1001)
    count = 50
    images = torch.from_numpy(np.stack([index_pattern(i, 96, 72) for i in range(count)])).float() / 255
    clip = sample_images(images, 23.976, [*HUNYUAN_STREAMS, RAW])
    times = [Fraction(i) / fps for i in range(count)]
    assert_follows_rule(clip, times, (96, 72))
    assert torch.equal(clip["raw"].frames[0], torch.from_numpy(index_pattern(0, 96, 72)))


def test_model_input_is_channels_first_in_minus_one_to_one():
    frames = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 4, 5, 3)
    model_input = to_model_input(frames)
    assert model_input.shape == (2, 3, 4, 5) and model_input.dtype == torch.float32
    assert model_input[0, :, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 51 / 127.5 - 1])


def test_resize_geometry_follows_torchvision():
    assert resized_shape(72, 96, "short_side_center_crop", 224) == (224, 298)  # int(224 * 96 / 72)
    assert resized_shape(1920, 1080, "short_side_center_crop", 224) == (398, 224)
    # Black left third: stretching keeps it a third of the width (aspect ignored).
    image = torch.full((72, 108, 3), 255, dtype=torch.uint8)
    image[:, :36] = 0
    stretched = resize_frame(image, "stretch", 60, "bilinear")
    assert stretched.shape == (60, 60, 3)
    assert stretched[:, :19].max() == 0 and stretched[:, 21:].min() == 255
    # Black band left of the central square, white band right of it: the crop keeps only the square.
    image = torch.full((72, 108, 3), 128, dtype=torch.uint8)
    image[:, :16], image[:, 92:] = 0, 255
    cropped = resize_frame(image, "short_side_center_crop", 48, "bicubic")
    assert cropped.shape == (48, 48, 3)
    assert cropped[:, 1:-1].min() == 128 and cropped[:, 1:-1].max() == 128


def test_rotate_upright_turns_counter_clockwise():
    picture = torch.arange(6).view(2, 3, 1)
    assert rotate_upright(picture, 90)[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]
    assert rotate_upright(picture, -90)[..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert rotate_upright(picture, 180)[..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]
    assert rotate_upright(picture, 0) is picture


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match=r"nothere\.mp4: file not found"):
        sample_video(tmp_path / "nothere.mp4")


def test_not_a_media_file(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("shopping list\n" * 50)
    with pytest.raises(MediaError, match=r"notes\.mp4: not a media file or corrupt"):
        sample_video(path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    from syncfoley.media import save_audio
    path = save_audio(tmp_path / "sound.wav", tone(0.2), 48000)
    with pytest.raises(MediaError, match=r"sound\.wav: has no video stream"):
        sample_video(path)


def test_video_without_decodable_frames(tmp_path):
    path = tmp_path / "garbage.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height = 64, 48
        container.start_encoding()
        for index in range(5):
            packet = av.Packet(b"\x00\x00\x01\xb6not a picture" * 8)
            packet.pts = packet.dts = index
            packet.time_base = Fraction(1, 25)
            packet.stream = stream
            container.mux(packet)
    with pytest.raises(MediaError, match=r"garbage\.mkv: has a video stream but no frame could be decoded"):
        sample_video(path)


def test_start_past_the_end(tmp_path):
    path = tmp_path / "brief.mp4"
    make_video(path, fps=25, count=10)
    with pytest.raises(MediaError, match=r"brief\.mp4: has no frame at or after the start offset 5\.000 s"):
        sample_video(path, start=5)


def test_float_durations_and_starts_mean_the_decimal_written(tmp_path):
    """3.84 s at 25 fps is 96 frames; the double nearest 3.84 lies just below 96/25."""
    from fractions import Fraction

    from syncfoley.media.frames import as_seconds

    assert Fraction(3.84) < Fraction(96, 25) and as_seconds(3.84) == Fraction(96, 25)
    path = tmp_path / "clip.mp4"
    make_video(path, fps=25, count=125, size=(32, 32))
    clip = sample_video(path, max_duration=3.84)
    assert len(clip["synchformer"]) == 96 and clip.duration == Fraction(96, 25)
    later = sample_video(path, start=0.12, max_duration=1.0)
    assert later["synchformer"].target_times[0] == Fraction(3, 25)
