"""Tiny random CLAP-text and SigLIP models written to disk, for tests and the demo (no download).

`write_tiny_clap(folder)` writes a CLAP model (both towers, like laion/larger_clap_general, or the
text tower alone) plus a byte-level BPE RoBERTa tokenizer trained here on a few sentences;
`write_tiny_siglip(folder)` writes a SigLIP (or SigLIP2 NaFlex) image-text model. Weights come from a
fixed seed, and the global RNG is left untouched.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

TINY_HIDDEN = 32
CLAP_TOKENS = 128  # the tiny text tower's token capacity: above 77 so the feature cut is visible
_SENTENCES = (
    "a dog barks loudly in the yard",
    "footsteps on gravel, then a door slams",
    "noisy, harsh, distorted audio with hum and static",
    "rain falls on a metal roof while thunder rolls",
    "glass shatters and a car engine starts",
)


def _build_roberta_tokenizer(model_max_length: int):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    # RoBERTa's special-token ids: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4.
    bpe.train_from_iterator(_SENTENCES, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    # Loading from vocab.json + merges.txt works the same on transformers 4.x and 5.x.
    with tempfile.TemporaryDirectory() as scratch:
        bpe.save_model(scratch)
        return RobertaTokenizerFast.from_pretrained(scratch, model_max_length=model_max_length,
                                                    local_files_only=True)


def write_tiny_clap(folder: str | os.PathLike, text_only: bool = False, seed: int = 0) -> Path:
    """Write a tiny random CLAP model + tokenizer into `folder`; return the folder.

    `text_only=False` saves a full `ClapModel` (text and audio towers, like the released checkpoint);
    `text_only=True` saves a `ClapTextModelWithProjection` (config model_type "clap_text_model").
    """
    from transformers import ClapConfig, ClapModel, ClapTextConfig, ClapTextModelWithProjection

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_roberta_tokenizer(CLAP_TOKENS)
    text_config = dict(vocab_size=len(tokenizer), hidden_size=TINY_HIDDEN, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, projection_dim=16,
                       pad_token_id=tokenizer.pad_token_id,
                       max_position_embeddings=CLAP_TOKENS + tokenizer.pad_token_id + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if text_only:
            model = ClapTextModelWithProjection(ClapTextConfig(**text_config))
        else:
            audio_config = dict(hidden_size=TINY_HIDDEN, depths=[1, 1], num_attention_heads=[2, 2], window_size=4,
                                spec_size=64, num_mel_bins=16, patch_embeds_hidden_size=16, projection_dim=16)
            model = ClapModel(ClapConfig(text_config=text_config, audio_config=audio_config, projection_dim=16))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_siglip(folder: str | os.PathLike, image_size: int = 32, patch_size: int = 8,
                      model_type: str = "siglip", seed: int = 0) -> Path:
    """Write a tiny random SigLIP image-text model into `folder`; return the folder.

    `model_type="siglip"` matches the fixed-resolution google/siglip2-base-patch16-512 layout;
    `"siglip2"` writes a NaFlex `Siglip2Model` whose position grid covers `image_size`.
    """
    from transformers import Siglip2Config, Siglip2Model, SiglipConfig, SiglipModel

    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text_config = dict(vocab_size=64, hidden_size=TINY_HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=16, pad_token_id=1, bos_token_id=2,
                       eos_token_id=3)
    vision_config = dict(hidden_size=TINY_HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, patch_size=patch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model_type == "siglip":
            config = SiglipConfig(text_config=text_config, vision_config={**vision_config, "image_size": image_size})
            model = SiglipModel(config)
        elif model_type == "siglip2":
            patches = (image_size // patch_size) ** 2
            config = Siglip2Config(text_config=text_config, vision_config={**vision_config, "num_patches": patches})
            model = Siglip2Model(config)
        else:
            raise ValueError(f"model_type must be 'siglip' or 'siglip2', got {model_type!r}")
    model.save_pretrained(folder)
    return folder
