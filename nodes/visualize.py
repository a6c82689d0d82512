"""Pictures and scores of sync: a spectrogram of any AUDIO, a sync plot of audio onsets over video motion
(with the offset curve below when one is connected), Sync Score (DeSync by Synchformer's offset head)
and Pick Best Take (the takes ranked by DeSync, best first)."""
from __future__ import annotations

import torch

from ..evaluation.desync import DEFAULT_STRIDE, SEGMENT_SECONDS, SyncCurve, describe, rank_takes
from ..evaluation.desync_plot import offset_curve_image
from ..media import audio_from_comfy
from ..pipeline.visualize import ONSET_RATE, onset_strength, spectrogram_image, sync_plot_image, video_motion
from .common import AUDIO, VISUALIZE, FoleyVideo, blame, host, input_error, save_previews

SIZE = {"min": 64, "max": 8192, "step": 8}
SYNC_CURVE = "FOLEY_SYNC_CURVE"
KEEP = ("all, best first", "best only")


def _takes(audio: dict) -> list[tuple[torch.Tensor, int]]:
    waveform = audio.get("waveform") if isinstance(audio, dict) else None
    if waveform is None or waveform.shape[-1] == 0:
        raise input_error("audio", "is empty")
    return [audio_from_comfy(audio, take) for take in range(waveform.shape[0] if waveform.ndim == 3 else 1)]


class SyncFoleySpectrogram:
    DESCRIPTION = ("Draws a log-mel spectrogram of audio (time left to right, low pitches at the bottom, loud = "
                   "bright), one image per batch item, and shows it.")
    CATEGORY = VISUALIZE
    FUNCTION = "draw"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("Spectrogram pictures [takes, height, width, 3].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "Any sound (channels are averaged)."}),
            "width": ("INT", {"default": 1024, **SIZE, "tooltip": "Picture width in pixels (the time axis)."}),
            "height": ("INT", {"default": 256, **SIZE, "tooltip": "Picture height in pixels (the mel axis)."}),
        }}

    def draw(self, audio: dict, width: int, height: int):
        images = torch.stack([spectrogram_image(waveform, rate, width, height) for waveform, rate in _takes(audio)])
        return {"ui": {"images": save_previews(images, "spectrogram")}, "result": (images,)}


