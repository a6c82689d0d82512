"""Video in and out: Load Video (a file, core's VIDEO, or IMAGE frames from other packs) and Mux Video
(which also returns core's VIDEO where the running ComfyUI has that type, so Save Video and previews work)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..media import audio_from_comfy, audio_to_comfy, load_audio, mux_audio, probe_video, write_video
from ..pipeline.visualize import preview_frames
from .common import VIDEO, FoleyVideo, as_comfy_video, blame, find_video, input_error, output_file, video_choices

SILENCE_RATE = 48000
CONTAINERS = ("mp4", "mkv", "mov", "webm")


class SyncFoleyLoadVideo:
    DESCRIPTION = (
        "Loads a video for Foley: a file from the input folder (or any path), a VIDEO from core's Load Video, or "
        "IMAGE frames with their fps from another node. The FOLEY_VIDEO output keeps the source itself, so Visual "
        "Encode samples exact timestamps "
        "and Mux Video copies the original picture untouched. The IMAGE output is for previews and other nodes: "
        "at most max_frames frames (a long clip is sampled at a lower rate, reported as fps) of at most max_side "
        "pixels.")
    CATEGORY = VIDEO
    FUNCTION = "load"
    RETURN_TYPES = ("FOLEY_VIDEO", "IMAGE", "FLOAT", "FLOAT", "AUDIO")
    RETURN_NAMES = ("video", "images", "fps", "duration", "audio")
    OUTPUT_TOOLTIPS = (
        "The clip (source + start + duration), for Visual Encode, Mux Video and Sync Plot.",
        "Frames of the clip (bounded by max_frames and max_side; IMAGE inputs pass through).",
        "Frame rate of the IMAGE output (the source's, unless max_frames lowered it).",
        "Seconds the clip lasts (the default audio length of Foley Sampler).",
        "The clip's own sound (silence if it has none).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": (video_choices(), {"video_upload": True,
                                            "tooltip": "A video in ComfyUI's input folder (a path also works); "
                                                       "syncfoley-example*.mp4 are clips built into the pack."}),
                "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1e6, "step": 0.01,
                                    "tooltip": "Seconds to skip at the beginning of the video."}),
                "duration": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1e6, "step": 0.01,
                                       "tooltip": "Seconds to use from start; 0 = to the end."}),
                "max_frames": ("INT", {"default": 240, "min": 0, "max": 100000,
                                       "tooltip": "Cap on the IMAGE output's frames (memory); 0 = every frame. "
                                                  "Does not affect the audio, which follows the whole clip."}),
                "max_side": ("INT", {"default": 512, "min": 0, "max": 8192, "step": 8,
                                     "tooltip": "Longest side of the IMAGE output in pixels; 0 = source size."}),
            },
            "optional": {
                "path": ("STRING", {"default": "", "tooltip": "Any video path; overrides the video list when set."}),
                "video_in": ("VIDEO", {"tooltip": "A VIDEO from core nodes (Load Video, Create Video, ...); used "
                                                  "instead of the list when connected."}),
                "images": ("IMAGE", {"tooltip": "Frames from another node (e.g. VideoHelperSuite); used instead of "
                                                "a file when connected."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 0.01, "max": 1000.0, "step": 0.001,
                                  "tooltip": "Frame rate of the images input."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, video):
        # One argument only: ComfyUI repeats a failure once per argument. `path` (a free-text override)
        # is checked when the node runs; `video` is checked here, which also lets it name a path.
        if video is None:
            return True
        try:
            find_video(video)
        except (ValueError, OSError) as error:
            return str(error).removeprefix("video: ")  # ComfyUI shows the input's name itself
        return True

    @classmethod
    def IS_CHANGED(cls, video=None, path="", **_):
        try:
            file = find_video(video, path or "")
        except (ValueError, OSError, TypeError):
            return ""
        stat = file.stat()
        return f"{file.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"

    def load(self, video: str, start: float, duration: float, max_frames: int, max_side: int, path: str = "",
             images: torch.Tensor | None = None, fps: float = 25.0, video_in=None):
        if images is not None:
            return self._from_images(images, fps, start, duration)
        if video_in is not None:
            file, source = _file_of(video_in), "video_in"
            if file is None:  # a VIDEO made from frames: take its components
                with blame(source):
                    components = video_in.get_components()
                return self._from_images(components.images, float(components.frame_rate), start, duration,
                                         getattr(components, "audio", None))
        else:
            file, source = find_video(video, path), "path" if path and path.strip() else "video"
        with blame(source):
            info = probe_video(file)
        available = info.duration - start
        if available <= 0:
            raise input_error("start", f"{start:g} s is at or past the end of '{file.name}' ({info.duration:.2f} s)")
        clip = available if duration <= 0 else min(duration, available)
        rate = info.real_fps or (float(info.nominal_fps) if info.nominal_fps else 25.0)
        with blame(source):
            frames, frames_fps = preview_frames(file, rate, (info.display_width, info.display_height), start, clip,
                                                max_frames, max_side)
            if info.has_audio:
                audio = audio_to_comfy(*load_audio(file, None, start=start, duration=clip))
            else:
                audio = _silence(clip)
        foley_video = FoleyVideo(str(file), float(rate), float(start), float(clip), has_audio=info.has_audio)
        return foley_video, frames, frames_fps, float(clip), audio

    def _from_images(self, images: torch.Tensor, fps: float, start: float, duration: float, audio: dict | None = None):
        if images.ndim != 4 or images.shape[0] == 0:
            raise input_error("images", f"expected a non-empty IMAGE batch [N, H, W, C], got {tuple(images.shape)}")
        total = images.shape[0] / fps
        if start >= total:
            raise input_error("start", f"{start:g} s is at or past the end of the {images.shape[0]} frames "
                                       f"({total:.2f} s at {fps:g} fps)")
        clip = total - start if duration <= 0 else min(duration, total - start)
        foley_video = FoleyVideo(None, float(fps), float(start), float(clip), images=images)
        sound = _silence(clip) if audio is None else _cut(audio, start, clip)
        return foley_video, foley_video.clip_images(), float(fps), float(clip), sound


def _file_of(video) -> Path | None:
    """The file behind a core VIDEO (VideoFromFile), or None for one made from frames or bytes."""
    source = getattr(video, "get_stream_source", lambda: None)()
    if isinstance(source, (str, Path)) and Path(source).is_file():
        return Path(source)
    return None


def _cut(audio: dict, start: float, seconds: float) -> dict:
    """`seconds` of ComfyUI AUDIO from `start`."""
    rate = int(audio["sample_rate"])
    first = round(start * rate)
    return {"waveform": audio["waveform"][..., first:first + round(seconds * rate)], "sample_rate": rate}


def _silence(seconds: float) -> dict:
    return {"waveform": torch.zeros(1, 1, max(1, round(seconds * SILENCE_RATE))), "sample_rate": SILENCE_RATE}


class SyncFoleyMuxVideo:
    DESCRIPTION = (
        "Puts audio under a picture and saves it in the output folder, one file per take: with a FOLEY_VIDEO from "
        "a file, the original video packets are copied untouched and the audio is placed at the clip's start; "
        "with IMAGE frames, they are encoded at fps. The original sound can be dropped, kept as a second track, "
        "or mixed in.")
    CATEGORY = VIDEO
    FUNCTION = "mux"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "VIDEO")
    RETURN_NAMES = ("paths", "video")
    OUTPUT_TOOLTIPS = ("The written files, one per line.",
                       "The first take's file as core's VIDEO, for Save Video, previews and other video nodes.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": "The sound to put under the picture (each batch item is a take)."}),
                "filename_prefix": ("STRING", {"default": "SyncFoley/foley", "tooltip": "Output name; may name a "
                                               "sub-folder of the output folder. _00001 etc. is appended."}),
                "original_audio": (["drop", "keep", "mix"], {"default": "drop", "tooltip": "The video's own sound: "
                                   "drop it, keep it as a second (non-default) track, or mix it into the new one."}),
                "original_level": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 2.0, "step": 0.05,
                                             "tooltip": "Gain of the original sound when mixing."}),
                "format": (list(CONTAINERS), {"default": "mp4", "tooltip": "Container: mp4/mov (AAC audio), mkv/webm "
                                              "(Opus audio; webm only for VP8/VP9/AV1 video)."}),
            },
            "optional": {
                "video": ("FOLEY_VIDEO", {"tooltip": "The clip from Load Video; its picture is copied untouched."}),
                "images": ("IMAGE", {"tooltip": "Frames to encode instead (used when connected)."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 0.01, "max": 1000.0, "step": 0.001,
                                  "tooltip": "Frame rate of the images input."}),
                "offset_ms": ("FLOAT", {"default": 0.0, "min": -10000.0, "max": 10000.0, "step": 1.0,
                                        "tooltip": "Move the sound later (positive) or earlier (negative) against "
                                                   "the picture, in milliseconds, e.g. by what Sync Score suggests. "
                                                   "The picture is still copied untouched."}),
            },
        }

    def mux(self, audio: dict, filename_prefix: str, original_audio: str, original_level: float, format: str,
            video: FoleyVideo | None = None, images: torch.Tensor | None = None, fps: float = 25.0,
            offset_ms: float = 0.0):
        if format not in CONTAINERS:
            raise input_error("format", f"'{format}' is not one of {', '.join(CONTAINERS)}")
        if images is None and video is not None and video.images is not None:
            images, fps = video.clip_images(), video.fps
        if images is None and video is None:
            raise input_error("video", "connect a FOLEY_VIDEO (Load Video) or IMAGE frames with their fps")
        if images is not None and original_audio != "drop":
            raise input_error("original_audio", "IMAGE frames carry no sound to keep or mix; choose 'drop'")
        if images is None and original_audio != "drop" and not video.has_audio:
            raise input_error("original_audio", f"'{video.path}' has no sound to keep or mix; choose 'drop'")
        takes = audio["waveform"].shape[0] if audio["waveform"].ndim == 3 else 1
        paths, entries = [], []
        for take in range(takes):
            waveform, rate = audio_from_comfy(audio, take)
            path, entry = output_file(filename_prefix, format)
            if images is not None:
                with blame("images"):
                    write_video(images, fps, path, audio=waveform, sample_rate=rate, offset_ms=offset_ms)
            else:
                lead = round(video.start * rate)  # the clip starts `start` seconds into the copied video
                waveform = torch.nn.functional.pad(waveform, (lead, 0)) if lead else waveform
                with blame("video"):
                    mux_audio(video.path, waveform, rate, path, original_audio=original_audio,
                              original_level=original_level, offset_ms=offset_ms)
            paths.append(str(path))
            entries.append({**entry, "format": f"video/{format}"})
        return {"ui": {"images": entries, "animated": (True,)}, "result": ("\n".join(paths), as_comfy_video(paths[0]))}


NODES = {
    "SyncFoleyLoadVideo": (SyncFoleyLoadVideo, "Load Video (Foley)"),
    "SyncFoleyMuxVideo": (SyncFoleyMuxVideo, "Mux Foley Video"),
}
