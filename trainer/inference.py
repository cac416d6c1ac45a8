"""Run a trained model: a stage folder answers questions about images, volumes and clips.

The path from pixels to tokens is training's: a question and its visual input become a Sample
(``make_sample``) and then an Example (``make_example``: decoding, resizing, RLT pruning,
the visual-token cap, the chat template), with the VisualSpec training used, rebuilt from the
model's config.json and the data settings in the stage folder's ``../config.json`` (the run's
config; the preset matching the model's sizes when there is none). The prompt is the example's
tokens up to the reply. Inputs are read by the builders' readers: a volume (DICOM series folder,
NIfTI file, slice folder) through :mod:`omnivmed.data.volume` and a preset (``auto`` by default,
as the volumes builder), a clip (video file and time range, or frame folder) through
:mod:`omnivmed.data.video`, each frame resized and JPEG-encoded as the clip maker does.

:class:`Runner` holds the model and generates for a batch of queries (left-padded, greedy or
sampled with a seed); :func:`logits` is the padded training batch's logits over the full vocabulary,
the training forward's computation without the loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from omnivmed.data.schema import IMAGE_TOKEN, VIDEO_TOKEN, Provenance, SchemaError, Turn, make_sample
from omnivmed.trainer.config import ConfigError, DataConfig, build_config
from omnivmed.trainer.data.batch import Batch, Example, collate, make_example
from omnivmed.trainer.data.chat import IGNORE, ChatEncoder, ChatTemplateError
from omnivmed.trainer.data.visual import VisualSpec, decode_frame, even_subsample
from omnivmed.trainer.model.omnivmed import OmniVMed, load_omnivmed
from omnivmed.trainer.presets import PRESETS

KINDS = ("none", "image", "multi_image", "volume", "video")
REPLY_STUB = "."  # the assistant turn a prompt is cut before (a Sample needs one)
RUN_CONFIG = "config.json"  # the stage's run config, beside the model folder


class InputError(ValueError):
    """A visual input or a question the model cannot take: names the file and the reason, in one line."""


@dataclass(frozen=True)
class Visual:
    """A query's visual input as the shards store one: encoded frames (JPEG/PNG) and their kind."""

    kind: str = "none"  # one of KINDS
    frames: tuple[bytes, ...] = ()
    frame_format: str | None = None  # jpeg or png

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"visual kind {self.kind!r} is not one of {', '.join(KINDS)}")


NO_VISUAL = Visual()


@dataclass(frozen=True)
class Query:
    """A conversation that ends with a user turn; ``<image>`` / ``<video>`` mark where the visual input goes."""

    turns: tuple[Turn, ...]
    visual: Visual = NO_VISUAL


@dataclass(frozen=True)
class Settings:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0  # sampling: the same seed and batch give the same text

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise InputError(f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")


@dataclass(frozen=True)
class Answer:
    text: str
    tokens: tuple[int, ...]
    prompt_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length"


# --- reading inputs -------------------------------------------------------------------------


def _frame_format(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def image_bytes(data: bytes, name: str) -> tuple[bytes, str]:
    """Encoded image bytes as a shard holds them: JPEG/PNG as they are, other formats OpenCV reads as PNG."""
    try:
        decode_frame(data)
    except ValueError:
        raise InputError(f"{name}: not an image OpenCV can decode") from None
    found = _frame_format(data)
    return (data, found) if found is not None else (image_bytes_as_png(data), "png")


def read_images(paths: Sequence[Path]) -> Visual:
    """One image (``image``) or several (``multi_image``, one placeholder each)."""
    frames, formats = [], set()
    for path in map(Path, paths):
        if path.is_dir():
            raise InputError(f"{path}: a folder, not an image file (a volume is --volume, frames of a clip --video)")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
        data, fmt = image_bytes(data, str(path))
        frames.append(data)
        formats.add(fmt)
    if not frames:
        return NO_VISUAL
    if len(formats) > 1:  # a Sample holds frames of one format
        frames = [image_bytes_as_png(f) for f in frames]
        formats = {"png"}
    return Visual("image" if len(frames) == 1 else "multi_image", tuple(frames), formats.pop())


def image_bytes_as_png(data: bytes) -> bytes:
    """An image OpenCV decodes, losslessly as PNG (PNG bytes are kept as they are)."""
    if _frame_format(data) == "png":
        return data
    ok, png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))
    if not ok:
        raise InputError("an image cannot be re-encoded as PNG")
    return png.tobytes()


