"""OmniV-Med as transformers remote code: the file a stage folder carries as ``modeling_omnivmed.py``.

``transformers.AutoModel.from_pretrained(folder, trust_remote_code=True)`` finds ``auto_map`` in the
folder's config.json, copies this file into its module cache and imports it there, so it imports
nothing from ``omnivmed``: only torch, transformers and safetensors. It runs the model the way
training ran it (``omnivmed.trainer.model``: vision.py, rope.py, attention.py, projector.py and
the embedding merge of omnivmed.py), on the folder's own sub-models:

    vision/      SiglipVisionModel weights, run through our layer loop with 3D RoPE and
                 block-diagonal (varlen) attention, never through SigLIP's own forward
    projector/   the 2-layer GELU MLP (config.json + model.safetensors)
    llm/         the causal LM and its tokenizer

The inputs are the trainer's batch tensors: token ids with one pad token per kept visual patch,
the kept patches (normalised pixels, flattened (channel, row, column)), their (t, h, w) positions,
the inputs' offsets ``cu_seqlens`` and grids, and ``visual_keep`` (features that have a pad token).
``omnivmed.trainer.inference`` makes them from images, volumes and clips (decoding, resizing,
RLT pruning as in training). tests/trainer/test_inference.py checks that this file's logits equal
the training forward's.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel, SiglipVisionModel
from transformers.modeling_outputs import CausalLMOutputWithPast

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"


class OmniVMedConfig(PretrainedConfig):
    """The folder's config.json: rotary split/base, absolute-table option, the encoder's pixel mean/std."""

    model_type = "omnivmed"

    def __init__(
        self,
        rope_split=None,
        rope_theta: float = 10000.0,
        keep_abs_pos: bool = False,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        **kwargs,
    ):
        self.rope_split = None if rope_split is None else [int(n) for n in rope_split]
        self.rope_theta = float(rope_theta)
        self.keep_abs_pos = bool(keep_abs_pos)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        super().__init__(**kwargs)


def _flash_varlen():
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    return (xf * cos[:, None, :] + _rotate_half(xf) * sin[:, None, :]).to(x.dtype)


def _varlen_attention(q, k, v, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """q, k, v (L, heads, head_dim) packed; attention never crosses an input's boundary."""
    flash = _flash_varlen()
    if flash is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        cu = cu_seqlens.to(torch.int32)
        longest = int((cu[1:] - cu[:-1]).max())
        return flash(q, k, v, cu, cu, longest, longest)
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=q.device), lengths.to(q.device))
    mask = owner[:, None] == owner[None, :]
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask[None, None]
    )
    return out[0].transpose(0, 1)


