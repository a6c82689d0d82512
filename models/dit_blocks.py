"""The MM-DiT's blocks: triple-stream (audio + visual, text by cross-attention), single-stream, final.

Attribute names are the released checkpoint's key names.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import (
    ConvSwiGLU,
    GeluMLP,
    Modulation,
    RMSNorm,
    apply_rope,
    attention,
    conv_tokens,
    layer_norm,
    modulate,
    nearest_exact_index,
    rope_positions,
    rope_table,
)
from .ops import CastOps


@dataclass
class RopeTables:
    """Rotary tables for one (audio length, visual length) pair; built once per run.

    In the joint self-attention the visual tokens are resized to the audio length, interleaved with
    it as [a0, v0, a1, v1, ...], rotated over 2*La positions and resized back. Resizing is an index
    gather, so the same result comes from gathering each visual token's source (`visual_index`) and
    rotating it at its interleaved position (`visual_self`).
    """

    audio_self: torch.Tensor  # [2, La, D/2] positions 0, 2, 4, ...
    visual_self: torch.Tensor  # [2, Lv, D/2] odd positions of the interleaved sequence
    visual_index: torch.Tensor  # [Lv] source visual token of each rotated visual token
    audio: torch.Tensor  # [2, La, D/2] positions 0..La-1 (cross-attention, single blocks)
    visual: torch.Tensor  # [2, Lv, D/2] positions 0..Lv-1 (cross-attention)

    @classmethod
    def build(cls, audio_len: int, visual_len: int, head_dim: int, theta: float, device=None) -> "RopeTables":
        interleaved = rope_table(rope_positions(2 * audio_len), head_dim, theta)
        to_audio = nearest_exact_index(visual_len, audio_len)  # visual token behind each audio slot
        to_visual = nearest_exact_index(audio_len, visual_len)  # audio slot each visual token returns from
        tables = cls(
            audio_self=interleaved[:, 0::2],
            visual_self=interleaved[:, 2 * to_visual + 1],
            visual_index=to_audio[to_visual],
            audio=rope_table(rope_positions(audio_len), head_dim, theta),
            visual=rope_table(rope_positions(visual_len), head_dim, theta),
        )
        return tables.to(device)

    def to(self, device) -> "RopeTables":
        return RopeTables(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


class TripleStreamBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_hidden: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        head_dim = hidden // heads
        kw = dict(device=device, dtype=dtype)
        linear = lambda i, o: operations.Linear(i, o, **kw)  # noqa: E731
        norm = lambda: RMSNorm(head_dim, eps=1e-6, **kw)  # noqa: E731
        for stream, qkv, q_norm, k_norm in (
            ("audio", "audio_self_attn_qkv", "audio_self_q_norm", "audio_self_k_norm"),
            ("v_cond", "v_cond_attn_qkv", "v_cond_attn_q_norm", "v_cond_attn_k_norm"),
        ):
            setattr(self, f"{stream}_mod", Modulation(hidden, 9, operations, **kw))
            setattr(self, qkv, linear(hidden, 3 * hidden))
            setattr(self, q_norm, norm())
            setattr(self, k_norm, norm())
            setattr(self, f"{stream}_self_proj", linear(hidden, hidden))
            setattr(self, f"{stream}_cross_q", linear(hidden, hidden))
            setattr(self, f"{stream}_cross_q_norm", norm())
            setattr(self, f"{stream}_cross_proj", linear(hidden, hidden))
            setattr(self, f"{stream}_mlp", GeluMLP(hidden, mlp_hidden, operations, **kw))
        self.text_cross_kv = linear(hidden, 2 * hidden)
        self.text_cross_k_norm = norm()

    def prepare_text(self, text: torch.Tensor, rope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text keys and values for the cross-attention; they do not change across sampling steps."""
        k, v = self.text_cross_kv(text).unflatten(-1, (2, self.heads, -1)).unbind(2)
        return apply_rope(self.text_cross_k_norm(k), rope), v

    def _self_qkv(self, x, mod, qkv, q_norm, k_norm):
        shift, scale = mod
        q, k, v = qkv(modulate(layer_norm(x, 1e-6), shift, scale)).unflatten(-1, (3, self.heads, -1)).unbind(2)
        return q_norm(q), k_norm(k), v

    def forward(self, audio, visual, vec, text_kv, rope: RopeTables):
        a_mod = self.audio_mod(vec)
        v_mod = self.v_cond_mod(vec)

        # 1. Joint self-attention over [visual, audio].
        qa, ka, va = self._self_qkv(audio, a_mod[0:2], self.audio_self_attn_qkv,
                                    self.audio_self_q_norm, self.audio_self_k_norm)
        qv, kv, vv = self._self_qkv(visual, v_mod[0:2], self.v_cond_attn_qkv,
                                    self.v_cond_attn_q_norm, self.v_cond_attn_k_norm)
        qa, ka = apply_rope(qa, rope.audio_self), apply_rope(ka, rope.audio_self)
        qv = apply_rope(qv.index_select(1, rope.visual_index), rope.visual_self)
        kv = apply_rope(kv.index_select(1, rope.visual_index), rope.visual_self)
        streams = [visual.shape[1], audio.shape[1]]
        out_v, out_a = attention(torch.cat((qv, qa), 1), torch.cat((kv, ka), 1), torch.cat((vv, va), 1), streams)
        audio = audio + self.audio_self_proj(out_a) * a_mod[2]
        visual = visual + self.v_cond_self_proj(out_v) * v_mod[2]

        # 2. Cross-attention of both streams to the text.
        qa = self.audio_cross_q(modulate(layer_norm(audio, 1e-6), a_mod[3], a_mod[4])).unflatten(-1, (self.heads, -1))
        qv = self.v_cond_cross_q(modulate(layer_norm(visual, 1e-6), v_mod[3], v_mod[4])).unflatten(-1, (self.heads, -1))
        qa = apply_rope(self.audio_cross_q_norm(qa), rope.audio)
        qv = apply_rope(self.v_cond_cross_q_norm(qv), rope.visual)
        text_k, text_v = text_kv
        out_v, out_a = attention(torch.cat((qv, qa), 1), text_k, text_v, streams)
        audio = audio + self.audio_cross_proj(out_a) * a_mod[5]
        visual = visual + self.v_cond_cross_proj(out_v) * v_mod[5]

        # 3. Feed-forward per stream.
        audio = audio + self.audio_mlp(modulate(layer_norm(audio, 1e-6), a_mod[6], a_mod[7])) * a_mod[8]
        visual = visual + self.v_cond_mlp(modulate(layer_norm(visual, 1e-6), v_mod[6], v_mod[7])) * v_mod[8]
        return audio, visual


