"""`eval-sync --sweep`: the grid parsed into guidances, the paired bootstrap, and the command end to end."""
from __future__ import annotations

import json

import pytest

from syncfoley.cli import main
from syncfoley.demo.world import write_dataset
from syncfoley.evaluation.sweep import parse_grid, parse_seeds, source_name, summarize
from syncfoley.families.demo import DEMO
from syncfoley.sampling.guidance import CFG, SyncCFG


def test_grid_entries_become_guidances_with_the_models_defaults():
    entries = parse_grid("cfg; cfg:scale=6; sync:sync=1:anchor=static:interval=0.2-0.8; harmony:scale=1:sync=4.5; "
                         "sync", DEMO.defaults)
    assert [e.name for e in entries] == ["cfg 4.5", "cfg 6", "synccfg 4.5/1 static [0.2,0.8]", "harmony 1/4.5 shift",
                                         "synccfg 4.5/2 shift"]  # the demo's own sync scale and anchor
    assert entries[0].guidance == CFG(4.5)
    assert entries[2].guidance == SyncCFG(4.5, 1.0, "static", interval=(0.2, 0.8))
    assert entries[3].guidance == SyncCFG(1.0, 4.5, "shift", form="harmony")
    assert entries[4].guidance == SyncCFG(DEMO.defaults.cfg_scale, DEMO.defaults.sync_scale, DEMO.defaults.anchor)
    with pytest.raises(ValueError, match="kinds are cfg, sync, harmony"):
        parse_grid("cfg:sync=2", DEMO.defaults)
    with pytest.raises(ValueError, match="names a guidance twice"):
        parse_grid("cfg; cfg:scale=4.5", DEMO.defaults)
    with pytest.raises(ValueError, match="expected LOW-HIGH"):
        parse_grid("sync:interval=0.5", DEMO.defaults)
    with pytest.raises(ValueError, match="distinct integers"):
        parse_seeds("0,0")


def _report(counts: dict[str, list[list[tuple[int, int, int]]]], seeds=(0, 1)) -> dict:
    """An eval-sync report holding onset counts per guidance, clip and seed."""
    clips = len(next(iter(counts.values())))
    rows = [{} for _ in range(clips)]
    for name, per_clip in counts.items():
        for row, per_seed in zip(rows, per_clip):
            for seed, (matched, reference, estimated) in zip(seeds, per_seed):
                row[source_name(name, seed)] = {"onset": {"matched": matched, "reference": reference,
                                                          "estimated": estimated}, "av_align": 0.5}
    return {"per_clip": rows, "sources": {source_name(n, s): {} for n in counts for s in seeds}}


def test_pooled_f1_and_paired_difference():
    base = [[(2, 4, 4), (3, 4, 4)], [(1, 2, 2), (2, 2, 2)], [(0, 3, 1), (1, 3, 3)]]
    better = [[(m + 1, r, e) for m, r, e in clip] for clip in base]  # one more match on every clip and seed
    summary = summarize(_report({"base": base, "same": base, "better": better}), ["base", "same", "better"], [0, 1])
    # Pooled over clips and seeds: 2 * 9 matches / (18 references + 16 detections).
    assert summary["base"]["f1"] == pytest.approx(18 / 34)
    assert summary["base"]["f1_per_seed"] == pytest.approx([2 * 3 / 16, 2 * 6 / 18])
    low, high = summary["base"]["f1_ci95"]
    assert low < summary["base"]["f1"] < high
    # Paired: the same clips in every resample, so a copy of the baseline differs by exactly 0 ...
    assert summary["same"]["f1_minus_baseline"] == 0 and summary["same"]["f1_minus_baseline_ci95"] == [0, 0]
    # ... and a guidance better on every clip has its whole interval above 0.
    assert summary["better"]["f1_minus_baseline"] == pytest.approx(30 / 34 - 18 / 34)
    assert summary["better"]["f1_minus_baseline_ci95"][0] > 0
    assert "f1_minus_baseline" not in summary["base"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep_world")
    write_dataset(folder, count=2, seed=99, duration=1.6, size=(32, 32), continuous=True)
    return folder


def test_sweep_command_reports_intervals(world, tiny_models, tmp_path, capsys):
    report_path = tmp_path / "sweep.json"
    argv = ["eval-sync", "--data", str(world), "--models", str(tiny_models["dit"].parent), "--steps", "1",
            "--device", "cpu", "--precision", "fp32", "--sweep", "cfg; harmony:sync=2:interval=0.5-1",
            "--seeds", "3,4", "--json", str(report_path)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "onset F1 [95 % CI]" in table and "harmony 4.5/2 static [0.5,1]" in table
    report = json.loads(report_path.read_text())
    sweep = report["sweep"]
    assert sweep["baseline"] == "cfg 4.5" and sweep["seeds"] == [3, 4]
    assert list(sweep["summary"]) == ["cfg 4.5", "harmony 4.5/2 static [0.5,1]"]
    for name, summary in sweep["summary"].items():
        low, high = summary["f1_ci95"]
        assert 0 <= low <= summary["f1"] <= high <= 1 and len(summary["f1_per_seed"]) == 2
        assert (name == "cfg 4.5") != ("f1_minus_baseline_ci95" in summary)
    assert set(report["per_clip"][0]) >= {source_name("cfg 4.5", 3), source_name("harmony 4.5/2 static [0.5,1]", 4)}
    with pytest.raises(SystemExit, match="already exists"):
        main(argv)
