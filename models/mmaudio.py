"""MMAudioNet: the MMAudio flow-matching network (all released sizes, v1 and v2).

Predicts the velocity of mel-VAE latents `[B, La, C]` (channel last; 31.25 per second at 16 kHz,
43.07 at 44.1 kHz) from the flow time t in [0, 1] (0 = noise), CLIP frame features (8 fps),
Synchformer features (8 tokens per 16-frame segment at 25 fps) and CLIP text tokens. Conditions are
projected once per run into `MMAudioConditions` and reused at every step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import torch
from torch import nn

from .checkpoint import Checkpoint, CheckpointError, as_checkpoint, assign_state_dict, require_kind
from .layers import SwiGLU, nearest_exact_index, rope_table
from .mmaudio_blocks import FinalLayer, JointBlock, MMAudioTimestepEmbedder, StreamBlock, input_projections
from .mmaudio_config import MMAudioConfig
from .mmaudio_kernels import condition_rows, distinct_batch
from .ops import CastOps, attach_scales, set_precision

# Buffers the release derives from the sequence lengths; older saves may carry them.
DERIVED_BUFFERS = ("t_embed.freqs", "latent_rot", "clip_rot")


@dataclass
class MMAudioConditions:
    """Everything the network needs from the conditions, computed once per run.

    The first five fields are batched (batch first). Sync features are kept one row per Synchformer
    token with `sync_index` naming the token behind each latent (the release's nearest-exact
    upsampling), so per-token work on them runs once per token; `sync_f` gives the upsampled view.
    """

    clip_f: torch.Tensor  # [B, Lc, H] projected CLIP frame features
    sync_tokens: torch.Tensor  # [B, Ls, H] projected Synchformer features
    text_f: torch.Tensor  # [B, Lt, H] projected text tokens
    clip_f_c: torch.Tensor  # [B, H] pooled clip condition
    text_f_c: torch.Tensor  # [B, H] pooled text condition
    sync_index: torch.Tensor  # [La] the sync token behind each latent
    latent_rope: torch.Tensor  # [2, La, D/2] cos/sin, positions 0..La-1
    clip_rope: torch.Tensor  # [2, Lc, D/2] cos/sin, frequencies scaled by La/Lc

    BATCHED = ("clip_f", "sync_tokens", "text_f", "clip_f_c", "text_f_c")

    @property
    def sync_f(self) -> torch.Tensor:
        """`[B, La, H]`: the sync features upsampled to the latent length."""
        return self.sync_tokens.index_select(1, self.sync_index)

    def condition_rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`mmaudio_kernels.condition_rows` of these conditions, once per run (and autograd mode)."""
        if getattr(self, "_rows", (None,))[0] is not torch.is_grad_enabled():
            self._rows = torch.is_grad_enabled(), condition_rows(self.sync_tokens, self.sync_index)
        return self._rows[1]

    @property
    def batch(self) -> int:
        return self.clip_f.shape[0]

    @property
    def latent_length(self) -> int:
        return self.sync_index.shape[0]

    def lengths(self) -> tuple[int, int, int, int]:
        """(La, Lc, Ls, Lt)."""
        return self.latent_length, self.clip_f.shape[1], self.sync_tokens.shape[1], self.text_f.shape[1]

    def map(self, fn) -> "MMAudioConditions":
        """Apply `fn` to every batched tensor."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return MMAudioConditions(**{k: fn(v) if k in self.BATCHED else v for k, v in values.items()})

    def expand(self, batch: int) -> "MMAudioConditions":
        if self.batch == batch:
            return self
        if self.batch != 1:
            raise ValueError(f"conditions for {self.batch} samples cannot serve a batch of {batch}")
        return self.map(lambda t: t.expand(batch, *t.shape[1:]))

    def select(self, index: slice | torch.Tensor) -> "MMAudioConditions":
        return self.map(lambda t: t[index])

    @staticmethod
    def cat(parts: Sequence["MMAudioConditions"]) -> "MMAudioConditions":
        """Stack conditions along the batch (e.g. conditional and unconditional for CFG)."""
        first = parts[0]
        for other in parts[1:]:
            if other.lengths() != first.lengths():
                raise ValueError(f"conditions of different lengths cannot share a batch: (La, Lc, Ls, Lt) "
                                 f"{first.lengths()} vs {other.lengths()}")
        stacked = {name: torch.cat([getattr(p, name) for p in parts]) for name in first.BATCHED}
        return MMAudioConditions(**stacked, sync_index=first.sync_index, latent_rope=first.latent_rope,
                                 clip_rope=first.clip_rope)


class MMAudioNet(nn.Module):
    def __init__(self, config: MMAudioConfig, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.config = c = config
        kw = dict(operations=operations, device=device, dtype=dtype)
        tensor = dict(device=device, dtype=dtype)
        for name, projection in input_projections(c, **kw).items():
            self.add_module(name, projection)
        self.clip_cond_proj = operations.Linear(c.hidden, c.hidden, **tensor)
        self.text_cond_proj = operations.Linear(c.hidden, c.hidden, **tensor)
        self.global_cond_mlp = SwiGLU(c.hidden, c.mlp_hidden, c.hidden, **kw)
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, c.sync_tokens_per_segment, c.sync_dim, **tensor))
        self.t_embed = MMAudioTimestepEmbedder(c.hidden, c.time_frequencies, 1 if c.v2 else 10000, **kw)
        self.joint_blocks = nn.ModuleList(
            JointBlock(c.hidden, c.heads, c.mlp_hidden, pre_only=(i == c.joint_blocks - 1), **kw)
            for i in range(c.joint_blocks)
        )
        self.fused_blocks = nn.ModuleList(
            StreamBlock(c.hidden, c.heads, c.mlp_hidden, 3, **kw) for _ in range(c.fused_blocks)
        )
        self.final_layer = FinalLayer(c.hidden, c.latent_dim, **kw)
        # Latent normalisation statistics and learned "empty" features (the unconditional branch).
        self.latent_mean = nn.Parameter(torch.zeros(1, 1, c.latent_dim, **tensor), requires_grad=False)
        self.latent_std = nn.Parameter(torch.ones(1, 1, c.latent_dim, **tensor), requires_grad=False)
        self.empty_string_feat = nn.Parameter(torch.zeros(c.text_length, c.text_dim, **tensor), requires_grad=False)
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, c.clip_dim, **tensor))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, c.sync_dim, **tensor))

    # ------------------------------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        source: str | os.PathLike | Mapping[str, torch.Tensor] | Checkpoint,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        weight_dtype: torch.dtype | None = None,
        operations=CastOps,
    ) -> "MMAudioNet":
        """Load a released (or same-layout) network: `.pth`, `.safetensors` or a state dict.

        Size and v1/v2 are read off the tensor shapes; the network is built on the meta device and
        the loaded tensors are assigned. `dtype` is the compute dtype (default: the file's);
        `weight_dtype` stores matrix weights in another dtype (e.g. fp8), cast to `dtype` on use.
        """
        checkpoint = as_checkpoint(source)
        state_dict = require_kind(
            checkpoint, "mmaudio_net", "MMAudio network loader",
            hint="Use the MMAudio VAE or vocoder loader for those files.",
        )
        state_dict = {k: v for k, v in state_dict.items() if k not in DERIVED_BUFFERS}
        try:
            config = MMAudioConfig.from_state_dict(state_dict)
        except ValueError as exc:
            raise CheckpointError(f"{checkpoint.path or 'the given state dict'}: {exc}") from exc
        with torch.device("meta"):
            model = cls(config, operations=operations)
        state_dict = attach_scales(model, state_dict)  # scaled fp8 files
        assign_state_dict(model, state_dict, f"an MMAudio network of config {config.variant}")
        dtype = dtype or state_dict["empty_clip_feat"].dtype
        set_precision(model, dtype, weight_dtype if weight_dtype != dtype else None)
        return model.to(device).eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (learned features are never stored in fp8)."""
        return self.empty_clip_feat.dtype

    @property
    def device(self) -> torch.device:
        return self.empty_clip_feat.device

    # ------------------------------------------------------------------------------------------
    # Latent normalisation (channel-last statistics `[1, 1, C]`)
    # ------------------------------------------------------------------------------------------
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents `[B, La, C]` -> the network's space: (z - mean) / std, computed in fp32."""
        return ((z.float() - self.latent_mean.float()) / self.latent_std.float()).to(z.dtype)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Sampled latents `[B, La, C]` -> VAE latents: x * std + mean, computed in fp32."""
        return (x.float() * self.latent_std.float() + self.latent_mean.float()).to(x.dtype)

    # ------------------------------------------------------------------------------------------
    # Conditions
    # ------------------------------------------------------------------------------------------
    def prepare(
        self,
        clip: torch.Tensor | None,
        sync: torch.Tensor | None,
        text: torch.Tensor | None,
        latent_length: int,
        clip_length: int | None = None,
        sync_length: int | None = None,
    ) -> MMAudioConditions:
        """Project the conditions once for latents of `latent_length`.

        clip `[B, Lc, 1024]`, sync `[B, Ls, 768]` (Ls a multiple of 8), text `[B, Lt, 1024]`; inputs
        of batch 1 are shared by the others. `None` takes the learned empty features: clip and sync
        at the lengths that go with `latent_length` (or `clip_length` / `sync_length`), text the
        stored `empty_string_feat`.
        """
        c = self.config
        batch = _common_batch(clip=clip, sync=sync, text=text)
        if clip is None or sync is None:
            default_clip, default_sync = c.condition_lengths(latent_length)
            if clip is None:
                clip = self.empty_clip_feat.unsqueeze(0).expand(1, clip_length or default_clip, -1)
            if sync is None:
                sync = self.empty_sync_feat.unsqueeze(0).expand(1, sync_length or default_sync, -1)
        if text is None:
            text = self.empty_string_feat.unsqueeze(0)
        _check_width("clip", clip, c.clip_dim)
        _check_width("sync", sync, c.sync_dim)
        _check_width("text", text, c.text_dim)
        per_segment = c.sync_tokens_per_segment
        if sync.shape[1] == 0 or sync.shape[1] % per_segment:
            raise ValueError(f"sync features have {sync.shape[1]} tokens, not a positive multiple of "
                             f"{per_segment} per Synchformer segment")
        if clip.shape[1] == 0 or text.shape[1] == 0:
            raise ValueError("clip and text features need at least one token each")

        dtype, device = self.dtype, self.device
        sync = sync.to(device, dtype).unflatten(1, (-1, per_segment)) + self.sync_pos_emb
        sync_tokens = self.sync_input_proj(sync.flatten(1, 2))
        clip_f = self.clip_input_proj(clip.to(device, dtype))
        text_f = self.text_input_proj(text.to(device, dtype))
        batched = dict(clip_f=clip_f, sync_tokens=sync_tokens, text_f=text_f,
                       clip_f_c=self.clip_cond_proj(clip_f.mean(dim=1)),
                       text_f_c=self.text_cond_proj(text_f.mean(dim=1)))
        batched = {k: v.expand(batch, *v.shape[1:]) for k, v in batched.items()}
        return MMAudioConditions(
            **batched,
            sync_index=nearest_exact_index(sync_tokens.shape[1], latent_length, device),
            **self.rope_tables(latent_length, clip_f.shape[1]),
        )

    def rope_tables(self, latent_length: int, clip_length: int) -> dict[str, torch.Tensor]:
        """Rotary tables for one (La, Lc): clip frequencies scaled by La/Lc so that clip frames line
        up with latent time (the release rebuilds these for every duration)."""
        head_dim = self.config.head_dim
        positions = lambda n: torch.arange(n, dtype=torch.float32)  # noqa: E731
        return dict(
            latent_rope=rope_table(positions(latent_length), head_dim).to(self.device),
            clip_rope=rope_table(positions(clip_length), head_dim, scaling=latent_length / clip_length).to(self.device),
        )

    def empty_conditions(self, batch: int, latent_length: int, clip_length: int | None = None,
                         sync_length: int | None = None) -> MMAudioConditions:
        """The unconditional branch: learned empty clip/sync features and the stored empty text."""
        return self.prepare(None, None, None, latent_length, clip_length, sync_length).expand(batch)

    # ------------------------------------------------------------------------------------------
    # Velocity
    # ------------------------------------------------------------------------------------------
    def velocity(self, x: torch.Tensor, t: torch.Tensor, conditions: MMAudioConditions) -> torch.Tensor:
        """Velocity `[B, La, C]` (fp32) of latents `x` `[B, La, C]` at flow time `t` `[B]` (0 = noise)."""
        batch = x.shape[0]
        conditions = conditions.expand(batch)
        if x.shape[1] != conditions.latent_length:
            raise ValueError(f"latents have {x.shape[1]} frames but the conditions were prepared for "
                             f"{conditions.latent_length}")
        dtype = self.dtype
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(batch) if t.ndim else t.repeat(batch)
        global_c = self.t_embed(t, dtype) + self.global_cond_mlp(conditions.clip_f_c + conditions.text_f_c)
        # The latents' condition per sync token (the blocks gather one per latent), as rows.
        tokens, samples, rows = conditions.condition_rows()
        extended = tokens + global_c.index_select(0, samples)
        global_c = global_c.unsqueeze(1)  # [B, 1, H]
        distinct, copies = distinct_batch(x)  # CFG's branches share the latents: project them once
        latent = self.audio_input_proj(distinct.to(dtype)).repeat(copies, 1, 1)
        clip, text = conditions.clip_f, conditions.text_f
        for block in self.joint_blocks:
            latent, clip, text = block(latent, clip, text, global_c, extended, rows, conditions.latent_rope,
                                       conditions.clip_rope)
        for block in self.fused_blocks:
            latent = block(latent, extended, conditions.latent_rope, rows)
        return self.final_layer(latent, global_c).float()

    def forward(self, x: torch.Tensor, t: torch.Tensor, clip: torch.Tensor | None = None,
                sync: torch.Tensor | None = None, text: torch.Tensor | None = None) -> torch.Tensor:
        """One-shot velocity; for sampling loops call `prepare` once and `velocity` per step."""
        return self.velocity(x, t, self.prepare(clip, sync, text, x.shape[1]))

    def compile_blocks(self, **options) -> "MMAudioNet":
        """torch.compile every block's forward (each compiles once per sequence length)."""
        for block in [*self.joint_blocks, *self.fused_blocks]:
            if "forward" not in vars(block):
                block.forward = torch.compile(block.forward, **options)
        return self


def _common_batch(**inputs: torch.Tensor | None) -> int:
    batches = {name: x.shape[0] for name, x in inputs.items() if x is not None}
    batch = max(batches.values(), default=1)
    wrong = {name: b for name, b in batches.items() if b not in (1, batch)}
    if wrong:
        raise ValueError(f"condition batch sizes {batches} disagree: each must be {batch} or 1")
    return batch


def _check_width(name: str, x: torch.Tensor, width: int) -> None:
    if x.ndim != 3 or x.shape[-1] != width:
        raise ValueError(f"{name} features must be [batch, tokens, {width}], got {tuple(x.shape)}")


__all__ = ["MMAudioNet", "MMAudioConditions", "MMAudioConfig"]
