"""The training objective: flow matching in the reference convention, condition dropout, and REPA.

- Flow matching: `x = (1 - s) x0 + s noise`, target velocity `noise - x0`, model time `1000 s`,
  with `s = sigmoid(N(mean, std))` (logit-normal, mean 0 and std 1 by default).
- Condition dropout per modality and per sample: the visual streams (SigLIP2 and Synchformer
  together) become the learned null features `empty_clip_feat` / `empty_sync_feat`, the text becomes
  the cached empty-prompt encoding. `torch.where` keeps the null features in the graph every step, so
  distributed training sees no unused parameters.
- REPA: a small MLP projects the hidden states after the first `repa_depth` single-stream blocks
  (8, the release config's `depth_single_ssl_encoder`) to the width of the target features, which
  are pooled to the latent rate; the loss is `1 - cosine similarity` averaged over frames, added with
  `repa_weight`. Only those blocks (and what feeds them) receive its gradient.

All random draws come from one `torch.Generator` owned by the trainer (checkpointed with the run),
outside the model, so the same draws give the same loss whatever the device or process layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ObjectiveConfig


@dataclass
class Draws:
    """The random numbers of one training batch."""

    noise: torch.Tensor  # [B, C, La]
    sigmas: torch.Tensor  # [B] in (0, 1): 1 is pure noise
    drop_visual: torch.Tensor  # [B] bool
    drop_text: torch.Tensor  # [B] bool
    posterior: torch.Tensor | None = None  # [B, C, La] standard normal for a VAE posterior sample

    def to(self, device) -> "Draws":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Draws(move(self.noise), move(self.sigmas), move(self.drop_visual), move(self.drop_text),
                     move(self.posterior))


def logit_normal(batch: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    return torch.sigmoid(torch.randn(batch, generator=generator) * std + mean)


def draw(generator: torch.Generator, latent_shape: tuple[int, ...], settings: ObjectiveConfig,
         sample_posterior: bool = False) -> Draws:
    """Noise, times and dropout decisions for a batch of latents of `latent_shape` [B, C, La] (CPU)."""
    batch = latent_shape[0]
    noise = torch.randn(latent_shape, generator=generator)
    sigmas = logit_normal(batch, generator, settings.timestep_mean, settings.timestep_std)
    drop_visual = torch.rand(batch, generator=generator) < settings.drop_visual
    drop_text = torch.rand(batch, generator=generator) < settings.drop_text
    posterior = torch.randn(latent_shape, generator=generator) if sample_posterior else None
    return Draws(noise, sigmas, drop_visual, drop_text, posterior)


def flow_matching_pair(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy latents at `sigmas`, target velocity)."""
    s = sigmas.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * noise, noise - x0


class RepaProjector(nn.Module):
    """hidden -> target width: Linear, SiLU, Linear, SiLU, Linear (REPA's projector shape)."""

    def __init__(self, hidden: int, width: int, target_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, target_dim))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.net(hidden_states.to(self.net[0].weight.dtype))


def pool_frames(features: torch.Tensor, length: int) -> torch.Tensor:
    """`[B, F, D]` frames averaged (or repeated) to `[B, length, D]`."""
    if features.shape[1] == length:
        return features
    return F.adaptive_avg_pool1d(features.transpose(1, 2).float(), length).transpose(1, 2)


def repa_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`1 - cos(projected, target)` averaged over batch and frames; target pooled to the hidden length."""
    target = pool_frames(target, projected.shape[1]).to(projected.device)
    return 1 - F.cosine_similarity(projected.float(), target.float(), dim=-1).mean()


class FlowMatchingLoss(nn.Module):
    """The module that is trained (and wrapped by accelerate): the DiT, the REPA projector, the loss.

    `forward(batch, draws)` returns `{"loss", "flow", "repa"}` (scalars).
    """

    def __init__(self, dit: nn.Module, settings: ObjectiveConfig, null_text: torch.Tensor, repa_dim: int | None = None):
        super().__init__()
        self.dit = dit
        self.settings = settings
        self.register_buffer("null_text", null_text.clone(), persistent=False)
        self.use_repa = settings.repa_weight > 0
        if self.use_repa:
            blocks = dit.config.single_blocks
            if settings.repa_depth > blocks:
                raise ValueError(f"REPA aligns the output of single block {settings.repa_depth} but the model has "
                                 f"{blocks} single blocks; set [objective] repa_depth lower or repa_weight = 0")
            if repa_dim is None:
                raise ValueError("REPA needs target audio features, but the cache holds none: prepare the cache "
                                 "with a REPA encoder, or set [objective] repa_weight = 0")
            self.projector = RepaProjector(dit.config.hidden, settings.repa_projector_hidden, repa_dim)

    def forward(self, batch: dict[str, torch.Tensor], draws: Draws) -> dict[str, torch.Tensor]:
        dit, settings = self.dit, self.settings
        x0 = batch["latent_mean"]
        if draws.posterior is not None:
            x0 = x0 + torch.exp(0.5 * batch["latent_logvar"]) * draws.posterior
        x, target = flow_matching_pair(x0, draws.noise, draws.sigmas)
        batch_size, audio_length = x.shape[0], x.shape[-1]
        text = torch.where(draws.drop_text[:, None, None], self.null_text.to(batch["text"].dtype), batch["text"])
        clip, sync = batch["clip"], batch["sync"]
        visual_off = draws.drop_visual[:, None, None]
        clip = torch.where(visual_off, dit.null_clip(batch_size, clip.shape[1]).to(clip.dtype), clip)
        sync = torch.where(visual_off, dit.null_sync(batch_size, sync.shape[1]).to(sync.dtype), sync)
        conditions = dit.prepare(text, clip, sync, audio_length)
        t = draws.sigmas * 1000
        if self.use_repa:
            velocity, hidden = dit.velocity(x, t, conditions, capture_single_block=settings.repa_depth - 1)
            alignment = repa_loss(self.projector(hidden), batch["repa"])
        else:
            velocity, alignment = dit.velocity(x, t, conditions), torch.zeros((), device=x.device)
        flow = F.mse_loss(velocity.float(), target.float())
        return {"loss": flow + settings.repa_weight * alignment, "flow": flow.detach(), "repa": alignment.detach()}
