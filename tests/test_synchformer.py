"""Synchformer: visual parity with the reference, the release's key layout, checkpoint files, the audio
side (against independent implementations where one exists) and segmenting."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import max_abs_error_ratio
from torch import nn

from syncfoley.models.checkpoint import CheckpointError
from syncfoley.models.motionformer import ClsPooling
from syncfoley.models.synchformer import (
    OFFSET_GRID_SECONDS, Synchformer, SynchformerConfig, offset_seconds, release, segment_frames, tiny,
)
from syncfoley.models.synchformer_audio import (
    AST_MEAN, AST_STD, SEGMENT_SAMPLES, htk_mel_filterbank, log_mel_segments, mel_spectrogram, sample_segments,
)


def _layout(config: SynchformerConfig) -> list[tuple[str, tuple[int, ...]]]:
    with torch.device("meta"):
        model = Synchformer(config)
    return [(name, tuple(t.shape)) for name, t in model.state_dict().items()]


@pytest.fixture(scope="module")
def full_parity(parity):
    config, state_dict, io = parity("synchformer_full")
    return config, Synchformer.from_checkpoint(state_dict), io


@pytest.fixture(scope="module")
def tiny_state_dict(seeded):
    return seeded.seeded_state_dict(_layout(tiny()), 77)


@pytest.fixture(scope="module")
def tiny_model(tiny_state_dict):
    return Synchformer.from_checkpoint(tiny_state_dict)


def _tiny_segments(batch: int, count: int, seed: int = 0) -> torch.Tensor:
    size = tiny().image_size
    return torch.rand(batch, count, 16, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------------------------
# Visual parity and layout
# ------------------------------------------------------------------------------------------------
def test_extract_visual_matches_reference(full_parity):
    config, model, io = full_parity
    seed, count = config["seed"], config["S"]
    segments = torch.rand(1, count, 16, 3, 224, 224, generator=torch.Generator().manual_seed(seed + 9)) * 2 - 1
    with torch.inference_mode():
        features = model.extract_visual(segments)
    expected = io["expected_features"]
    assert features.shape == expected.shape == (1, count, 8, 768)
    assert max_abs_error_ratio(features, expected) < 1e-3


def test_meta_state_dict_matches_release_key_list(reference_dir, seeded):
    release_keys = seeded.read_key_list(reference_dir / "keys" / "synchformer.keys.txt")
    assert _layout(release()) == release_keys  # names, shapes and order
    assert sum(math.prod(shape) for _, shape in release_keys) == 237_460_245


def test_config_is_read_off_the_shapes():
    for config in (release(), tiny(), SynchformerConfig(dim=192, visual_depth=2, audio_depth=3, sync_depth=2,
                                                image_size=48, offset_classes=11)):
        with torch.device("meta"):
            state_dict = Synchformer(config).state_dict()
        assert SynchformerConfig.from_state_dict(state_dict) == config
    assert release().offset_segments == 14 and release().audio_tokens_per_segment == 6


# ------------------------------------------------------------------------------------------------
# Checkpoint files
# ------------------------------------------------------------------------------------------------
def _outputs(model: Synchformer) -> tuple[torch.Tensor, ...]:
    audio = torch.randn(1, 16000 * 5, generator=torch.Generator().manual_seed(3)) * 0.1
    with torch.inference_mode():
        visual = model.extract_visual(_tiny_segments(1, 2))
        audio_features = model.extract_audio(model.audio_segments(audio[:, : SEGMENT_SAMPLES + 13 * 5120]))
        logits = model.offset_logits(torch.cat([visual] * 7, dim=1), audio_features)
    return visual, audio_features, logits


def test_checkpoint_round_trip_pth_and_safetensors(tiny_state_dict, tiny_model, tmp_path):
    from safetensors.torch import save_file

    torch.save({"state_dict": tiny_state_dict}, tmp_path / "synchformer.pth")
    save_file(tiny_state_dict, str(tmp_path / "synchformer.safetensors"))
    expected = _outputs(tiny_model)
    for name in ("synchformer.pth", "synchformer.safetensors"):
        loaded = Synchformer.from_checkpoint(tmp_path / name)
        assert loaded.config == tiny() and not loaded.training
        for got, want in zip(_outputs(loaded), expected):
            # safetensors tensors may sit unaligned in memory, which changes SIMD rounding (~1e-7)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_loader_names_a_wrong_checkpoint():
    dac_like = {"encoder.block.0.weight_v": torch.zeros(4, 1, 7), "encoder.block.0.weight_g": torch.ones(4, 1, 1)}
    with pytest.raises(CheckpointError, match="DAC-VAE.*Synchformer loader expects a Synchformer"):
        Synchformer.from_checkpoint(dac_like)


def test_loader_is_strict(tiny_state_dict):
    incomplete = {k: v for k, v in tiny_state_dict.items() if k != "transformer.off_head.bias"}
    with pytest.raises(CheckpointError, match=r"missing: transformer\.off_head\.bias"):
        Synchformer.from_checkpoint(incomplete)


def test_weights_stored_in_bf16_stay_close(tiny_state_dict, tiny_model):
    stored = Synchformer.from_checkpoint(tiny_state_dict, weight_dtype=torch.bfloat16)
    assert stored.vfeat_extractor.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    segments = _tiny_segments(1, 1, seed=5)
    with torch.inference_mode():
        assert max_abs_error_ratio(stored.extract_visual(segments), tiny_model.extract_visual(segments)) < 3e-2


def test_chunked_extraction_is_identical(tiny_model):
    segments = _tiny_segments(2, 3, seed=1)
    with torch.inference_mode():
        whole = tiny_model.extract_visual(segments)
        chunked = tiny_model.extract_visual(segments, chunk_segments=4)
    assert whole.shape == (2, 3, 8, 192)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(whole[1, 2], tiny_model.extract_visual(segments[1:, 2:])[0, 0])


# ------------------------------------------------------------------------------------------------
# Audio side and offset head
# ------------------------------------------------------------------------------------------------
def test_mel_front_end_matches_an_independent_implementation():
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    filters = mel_filter_bank(513, 128, 0.0, 8000.0, 16000, norm=None, mel_scale="htk")
    torch.testing.assert_close(htk_mel_filterbank().double(), torch.from_numpy(filters), rtol=0, atol=1e-6)
    wave = torch.randn(SEGMENT_SAMPLES, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    expected = spectrogram(
        wave.numpy(), window_function(400, "hann", periodic=True, frame_length=1024, center=True),
        frame_length=1024, hop_length=160, fft_length=1024, power=2.0, center=True, pad_mode="reflect",
        mel_filters=filters, mel_floor=1e-30)
    got = mel_spectrogram(wave.float())
    assert got.shape == (128, 65)  # 0.64 s, 10 ms hop, centred frames
    assert max_abs_error_ratio(got, torch.from_numpy(expected)) < 1e-5


def test_log_mel_segments_follow_the_video_segments():
    seconds = 2.0
    audio = torch.randn(2, int(16000 * seconds))
    mel = log_mel_segments(audio)
    video_segments = (int(25 * seconds) - 16) // 8 + 1
    assert mel.shape == (2, video_segments, 128, 66)  # AST's max_spec_t: 12 x 6 patches of 16, stride 10
    # The 66th frame is padding added in the log domain, then normalised.
    torch.testing.assert_close(mel[..., 65], torch.full_like(mel[..., 65], (0 - AST_MEAN) / (2 * AST_STD)))
    segment_3 = audio[:, 3 * 5120: 3 * 5120 + SEGMENT_SAMPLES]
    expected = (torch.log(mel_spectrogram(segment_3) + 1e-6) - AST_MEAN) / (2 * AST_STD)
    torch.testing.assert_close(mel[:, 3, :, :65], expected)
    with pytest.raises(ValueError, match="shorter than one 0.64 s segment"):
        log_mel_segments(torch.zeros(1, 10000))


def test_ast_matches_transformers_ast_model(tiny_state_dict, tiny_model):
    from transformers import ASTConfig, ASTModel

    renames = {"attention.attention.query": "attention.q_proj", "attention.attention.key": "attention.k_proj",
               "attention.attention.value": "attention.v_proj", "attention.output.dense": "attention.o_proj",
               "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2", "encoder.layer.": "layers."}
    weights = {}
    for key, value in tiny_state_dict.items():
        if key.startswith("afeat_extractor.ast."):
            key = key[len("afeat_extractor.ast."):]
            for old, new in renames.items():
                key = key.replace(old, new)
            weights[key] = value
    reference = ASTModel(ASTConfig(hidden_size=192, num_hidden_layers=1, num_attention_heads=3,
                                   intermediate_size=768, max_length=66)).eval()
    reference.load_state_dict(weights, strict=True)
    mel = log_mel_segments(torch.randn(3, SEGMENT_SAMPLES, generator=torch.Generator().manual_seed(2)))[:, 0]
    with torch.inference_mode():
        expected = reference(input_values=mel.transpose(1, 2)).last_hidden_state  # HF takes (time, mel)
        got, grid = tiny_model.afeat_extractor.ast(mel)
    assert grid == (12, 6)
    assert max_abs_error_ratio(got, expected) < 1e-5


def test_cls_pooling_matches_torch_encoder_layer():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(96, 3, 384, dropout=0.0, activation=nn.GELU(), layer_norm_eps=1e-6,
                                       batch_first=True, norm_first=True).eval()
    pooling = ClsPooling(96, 3, 384)
    state = {k: v + 0.1 * torch.randn_like(v) for k, v in layer.state_dict().items()}  # non-trivial norms
    layer.load_state_dict(state)
    pooling.load_state_dict({**state, "cls_token": torch.randn(1, 1, 96)})
    tokens = torch.randn(5, 9, 96)
    with torch.inference_mode():
        expected = layer(torch.cat([pooling.cls_token.expand(5, -1, -1), tokens], dim=1))[:, 0]
        torch.testing.assert_close(pooling(tokens), expected, rtol=1e-5, atol=1e-5)


def test_full_audio_side_and_offset_head_run(full_parity):
    _, model, _ = full_parity
    audio = torch.randn(1, SEGMENT_SAMPLES + 13 * 5120, generator=torch.Generator().manual_seed(4)) * 0.1
    visual = torch.randn(1, 14, 8, 768, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        audio_features = model.extract_audio(log_mel_segments(audio).unsqueeze(2))  # release layout
        logits = model.offset_logits(visual, audio_features)
        without_audio = model.offset_logits(visual, torch.zeros_like(audio_features))
    assert audio_features.shape == (1, 14, 6, 768) and logits.shape == (1, 21)
    assert torch.isfinite(logits).all() and (logits - without_audio).abs().max() > 1e-3 * logits.abs().max()
    assert offset_seconds(logits).shape == (1,) and OFFSET_GRID_SECONDS[10] == 0
    with pytest.raises(ValueError, match="windows of exactly 14 segments"):
        model.offset_logits(visual[:, :13], audio_features[:, :13])


# ------------------------------------------------------------------------------------------------
# Segmenting
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [16, 23, 24, 41])
def test_segment_frames_matches_slicing(frames):
    video = torch.randn(2, frames, 3, 4, 5)
    segments = segment_frames(video)
    count = (frames - 16) // 8 + 1
    expected = torch.stack([video[:, i * 8: i * 8 + 16] for i in range(count)], dim=1)
    assert segments.shape == (2, count, 16, 3, 4, 5)
    torch.testing.assert_close(segments, expected, rtol=0, atol=0)
    samples = SEGMENT_SAMPLES + frames * 640  # 640 samples per video frame at 16 kHz / 25 fps
    audio = torch.randn(2, samples)
    expected_audio = torch.stack([audio[:, i * 5120: i * 5120 + SEGMENT_SAMPLES]
                                  for i in range((samples - SEGMENT_SAMPLES) // 5120 + 1)], dim=1)
    torch.testing.assert_close(sample_segments(audio), expected_audio, rtol=0, atol=0)


def test_segment_frames_rejects_short_clips():
    with pytest.raises(ValueError, match="fewer than one segment"):
        segment_frames(torch.zeros(1, 15, 3, 8, 8))
