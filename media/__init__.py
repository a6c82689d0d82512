"""Media I/O over PyAV: probe videos, sample encoder frames by timestamp, load/save audio, mux results.

Used by the ComfyUI nodes, the CLI and training. Everything raises MediaError (a ValueError) with the
file, the problem and the fix when a user's file is the cause.
"""
from .audio import (AUDIO_CODECS, audio_from_comfy, audio_to_comfy, convert_channels, fit_duration, load_audio,
                    resample_audio, save_audio)
from .errors import MediaError
from .frames import (DURATION_FPS, HUNYUAN_STREAMS, SIGLIP2_STREAM, SYNCHFORMER_STREAM, SampledClip, SampledStream,
                     StreamSpec, as_rate, sample_images, sample_video)
from .mux import VIDEO_CONTAINERS, mux_audio, write_video
from .probe import AudioStreamInfo, VideoInfo, probe_video
from .transforms import resize_frame, rotate_upright, to_model_input

__all__ = [
    "AUDIO_CODECS", "DURATION_FPS", "HUNYUAN_STREAMS", "SIGLIP2_STREAM", "SYNCHFORMER_STREAM", "VIDEO_CONTAINERS",
    "AudioStreamInfo", "MediaError", "SampledClip", "SampledStream", "StreamSpec", "VideoInfo",
    "as_rate", "audio_from_comfy", "audio_to_comfy", "convert_channels", "fit_duration", "load_audio",
    "mux_audio", "probe_video", "resample_audio", "resize_frame", "rotate_upright", "sample_images",
    "sample_video", "save_audio", "to_model_input", "write_video",
]
