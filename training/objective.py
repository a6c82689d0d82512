"""The training objective, one code path for every family: flow matching in the sampler's convention
through the family's `FlowModel` adapter, condition dropout, and REPA.

- Flow matching: `x0 = flow.from_vae(VAE latents)`, `x = (1 - s) x0 + s noise`, target velocity
  `noise - x0`, the loss the mean square of `flow.velocity(x, s, conditions) - target`, with
  `s = sigmoid(N(mean, std))` (logit-normal, mean 0 and std 1 by default). HunyuanVideo-Foley's DiT
  takes the model time `1000 s`. For MMAudio this is its release's loss: the adapter normalises the
  latents with the network's mean/std and runs its time `t = 1 - s` (t = 0 noise), whose velocity
  `data - noise` is ours negated, the same square (and the logit-normal is symmetric, so t has the
  release's distribution too).
- Condition dropout per modality and per sample (`flow.null_features()`): the visual streams (frame
  and Synchformer features together) become the learned null features `empty_clip_feat` /
  `empty_sync_feat`; the text becomes the family's null text: the cached empty-prompt encoding for
  HunyuanVideo-Foley, the stored `empty_string_feat` for MMAudio (as its release trains).
  `torch.where` keeps the null features in the graph every step, so distributed training sees no
  unused parameters.
- REPA: a small MLP projects the hidden states after the first `repa_depth` single-stream blocks
  (HunyuanVideo-Foley: 8, the release config's `depth_single_ssl_encoder`; MMAudio: fused blocks) to
  the width of the target features, which are pooled to the latent rate; the loss is `1 - cosine
  similarity` averaged over frames, added with `repa_weight`. Only those blocks (and what feeds them)
  receive its gradient.

All random draws come from one `torch.Generator` owned by the trainer (checkpointed with the run),
outside the model, so the same draws give the same loss whatever the device or process layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..families import FlowModel, as_flow
from .config import ObjectiveConfig
from .layouts import layout_of, repa_blocks


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
    """The module that is trained (and wrapped by accelerate): the network, the REPA projector, the loss.

    `model` is a family's network or its `FlowModel`; `null_text` the cached empty-prompt encoding
    (used where the family's adapter gives no null text of its own).
    `forward(batch, draws)` returns `{"loss", "flow", "repa"}` (scalars).
    """

    def __init__(self, model: nn.Module | FlowModel, settings: ObjectiveConfig, null_text: torch.Tensor | None = None,
                 repa_dim: int | None = None):
        super().__init__()
        self.flow = as_flow(model)
        self.network = self.flow.network
        self.settings = settings
        if null_text is not None:
            self.register_buffer("null_text", null_text.clone(), persistent=False)
        else:
            self.null_text = None
        layout = layout_of(self.network)
        self.repa_weight = layout.repa_weight if settings.repa_weight is None else settings.repa_weight
        self.use_repa = self.repa_weight > 0
        if self.use_repa:
            blocks = len(repa_blocks(self.network))
            if settings.repa_depth > blocks:
                kind = layout.repa_block_name
                raise ValueError(f"REPA aligns the output of {kind} block {settings.repa_depth} but the model has "
                                 f"{blocks} {kind} blocks; set [objective] repa_depth lower or repa_weight = 0")
            if repa_dim is None:
                raise ValueError("REPA needs target audio features, but the cache holds none: prepare the cache "
                                 "with a REPA encoder, or set [objective] repa_weight = 0")
            self.projector = RepaProjector(self.network.config.hidden, settings.repa_projector_hidden, repa_dim)

    def forward(self, batch: dict[str, torch.Tensor], draws: Draws) -> dict[str, torch.Tensor]:
        flow = self.flow
        latents = batch["latent_mean"]
        if draws.posterior is not None:
            latents = latents + torch.exp(0.5 * batch["latent_logvar"]) * draws.posterior
        x, target = flow_matching_pair(flow.from_vae(latents), draws.noise, draws.sigmas)
        conditions = self.conditions(batch, draws, x.shape[-1])
        if self.use_repa:
            velocity, hidden = self._velocity_and_hidden(x, draws.sigmas, conditions)
            alignment = repa_loss(self.projector(hidden), batch["repa"])
        else:
            velocity, alignment = flow.velocity(x, draws.sigmas, conditions), torch.zeros((), device=x.device)
        loss = F.mse_loss(velocity.float(), target.float())
        return {"loss": loss + self.repa_weight * alignment, "flow": loss.detach(), "repa": alignment.detach()}

    def conditions(self, batch: dict[str, torch.Tensor], draws: Draws, length: int):
        """The batch's conditions with the dropped ones replaced by the family's null features."""
        null_text, null_clip, null_sync = self.flow.null_features()
        if null_text is None:
            if self.null_text is None:
                raise ValueError(f"{self.flow.family.title} trains its text dropout with the encoded empty "
                                 "prompt: pass the cache's null_text")
            null_text = self.null_text
        text, clip, sync = batch["text"], batch["clip"], batch["sync"]
        text = torch.where(draws.drop_text[:, None, None], null_text.to(text.dtype), text)
        visual_off = draws.drop_visual[:, None, None]
        clip = torch.where(visual_off, null_clip.to(clip.dtype), clip)
        sync = torch.where(visual_off, null_sync.to(sync.dtype), sync)
        conditioner = self.flow.conditioner()
        return conditioner.prepare(conditioner.text(text), clip, sync, length)

    def _velocity_and_hidden(self, x: torch.Tensor, sigmas: torch.Tensor, conditions):
        """The velocity and the hidden states after REPA's block (a forward hook: one code path for
        every family, and nothing stays attached to the network)."""
        captured = []
        block = repa_blocks(self.network)[self.settings.repa_depth - 1]
        handle = block.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            velocity = self.flow.velocity(x, sigmas, conditions)
        finally:
            handle.remove()
        return velocity, captured[0]
