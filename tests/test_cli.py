"""The command line as a user meets it: nothing of theirs overwritten, progress where they wait, fast
help and light imports, outputs named so repeated runs do not collide."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import av
import pytest

from syncfoley.cli import main
from syncfoley.cli.generate import shorten

FAST = ["--steps", "2", "--seed", "3"]


def audio_seconds(path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


def as_terminal(monkeypatch):
    """stderr (pytest's capture, by now) as a terminal, where progress bars are drawn."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)


def test_generate_never_writes_over_its_input_video(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    assert main(["generate", "--out", str(clip), *FAST]) == 0
    original = clip.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["generate", str(clip), "--out", str(clip), *FAST, *extra]) == 1
        assert "is the input video" in capsys.readouterr().err
    assert clip.read_bytes() == original


def test_generate_refuses_an_existing_output_unless_asked(tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert main(["generate", "--out", str(out), *FAST]) == 0
    first = out.read_bytes()
    assert main(["generate", "--out", str(out), *FAST, "--seed", "4"]) == 1
    err = capsys.readouterr().err
    assert "already exists; pass --overwrite" in err and out.read_bytes() == first
    assert main(["generate", "--out", str(out), *FAST, "--seed", "4", "--overwrite"]) == 0
    assert out.read_bytes() != first and audio_seconds(out) == pytest.approx(3.84, abs=0.05)


def test_generate_numbers_its_outputs_so_runs_do_not_collide(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["generate", *FAST, "--takes", "2"]) == 0
    written = sorted(p.name for p in (tmp_path / "output").iterdir())
    assert written == ["demo_00001.mp4", "demo_00001.wav", "demo_00001_input.json", "demo_00001_input.mp4",
                       "demo_00001_input.txt", "demo_00001_take2.mp4", "demo_00001_take2.wav",
                       "demo_00002.mp4", "demo_00002.wav", "demo_00002_input.json", "demo_00002_input.mp4",
                       "demo_00002_input.txt", "demo_00002_take2.mp4", "demo_00002_take2.wav"]
    video = tmp_path / "output" / "demo_00001_input.mp4"
    assert main(["generate", str(video), *FAST]) == 0  # named after the user's video
    assert (tmp_path / "output" / "demo_00001_input_foley_00001.mp4").is_file()


def test_generate_shows_progress_with_time_left_on_a_terminal_only(tmp_path, capsys, monkeypatch):
    assert main(["generate", "--out", str(tmp_path / "a.mp4"), *FAST]) == 0
    piped = capsys.readouterr()
    assert "sampling" not in piped.err and "wrote" in piped.out
    as_terminal(monkeypatch)
    assert main(["generate", "--out", str(tmp_path / "b.mp4"), *FAST]) == 0
    err = capsys.readouterr().err
    for stage in ("video", "sampling", "decoding"):
        assert stage in err
    assert "2/2" in err and "<" in err  # steps done of the total, with tqdm's elapsed<remaining


def test_long_prompts_are_shortened_when_echoed(tmp_path, capsys):
    prompt = "glass " * 200
    assert main(["generate", "--out", str(tmp_path / "a.mp4"), *FAST, "--prompt", prompt]) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert len(summary) < 200 and "glass glass" in summary and "…" in summary
    assert shorten("a  b\nc") == "a b c"


def test_world_and_eval_sync_show_progress_on_a_terminal(tmp_path, capsys, monkeypatch):
    as_terminal(monkeypatch)
    main(["world", str(tmp_path / "clips"), "--count", "2", "--duration", "1.0", "--size", "32x32"])
    assert "clips: 100%" in capsys.readouterr().err
    main(["eval-sync", "--data", str(tmp_path / "clips"), "--draws", "1"])
    captured = capsys.readouterr()
    assert "2/2" in captured.err and "report:" in captured.out


def test_eval_sync_reports_are_numbered_and_never_overwritten(tmp_path, capsys):
    main(["world", str(tmp_path / "clips"), "--count", "1", "--duration", "1.0", "--size", "32x32"])
    for _ in range(2):
        main(["eval-sync", "--data", str(tmp_path / "clips"), "--draws", "1"])
    assert sorted(p.name for p in (tmp_path / "clips").glob("sync_eval*.json")) == [
        "sync_eval_00001.json", "sync_eval_00002.json"]
    report = tmp_path / "mine.json"
    report.write_text("{}")
    with pytest.raises(SystemExit, match="already exists; pass --overwrite"):
        main(["eval-sync", "--data", str(tmp_path / "clips"), "--draws", "1", "--json", str(report)])
    assert report.read_text() == "{}"
    main(["eval-sync", "--data", str(tmp_path / "clips"), "--draws", "1", "--json", str(report), "--overwrite"])
    assert "sources" in json.loads(report.read_text())


def test_too_short_video_is_refused_before_any_encoding_and_without_warnings(tmp_path):
    import torch

    from syncfoley.media import write_video
    from syncfoley.pipeline import FoleyModels, FoleyPipeline

    short = write_video(torch.rand(2, 32, 32, 3), 25, tmp_path / "short.mp4")
    pipeline = FoleyPipeline(FoleyModels.from_folder("demo"), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"gives 0\.08 s of video .* at least 0\.64 s"):
            pipeline.encode_video(short)


def test_bench_e2e_reports_real_time_factor_and_memory_with_a_legend(tmp_path, capsys):
    out = tmp_path / "e2e.json"
    main(["bench", "e2e", "--models", "demo", "--steps", "2", "--seconds", "2.56", "--device", "cpu",
          "--json", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["rtf"] == pytest.approx(row["total_s"] / row["audio_s"])
    assert row["rss_peak_mib"] >= row["working_mib"] > 0
    printed = capsys.readouterr().out
    assert "rtf: real-time factor" in printed and "rss_peak_mib:" in printed
    with pytest.raises(SystemExit, match="already exists"):
        main(["bench", "e2e", "--models", "demo", "--json", str(out)])


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout


def test_library_imports_stay_light():
    loaded = _python("import sys, syncfoley.sampling.samplers, syncfoley.models.dit; "
                     "print(sorted(m for m in sys.modules if m == 'av' or m.startswith(('syncfoley.nodes', "
                     "'syncfoley.media', 'syncfoley.pipeline', 'transformers'))))")
    assert loaded.strip() == "[]"


def test_help_lists_every_command_without_importing_torch():
    from syncfoley.cli import COMMANDS

    out = _python("import sys\nfrom syncfoley.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
                  "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')")
    assert "torch not loaded" in out
    flat = " ".join(out.split())
    for name, (_, help_line) in COMMANDS.items():
        assert f"{name} {help_line[:20]}" in flat


def test_the_pack_builds_its_node_mappings_on_first_access():
    out = _python("import sys, syncfoley\nprint('syncfoley.nodes' in sys.modules)\n"
                  "print(len(syncfoley.NODE_CLASS_MAPPINGS) > 10, 'syncfoley.nodes' in sys.modules)\n"
                  "print(hasattr(syncfoley, 'WEB_DIRECTORY_NOT_THERE'))")
    assert out.split() == ["False", "True", "True", "False"]
