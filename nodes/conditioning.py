"""Conditions and guidance: Text Encode, Visual Encode, CFG and SyncCFG."""
from __future__ import annotations

import math

from ..families.hunyuan import HUNYUAN
from ..pipeline import encode_text, encode_video
from ..sampling.guidance import ANCHORS, CFG, SyncCFG
from .common import CONDITIONING, FoleyVideo, blame, host, progress

SCALE = {"min": 0.0, "max": 30.0, "step": 0.1}


class SyncFoleyTextEncode:
    DESCRIPTION = ("Encodes what the sound should be (prompt) and what it should not be (negative prompt) with CLAP. "
                   "Both are encoded together, as the model was trained.")
    CATEGORY = CONDITIONING
    FUNCTION = "encode"
    RETURN_TYPES = ("FOLEY_TEXT_COND",)
    RETURN_NAMES = ("text_cond",)
    OUTPUT_TOOLTIPS = ("Text condition for Foley Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("FOLEY_TEXT_ENCODER", {"tooltip": "CLAP from Load CLAP Text Encoder."}),
            "prompt": ("STRING", {"multiline": True, "default": "",
                                  "tooltip": "The sound to make, e.g. 'footsteps on gravel'. May be empty for "
                                             "video-to-audio."}),
            "negative_prompt": ("STRING", {"multiline": True, "default": HUNYUAN.defaults.negative_prompt,
                                           "tooltip": "Qualities to steer away from (the unconditional branch of CFG). "
                                                      "HunyuanVideo-Foley was released with 'noisy, harsh', MMAudio "
                                                      "with an empty one."}),
        }}

    def encode(self, text_encoder, prompt: str, negative_prompt: str):
        with host().stage(text_encoder), blame("prompt"):
            return (encode_text(text_encoder, prompt, negative_prompt),)


class SyncFoleyVisualEncode:
    DESCRIPTION = ("Encodes a video clip with SigLIP2 (8 frames per second: what is seen) and Synchformer (25 fps "
                   "segments: when things happen), each sampled by exact timestamps from the source. Long videos "
                   "are encoded chunk by chunk.")
    CATEGORY = CONDITIONING
    FUNCTION = "encode"
    RETURN_TYPES = ("FOLEY_VISUAL_COND",)
    RETURN_NAMES = ("visual_cond",)
    OUTPUT_TOOLTIPS = ("Visual condition for Foley Sampler (its duration is the default audio length).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image_encoder": ("FOLEY_IMAGE_ENCODER", {"tooltip": "SigLIP2 from Load SigLIP2 Image Encoder."}),
            "synchformer": ("FOLEY_SYNCHFORMER", {"tooltip": "Synchformer from Load Synchformer."}),
            "video": ("FOLEY_VIDEO", {"tooltip": "The clip from Load Video (Foley)."}),
            "static_anchor": ("BOOLEAN", {"default": True, "tooltip": "Also encode the first frame held still, which "
                                          "SyncCFG's static anchor needs (costs one extra segment)."}),
        }}

    def encode(self, image_encoder, synchformer, video: FoleyVideo, static_anchor: bool):
        steps = max(1, math.ceil(video.duration))
        with host().stage(image_encoder, synchformer), progress(steps, "visual encode") as update, blame("video"):
            features = encode_video(video.source, image_encoder, synchformer, start=video.start,
                                    max_duration=video.duration, static_anchor=static_anchor,
                                    progress=lambda seconds: update(math.floor(seconds)))
        return (features,)


class SyncFoleyCFG:
    DESCRIPTION = ("Classifier-free guidance, as the model was released: prediction = unconditional + scale x "
                   "(conditional - unconditional), the unconditional branch having no video and the negative prompt.")
    CATEGORY = CONDITIONING
    FUNCTION = "make"
    RETURN_TYPES = ("FOLEY_GUIDANCE",)
    RETURN_NAMES = ("guidance",)
    OUTPUT_TOOLTIPS = ("Guidance for Foley Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "scale": ("FLOAT", {"default": HUNYUAN.defaults.cfg_scale, **SCALE, "tooltip": "Guidance strength (4.5 "
                                "as released, both families); 1 or less runs the "
                                "conditional branch alone (half the compute)."}),
        }}

    def make(self, scale: float):
        return (CFG(scale),)


class SyncFoleySyncCFG:
    DESCRIPTION = (
        "CFG plus a sync term: + sync_scale x (conditional - anchor), where the anchor is the same prompt with a video "
        "whose motion is wrong: the first frame held still (static) or the video shifted in time (shift). Pushes sounds "
        "onto the visible events. Needs a visual condition.")
    CATEGORY = CONDITIONING
    FUNCTION = "make"
    RETURN_TYPES = ("FOLEY_GUIDANCE",)
    RETURN_NAMES = ("guidance",)
    OUTPUT_TOOLTIPS = ("Guidance for Foley Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "scale": ("FLOAT", {"default": HUNYUAN.defaults.cfg_scale, **SCALE, "tooltip": "CFG strength."}),
            "sync_scale": ("FLOAT", {"default": HUNYUAN.defaults.sync_scale, "min": -10.0, "max": 10.0, "step": 0.1,
                                     "tooltip": "Strength of the sync term; 0 is plain CFG."}),
            "anchor": (list(ANCHORS), {"default": HUNYUAN.defaults.anchor, "tooltip": "static: first frame held (needs "
                                       "Visual Encode with static_anchor on); shift: the video moved by shift_seconds "
                                       "(the one that beats CFG on the demo world: README, Measuring)."}),
            "shift_seconds": ("FLOAT", {"default": 0.64, "min": -10.0, "max": 10.0, "step": 0.04,
                                        "tooltip": "Time shift of the shift anchor (whole Synchformer segments of "
                                                   "0.32 s work best)."}),
        }}

    def make(self, scale: float, sync_scale: float, anchor: str, shift_seconds: float):
        with blame("anchor"):
            return (SyncCFG(scale, sync_scale, anchor, shift_seconds),)


NODES = {
    "SyncFoleyTextEncode": (SyncFoleyTextEncode, "Foley Text Encode"),
    "SyncFoleyVisualEncode": (SyncFoleyVisualEncode, "Foley Visual Encode"),
    "SyncFoleyCFG": (SyncFoleyCFG, "Foley CFG Guidance"),
    "SyncFoleySyncCFG": (SyncFoleySyncCFG, "Foley SyncCFG Guidance"),
}
