"""Onset detection and matching, AV-Align, and `syncfoley eval-sync` on generated world clips."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from syncfoley.cli import main
from syncfoley.demo.world import write_dataset
from syncfoley.evaluation.av_align import av_align, video_peaks
from syncfoley.media.analysis import grey_frames, motion_curve
from syncfoley.evaluation.onsets import OnsetScore, detect_onsets, match_onsets, merge_close, score_onsets
from syncfoley.media import load_audio, save_audio


def test_exact_matches_misses_and_false_alarms():
    assert score_onsets([0.5, 1.0, 2.0], [0.5, 1.0, 2.0]).f1 == 1.0
    missed = score_onsets([0.5, 1.0, 2.0, 3.0], [0.52, 1.95])
    assert (missed.matched, missed.precision, missed.recall) == (2, 1.0, 0.5)
    assert missed.mean_abs_error == pytest.approx(0.035)
    false_alarms = score_onsets([1.0], [0.3, 1.04, 1.7, 2.5])
    assert (false_alarms.precision, false_alarms.recall) == (0.25, 1.0)
    assert false_alarms.f1 == pytest.approx(2 * 1 / (1 + 4))


def test_tolerance_boundary_is_inclusive():
    assert score_onsets([1.0], [1.1]).matched == 1
    assert score_onsets([1.0], [0.9]).matched == 1
    assert score_onsets([1.0], [1.1001]).matched == 0
    assert score_onsets([1.0], [1.04], tolerance=0.05).matched == 1
    assert score_onsets([1.0], [1.06], tolerance=0.05).matched == 0


def test_matching_is_one_to_one_and_empty_sets_are_defined():
    assert score_onsets([1.0], [0.98, 1.0, 1.02]).matched == 1
    assert score_onsets([0.98, 1.0, 1.02], [1.0]).matched == 1
    assert score_onsets([], []).f1 == 1.0
    assert score_onsets([], [1.0]).f1 == 0.0 and score_onsets([], [1.0]).precision == 0.0
    assert score_onsets([1.0], []).f1 == 0.0 and score_onsets([1.0], []).precision == 1.0
    pooled = OnsetScore(2, 3, 4) + OnsetScore(1, 1, 0)
    assert (pooled.matched, pooled.reference, pooled.estimated) == (3, 4, 4)


def _maximum_matching(reference, estimated, tolerance):
    """Largest bipartite matching by augmenting paths (slow, obviously right)."""
    owner: dict[int, int] = {}

    def augment(r, seen):
        for e in range(len(estimated)):
            if abs(reference[r] - estimated[e]) <= tolerance + 1e-9 and e not in seen:
                seen.add(e)
                if e not in owner or augment(owner[e], seen):
                    owner[e] = r
                    return True
        return False

    return sum(augment(r, set()) for r in range(len(reference)))


def test_greedy_matching_is_as_large_as_the_best():
    rng = np.random.default_rng(0)
    for _ in range(300):
        reference = rng.uniform(0, 2, rng.integers(0, 8))
        estimated = rng.uniform(0, 2, rng.integers(0, 8))
        pairs = match_onsets(reference, estimated, 0.15)
        assert len(pairs) == _maximum_matching(reference, estimated, 0.15)
        assert all(abs(reference[r] - estimated[e]) <= 0.15 + 1e-9 for r, e in pairs)
        assert len({r for r, _ in pairs}) == len({e for _, e in pairs}) == len(pairs)


def test_merge_close_keeps_the_first_of_a_cluster():
    assert merge_close([1.0, 0.2, 1.03, 1.2, 0.24], 0.05).tolist() == [0.2, 1.0, 1.2]


def _bursts(times, sample_rate, seconds=2.0, frequency=300.0, gains=None):
    audio = np.zeros(int(seconds * sample_rate))
    for k, time in enumerate(times):
        start = int(time * sample_rate)
        local = np.arange(audio.size - start) / sample_rate
        audio[start:] += (gains[k] if gains else 0.8) * np.exp(-local / 0.05) * np.sin(2 * np.pi * frequency * local)
    return audio.astype(np.float32)


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_detector_finds_decaying_bursts_at_their_start(sample_rate):
    times = [0.3, 0.8, 1.05, 1.55]
    onsets = detect_onsets(torch.from_numpy(_bursts(times, sample_rate, gains=[0.9, 0.2, 0.6, 0.3]))[None],
                           sample_rate)
    assert onsets.shape == (4,)
    assert np.abs(onsets - times).max() <= 0.015
    assert detect_onsets(np.zeros(sample_rate), sample_rate).size == 0
    assert detect_onsets(1e-4 * np.random.default_rng(0).standard_normal(sample_rate), sample_rate).size == 0


def _moving_square(jumps, frames=60):
    """A square drifting one pixel a frame that jumps 6 pixels at the frames in `jumps`."""
    video = np.full((frames, 40, 96, 3), 230, np.uint8)
    column = 2
    for k in range(frames):
        column += 6 if k in jumps else 1
        video[k, 16:24, column:column + 8] = (200, 40, 40)
    return video


def test_av_align_is_high_when_sounds_meet_motion_peaks():
    fps, jumps = 25, {10, 25, 41}
    peaks = video_peaks(motion_curve(grey_frames(torch.from_numpy(_moving_square(jumps)))), fps)
    assert peaks.tolist() == pytest.approx([k / fps for k in sorted(jumps)])
    aligned = av_align([k / fps + 0.01 for k in sorted(jumps)], peaks, fps)
    assert aligned.score == 1.0
    shifted = av_align([k / fps + 0.3 for k in sorted(jumps)], peaks, fps)
    assert shifted.score == 0.0
    # I = 1 (1.0 s is within a frame of 1.02 s); union = 2 + 2 - 1.
    assert av_align([1.0, 2.0], [1.02, 3.0], 25).score == pytest.approx(1 / 3)
    assert av_align([], [], 25).score == 1.0


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("held_out")
    write_dataset(folder, count=3, seed=99, duration=2.5, size=(48, 48), continuous=True)
    return folder


def _audio_folder(held_out, folder, shift_seconds):
    folder.mkdir()
    for video in sorted(held_out.glob("*.mp4")):
        audio, rate = load_audio(video, None, channels=1)
        save_audio(folder / f"{video.stem}.wav", torch.roll(audio, round(shift_seconds * rate), -1), rate)
    return folder


def test_eval_sync_scores_true_audio_high_and_shifted_audio_low(held_out, tmp_path, capsys):
    copies = _audio_folder(held_out, tmp_path / "copies", 0.0)
    late = _audio_folder(held_out, tmp_path / "late", 0.7)
    report_path = tmp_path / "report.json"
    assert main(["eval-sync", "--data", str(held_out), "--generated", f"copy={copies}", "--generated",
                 f"late={late}", "--draws", "4", "--json", str(report_path)]) == 0
    table = capsys.readouterr().out
    assert "ground truth" in table and "late" in table and "frame-difference" in table
    report = json.loads(report_path.read_text())
    sources = report["sources"]
    assert report["clips"] == 3 and len(report["per_clip"]) == 3
    assert sources["ground truth"]["onset"]["f1"] > 0.9
    assert sources["copy"]["onset"]["f1"] == pytest.approx(sources["ground truth"]["onset"]["f1"], abs=0.05)
    assert sources["late"]["onset"]["f1"] < 0.6
    assert sources["ground truth"]["shifted"]["f1"] < 0.6  # the random-onset baseline
    assert sources["ground truth"]["av_align"] > sources["ground truth"]["av_align_shifted"]
    # Every source of a clip is rolled by the same offsets.
    assert len(report["per_clip"][0]["offsets"]) == 4


def test_eval_sync_explains_missing_generated_files(held_out, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no audio for clip clip_00000"):
        main(["eval-sync", "--data", str(held_out), "--generated", f"x={tmp_path / 'empty'}",
              "--json", str(tmp_path / "r.json")])


def test_eval_sync_runs_a_model_with_cfg_and_synccfg(held_out, tiny_models, tmp_path):
    saved = tmp_path / "generated"
    report_path = tmp_path / "report.json"
    assert main(["eval-sync", "--data", str(held_out), "--clips", "1", "--models", str(tiny_models["dit"].parent),
                 "--steps", "2", "--draws", "2", "--device", "cpu", "--precision", "fp32", "--save-audio", str(saved),
                 "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert list(report["sources"]) == ["ground truth", "cfg", "synccfg"]
    assert report["settings"]["model"]["steps"] == 2
    waves = {}
    for name in ("cfg", "synccfg"):
        waves[name], rate = load_audio(saved / name / "clip_00000.wav", None)
        assert waves[name].shape[1] == pytest.approx(2.5 * rate, abs=rate * 0.05)
    assert not torch.equal(waves["cfg"], waves["synccfg"])  # the anchor branch changed the result