class SingleStreamBlock(nn.Module):
    """Audio-only block, modulated per token by (timestep + sync) and with kernel-3 convolutions."""

    def __init__(self, hidden: int, heads: int, mlp_hidden: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        head_dim = hidden // heads
        kw = dict(device=device, dtype=dtype)
        self.modulation = Modulation(hidden, 6, operations, **kw)
        self.linear_qkv = operations.Linear(hidden, 3 * hidden, **kw)
        self.linear1 = getattr(operations, "TokenConv1d", operations.Conv1d)(hidden, hidden, 3, padding=1, **kw)
        self.linear2 = ConvSwiGLU(hidden, mlp_hidden, kernel_size=3, operations=operations, **kw)
        # torch.nn.RMSNorm with its default eps, as released.
        self.q_norm = RMSNorm(head_dim, eps=None, fp32=False, **kw)
        self.k_norm = RMSNorm(head_dim, eps=None, fp32=False, **kw)

    def forward(self, x: torch.Tensor, vec_tokens: torch.Tensor, token_index: torch.Tensor,
                rope_audio: torch.Tensor) -> torch.Tensor:
        """`vec_tokens` `[B, Ls, H]` holds one condition per sync token; `token_index` `[La]` picks
        each audio frame's. Modulating before the gather gives the same result for less work."""
        mods = self.modulation(vec_tokens)
        shift1, scale1, gate1, shift2, scale2, gate2 = (m.index_select(1, token_index) for m in mods)
        # q, k and v are interleaved per channel in this layer's output ("(H D K)" layout).
        qkv = self.linear_qkv(modulate(layer_norm(x, 1e-5), shift1, scale1)).unflatten(-1, (self.heads, -1, 3))
        q, k, v = qkv.unbind(-1)
        q = apply_rope(self.q_norm(q), rope_audio)
        k = apply_rope(self.k_norm(k), rope_audio)
        # v has a channel stride of 3 here; fused attention kernels need unit stride.
        out = attention(q, k, v.contiguous())
        x = x + conv_tokens(self.linear1, out) * gate1
        return x + self.linear2(modulate(layer_norm(x, 1e-5), shift2, scale2)) * gate2


class FinalLayer(nn.Module):
    """LayerNorm then Linear to the latent channels.

    The released model computes an adaLN shift/scale here from the per-token condition, but its
    modulation helper drops shift and scale when they are per token, so they never reach the
    output. The checkpoint was trained that way and the parity vectors confirm it: the weights are
    kept (they are in every checkpoint) and the unused computation is skipped.
    """

    def __init__(self, hidden: int, out_dim: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.linear = operations.Linear(hidden, out_dim, **kw)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), operations.Linear(hidden, 2 * hidden, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(layer_norm(x, 1e-6))
