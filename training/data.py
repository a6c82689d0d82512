"""Training data: a folder of videos, cut into fixed-length clips, encoded once into a feature cache.

Captions come from a CSV/JSONL file (a file column `file`/`path`/`video`, a text column
`caption`/`text`/`prompt`; the file named by path relative to the folder or by bare name), else from a
sidecar `<video>.txt`, else are empty. Each clip of `clip_seconds` (starts every `stride` seconds)
is encoded with the family's inference encoders — the VAE posterior of its audio (DAC-VAE, or MMAudio's
mel VAE through `MelCodec.encode`), the text encoder's tokens of its caption (CLAP, or CLIP's 77),
frame and Synchformer features of its frames (SigLIP2 or CLIP at 8 fps), and the REPA target
features of its audio — and
written to safetensors shards of `SHARD_CLIPS` clips with an `index.json`, so training never runs an
encoder. The index records what the cache was built from; a changed folder or setting rebuilds it.

Text tokens are padded to the DiT's 77 text tokens with the CLAP pad-token outputs (the caption is
encoded beside a long filler, so the padding is what a longer prompt in the same batch would give at
inference; CLIP pads every prompt to 77 on its own). One empty-prompt encoding is cached too:
HunyuanVideo-Foley's text dropout replaces a caption with it (MMAudio's uses its stored empty text).

Lengths follow each family's arithmetic (`clip_layout`): the DAC-VAE's 50 latents per second; MMAudio
rounds its latents up, as released (`ceil(seconds * rate / hop)`), so its audio window can pass the
clip's end by less than one latent, and is padded with silence where the audio ends there.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..media import MediaError, load_audio, probe_video
from ..models.dit_config import FoleyDiTConfig
from ..models.mmaudio_config import MMAudioConfig

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
CAPTION_FILES = ("captions.csv", "captions.jsonl", "metadata.csv", "metadata.jsonl")
FILE_COLUMNS = ("file", "path", "video", "file_name")
TEXT_COLUMNS = ("caption", "text", "prompt")
SHARD_CLIPS = 64
AUDIO_BATCH = 8  # clips per VAE / REPA encoder call
INDEX_VERSION = 1
_FILLER = " ".join(["a"] * 200)  # longer than any text limit: pads a caption to the full length
RATES = FoleyDiTConfig()  # the encoders' rates tie token counts to seconds (the same for every size)
MMAUDIO_RATES = MMAudioConfig()  # visual token counts of MMAudio (the same for every size)


@dataclass(frozen=True)
class ClipLayout:
    """What one clip of `seconds` becomes: audio samples encoded, latents kept, frame and sync tokens."""

    family: str
    samples: int
    latents: int
    clip: int
    sync: int
    padding: int  # samples of silence allowed past the audio's end (MMAudio's rounded-up latents)


def clip_layout(vae, seconds: float) -> ClipLayout:
    """The clip layout of the family the VAE belongs to (MMAudio's mel codec, else the DAC-VAE's)."""
    from ..models.mel_codec import MelCodec

    rate, hop = vae.sample_rate, vae.hop_length
    if isinstance(vae, MelCodec):
        latents = math.ceil(seconds * rate / hop - 1e-9)
        return ClipLayout("mmaudio", latents * hop, latents, MMAUDIO_RATES.clip_length(seconds),
                          MMAUDIO_RATES.sync_length(seconds), latents * hop - round(seconds * rate))
    return ClipLayout("hunyuanvideo-foley", round(seconds * rate), round(seconds * rate / hop),
                      RATES.clip_length(seconds), RATES.sync_length(seconds), 0)


@dataclass(frozen=True)
class VideoItem:
    path: Path
    caption: str


def read_captions(path: str | os.PathLike) -> dict[str, str]:
    """{file as written: caption} from a CSV (header row) or JSONL caption file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file '{path}' not found")
    if path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    captions = {}
    for number, row in enumerate(rows, 1):
        file_key = next((k for k in FILE_COLUMNS if k in row), None)
        text_key = next((k for k in TEXT_COLUMNS if k in row), None)
        if file_key is None or text_key is None:
            raise ValueError(f"{path}, row {number}: needs a file column ({'/'.join(FILE_COLUMNS)}) and a caption "
                             f"column ({'/'.join(TEXT_COLUMNS)}); found {', '.join(row) or 'nothing'}")
        captions[str(row[file_key]).strip()] = str(row[text_key] or "").strip()
    return captions


