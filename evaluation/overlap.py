"""Contamination: which benchmark frames and questions a training set already holds.

Frames are compared two ways:

* exact: sha256 of the *decoded* pixels (shape, dtype and the pixel array
  from OpenCV's decoder), so the same picture stored as another file or
  re-encoded losslessly still matches; a lossy re-encode does not;
* perceptual: a 64-bit DCT hash (pHash as the ``imagehash`` package computes
  it: grey, 32x32 area resize, 2D DCT, the 8x8 lowest frequencies against
  their median). Two frames are near-duplicates when their hashes differ in at
  most ``PHASH_THRESHOLD`` = 4 of 64 bits. Flat frames (grey standard
  deviation under 1 level, e.g. the air slices of a CT volume) carry no
  picture and are left out of the perceptual comparison (and counted).
  Near-duplicates are found through a pigeonhole index: split into
  ``threshold + 1`` bands, two hashes within the threshold share one band
  exactly, so only those candidates are compared.

Questions are compared after lower-casing, collapsing white space and dropping
a trailing ``?`` or ``.``: the same text (any image), the same image(s) and
text, and the same image(s), text and answer.

Each benchmark's test questions are checked against a training manifest (a
mix, every row of it), and against the benchmark's own train split (VQA-RAD
asks its test questions about images that its train split also uses).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from omnivmed.data.manifest import shard_path
from omnivmed.data.shards import ShardSchemaError, open_shard
from omnivmed.evaluation.benchmarks import GtRecord, assistant_text, frames_of, load_manifest, user_text
from omnivmed.evaluation.errors import EvalInputError

PHASH_BITS = 64
PHASH_THRESHOLD = 4
FLAT_STD = 1.0


@dataclass(frozen=True)
class FrameHash:
    exact: str
    phash: int | None  # None for a flat frame


class FrameHasher:
    """Hashes of encoded frames, memoised by the encoded bytes' digest (VQA-RAD asks ~7 questions per image)."""

    def __init__(self):
        self._seen: dict[bytes, FrameHash] = {}
        self.decoded = 0

    def __call__(self, data: bytes) -> FrameHash:
        key = hashlib.sha256(data).digest()
        found = self._seen.get(key)
        if found is None:
            found = self._seen[key] = frame_hash(data)
            self.decoded += 1
        return found


def decode(data: bytes) -> np.ndarray:
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise EvalInputError("a frame that OpenCV cannot decode")
    return array


def frame_hash(data: bytes) -> FrameHash:
    pixels = decode(data)
    h = hashlib.sha256(f"{pixels.shape}|{pixels.dtype}|".encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return FrameHash(h.hexdigest()[:32], perceptual_hash(pixels))


def perceptual_hash(pixels: np.ndarray) -> int | None:
    """pHash (64 bits) of a decoded frame; None when the frame is flat."""
    import cv2

    grey = pixels.astype(np.float32)
    if grey.ndim == 3:
        channels = grey.shape[2]
        if channels == 4:
            grey = grey[:, :, :3]
        grey = grey.mean(axis=2) if channels > 1 else grey[:, :, 0]
    if pixels.dtype == np.uint16:
        grey = grey / 257.0
    if float(grey.std()) < FLAT_STD:
        return None
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8]
    bits = (low > np.median(low)).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


