"""End-to-end timing of one clip: text and video encoding, sampling, VAE decode and mux.

Reports seconds per stage, seconds per sampling step, the real-time factor (seconds of compute per
second of audio: below 1 is faster than real time), the working memory the run created and the
process's resident-memory high-water mark.
"""
from __future__ import annotations

import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ..media import mux_audio
from ..pipeline import FoleyPipeline
from ..sampling.generate import SamplingOptions
from ..sampling.guidance import SyncCFG
from .memory import track_peak_memory


@contextmanager
def _timed(timings: dict, name: str, device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    yield
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    timings[name] = time.perf_counter() - start


def rss_peak_mib() -> float | None:
    """The process's resident-memory high-water mark so far (Linux/macOS), in MiB."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def synthetic_video(folder: Path, seconds: float, size: int = 224, seed: int = 7) -> Path:
    """A clip of the synthetic world to run on when no video is given."""
    from ..demo.world import write_clip, generate_clip

    clip = generate_clip(seed, duration=seconds, fps=25, size=(size, size))
    return write_clip(clip, folder / "bench_clip.mp4")


def bench_end_to_end(pipeline: FoleyPipeline, video: Path, prompt: str, guidance, options: SamplingOptions,
                     output: Path) -> dict:
    timings: dict[str, float] = {}
    device = pipeline.device
    with track_peak_memory(device) as peak:
        with _timed(timings, "text_s", device):
            text = pipeline.encode_text(prompt)
        with _timed(timings, "video_s", device):
            visual = pipeline.encode_video(video, static_anchor=isinstance(guidance, SyncCFG))
        with _timed(timings, "sampling_s", device):
            latents = pipeline.sample(text, visual, guidance, options)
        with _timed(timings, "decode_s", device):
            waveform, rate = pipeline.decode(latents, visual.duration)
        with _timed(timings, "mux_s", device):
            mux_audio(video, waveform[0], rate, output, overwrite=True)
    total = sum(timings.values())
    return {
        **timings,
        "steps": options.steps,
        "step_s": timings["sampling_s"] / options.steps,
        "total_s": total,
        "audio_s": visual.duration,
        "rtf": total / visual.duration,
        "working_mib": peak.peak_mib,
        "rss_peak_mib": rss_peak_mib(),
        "device_peak_mib": None if peak.device_peak_bytes is None else peak.device_peak_bytes / 2**20,
    }


def run_e2e(models, args) -> dict:
    from ..cli.options import guidance_from

    guidance = guidance_from(args.guidance, models.model.defaults, args.cfg_scale, args.sync_scale)
    options = SamplingOptions(steps=args.steps, sampler=args.sampler, seed=0,
                              batched_guidance=not args.sequential).resolved(models.model)
    pipeline = FoleyPipeline(models, device=args.device, offload=args.offload, gpu_blocks=args.gpu_blocks)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        video = Path(args.video) if args.video else synthetic_video(scratch, args.seconds)
        return bench_end_to_end(pipeline, video, args.prompt, guidance, options, scratch / "out.mp4")
