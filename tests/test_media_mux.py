"""Muxing: copied video packets stay bit-identical, audio lasts as long as the video, files reopen cleanly."""
from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from media_fixtures import code_region, index_pattern, make_video, packet_bytes, read_index, tone

from syncfoley.media import MediaError, load_audio, mux_audio, probe_video, write_video

AAC_FRAME = 1024


def decoded_audio(path) -> list[tuple[int, int, float]]:
    """(sample count, channels, rms) of every audio track, decoded fully."""
    result = []
    with av.open(str(path)) as container:
        for stream in container.streams.audio:
            container.seek(0)
            chunks = [frame.to_ndarray() for frame in container.decode(stream)]
            samples = np.concatenate(chunks, axis=1)
            result.append((samples.shape[1], samples.shape[0], float(np.sqrt(np.mean(samples ** 2)))))
    return result


def decoded_frame_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """29.97 fps H.264 with B-frames and a stereo AAC track longer than the picture."""
    path = tmp_path_factory.mktemp("src") / "source.mp4"
    make_video(path, fps=Fraction(30000, 1001), count=60, audio_seconds=2.5, audio_channels=2)
    return path


def video_samples(path, rate: int = 48000) -> int:
    return round(probe_video(path).duration * rate)


@pytest.mark.parametrize("extension, codec, copied_times_exact", [(".mp4", "aac", True), (".mkv", "opus", False)])
def test_video_packets_are_copied_and_audio_fits(tmp_path, source, extension, codec, copied_times_exact):
    generated = torch.from_numpy(tone(3.0, 48000, frequency=1000))  # longer than the video: trimmed
    output = mux_audio(source, generated, 48000, tmp_path / f"out{extension}")
    original, muxed = packet_bytes(source), packet_bytes(output)
    assert [data for data, _ in muxed] == [data for data, _ in original]
    tolerance = 0 if copied_times_exact else Fraction(1, 1000)  # Matroska stores milliseconds
    assert all(abs(a - b) <= tolerance for (_, a), (_, b) in zip(original, muxed))
    info = probe_video(output)
    assert info.duration == pytest.approx(60 * 1001 / 30000, abs=1e-3)
    [(samples, channels, rms)] = decoded_audio(output)
    assert info.audio_streams[0].codec == codec and channels == 1
    assert abs(samples - video_samples(source)) <= AAC_FRAME
    assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
    assert decoded_frame_count(output) == 60


@pytest.mark.parametrize("extension", [".mp4", ".mkv"])
def test_sound_stays_in_sync_with_the_picture(tmp_path, source, extension):
    generated = torch.zeros(1, 96000)
    generated[:, 48000:48200] = 0.9  # a click at exactly 1 s
    output = mux_audio(source, generated, 48000, tmp_path / f"sync{extension}")
    waveform, _ = load_audio(output, sample_rate=48000)
    assert abs(int(torch.argmax((waveform[0] > 0.6).int())) - 48000) <= 8
    images = torch.zeros(48, 16, 16, 3)
    frames_output = write_video(images, 24, tmp_path / f"frames{extension}", audio=generated, sample_rate=48000)
    waveform, _ = load_audio(frames_output, sample_rate=48000)
    assert abs(int(torch.argmax((waveform[0] > 0.6).int())) - 48000) <= 8


def test_short_audio_is_padded_to_the_video(tmp_path, source):
    output = mux_audio(source, tone(0.5, 24000, channels=2), 24000, tmp_path / "padded.mp4")
    [(samples, channels, _)] = decoded_audio(output)
    assert channels == 2 and abs(samples - video_samples(source, 24000)) <= AAC_FRAME
    waveform, _ = load_audio(output, sample_rate=24000)
    assert waveform[:, 13000:].abs().max() < 0.01  # silence after the 0.5 s of sound


def test_keep_original_as_second_track(tmp_path, source):
    output = mux_audio(source, tone(2.0), 48000, tmp_path / "both.mp4", original_audio="keep")
    (new_samples, new_channels, _), (old_samples, old_channels, old_rms) = decoded_audio(output)
    assert (new_channels, old_channels) == (1, 2)
    assert abs(new_samples - video_samples(source)) <= AAC_FRAME
    assert abs(old_samples - video_samples(source)) <= AAC_FRAME  # cut from 2.5 s to the video
    with av.open(str(output)) as container:
        first, second = container.streams.audio
        assert first.disposition & av.stream.Disposition.default
        assert not second.disposition & av.stream.Disposition.default
    # The original track is stream-copied: its packets are the source's, up to the video's end.
    kept = packet_bytes_of_track(output, 1)
    assert kept == [data for data, _ in packet_bytes(source, "audio")][:len(kept)]
    assert [data for data, _ in packet_bytes(output)] == [data for data, _ in packet_bytes(source)]


def packet_bytes_of_track(path, track: int) -> list[bytes]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[track]
        return [bytes(packet) for packet in container.demux(stream) if packet.size]


