"""Reading checkpoint files: safe pickles, corrupt files, wrappers, clear errors."""
from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from safetensors.torch import save_file

from syncfoley.models.checkpoint import (
    Checkpoint,
    CheckpointError,
    describe,
    identify,
    read_checkpoint,
    require_kind,
)

DIT_LIKE = {"triple_blocks.0.audio_mod.linear.weight": torch.ones(6, 2), "final_layer.linear.bias": torch.ones(3)}


class CarriesCode:
    """Unpickling this would call os.system; weights_only loading must refuse it."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_release_wrapper_and_metadata_are_unwrapped(tmp_path):
    path = tmp_path / "vae_128d_48k.pth"
    torch.save({"state_dict": {"encoder.block.0.weight_v": torch.ones(2, 1, 7)},
                "metadata": {"kwargs": {"latent_dim": 128}}}, path)
    checkpoint = read_checkpoint(path)
    assert checkpoint.kind == "dac_vae"
    assert checkpoint.metadata["kwargs"] == {"latent_dim": 128}
    assert list(checkpoint.state_dict) == ["encoder.block.0.weight_v"]


def test_safetensors_metadata_is_kept(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(DIT_LIKE, str(path), metadata={"format": "pt", "note": "x"})
    checkpoint = read_checkpoint(path)
    assert checkpoint.metadata["note"] == "x"
    torch.testing.assert_close(checkpoint.state_dict["final_layer.linear.bias"], torch.ones(3))


def test_pickle_that_carries_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.ones(1), "payload": CarriesCode()}, path)
    with pytest.raises(CheckpointError, match="refusing to load .*evil.pth.*carries code"):
        read_checkpoint(path)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(CarriesCode()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the refusal is the only thing the user sees: no warning first
        with pytest.raises(CheckpointError, match="refusing to load|could not be read"):
            read_checkpoint(raw)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_files_are_reported(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    if suffix == ".pth":
        torch.save(DIT_LIKE, path)
    else:
        save_file(DIT_LIKE, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path)


def test_missing_empty_and_folder_paths(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pth"):
        read_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty \\(0 bytes\\)"):
        read_checkpoint(tmp_path / "empty.safetensors")
    with pytest.raises(CheckpointError, match="is a folder"):
        read_checkpoint(tmp_path)


def test_non_state_dict_pickle_is_reported(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.ones(1)], path)
    with pytest.raises(CheckpointError, match="holds list, not a state dict"):
        read_checkpoint(path)


def test_identify_and_require_kind():
    assert identify(DIT_LIKE) == "foley_dit"
    assert identify({"vfeat_extractor.cls_token": torch.ones(1)}) == "synchformer"
    assert identify({"something.else": torch.ones(1)}) is None
    assert "2 tensors, 15 parameters" in describe(DIT_LIKE)
    wrapped = Checkpoint({"model." + k: v for k, v in DIT_LIKE.items()}, path="x.pth")
    assert set(require_kind(wrapped, "foley_dit", "Foley model loader")) == set(DIT_LIKE)
    with pytest.raises(CheckpointError, match="'x.pth' is an unrecognised model checkpoint .* expects a DAC-VAE"):
        require_kind(Checkpoint({"a": torch.ones(1)}, path="x.pth"), "dac_vae", "DAC-VAE loader")