def read_volume(path: Path | str, preset: str = "auto", modality: str | None = None) -> Visual:
    """A DICOM series folder (``folder#N`` picks series N of several), a NIfTI file or a ``<int>.png`` slice
    folder, normalised by a volume preset and stored as PNG slices, as the volume builders store them.

    ``auto`` picks by the modality (CT soft-tissue window, MR percentiles, else min-max); ``modality``
    (ct, mri, pet) names it for a volume whose headers do not (NIfTI, slice folders), as the volumes
    builder's ``-o modality=`` does."""
    from dataclasses import replace

    from omnivmed.data.volume import VolumeError, encode_volume, read_volume as read, recipe_from_options
    from omnivmed.data.volume.discover import classify, expand
    from omnivmed.data.volume.encode import DICOM_MODALITIES

    codes = {ours: code for code, ours in DICOM_MODALITIES.items()}
    if modality is not None and modality not in codes:
        raise InputError(f"volume modality {modality!r} is not one of {', '.join(codes)}")

    text = str(path)
    where, series = text, ""
    if "#" in Path(text).name and not Path(text).exists():  # FOLDER#N: series N of a DICOM folder
        where, _, series = text.rpartition("#")
    try:
        recipe = recipe_from_options(preset)
        item = classify(Path(where))
        if item.kind == "dicom":
            found = expand(item)
            if series:
                if not series.isdigit() or not 1 <= int(series) <= len(found):
                    raise InputError(f"{where}: the folder holds {len(found)} DICOM series; there is no series #{series}")
                item = found[int(series) - 1]
            elif len(found) > 1:
                raise InputError(f"{where}: the folder holds {len(found)} DICOM series; name one as {where}#N")
            else:
                item = found[0]
        elif series:
            raise InputError(f"{text}: #N picks a series of a DICOM folder; {where} is a {item.kind} volume")
        volume = read(item)
        if volume.modality is None and modality is not None:
            volume = replace(volume, modality=codes[modality])
        encoded = encode_volume(volume, recipe, where)
    except InputError:
        raise
    except VolumeError as err:
        raise InputError(str(err)) from None
    except ValueError as err:  # an unknown preset
        raise InputError(f"volume preset: {err}") from None
    except OSError as err:
        raise InputError(f"{err.filename or where}: cannot read ({err.strerror or err})") from None
    return Visual("volume", encoded.frames, encoded.frame_format)


def read_clip(
    path: Path | str, *, start: float | None = None, end: float | None = None, fps: float | None = None,
    frames: int = 8,
) -> Visual:  # fmt: skip
    """``frames`` frames evenly spread over [start, end] seconds of a video file or a frame folder (a folder
    needs ``fps`` for a time range; without one, its frames by index), each resized to the clip builders' short
    side and JPEG-encoded as they store clip frames."""
    from omnivmed.data.video import ClipSpec, VideoError, encode_jpeg, open_frames, resize_short_side

    path = Path(path)
    if frames < 1:
        raise InputError(f"frames must be >= 1, got {frames}")
    if start is not None and end is not None and end < start:
        raise InputError(f"the clip ends ({end} s) before it starts ({start} s)")
    clip = ClipSpec()  # the surgical builders' defaults: short side 224, JPEG quality 90
    try:
        with open_frames(path, fps=fps) as source:
            indices = source.indices()
            if start is not None or end is not None:
                if source.fps is None:
                    raise InputError(f"{path}: a frame folder has no time; give its frame rate (fps) for a time range")
                low = -1.0 if start is None else start * source.fps - 1e-6
                high = float("inf") if end is None else end * source.fps + 1e-6
                indices = [i for i in indices if low <= i <= high]
                if not indices:
                    raise InputError(f"{path}: no frame between {start or 0} s and {end if end is not None else 'the end'}")
            picked = [indices[i] for i in even_subsample(len(indices), frames)]
            images = source.read(picked)
    except InputError:
        raise
    except VideoError as err:
        raise InputError(str(err)) from None
    except ValueError as err:  # a frame rate that is not a positive number
        raise InputError(f"{path}: {err}") from None
    except OSError as err:
        raise InputError(f"{err.filename or path}: cannot read ({err.strerror or err})") from None
    sizes = {image.shape[:2] for image in images}
    if len(sizes) > 1:
        raise InputError(f"{path}: the frames differ in size ({', '.join(f'{h}x{w}' for h, w in sorted(sizes))})")
    data = tuple(encode_jpeg(resize_short_side(image, clip.short_side), clip.jpeg_quality) for image in images)
    return Visual("video", data, "jpeg")


