"""Synchformer's audio side and offset head against av-benchmark's DeSync (`reference/mmaudio/parity/
synchformer_av*`): the log-mel front end, the AST features, the offset logits of the first and last 14
segments and the DeSync value, through the loader from a `.pth` file.

Every `synchformer_av*.json` vector found there is checked (the public one, and the kept-back ones with
other seeds and batch sizes when they are put beside it). The visual tower does not enter these outputs
(the vectors give visual features), so unless a vector encodes frames its weights are written as one
zero each: the file stays half the size and the test a few seconds faster.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import _reference_dir, max_abs_error_ratio

from syncfoley.evaluation.desync import desync_from_features
from syncfoley.models.synchformer import OFFSET_GRID_SECONDS, Synchformer

TOLERANCE = 1e-4  # "about 1e-4 relative in fp32" (reference/mmaudio/README.md)


def _vector_names() -> list[str]:
    found = _reference_dir()
    folder = found / "mmaudio" / "parity" if found else None
    names = sorted(p.stem for p in folder.glob("synchformer_av*.json")) if folder else []
    return names or ["synchformer_av"]


def _state_dict(seeded, reference_dir, name: str, config: dict, io: dict) -> dict[str, torch.Tensor]:
    keys = seeded.read_key_list(reference_dir / "mmaudio" / "parity" / f"{name}.keys.txt")
    if not keys:  # the vector's key list points at the release's (identical, same order)
        keys = seeded.read_key_list(reference_dir / "keys" / "synchformer.keys.txt")
    skip_visual = "visual_features" in io
    return {key: (torch.zeros(()).expand(shape) if skip_visual and key.startswith("vfeat_extractor.")
                  else seeded.seeded_tensor(shape, config["seed"] + index, seeded.kind_of(key, shape),
                                            config.get("gain", 1.0)))
            for index, (key, shape) in enumerate(keys)}


@pytest.fixture(scope="module", params=_vector_names())
def av_case(request, reference_dir, seeded, tmp_path_factory):
    """(config, expected tensors, what the package computes) for one vector."""
    from safetensors.torch import load_file

    name = request.param
    folder = reference_dir / "mmaudio" / "parity"
    if not (folder / f"{name}.json").is_file():
        pytest.skip(f"{name} is not in the reference")
    config = json.loads((folder / f"{name}.json").read_text())
    io = load_file(str(folder / f"{name}.io.safetensors"))
    path = tmp_path_factory.mktemp("synchformer_av") / "synchformer_state_dict.pth"
    torch.save(_state_dict(seeded, reference_dir, name, config, io), path)
    model = Synchformer.from_checkpoint(path)  # the loader, from a .pth file
    path.unlink()
    with torch.inference_mode():
        front_end = model.audio_segments(io["wav"])
        audio = model.extract_audio(front_end)
        visual = io["visual_features"]
        window = model.offset_segments
        got = {"expected_audio_frontend": front_end, "expected_audio_features": audio,
               "expected_logits_first14": model.offset_logits(visual[:, :window], audio[:, :window]),
               "expected_logits_last14": model.offset_logits(visual[:, -window:], audio[:, -window:])}
        got["desync"] = desync_from_features(model, visual, audio)
    return config, io, got


@pytest.mark.parametrize("output", ["expected_audio_frontend", "expected_audio_features",
                                    "expected_logits_first14", "expected_logits_last14"])
def test_outputs_match_av_benchmark(av_case, output):
    config, io, got = av_case
    batch, segments = config["B"], config["S"]
    expected = io[output]
    shapes = {"expected_audio_frontend": (batch, segments, 128, 66),
              "expected_audio_features": (batch, segments, 6, 768),
              "expected_logits_first14": (batch, 21), "expected_logits_last14": (batch, 21)}
    assert got[output].shape == expected.shape == shapes[output]
    assert max_abs_error_ratio(got[output], expected) < TOLERANCE


def test_desync_and_offset_classes_match(av_case):
    _, io, got = av_case
    torch.testing.assert_close(OFFSET_GRID_SECONDS, io["offset_grid"].float(), rtol=0, atol=1e-7)
    for window in ("expected_logits_first14", "expected_logits_last14"):
        assert torch.equal(got[window].argmax(-1), io[window].argmax(-1))
    assert got["desync"] == pytest.approx(float(io["expected_desync"].reshape(-1)[0]), abs=1e-6)
