"""OmniV-Med: RoPE vision encoder -> projector -> causal LM, and its on-disk layout.

A model folder (a stage's output, or a base made of real checkpoints):

    config.json       {"model_type": "omnivmed", rope split/theta, abs-pos option, image mean/std, ...}
    vision/           SiglipVisionModel.from_pretrained(...)       (safetensors)
    projector/        config.json + model.safetensors (2-layer MLP)
    llm/              AutoModelForCausalLM / AutoTokenizer.from_pretrained(...)  (safetensors + tokenizer)

Visual features replace the embeddings of the pad tokens the chat encoder
put in the text. The loss is summed over supervised positions only (the
lm_head runs on those rows, not on the whole (batch, length, vocab) block).
A batch is padded (rows and a 2D mask) or packed (one row, position ids
restarting per sample, the samples' offsets: ``_packed_llm``); both give the
same loss on the same samples.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from omnivmed.data.fileio import fsync_dir
from omnivmed.trainer.data.chat import IGNORE, IMAGE_PAD, VIDEO_PAD
from omnivmed.trainer.model.attention import llm_attention, packed_causal_mask
from omnivmed.trainer.model.projector import Projector
from omnivmed.trainer.model.remote import add_remote_code
from omnivmed.trainer.model.rope import default_split
from omnivmed.trainer.model.vision import RopeVisionEncoder

CONFIG_NAME = "config.json"
MODEL_TYPE = "omnivmed"
TRANSFORMERS_KEYS = ("auto_map", "architectures", "transformers_version", "dtype", "torch_dtype")


@dataclass(frozen=True)
class Architecture:
    """What a model folder's config.json records beside the three sub-models."""

    rope_split: tuple[int, int, int]
    rope_theta: float = 10000.0
    keep_abs_pos: bool = False
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def to_json(self) -> str:
        return json.dumps({"model_type": MODEL_TYPE, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> "Architecture":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not an omnivmed model config ({err})") from None
        if data.pop("model_type", None) != MODEL_TYPE:
            raise ValueError(f"{path}: model_type is not {MODEL_TYPE!r}")
        for key in TRANSFORMERS_KEYS:  # the remote-code entries (remote.py) and what transformers adds on saving
            data.pop(key, None)
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        except TypeError as err:
            raise ValueError(f"{path}: {err}") from None


class OmniVMed(nn.Module):
    def __init__(self, vision: RopeVisionEncoder, projector: Projector, llm: nn.Module, tokenizer, arch: Architecture):
        super().__init__()
        self.vision, self.projector, self.llm = vision, projector, llm
        self.arch = arch
        self.tokenizer = tokenizer  # not a module: saved beside the LLM
        self.pad_ids = tuple(tokenizer.convert_tokens_to_ids([IMAGE_PAD, VIDEO_PAD]))

    def parts(self) -> dict[str, nn.Module]:
        return {"vision": self.vision, "projector": self.projector, "llm": self.llm}

    def _visual_features(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected features of kept patches, and a zero that touches every vision/projector weight."""
        if batch.patches.shape[0]:
            patches, positions, cu, grids = batch.patches, batch.positions, batch.cu_seqlens, batch.grids
        else:  # no visual input in this batch: a one-patch ghost keeps ranks in step (DDP all-reduce)
            device = batch.input_ids.device
            patches = torch.zeros((1, self.vision.patch_dim), device=device)
            positions = torch.zeros((1, 3), dtype=torch.long, device=device)
            cu = torch.tensor([0, 1], dtype=torch.int32, device=device)
            grids = torch.ones((1, 2), dtype=torch.long, device=device)
        features = self.projector(self.vision(patches, positions, cu, grids))
        ghost = features.sum() * 0.0
        if not batch.patches.shape[0]:
            return features[:0], ghost
        return features[batch.visual_keep], ghost

    def forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (summed token loss, number of supervised tokens)."""
        ids = batch.input_ids
        embeds = self.llm.get_input_embeddings()(ids)
        features, ghost = self._visual_features(batch)
        slots = (ids == self.pad_ids[0]) | (ids == self.pad_ids[1])
        if int(slots.sum()) != features.shape[0]:
            raise ValueError(f"{int(slots.sum())} visual pad tokens in the text but {features.shape[0]} visual features")
        embeds = embeds.masked_scatter(slots[..., None], features.to(embeds.dtype))
        if getattr(batch, "position_ids", None) is not None:  # packed (1, total): samples never see each other
            hidden = self._packed_llm(embeds, batch)
        else:
            hidden = self.llm.base_model(inputs_embeds=embeds, attention_mask=batch.attention_mask, use_cache=False)
        hidden = hidden.last_hidden_state[:, :-1]
        targets = batch.labels[:, 1:]
        chosen = supervised(batch.labels)
        logits = self.llm.get_output_embeddings()(hidden[chosen]).float()
        loss = F.cross_entropy(logits, targets[chosen], reduction="sum") if logits.shape[0] else logits.sum()
        return loss + ghost, chosen.sum()

    def _packed_llm(self, embeds: torch.Tensor, batch):
        """The LLM over one packed row: position ids restart at 0 per sample, attention is causal within a sample.

        flash_attention_2 (GPU, flash-attn installed) takes the samples' offsets (flash-attn varlen, no mask);
        SDPA gets an explicit block-diagonal causal (1, 1, total, total) boolean mask, eager its additive form."""
        impl = self.llm.config._attn_implementation or "sdpa"
        if "flash" in impl:
            cu = batch.cu_seqlens_text.to(device=embeds.device, dtype=torch.int32)
            longest = int(batch.max_seqlen_text) or int((cu[1:] - cu[:-1]).max())
            varlen = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)
            return self.llm.base_model(inputs_embeds=embeds, position_ids=batch.position_ids, use_cache=False, **varlen)
        mask = packed_causal_mask(batch.cu_seqlens_text.to(embeds.device), embeds.shape[1])[None, None]
        if impl != "sdpa":  # eager and the like add the mask to the scores
            blocked = torch.finfo(embeds.dtype).min
            mask = torch.zeros(mask.shape, dtype=embeds.dtype, device=embeds.device).masked_fill(~mask, blocked)
        return self.llm.base_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=batch.position_ids, use_cache=False
        )

    def save_pretrained(self, path: Path, state_dict: dict | None = None) -> None:
        """Write the folder under a temporary name, then rename it into place.

        ``state_dict``: the full model state (FSDP's gathered one) written instead of the live parameters,
        which are never touched then (under FSDP they are sharded DTensors)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        parts = _split_state(state_dict) if state_dict is not None else {}
        self.vision.siglip.save_pretrained(tmp / "vision", state_dict=parts.get("vision.siglip"))
        self.llm.save_pretrained(tmp / "llm", state_dict=parts.get("llm"))
        self.tokenizer.save_pretrained(tmp / "llm")
        self.projector.save_pretrained(tmp / "projector", state_dict=parts.get("projector"))
        (tmp / CONFIG_NAME).write_text(self.arch.to_json())
        add_remote_code(tmp)  # modeling_omnivmed.py + auto_map: AutoModel(..., trust_remote_code=True) loads it
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb+") as f:
                    os.fsync(f.fileno())
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)


def supervised(labels: torch.Tensor) -> torch.Tensor:
    """(B, S) labels -> (B, S-1) bool: the positions whose next token the loss predicts."""
    return labels[:, 1:] != IGNORE


def _split_state(state: dict) -> dict[str, dict]:
    """A full model state dict into the sub-models' own key spaces."""
    prefixes = ("vision.siglip", "projector", "llm")
    out: dict[str, dict] = {p: {} for p in prefixes}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix + "."):
                out[prefix][key[len(prefix) + 1 :]] = value
    return out


