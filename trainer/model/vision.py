"""The vision encoder: SigLIP's own modules, our layers (3D RoPE + varlen attention).

transformers' SigLIP attention takes no rotary tables or packed offsets, so
we keep its modules (and so its checkpoint layout: ``save_pretrained`` /
``from_pretrained`` still work) and run them in our own layer module:
patch embedding as a matrix product over already-cut patches (the conv has
kernel = stride = patch, so it is the same product), optional learned
absolute table interpolated to each input's grid, then per layer
pre-norm attention with rotary q/k and block-diagonal masking, and the MLP.

Each SigLIP encoder layer is replaced, in place, by a :class:`RopeEncoderLayer`
that adopts its four children under the same names, so parameter names (and
the saved folder) do not change, while every layer runs through a module
call: FSDP's per-layer units (``fully_shard``) gather their weights in the
hooks of that call. The rotary tables are computed once per forward, in fp32,
outside the layers; layers are sharded without input casting, so a bf16
mixed-precision policy never rounds them (a layer casts its hidden states to
its own parameter dtype itself).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from omnivmed.trainer.model.attention import varlen_attention
from omnivmed.trainer.model.rope import Rotary3D, apply_rotary


class RopeEncoderLayer(nn.Module):
    """One SigLIP encoder layer with rotary q/k and varlen attention (SigLIP's children, same names)."""

    def __init__(self, layer: nn.Module, heads: int, *, attention: str = "auto", gradient_checkpointing: bool = False):
        super().__init__()
        self.layer_norm1, self.self_attn = layer.layer_norm1, layer.self_attn
        self.layer_norm2, self.mlp = layer.layer_norm2, layer.mlp
        self.heads = heads
        self.head_dim = layer.self_attn.q_proj.out_features // heads
        self.attention = attention
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        """h (L, hidden); cos, sin (L, head_dim) fp32; cu_seqlens (inputs + 1,) -> (L, hidden)."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            # inside the module call: under FSDP the recomputation runs with the weights the backward gathered
            return checkpoint(self._forward, h, cos, sin, cu_seqlens, use_reentrant=False)
        return self._forward(h, cos, sin, cu_seqlens)

    def _forward(self, h, cos, sin, cu_seqlens) -> torch.Tensor:
        h = h.to(self.layer_norm1.weight.dtype)  # FSDP's bf16 policy: the residual stream takes the layer's dtype
        attn = self.self_attn
        x = self.layer_norm1(h)
        shape = (x.shape[0], self.heads, self.head_dim)
        q = apply_rotary(attn.q_proj(x).view(shape), cos, sin)
        k = apply_rotary(attn.k_proj(x).view(shape), cos, sin)
        v = attn.v_proj(x).view(shape)
        o = varlen_attention(q, k, v, cu_seqlens, impl=self.attention).reshape(x.shape)
        h = h + attn.out_proj(o)
        return h + self.mlp(self.layer_norm2(h))


class RopeVisionEncoder(nn.Module):
    """SigLIP run through rotary layers. It takes the given SiglipVisionModel over: its encoder layers become
    :class:`RopeEncoderLayer` (same parameters and names), so transformers' own forward of it no longer applies."""

    def __init__(
        self,
        siglip: nn.Module,
        *,
        rope_split: tuple[int, int, int] | None = None,
        rope_theta: float = 10000.0,
        keep_abs_pos: bool = False,
        attention: str = "auto",
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self.siglip = siglip  # a transformers SiglipVisionModel
        config = siglip.config
        self.hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.head_dim = self.hidden // self.heads
        self.patch_size = config.patch_size
        self.rotary = Rotary3D(self.head_dim, rope_split, rope_theta)
        self.keep_abs_pos = keep_abs_pos
        layers = siglip.encoder.layers
        for i, layer in enumerate(layers):
            if not isinstance(layer, RopeEncoderLayer):
                layers[i] = RopeEncoderLayer(
                    layer, self.heads, attention=attention, gradient_checkpointing=gradient_checkpointing
                )

    @property
    def layers(self) -> nn.ModuleList:
        """The rotary encoder layers (FSDP's vision units)."""
        return self.siglip.encoder.layers

    @property
    def patch_dim(self) -> int:
        return self.siglip.config.num_channels * self.patch_size**2

    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters our forward never touches (frozen so DDP does not wait for their gradients)."""
        unused = [] if self.keep_abs_pos else [self.siglip.embeddings.position_embedding.weight]
        if getattr(self.siglip, "head", None) is not None:
            unused += list(self.siglip.head.parameters())
        return unused

    def _absolute(self, positions: torch.Tensor, cu_seqlens: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
        table = self.siglip.embeddings.position_embedding.weight
        side = int(round(table.shape[0] ** 0.5))
        grid = table.view(1, side, side, -1).permute(0, 3, 1, 2).float()
        out = torch.empty((positions.shape[0], table.shape[1]), dtype=table.dtype, device=table.device)
        for i, (gh, gw) in enumerate(grids.tolist()):
            sized = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
            span = slice(int(cu_seqlens[i]), int(cu_seqlens[i + 1]))
            out[span] = sized[positions[span, 1], positions[span, 2]].to(table.dtype)
        return out

    def forward(
        self, patches: torch.Tensor, positions: torch.Tensor, cu_seqlens: torch.Tensor, grids: torch.Tensor
    ) -> torch.Tensor:
        """Packed patches (L, 3*p*p), positions (L, 3), offsets (n+1,), grids (n, 2) -> features (L, hidden)."""
        conv = self.siglip.embeddings.patch_embedding
        h = F.linear(patches.to(conv.weight.dtype), conv.weight.flatten(1), conv.bias)
        if self.keep_abs_pos:
            h = h + self._absolute(positions, cu_seqlens, grids)
        cos, sin = self.rotary(positions)  # fp32 from integer positions, once for every layer
        for layer in self.layers:
            h = layer(h, cos, sin, cu_seqlens)
        return self.siglip.post_layernorm(h)
