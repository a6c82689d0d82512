"""Video probing: duration, declared and measured frame rate, size, rotation, audio tracks, errors."""
from __future__ import annotations

from fractions import Fraction

import pytest
from media_fixtures import make_video

from syncfoley.media import MediaError, probe_video, save_audio


def test_constant_rate_video_with_audio(tmp_path):
    path = tmp_path / "ntsc.mp4"
    make_video(path, fps=Fraction(30000, 1001), count=45, size=(97, 71), pix_fmt="yuv444p",
               audio_seconds=1.25, audio_channels=2)
    info = probe_video(path)
    assert info.nominal_fps == Fraction(30000, 1001)
    assert info.real_fps == pytest.approx(30000 / 1001)
    assert info.frame_count == 45 and info.variable_frame_rate is False
    assert info.duration == pytest.approx(45 * 1001 / 30000)
    assert (info.width, info.height, info.display_width, info.display_height) == (97, 71, 97, 71)
    assert info.rotation == 0 and info.codec == "h264" and info.start_time == 0
    assert info.has_audio
    [audio] = info.audio_streams
    assert (audio.index, audio.codec, audio.sample_rate, audio.channels) == (0, "aac", 48000, 2)
    assert audio.duration == pytest.approx(1.25)


def test_variable_frame_rate_is_measured(tmp_path):
    path = tmp_path / "vfr.mp4"
    times = [Fraction(ms, 1000) for ms in (0, 40, 60, 200, 210, 400, 440, 700)]
    make_video(path, times=times, time_base=Fraction(1, 1000))
    info = probe_video(path)
    assert info.variable_frame_rate is True
    assert info.frame_count == 8
    assert info.real_fps == pytest.approx(8 / info.duration, rel=0.2)
    assert not info.has_audio


def test_rotation_and_display_size(tmp_path):
    path = tmp_path / "phone.mp4"
    make_video(path, fps=30, count=5, size=(72, 96), rotation=-90)
    info = probe_video(path)
    assert info.rotation == -90
    assert (info.width, info.height) == (96, 72)
    assert (info.display_width, info.display_height) == (72, 96)


def test_header_only_probe(tmp_path):
    path = tmp_path / "quick.mp4"
    make_video(path, fps=24, count=36)
    info = probe_video(path, scan_packets=False)
    assert info.duration == pytest.approx(1.5, abs=1 / 24)
    assert info.nominal_fps == 24 and info.frame_count is None and info.real_fps is None


def test_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(MediaError, match=r"gone\.mov: file not found") as missing:
        probe_video(tmp_path / "gone.mov")
    assert missing.value.path.endswith("gone.mov") and isinstance(missing.value, ValueError)
    with pytest.raises(MediaError, match=r"is not a file"):
        probe_video(tmp_path)
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x00\xffnot a container" * 64)
    with pytest.raises(MediaError, match=r"junk\.mkv: not a media file or corrupt"):
        probe_video(junk)
    sound = save_audio(tmp_path / "sound.flac", [0.0] * 4800, 48000)
    with pytest.raises(MediaError, match=r"sound\.flac: has no video stream \(pass a video file"):
        probe_video(sound)
