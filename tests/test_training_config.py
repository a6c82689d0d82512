"""Training recipes: TOML in, validated dataclasses out, with errors that name the key."""
from __future__ import annotations

import pytest

from syncfoley.training.config import ConfigError, TrainConfig, load_config

RECIPE = """
name = "dogs"
output = "runs/dogs"
mode = "full"

[data]
videos = "clips"
clip_seconds = 5.12
batch_size = 4

[model]
config = {hidden = 64, heads = 2, triple_blocks = 1, single_blocks = 2}

[optim]
learning_rate = 3e-4
betas = [0.9, 0.99]
warmup_steps = 10
schedule = "cosine"
min_lr_ratio = 0.1

[train]
max_steps = 110
mixed_precision = "bf16"
"""


def write(tmp_path, text: str, name: str = "recipe.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_recipe_is_read_with_paths_relative_to_it_and_defaults_elsewhere(tmp_path):
    config = load_config(write(tmp_path, RECIPE))
    assert config.mode == "full" and config.name == "dogs"
    assert config.data.videos == str(tmp_path / "clips") and config.output == str(tmp_path / "runs/dogs")
    assert config.cache_dir == tmp_path / "runs/dogs/cache"
    assert config.data.clip_seconds == 5.12 and config.data.stride == 5.12 and config.data.batch_size == 4
    assert config.optim.betas == (0.9, 0.99) and config.train.mixed_precision == "bf16"
    assert config.objective.drop_visual == config.objective.drop_text == 0.1  # the paper's defaults
    assert config.objective.repa_depth == 8 and config.lora.scale_alpha == 16.0
    assert config.model.dit_config().hidden == 64 and config.model.dit_config().single_blocks == 2


def test_the_schedule_warms_up_then_follows_a_cosine_to_the_floor(tmp_path):
    optim = load_config(write(tmp_path, RECIPE)).optim
    factors = [optim.lr_factor(step, 110) for step in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.55)
    assert optim.lr_factor(110, 110) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_json_recipes_and_overrides_work_too(tmp_path):
    path = write(tmp_path, '{"data": {"videos": "v"}, "train": {"max_steps": 5}}', "recipe.json")
    config = load_config(path, {"train": {"max_steps": 7}, "output": str(tmp_path / "elsewhere")})
    assert config.train.max_steps == 7 and config.output == str(tmp_path / "elsewhere")


@pytest.mark.parametrize("text, message", [
    ('[data]\nvideos = "v"\nlr = 1', r"\[data\] has no key 'lr'; known: videos"),
    ('[data]\nvideos = "v"\n[optim]\nlearning_rate = "fast"', r"\[optim\] learning_rate must be a number"),
    ('[data]\nvideos = "v"\n[optim]\nlearning_rate = -1.0', r"\[optim\] learning_rate must be > 0"),
    ('[data]\nvideos = "v"\nclip_seconds = 1.005', r"whole number of 20 ms audio latents"),
    ('[data]\nvideos = "v"\n[train]\nmixed_precision = "fp8"', r"mixed_precision must be 'no', 'bf16' or 'fp16'"),
    ('[data]\nvideos = "v"\n[model]\nconfig = "huge"', r"unknown DiT config 'huge'"),
    ('mode = "qlora"\n[data]\nvideos = "v"', r"mode must be 'lora' or 'full'"),
    ('[train]\nmax_steps = 10', r"\[data\] videos is required"),
    ('[data]\nvideos = "v"\n[optim]\nbetas = [0.9]', r"betas must have 2 items"),
    ('[data\nvideos = "v"', r"not valid TOML"),
    ('colour = "red"', r"unknown key 'colour'"),
])
def test_bad_recipes_are_refused_with_the_key_and_the_fix(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_configs_built_in_code_validate_the_same_way():
    config = TrainConfig()
    config.data.videos = "v"
    config.lora.rank = 0
    with pytest.raises(ConfigError, match=r"\[lora\] rank must be >= 1"):
        config.validate()


def test_the_recipe_documented_in_the_module_is_valid_and_lists_the_defaults(tmp_path):
    import textwrap

    from syncfoley.training import config as module

    documented = textwrap.dedent(module.__doc__.split("every default:\n")[1])
    config = load_config(write(tmp_path, documented))
    defaults = TrainConfig()
    for section in ("model", "lora", "objective", "optim", "train"):
        assert getattr(config, section) == getattr(defaults, section), section
    assert config.data.videos == str(tmp_path / "my_videos")
    config.data.videos = defaults.data.videos
    assert config.data == defaults.data
    assert (config.name, config.mode, config.output) == (defaults.name, defaults.mode, str(tmp_path / defaults.output))