def question_turns(question: str, visual: Visual, system: str | None = None) -> tuple[Turn, ...]:
    """A user turn that opens with the visual placeholders (one per image of a multi_image), as the builders
    write them, unless the question already holds them."""
    token = VIDEO_TOKEN if visual.kind == "video" else IMAGE_TOKEN
    count = len(visual.frames) if visual.kind == "multi_image" else int(visual.kind != "none")
    if count and token not in question:
        question = "\n".join([token] * count + [question])
    turns = (Turn("system", system),) if system else ()
    return turns + (Turn("user", question),)


# --- the model and its data settings ----------------------------------------------------------


def _preset_for(model: OmniVMed) -> str:
    """The preset whose shapes the model has (the tiny one's for unknown shapes of a tiny size)."""
    sizes = (model.vision.hidden, model.llm.config.hidden_size)
    for name, make in PRESETS.items():
        preset = make()
        if (preset.vision_hidden, preset.llm_hidden) == sizes:
            return name
    return "tiny" if sizes[0] <= PRESETS["tiny"]().vision_hidden else "1.5b"


def data_settings(model_dir: Path, model: OmniVMed) -> tuple[VisualSpec, DataConfig]:
    """The VisualSpec and resolved data section training used: the run config beside the model folder
    (``OUT/stageN/config.json``) when there is one, else the defaults of the preset matching the model."""
    run_config = Path(model_dir).resolve().parent / RUN_CONFIG
    overrides: dict[str, dict] = {"model": {"preset": _preset_for(model)}}
    if run_config.is_file():
        try:
            saved = json.loads(run_config.read_text())
            known = {f.name for f in fields(DataConfig)}
            overrides = {
                "model": {"preset": saved["model"]["preset"]},
                "data": {k: v for k, v in saved.get("data", {}).items() if k in known},
            }
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"{run_config}: not a training run config ({err})") from None
    try:
        data = build_config(overrides=overrides, need_shards=False).resolved_data()
    except ConfigError as err:
        raise ConfigError(f"{run_config}: {err}") from None
    arch = model.arch
    spec = VisualSpec(
        model.vision.patch_size, arch.image_mean, arch.image_std, data.max_frames, data.max_pixels,
        data.max_sample_pixels, data.prune, data.prune_threshold, data.prune_normalisation,
    )  # fmt: skip
    return spec, data


def merged_embeddings(model: OmniVMed, batch: Batch) -> torch.Tensor:
    """The training forward's input: token embeddings with the visual pad tokens' replaced by projected features."""
    ids = batch.input_ids
    embeds = model.llm.get_input_embeddings()(ids)
    slots = (ids == model.pad_ids[0]) | (ids == model.pad_ids[1])
    if batch.patches.shape[0]:
        features = model.projector(model.vision(batch.patches, batch.positions, batch.cu_seqlens, batch.grids))
        features = features[batch.visual_keep]
    else:
        features = embeds.new_zeros((0, embeds.shape[-1]))
    if int(slots.sum()) != features.shape[0]:
        raise ValueError(f"{int(slots.sum())} visual pad tokens in the text but {features.shape[0]} visual features")
    return embeds.masked_scatter(slots[..., None], features.to(embeds.dtype))


