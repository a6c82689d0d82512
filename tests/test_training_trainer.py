"""The training loop end to end on the tiny models: overfitting, exact resume, the CLI and the node."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from test_training_support import CLIP_SECONDS, prepared

from syncfoley.models.dit import FoleyDiT
from syncfoley.models.lora import read_lora
from syncfoley.training.config import TrainConfig
from syncfoley.training.data import ClipDataset
from syncfoley.training.trainer import Trainer, TrainingStopped

OVERFIT_STEPS, OVERFIT_FACTOR = 40, 10.0


@pytest.fixture(scope="module")
def data(tiny_models, tmp_path_factory):
    return prepared(tiny_models, tmp_path_factory.mktemp("training"))


def config_for(data, tiny_models, output, **train) -> TrainConfig:
    config = TrainConfig(output=str(output), name="tiny")
    config.data.videos, config.data.cache = str(data["videos"]), str(data["cache"])
    config.data.clip_seconds = CLIP_SECONDS
    config.model.checkpoint = str(tiny_models["dit"])
    config.objective.repa_depth = 1
    config.train.checkpoint_every, config.train.log_every = 0, 1
    for key, value in train.items():  # "section__key" or a top-level key
        section, _, name = key.rpartition("__")
        setattr(getattr(config, section) if section else config, name, value)
    return config.validate()


def test_a_tiny_model_trained_from_scratch_overfits_a_few_clips(data, tiny_models, tmp_path):
    from tiny_models import tiny_dit_config

    c = tiny_dit_config()
    config = config_for(data, tiny_models, tmp_path / "run", mode="full", data__batch_size=3,
                        optim__learning_rate=3e-3, train__max_steps=OVERFIT_STEPS, train__save_dtype="fp32",
                        model__checkpoint="", model__config=dict(hidden=64, heads=2, triple_blocks=1, single_blocks=1,
                                                                latent_dim=c.latent_dim, text_dim=c.text_dim,
                                                                clip_dim=c.clip_dim, sync_dim=c.sync_dim))
    trainer = Trainer(config, dataset=ClipDataset(data["cache"]))
    before = trainer.evaluate()
    result = trainer.train()
    after = trainer.evaluate()
    # Measured: 1.32 -> 0.063 (21x) in 40 steps; the training loss of one batch, 1.40 -> 0.047.
    assert before / after > OVERFIT_FACTOR, (before, after)
    assert result.history[0].flow / result.history[-1].flow > OVERFIT_FACTOR / 2
    assert all(0 < step.repa < 2 for step in result.history)
    # The export is a released-layout DiT that the model loader reads back with the tuned weights.
    tuned = FoleyDiT.from_checkpoint(result.output)
    for name, param in trainer.tuned_model().state_dict().items():
        torch.testing.assert_close(tuned.state_dict()[name], param)
    log = [json.loads(line) for line in (config.output_dir / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, OVERFIT_STEPS + 1))


def resume_config(data, tiny_models, output) -> TrainConfig:
    """Everything random at once: dropout of conditions and adapters, posterior samples, REPA, EMA,
    accumulation over batches that wrap around epochs."""
    return config_for(data, tiny_models, output, data__batch_size=2, data__latent="sample", lora__rank=4,
                      lora__dropout=0.1, objective__drop_visual=0.5, objective__drop_text=0.5,
                      optim__learning_rate=1e-3, optim__schedule="cosine", optim__warmup_steps=2,
                      train__max_steps=6, train__gradient_accumulation=2, train__ema_decay=0.9)


def test_an_interrupted_and_resumed_run_ends_with_the_same_weights(data, tiny_models, tmp_path):
    straight = Trainer(resume_config(data, tiny_models, tmp_path / "straight"))
    straight.train()

    config = resume_config(data, tiny_models, tmp_path / "stopped")
    first = Trainer(config)
    stopped = first.train(stop_at=2)
    assert stopped.steps == 2 and stopped.checkpoint.name == "step-00000002" and stopped.output is None
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run"):
        Trainer(config).train()
    seen = []  # a second interruption, the way Ctrl-C stops the command
    with pytest.raises(TrainingStopped, match="stopped after step 4; resume from .*step-00000004"):
        Trainer(config).train(resume=True, callback=seen.append, should_stop=lambda: len(seen) == 2)
    resumed = Trainer(config)
    result = resumed.train(resume=True)
    assert result.steps == 6 and [h.step for h in result.history] == [5, 6]

    expected = {n: p for n, p in straight.module.named_parameters() if p.requires_grad}
    actual = {n: p for n, p in resumed.module.named_parameters() if p.requires_grad}
    assert expected.keys() == actual.keys() and any("projector" in n for n in actual)
    assert all(torch.equal(expected[n], actual[n]) for n in expected)
    assert all(torch.equal(straight.ema.shadow[n], resumed.ema.shadow[n]) for n in straight.ema.shadow)
    assert not torch.equal(first.ema.shadow[next(iter(first.ema.shadow))], resumed.ema.shadow[next(iter(first.ema.shadow))])
    a, b = load_file(str(tmp_path / "straight" / "tiny.safetensors")), load_file(str(result.output))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_train_command_prepares_trains_resumes_and_exports(data, tiny_models, tmp_path):
    from syncfoley.cli import main

    foley = tiny_models["dit"].parent
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f"""
name = "cli_lora"
output = "run"
[data]
videos = "{data['videos']}"
clip_seconds = 1.0
max_clips_per_video = 1
[model]
checkpoint = "{tiny_models['dit']}"
vae = "{foley / 'tiny_vae.safetensors'}"
synchformer = "{foley / 'tiny_synchformer.pth'}"
clap = "{foley / 'clap'}"
siglip = "{foley / 'siglip'}"
[lora]
rank = 2
[objective]
repa_depth = 1
[train]
max_steps = 4
log_every = 1
""", encoding="utf-8")
    assert main(["train", str(recipe), "--prepare-only"]) == 0
    assert len(json.loads((tmp_path / "run" / "cache" / "index.json").read_text())["clips"]) == 3
    assert main(["train", str(recipe), "--max-steps", "2", "--no-progress"]) == 0
    assert read_lora(tmp_path / "run" / "cli_lora.safetensors").metadata["steps"] == "2"
    assert main(["train", str(recipe), "--resume", "--no-progress"]) == 0  # on to the recipe's 4 steps
    adapter = read_lora(tmp_path / "run" / "cli_lora.safetensors")
    assert adapter.rank == 2 and adapter.metadata["steps"] == "4"
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    with pytest.raises(SystemExit, match=r"\[train\] max_steps must be >= 1"):
        main(["train", str(recipe), "--max-steps", "0"])


def test_the_training_node_runs_in_the_headless_runner(data, tiny_models, tmp_path, monkeypatch):
    from syncfoley.nodes.host import Progress, host
    from syncfoley.nodes.loaders import SyncFoleyModelLoader
    from syncfoley.nodes.train import NODE_CLASS_MAPPINGS, TrainFoleyLoRA
    from syncfoley.runner.execute import Executor

    updates = []

    class Recording(Progress):
        def __init__(self, description):
            self.description = description

        def update(self, value, total=None):
            updates.append((self.description, value))

    loras = tiny_models["dit"].parent / "loras"
    monkeypatch.setattr(host(), "models_dir", tiny_models["dit"].parent.parent)
    monkeypatch.setattr(host(), "input_dir", data["videos"].parent)
    monkeypatch.setattr(host(), "output_dir", tmp_path / "output")
    monkeypatch.setattr(host(), "progress_factory", lambda total, description: Recording(description))
    monkeypatch.setattr(host(), "device", "cpu")
    settings = {"dataset": data["videos"].name, "steps": 3, "learning_rate": 1e-3, "lora_rank": 2,
                "output_name": "node_lora", "vae": "tiny_vae.safetensors", "synchformer": "tiny_synchformer.pth",
                "clap": "clap", "siglip": "siglip", "clip_seconds": 1.0}
    prompt = {"1": {"class_type": "SyncFoleyModelLoader", "inputs": {"model_name": "tiny_dit.safetensors",
                                                                     "precision": "fp32"}},
              "2": {"class_type": "SyncFoleyTrainLoRA", "inputs": {**settings, "model": ["1", 0]}}}
    registry = {"SyncFoleyModelLoader": SyncFoleyModelLoader, **NODE_CLASS_MAPPINGS}
    try:
        result = Executor(registry).run(prompt)
        text = result.ui["2"]["text"][0]
        assert text.startswith("3 steps: loss ") and "node_lora.safetensors" in text
        assert updates == [("caching features", n) for n in range(4)] + [("training", n) for n in (1, 2, 3)]
        assert read_lora(loras / "node_lora.safetensors").rank == 2
        assert (tmp_path / "output" / "foley_training" / "node_lora" / "checkpoints" / "step-00000003").is_dir()

        # Called directly: the returned model carries the LoRA, the input model is left as it was.
        base = FoleyDiT.from_checkpoint(tiny_models["dit"])
        before = {k: v.clone() for k, v in base.state_dict().items()}
        tuned, loss = TrainFoleyLoRA().train(**{**settings, "output_name": "direct"}, model=base)["result"]
        assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
        adapted = "triple_blocks.0.audio_self_attn_qkv.weight"
        assert not torch.equal(tuned.network.state_dict()[adapted], before[adapted]) and loss.startswith("3 steps")
    finally:
        shutil.rmtree(loras, ignore_errors=True)
