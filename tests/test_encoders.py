"""CLAP text and SigLIP2 image encoders against direct transformers calls on tiny random models."""
from __future__ import annotations

import shutil

import pytest
import torch
from einops import rearrange
from safetensors.torch import load_file, save_file
from tiny_encoders import CLAP_TOKENS, TINY_HIDDEN, write_tiny_clap, write_tiny_siglip

from syncfoley.models.checkpoint import CheckpointError
from syncfoley.models.encoders import (SIGLIP2_FRAME_SPEC, SYNCHFORMER_FRAME_SPEC, ClapTextEncoder,
                                       EncoderLoadError, FrameSpec, Siglip2ImageEncoder)

transformers = pytest.importorskip("transformers")

NEGATIVE = "noisy, harsh"
LONG_PROMPT = " ".join(["rain falls on a metal roof while thunder rolls"] * 4)  # 109 tokens
OVERLONG_PROMPT = " ".join(["glass shatters and a car engine starts"] * 40)  # past the 128-token table


@pytest.fixture(scope="module")
def clap_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("clap")
    return {"full": write_tiny_clap(root / "full"), "text_only": write_tiny_clap(root / "text", text_only=True)}


@pytest.fixture(scope="module")
def siglip_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("siglip")
    return {kind: write_tiny_siglip(root / kind, image_size=32, patch_size=8, model_type=kind)
            for kind in ("siglip", "siglip2")}


def _direct_clap(folder, prompts):
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.ClapTextModelWithProjection.from_pretrained(folder, local_files_only=True).eval()
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return tokens, model(**tokens).last_hidden_state


@pytest.mark.parametrize("kind", ["full", "text_only"])
def test_clap_matches_transformers_and_cuts_features_to_77(clap_folders, kind):
    encoder = ClapTextEncoder.from_folder(clap_folders[kind])
    tokens, expected = _direct_clap(clap_folders[kind], [NEGATIVE, LONG_PROMPT])
    assert tokens["input_ids"].shape[1] > 77 and expected.shape[1] > 77  # the cut has something to do

    features = encoder.encode([NEGATIVE, LONG_PROMPT])

    assert features.dtype == torch.float32 and features.shape == (2, 77, TINY_HIDDEN)
    assert encoder.feature_dim == TINY_HIDDEN
    torch.testing.assert_close(features, expected[:, :77], rtol=1e-5, atol=1e-6)


def test_clap_pads_prompts_together_and_masks_the_padding(clap_folders):
    encoder = ClapTextEncoder.from_folder(clap_folders["full"])
    short, longer = "a dog", "footsteps on gravel, then a door slams"
    together = encoder.encode([short, longer])
    alone = encoder.encode([short])
    _, expected = _direct_clap(clap_folders["full"], [short, longer])

    assert together.shape[1] == expected.shape[1] < 77 and alone.shape[1] < together.shape[1]
    torch.testing.assert_close(together, expected, rtol=1e-5, atol=1e-6)
    # The attention mask reaches the text tower: real tokens do not see the padding...
    torch.testing.assert_close(together[0, : alone.shape[1]], alone[0], rtol=1e-5, atol=1e-5)
    # ...but the padding positions are still there, with their own features, as the DiT sees them.
    assert not torch.allclose(together[0, alone.shape[1]], together[0, alone.shape[1] - 1])


def test_clap_truncates_prompts_longer_than_the_position_table(clap_folders):
    encoder = ClapTextEncoder.from_folder(clap_folders["full"])
    assert len(encoder.tokenizer(OVERLONG_PROMPT)["input_ids"]) > CLAP_TOKENS
    features = encoder.encode([NEGATIVE, OVERLONG_PROMPT])
    assert features.shape == (2, 77, TINY_HIDDEN) and torch.isfinite(features).all()


def test_clap_dtype_and_to_return_self(clap_folders):
    encoder = ClapTextEncoder.from_folder(clap_folders["full"], dtype=torch.bfloat16, device="cpu")
    assert next(encoder.model.parameters()).dtype == torch.bfloat16
    assert encoder.to("cpu") is encoder and encoder.device == torch.device("cpu")
    assert encoder.encode("a dog").dtype == torch.float32


def _frames(count, size=32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, size, size, generator=generator) * 2 - 1