class RopeVision(nn.Module):
    """SigLIP's weights run through rotary layers over packed patches (the trainer's RopeVisionEncoder)."""

    def __init__(self, siglip: nn.Module, rope_split, rope_theta: float, keep_abs_pos: bool):
        super().__init__()
        self.siglip = siglip
        config = siglip.config
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.heads
        self.patch_size = config.patch_size
        self.keep_abs_pos = keep_abs_pos
        pairs = self.head_dim // 2
        if rope_split is None:
            spatial = -(-pairs // 3)
            rope_split = (pairs - 2 * spatial, spatial, spatial)
        split = [int(n) for n in rope_split]
        if len(split) != 3 or sum(split) != pairs or min(split) < 0:
            raise ValueError(f"rope split {split} must be 3 pair counts summing to head_dim/2 = {pairs}")
        self.split, self.rope_theta = split, float(rope_theta)
        self._tables: dict = {}  # device -> (inv_freq, axis_of_pair); not buffers, so .to(dtype) never rounds them

    @property
    def patch_dim(self) -> int:
        return self.siglip.config.num_channels * self.patch_size**2

    def _rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (L, head_dim) in fp32: one frequency spectrum per axis (t, h, w), computed in float64 on the CPU
        and rounded once to fp32, as the trainer's Rotary3D does."""
        if positions.device not in self._tables:
            inv = [self.rope_theta ** (-torch.arange(n, dtype=torch.float64) / max(n, 1)) for n in self.split]
            axes = torch.cat([torch.full((n,), a) for a, n in enumerate(self.split)])
            self._tables[positions.device] = (torch.cat(inv).float().to(positions.device), axes.to(positions.device))
        inv_freq, axis_of_pair = self._tables[positions.device]
        angles = positions.to(torch.float32)[:, axis_of_pair] * inv_freq
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()

    def _absolute(self, positions, cu_seqlens, grids) -> torch.Tensor:
        table = self.siglip.embeddings.position_embedding.weight
        side = int(round(table.shape[0] ** 0.5))
        grid = table.view(1, side, side, -1).permute(0, 3, 1, 2).float()
        out = torch.empty((positions.shape[0], table.shape[1]), dtype=table.dtype, device=table.device)
        for i, (gh, gw) in enumerate(grids.tolist()):
            sized = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
            span = slice(int(cu_seqlens[i]), int(cu_seqlens[i + 1]))
            out[span] = sized[positions[span, 1], positions[span, 2]].to(table.dtype)
        return out

    def forward(self, patches, positions, cu_seqlens, grids) -> torch.Tensor:
        """patches (L, 3*p*p), positions (L, 3), cu_seqlens (n+1,), grids (n, 2) -> features (L, hidden)."""
        conv = self.siglip.embeddings.patch_embedding
        h = F.linear(patches.to(conv.weight.dtype), conv.weight.flatten(1), conv.bias)
        if self.keep_abs_pos:
            h = h + self._absolute(positions, cu_seqlens, grids)
        cos, sin = self._rotary(positions)
        for layer in self.siglip.encoder.layers:
            h = h.to(layer.layer_norm1.weight.dtype)
            attn = layer.self_attn
            x = layer.layer_norm1(h)
            shape = (x.shape[0], self.heads, self.head_dim)
            q = _apply_rotary(attn.q_proj(x).view(shape), cos, sin)
            k = _apply_rotary(attn.k_proj(x).view(shape), cos, sin)
            v = attn.v_proj(x).view(shape)
            h = h + attn.out_proj(_varlen_attention(q, k, v, cu_seqlens).reshape(x.shape))
            h = h + layer.mlp(layer.layer_norm2(h))
        return self.siglip.post_layernorm(h)


class Projector(nn.Module):
    """Vision features into the LLM's embedding space (2-layer MLP with GELU)."""

    def __init__(self, vision_hidden: int, llm_hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_hidden, llm_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(llm_hidden, llm_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _local_folder(name_or_path, **hub) -> str:
    if os.path.isdir(name_or_path):
        return str(name_or_path)
    from huggingface_hub import snapshot_download

    keep = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")
    return snapshot_download(str(name_or_path), **{k: v for k, v in hub.items() if k in keep and v is not None})


class OmniVMedModel(PreTrainedModel):
    """RoPE SigLIP -> projector -> causal LM. Load with ``from_pretrained(folder)`` (the stage folder's
    sub-models); ``forward`` gives the LM's logits, ``generate`` continues the prompts."""

    config_class = OmniVMedConfig
    base_model_prefix = "omnivmed"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config: OmniVMedConfig, siglip: nn.Module, llm: nn.Module, tokenizer=None):
        super().__init__(config)
        self.vision = RopeVision(siglip, config.rope_split, config.rope_theta, config.keep_abs_pos)
        self.projector = Projector(siglip.config.hidden_size, llm.config.hidden_size)
        self.llm = llm
        self.tokenizer = tokenizer  # not a module
        if tokenizer is not None:
            self.pad_ids = tuple(tokenizer.convert_tokens_to_ids([IMAGE_PAD, VIDEO_PAD]))
        self.post_init()

    def _init_weights(self, module):  # every weight comes from the folder
        pass

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, config=None, **kwargs):
        """The folder's vision/, llm/ and projector/ through transformers' own loaders.

        ``dtype`` (or ``torch_dtype``): the weights' dtype (default float32, as training keeps them);
        ``attn_implementation``: the LM's (default sdpa); ``device_map``: where the LM goes (the rest
        follows it)."""
        folder = _local_folder(pretrained_model_name_or_path, **kwargs)
        if config is None or not isinstance(config, OmniVMedConfig):
            config = OmniVMedConfig.from_pretrained(folder)
        dtype = kwargs.get("dtype") or kwargs.get("torch_dtype") or torch.float32
        if isinstance(dtype, str):
            dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
        llm_options = {"dtype": dtype, "attn_implementation": kwargs.get("attn_implementation") or "sdpa"}
        if kwargs.get("device_map") is not None:
            llm_options["device_map"] = kwargs["device_map"]
        siglip = SiglipVisionModel.from_pretrained(os.path.join(folder, "vision"), dtype=dtype)
        llm = AutoModelForCausalLM.from_pretrained(os.path.join(folder, "llm"), **llm_options)
        tokenizer = AutoTokenizer.from_pretrained(os.path.join(folder, "llm"))
        model = cls(config, siglip, llm, tokenizer)
        with open(os.path.join(folder, "projector", "config.json"), encoding="utf-8") as f:
            sizes = json.load(f)
        if (sizes["vision_hidden"], sizes["llm_hidden"]) != (siglip.config.hidden_size, llm.config.hidden_size):
            raise ValueError(f"{folder}/projector maps {sizes['vision_hidden']}->{sizes['llm_hidden']}")
        model.projector.load_state_dict(load_file(os.path.join(folder, "projector", "model.safetensors")))
        model.vision.to(device=llm.device)
        model.projector.to(device=llm.device, dtype=dtype)
        return model.eval()

    def get_input_embeddings(self):
        return self.llm.get_input_embeddings()

    def get_output_embeddings(self):
        return self.llm.get_output_embeddings()

    def embed(self, input_ids, patches=None, positions=None, cu_seqlens=None, grids=None, visual_keep=None):
        """Token embeddings with each visual pad token's replaced by the projected feature of its patch."""
        embeds = self.llm.get_input_embeddings()(input_ids)
        slots = (input_ids == self.pad_ids[0]) | (input_ids == self.pad_ids[1])
        if patches is None or patches.shape[0] == 0:
            if slots.any():
                raise ValueError(f"{int(slots.sum())} visual pad tokens in the text but no patches")
            return embeds
        device = embeds.device
        features = self.projector(
            self.vision(patches.to(device), positions.to(device), cu_seqlens.to(device), grids.to(device))
        )
        if visual_keep is not None:
            features = features[visual_keep.to(device)]
        if int(slots.sum()) != features.shape[0]:
            raise ValueError(f"{int(slots.sum())} visual pad tokens in the text but {features.shape[0]} visual features")
        return embeds.masked_scatter(slots[..., None], features.to(embeds.dtype))

    def forward(
        self, input_ids=None, attention_mask=None, patches=None, positions=None, cu_seqlens=None, grids=None,
        visual_keep=None, inputs_embeds=None, **kwargs,
    ) -> CausalLMOutputWithPast:  # fmt: skip
        """The LM's output (``logits`` (batch, length, vocab)) over the merged embeddings; other keyword
        arguments (``position_ids``, ``past_key_values``, ``use_cache``, ``labels``) go to the LM."""
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, patches, positions, cu_seqlens, grids, visual_keep)
        return self.llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    @torch.no_grad()
    def generate(
        self, input_ids=None, attention_mask=None, patches=None, positions=None, cu_seqlens=None, grids=None,
        visual_keep=None, **generate_kwargs,
    ):  # fmt: skip
        """The LM's ``generate`` on the merged embeddings of left-padded prompts: only the new tokens come back."""
        embeds = self.embed(input_ids, patches, positions, cu_seqlens, grids, visual_keep)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=embeds.device)
        return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask.to(embeds.device), **generate_kwargs)
