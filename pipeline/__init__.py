"""The one API behind the nodes, the command line, the runner and the tests."""
from .decode import decode_latents, encode_waveform
from .encode import encode_text, encode_video
from .files import ModelFiles, find_model_files
from .foley import FoleyModels, FoleyPipeline, FoleyResult
from .loaders import (PRECISIONS, load_clip, load_foley_model, load_image_encoder, load_synchformer, load_text_encoder,
                      load_vae)

__all__ = [
    "FoleyModels", "FoleyPipeline", "FoleyResult", "ModelFiles", "PRECISIONS", "decode_latents", "encode_text",
    "encode_video", "encode_waveform", "find_model_files", "load_clip", "load_foley_model", "load_image_encoder",
    "load_synchformer", "load_text_encoder", "load_vae",
]
