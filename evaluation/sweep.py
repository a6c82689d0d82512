"""`eval-sync --data DIR --sweep [GRID]`: CFG against SyncCFG over a grid, with confidence intervals.

Every guidance of the grid samples every clip with every seed at the same number of steps (the seeds
run as one batch of takes: take k of seed s is seed s + k). Scores are eval-sync's (`sync_eval`).

Statistics: the clip is the unit of resampling. Per guidance, a clip's onset counts (matches,
true onsets, detected onsets) are summed over its seeds, and the pooled F1 over clips,
`2 sum(matched) / (sum(reference) + sum(estimated))`, is the headline (the number eval-sync reports).
Its 95 % interval is the percentile bootstrap over clips (clips drawn with replacement, seeds kept
with their clip, so seed-to-seed variation is inside every resample). The difference to the
baseline (the grid's first entry) is paired: the same resampled clips, same seeds, for both.
AV-Align is the mean over clips of the per-clip mean over seeds, with the same bootstrap.

GRID: entries separated by ';', each `KIND[:key=value...]`:
  cfg:scale=4.5
  sync:scale=4.5:sync=1:anchor=static|shift:interval=0.2-0.8    (SyncCFG, "add" form)
  harmony:scale=1:sync=4.5:anchor=static                         (SyncCFG, the anchor as the base)
Scales and the anchor not given are the model's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

DEFAULT_GRID = ("cfg; cfg:scale=3; cfg:scale=6; sync:sync=0.5:anchor=static; sync:sync=1:anchor=static; "
                "sync:sync=2:anchor=static; sync:sync=1:anchor=shift; sync:sync=1:anchor=static:interval=0.2-0.8; "
                "sync:sync=1:anchor=static:interval=0.6-1; harmony:sync=3:anchor=static; "
                "harmony:scale=1:sync=4.5:anchor=static; harmony:sync=0:anchor=static")  # the last: CFG whose condition is the static video (how much motion matters)
RESAMPLES = 10000


@dataclass(frozen=True)
class SweepEntry:
    name: str
    guidance: object  # CFG or SyncCFG


def parse_grid(text: str, defaults) -> list[SweepEntry]:
    """The guidances of a GRID string (module docstring), with the model's `defaults` for missing scales."""
    from ..sampling.guidance import CFG, SyncCFG

    entries = []
    for spec in (part.strip() for part in text.split(";")):
        if not spec:
            continue
        kind, *pairs = spec.split(":")
        values = {}
        for pair in pairs:
            key, separator, value = pair.partition("=")
            if not separator:
                raise ValueError(f"grid entry '{spec}': expected key=value, got '{pair}'")
            values[key.strip()] = value.strip()
        allowed = {"cfg": {"scale"}}.get(kind, {"scale", "sync", "anchor", "interval"})
        if kind not in ("cfg", "sync", "harmony") or set(values) - allowed:
            raise ValueError(f"grid entry '{spec}': kinds are cfg, sync, harmony; keys {', '.join(sorted(allowed))}")
        scale = float(values.get("scale", defaults.cfg_scale))
        if kind == "cfg":
            entries.append(SweepEntry(f"cfg {scale:g}", CFG(scale)))
            continue
        sync = float(values.get("sync", defaults.sync_scale))
        anchor = values.get("anchor", defaults.anchor)
        interval = parse_interval(values["interval"]) if "interval" in values else None
        form = "add" if kind == "sync" else "harmony"
        name = f"{'synccfg' if kind == 'sync' else 'harmony'} {scale:g}/{sync:g} {anchor}"
        name += f" [{interval[0]:g},{interval[1]:g}]" if interval else ""
        entries.append(SweepEntry(name, SyncCFG(scale, sync, anchor, form=form, interval=interval)))
    if not entries:
        raise ValueError("the sweep grid is empty")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"the sweep grid names a guidance twice: {names}")
    return entries


def parse_interval(text: str) -> tuple[float, float]:
    low, separator, high = text.partition("-")
    try:
        return float(low), float(high)
    except ValueError:
        raise ValueError(f"interval '{text}': expected LOW-HIGH sigmas, e.g. 0.2-0.8 (1 = noise)") from None


def parse_seeds(text: str) -> list[int]:
    seeds = [int(s) for s in text.split(",") if s.strip()]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: expected distinct integers like 0,1,2, got {text!r}")
    return seeds


def takes_sources(pipeline, entries: list[SweepEntry], seeds: list[int], steps: int | None) -> dict[str, Callable]:
    """A source per (guidance, seed). Each guidance samples a clip once, all seeds as one batch of takes
    where the seeds are consecutive; the clip's features are encoded once for every guidance."""
    from ..sampling.generate import SamplingOptions

    consecutive = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    runs = [SamplingOptions(steps=steps, seed=seeds[0], takes=len(seeds))] if consecutive else \
        [SamplingOptions(steps=steps, seed=s) for s in seeds]
    cache: dict = {"clip": None}

    def waveforms(clip, entry: SweepEntry):
        if cache["clip"] != clip.stem:
            cache.clear()
            cache.update(clip=clip.stem, features=(pipeline.encode_text(clip.caption),
                                                   pipeline.encode_video(str(clip.video), static_anchor=True)))
        if entry.name not in cache:
            text, visual = cache["features"]
            latents = [pipeline.sample(text, visual, entry.guidance, options) for options in runs]
            cache[entry.name] = pipeline.decode(_cat(latents), visual.duration)
        return cache[entry.name]

    def source(entry: SweepEntry, take: int):
        def read(clip):
            waveform, rate = waveforms(clip, entry)
            return waveform[take].float().cpu(), rate
        return read

    return {source_name(e.name, s): source(e, k) for e in entries for k, s in enumerate(seeds)}


