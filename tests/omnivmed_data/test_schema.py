import json

import pyarrow as pa
import pytest

from omnivmed.data import schema
from omnivmed.data.schema import Provenance, SchemaError, Turn, VisualMeta, make_sample

PROV = Provenance(raw_paths=("a.jpg",), record_id="1", license="CC0-1.0", source_url="https://example.org")


def sample(**overrides):
    args = dict(
        source="vqa_rad",
        split="train",
        task="vqa",
        modality="ct",
        visual_kind="image",
        frames=[b"\xff\xd8\xff-fake-jpeg"],
        frame_format="jpeg",
        conversations=[Turn("user", "<image>\nIs there a mass?"), Turn("assistant", "yes")],
        provenance=PROV,
        answer_type="closed",
    )
    args.update(overrides)
    return make_sample(**args)


def test_the_published_vocabularies_are_the_ones_enforced():
    vocab = json.loads(schema.vocabulary_json())  # what the data card and the trainer read
    assert len(set(vocab["modalities"])) == 14 and len(set(vocab["tasks"])) == 11  # the paper's sizes
    # every published word is accepted (make_sample raises on any other)...
    for modality in [*vocab["modalities"], vocab["unspecified_modality"]]:
        sample(modality=modality)
    for task in vocab["tasks"]:
        sample(task=task)
    for split in vocab["splits"]:
        sample(split=split)
    # ...and spellings a source might use instead are refused
    for field, near_miss in (("modality", "CT"), ("modality", "x-ray"), ("task", "VQA"), ("split", "valid")):
        with pytest.raises(SchemaError, match=field):
            sample(**{field: near_miss})


def test_id_is_content_derived_and_ignores_split_and_provenance():
    a = sample()
    b = sample(split="test", provenance=Provenance(("b.jpg",), "2", "CC0-1.0", "x"))
    c = sample(conversations=[Turn("user", "<image>\nIs there a mass?"), Turn("assistant", "no")])
    assert a.id == b.id
    assert a.id != c.id
    assert len(a.id) == 32


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"modality": "xray"}, "modality"),
        ({"task": "segmentation"}, "task"),
        ({"split": "val"}, "split"),
        ({"answer_type": "CLOSED"}, "answer_type"),
        ({"conversations": [Turn("user", "no placeholder"), Turn("assistant", "yes")]}, "placeholders"),
        ({"conversations": [Turn("user", "<image> <image>"), Turn("assistant", "yes")]}, "placeholders"),
        ({"conversations": [Turn("user", "<image>\nq"), Turn("assistant", "  ")]}, "empty"),
        ({"conversations": [Turn("user", "<image>\nq")]}, "assistant"),
        ({"frames": []}, "frame"),
        ({"frame_format": "gif"}, "frame_format"),
    ],
)
def test_contract_violations_are_refused(overrides, message):
    with pytest.raises(SchemaError, match=message):
        sample(**overrides)


def test_multi_image_needs_one_placeholder_per_image():
    two = [b"\xff\xd8\xff1", b"\xff\xd8\xff2"]
    ok = sample(visual_kind="multi_image", frames=two, conversations=[Turn("user", "<image><image>\ncompare"), Turn("assistant", "same")])
    # the frame order is part of what the sample is
    swapped = sample(visual_kind="multi_image", frames=two[::-1], conversations=ok.conversations)
    assert ok.id != swapped.id
    with pytest.raises(SchemaError, match="1 <image> placeholders for 2 visual inputs"):
        sample(visual_kind="multi_image", frames=two, conversations=[Turn("user", "<image>\ncompare"), Turn("assistant", "same")])
    # a video or a volume is one visual input, whatever its frame count
    sample(visual_kind="video", frames=two * 4, conversations=[Turn("user", "<video>\nwhich phase?"), Turn("assistant", "dissection")])
    with pytest.raises(SchemaError, match="0 <video> placeholders for 1 visual inputs"):
        sample(visual_kind="video", frames=two, conversations=[Turn("user", "<image>\nwhich phase?"), Turn("assistant", "dissection")])


def test_row_round_trip_through_arrow():
    s = sample(visual_meta=VisualMeta(spacing_mm=(1.0, 0.5, 0.5), original_shape=(3, 4, 5)))
    table = pa.Table.from_pylist([s.to_row()], schema=schema.SCHEMA)
    assert schema.Sample.from_row(table.to_pylist()[0]) == s


def test_fingerprint_tracks_the_schema():
    assert schema.schema_fingerprint_of(schema.SCHEMA) == schema.SCHEMA_FINGERPRINT
    changed = schema.SCHEMA.append(pa.field("extra", pa.string()))
    assert schema.schema_fingerprint_of(changed) != schema.SCHEMA_FINGERPRINT
    assert schema.SCHEMA.metadata[b"omnivmed.schema_fingerprint"].decode() == schema.SCHEMA_FINGERPRINT