def test_keep_original_reencodes_a_codec_the_container_rejects(tmp_path, source):
    opus_source = mux_audio(source, tone(2.0, channels=2), 48000, tmp_path / "opus.mkv")
    output = mux_audio(opus_source, tone(2.0), 48000, tmp_path / "both.m4v", original_audio="keep")
    info = probe_video(output)
    assert [(a.codec, a.channels) for a in info.audio_streams] == [("aac", 1), ("aac", 2)]
    for samples, _, rms in decoded_audio(output):
        assert abs(samples - video_samples(source)) <= AAC_FRAME and rms > 0.1
    assert [data for data, _ in packet_bytes(output)] == [data for data, _ in packet_bytes(source)]


def test_mix_original_at_a_level(tmp_path, source):
    silence = torch.zeros(1, 48000 * 2)
    loud = mux_audio(source, silence, 48000, tmp_path / "full.mp4", original_audio="mix", original_level=1.0)
    quiet = mux_audio(source, silence, 48000, tmp_path / "quiet.mp4", original_audio="mix", original_level=0.25)
    [(_, channels, loud_rms)] = decoded_audio(loud)
    [(_, _, quiet_rms)] = decoded_audio(quiet)
    assert channels == 2  # the stereo original widens the mono generation
    assert loud_rms == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
    assert quiet_rms == pytest.approx(0.25 * loud_rms, rel=0.1)


def test_rotation_survives_the_copy(tmp_path):
    phone = tmp_path / "phone.mp4"
    make_video(phone, fps=30, count=15, size=(72, 96), rotation=-90)
    output = mux_audio(phone, tone(0.5), 48000, tmp_path / "phone_foley.mp4")
    assert probe_video(output).rotation == -90
    assert packet_bytes(output) == packet_bytes(phone)


def test_mux_errors_leave_no_file(tmp_path, source):
    with pytest.raises(MediaError, match=r"out\.webm: WebM cannot hold h264 video"):
        mux_audio(source, tone(0.5), 48000, tmp_path / "out.webm")
    silent = tmp_path / "silent.mp4"
    make_video(silent, fps=25, count=10)
    with pytest.raises(MediaError, match=r"silent\.mp4: has no audio stream 0 to keep \(use original_audio='drop'\)"):
        mux_audio(silent, tone(0.5), 48000, tmp_path / "out.mp4", original_audio="keep")
    with pytest.raises(MediaError, match=r"unsupported video output extension '\.avi'"):
        mux_audio(silent, tone(0.5), 48000, tmp_path / "out.avi")
    with pytest.raises(MediaError, match=r"silent\.mp4: output file already exists"):
        mux_audio(silent, tone(0.5), 48000, silent)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["silent.mp4"]


def test_failure_while_muxing_keeps_the_old_output(tmp_path, source, monkeypatch):
    import syncfoley.media.mux as mux_module
    output = mux_audio(source, tone(0.5), 48000, tmp_path / "out.mp4")
    before = output.read_bytes()

    def failing(*sources):
        for count, packet in enumerate(mux_module.heapq.merge(*sources, key=mux_module._packet_time)):
            if count == 20:
                raise av.error.InvalidDataError(1094995529, "simulated", str(output))
            yield packet

    monkeypatch.setattr(mux_module, "_interleave", failing)
    with pytest.raises(MediaError, match=r"out\.mp4: muxing failed"):
        mux_audio(source, tone(1.0), 48000, output, overwrite=True)
    assert output.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_image_frames_to_h264_with_audio(tmp_path):
    count, fps = 30, 24
    images = torch.from_numpy(np.stack([index_pattern(i, 97, 71) for i in range(count)])).float() / 255
    output = write_video(images, fps, tmp_path / "frames.mp4", audio=tone(0.5, 44100, channels=2), sample_rate=44100)
    info = probe_video(output)
    assert info.codec == "h264" and info.nominal_fps == fps and info.frame_count == count
    assert (info.width, info.height) == (98, 72)  # 4:2:0 needs even sides: one edge row/column added
    assert info.duration == pytest.approx(count / fps)
    [(samples, channels, _)] = decoded_audio(output)
    assert channels == 2 and abs(samples - round(count / fps * 44100)) <= AAC_FRAME
    with av.open(str(output)) as container:
        shown = [read_index(frame.to_ndarray(format="rgb24"), code_region(98, 72, "none"))
                 for frame in container.decode(video=0)]
    assert shown == list(range(count))


def test_image_frames_without_audio(tmp_path):
    images = torch.rand(5, 48, 64, 3)
    output = write_video(images, 8, tmp_path / "frames.mkv")
    info = probe_video(output)
    assert not info.has_audio and info.frame_count == 5 and (info.width, info.height) == (64, 48)


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")
def test_outputs_pass_ffprobe(tmp_path, source):
    outputs = [mux_audio(source, tone(1.0), 48000, tmp_path / "a.mp4", original_audio="keep"),
               mux_audio(source, tone(1.0), 48000, tmp_path / "b.mkv", original_audio="mix"),
               write_video(torch.rand(6, 48, 64, 3), 25, tmp_path / "c.mp4", audio=tone(0.2))]
    for output in outputs:
        result = subprocess.run(["ffprobe", "-v", "error", "-show_streams", str(output)],
                                capture_output=True, text=True)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert result.stdout.count("[STREAM]") == (3 if output.name == "a.mp4" else 2)


def test_outputs_get_the_usual_file_permissions(tmp_path):
    import os

    from syncfoley.media import save_audio

    path = save_audio(tmp_path / "tone.wav", torch.zeros(1, 4800), 48000)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
