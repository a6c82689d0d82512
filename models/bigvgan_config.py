"""BigVGAN configuration: NVIDIA's `config.json` keys, the two releases MMAudio uses, and checks of a
config against a generator's tensor shapes (a wrong `config.json` is named key by key)."""
from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, fields
from typing import Mapping

import torch

from .checkpoint import CheckpointError

RELEASE_DILATIONS = (1, 3, 5)
# Sample rates of the releases, by (mel bins, hop): MMAudio's 16 kHz v1 and NVIDIA's 44.1 kHz v2.
RELEASE_SAMPLE_RATES = {(80, 256): 16000, (128, 512): 44100}


@dataclass(frozen=True)
class BigVGANConfig:
    num_mels: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    resblock: str = "1"
    activation: str = "snakebeta"
    snake_logscale: bool = True
    use_tanh_at_final: bool = True  # v1 always ends with tanh; v2 configs may clamp instead
    use_bias_at_final: bool = True
    sampling_rate: int | None = None

    def __post_init__(self):
        def ints(values):
            return tuple(int(v) for v in values)

        object.__setattr__(self, "upsample_rates", ints(self.upsample_rates))
        object.__setattr__(self, "upsample_kernel_sizes", ints(self.upsample_kernel_sizes))
        object.__setattr__(self, "resblock_kernel_sizes", ints(self.resblock_kernel_sizes))
        object.__setattr__(self, "resblock_dilation_sizes", tuple(ints(d) for d in self.resblock_dilation_sizes))
        object.__setattr__(self, "resblock", str(self.resblock))
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError(f"upsample_rates {self.upsample_rates} and upsample_kernel_sizes "
                             f"{self.upsample_kernel_sizes} must have the same length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError(f"resblock_kernel_sizes {self.resblock_kernel_sizes} and resblock_dilation_sizes "
                             f"{self.resblock_dilation_sizes} must have the same length")
        if self.resblock not in ("1", "2"):
            raise ValueError(f"resblock must be '1' (AMPBlock1) or '2' (AMPBlock2), got '{self.resblock}'")
        if self.activation not in ("snakebeta", "snake"):
            raise ValueError(f"activation must be 'snakebeta' or 'snake', got '{self.activation}'")

    @property
    def hop(self) -> int:
        return math.prod(self.upsample_rates)

    # Release configurations ----------------------------------------------------------------------------
    @classmethod
    def release_16k(cls, upsample_initial_channel: int = 1536) -> "BigVGANConfig":
        """MMAudio's `best_netG.pt` (BigVGAN v1, from Make-An-Audio 2): 80 mels, hop 256, tanh output."""
        return cls(80, (4, 4, 2, 2, 2, 2), (8, 8, 4, 4, 4, 4), upsample_initial_channel, (3, 7, 11),
                   (RELEASE_DILATIONS,) * 3, sampling_rate=16000)

    @classmethod
    def release_v2_44k(cls, upsample_initial_channel: int = 1536) -> "BigVGANConfig":
        """`nvidia/bigvgan_v2_44khz_128band_512x`: 128 mels, hop 512, no final tanh or bias."""
        return cls(128, (8, 4, 2, 2, 2, 2), (16, 8, 4, 4, 4, 4), upsample_initial_channel, (3, 7, 11),
                   (RELEASE_DILATIONS,) * 3, use_tanh_at_final=False, use_bias_at_final=False,
                   sampling_rate=44100)

    @classmethod
    def from_json(cls, config: Mapping) -> "BigVGANConfig":
        """NVIDIA's `config.json` dict; its training keys (batch size, discriminators, ...) are ignored."""
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(required - set(config))
        if missing:
            raise ValueError(f"the BigVGAN config lacks {missing}; pass the generator's config.json")
        return cls(**{k: v for k, v in config.items() if k in known})

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "BigVGANConfig":
        """The release config the shapes show, at the file's widths and kernel sizes.

        A conv_post bias marks v1 (MMAudio's 16 kHz: tanh output), none marks v2 (clamped output).
        Upsampling strides are half the transposed kernels (true of every BigVGAN release); the
        AMP blocks' dilations are the releases' (1, 3, 5), which a file of other dilations needs
        its config.json for.
        """
        seen = _shapes(state_dict)
        v1 = "conv_post.bias" in state_dict
        dilations = []
        for kernel, count in zip(seen["resblock_kernel_sizes"], seen["dilation_counts"]):
            if count > len(RELEASE_DILATIONS):
                raise CheckpointError(f"the generator has {count} dilated convolutions per AMP block; the "
                                      "release dilations are (1, 3, 5): pass its config.json")
            dilations.append(RELEASE_DILATIONS[:count])
        hop = math.prod(k // 2 for k in seen["upsample_kernel_sizes"])
        return cls(
            num_mels=seen["num_mels"], upsample_rates=tuple(k // 2 for k in seen["upsample_kernel_sizes"]),
            upsample_kernel_sizes=seen["upsample_kernel_sizes"],
            upsample_initial_channel=seen["upsample_initial_channel"],
            resblock_kernel_sizes=seen["resblock_kernel_sizes"], resblock_dilation_sizes=tuple(dilations),
            resblock=seen["resblock"], activation=seen["activation"], use_tanh_at_final=v1,
            use_bias_at_final=v1, sampling_rate=RELEASE_SAMPLE_RATES.get((seen["num_mels"], hop)),
        )

    def check_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Raise a CheckpointError naming every config key the tensor shapes contradict."""
        seen = _shapes(state_dict)
        wrong = [f"'{key}' is {_show(getattr(self, key))} but the file has {_show(seen[key])}"
                 for key in ("num_mels", "upsample_initial_channel", "upsample_kernel_sizes", "resblock",
                             "resblock_kernel_sizes", "activation", "use_bias_at_final")
                 if getattr(self, key) != seen[key]]
        counts = tuple(len(d) for d in self.resblock_dilation_sizes)
        if len(self.upsample_rates) != len(seen["upsample_kernel_sizes"]):
            wrong.append(f"'upsample_rates' has {len(self.upsample_rates)} stages but the file has "
                         f"{len(seen['upsample_kernel_sizes'])}")
        if counts != seen["dilation_counts"]:
            wrong.append(f"'resblock_dilation_sizes' gives {counts} dilations per block but the file has "
                         f"{seen['dilation_counts']}")
        if wrong:
            raise CheckpointError("the BigVGAN config does not match the generator file: " + "; ".join(wrong)
                                  + ". Use the config.json that came with this generator.")


def _show(value) -> str:
    return f"'{value}'" if isinstance(value, str) else str(list(value) if isinstance(value, tuple) else value)


def _shapes(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """What the tensor shapes say about the config (keys as in config.json)."""
    try:
        conv_pre = state_dict["conv_pre.weight_v"]
    except KeyError as exc:
        raise CheckpointError(f"not a BigVGAN generator state dict: tensor {exc} is missing") from exc
    ups = _indexed(state_dict, r"ups\.(\d+)\.0\.weight_v")
    if not ups:
        raise CheckpointError("not a BigVGAN generator state dict: no upsampling layers 'ups.N.0.weight_v'")
    per_stage = len(_indexed(state_dict, r"resblocks\.(\d+)\.activations\.0\.act\.alpha")) // len(ups)
    resblock = "1" if "resblocks.0.convs1.0.weight_v" in state_dict else "2"
    conv_name = "convs1" if resblock == "1" else "convs"
    kernels, counts = [], []
    for j in range(per_stage):
        convs = _indexed(state_dict, rf"resblocks\.{j}\.{conv_name}\.(\d+)\.weight_v")
        kernels.append(convs[0].shape[-1] if convs else 0)
        counts.append(len(convs))
    return {
        "num_mels": conv_pre.shape[1],
        "upsample_initial_channel": conv_pre.shape[0],
        "upsample_kernel_sizes": tuple(t.shape[-1] for t in ups),
        "resblock": resblock,
        "resblock_kernel_sizes": tuple(kernels),
        "dilation_counts": tuple(counts),
        "activation": "snakebeta" if "activation_post.act.beta" in state_dict else "snake",
        "use_bias_at_final": "conv_post.bias" in state_dict,
    }


def _indexed(state_dict: Mapping[str, torch.Tensor], pattern: str) -> list[torch.Tensor]:
    """The tensors whose names match `pattern` (one integer group), in index order."""
    matcher = re.compile(pattern)
    found = sorted(((int(m.group(1)), t) for k, t in state_dict.items() if (m := matcher.fullmatch(k))),
                   key=lambda pair: pair[0])
    return [t for _, t in found]
