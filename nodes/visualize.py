"""Pictures: a spectrogram of any AUDIO, and a sync plot of audio onsets over video motion (both IMAGE)."""
from __future__ import annotations

import torch

from ..media import audio_from_comfy
from ..pipeline.visualize import ONSET_RATE, onset_strength, spectrogram_image, sync_plot_image, video_motion
from .common import VISUALIZE, FoleyVideo, blame, input_error, save_previews

SIZE = {"min": 64, "max": 8192, "step": 8}


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
            },
        }

    def draw(self, audio: dict, width: int, height: int, video: FoleyVideo | None = None,
             images: torch.Tensor | None = None, fps: float = 25.0):
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
        for waveform, sample_rate in _takes(audio):
            span = max(seconds, waveform.shape[-1] / sample_rate)
            onset = onset_strength(waveform, sample_rate, ONSET_RATE)
            pictures.append(sync_plot_image(onset, ONSET_RATE, motion, rate, span, width, height))
        result = torch.stack(pictures)
        return {"ui": {"images": save_previews(result, "sync_plot")}, "result": (result,)}


NODES = {
    "SyncFoleySpectrogram": (SyncFoleySpectrogram, "Foley Spectrogram"),
    "SyncFoleySyncPlot": (SyncFoleySyncPlot, "Foley Sync Plot"),
}
