"""DeSync beyond the benchmark's vector: the demo's stand-in follows a shifted soundtrack, windows slide
over any length, takes are ranked by sync, the mux repairs an offset, and where users meet it (eval-sync,
the Sync Score / Pick Best Take nodes, generate --pick sync)."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from media_fixtures import packet_bytes

from syncfoley.cli import main
from syncfoley.demo.encoders import DemoSyncEncoder
from syncfoley.demo.world import generate_clip
from syncfoley.evaluation.desync import (SyncCurve, desync, desync_from_features, rank_takes, suggest_offset,
                                         window_length, window_starts)
from syncfoley.evaluation.sync_media import measure_sync, picture_features
from syncfoley.media import load_audio, mux_audio, save_audio, write_video
from syncfoley.media.mux import shift_audio
from syncfoley.models.synchformer import OFFSET_GRID_SECONDS, Synchformer, tiny

SHIFTS_MS = (0, 400, -800)  # the sound in sync, 0.4 s late, 0.8 s early


@pytest.fixture(scope="module")
def stand_in():
    return DemoSyncEncoder.create()


@pytest.fixture(scope="module")
def clip():
    """4.8 s of the world (one offset window), two bodies, eight impacts."""
    return generate_clip(200, duration=4.8, size=(64, 64))


@pytest.fixture(scope="module")
def shifted_video(clip, tmp_path_factory):
    """The clip as an mp4 whose soundtrack is 0.4 s late."""
    path = tmp_path_factory.mktemp("late") / "late.mp4"
    return write_video(clip.frames, clip.fps, path, audio=clip.audio, sample_rate=clip.sample_rate, offset_ms=400)


def _shifted(clip, shifts_ms=SHIFTS_MS) -> torch.Tensor:
    return torch.stack([shift_audio(clip.audio, clip.sample_rate, ms) for ms in shifts_ms])


# ------------------------------------------------------------------------------------------------
# The offset follows the shift (the demo's weight-free stand-in)
# ------------------------------------------------------------------------------------------------
def test_the_reported_offset_follows_a_shifted_soundtrack(stand_in, clip):
    picture = picture_features(stand_in, (clip.frames, float(clip.fps)))
    curve = measure_sync(stand_in, picture, _shifted(clip), clip.sample_rate)
    assert picture.segments == 14 and curve.offsets.shape == (3, 1)  # one window: the whole clip
    assert curve.offsets[:, 0].tolist() == pytest.approx([0.0, 0.4, -0.8], abs=1e-6)
    assert curve.desync.tolist() == pytest.approx([0.0, 0.4, 0.8], abs=1e-6)
    assert [suggest_offset(curve, k) for k in range(3)] == [None, pytest.approx(-0.4), pytest.approx(0.8)]
    # The sign is the sound's delay; the head's classes are the release's (the sound early by grid[k]).
    assert OFFSET_GRID_SECONDS[curve.logits[1, 0].argmax()] == pytest.approx(-0.4)


def test_a_long_clip_gets_an_offset_curve(stand_in):
    clip = generate_clip(301, duration=8.0, size=(64, 64), objects=3)
    picture = picture_features(stand_in, (clip.frames, float(clip.fps)))
    curve = measure_sync(stand_in, picture, _shifted(clip), clip.sample_rate, stride=2)
    assert picture.segments == 24 and curve.times.tolist() == pytest.approx([2.4, 3.04, 3.68, 4.32, 4.96, 5.6])
    assert curve.offsets[0].abs().max() == 0 and curve.offsets[1].tolist() == pytest.approx([0.4] * 6)
    assert curve.offsets[2].median() == pytest.approx(-0.8)
    benchmark = measure_sync(stand_in, picture, _shifted(clip), clip.sample_rate)  # default: every 10 segments
    assert benchmark.times.tolist() == pytest.approx([2.4, 5.6])


# ------------------------------------------------------------------------------------------------
# Windows over any length, on the real Synchformer layout
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_synchformer(seeded):
    with torch.device("meta"):
        layout = [(k, tuple(v.shape)) for k, v in Synchformer(tiny()).state_dict().items()]
    return Synchformer.from_checkpoint(seeded.seeded_state_dict(layout, 91))


def test_sliding_windows_are_the_benchmark_windows_on_8_s(tiny_synchformer):
    generator = torch.Generator().manual_seed(0)
    visual, audio = torch.randn(2, 24, 8, 192, generator=generator), torch.randn(2, 24, 6, 192, generator=generator)
    curve = desync(tiny_synchformer, visual, audio)
    assert curve.offsets.shape == (2, 2) and curve.times.tolist() == pytest.approx([2.4, 5.6])
    for column, start in enumerate((0, 10)):
        logits = tiny_synchformer.offset_logits(visual[:, start:start + 14], audio[:, start:start + 14])
        torch.testing.assert_close(curve.logits[:, column], logits)
        assert torch.equal(curve.offsets[:, column], -OFFSET_GRID_SECONDS[logits.argmax(-1)])
    assert float(curve.desync.mean()) == pytest.approx(desync_from_features(tiny_synchformer, visual, audio))
    longer = desync(tiny_synchformer, visual[:1].repeat(1, 2, 1, 1), audio[:1].repeat(1, 2, 1, 1), stride=10)
    assert longer.times.tolist() == pytest.approx([2.4, 5.6, 8.8, 12.0, 13.28])  # the last ends at the end


class _WindowStartModel:
    """An offset head that answers with the class written in its window's first visual segment, so
    the offset reveals which window it was given."""
    offset_grid = OFFSET_GRID_SECONDS

    def offset_logits(self, visual, audio):
        return torch.nn.functional.one_hot(visual[:, 0, 0, 0].long(), len(OFFSET_GRID_SECONDS)).float()


def test_desync_from_features_scores_the_first_and_the_last_14_segments():
    visual, audio = torch.zeros(1, 24, 8, 4), torch.zeros(1, 24, 6, 4)
    visual[0, :, 0, 0] = torch.arange(24) % 21  # segment s answers class s: grid[s] = -2 + 0.2 s
    # The windows start at segments 0 and 10: |-2.0| and |-2 + 0.2 * 10| = 0, mean 1.0.
    assert desync_from_features(_WindowStartModel(), visual, audio) == pytest.approx(1.0)


def test_window_rules_and_short_clips(tiny_synchformer, stand_in):
    assert window_starts(24, 14) == [0, 10] and window_starts(14, 14) == [0] and window_starts(30, 14, 4) == [
        0, 4, 8, 12, 16]
    assert window_length(stand_in, 11) == 11  # the 3.84 s demo clips: one window of all their segments
    with pytest.raises(ValueError, match=r"at least 4\.80 s .* this clip has 11 segment\(s\), 3\.84 s"):
        window_length(tiny_synchformer, 11)
    with pytest.raises(ValueError, match="windows of exactly 14 segments"):
        tiny_synchformer.offset_logits(torch.zeros(1, 11, 8, 192), torch.zeros(1, 11, 6, 192))


# ------------------------------------------------------------------------------------------------
# Best take by sync
# ------------------------------------------------------------------------------------------------
def test_picking_never_returns_a_take_worse_than_the_first(stand_in, clip):
    picture = picture_features(stand_in, (clip.frames, float(clip.fps)))
    takes = _shifted(clip, (800, 0, -400, 0, 600))
    curve = measure_sync(stand_in, picture, takes, clip.sample_rate)
    assert curve.desync.tolist() == pytest.approx([0.8, 0.0, 0.4, 0.0, 0.6], abs=1e-6)
    assert rank_takes(curve) == [1, 3, 2, 4, 0]  # equal scores keep their order
    for shift in range(5):  # whichever take comes first, the pick is never worse than it
        order = torch.arange(5).roll(shift)
        rolled = SyncCurve(curve.offsets[order], curve.logits[order], curve.times, curve.window_seconds, curve.grid)
        best = rank_takes(rolled)[0]
        assert rolled.desync[best] <= rolled.desync[0] and float(rolled.desync[best]) == 0.0
    same = measure_sync(stand_in, picture, takes[[2, 2, 2]], clip.sample_rate)
    assert rank_takes(same) == [0, 1, 2]


# ------------------------------------------------------------------------------------------------
# The mux's offset repair
# ------------------------------------------------------------------------------------------------
def _click_time(path) -> float:
    waveform, rate = load_audio(path, 48000, channels=1)
    return float(waveform[0].abs().argmax()) / rate


def test_mux_offset_moves_the_sound_and_copies_the_picture(clip, tmp_path):
    source = write_video(clip.frames[:50], clip.fps, tmp_path / "source.mp4")  # 2 s, no sound
    click = torch.zeros(1, 2 * 48000)
    click[0, 48000:48000 + 48] = 0.9
    for offset_ms in (0, 250, -300):
        output = mux_audio(source, click, 48000, tmp_path / f"offset{offset_ms}.mp4", offset_ms=offset_ms)
        assert _click_time(output) == pytest.approx(1.0 + offset_ms / 1000, abs=0.01)
        assert [data for data, _ in packet_bytes(output)] == [data for data, _ in packet_bytes(source)]
    assert torch.equal(shift_audio(click, 48000, 250)[:, 12000:], click[:, :-12000])
    assert shift_audio(click, 48000, -5000).abs().max() == 0 and shift_audio(click, 48000, -5000).shape == click.shape


# ------------------------------------------------------------------------------------------------
# Where users meet it
# ------------------------------------------------------------------------------------------------
def test_eval_sync_scores_a_video_suggests_the_repair_and_the_repair_works(shifted_video, clip, tmp_path, capsys):
    report = tmp_path / "late.json"
    assert main(["eval-sync", str(shifted_video), "--synchformer", "demo", "--suggest", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "DeSync 0.40 s" in printed and "shift the sound by -400 ms" in printed
    scored = json.loads(report.read_text())["sources"]["own soundtrack"]
    assert scored["windows"] == [{"time": 2.4, "offset": 0.4}] and scored["suggested_shift_ms"] == -400
    waveform, rate = load_audio(shifted_video, None, channels=1)
    repaired = mux_audio(shifted_video, waveform, rate, tmp_path / "repaired.mp4", offset_ms=-400)
    folder = tmp_path / "takes"
    folder.mkdir()
    save_audio(folder / "a_true.wav", clip.audio, clip.sample_rate)
    save_audio(folder / "b_early.wav", shift_audio(clip.audio, clip.sample_rate, -800), clip.sample_rate)
    assert main(["eval-sync", str(repaired), "--synchformer", "demo"]) == 0
    assert "DeSync 0.00 s" in capsys.readouterr().out
    assert main(["eval-sync", str(shifted_video), str(folder), "--synchformer", "demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "a_true.wav: DeSync 0.00 s" in lines[1] and "b_early.wav: DeSync 0.80 s" in lines[2]
    assert "-0.8" in lines[2]
    with pytest.raises(SystemExit, match="give a VIDEO to score, or --data"):
        main(["eval-sync"])
    short = write_video(clip.frames[:60], clip.fps, tmp_path / "short.mp4", audio=clip.audio,
                        sample_rate=clip.sample_rate)
    with pytest.raises(SystemExit, match=r"needs at least 2\.88 s .* 6 segment\(s\), 2\.24 s"):
        main(["eval-sync", str(short), "--synchformer", "demo"])


def test_eval_sync_world_mode_adds_desync(tmp_path, capsys):
    from syncfoley.demo.world import write_dataset

    write_dataset(tmp_path / "clips", 2, seed=4, duration=4.8, size=(64, 64))
    late = tmp_path / "late"
    late.mkdir()
    for video in sorted((tmp_path / "clips").glob("*.mp4")):
        waveform, rate = load_audio(video, None, channels=1)
        save_audio(late / f"{video.stem}.wav", shift_audio(waveform, rate, 400), rate)
    report = tmp_path / "report.json"
    assert main(["eval-sync", "--data", str(tmp_path / "clips"), "--generated", f"late={late}", "--synchformer", "demo",
                 "--draws", "1", "--json", str(report), "--no-progress"]) == 0
    assert "DeSync s" in capsys.readouterr().out
    sources = json.loads(report.read_text())["sources"]
    assert sources["ground truth"]["desync"] == 0.0 and sources["late"]["desync"] == pytest.approx(0.4)
    assert sources["ground truth"]["onset"]["f1"] > 0.9  # the world mode's own numbers are still there


def test_sync_score_and_pick_best_take_nodes(shifted_video, clip, tmp_path):
    from syncfoley import NODE_CLASS_MAPPINGS
    from syncfoley.media import probe_video
    from syncfoley.nodes.common import FoleyVideo
    from syncfoley.nodes.host import configure

    configure(output_dir=tmp_path / "output")  # the previews (the host's settings are restored after the test)

    info = probe_video(shifted_video)
    video = FoleyVideo(str(shifted_video), float(info.nominal_fps), 0.0, float(info.duration))
    takes = _shifted(clip, (800, 0, -400))  # only the file's picture counts: 0.8 s late, in sync, 0.4 s early
    audio = {"waveform": takes, "sample_rate": clip.sample_rate}
    score = NODE_CLASS_MAPPINGS["SyncFoleySyncScore"]().score(audio, video, DemoSyncEncoder.create(), 3.2, 256, 96)
    desync_value, report, images, curve = score["result"]
    assert desync_value == pytest.approx(0.8) and images.shape == (3, 96, 256, 3) and score["ui"]["text"] == [report]
    assert "take 2: DeSync 0.00 s" in report and "shift the sound by -800 ms" in report
    plot = NODE_CLASS_MAPPINGS["SyncFoleySyncPlot"]().draw(audio, 256, 120, video=video, sync_curve=curve)["result"][0]
    assert plot.shape == (3, 120 + 96, 256, 3)  # the offset curve below the sync plot
    picked, scores, best = NODE_CLASS_MAPPINGS["SyncFoleyPickBestTake"]().pick(
        audio, video, DemoSyncEncoder.create(), "all, best first")["result"]
    assert torch.equal(picked["waveform"], takes[[1, 2, 0]]) and best == 0.0
    assert scores.splitlines()[0].startswith("1. take 2: DeSync 0.00 s")
    only, _, _ = NODE_CLASS_MAPPINGS["SyncFoleyPickBestTake"]().pick(audio, video, DemoSyncEncoder.create(),
                                                                      "best only")["result"]
    assert torch.equal(only["waveform"], takes[1:2])


def test_generate_picks_the_best_take_by_sync_and_writes_the_scores(tmp_path, capsys):
    from syncfoley.cli import build_parser
    from syncfoley.cli.generate import output_files

    out = tmp_path / "out" / "demo.mp4"
    assert main(["generate", "--out", str(out), "--steps", "2", "--seed", "5", "--takes", "2", "--pick", "sync",
                 "--offset-ms", "40", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    written = [out, out.with_name("demo_take2.mp4")]
    scores = [json.loads(path.with_name(path.stem + ".sync.json").read_text()) for path in written]
    assert [s["rank"] for s in scores] == [1, 2] and sorted(s["sampled_take"] for s in scores) == [1, 2]
    assert [s["desync"] for s in scores] == sorted(s["desync"] for s in scores) and "DeSync" in printed
    assert all(np.isfinite(s["soft_desync"]) and s["windows"] for s in scores)
    for path, score in zip(written, scores):  # and each video carries its own score in its metadata
        with av.open(str(path)) as container:
            assert json.loads(container.metadata["comment"]) == {"syncfoley_sync": score}
    for path in written:  # the score files are outputs too: never written over without --overwrite
        path.unlink()
        path.with_suffix(".wav").unlink()
    args = build_parser("generate").parse_args(["generate", "--out", str(out), "--takes", "2", "--pick", "sync"])
    with pytest.raises(FileExistsError, match="demo.sync.json"):
        output_files(args)
