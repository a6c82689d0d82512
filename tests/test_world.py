"""The synthetic world: deterministic clips whose sounds start exactly at the recorded events."""
from __future__ import annotations

import csv
import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from syncfoley.cli import main
from syncfoley.demo.materials import MATERIALS
from syncfoley.demo.world import clip_seed, generate_clip
from syncfoley.evaluation.onsets import detect_onsets, merge_close, score_onsets
from syncfoley.media import load_audio, probe_video


def test_a_seed_gives_the_same_clip_and_another_seed_another():
    first = generate_clip(11, duration=2.0, size=(48, 40))
    again = generate_clip(11, duration=2.0, size=(48, 40))
    other = generate_clip(12, duration=2.0, size=(48, 40))
    assert torch.equal(first.frames, again.frames) and torch.equal(first.audio, again.audio)
    assert first.events == again.events and first.caption == again.caption
    assert not torch.equal(first.frames, other.frames)
    assert first.frames.shape == (50, 40, 48, 3) and first.frames.dtype == torch.uint8
    assert first.audio.shape == (1, 96000) and first.audio.dtype == torch.float32


@pytest.mark.parametrize("fps, frames", [(24, 60), (25, 62), (30, 75), (29.97, 75)])
def test_any_frame_rate_keeps_picture_and_sound_the_same_length(fps, frames):
    clip = generate_clip(3, duration=2.5, fps=fps, size=(32, 24), sample_rate=16000)
    assert clip.frames.shape[0] == frames
    assert clip.audio.shape[1] == round(frames / clip.fps * 16000)
    assert clip.fps == (Fraction(30000, 1001) if fps == 29.97 else fps)


def test_every_sound_starts_at_an_event():
    """Before the first event there is only the noise floor; at each event the detector finds an onset."""
    total = None
    for index in range(8):
        clip = generate_clip(clip_seed(21, index), duration=3.0, size=(32, 32))
        audio = clip.audio[0].numpy()
        times = [event.time for event in clip.events]
        assert times == sorted(times) and all(0 <= t < clip.duration for t in times)
        if times:
            first = int(times[0] * clip.sample_rate)
            assert np.abs(audio[:first]).max() < 0.01  # background noise only
            assert np.abs(audio[first:first + 480]).max() > 0.05  # the impact, within 10 ms
        score = score_onsets(merge_close(times, 0.05), detect_onsets(clip.audio, clip.sample_rate), 0.1)
        total = score if total is None else total + score
    assert total.reference > 20
    assert total.f1 > 0.9, total.as_dict()


@pytest.mark.parametrize("material", sorted(MATERIALS))
def test_the_caption_names_colour_and_material(material):
    clip = generate_clip(5, duration=2.0, size=(32, 32), materials=[material])
    info = MATERIALS[material]
    assert f"{info.colour_name} {info.adjective}" in clip.caption
    assert all(event.materials == (material,) * len(event.objects) for event in clip.events)
    # The body is drawn in its material's colour.
    colour = torch.tensor(info.colour, dtype=torch.uint8)
    assert (clip.frames == colour).all(-1).any()


def test_two_bodies_are_both_described():
    clip = generate_clip(8, duration=3.0, size=(48, 32), materials=["metal", "rubber"])
    assert "red metal" in clip.caption and "yellow rubber" in clip.caption
    assert len(clip.objects) == 2


def test_world_command_writes_decodable_clips_with_ground_truth(tmp_path, capsys):
    out = tmp_path / "world"
    assert main(["world", str(out), "--count", "2", "--seed", "4", "--duration", "1.5", "--fps", "29.97",
                 "--size", "50x36"]) == 0
    assert "wrote 2 clips" in capsys.readouterr().out
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["video"] for r in rows] == ["clip_00000.mp4", "clip_00001.mp4"]
    for row in rows:
        video = out / row["video"]
        sidecar = json.loads(video.with_suffix(".json").read_text())
        assert sidecar["caption"] == row["prompt"] == video.with_suffix(".txt").read_text().strip()
        assert sidecar["seed"] == clip_seed(4, sidecar["index"]) and sidecar["dataset_seed"] == 4
        info = probe_video(video)
        assert info.nominal_fps == Fraction(30000, 1001)
        assert info.frame_count == 45 == sidecar["frames"]
        assert (info.width, info.height) == (50, 36)
        assert info.duration == pytest.approx(45 * 1001 / 30000, abs=1e-3)
        audio, rate = load_audio(video, None, channels=1)
        samples = round(sidecar["duration"] * rate)
        assert rate == 48000 and samples <= audio.shape[1] < samples + 1024  # AAC pads its last frame
        # AAC keeps the timing: the decoded soundtrack still has its onsets at the events.
        reference = merge_close([e["time"] for e in sidecar["events"]], 0.05)
        if reference.size:
            assert score_onsets(reference, detect_onsets(audio, rate)).recall == 1.0
        # The same clip again from the recorded seed, in memory.
        clip = generate_clip(sidecar["seed"], 1.5, 29.97, (50, 36))
        assert [e.time for e in clip.events] == [e["time"] for e in sidecar["events"]]
    with pytest.raises(SystemExit, match="exists; pass overwrite=True \\(--overwrite\\)"):
        main(["world", str(out), "--count", "1"])


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="unknown material"):
        generate_clip(0, materials=["stone"])
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        generate_clip(0, size="96")
    with pytest.raises(ValueError, match="objects must be 1..3"):
        generate_clip(0, objects=4)