def _cat(latents):
    import torch

    return latents[0] if len(latents) == 1 else torch.cat(latents)


def source_name(entry: str, seed: int) -> str:
    return f"{entry} | seed {seed}"


def _interval(samples: np.ndarray) -> list[float]:
    return [float(v) for v in np.nanpercentile(samples, [2.5, 97.5])]


def summarize(report: dict, entries: list[str], seeds: list[int], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Per guidance: pooled onset F1 with its bootstrap interval, the paired difference to `entries[0]`,
    per-seed F1, AV-Align (and DeSync where the report has it). See the module docstring."""
    rows = report["per_clip"]
    clips = len(rows)
    draw = np.random.default_rng(seed).integers(0, clips, size=(resamples, clips))

    def counts(entry: str) -> np.ndarray:  # [clips, seeds, (matched, reference, estimated)]
        return np.array([[[row[source_name(entry, s)]["onset"][k] for k in ("matched", "reference", "estimated")]
                          for s in seeds] for row in rows], dtype=np.float64)

    def pooled(c: np.ndarray) -> float:
        return float(2 * c[..., 0].sum() / max(1.0, c[..., 1].sum() + c[..., 2].sum()))

    def boot_f1(c: np.ndarray) -> np.ndarray:
        per_clip = c.sum(1)  # seeds stay with their clip
        sums = per_clip[draw].sum(1)
        return 2 * sums[:, 0] / np.maximum(1.0, sums[:, 1] + sums[:, 2])

    base = counts(entries[0])
    base_boot = boot_f1(base)
    summary = {}
    for entry in entries:
        c = counts(entry)
        boot = boot_f1(c)
        av = np.array([[row[source_name(entry, s)]["av_align"] for s in seeds] for row in rows]).mean(1)
        result = {"f1": pooled(c), "f1_ci95": _interval(boot),
                  "f1_per_seed": [pooled(c[:, i]) for i in range(len(seeds))],
                  "precision": float(c[..., 0].sum() / max(1.0, c[..., 2].sum())),
                  "recall": float(c[..., 0].sum() / max(1.0, c[..., 1].sum())),
                  "av_align": float(av.mean()), "av_align_ci95": _interval(av[draw].mean(1))}
        if entry != entries[0]:
            result["f1_minus_baseline"] = pooled(c) - pooled(base)
            result["f1_minus_baseline_ci95"] = _interval(boot - base_boot)
        sources = [report["sources"][source_name(entry, s)] for s in seeds]
        if all(s.get("desync") is not None for s in sources):
            result["desync"] = float(np.mean([s["desync"] for s in sources]))
        summary[entry] = result
    return summary


def run_sweep(pipeline, clips, entries: list[SweepEntry], seeds: list[int], steps: int | None, evaluate_kwargs: dict,
              ground_truth: bool = True) -> dict:
    """Score every guidance of `entries` on `clips` over `seeds`; the eval-sync report with a "sweep" part."""
    from .sync_eval import evaluate, ground_truth_source

    sources = {"ground truth": ground_truth_source} if ground_truth else {}
    sources.update(takes_sources(pipeline, entries, seeds, steps))
    started = time.perf_counter()
    report = evaluate(clips, sources, **evaluate_kwargs)
    names = [e.name for e in entries]
    report["sweep"] = {"baseline": names[0], "seeds": seeds, "guidance": {e.name: repr(e.guidance) for e in entries},
                       "statistics": "pooled onset F1 (sums over clips and seeds); 95 % percentile bootstrap over "
                                     f"clips ({RESAMPLES} resamples, seeds kept with their clip); differences "
                                     "paired on the same clips and seeds",
                       "summary": summarize(report, names, seeds), "seconds": round(time.perf_counter() - started, 1)}
    return report


def format_sweep(report: dict) -> str:
    sweep = report["sweep"]
    header = ["guidance", "onset F1 [95 % CI]", f"- {sweep['baseline']} [95 % CI]", "F1 per seed", "AV-Align [95 % CI]"]
    with_desync = any("desync" in s for s in sweep["summary"].values())
    header += ["DeSync s"] if with_desync else []
    rows = []
    for name, s in sweep["summary"].items():
        low, high = s["f1_ci95"]
        diff = "-" if "f1_minus_baseline" not in s else \
            f"{s['f1_minus_baseline']:+.3f} [{s['f1_minus_baseline_ci95'][0]:+.3f}, {s['f1_minus_baseline_ci95'][1]:+.3f}]"
        rows.append([name, f"{s['f1']:.3f} [{low:.3f}, {high:.3f}]", diff,
                     " ".join(f"{v:.3f}" for v in s["f1_per_seed"]),
                     f"{s['av_align']:.3f} [{s['av_align_ci95'][0]:.3f}, {s['av_align_ci95'][1]:.3f}]"])
        if with_desync:
            rows[-1].append(f"{s['desync']:.3f}" if "desync" in s else "-")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    truth = report["sources"].get("ground truth")
    return "\n".join([
        f"SyncCFG sweep: {report['clips']} clips x seeds {','.join(map(str, sweep['seeds']))}, "
        f"{sweep['seconds']:g} s; {sweep['statistics']}",
        line(header), line(["-" * w for w in widths]), *(line(r) for r in rows),
        *([f"ground truth: onset F1 {truth['onset']['f1']:.3f}, AV-Align {truth['av_align']:.3f}"] if truth else []),
    ])