def _direct_siglip(folder, frames):
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        if model.config.model_type == "siglip":
            output = model.get_image_features(pixel_values=frames)
        else:  # NaFlex patch sequence as Siglip2ImageProcessor builds it: rows of patches, (y, x, channel) inside
            patches = rearrange(frames, "t c (h p) (w q) -> t (h w) (p q c)", p=8, q=8)
            shapes = torch.tensor([[4, 4]] * len(frames))
            mask = torch.ones(patches.shape[:2], dtype=torch.long)
            output = model.get_image_features(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes)
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_siglip_matches_get_image_features_and_chunks_agree(siglip_folders, kind):
    frames = _frames(7)
    expected = _direct_siglip(siglip_folders[kind], frames)
    one_shot = Siglip2ImageEncoder.from_folder(siglip_folders[kind], batch_size=64)
    chunked = Siglip2ImageEncoder.from_folder(siglip_folders[kind], batch_size=3)

    features = one_shot.encode(frames)

    assert features.dtype == torch.float32 and features.shape == (7, TINY_HIDDEN)
    assert one_shot.feature_dim == TINY_HIDDEN
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.encode(frames), features, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(features[0], features[1])  # frames are not collapsed to one vector


def test_siglip_frame_spec_follows_the_checkpoint_and_checks_frames(siglip_folders):
    encoder = Siglip2ImageEncoder.from_folder(siglip_folders["siglip"])
    assert encoder.frame_spec == FrameSpec(8, 32, "stretch", "bilinear")
    assert SIGLIP2_FRAME_SPEC == FrameSpec(8, 512, "stretch", "bilinear")
    assert SYNCHFORMER_FRAME_SPEC == FrameSpec(25, 224, "short_side_center_crop", "bicubic")
    with pytest.raises(ValueError, match=r"must be 32x32 .*got 48x48"):
        encoder.encode(_frames(2, size=48))
    with pytest.raises(ValueError, match=r"\[T, 3, S, S\]"):
        encoder.encode(_frames(2)[0])
    assert encoder.encode(_frames(0)).shape == (0, TINY_HIDDEN)
    with pytest.raises(ValueError, match="resize must be"):
        FrameSpec(8, 512, "crop", "bilinear")


def test_siglip_bfloat16_gives_float32_features(siglip_folders):
    encoder = Siglip2ImageEncoder.from_folder(siglip_folders["siglip"], dtype=torch.bfloat16, batch_size=2)
    assert next(encoder.model.parameters()).dtype == torch.bfloat16 and encoder.to("cpu") is encoder
    features = encoder.encode(_frames(3))
    assert features.dtype == torch.float32 and torch.isfinite(features).all()


def test_missing_and_incomplete_folders_say_what_to_download(tmp_path, clap_folders):
    with pytest.raises(EncoderLoadError, match=r"not found: .*download laion/larger_clap_general into .*"
                                                r"config.json, the model weights and the tokenizer files"):
        ClapTextEncoder.from_folder(tmp_path / "nowhere")
    with pytest.raises(EncoderLoadError, match=r"has no config.json.*download google/siglip2-base-patch16-512"):
        Siglip2ImageEncoder.from_folder(tmp_path)
    with pytest.raises(EncoderLoadError, match="is a file, not a folder"):
        ClapTextEncoder.from_folder(clap_folders["full"] / "config.json")

    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    shutil.copy(clap_folders["full"] / "config.json", no_tokenizer)
    with pytest.raises(EncoderLoadError, match="config.json but no model weights"):
        ClapTextEncoder.from_folder(no_tokenizer)
    shutil.copy(clap_folders["full"] / "model.safetensors", no_tokenizer)
    with pytest.raises(EncoderLoadError, match=r"no tokenizer files .*download them from laion/larger_clap_general"):
        ClapTextEncoder.from_folder(no_tokenizer)


def test_wrong_model_folders_name_what_they_hold(clap_folders, siglip_folders):
    with pytest.raises(EncoderLoadError, match=r"holds a SigLIP image-text model .*model_type 'siglip'.*"
                                                r"expects laion/larger_clap_general"):
        ClapTextEncoder.from_folder(siglip_folders["siglip"])
    with pytest.raises(CheckpointError, match=r"holds a CLAP audio-text model .*model_type 'clap'.*"
                                              r"expects google/siglip2-base-patch16-512"):
        Siglip2ImageEncoder.from_folder(clap_folders["full"])


def test_weights_without_the_vision_tower_are_refused(tmp_path, siglip_folders):
    source = siglip_folders["siglip"]
    shutil.copy(source / "config.json", tmp_path)
    tensors = load_file(source / "model.safetensors")
    save_file({key: value for key, value in tensors.items() if not key.startswith("vision_model.")},
              tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(EncoderLoadError, match=r"lack \d+ tensors the model needs \(vision_model\."):
        Siglip2ImageEncoder.from_folder(tmp_path)
