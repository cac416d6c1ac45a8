"""Conversations into token ids and labels with the model's own chat template.

Labels are built per turn: the template is rendered for the first k turns
and the text it adds for turn k is that turn's segment (ChatML templates
are incremental; a template that is not stops with a clear error). An
assistant segment is split at the generation prompt (``<|im_start|>assistant\\n``
for ChatML): the header is context, the reply and its end-of-turn token are
supervised, the newline after it is not. Each piece is tokenised on its own
and concatenated, so no text is re-tokenised and compared.

A visual placeholder (``<image>`` / ``<video>``) becomes
``<|vision_start|>`` + one pad token per kept visual patch + ``<|vision_end|>``;
the pads' embeddings are replaced by the projected visual features.
"""

from __future__ import annotations

from dataclasses import dataclass

from omnivmed.data.schema import IMAGE_TOKEN, VIDEO_TOKEN, Turn

IGNORE = -100
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
VISUAL_SPECIAL_TOKENS = (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be split into turns."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    cut: bool  # the length limit cut the sequence
    supervised: int  # labels that are not IGNORE
    visual_in_text: int  # pad tokens left after the cut (features beyond them are dropped)

    @property
    def unsupervised(self) -> bool:
        return self.supervised == 0


class ChatEncoder:
    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        ids = tokenizer.convert_tokens_to_ids(list(VISUAL_SPECIAL_TOKENS))
        unknown = [t for t, i in zip(VISUAL_SPECIAL_TOKENS, ids) if i is None or i == tokenizer.unk_token_id]
        if unknown:
            raise ChatTemplateError(f"tokenizer lacks the visual tokens {unknown}")
        self.vision_start, self.vision_end, self.image_pad, self.video_pad = ids
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError("tokenizer has no chat template")

    def _render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        if not messages and not generation_prompt:
            return ""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def segments(self, turns: tuple[Turn, ...], visual_text: list[str]) -> list[tuple[str, bool]]:
        """(text, supervised) pieces whose concatenation is the rendered conversation."""
        messages, pieces, rendered = [], [], ""
        visuals = iter(visual_text)
        for turn in turns:
            content = turn.content
            for token in (IMAGE_TOKEN, VIDEO_TOKEN):
                while token in content:
                    content = content.replace(token, next(visuals), 1)
            if turn.role == "assistant":
                header = self._render(messages, generation_prompt=True)
                self._check_prefix(rendered, header)
                pieces.append((header[len(rendered) :], False))
                rendered = header
            messages.append({"role": turn.role, "content": content})
            full = self._render(messages)
            self._check_prefix(rendered, full)
            added = full[len(rendered) :]
            if turn.role == "assistant":
                reply = added.rstrip("\n")
                pieces += [(reply, True), (added[len(reply) :], False)]
            else:
                pieces.append((added, False))
            rendered = full
        return pieces

    @staticmethod
    def _check_prefix(before: str, after: str) -> None:
        if not after.startswith(before):
            raise ChatTemplateError("the chat template is not incremental: a later turn rewrites earlier text")

    def encode(self, turns: tuple[Turn, ...], visual_tokens: list[tuple[str, int]]) -> Encoded:
        """``visual_tokens``: (kind, kept patches) per placeholder, in order."""
        pads = [VIDEO_PAD if kind == "video" else IMAGE_PAD for kind, _ in visual_tokens]
        marks = [VISION_START + pad + VISION_END for pad in pads]
        counts = iter(n for _, n in visual_tokens)
        ids: list[int] = []
        labels: list[int] = []
        for text, supervised in self.segments(turns, marks):
            for token in self._tokens(text):
                # One pad per placeholder in the text; it stands for every kept patch.
                repeat = next(counts) if token in (self.image_pad, self.video_pad) else 1
                ids += [token] * repeat
                labels += [token if supervised else IGNORE] * repeat
        cut = len(ids) > self.max_length
        ids, labels = ids[: self.max_length], labels[: self.max_length]
        pads = sum(1 for x in ids if x in (self.image_pad, self.video_pad))
        return Encoded(ids, labels, cut, sum(1 for x in labels if x != IGNORE), pads)
