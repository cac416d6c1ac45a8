"""The offline tiny model: a byte-level BPE tokenizer trained in-process, tiny SigLIP and Qwen2.

Written to a folder in the same layout as real checkpoints (``vision/``
holds a SiglipVisionModel, ``llm/`` a Qwen2ForCausalLM and its tokenizer),
then loaded back through the same ``from_pretrained(path)`` calls, so tests
exercise the real loading path without touching a hub.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from omnivmed.data.fileio import fsync_dir
from omnivmed.trainer.data.chat import VISUAL_SPECIAL_TOKENS

# Qwen2.5's chat template, the branch without tools, with a neutral default system prompt.
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful medical assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CHAT_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen2's pre-tokenizer split (transformers' Qwen2Tokenizer rebuilds exactly this on load, so the tiny
# tokenizer must use it too or a saved and reloaded tokenizer would split text differently).
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# A fixed corpus, so the tokenizer (and every test built on it) is the same on every machine.
_CORPUS = (
    "You are a helpful medical assistant.",
    "What modality is shown in this image? This is a CT scan of the abdomen.",
    "Is there a pneumothorax in the left lung? No, the lungs are clear.",
    "What organ is abnormal? The liver shows a hypodense lesion.",
    "Which plane is this MR image acquired in? Axial plane.",
    "Describe the findings of this chest x-ray. There is cardiomegaly with small bilateral effusions.",
    "Is this image normal? Yes. Is the heart enlarged? No.",
    "What surgical phase is shown in the video? Calot triangle dissection, gallbladder packaging.",
    "Which instrument is used? Grasper, hook, clipper, scissors, irrigator, specimen bag.",
    "Where is the tumour located? In the upper lobe of the right lung, near the hilum.",
    "Brain, kidney, spleen, pancreas, bladder, bowel, bone, vessel, artery, vein, contrast.",
    "How many slices does this volume have? It has 20 slices with 3 mm spacing.",
    "0 1 2 3 4 5 6 7 8 9 10 100 512 mm cm left right upper lower anterior posterior.",
)


def train_tiny_tokenizer(vocab_size: int = 512):
    """Byte-level BPE (any text encodes) with ChatML and visual special tokens, as a transformers tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CHAT_SPECIAL_TOKENS + VISUAL_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        extra_special_tokens={},
    )


def tiny_configs(vocab_size: int):
    from transformers import Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, num_channels=3, vision_use_head=False,
    )  # fmt: skip
    llm = Qwen2Config(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
    )  # fmt: skip
    return vision, llm


def write_tiny_base(path: Path, seed: int = 0) -> Path:
    """Write ``path/vision`` and ``path/llm`` (with tokenizer); an existing complete folder is kept."""
    from transformers import Qwen2ForCausalLM, SiglipVisionModel

    path = Path(path)
    if (path / "vision" / "config.json").is_file() and (path / "llm" / "config.json").is_file():
        return path
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = train_tiny_tokenizer()
    vision_config, llm_config = tiny_configs(len(tokenizer))
    torch.manual_seed(seed)
    SiglipVisionModel(vision_config).save_pretrained(tmp / "vision")
    Qwen2ForCausalLM(llm_config).save_pretrained(tmp / "llm")
    tokenizer.save_pretrained(tmp / "llm")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(path)
    fsync_dir(path.parent)
    return path
