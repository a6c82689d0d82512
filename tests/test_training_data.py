"""Training data: discovery and captions, clip cutting, the feature cache, and the batch stream."""
from __future__ import annotations

import json

import pytest
import torch
from media_fixtures import make_video
from test_training_support import CLIP_SECONDS, prepared

from syncfoley.media import load_audio
from syncfoley.pipeline import encode_text, encode_video
from syncfoley.training.config import TrainConfig
from syncfoley.training.data import BatchStream, ClipDataset, clip_starts, discover_videos, prepare_cache, read_captions
from syncfoley.training.run import ensure_cache


@pytest.fixture(scope="module")
def data(tiny_models, tmp_path_factory):
    return prepared(tiny_models, tmp_path_factory.mktemp("training"))


def test_captions_come_from_the_table_then_the_sidecar_else_are_empty(data):
    items = {item.path.name: item.caption for item in discover_videos(data["videos"])}
    assert items == {"clip0.mp4": "a dog barks", "clip1.mp4": "glass shatters", "clip2.mp4": ""}


def test_jsonl_captions_match_relative_paths_in_sub_folders(tmp_path):
    (tmp_path / "set" / "a").mkdir(parents=True)
    for name in ("a/x.mp4", "y.MOV"):
        (tmp_path / "set" / name).write_bytes(b"")
    rows = [{"path": "a/x.mp4", "text": "rain"}, {"video": "y.MOV", "prompt": "wind"}]
    (tmp_path / "set" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert [(i.path.name, i.caption) for i in discover_videos(tmp_path / "set")] == [("x.mp4", "rain"), ("y.MOV", "wind")]
    (tmp_path / "bad.csv").write_text("name,words\nx.mp4,rain\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv, row 1: needs a file column \(file/path/video/file_name\)"):
        read_captions(tmp_path / "bad.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no videos"):
        discover_videos(tmp_path / "empty")


def test_clips_are_whole_and_evenly_spaced():
    assert clip_starts(2.0, 1.0, 0.5) == [0.0, 0.5, 1.0]
    assert clip_starts(2.0, 1.0, 1.0) == [0.0, 1.0]
    assert clip_starts(10.0, 8.0, 8.0) == [0.0]
    assert clip_starts(7.9, 8.0, 8.0) == []
    assert clip_starts(100.0, 1.0, 1.0, limit=3) == [0.0, 1.0, 2.0]


def test_the_cache_holds_what_the_inference_encoders_give_for_each_clip(data):
    dataset = ClipDataset(data["cache"])
    assert len(dataset) == 9 and data["index"]["skipped"] == []
    clip = next(i for i, c in enumerate(dataset.clips) if c["video"].endswith("clip0.mp4") and c["start"] == 0.5)
    item = dataset[clip]
    assert {k: tuple(v.shape) for k, v in item.items()} == {
        "latent_mean": (16, 50), "latent_logvar": (16, 50), "text": (77, 32), "clip": (8, 32), "sync": (16, 192),
        "repa": (50, 64)}
    encoders, video = data["encoders"], data["videos"] / "clip0.mp4"
    wav, rate = load_audio(video, 48000, channels=1)
    mean, _ = encoders.vae.encode(wav[None, :, 24000:72000])
    torch.testing.assert_close(item["latent_mean"], mean[0], rtol=1e-5, atol=1e-5)
    visual = encode_video(video, encoders.image_encoder, encoders.sync_encoder, start=0.5, max_duration=CLIP_SECONDS)
    torch.testing.assert_close(item["clip"], visual.clip[0])
    torch.testing.assert_close(item["sync"], visual.sync[0])
    # The caption's own tokens are what inference computes; the rest is CLAP padding up to 77.
    alone = encode_text(encoders.text_encoder, "a dog barks", "a dog barks").positive[0]
    torch.testing.assert_close(item["text"][: alone.shape[0]], alone, rtol=1e-4, atol=1e-5)
    empty = encode_text(encoders.text_encoder, "", "").positive[0]
    torch.testing.assert_close(dataset.null_text[: empty.shape[0]], empty, rtol=1e-4, atol=1e-5)


def test_silent_and_short_videos_are_skipped_with_the_reason(data, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    make_video(folder / "silent.mp4", fps=25, count=50, size=(32, 32))
    make_video(folder / "short.mp4", fps=25, count=20, size=(32, 32), audio_seconds=0.8)
    make_video(folder / "good.mp4", fps=25, count=30, size=(32, 32), audio_seconds=1.2)
    index = prepare_cache(discover_videos(folder), data["encoders"], tmp_path / "cache", CLIP_SECONDS)
    assert [c["video"].rsplit("/", 1)[1] for c in index["clips"]] == ["good.mp4"]
    reasons = {s["video"].rsplit("/", 1)[1]: s["reason"] for s in index["skipped"]}
    assert "has no audio stream" in reasons["silent.mp4"] and "shorter than one 1 s clip" in reasons["short.mp4"]
    (folder / "good.mp4").unlink()
    with pytest.raises(ValueError, match="no training clip of 1 s could be cut from 2 video"):
        prepare_cache(discover_videos(folder), data["encoders"], tmp_path / "cache2", CLIP_SECONDS)


def test_the_cache_is_reused_until_the_videos_or_settings_change(data, tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    make_video(folder / "a.mp4", fps=25, count=25, size=(32, 32), audio_seconds=1.0)
    config = TrainConfig(output=str(tmp_path / "run"))
    config.data.videos, config.data.clip_seconds = str(folder), CLIP_SECONDS
    config.validate()
    built = []
    factory = lambda: built.append(1) or data["encoders"]  # noqa: E731
    ensure_cache(config, encoders=factory)
    ensure_cache(config, encoders=factory)
    assert len(built) == 1
    (folder / "a.txt").write_text("thunder", encoding="utf-8")
    index = ensure_cache(config, encoders=factory)
    assert len(built) == 2 and index["clips"][0]["caption"] == "thunder"


def test_batches_are_seeded_permutations_split_across_processes():
    single = BatchStream(size=10, batch_size=2, seed=3)
    first_epoch = [i for k in range(5) for i in single.batch(k)]
    assert sorted(first_epoch) == list(range(10)) and first_epoch != list(range(10))
    assert sorted(i for k in range(5, 10) for i in single.batch(k)) == list(range(10))
    assert BatchStream(10, 2, seed=3).batch(7) == single.batch(7)  # depends on the position only
    ranks = [BatchStream(10, 2, seed=3, rank=r, world=2) for r in range(2)]
    assert [ranks[k % 2].batch(k // 2) for k in range(6)] == [single.batch(k) for k in range(6)]
