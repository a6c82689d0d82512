"""Training MMAudio with the same code as HunyuanVideo-Foley: the release's loss through the adapter,
the feature cache of its encoders, recipes that name its files, overfitting, exports that load back,
LoRA, exact resume, REPA on a fused block, and the Train LoRA node."""
from __future__ import annotations

import shutil

import pytest
import torch
from tiny_mmaudio import tiny_network_config, write_tiny_mmaudio

from syncfoley.models.lora import apply_lora, read_lora
from syncfoley.models.mmaudio import MMAudioNet
from syncfoley.training.config import ConfigError, ObjectiveConfig, TrainConfig, load_config
from syncfoley.training.objective import Draws, FlowMatchingLoss
from syncfoley.training.run import ensure_cache, load_encoders
from syncfoley.training.trainer import Trainer

CLIP_SECONDS = 1.0  # 32 latents of the 16 kHz set: 16384 samples, 24 ms past the clip
LATENTS = 32


@pytest.fixture(scope="module")
def mmaudio(tmp_path_factory):
    """The tiny 16 kHz set, two 2 s clips of the synthetic world (captions in sidecars) and their cache
    (with REPA targets, which runs that leave REPA off ignore)."""
    from syncfoley.demo.world import generate_clip, write_clip

    root = tmp_path_factory.mktemp("mmaudio_training")
    parts = write_tiny_mmaudio(root / "models")
    videos = root / "videos"
    videos.mkdir()
    for i in range(2):
        write_clip(generate_clip(10 + i, duration=2.0, size=(32, 32), sample_rate=16000), videos / f"clip{i}.mp4")
    data = {"root": root, "parts": parts, "videos": videos, "cache": root / "cache"}
    data["index"] = ensure_cache(recipe(data, "prepare", objective__repa_weight=0.5))
    return data


def recipe(data, output, **settings) -> TrainConfig:
    """A recipe over the shared cache that finds every part in the model folder; `section__key=value`."""
    config = TrainConfig(output=str(data["root"] / output), name="tiny")
    config.data.videos, config.data.cache = str(data["videos"]), str(data["cache"])
    config.data.clip_seconds = CLIP_SECONDS
    config.model.family, config.model.models = "mmaudio", str(data["root"] / "models")
    config.train.checkpoint_every, config.train.log_every = 0, 1
    for key, value in settings.items():
        section, _, name = key.rpartition("__")
        setattr(getattr(config, section) if section else config, name, value)
    return config.validate()


def release_loss(net: MMAudioNet, latents, noise, sigmas, batch, drop_visual, drop_text) -> torch.Tensor:
    """MMAudio's training loss as its release states it: channel-last latents normalised by the network's
    statistics, t = 1 - sigma with t = 0 noise, x_t = (1 - t) noise + t data, target data - noise; dropped
    conditions become the empty features (the stored empty text for the text) before preparing."""
    data, start = net.normalize(latents.transpose(1, 2)), noise.transpose(1, 2)
    t = 1 - sigmas
    x_t = (1 - t)[:, None, None] * start + t[:, None, None] * data
    clip = torch.where(drop_visual[:, None, None], net.empty_clip_feat, batch["clip"])
    sync = torch.where(drop_visual[:, None, None], net.empty_sync_feat, batch["sync"])
    text = torch.where(drop_text[:, None, None], net.empty_string_feat, batch["text"])
    predicted = net.velocity(x_t, t, net.prepare(clip, sync, text, x_t.shape[1]))
    return (predicted - (data - start)).square().mean()