def discover_videos(folder: str | os.PathLike, captions: str | os.PathLike | None = None) -> list[VideoItem]:
    """Every video under `folder` (sorted by relative path) with its caption."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder '{folder}' not found")
    if not captions:
        captions = next((folder / n for n in CAPTION_FILES if (folder / n).is_file()), None)
    table = read_captions(captions) if captions else {}
    items = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES):
        relative = path.relative_to(folder).as_posix()
        caption = table.get(relative, table.get(path.name))
        sidecar = path.with_suffix(".txt")
        if caption is None and sidecar.is_file():
            caption = sidecar.read_text(encoding="utf-8").strip()
        items.append(VideoItem(path, caption or ""))
    if not items:
        raise FileNotFoundError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) found under '{folder}'")
    return items


def clip_starts(duration: float, clip_seconds: float, stride: float, limit: int = 0) -> list[float]:
    """Start times of the whole clips that fit in `duration` seconds, `stride` apart (at most `limit`)."""
    count = int((duration - clip_seconds) // stride) + 1 if duration + 1e-6 >= clip_seconds else 0
    count = min(count, limit) if limit else count
    return [round(i * stride, 6) for i in range(count)]


@dataclass
class FeatureEncoders:
    """The inference encoders the preparation step runs (see `pipeline.loaders`)."""

    vae: Any
    text_encoder: Any
    image_encoder: Any
    sync_encoder: Any
    audio_encoder: Any = None  # REPA targets (training.audio_features); None: no REPA features


def encode_fixed_text(text_encoder, prompts: list[str]) -> torch.Tensor:
    """CLAP tokens of each prompt padded to the text limit (77): `[B, 77, D]` float32, CPU."""
    return text_encoder.encode(list(prompts) + [_FILLER])[:-1].float().cpu()


def cache_fingerprint(videos: list[VideoItem], settings: dict) -> str:
    """A digest of the videos (name, size, time, caption) and the settings that shape the cache."""
    entries = [[str(v.path), v.path.stat().st_size, v.path.stat().st_mtime_ns, v.caption] for v in videos]
    blob = json.dumps([INDEX_VERSION, entries, settings], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cached_index(cache_dir: str | os.PathLike, fingerprint: str | None = None) -> dict | None:
    """The cache's index if the cache is complete (and was built from `fingerprint`), else None."""
    path = Path(cache_dir) / "index.json"
    if not path.is_file():
        return None
    index = json.loads(path.read_text(encoding="utf-8"))
    return index if fingerprint is None or index.get("fingerprint") == fingerprint else None