def image_normalisation(vision_dir: Path) -> tuple[tuple, tuple]:
    """SigLIP's mean/std from a preprocessor_config.json when the folder has one (so400m: 0.5/0.5)."""
    config = Path(vision_dir) / "preprocessor_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        return tuple(data.get("image_mean", (0.5,) * 3)), tuple(data.get("image_std", (0.5,) * 3))
    return (0.5,) * 3, (0.5,) * 3


def load_model(
    vision_dir: Path,
    llm_dir: Path,
    projector_dir: Path | None = None,
    *,
    arch: Architecture | None = None,
    rope_split: tuple[int, int, int] | None = None,
    rope_theta: float = 10000.0,
    keep_abs_pos: bool = False,
    attention: str = "auto",
    gradient_checkpointing: bool = False,
    seed: int = 0,
) -> OmniVMed:
    """Assemble the model from local folders through transformers' ``from_pretrained``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, SiglipVisionModel

    for name, folder in (("vision", vision_dir), ("llm", llm_dir)):
        if not (Path(folder) / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no config.json: not a local {name} checkpoint folder")
    siglip = SiglipVisionModel.from_pretrained(str(vision_dir), dtype=torch.float32)
    llm = AutoModelForCausalLM.from_pretrained(
        str(llm_dir), dtype=torch.float32, attn_implementation=llm_attention(attention)
    )
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    if arch is None:
        head_dim = siglip.config.hidden_size // siglip.config.num_attention_heads
        mean, std = image_normalisation(vision_dir)
        arch = Architecture(tuple(rope_split or default_split(head_dim)), rope_theta, keep_abs_pos, mean, std)
    vision = RopeVisionEncoder(
        siglip, rope_split=arch.rope_split, rope_theta=arch.rope_theta, keep_abs_pos=arch.keep_abs_pos,
        attention=attention, gradient_checkpointing=gradient_checkpointing,
    )  # fmt: skip
    if projector_dir is not None:
        projector = Projector.from_pretrained(projector_dir)
    else:
        torch.manual_seed(seed)
        projector = Projector(siglip.config.hidden_size, llm.config.hidden_size)
    if (projector.vision_hidden, projector.llm_hidden) != (siglip.config.hidden_size, llm.config.hidden_size):
        raise ValueError(
            f"projector maps {projector.vision_hidden}->{projector.llm_hidden}, models need "
            f"{siglip.config.hidden_size}->{llm.config.hidden_size}"
        )
    if gradient_checkpointing:  # transformers 5 renamed it; the old name warns
        enable = getattr(llm, "activation_checkpointing_enable", None) or llm.gradient_checkpointing_enable
        enable()
    return OmniVMed(vision, projector, llm, tokenizer, arch)


def load_omnivmed(path: Path, **options) -> OmniVMed:
    """A model folder written by :meth:`OmniVMed.save_pretrained` (a stage's output)."""
    path = Path(path)
    arch = Architecture.load(path / CONFIG_NAME)
    return load_model(path / "vision", path / "llm", path / "projector", arch=arch, **options)
