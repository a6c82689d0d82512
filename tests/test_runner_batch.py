"""Batches: 20 videos with two corrupt ones, resumption, CSV items, and the split across processes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from runner_fixtures import CALLS, REGISTRY, api_workflow, toy_env, write_video  # noqa: F401 (fixture)

from syncfoley.cli import main
from syncfoley.runner import Executor, Ledger, Workflow, batch_items, run_batch
from syncfoley.runner.batch import split_for_process

CORRUPT = ("clip_04.mp4", "clip_13.mp4")


@pytest.fixture
def videos(toy_env):
    folder = toy_env / "videos"
    folder.mkdir()
    for i in range(20):
        write_video(folder / f"clip_{i:02d}.mp4", shade=i)
    (folder / CORRUPT[0]).write_bytes((folder / CORRUPT[0]).read_bytes()[:120])  # truncated
    (folder / CORRUPT[1]).write_bytes(b"\x00garbage, not a video" * 40)
    (folder / "notes.txt").write_text("not a video")
    return folder


def batch(videos: Path, out: Path):
    items = batch_items(videos)
    return run_batch(Workflow(api_workflow("unset.mp4")), items, Executor(REGISTRY), out, REGISTRY, log=lambda line: None)


def test_batch_finishes_the_good_reports_the_bad_and_resumes(videos, toy_env):
    out = toy_env / "output"
    first = batch(videos, out)
    assert len(first.done) == 18 and first.skipped == []
    assert sorted(Path(i).name for i in first.failed) == list(CORRUPT)
    assert all("node 2 (ToyVideo) failed" in error for error in first.failed.values())
    assert CALLS["loader"] == 1 and CALLS["video"] == 20 and CALLS["save"] == 18  # the model loaded once
    assert sorted(p.name for p in out.glob("toy_clip_*_00001.json")) == sorted(
        f"toy_clip_{i:02d}_00001.json" for i in range(20) if f"clip_{i:02d}.mp4" not in CORRUPT)
    entries = [json.loads(line) for line in (out / "ledger-0.jsonl").read_text().splitlines()]
    assert [e["status"] for e in entries].count("done") == 18 and len(entries) == 20

    CALLS.clear()  # a new process: only the two missing items run (and fail again)
    second = batch(videos, out)
    assert len(second.skipped) == 18 and second.done == [] and len(second.failed) == 2
    assert CALLS["video"] == 2 and CALLS["save"] == 0

    for name in CORRUPT:  # fixed videos: a third run does just those
        write_video(videos / name)
    (out / "toy_clip_00_00001.json").unlink()  # a lost output is redone too
    CALLS.clear()
    third = batch(videos, out)
    assert sorted(Path(i).name for i in third.done) == ["clip_00.mp4", *CORRUPT] and not third.failed
    assert CALLS["video"] == 3 and CALLS["save"] == 3 and len(third.skipped) == 17


def test_batch_from_csv_with_prompt_and_other_columns(toy_env):
    folder = toy_env / "clips"
    folder.mkdir()
    write_video(folder / "a.mp4")
    write_video(folder / "b.mp4", shade=50)
    table = folder / "items.csv"
    table.write_text("video,prompt,steps,4.cfg\na.mp4,glass breaking,2,\nb.mp4,,3,1.5\na.mp4,thunder,,\n")
    items = batch_items(table)
    assert len({item.id for item in items}) == 3  # same video, other prompt: another item
    out = toy_env / "output"
    summary = run_batch(Workflow(api_workflow("x.mp4")), items, Executor(REGISTRY), out, REGISTRY, log=lambda line: None)
    assert len(summary.done) == 3
    results = [json.loads(Path(files[0]).read_text()) for files in summary.outputs.values()]
    assert [(r["text"], len(r["values"])) for r in results] == [("GLASS BREAKING", 5), ("RAIN ON A TIN ROOF", 5),
                                                                ("THUNDER", 5)]
    assert CALLS["video"] == 3 and CALLS["loader"] == 1 and CALLS["text"] == 3


def test_bad_csv_rows_fail_alone(toy_env):
    folder = toy_env / "clips"
    folder.mkdir()
    write_video(folder / "a.mp4")
    table = folder / "items.csv"
    table.write_text("video,steps\na.mp4,900\na.mp4,2\n")
    summary = run_batch(Workflow(api_workflow("x.mp4")), batch_items(table), Executor(REGISTRY), toy_env / "out",
                        REGISTRY, log=lambda line: None)
    assert len(summary.done) == 1 and "Value 900 bigger than max of 50" in next(iter(summary.failed.values()))


def test_split_between_processes_and_shared_resume(videos, toy_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)  # launcher env vars without accelerate: plain split
    items = batch_items(videos)
    shares = []
    for rank in range(3):
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("RANK", str(rank))
        shares.append(split_for_process(items))
    assert [len(s[0]) for s in shares] == [7, 7, 6] and [s[1] for s in shares] == [0, 1, 2]
    assert [i for share, _, _ in shares for i in share] == items
    monkeypatch.setenv("RANK", "1")
    out = toy_env / "output"
    summary = run_batch(Workflow(api_workflow("x.mp4")), items, Executor(REGISTRY), out, REGISTRY, log=lambda line: None)
    assert len(summary.done) + len(summary.failed) == 7 and (out / "ledger-1.jsonl").exists()
    monkeypatch.delenv("WORLD_SIZE")
    CALLS.clear()
    rest = batch(videos, out)  # one process now: reads rank 1's ledger, does the other 13 (+ rank 1's failures)
    assert len(rest.skipped) == len(summary.done) and CALLS["video"] == 20 - len(summary.done)


def test_ledger_ignores_a_torn_last_line(tmp_path):
    ledger = Ledger(tmp_path, rank=0)
    output = tmp_path / "o.json"
    output.write_text("{}")
    ledger.append({"id": "a", "status": "done", "outputs": [str(output)]})
    with open(ledger.path, "a") as f:
        f.write('{"id": "b", "status": "do')
    assert set(ledger.finished()) == {"a"}


def test_cli_batch_exit_code_and_summary(videos, toy_env, tmp_path, capsys):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(api_workflow("unset.mp4")))
    with pytest.raises(SystemExit) as exited:
        main(["run", str(path), "--batch", str(videos), "--output", str(tmp_path / "out"), "--no-progress",
              "--json", str(tmp_path / "s.json")])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "batch: 18 done, 0 done before, 2 failed" in err and "FAILED" in err and CORRUPT[1] in err
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["status"] == "failed" and len(report["done"]) == 18


def test_a_rerun_with_other_settings_regenerates_and_force_runs_all(toy_env):
    from syncfoley.runner import Override

    folder = toy_env / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_video(folder / name)
    out, items = toy_env / "output", batch_items(folder)

    def run(*overrides, **options):
        CALLS.clear()
        return run_batch(Workflow(api_workflow("x.mp4")), items, Executor(REGISTRY), out, REGISTRY, list(overrides),
                         log=lambda line: None, **options)

    assert len(run().done) == 2
    assert len(run().skipped) == 2 and CALLS["sampler"] == 0  # nothing changed: nothing to do
    changed = run(Override("steps", 2))
    assert len(changed.done) == 2 and CALLS["sampler"] == 2  # other settings: other results
    assert len(run(Override("steps", 2)).skipped) == 2
    assert len(run(Override("steps", 2), Override("filename_prefix", "renamed")).skipped) == 2  # names only
    write_video(folder / "b.mp4", shade=90)  # a video replaced under the same name
    assert [Path(i).name for i in run(Override("steps", 2)).done] == ["b.mp4"]
    forced = run(Override("steps", 2), force=True)
    assert len(forced.done) == 2 and forced.skipped == [] and CALLS["sampler"] == 2


def test_the_result_key_follows_model_files_named_by_the_graph(toy_env, tmp_path):
    from syncfoley.runner.batch import locate_local_file, result_key

    models = tmp_path / "models" / "foley"
    models.mkdir(parents=True)
    checkpoint = models / "tiny-a.safetensors"
    checkpoint.write_bytes(b"first")
    from syncfoley.nodes.host import configure

    configure(models_dir=tmp_path / "models")
    prompt = api_workflow("x.mp4")
    assert locate_local_file("tiny-a.safetensors") == checkpoint.resolve()
    before = result_key(prompt, locate_local_file)
    checkpoint.write_bytes(b"second, longer")  # the user swapped in another model file
    assert result_key(prompt, locate_local_file) != before
    assert locate_local_file("no such file.mp4") is None and locate_local_file("x" * 5000) is None
