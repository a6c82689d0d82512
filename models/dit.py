"""FoleyDiT: the HunyuanVideo-Foley multimodal diffusion transformer.

Predicts the flow-matching velocity of 128-d audio latents (50 per second) from the timestep, CLAP
text tokens, SigLIP2 frame features (8 fps) and Synchformer features (8 tokens per 16-frame segment
at 25 fps). Conditions are projected once per run into `FoleyConditions` and reused at every step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from .checkpoint import Checkpoint, assign_state_dict, as_checkpoint, require_kind
from .dit_blocks import FinalLayer, RopeTables, SingleStreamBlock, TripleStreamBlock
from .dit_config import FoleyDiTConfig
from .embeddings import AudioEmbedder, ConditionProjection, TimestepEmbedder, sync_projection, visual_projection
from .layers import nearest_exact_index, rope_positions, rope_table
from .ops import CastOps, attach_scales, set_precision


@dataclass
class FoleyConditions:
    """Everything the network needs from the conditions, computed once per run.

    Batched fields have the batch first; `rope` depends only on the sequence lengths.
    """

    text_kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per triple block: K (rotated), V [B,Lt,H,D]
    visual: torch.Tensor  # [B, Lv, hidden] projected SigLIP2 features
    sync: torch.Tensor  # [B, Ls, hidden] projected Synchformer features, one per sync token
    sync_index: torch.Tensor  # [La] the sync token behind each audio frame (nearest-exact resize)
    rope: RopeTables

    @property
    def batch(self) -> int:
        return self.visual.shape[0]

    @property
    def audio_length(self) -> int:
        return self.sync_index.shape[0]

    def map(self, fn) -> "FoleyConditions":
        """Apply `fn` to every batched tensor."""
        return FoleyConditions(
            tuple((fn(k), fn(v)) for k, v in self.text_kv), fn(self.visual), fn(self.sync), self.sync_index,
            self.rope,
        )

    def expand(self, batch: int) -> "FoleyConditions":
        if self.batch == batch:
            return self
        if self.batch != 1:
            raise ValueError(f"conditions for {self.batch} samples cannot serve a batch of {batch}")
        return self.map(lambda t: t.expand(batch, *t.shape[1:]))

    def select(self, index: slice | torch.Tensor) -> "FoleyConditions":
        return self.map(lambda t: t[index])

    @staticmethod
    def cat(parts: Sequence["FoleyConditions"], text_kv=None) -> "FoleyConditions":
        """Stack conditions along the batch; `text_kv` reuses an already stacked text part."""
        first = parts[0]
        for other in parts[1:]:
            if first.text_kv and other.text_kv[0][0].shape[1:] != first.text_kv[0][0].shape[1:]:
                raise ValueError("conditions with different text lengths cannot share a batch; "
                                 "encode the prompts together so they are padded alike")
            if other.visual.shape[1:] != first.visual.shape[1:] or other.sync.shape[1:] != first.sync.shape[1:]:
                raise ValueError("conditions of different lengths cannot share a batch")
        if text_kv is None:
            text_kv = cat_text_kv([p.text_kv for p in parts])
        return FoleyConditions(
            text_kv, torch.cat([p.visual for p in parts]), torch.cat([p.sync for p in parts]), first.sync_index,
            first.rope,
        )


def cat_text_kv(parts: Sequence[tuple[tuple[torch.Tensor, torch.Tensor], ...]]):
    return tuple(
        (torch.cat([p[i][0] for p in parts]), torch.cat([p[i][1] for p in parts])) for i in range(len(parts[0]))
    )


class FoleyDiT(nn.Module):
    def __init__(self, config: FoleyDiTConfig, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.config = c = config
        kw = dict(operations=operations, device=device, dtype=dtype)
        self.audio_embedder = AudioEmbedder(c.latent_dim, c.hidden, **kw)
        self.visual_proj = visual_projection(c.clip_dim, c.hidden, **kw)
        self.cond_in = ConditionProjection(c.text_dim, c.hidden, **kw)
        self.time_in = TimestepEmbedder(c.hidden, **kw)
        self.sync_in = sync_projection(c.sync_dim, c.hidden, c.sync_mlp_hidden, **kw)
        tensor = dict(device=device, dtype=dtype)
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, c.sync_tokens_per_segment, c.sync_dim, **tensor))
        self.triple_blocks = nn.ModuleList(
            TripleStreamBlock(c.hidden, c.heads, c.mlp_hidden, **kw) for _ in range(c.triple_blocks)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(c.hidden, c.heads, c.single_mlp_hidden, **kw) for _ in range(c.single_blocks)
        )
        self.final_layer = FinalLayer(c.hidden, c.latent_dim, **kw)
        # Learned "no video" features: the unconditional branch of guidance and visual dropout.
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, c.clip_dim, **tensor))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, c.sync_dim, **tensor))
        self.gradient_checkpointing = False

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
    ) -> "FoleyDiT":
        """Load a released (or same-layout) checkpoint: `.pth`, `.safetensors` or a state dict.

        The config is read off the tensor shapes; the network is built on the meta device and the
        loaded tensors are assigned, so nothing is initialised randomly or held twice. `dtype` is the
        compute dtype (default: the file's); `weight_dtype` stores matrix weights in another dtype
        (e.g. `torch.float8_e4m3fn`) that is cast to `dtype` on use.
        """
        checkpoint = as_checkpoint(source)
        state_dict = require_kind(
            checkpoint, "foley_dit", "Foley model loader",
            hint="Use the DAC-VAE or Synchformer loader for those files.",
        )
        config = FoleyDiTConfig.from_state_dict(state_dict)
        with torch.device("meta"):
            model = cls(config, operations=operations)
        state_dict = attach_scales(model, state_dict)  # scaled fp8 files
        assign_state_dict(model, state_dict, f"a FoleyDiT of config {config.variant}")
        dtype = dtype or state_dict["empty_clip_feat"].dtype
        set_precision(model, dtype, weight_dtype if weight_dtype != dtype else None)
        return model.to(device).eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (learned tokens are never stored in fp8)."""
        return self.empty_clip_feat.dtype

    @property
    def device(self) -> torch.device:
        return self.empty_clip_feat.device

    # ------------------------------------------------------------------------------------------
    # Conditions
    # ------------------------------------------------------------------------------------------
    def null_clip(self, batch: int, length: int) -> torch.Tensor:
        return self.empty_clip_feat.expand(batch, length, -1)

    def null_sync(self, batch: int, length: int) -> torch.Tensor:
        return self.empty_sync_feat.expand(batch, length, -1)

    def visual_lengths(self, audio_length: int) -> tuple[int, int]:
        """SigLIP2 and Synchformer token counts that go with `audio_length` latents.

        Clips shorter than one frame or one Synchformer segment still get one frame and one segment
        of null features, so text-to-audio works at any length (the release never made such clips).
        """
        seconds = audio_length / self.config.latent_rate
        return (max(1, self.config.clip_length(seconds)),
                max(self.config.sync_tokens_per_segment, self.config.sync_length(seconds)))

    def prepare_text(self, text: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Per triple block text keys (normed, rotated) and values; shareable across windows."""
        c = self.config
        text = self.cond_in(text.to(self.device, self.dtype))
        rope = rope_table(rope_positions(text.shape[1]), c.head_dim, c.rope_theta).to(self.device)
        return tuple(block.prepare_text(text, rope) for block in self.triple_blocks)

    def prepare(
        self,
        text: torch.Tensor,
        clip: torch.Tensor | None,
        sync: torch.Tensor | None,
        audio_length: int,
        text_kv: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None,
        rope: RopeTables | None = None,
    ) -> FoleyConditions:
        """Project the conditions once; `None` visual inputs take the learned null features.

        `text_kv` (from `prepare_text`) and `rope` may be passed in to share them between windows.
        """
        c = self.config
        dtype, device = self.dtype, self.device
        batch = text.shape[0]
        default_clip, default_sync = self.visual_lengths(audio_length)
        clip = self.null_clip(batch, default_clip) if clip is None else clip
        sync = self.null_sync(batch, default_sync) if sync is None else sync
        if sync.shape[1] % c.sync_tokens_per_segment:
            raise ValueError(
                f"sync features have {sync.shape[1]} tokens, not a multiple of "
                f"{c.sync_tokens_per_segment} per Synchformer segment"
            )
        text_kv = self.prepare_text(text) if text_kv is None else text_kv
        visual = self.visual_proj(clip.to(device, dtype))
        sync = sync.to(device, dtype).unflatten(1, (-1, c.sync_tokens_per_segment)) + self.sync_pos_emb
        sync = self.sync_in(sync.flatten(1, 2)).contiguous()  # one layout, however it was batched
        # The release resizes sync tokens to the audio length (nearest-exact): keep the index instead,
        # so per-token work on them (the single blocks' modulation) runs once per sync token.
        sync_index = nearest_exact_index(sync.shape[1], audio_length, device)
        if rope is None:
            rope = self.rope_tables(audio_length, visual.shape[1])
        return FoleyConditions(text_kv, visual, sync, sync_index, rope)

    def rope_tables(self, audio_length: int, visual_length: int) -> RopeTables:
        c = self.config
        return RopeTables.build(audio_length, visual_length, c.head_dim, c.rope_theta, self.device)

    # ------------------------------------------------------------------------------------------
    # Velocity
    # ------------------------------------------------------------------------------------------
    def velocity(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        conditions: FoleyConditions,
        capture_single_block: int | None = None,
    ):
        """Velocity `[B, C, La]` (fp32) for latents `x` at model time `t` `[B]` in 0..1000.

        With `capture_single_block=i` also returns the hidden states after single block i (REPA).
        """
        conditions = conditions.expand(x.shape[0])
        if x.shape[-1] != conditions.audio_length:
            raise ValueError(f"latents have {x.shape[-1]} frames but the conditions were prepared for "
                             f"{conditions.audio_length}")
        dtype = self.dtype
        t = t.to(x.device).expand(x.shape[0]) if t.ndim else t.to(x.device).repeat(x.shape[0])
        vec = self.time_in(t, dtype)
        index = conditions.sync_index
        audio = self.audio_embedder(x.to(dtype)) + conditions.sync.index_select(1, index)
        visual = conditions.visual
        for block, text_kv in zip(self.triple_blocks, conditions.text_kv):
            audio, visual = self._run(block, audio, visual, vec, text_kv, conditions.rope)
        vec_tokens = conditions.sync + vec.unsqueeze(1)  # per sync token; blocks gather per audio frame
        captured = None
        for i, block in enumerate(self.single_blocks):
            audio = self._run(block, audio, vec_tokens, index, conditions.rope.audio)
            if i == capture_single_block:
                captured = audio
        out = self.final_layer(audio).transpose(1, 2).float()
        return (out, captured) if capture_single_block is not None else out

    def compile_blocks(self, **options) -> "FoleyDiT":
        """torch.compile every block's forward (hooks such as offloading stay outside the graphs).

        Sequence lengths are fixed within a run, so each block compiles once per clip length. A block
        compiled before is left as it is.
        """
        for block in [*self.triple_blocks, *self.single_blocks]:
            if "forward" not in vars(block):
                block.forward = torch.compile(block.forward, **options)
        return self

    def _run(self, block: nn.Module, *args):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return activation_checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        clip: torch.Tensor | None = None,
        sync: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One-shot velocity; for sampling loops call `prepare` once and `velocity` per step."""
        return self.velocity(x, t, self.prepare(text, clip, sync, x.shape[-1]))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["FoleyDiT", "FoleyConditions", "FoleyDiTConfig", "parameter_count"]