class SyncFoleySyncPlot:
    DESCRIPTION = (
        "Shows whether sound follows picture: audio onset strength (orange line) over video motion energy (cyan "
        "area) on one time axis, each scaled to its own peak. Onsets that line up with motion peaks are in sync. "
        "One image per take; the audio is taken to start at the clip's start.")
    CATEGORY = VISUALIZE
    FUNCTION = "draw"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("Sync plot pictures [takes, height, width, 3].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": "The sound, starting at the clip's start (e.g. from Foley VAE Decode)."}),
                "width": ("INT", {"default": 1024, **SIZE, "tooltip": "Picture width in pixels (the time axis)."}),
                "height": ("INT", {"default": 320, **SIZE, "tooltip": "Picture height in pixels."}),
            },
            "optional": {
                "video": ("FOLEY_VIDEO", {"tooltip": "The clip from Load Video (Foley)."}),
                "images": ("IMAGE", {"tooltip": "Frames to measure motion on instead (used when connected)."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 0.01, "max": 1000.0, "step": 0.001,
                                  "tooltip": "Frame rate of the images input."}),
                "sync_curve": (SYNC_CURVE, {"tooltip": "From Sync Score: its offset curve is drawn below the plot."}),
            },
        }

    def draw(self, audio: dict, width: int, height: int, video: FoleyVideo | None = None,
             images: torch.Tensor | None = None, fps: float = 25.0, sync_curve: SyncCurve | None = None):
        if images is not None:
            if images.ndim != 4 or images.shape[0] == 0:
                raise input_error("images", f"expected a non-empty IMAGE batch [N, H, W, C], got {tuple(images.shape)}")
            with blame("images"):
                motion = video_motion((images, fps), fps)
            rate, seconds = fps, images.shape[0] / fps
        elif video is not None:
            with blame("video"):
                motion = video_motion(video.source, video.fps, video.start, video.duration)
            rate, seconds = video.fps, video.duration
        else:
            raise input_error("video", "connect a FOLEY_VIDEO (Load Video) or IMAGE frames with their fps")
        pictures = []
        for take, (waveform, sample_rate) in enumerate(_takes(audio)):
            span = max(seconds, waveform.shape[-1] / sample_rate)
            onset = onset_strength(waveform, sample_rate, ONSET_RATE)
            picture = sync_plot_image(onset, ONSET_RATE, motion, rate, span, width, height)
            if sync_curve is not None:
                index = min(take, sync_curve.offsets.shape[0] - 1)
                strip = offset_curve_image(sync_curve, span, index, width, max(96, height // 2))
                picture = torch.cat([picture, strip])
            pictures.append(picture)
        result = torch.stack(pictures)
        return {"ui": {"images": save_previews(result, "sync_plot")}, "result": (result,)}


def _sync_inputs() -> dict:
    return {
        "audio": ("AUDIO", {"tooltip": "The sound, starting at the clip's start; each batch item is a take."}),
        "video": ("FOLEY_VIDEO", {"tooltip": "The clip from Load Video (Foley)."}),
        "synchformer": ("FOLEY_SYNCHFORMER", {"tooltip": "Synchformer (synchformer_state_dict.pth: its audio side "
                                                          "and offset head) or the demo's, from Load Synchformer."}),
    }


def _measure(audio: dict, video: FoleyVideo, synchformer, window_step: float = DEFAULT_STRIDE * SEGMENT_SECONDS
             ) -> SyncCurve:
    """The sync curve of every take (one picture encoding for all)."""
    from ..evaluation.sync_media import measure_sync, picture_features

    takes = _takes(audio)
    stride = max(1, round(window_step / SEGMENT_SECONDS))
    with host().stage(synchformer):
        with blame("video"):
            picture = picture_features(synchformer, video.source, video.start, video.duration)
        with blame("audio"):
            return measure_sync(synchformer, picture, [w for w, _ in takes], takes[0][1], stride)


class SyncFoleySyncScore:
    DESCRIPTION = (
        "Measures how far the sound is from the picture, as papers do (DeSync): Synchformer's offset head classifies "
        "4.8 s windows of picture and sound into offsets from -2 to +2 s; DeSync is the mean |offset|, 0 is in sync. "
        "Windows slide over a clip of any length, so the curve shows where sync drifts; when the windows agree the "
        "report says by how much to shift the sound (Mux Foley Video's offset_ms).")
    CATEGORY = VISUALIZE
    FUNCTION = "score"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FLOAT", "STRING", "IMAGE", SYNC_CURVE)
    RETURN_NAMES = ("desync", "report", "image", "sync_curve")
    OUTPUT_TOOLTIPS = ("DeSync of the first take, seconds (lower is better).", "Each take's DeSync and offsets.",
                       "The offset curve of each take.", "The offsets, for Sync Plot.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **_sync_inputs(),
            "window_step": ("FLOAT", {"default": DEFAULT_STRIDE * SEGMENT_SECONDS, "min": SEGMENT_SECONDS,
                                      "max": 60.0, "step": SEGMENT_SECONDS,
                                      "tooltip": "Seconds between windows (3.2: on 8 s, the benchmark's two windows)."}),
            "width": ("INT", {"default": 1024, **SIZE, "tooltip": "Picture width in pixels (the time axis)."}),
            "height": ("INT", {"default": 200, **SIZE, "tooltip": "Picture height in pixels (the offset axis)."}),
        }}

    def score(self, audio: dict, video: FoleyVideo, synchformer, window_step: float, width: int, height: int):
        curve = _measure(audio, video, synchformer, window_step)
        takes = curve.offsets.shape[0]
        report = "\n".join(f"take {k + 1}: {describe(curve, k)}" for k in range(takes))
        images = torch.stack([offset_curve_image(curve, video.duration, k, width, height) for k in range(takes)])
        return {"ui": {"images": save_previews(images, "sync_score"), "text": [report]},
                "result": (float(curve.desync[0]), report, images, curve)}


class SyncFoleyPickBestTake:
    DESCRIPTION = (
        "Ranks the takes of a batch by how well they are in sync (DeSync by Synchformer, lower is better; ties by "
        "the offset head's confidence, then by take order, so the first take stays first unless another is "
        "better) and returns them best first, or the best alone. Each take's score is shown and returned.")
    CATEGORY = AUDIO
    FUNCTION = "pick"
    OUTPUT_NODE = True
    RETURN_TYPES = ("AUDIO", "STRING", "FLOAT")
    RETURN_NAMES = ("audio", "scores", "desync")
    OUTPUT_TOOLTIPS = ("The takes, best first (or the best alone).", "Each take's DeSync, in the new order.",
                       "The best take's DeSync, seconds.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **_sync_inputs(),
            "keep": (list(KEEP), {"default": KEEP[0], "tooltip": "All takes reordered, or only the best."}),
        }}

    def pick(self, audio: dict, video: FoleyVideo, synchformer, keep: str):
        if keep not in KEEP:
            raise input_error("keep", f"'{keep}' is not one of {', '.join(KEEP)}")
        curve = _measure(audio, video, synchformer)
        order = rank_takes(curve)[:1 if keep == KEEP[1] else None]
        waveform = audio["waveform"] if audio["waveform"].ndim == 3 else audio["waveform"][None]
        picked = {**audio, "waveform": waveform[order]}
        scores = "\n".join(f"{rank + 1}. take {k + 1}: {describe(curve, k)}" for rank, k in enumerate(order))
        return {"ui": {"text": [scores]}, "result": (picked, scores, float(curve.desync[order[0]]))}


NODES = {
    "SyncFoleySpectrogram": (SyncFoleySpectrogram, "Foley Spectrogram"),
    "SyncFoleySyncPlot": (SyncFoleySyncPlot, "Foley Sync Plot"),
    "SyncFoleySyncScore": (SyncFoleySyncScore, "Foley Sync Score"),
    "SyncFoleyPickBestTake": (SyncFoleyPickBestTake, "Pick Best Take (Foley)"),
}