@torch.no_grad()
def prepare_cache(
    videos: list[VideoItem],
    encoders: FeatureEncoders,
    cache_dir: str | os.PathLike,
    clip_seconds: float,
    stride: float | None = None,
    max_clips_per_video: int = 0,
    dtype: torch.dtype = torch.float32,
    fingerprint: str = "",
    shard_clips: int = SHARD_CLIPS,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Encode every clip of `videos` into `cache_dir` and return the index (also written there).

    Videos without sound, or shorter than one clip, are skipped and listed under "skipped".
    """
    from ..pipeline.encode import encode_video

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for old in [*cache_dir.glob("shard-*.safetensors"), cache_dir / "index.json"]:
        old.unlink(missing_ok=True)
    stride = stride or clip_seconds
    rate = encoders.vae.sample_rate
    layout = clip_layout(encoders.vae, clip_seconds)
    samples, latents, visual_counts = layout.samples, layout.latents, (layout.clip, layout.sync)
    clips, skipped, pending, shards = [], [], [], []

    def flush() -> None:
        name = f"shard-{len(shards):05d}.safetensors"
        stacked = {key: torch.stack([p[key] for p in pending]).to(dtype).contiguous() for key in pending[0]}
        _atomic_save(stacked, cache_dir / name)
        shards.append(name)
        pending.clear()

    null_text = encode_fixed_text(encoders.text_encoder, [""])[0]
    for number, video in enumerate(videos):
        if progress:
            progress(number, len(videos), video.path.name)
        try:
            starts = clip_starts(probe_video(video.path).duration, clip_seconds, stride, max_clips_per_video)
            if not starts:
                raise MediaError(video.path, f"is shorter than one {clip_seconds:g} s clip")
            audio, _ = load_audio(video.path, rate, channels=1)
        except MediaError as exc:
            skipped.append({"video": str(video.path), "reason": str(exc)})
            continue
        text = encode_fixed_text(encoders.text_encoder, [video.caption])[0]
        kept = []
        for start in starts:
            wav = audio[:, round(start * rate):round(start * rate) + samples]
            if samples - layout.padding <= wav.shape[-1] < samples:
                wav = torch.nn.functional.pad(wav, (0, samples - wav.shape[-1]))
            visual = encode_video(video.path, encoders.image_encoder, encoders.sync_encoder, start=start,
                                  max_duration=clip_seconds, static_anchor=False)
            clip, sync = visual.clip[0, :visual_counts[0]], visual.sync[0, :visual_counts[1]]
            if wav.shape[-1] < samples or (clip.shape[0], sync.shape[0]) != visual_counts:
                skipped.append({"video": str(video.path), "start": start,
                                "reason": "the audio or video ends before the clip does"})
                continue
            kept.append((start, wav, clip, sync))
        for first in range(0, len(kept), AUDIO_BATCH):
            group = kept[first:first + AUDIO_BATCH]
            wavs = torch.stack([wav for _, wav, _, _ in group])  # [n, 1, T]
            mean, logvar = encoders.vae.encode(wavs.to(_device(encoders.vae), encoders.vae.dtype))
            repa = None
            if encoders.audio_encoder is not None:
                repa = encoders.audio_encoder.frame_features(wavs[:, 0], rate).float().cpu()
            for i, (start, _, clip, sync) in enumerate(group):
                item = {"latent_mean": mean[i, :, :latents].float().cpu(),
                        "latent_logvar": logvar[i, :, :latents].float().cpu(), "text": text, "clip": clip,
                        "sync": sync}
                if repa is not None:
                    item["repa"] = repa[i]
                clips.append({"shard": len(shards), "row": len(pending), "video": str(video.path), "start": start,
                              "caption": video.caption})
                pending.append(item)
                if len(pending) == shard_clips:
                    flush()
    if pending:
        flush()
    if not clips:
        reasons = "; ".join(f"{Path(s['video']).name}: {s['reason']}" for s in skipped[:5])
        raise ValueError(f"no training clip of {clip_seconds:g} s could be cut from {len(videos)} video(s) ({reasons})")
    _atomic_save({"null_text": null_text.to(dtype).contiguous()}, cache_dir / "null_text.safetensors")
    index = {"version": INDEX_VERSION, "fingerprint": fingerprint, "clip_seconds": clip_seconds,
             "family": layout.family, "latents": latents, "sample_rate": rate,
             "dtype": str(dtype).removeprefix("torch."),
             "repa_encoder": getattr(encoders.audio_encoder, "name", None), "shards": shards, "clips": clips,
             "skipped": skipped}
    _atomic_write_text(cache_dir / "index.json", json.dumps(index, indent=1))
    if progress:
        progress(len(videos), len(videos), "done")
    return index


def _device(module) -> torch.device:
    return next(module.parameters()).device


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    save_file(tensors, str(partial))
    os.replace(partial, path)


def _atomic_write_text(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


class ClipDataset(torch.utils.data.Dataset):
    """The cached clips; items are dicts of float32 tensors (`repa` only when cached)."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)
        index = cached_index(self.cache_dir)
        if index is None:
            raise FileNotFoundError(f"no complete feature cache in '{self.cache_dir}': run the preparation step "
                                    "(`syncfoley train RECIPE --prepare-only`) first")
        self.index = index
        self.clips = index["clips"]
        with safe_open(str(self.cache_dir / "null_text.safetensors"), "pt") as f:
            self.null_text = f.get_tensor("null_text").float()
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def has_repa(self) -> bool:
        return self.index.get("repa_encoder") is not None

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        clip = self.clips[i]
        handle = self._handles.get(clip["shard"])
        if handle is None:
            path = self.cache_dir / self.index["shards"][clip["shard"]]
            handle = self._handles[clip["shard"]] = safe_open(str(path), "pt")
        row = clip["row"]
        return {key: handle.get_slice(key)[row:row + 1][0].float() for key in handle.keys()}

    def __getstate__(self):  # DataLoader workers open their own shard handles
        return {**self.__dict__, "_handles": {}}


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


class BatchStream:
    """Batches from an endless stream of per-epoch seeded permutations, split across processes.

    Batch `k` of process `rank` is positions `[(k * world + rank) * B, ... + B)` of the stream, so
    the data position is one integer (`k`) and a resumed run sees exactly the batches it would have.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if size < 1:
            raise ValueError("the dataset is empty")
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self._epoch, self._order = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.size, generator=generator)
        return self._order

    def batch(self, k: int) -> list[int]:
        first = (k * self.world + self.rank) * self.batch_size
        return [int(self._permutation(p // self.size)[p % self.size]) for p in range(first, first + self.batch_size)]

    def batches(self, start: int = 0) -> Iterator[list[int]]:
        k = start
        while True:
            yield self.batch(k)
            k += 1


def loader(dataset: ClipDataset, stream: BatchStream, start: int, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader yielding the stream's batches from batch `start` on (endless)."""
    # An own generator: creating the iterator must not draw from the global RNG, which a resumed run
    # has just restored (LoRA dropout draws from it).
    return torch.utils.data.DataLoader(dataset, batch_sampler=_Batches(stream, start), collate_fn=collate,
                                       num_workers=num_workers, generator=torch.Generator().manual_seed(stream.seed))


class _Batches(torch.utils.data.Sampler):
    def __init__(self, stream: BatchStream, start: int):
        self.stream, self.start = stream, start

    def __iter__(self):
        return self.stream.batches(self.start)