@torch.no_grad()
def logits(model: OmniVMed, batch: Batch) -> torch.Tensor:
    """(B, S, vocab) float32 logits of a padded batch (the training forward's, at every position)."""
    embeds = merged_embeddings(model, batch)
    out = model.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask, use_cache=False)
    return out.logits.float()


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Runner:
    """A loaded stage folder that answers :class:`Query` batches."""

    def __init__(self, model: OmniVMed, spec: VisualSpec, max_length: int, max_visual_tokens: int | None, name: str):
        self.model = model.eval()
        self.spec = spec
        self.chat = ChatEncoder(model.tokenizer, max_length)
        self.max_visual_tokens = max_visual_tokens
        self.name = name  # what the server lists as its model
        tokenizer = model.tokenizer
        stops = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id]
        self.stop_ids = [i for i in dict.fromkeys(stops) if i is not None and i != tokenizer.unk_token_id]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]

    @classmethod
    def load(cls, model_dir: Path, *, device: str = "auto", dtype: str = "auto", attention: str = "auto") -> "Runner":
        """``dtype`` auto: bf16 on a GPU, fp32 on the CPU (the rotary tables stay fp32 either way)."""
        from transformers.utils import logging as hf_logging

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: no config.json: not a model folder (OUT/stageN/model)")
        hf_logging.disable_progress_bar()
        model = load_omnivmed(model_dir, attention=attention)
        spec, data = data_settings(model_dir, model)
        where = pick_device(device)
        chosen = DTYPES[dtype] if dtype != "auto" else (torch.bfloat16 if where.type == "cuda" else torch.float32)
        model.to(device=where)
        for part in (model.vision.siglip, model.projector, model.llm):  # not the rotary tables: fp32, as in training
            part.to(dtype=chosen)
        return cls(model, spec, data.max_length, data.max_visual_tokens, model_dir.resolve().parent.name or "omnivmed")

    @property
    def device(self) -> torch.device:
        return next(self.model.llm.parameters()).device

    # -- prompts ---------------------------------------------------------------------------------

    def example(self, query: Query) -> Example:
        """The query as training would encode it, with a stub reply (the prompt is cut before it)."""
        visual = query.visual
        if not query.turns or query.turns[-1].role != "user":
            raise InputError("a query ends with a user turn")
        try:
            sample = make_sample(
                source="inference", split="test", task="vqa", modality="unspecified", visual_kind=visual.kind,
                frames=visual.frames, frame_format=visual.frame_format,
                conversations=query.turns + (Turn("assistant", REPLY_STUB),),
                provenance=Provenance((), "inference", "", ""),
            )  # fmt: skip
            example = make_example(sample, self.chat, self.spec, self.max_visual_tokens)
        except (SchemaError, ChatTemplateError) as err:
            raise InputError(str(err)) from None
        except ValueError as err:  # a frame that does not decode
            raise InputError(f"visual input: {err}") from None
        if example.cut:
            raise InputError(f"the question is longer than the model's {self.chat.max_length} tokens")
        return example

    @staticmethod
    def prompt_length(example: Example) -> int:
        """Tokens before the reply: the last run of supervised labels is the stub reply and its end of turn."""
        labels = example.labels
        end = len(labels)
        while end and labels[end - 1] == IGNORE:
            end -= 1
        while end and labels[end - 1] != IGNORE:
            end -= 1
        return end

    def prompt_batch(self, queries: Sequence[Query]) -> Batch:
        """Left-padded prompts (generation continues every row at its end) with their visual inputs."""
        examples = [self.example(q) for q in queries]
        visual = collate(examples, self.pad_id, self.model.vision.patch_dim)
        prompts = [e.input_ids[: self.prompt_length(e)] for e in examples]
        longest = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, longest - len(prompt) :] = torch.tensor(prompt)
            mask[row, longest - len(prompt) :] = 1
        return Batch(
            input_ids=ids, attention_mask=mask, labels=torch.full_like(ids, IGNORE), patches=visual.patches,
            positions=visual.positions, cu_seqlens=visual.cu_seqlens, grids=visual.grids,
            visual_keep=visual.visual_keep, sample_ids=visual.sample_ids, stats=visual.stats,
        )  # fmt: skip

    # -- generation ------------------------------------------------------------------------------

    def generation_config(self, settings: Settings):
        """Every sampling parameter explicit, so none comes from the LLM folder's generation_config.json."""
        from transformers import GenerationConfig

        sampling = {}
        if settings.temperature > 0:  # top_k 0: no top-k cut
            sampling = dict(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        return GenerationConfig(
            max_new_tokens=settings.max_new_tokens, do_sample=bool(sampling), num_beams=1, repetition_penalty=1.0,
            eos_token_id=self.stop_ids, pad_token_id=self.pad_id, **sampling,
        )  # fmt: skip

    @torch.no_grad()
    def generate(self, queries: Sequence[Query], settings: Settings = Settings()) -> list[Answer]:
        """One answer per query, generated together as one batch."""
        if not queries:
            return []
        batch = self.prompt_batch(queries).to(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(settings.seed)
            embeds = merged_embeddings(self.model, batch)
            out = self.model.llm.generate(
                inputs_embeds=embeds, attention_mask=batch.attention_mask,
                generation_config=self.generation_config(settings),
            )  # fmt: skip
        answers = []
        prompt_lengths = batch.attention_mask.sum(dim=1).tolist()
        for row, length in zip(out.tolist(), prompt_lengths):
            tokens, finish = [], "length"
            for token in row:
                if token in self.stop_ids:
                    finish = "stop"
                    break
                tokens.append(token)
            text = self.model.tokenizer.decode(tokens, skip_special_tokens=True)
            answers.append(Answer(text, tuple(tokens), int(length), finish))
        return answers
