"""Contamination counts: decoded-pixel and perceptual frame hashes, shared questions, VQA-RAD's image reuse."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import cv2
import numpy as np

from omnivmed.evaluation.benchmarks import get_benchmark, read_ground_truth
from omnivmed.evaluation.overlap import (
    PHASH_THRESHOLD,
    Entry,
    FrameHash,
    FrameHasher,
    NearIndex,
    frame_hash,
    hamming,
    manifest_entries,
    normalise_question,
    overlap,
    record_entries,
)

DATA = Path(__file__).resolve().parents[2] / "data"
IMAGE = DATA / "vqa_rad" / "VQA_RAD Image Folder" / "synpic42202.jpg"


def encode(array, ext=".png", params=()):
    ok, data = cv2.imencode(ext, array, list(params))
    assert ok
    return data.tobytes()


def test_exact_hash_is_of_pixels_not_bytes():
    pixels = cv2.imdecode(np.frombuffer(IMAGE.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    png = encode(pixels, ".png", (cv2.IMWRITE_PNG_COMPRESSION, 1))
    png_again = encode(pixels, ".png", (cv2.IMWRITE_PNG_COMPRESSION, 9))
    assert png != png_again and frame_hash(png).exact == frame_hash(png_again).exact
    lossy = encode(pixels, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 70))
    assert frame_hash(lossy).exact != frame_hash(png).exact
    assert hamming(frame_hash(lossy).phash, frame_hash(png).phash) <= PHASH_THRESHOLD  # a re-encode is a near-duplicate
    other = (DATA / "vqa_rad" / "VQA_RAD Image Folder" / "synpic32933.jpg").read_bytes()
    assert hamming(frame_hash(other).phash, frame_hash(png).phash) > 16  # another radiograph is not


def test_flat_frames_have_no_perceptual_hash():
    assert frame_hash(encode(np.full((32, 32), 7, np.uint8))).phash is None
    assert frame_hash(encode(np.full((32, 32, 3), 200, np.uint8))).phash is None
    assert frame_hash(encode(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60)).phash is not None


def test_near_index_finds_exactly_what_brute_force_finds():
    rng = random.Random(3)
    stored = [rng.getrandbits(64) for _ in range(300)]
    queries = [s ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64)) for s in stored[:50]]  # 0-2 bits away
    queries += [s ^ sum(1 << b for b in rng.sample(range(64), 5)) for s in stored[50:80]]  # exactly 5 bits away
    queries += [rng.getrandbits(64) for _ in range(50)]
    index = NearIndex(stored, 4)
    for q in queries:
        assert index.near(q) == any(hamming(q, s) <= 4 for s in stored)


def test_counts_on_a_toy_set():
    a, c = FrameHash("a", 0b1111), FrameHash("c", None)
    train = [Entry((a,), "is it ct", "yes"), Entry((c,), "what organ", "liver")]
    test = [
        Entry((a,), "is it ct", "yes"),  # same image, question and answer
        Entry((a,), "is it mri", "no"),  # same image only
        Entry((FrameHash("d", 0b1110 | 1 << 40),), "what organ", "lung"),  # a near-duplicate frame: 2 bits from a
        Entry((FrameHash("e", 1 << 63 | 1 << 62 | 1 << 61 | 1 << 60 | 1 << 59 | 1 << 58),), "new", "x"),
    ]
    counts = overlap(test, train, "toy")
    assert (counts.train_samples, counts.test_questions, counts.test_frames) == (2, 4, 3)
    assert (counts.frames_shared_exact, counts.frames_shared_perceptual, counts.flat_frames) == (1, 2, 0)
    assert (counts.questions_with_shared_frame_exact, counts.questions_with_shared_frame_perceptual) == (2, 3)
    assert (counts.questions_shared, counts.image_question_shared, counts.image_question_answer_shared) == (2, 1, 1)


def test_question_normalisation():
    assert normalise_question("  Is this an  MRI? ") == normalise_question("is this an mri.") == "is this an mri"


@pytest.mark.slow
def test_vqa_rad_test_images_are_reused_by_its_train_split(staged):
    """VQA-RAD asks its test questions about images its train split uses: 202 of the 203 test images."""
    benchmark = get_benchmark("vqa_rad")
    hasher = FrameHasher()
    test = record_entries(read_ground_truth(benchmark, staged / "vqa_rad"), hasher)
    train = list(manifest_entries(staged / "vqa_rad", hasher, source="vqa_rad", splits=("train",)))
    counts = overlap(test, train, "vqa_rad train split")
    assert (counts.test_questions, counts.test_frames, counts.train_samples) == (451, 203, 1793)
    assert (counts.frames_shared_exact, counts.frames_shared_perceptual) == (202, 202)
    assert counts.questions_with_shared_frame_exact == 446
    # The build drops train rows that repeat a test row exactly (same image, question and answer).
    assert counts.image_question_answer_shared == 0
    assert hasher.decoded == 314  # every image decoded once (VQA-RAD references 314 of its 315 images)
