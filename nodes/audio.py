"""Save Audio: AUDIO to wav/flac/mp3/opus files in the output folder, with ComfyUI's audio player."""
from __future__ import annotations

from ..media import audio_from_comfy, save_audio
from .common import AUDIO, blame, input_error, output_file

FORMATS = ("wav", "flac", "mp3", "opus")


class SyncFoleySaveAudio:
    DESCRIPTION = "Saves audio to the output folder, one file per batch item (take), and shows a player."
    CATEGORY = AUDIO
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("paths",)
    OUTPUT_TOOLTIPS = ("The written files, one per line.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "The sound to save (each batch item becomes a file)."}),
            "filename_prefix": ("STRING", {"default": "SyncFoley/audio", "tooltip": "Output name; may name a "
                                           "sub-folder of the output folder. _00001 etc. is appended."}),
            "format": (list(FORMATS), {"default": "flac", "tooltip": "wav (16-bit PCM), flac (lossless), "
                                       "mp3 or opus (compressed)."}),
        }, "optional": {
            # The frontend draws its audio player for an input of this type and name (as on core's Save
            # Audio); it carries no value the node needs (older frontends send "").
            "audioUI": ("AUDIO_UI", {"tooltip": "The player of the saved audio (drawn by ComfyUI)."}),
        }}

    def save(self, audio: dict, filename_prefix: str, format: str, audioUI=None):
        if format not in FORMATS:
            raise input_error("format", f"'{format}' is not one of {', '.join(FORMATS)}")
        waveform = audio.get("waveform") if isinstance(audio, dict) else None
        if waveform is None or waveform.shape[-1] == 0:
            raise input_error("audio", "is empty")
        takes = waveform.shape[0] if waveform.ndim == 3 else 1
        paths, entries = [], []
        for take in range(takes):
            samples, rate = audio_from_comfy(audio, take)
            path, entry = output_file(filename_prefix, format)
            with blame("audio"):
                save_audio(path, samples, rate)
            paths.append(str(path))
            entries.append(entry)
        return {"ui": {"audio": entries}, "result": ("\n".join(paths),)}


NODES = {"SyncFoleySaveAudio": (SyncFoleySaveAudio, "Save Foley Audio")}