class NearIndex:
    """Hashes within ``threshold`` bits of a query, through ``threshold + 1`` exact-match bands."""

    def __init__(self, hashes: Iterable[int], threshold: int = PHASH_THRESHOLD):
        self.threshold = threshold
        n = threshold + 1
        widths = [PHASH_BITS // n + (1 if i < PHASH_BITS % n else 0) for i in range(n)]
        self._bands = []
        start = 0
        for width in widths:
            self._bands.append((start, (1 << width) - 1))
            start += width
        self._tables: list[dict[int, list[int]]] = [{} for _ in self._bands]
        for value in set(hashes):
            for table, (shift, mask) in zip(self._tables, self._bands):
                table.setdefault((value >> shift) & mask, []).append(value)

    def near(self, value: int) -> bool:
        for table, (shift, mask) in zip(self._tables, self._bands):
            for other in table.get((value >> shift) & mask, ()):
                if hamming(value, other) <= self.threshold:
                    return True
        return False


def normalise_question(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip("?. ")


@dataclass(frozen=True)
class Entry:
    """What overlap needs of one sample: its frames' hashes, question and answer."""

    frames: tuple[FrameHash, ...]
    question: str
    answer: str

    @property
    def image_key(self) -> tuple[str, ...]:
        return tuple(f.exact for f in self.frames)


def manifest_entries(manifest: Path, hasher: FrameHasher, source: str | None = None, splits: Sequence[str] | None = None) -> Iterator[Entry]:
    """Entries of every row of ``manifest`` (of ``source`` and ``splits`` when given)."""
    manifest_path, loaded = load_manifest(manifest)
    for info in loaded.shards:
        if splits is not None and info.split not in splits:
            continue
        path = shard_path(manifest_path, info)
        try:
            table = open_shard(path)
        except (ShardSchemaError, OSError) as err:
            raise EvalInputError(f"{path}: {str(err).splitlines()[0]}") from None
        for batch in table.to_batches():
            columns = batch.select(["source", "split", "frames", "conversations"]).to_pylist()
            for row in columns:
                if (source is not None and row["source"] != source) or (splits is not None and row["split"] not in splits):
                    continue
                yield Entry(tuple(hasher(f) for f in row["frames"]), normalise_question(user_text(row)), assistant_text(row).strip().lower())


def record_entries(records: Sequence[GtRecord], hasher: FrameHasher) -> list[Entry]:
    return [Entry(tuple(hasher(f) for f in frames_of(r)), normalise_question(r.question), r.answer.strip().lower()) for r in records]


@dataclass
class OverlapCounts:
    against: str  # the training manifest, or "<benchmark> train split"
    train_samples: int
    test_questions: int
    test_frames: int  # distinct test frames (by decoded pixels)
    frames_shared_exact: int  # distinct test frames whose pixels occur in the training set
    frames_shared_perceptual: int  # distinct test frames within the pHash threshold of a training frame
    flat_frames: int  # distinct test frames left out of the perceptual comparison
    questions_with_shared_frame_exact: int
    questions_with_shared_frame_perceptual: int
    questions_shared: int  # same question text, any image
    image_question_shared: int  # same image(s) and question text
    image_question_answer_shared: int  # ... and the same answer

    def to_dict(self) -> dict:
        return asdict(self)


def overlap(test: Sequence[Entry], train: Iterable[Entry], against: str, threshold: int = PHASH_THRESHOLD) -> OverlapCounts:
    exact: set[str] = set()
    phashes: set[int] = set()
    questions: set[str] = set()
    pairs: set[tuple] = set()
    triples: set[tuple] = set()
    n_train = 0
    for entry in train:
        n_train += 1
        for f in entry.frames:
            exact.add(f.exact)
            if f.phash is not None:
                phashes.add(f.phash)
        questions.add(entry.question)
        pairs.add((entry.image_key, entry.question))
        triples.add((entry.image_key, entry.question, entry.answer))
    index = NearIndex(phashes, threshold)
    distinct = {f.exact: f for e in test for f in e.frames}
    near = {x for x, f in distinct.items() if f.phash is not None and (f.phash in phashes or index.near(f.phash))}
    shared = {x for x in distinct if x in exact}
    near |= shared
    return OverlapCounts(
        against=against,
        train_samples=n_train,
        test_questions=len(test),
        test_frames=len(distinct),
        frames_shared_exact=len(shared),
        frames_shared_perceptual=len(near),
        flat_frames=sum(1 for f in distinct.values() if f.phash is None),
        questions_with_shared_frame_exact=sum(1 for e in test if any(f.exact in shared for f in e.frames)),
        questions_with_shared_frame_perceptual=sum(1 for e in test if any(f.exact in near for f in e.frames)),
        questions_shared=sum(1 for e in test if e.question in questions),
        image_question_shared=sum(1 for e in test if (e.image_key, e.question) in pairs),
        image_question_answer_shared=sum(1 for e in test if (e.image_key, e.question, e.answer) in triples),
    )


def method() -> dict:
    """How the counts were made (written beside them)."""
    return {
        "exact": "sha256 of decoded pixels (shape, dtype, array; OpenCV IMREAD_UNCHANGED)",
        "perceptual": f"pHash {PHASH_BITS} bits (grey, 32x32 area resize, DCT, 8x8 low frequencies > median)",
        "perceptual_threshold_bits": PHASH_THRESHOLD,
        "flat_frame_std": FLAT_STD,
        "question_normalisation": "lower case, collapsed white space, trailing '?'/'.' dropped",
    }
