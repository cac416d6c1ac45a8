"""Collation (packed and padded), packing under a token budget, and the policy for what does not fit."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from omnivmed.data.schema import Provenance, Turn, make_sample
from omnivmed.trainer.data.batch import Example, collate, collate_packed, make_example, packs
from omnivmed.trainer.data.chat import IGNORE, ChatEncoder
from omnivmed.trainer.data.visual import VisualSpec
from omnivmed.trainer.presets import get_preset

SO400M = get_preset("1.5b")


def so400m_spec(prune: bool = True, max_frames: int = SO400M.max_frames) -> VisualSpec:
    """siglip-so400m-patch14-384's geometry and mean/std as the 1.5b preset uses it."""
    return VisualSpec(
        14, (0.5,) * 3, (0.5,) * 3, max_frames, SO400M.max_pixels, max_frames * SO400M.max_pixels, prune, 0.1
    )


def png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


def moving_square_clip(frames: int = 16, size: int = 384) -> tuple[bytes, ...]:
    """A textured static background with a bright square moving across it: RLT keeps the first frame and the
    patches the square touches."""
    rng = np.random.default_rng(0)
    background = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    out = []
    for t in range(frames):
        frame = background.copy()
        x = 20 + t * 20
        frame[100:180, x : x + 80] = 255
        out.append(png(frame))
    return tuple(out)


def noise_clip(frames: int = 16, size: int = 384) -> tuple[bytes, ...]:
    """Every frame new noise: pruning keeps (nearly) every patch."""
    rng = np.random.default_rng(1)
    return tuple(png((rng.random((size, size, 3)) * 255).astype(np.uint8)) for _ in range(frames))


def sample(kind: str, frames: tuple[bytes, ...], question: str = "What happens here?", answer: str = "Dissection."):
    placeholder = "<video>" if kind == "video" else "<image>" * (len(frames) if kind == "multi_image" else 1)
    return make_sample(
        source="synthetic", split="train", task="vqa", modality="unspecified", visual_kind=kind, frames=frames,
        frame_format="png", conversations=[Turn("user", f"{placeholder}\n{question}"), Turn("assistant", answer)],
        provenance=Provenance((), question + answer, "CC0-1.0", "https://example.org"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base / "llm")


def fake(n: int, name: str = "x") -> Example:
    return Example(name, "s", "none", list(range(n)), [IGNORE] + list(range(1, n)), [], False, n - 1, 0)


# ---- packing ----------------------------------------------------------------------------------------------------


def test_packs_close_before_the_budget_and_at_the_sample_count():
    lengths = [300, 500, 300, 900, 100, 100, 100, 100, 1200, 50]
    got = [[len(e.input_ids) for e in p] for p in packs((fake(n) for n in lengths), 1000, 3)]
    assert got == [[300, 500], [300], [900, 100], [100, 100, 100], [1200], [50]]
    assert all(sum(p) <= 1000 or len(p) == 1 for p in got)  # only a sample over the budget goes alone
    assert [n for p in got for n in p] == lengths  # in order, nothing dropped or repeated


def test_packed_collation_restarts_positions_and_never_supervises_a_samples_first_token():
    examples = [fake(4, "a"), fake(3, "b"), fake(5, "c")]
    for e in examples:
        e.labels[0] = 99  # even a supervised first token is not a target of the previous sample
    batch = collate_packed(examples, 3 * 8 * 8)
    assert batch.packed and batch.attention_mask is None
    assert batch.input_ids.shape == batch.labels.shape == batch.position_ids.shape == (1, 12)
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]
    assert batch.cu_seqlens_text.tolist() == [0, 4, 7, 12] and batch.max_seqlen_text == 5
    assert batch.labels[0, [0, 4, 7]].tolist() == [IGNORE] * 3
    assert batch.stats["tokens"] == 12 and batch.stats["padding"] == 0
    padded = collate(examples, 0, 3 * 8 * 8)
    assert padded.stats["tokens"] == 12 and padded.stats["padding"] == 3
    # the targets (labels[1:] per sample) are the same set in both layouts
    assert padded.stats["supervised"] - 3 == batch.stats["supervised"]


