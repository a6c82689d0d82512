"""The one API behind the nodes, the command line, the runner and the tests."""
from .decode import decode_latents, encode_waveform
from .encode import DEFAULT_NEGATIVE_PROMPT, encode_text, encode_video
from .foley import MODEL_PARTS, FoleyModels, FoleyPipeline, FoleyResult, find_model_files
from .loaders import PRECISIONS, load_foley_model, load_image_encoder, load_synchformer, load_text_encoder, load_vae

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT", "MODEL_PARTS", "FoleyModels", "find_model_files", "FoleyPipeline", "FoleyResult", "PRECISIONS", "decode_latents",
    "encode_text", "encode_video", "encode_waveform", "load_foley_model", "load_image_encoder", "load_synchformer",
    "load_text_encoder", "load_vae",
]