def fake_batch(net: MMAudioNet, batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    c, g = net.config, torch.Generator().manual_seed(seed)
    return {"latent_mean": torch.randn(batch, c.latent_dim, LATENTS, generator=g) * 2 + 1,
            "latent_logvar": torch.zeros(batch, c.latent_dim, LATENTS),
            "text": torch.randn(batch, 77, c.text_dim, generator=g),
            "clip": torch.randn(batch, 8, c.clip_dim, generator=g),
            "sync": torch.randn(batch, 16, c.sync_dim, generator=g), "repa": torch.randn(batch, 40, 6, generator=g)}


def test_the_objective_through_the_adapter_is_the_release_loss(mmaudio):
    net = MMAudioNet.from_checkpoint(mmaudio["parts"]["model"])
    batch = fake_batch(net)
    g = torch.Generator().manual_seed(1)
    noise, sigmas = torch.randn(batch["latent_mean"].shape, generator=g), torch.tensor([0.1, 0.4, 0.7, 0.95])
    visual, text = torch.tensor([True, False, True, False]), torch.tensor([True, True, False, False])
    # A cached empty prompt that is not the network's: MMAudio's text dropout must not use it.
    loss = FlowMatchingLoss(net, ObjectiveConfig(), null_text=torch.randn(77, net.config.text_dim))
    parts = loss(batch, Draws(noise, sigmas, visual, text))
    expected = release_loss(net, batch["latent_mean"], noise, sigmas, batch, visual, text)
    torch.testing.assert_close(parts["flow"], expected, rtol=1e-5, atol=1e-6)
    assert parts["loss"] == parts["flow"] and parts["repa"] == 0  # the release trains without REPA
    kept = loss(batch, Draws(noise, sigmas, visual & False, text & False))["flow"]
    assert not torch.allclose(kept, parts["flow"])  # the dropout did replace conditions


def test_the_cache_holds_what_mmaudios_encoders_give(mmaudio):
    from syncfoley.media import load_audio
    from syncfoley.pipeline import encode_video
    from syncfoley.training.data import ClipDataset

    dataset = ClipDataset(mmaudio["cache"])
    index = mmaudio["index"]
    assert len(dataset) == 4 and index["skipped"] == [] and index["family"] == "mmaudio" and index["latents"] == 32
    assert {k: tuple(v.shape) for k, v in dataset[0].items()} == {
        "latent_mean": (20, 32), "latent_logvar": (20, 32), "text": (77, 48), "clip": (8, 32), "sync": (16, 192),
        "repa": (51, 64)}
    encoders = load_encoders(recipe(mmaudio, "encoders"))
    last = next(i for i, c in enumerate(dataset.clips) if c["video"].endswith("clip1.mp4") and c["start"] == 1.0)
    video, item = mmaudio["videos"] / "clip1.mp4", dataset[last]
    wav, _ = load_audio(video, 16000, channels=1)
    window = torch.nn.functional.pad(wav[:, 16000:], (0, 16384 - wav[:, 16000:].shape[-1]))  # padded past the end
    mean, logvar = encoders.vae.encode(window[None])
    torch.testing.assert_close(item["latent_mean"], mean[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(item["latent_logvar"], logvar[0], rtol=1e-5, atol=1e-5)
    visual = encode_video(video, encoders.image_encoder, encoders.sync_encoder, start=1.0, max_duration=CLIP_SECONDS)
    torch.testing.assert_close(item["clip"], visual.clip[0])
    torch.testing.assert_close(item["sync"], visual.sync[0])
    caption = (mmaudio["videos"] / "clip1.txt").read_text().strip()
    torch.testing.assert_close(item["text"], encoders.text_encoder.encode([caption])[0], rtol=1e-5, atol=1e-6)


def test_recipes_find_mmaudios_parts_in_a_folder_and_refuse_mixed_sets(mmaudio, tmp_path):
    parts = mmaudio["parts"]
    model = recipe(mmaudio, "found").model
    assert (model.checkpoint, model.vae, model.vocoder, model.synchformer, model.clip) == tuple(
        str(parts[k]) for k in ("model", "vae", "vocoder", "synchformer", "clip"))
    models = mmaudio["root"] / "models"

    def refused(text: str, message: str, data: str = ""):
        path = tmp_path / "recipe.toml"
        path.write_text(f'[data]\nvideos = "v"\n{data}\n{text}', encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_config(path)

    refused(f'[model]\nmodels = "{models}"',
            r"no complete model set.*Check \[model\] family \(\"hunyuanvideo-foley\"\)")
    refused(f'[model]\nclip = "{parts["clip"]}"', r"\[model\] clip is part of mmaudio sets.*family = \"mmaudio\"")
    refused('[model]\nfamily = "mmaudio"\nclap = "clap"', r"clap is part of hunyuanvideo-foley sets")
    refused('[model]\nfamily = "mmaaudio"', r"\[model\] family must be one of hunyuanvideo-foley, mmaudio")
    refused(f'[model]\nmodels = "{models}"\nfamily = "mmaudio"',
            r"at least 0.64 s \(one Synchformer segment\) for MMAudio", data="clip_seconds = 0.5")
    with pytest.raises(ConfigError, match=r"\[model\] checkpoint is required for MMAudio"):
        Trainer(recipe(mmaudio, "scratch", model__checkpoint="", model__models=""))
    with pytest.raises(ConfigError, match=r"family is \"hunyuanvideo-foley\" but the model is MMAudio.*"
                                          r"set \[model\] family = \"mmaudio\""):
        Trainer(recipe(mmaudio, "wrong", model__family="hunyuanvideo-foley", model__models="",
                       model__checkpoint=str(parts["model"]), model__config="tiny"))


def test_the_train_command_fine_tunes_mmaudio_from_its_model_folder(mmaudio, tmp_path):
    from syncfoley.cli import main

    recipe_file = tmp_path / "mmaudio.toml"
    text = f"""
name = "cli_mmaudio"
output = "run"
[data]
videos = "{mmaudio['videos']}"
cache = "{mmaudio['cache']}"
clip_seconds = {CLIP_SECONDS}
[model]
family = "mmaudio"
models = "{mmaudio['root'] / 'models'}"
[lora]
rank = 2
[train]
max_steps = 2
"""
    recipe_file.write_text(text, encoding="utf-8")
    assert main(["train", str(recipe_file), "--no-progress"]) == 0  # the cache (built alike) is current
    adapter = read_lora(tmp_path / "run" / "cli_mmaudio.safetensors")
    assert adapter.metadata["steps"] == "2" and adapter.metadata["syncfoley_family"] == "mmaudio"
    recipe_file.write_text(text.replace(f'models = "{mmaudio["root"] / "models"}"', ""), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"\[model\] checkpoint is required for MMAudio"):
        main(["train", str(recipe_file)])


def test_a_tiny_mmaudio_overfits_two_clips_and_its_export_loads_back(mmaudio):
    from syncfoley.families import as_flow
    from syncfoley.pipeline.loaders import load_foley_model

    config = recipe(mmaudio, "full", mode="full", data__batch_size=4, optim__learning_rate=1e-3,
                    train__max_steps=20, train__save_dtype="fp32")
    trainer = Trainer(config)
    before = trainer.evaluate(repeats=2)
    result = trainer.train()
    after = trainer.evaluate(repeats=2)
    # Measured: 2.60 -> 1.20 (2.2x) in 20 steps; 3.6x in 40.
    assert before / after > 1.6, (before, after)
    assert all(step.repa == 0 for step in result.history)
    exported = MMAudioNet.from_checkpoint(result.output)  # the release's key names, loaded strictly
    tuned, base = trainer.tuned_model(), MMAudioNet.from_checkpoint(mmaudio["parts"]["model"])
    assert exported.state_dict().keys() == base.state_dict().keys()
    for name, param in tuned.state_dict().items():
        torch.testing.assert_close(exported.state_dict()[name], param)
    for frozen in ("latent_mean", "latent_std", "empty_string_feat"):  # kept as released
        assert torch.equal(exported.state_dict()[frozen], base.state_dict()[frozen])
    assert not torch.equal(exported.empty_clip_feat, base.empty_clip_feat)  # trained by the visual dropout
    loaded = load_foley_model(result.output, "fp32")
    assert loaded.family.name == "mmaudio" and isinstance(as_flow(loaded).network, MMAudioNet)


def test_lora_targets_train_export_and_apply_to_an_mmaudio_network(mmaudio):
    from syncfoley.training.lora import target_modules

    names = target_modules(MMAudioNet(tiny_network_config()))
    for stream in ("latent", "clip", "text"):
        assert f"joint_blocks.0.{stream}_block.attn.qkv" in names
    assert {"joint_blocks.0.latent_block.linear1", "joint_blocks.0.latent_block.ffn.w2", "fused_blocks.0.attn.qkv",
            "fused_blocks.0.linear1", "fused_blocks.0.ffn.w1", "fused_blocks.0.ffn.w3"} <= set(names)
    assert not [n for n in names if "adaLN" in n or not n.startswith(("joint_blocks", "fused_blocks"))]
    assert len(names) == 5 + 1 + 1 + 5  # the pre-only clip and text streams have only their qkv

    config = recipe(mmaudio, "lora", data__batch_size=2, lora__rank=2, optim__learning_rate=1e-2, train__max_steps=3)
    trainer = Trainer(config)
    result = trainer.train()
    adapter = read_lora(result.output)
    assert adapter.rank == 2 and adapter.metadata["syncfoley_family"] == "mmaudio" and set(adapter.layers) == set(names)
    merged = apply_lora(MMAudioNet.from_checkpoint(mmaudio["parts"]["model"]), result.output)
    x, t = torch.randn(2, LATENTS, 20, generator=torch.Generator().manual_seed(3)), torch.tensor([0.3, 0.8])
    batch = fake_batch(merged, 2)
    base = MMAudioNet.from_checkpoint(mmaudio["parts"]["model"])

    def velocity(net):
        return net.velocity(x, t, net.prepare(batch["clip"], batch["sync"], batch["text"], LATENTS))

    with torch.no_grad():
        expected = velocity(trainer.network)  # peft's adapters
        torch.testing.assert_close(velocity(merged), expected, rtol=1e-4, atol=1e-5)
        assert (expected - velocity(base)).abs().max() > 1e-3  # the adapters do change the output


def test_an_interrupted_mmaudio_run_resumes_to_the_same_weights(mmaudio):
    """Everything random at once: condition and adapter dropout, posterior samples, REPA on the fused
    block, EMA, accumulation over batches that wrap around the epoch."""
    def config(output):
        return recipe(mmaudio, output, data__batch_size=2, data__latent="sample", lora__rank=2, lora__dropout=0.1,
                      objective__drop_visual=0.5, objective__drop_text=0.5, objective__repa_weight=0.5,
                      objective__repa_depth=1, optim__learning_rate=1e-3, optim__schedule="cosine",
                      train__max_steps=4, train__gradient_accumulation=2, train__ema_decay=0.9)

    straight = Trainer(config("straight"))
    straight.train()
    first = Trainer(config("stopped"))
    assert first.train(stop_at=2).checkpoint.name == "step-00000002"
    resumed = Trainer(config("stopped"))
    result = resumed.train(resume=True)
    assert [h.step for h in result.history] == [3, 4] and all(h.repa > 0 for h in result.history)
    expected = {n: p for n, p in straight.module.named_parameters() if p.requires_grad}
    actual = {n: p for n, p in resumed.module.named_parameters() if p.requires_grad}
    assert expected.keys() == actual.keys() and any("projector" in n for n in actual)
    assert all(torch.equal(expected[n], actual[n]) for n in expected)
    assert all(torch.equal(straight.ema.shadow[n], resumed.ema.shadow[n]) for n in straight.ema.shadow)


def test_repa_on_mmaudio_aligns_a_fused_blocks_output():
    from syncfoley.models.mmaudio_config import sized

    c = tiny_network_config()
    torch.manual_seed(0)
    net = MMAudioNet(sized(20, 2, 3, 2, clip_dim=c.clip_dim, text_dim=c.text_dim, sync_dim=c.sync_dim))
    settings = ObjectiveConfig(repa_weight=0.5, repa_depth=1)
    with_repa = FlowMatchingLoss(net, settings, repa_dim=6)
    without = FlowMatchingLoss(net, ObjectiveConfig(repa_weight=0.0), repa_dim=6)
    batch, g = fake_batch(net, 2), torch.Generator().manual_seed(2)
    draws = Draws(torch.randn(2, 20, LATENTS, generator=g), torch.tensor([0.3, 0.7]), torch.zeros(2, dtype=torch.bool),
                  torch.zeros(2, dtype=torch.bool))

    def gradients(module):
        net.zero_grad(set_to_none=True)
        parts = module(batch, draws)
        parts["loss"].backward()
        return parts, {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    net.requires_grad_(True)
    parts, repa = gradients(with_repa)
    _, plain = gradients(without)
    assert 0 < parts["repa"] < 2 and parts["loss"] > parts["flow"]
    after = [n for n in plain if n.startswith(("fused_blocks.1.", "final_layer."))]
    below = [n for n in plain if n.startswith(("fused_blocks.0.", "joint_blocks.")) and plain[n].abs().max() > 0]
    assert after and all(torch.equal(repa[n], plain[n]) for n in after)
    assert below and [n for n in below if torch.allclose(repa[n], plain[n], rtol=1e-4, atol=1e-8)] == []
    with pytest.raises(ValueError, match="output of fused block 3 but the model has 2 fused blocks"):
        FlowMatchingLoss(net, ObjectiveConfig(repa_weight=0.5, repa_depth=3), repa_dim=6)


def test_the_training_node_trains_an_mmaudio_lora_in_the_headless_runner(mmaudio, tmp_path, monkeypatch):
    from syncfoley.nodes.host import host
    from syncfoley.nodes.loaders import SyncFoleyModelLoader
    from syncfoley.nodes.train import NODE_CLASS_MAPPINGS
    from syncfoley.runner.execute import Executor

    parts = mmaudio["parts"]
    loras = parts["model"].parent / "loras"
    monkeypatch.setattr(host(), "models_dir", mmaudio["root"] / "models")
    monkeypatch.setattr(host(), "input_dir", mmaudio["videos"].parent)
    monkeypatch.setattr(host(), "output_dir", tmp_path / "output")
    monkeypatch.setattr(host(), "device", "cpu")
    settings = {"dataset": mmaudio["videos"].name, "steps": 2, "learning_rate": 1e-3, "lora_rank": 2,
                "output_name": "mmaudio_lora", "vae": "v1-16.pth", "synchformer": "synchformer_state_dict.pth",
                "clap": "none", "siglip": "none", "clip_seconds": CLIP_SECONDS, "repa_weight": 0.0,
                "clip": "open_clip_pytorch_model.bin", "vocoder": "best_netG"}
    prompt = {"1": {"class_type": "SyncFoleyModelLoader", "inputs": {"model_name": "mmaudio_small_16k.pth",
                                                                     "precision": "fp32"}},
              "2": {"class_type": "SyncFoleyTrainLoRA", "inputs": {**settings, "model": ["1", 0]}}}
    executor = Executor({"SyncFoleyModelLoader": SyncFoleyModelLoader, **NODE_CLASS_MAPPINGS})
    try:
        result = executor.run(prompt)
        assert result.ui["2"]["text"][0].startswith("2 steps: loss ")
        assert read_lora(loras / "mmaudio_lora.safetensors").metadata["syncfoley_family"] == "mmaudio"
        prompt["2"]["inputs"].update(output_name="no_clip", clip="none")
        with pytest.raises(Exception, match=r"clip: training MMAudio needs its MMAudio CLIP file"):
            executor.run(prompt)
    finally:
        shutil.rmtree(loras, ignore_errors=True)