def test_packed_and_padded_batches_carry_the_same_visual_inputs(tokenizer):
    chat = ChatEncoder(tokenizer, 4096)
    spec = VisualSpec(8, (0.5,) * 3, (0.5,) * 3, 4, 32 * 32, 4 * 32 * 32, True, 0.1)
    rng = np.random.default_rng(2)
    frames = tuple(png((rng.random((40, 40, 3)) * 255).astype(np.uint8)) for _ in range(3))
    examples = [make_example(sample("volume", frames), chat, spec), make_example(sample("image", frames[:1]), chat, spec)]
    packed, padded = collate_packed(examples, 192), collate(examples, tokenizer.pad_token_id, 192)
    for name in ("patches", "positions", "cu_seqlens", "grids", "visual_keep"):
        assert torch.equal(getattr(packed, name), getattr(padded, name)), name
    assert packed.input_ids[0].tolist() == examples[0].input_ids + examples[1].input_ids


# ---- what does not fit ------------------------------------------------------------------------------------------


def test_a_16_frame_so400m_clip_fits_the_presets_limits_after_pruning(tokenizer):
    chat = ChatEncoder(tokenizer, SO400M.max_length)
    clip = sample("video", moving_square_clip())
    example = make_example(clip, chat, so400m_spec(), SO400M.max_visual_tokens)
    [visual] = example.visuals
    assert visual.tokens_before == 16 * 27 * 27 == 11_664
    assert 729 <= len(visual.positions) <= 0.3 * 11_664  # the first frame whole, then what moved
    assert not example.capped and not example.cut and example.supervised > 0
    assert example.visual_in_text == len(visual.positions)
    # even unpruned (--no-prune) the clip fits whole beside its text
    unpruned = make_example(clip, chat, so400m_spec(prune=False), SO400M.max_visual_tokens)
    assert len(unpruned.visuals[0].positions) == 11_664 and not unpruned.capped and not unpruned.cut


def test_a_clip_over_the_cap_loses_frames_evenly_and_is_pruned_again(tokenizer):
    chat = ChatEncoder(tokenizer, SO400M.max_length)
    clip = sample("video", noise_clip())
    example = make_example(clip, chat, so400m_spec(), 4000)
    [visual] = example.visuals
    assert example.capped and not example.cut
    assert 3000 < len(visual.positions) <= 4000  # 5 frames of 729: the most that fit
    assert visual.frames == 5 and visual.positions[:, 0].unique().tolist() == [0, 1, 2, 3, 4]
    assert example.visual_in_text == len(visual.positions) and example.supervised > 0
    stats = collate_packed([example], 3 * 14 * 14).stats
    assert stats["capped"] == 1 and stats["cut"] == 0


def test_visual_tokens_shrink_to_leave_room_for_the_answer(tokenizer):
    """An 8-frame noise clip (5,832 tokens) under a 3,000-token limit: frames drop until the text fits whole."""
    limit = 3000
    chat = ChatEncoder(tokenizer, limit)
    clip = sample("video", noise_clip(8), answer="Calot triangle dissection. " * 20)
    example = make_example(clip, chat, so400m_spec(max_frames=8), SO400M.max_visual_tokens)
    assert example.capped and not example.cut and len(example.input_ids) <= limit
    text_only = chat.encode(clip.conversations, [("video", 0)])
    assert example.supervised == text_only.supervised  # every answer token is still supervised


def test_an_image_over_the_cap_shrinks_its_pixels(tokenizer):
    chat = ChatEncoder(tokenizer, SO400M.max_length)
    rng = np.random.default_rng(3)
    image = sample("image", (png((rng.random((400, 600, 3)) * 255).astype(np.uint8)),))
    full = make_example(image, chat, so400m_spec())
    assert full.visuals[0].grid == (22, 33) and not full.capped
    example = make_example(image, chat, so400m_spec(), 200)
    [visual] = example.visuals
    assert example.capped and len(visual.positions) <= 200
    gh, gw = visual.grid
    assert gh * gw == len(visual.positions) and abs(gw / gh - 1.5) < 0.25  # aspect kept


def test_a_text_longer_than_the_limit_is_still_cut_and_counted(tokenizer):
    chat = ChatEncoder(tokenizer, 64)
    long = sample("image", (png(np.zeros((28, 28, 3), np.uint8)),), question="Describe every organ. " * 40)
    example = make_example(long, chat, so400m_spec(), 100)
    assert example.cut and len(example.input_ids) == 64
